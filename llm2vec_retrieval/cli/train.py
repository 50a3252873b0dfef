"""`train`, `export` and `combine`: registered by the training package (`training/cli.py`),
which owns their flags and handlers. Absent when the training package cannot be imported."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..errors import UserError
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
    """A training handler; by its documented convention (training/cli.py) it reports user
    errors as ValueError, FileNotFoundError or ImportError with one-line messages.
    TODO(issue 13.6 follow-up): the training package raises UserError and this goes."""
    try:
        return func(args)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise UserError(str(exc)) from exc
