"""What several commands share: output helpers, the help formatter, the model and dtype
flags, opening an index for search, and `reading_inputs`, which turns the expected failures
of reading what the user named (a model, sources, an index) into `UserError`s."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:
    from ..ingest import Searcher

# what `register(sub)` of each command module takes: argparse's subparsers action (its class
# is private to argparse)
Subparsers = Any


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr)


def mismatch(exc: Any, folder: str, fix: str) -> UserError:
    """The one-line error for an index built with another embedder."""
    keys = ", ".join(getattr(exc, "differing_keys", []) or ["?"])
    return UserError(f"index {folder} was built with another embedder (differs in: {keys}); {fix}")


@contextlib.contextmanager
def reading_inputs() -> Iterator[None]:
    """Around code that loads a model or reads files the user named (sources, an index): an
    `OSError` there is the user's to fix (a model folder, adapter, source or index that does
    not exist or cannot be read, a hub id that transformers cannot fetch, a full disk) and
    becomes a `UserError`. (A missing package or an unsupported architecture raise types
    that `main` already treats as user errors.)"""
    try:
        yield
    except OSError as exc:
        raise UserError(str(exc)) from exc


def print_results(results: list[Any]) -> None:
    """Search results as ranked lines with a snippet each."""
    from ..ingest import snippet

    if not results:
        print("  (no results)")
    for r in results:
        m = r.metadata
        where = f"chars {m.get('start')}-{m.get('end')}"
        for key in ("page", "line", "row"):
            if key in m:
                where = f"{key} {m[key]}, " + where
        parts = ""
        if r.dense_score is not None or r.lexical_score is not None:
            d = "-" if r.dense_score is None else f"{r.dense_score:.3f}"
            lx = "-" if r.lexical_score is None else f"{r.lexical_score:.2f}"
            parts = f"  [dense {d}, bm25 {lx}]"
        print(f"[{r.rank}] {r.score:.4f}  {r.id}  ({where}){parts}")
        print(f"    {snippet(r.text)}")


def open_searcher(args: argparse.Namespace) -> Searcher:
    """The `Searcher` of index `args.dir` with the model flags; one-line errors for an index
    the model cannot search."""
    from ..index import DimensionMismatchError, FingerprintMismatchError
    from ..ingest import Searcher

    try:
        with reading_inputs():
            return Searcher(
                args.dir,
                model=args.model,
                adapter=args.adapter,
                allow_fingerprint_mismatch=args.allow_mismatch,
            )
    except DimensionMismatchError as exc:
        raise UserError(
            f"index {args.dir} holds {exc.saved_dim}-dimensional vectors but this model makes "
            f"{exc.given_dim}-dimensional ones, which --allow-mismatch cannot bridge: search "
            "with the index's own model, or re-index with --rebuild"
        ) from None
    except FingerprintMismatchError as exc:
        raise mismatch(
            exc, args.dir, "pass --allow-mismatch to use it anyway, or re-index with --rebuild"
        ) from None


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps example lines as written; shows a default unless it is None/False or already said."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" not in text
            and action.default not in (None, False, argparse.SUPPRESS)
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


def wrap(text: str) -> str:
    import textwrap

    return textwrap.fill(text, 88)


def add_model_args(
    p: argparse.ArgumentParser,
    what: str = "model folder, .gguf file or embedded name (default: the embedded default model)",
) -> None:
    p.add_argument("--model", default=None, help=what)
    p.add_argument(
        "--adapter", default=None, help="PEFT adapter folder applied on top of the model"
    )
    add_dtype_arg(p)


def add_dtype_arg(p: argparse.ArgumentParser) -> None:
    from ..hardware import DTYPE_CHOICES

    # Checked in `main` (one-line error listing the choices), not by argparse. `dest` is not
    # "dtype": train/export/combine have their own --dtype (the saved weights' dtype).
    p.add_argument(
        "--dtype",
        dest="encoder_dtype",
        default="auto",
        metavar="{" + ",".join(DTYPE_CHOICES) + "}",
        help="compute dtype; auto: bfloat16 where the CPU runs it natively (avx512_bf16, AMX, "
        "ARM bf16), else float32 (default: auto)",
    )


def say_dtype(args: argparse.Namespace) -> None:
    """One stderr line, once per command: which dtype the model encodes in, and why."""
    if getattr(args, "dtype_choice", None) is not None and not getattr(args, "dtype_said", False):
        args.dtype_said = True
        eprint(args.dtype_choice.describe("--dtype"))
