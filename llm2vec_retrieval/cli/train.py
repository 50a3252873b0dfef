"""`train`, `export` and `combine`: registered by the training package (`training/cli.py`),
which owns their flags and handlers. Absent when the training package cannot be imported."""

from __future__ import annotations

import argparse
from collections.abc import Callable

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


def is_training_command(func: Callable[[argparse.Namespace], int]) -> bool:
    return getattr(func, "__module__", "").startswith("llm2vec_retrieval.training")


def run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """A training handler: it raises `UserError`s for what the user can fix (training/cli.py);
    anything else is a bug and `main` prints its traceback."""
    return func(args)
