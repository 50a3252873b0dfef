"""The `llm2vec-retrieval` command line (also `python -m llm2vec_retrieval`).

Subcommands, one module each: demo, index, search, info, eval (beir, sts), serve, cache
(info, clear), encode-corpus, index-from-shards, load-shards, and train/export/combine when
the training package provides them (`train.py` delegates). Each module has
`register(subparsers)` (its flags, `func=run`) and `run(args) -> exit code`. One spelling
for everything (docs/cli.md, "One spelling"): an index folder is `--index DIR`, an output
folder `--output DIR`, `--json` prints a command's result as JSON, and the global flags
(`--debug`, `--threads`) may come before or after the command. `--version` prints the
package version.

Errors: a `UserError` (`llm2vec_retrieval.errors`, with its subclasses in the core, e.g.
`IndexCorruptedError`, `FingerprintMismatchError`, `FilterSyntaxError`, `InvalidInputError`,
`IndexFolderError`, `ModelNotInstalledError`) prints `error: <message>` with exit code 2.
Anything else is a bug: its traceback, a one-line hint to report it, exit code 1. `--debug`
raises every exception (user errors too) with its traceback. Ctrl-C prints `interrupted`,
exit code 130. Commands that load a model take `--dtype` (default auto: bfloat16 where the
CPU runs it natively, see `hardware.py`) and say on stderr which dtype runs and why before
they encode. Heavy imports (torch, transformers, faiss, FastAPI) happen inside the commands.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from .. import __version__
from ..errors import UserError
from ..index.filters import FilterSyntaxError
from . import (
    cache,
    demo,
    encode_corpus,
    evaluate,
    index,
    index_from_shards,
    info,
    load_shards,
    search,
    serve,
    train,
)
from .common import CommandParser, add_global_args, eprint, wrap
from .info import index_info

__all__ = [
    "FilterSyntaxError",
    "UserError",
    "build_parser",
    "index_info",
    "main",
]

COMMANDS = (
    demo,
    index,
    search,
    info,
    evaluate,
    serve,
    train,
    encode_corpus,
    index_from_shards,
    load_shards,
    cache,
)

# The one line `main` prints for a bug, after its traceback.
BUG_HINT = (
    "(this is a bug in llm2vec-retrieval, not a problem with your input: please report it "
    "with the traceback above; --debug shows tracebacks of one-line errors too)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm2vec-retrieval",
        description=wrap(
            "LLM2Vec text encoders for retrieval: index folders, search them, serve embeddings."
        ),
        epilog="Run `llm2vec-retrieval COMMAND --help` for a command's options. Documentation: docs/cli.md",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    add_global_args(parser, top=True)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=CommandParser
    )
    for command in COMMANDS:
        command.register(sub)
    _add_global_args_below(sub)
    return parser


def _add_global_args_below(sub: argparse.Action) -> None:
    """The global flags on every parser under the subparsers action `sub`, nested ones too."""
    seen: set[int] = set()
    for parser in sub.choices.values():  # type: ignore[union-attr]
        if id(parser) in seen:  # an alias names the same parser
            continue
        seen.add(id(parser))
        add_global_args(parser, top=False)
        if getattr(parser, "subcommands", None) is not None:
            _add_global_args_below(parser.subcommands)


def _quiet_progress_bars() -> None:
    """No transformers/hub progress bars (weight loading) in command output."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        try:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
        except AttributeError:  # pragma: no cover
            pass


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:
        _quiet_progress_bars()
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    try:
        _check_dtype(args)
        rc = args.func(args)
        sys.stdout.flush()  # here, so that a reader gone away is seen below
        return rc
    except KeyboardInterrupt:
        eprint("interrupted")
        return 130
    except BrokenPipeError:
        # the reader of stdout went away (`... | head`): nothing is wrong, stop quietly;
        # stdout goes to /dev/null so the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        if args.debug:
            raise
        if not isinstance(exc, UserError):
            traceback.print_exc()
            eprint(BUG_HINT)
            return 1
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        eprint(f"error: {msg}")
        return 2


def _check_dtype(args: argparse.Namespace) -> None:
    """For a command that loads a model: its --dtype resolved (`args.dtype_choice`, for the
    stderr line `say_dtype` prints before the first text is encoded); a bad one is a
    `UserError` before anything loads. Each command hands ``args.encoder_dtype`` to the
    encoder it loads."""
    choice = getattr(args, "encoder_dtype", None)
    if choice is None:
        return
    from ..hardware import DTYPE_CHOICES, DtypeUnavailableError, resolve_dtype

    try:
        args.dtype_choice = resolve_dtype(choice)
    except DtypeUnavailableError as exc:  # int8 without CPU int8 kernels
        raise UserError(str(exc)) from None
    except ValueError:
        raise UserError(
            f"unknown --dtype {choice!r}; valid choices: {', '.join(DTYPE_CHOICES)}"
        ) from None


if __name__ == "__main__":
    raise SystemExit(main())
