"""`train`, `export` and `combine`: registered by the training package (`training/cli.py`),
which owns their flags and handlers. Absent when the training package cannot be imported."""

from __future__ import annotations

from .common import Subparsers, eprint


def register(sub: Subparsers) -> None:
    try:
        from ..training.cli import register as register_training
    except ImportError:
        return
    try:
        register_training(sub)
    except Exception as exc:  # a broken optional package must not take the other commands down
        eprint(f"warning: train/export unavailable ({type(exc).__name__}: {exc})")
