"""What several commands share: output helpers, the help formatter, the parser class of the
subcommands, the model, dtype and index-folder flags, deprecated spellings, opening an index
for search, and `reading_inputs`, which turns the expected failures of reading what the user
named (a model, sources, an index) into `UserError`s."""

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


def print_json(data: Any) -> None:
    """What a command's `--json` prints: one JSON document on stdout (notes stay on stderr)."""
    import json

    print(json.dumps(data, ensure_ascii=False, indent=2))


def deprecated(old: str, new: str) -> None:
    """The one stderr line an old spelling gets: it still works, the new one is named."""
    eprint(f"deprecated: {old}; use {new} (the old form will be removed in a later version)")


class CommandParser(argparse.ArgumentParser):
    """The parser of every subcommand. Options and positional arguments may come in any
    order (`search --index DIR QUERY -k 3`, `search QUERY -k 3 --index DIR`): a command
    without subcommands parses with argparse's `parse_known_intermixed_args`, since plain
    argparse stops filling optional positionals (`search`'s deprecated `DIR QUERY` form) at
    the first option. `subcommands` is the subparsers action of a command that has them
    (`eval`, `train`, `cache`), so the global flags can be added to every parser below it."""

    subcommands: argparse.Action | None = None
    intermixing = False

    def add_subparsers(self, **kwargs: Any) -> Any:
        self.subcommands = super().add_subparsers(**kwargs)
        return self.subcommands

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        # parse_known_intermixed_args calls parse_known_args itself (Python < 3.13)
        if self.subcommands is not None or self.intermixing:
            return super().parse_known_args(args, namespace)
        self.intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self.intermixing = False


def add_global_args(p: argparse.ArgumentParser, top: bool) -> None:
    """`--debug` and `--threads`: on the main parser (`top`), and on every subcommand's, so
    they may also follow the command (`search --index DIR QUERY --debug`). A subcommand's
    copy has no default (argparse.SUPPRESS), so it never overrides the value given before
    the command."""
    unset = argparse.SUPPRESS
    group = p if top else p.add_argument_group("global options (also accepted before the command)")
    group.add_argument(
        "--debug",
        action="store_true",
        default=False if top else unset,
        help="show tracebacks instead of one-line errors",
    )
    group.add_argument(
        "--threads",
        type=int,
        default=None if top else unset,
        metavar="N",
        help="torch CPU threads (default: torch's choice, usually one per core)",
    )


class DeprecatedAlias(argparse.Action):
    """A hidden old spelling of an option (`--out` of `--output`): stores into the new
    option's dest and says once, on stderr, which spelling to use."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: Any):
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None):
        deprecated(f"{option_string}", self.new)
        setattr(namespace, self.dest, values)


def add_index_arg(p: argparse.ArgumentParser, what: str = "index folder") -> None:
    """`--index DIR`: how every command names an index folder (docs/cli.md, "Index folder")."""
    p.add_argument("--index", default=None, metavar="DIR", help=f"{what} (required)")


def index_and_positionals(
    args: argparse.Namespace,
    command: str,
    positionals: list[str | None],
    names: list[str],
    index_last: bool = False,
) -> tuple[str, list[str]]:
    """The index folder and the other positional arguments of a command that takes
    `--index DIR` where it used to take the folder as a positional argument: the first
    (`info DIR`, `search DIR QUERY`) or, with `index_last`, the last
    (`index-from-shards SHARDS INDEX`). `positionals`: what argparse filled, in order (None
    when absent); `names`: the positional arguments besides the folder. The old form still
    works, after a `deprecated:` line on stderr; a wrong count is a one-line error."""
    given = [p for p in positionals if p is not None]
    usage = " ".join([command, *(names if index_last else []), "--index DIR"])
    usage += "".join(" " + n for n in ([] if index_last else names))
    if args.index is not None:
        if len(given) < len(names):
            raise UserError(f"{command} needs {' '.join(names[len(given) :])}: usage: {usage}")
        if len(given) > len(names):
            extra = " ".join(repr(g) for g in given[len(names) :])
            raise UserError(f"{command}: unexpected argument(s) {extra}: usage: {usage}")
        return args.index, given
    if len(given) == len(names) + 1:
        folder, rest = (given[-1], given[:-1]) if index_last else (given[0], given[1:])
        old = " ".join([command, *(names + ["DIR"] if index_last else ["DIR", *names])])
        deprecated(f"`{old}` (the index folder as a positional argument)", f"`{usage}`")
        return folder, rest
    raise UserError(f"{command} needs the index folder: usage: {usage}")


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


def open_searcher(args: argparse.Namespace, manifest: dict | None = None) -> Searcher:
    """The `Searcher` of index `args.dir` with the model flags (``manifest``: the index
    manifest when already read); one-line errors for an index the model cannot search."""
    from ..index import DimensionMismatchError, FingerprintMismatchError
    from ..ingest import Searcher

    try:
        with reading_inputs():
            searcher = Searcher(
                args.dir,
                model=args.model,
                adapter=args.adapter,
                allow_fingerprint_mismatch=args.allow_mismatch,
                dtype=args.encoder_dtype,
                manifest=manifest,
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
    return searcher


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
        "ARM bf16), else float32; int8: CPU only, linear layers quantized (default: auto)",
    )


def say_dtype(args: argparse.Namespace) -> None:
    """One stderr line, once per command: which dtype the model encodes in, and why."""
    if getattr(args, "dtype_choice", None) is not None and not getattr(args, "dtype_said", False):
        args.dtype_said = True
        eprint(args.dtype_choice.describe("--dtype"))
