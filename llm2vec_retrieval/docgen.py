"""Docs that cannot drift: settings tables generated from the dataclasses, defaults checked.

Settings tables. A doc holds a table between two marker comments::

    <!-- settings:EncoderConfig -->
    (generated: field, type, default, help; and a paper column where fields have one)
    <!-- /settings -->

The name is a key of `SETTINGS_CLASSES`; ``<!-- settings:MNTPConfig own -->`` lists only the
fields the class declares itself (a subclass's overrides and additions). The help column is
each field's ``metadata["help"]``; the paper column is the class's ``paper_values()`` (the
training configs) or ``metadata["paper"]``. A field whose ``None`` stands for a value decided
later names that value with ``metadata["none_default"]`` (a callable), shown as
``None (value)``.

Defaults quoted in prose. `check_prose` compares (1) every inline-code call signature in the
docs, `` `Name(first, arg=value, ...)` ``, whose name is in `SIGNATURES`, with the code's
defaults (a mention is a signature when its first argument is the first parameter's name;
literal values only: ``DEFAULT_ALPHA``, ``1 MiB`` and ``...`` are skipped), and (2) the sentences listed in
`PROSE_DEFAULTS` (regular expressions whose one group must equal a value read from the code).

``python -m llm2vec_retrieval.docgen`` rewrites the tables in README.md and docs/*.md;
``--check`` changes nothing and exits 1 when a table is stale or a quoted default is wrong.
It needs a source checkout (the docs are not installed with the package).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._io import atomic_write_text
from .errors import UserError

ROOT = Path(__file__).resolve().parent.parent

#: Marker name -> "module:attribute" of the dataclass whose table it holds.
SETTINGS_CLASSES: dict[str, str] = {
    "EncoderConfig": "llm2vec_retrieval.config:EncoderConfig",
    "TrainConfig": "llm2vec_retrieval.training.config:TrainConfig",
    "MNTPConfig": "llm2vec_retrieval.training.config:MNTPConfig",
    "ContrastiveConfig": "llm2vec_retrieval.training.config:ContrastiveConfig",
    "SimCSEConfig": "llm2vec_retrieval.training.config:SimCSEConfig",
    "SupervisedConfig": "llm2vec_retrieval.training.config:SupervisedConfig",
    "IndexSettings": "llm2vec_retrieval.ingest.indexer:IndexSettings",
}

#: Name an inline-code signature starts with -> the callable whose defaults it quotes.
SIGNATURES: dict[str, str] = {
    "EmbeddingService": "llm2vec_retrieval.server.service:EmbeddingService",
    "MicroBatcher": "llm2vec_retrieval.server.batcher:MicroBatcher",
    "create_app": "llm2vec_retrieval.server.app:create_app",
    "run": "llm2vec_retrieval.server.app:run",
    "bind": "llm2vec_retrieval.server.app:bind",
    "IndexSettings": "llm2vec_retrieval.ingest.indexer:IndexSettings",
    "Indexer": "llm2vec_retrieval.ingest.indexer:Indexer",
    "Searcher": "llm2vec_retrieval.ingest.searcher:Searcher",
    "iter_chunks": "llm2vec_retrieval.ingest.chunking:iter_chunks",
    "llm2vec_retrieval.ingest.chunking.iter_chunks": "llm2vec_retrieval.ingest.chunking:iter_chunks",
    "search": "llm2vec_retrieval.index.store:IndexStore.search",
    "max_marginal_relevance": "llm2vec_retrieval.index.store:IndexStore.max_marginal_relevance",
    "IndexStore.load": "llm2vec_retrieval.index.store:IndexStore.load",
    "get": "llm2vec_retrieval.index.store:IndexStore.get",
    "mine_hard_negatives": "llm2vec_retrieval.training.mining:mine_hard_negatives",
}


@dataclass(frozen=True)
class ProseDefault:
    """A sentence in a doc that quotes a default: ``pattern``'s one group must equal ``value()``."""

    doc: str  # path relative to the checkout
    pattern: str
    value: Callable[[], Any]


def _attr(target: str) -> Any:
    module, _, name = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _field_default(cls: str, name: str) -> Callable[[], Any]:
    def value() -> Any:
        f = {f.name: f for f in dataclasses.fields(_attr(SETTINGS_CLASSES[cls]))}[name]
        return f.default

    return value


def _const(target: str) -> Callable[[], Any]:
    return lambda: _attr(target)


def _index_default(key: str) -> Callable[[], Any]:
    return lambda: _attr("llm2vec_retrieval.ingest.indexer:DEFAULTS")[key]


def _kind_param(kind: str, param: str) -> Callable[[], Any]:
    return lambda: _attr("llm2vec_retrieval.index.kinds:DEFAULT_PARAMS")[kind][param]


_SERVER = "llm2vec_retrieval.server"
_INDEX = "llm2vec_retrieval.index"
PROSE_DEFAULTS: tuple[ProseDefault, ...] = (
    ProseDefault(
        "docs/concepts.md",
        r"`max_batch_tokens` \(default (\d+)\)",
        _field_default("EncoderConfig", "max_batch_tokens"),
    ),
    ProseDefault(
        "docs/concepts.md",
        r"`doc_max_length` \(default (\d+)\)",
        _field_default("EncoderConfig", "doc_max_length"),
    ),
    ProseDefault(
        "docs/concepts.md",
        r"`max_length` \(default (\d+)\)",
        _field_default("EncoderConfig", "max_length"),
    ),
    ProseDefault(
        "docs/concepts.md",
        r"\(`pooling_mode`, default `(\w+)`\)",
        _field_default("EncoderConfig", "pooling_mode"),
    ),
    ProseDefault(
        "docs/cli.md", r"\| `--chunk-tokens N` \| (\d+) \|", _index_default("chunk_tokens")
    ),
    ProseDefault("docs/cli.md", r"\| `--overlap N` \| (\d+) \|", _index_default("overlap")),
    ProseDefault("docs/cli.md", r"\| `--kind K` \| `(\w+)` \|", _index_default("kind")),
    ProseDefault(
        "docs/cli.md",
        r"\| `--commit-every N` \| (\d+) \|",
        _field_default("IndexSettings", "commit_every"),
    ),
    ProseDefault(
        "docs/cli.md",
        r"`--max-body-bytes` \(default (\d+) MiB\)",
        lambda: _attr(f"{_SERVER}:DEFAULT_MAX_BODY_BYTES") // (1 << 20),
    ),
    ProseDefault(
        "docs/cli.md",
        r"`--max-inputs` inputs \(default (\d+)\)",
        _const(f"{_SERVER}:DEFAULT_MAX_INPUTS"),
    ),
    ProseDefault(
        "docs/api.md",
        r"cors_origins=\(\), max_body_bytes=(\d+) MiB\)",
        lambda: _attr(f"{_SERVER}:DEFAULT_MAX_BODY_BYTES") // (1 << 20),
    ),
    ProseDefault(
        "docs/hybrid.md",
        r"`candidates` best of each list \((\d+) by default",
        _const("llm2vec_retrieval.index.store:DEFAULT_HYBRID_CANDIDATES"),
    ),
    ProseDefault(
        "README.md",
        r"hybrid \(theoretical min-max, alpha ([\d.]+), what `search` does\)",
        _const(f"{_INDEX}:DEFAULT_ALPHA"),
    ),
    ProseDefault(
        "docs/api.md",
        r"The default dtype is `(\w+)`\.",
        _const("llm2vec_retrieval.hardware:DEFAULT_DTYPE"),
    ),
    ProseDefault(
        "docs/cli.md",
        r"the model's `doc_max_length`, (\d+) by\sdefault",
        _field_default("EncoderConfig", "doc_max_length"),
    ),
    ProseDefault(
        "docs/cli.md",
        r"`--commit-every` chunks \(default \d+\) or (\d+)\sseconds",
        _field_default("IndexSettings", "commit_seconds"),
    ),
    ProseDefault(
        "docs/cli.md",
        r"`k` from 1 to \d+ \(default (\d+)\)",
        lambda: _attr(f"{_SERVER}.schemas:SearchBody").model_fields["k"].default,
    ),
    ProseDefault(
        "docs/cli.md",
        r"`k` from 1 to (\d+)",
        _const(f"{_SERVER}.schemas:MAX_K"),
    ),
    ProseDefault(
        "docs/training.md",
        r"default model's untrained base, `([\w.-]+)` \(`sources.DEFAULT_BASE`\)",
        _const("llm2vec_retrieval.sources:DEFAULT_BASE"),
    ),
    ProseDefault(
        "README.md",
        r"`([\w.-]+)`, the default \(`llm2vec_retrieval.DEFAULT_MODEL`\)",
        _const("llm2vec_retrieval.sources:DEFAULT_MODEL"),
    ),
    ProseDefault(
        "docs/cli.md",
        r"\| `--model M`, `--adapter A` \| `([\w.-]+)`, none \|",
        _const("llm2vec_retrieval.sources:DEFAULT_MODEL"),
    ),
    ProseDefault("docs/hybrid.md", r"`rrf_k = (\d+)`", _const(f"{_INDEX}:DEFAULT_RRF_K")),
    ProseDefault(
        "docs/hybrid.md", r'`DEFAULT_FUSION = "(\w+)"`', _const(f"{_INDEX}:DEFAULT_FUSION")
    ),
    ProseDefault(
        "docs/hybrid.md", r"`DEFAULT_ALPHA = ([\d.]+)`", _const(f"{_INDEX}:DEFAULT_ALPHA")
    ),
    ProseDefault(
        "docs/hybrid.md", r'`DEFAULT_TEXT_MODE = "(\w+)"`', _const(f"{_INDEX}:DEFAULT_TEXT_MODE")
    ),
    ProseDefault(
        "docs/integrations.md",
        r'default\s+`DEFAULT_FUSION` of `llm2vec_retrieval.index`, `"(\w+)"`',
        _const(f"{_INDEX}:DEFAULT_FUSION"),
    ),
    ProseDefault(
        "docs/integrations.md",
        r"`DEFAULT_FUSION` `\"(\w+)\"`",
        _const(f"{_INDEX}:DEFAULT_FUSION"),
    ),
    ProseDefault(
        "docs/integrations.md", r"`DEFAULT_ALPHA`,? ([\d.]+)", _const(f"{_INDEX}:DEFAULT_ALPHA")
    ),
    *(
        ProseDefault(
            "docs/api.md", rf"^\| `{kind}` \|[^\n]*`{param}` ([\d.]+)", _kind_param(kind, param)
        )
        for kind, param in (
            ("hnsw", "M"),
            ("hnsw", "ef_construction"),
            ("hnsw", "ef_search"),
            ("ivf_flat", "nprobe"),
            ("ivf_flat", "retrain_growth"),
            ("ivf_sq8", "rescore_factor"),
            ("ivf_pq", "pq_nbits"),
            ("ivf_pq", "rescore_factor"),
            ("binary", "rescore_factor"),
        )
    ),
)


# ---------------------------------------------------------------------------- tables


def settings_class(name: str) -> type:
    """The dataclass a marker names (a `UserError` listing the valid names otherwise)."""
    if name not in SETTINGS_CLASSES:
        raise UserError(
            f"unknown settings table {name!r}; valid names are: {', '.join(SETTINGS_CLASSES)}"
        )
    return _attr(SETTINGS_CLASSES[name])


def _code(value: Any) -> str:
    text = repr(value)
    if isinstance(value, float) and 0 < abs(value) < 1e-3:
        mantissa, _, exponent = f"{value:e}".partition("e")
        text = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"  # 5e-5, not 5e-05
    return "`" + text.replace("|", "\\|") + "`"


def _default_cell(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    cell = _code(value)
    if value is None and "none_default" in f.metadata:
        cell += f" ({_code(f.metadata['none_default']())})"
    return cell


def _paper_values(cls: type) -> dict[str, Any]:
    values = cls.paper_values() if hasattr(cls, "paper_values") else {}
    for f in dataclasses.fields(cls):
        if "paper" in f.metadata:
            values.setdefault(f.name, f.metadata["paper"])
    return values


def render_table(cls: type, own: bool = False) -> str:
    """The markdown table of a settings dataclass (only its own fields when ``own``)."""
    names = set(inspect.get_annotations(cls)) if own else None
    fields = [f for f in dataclasses.fields(cls) if names is None or f.name in names]
    missing = [f.name for f in fields if not f.metadata.get("help")]
    if missing:
        raise ValueError(f"{cls.__name__}: fields without metadata['help']: {missing}")
    paper = _paper_values(cls)
    with_paper = any(f.name in paper for f in fields)
    head = ["field", "type", "default"] + (["paper"] if with_paper else []) + ["meaning"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in fields:
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        row = [f"`{f.name}`", f"`{type_name}`".replace("|", "\\|"), _default_cell(f)]
        if with_paper:
            row.append(_code(paper[f.name]) if f.name in paper else "–")
        row.append(f.metadata["help"].replace("|", "\\|"))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


_MARKER = re.compile(
    r"(?P<open><!-- settings:(?P<name>\w+)(?P<opts>[^>]*?)\s*-->\n)(?P<body>.*?)(?P<close><!-- /settings -->)",
    re.DOTALL,
)


def update_tables(text: str) -> str:
    """``text`` with every marked table regenerated."""

    def fill(m: re.Match) -> str:
        opts = m["opts"].split()
        unknown = sorted(set(opts) - {"own"})
        if unknown:
            raise UserError(f"unknown option(s) {unknown} in {m['open'].strip()}; valid: own")
        table = render_table(settings_class(m["name"]), own="own" in opts)
        return m["open"] + table + m["close"]

    return _MARKER.sub(fill, text)


def doc_paths(root: Path = ROOT) -> list[Path]:
    """README.md and docs/*.md of a checkout."""
    paths = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return [p for p in paths if p.is_file()]


def stale_docs(paths: Iterable[Path]) -> list[Path]:
    """The docs whose marked tables differ from what the code generates."""
    return [p for p in paths if update_tables(p.read_text()) != p.read_text()]


# ---------------------------------------------------------------------------- prose


def _call_args(text: str) -> str | None:
    """The argument text of the call that ``text`` starts with (to its matching parenthesis)."""
    depth = 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return text[text.index("(") + 1 : i]
    return None


def _split_top(args: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(args):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(args[start:i])
            start = i + 1
    parts.append(args[start:])
    return [p.strip() for p in parts if p.strip()]


_INLINE_CALL = re.compile(r"`(?P<name>[\w.]+)\(")


def signature_mismatches(doc: Path, text: str) -> tuple[list[str], set[str]]:
    """(problems, names checked) for the inline-code signatures of `SIGNATURES` in ``text``."""
    problems, seen = [], set()
    for m in _INLINE_CALL.finditer(text):
        name = m["name"]
        if name not in SIGNATURES:
            continue
        end = text.find("`", m.end())
        args = _call_args(text[m.start() + 1 : end if end > 0 else None])
        if args is None:
            continue
        params = inspect.signature(_attr(SIGNATURES[name])).parameters
        parts = _split_top(args)
        first = next((p for p in params if p not in ("self", "cls")), None)
        if not parts or parts[0].partition("=")[0].strip() != first:
            continue  # an example call (`search(mode="lexical")`), not the signature
        for part in parts:
            key, eq, quoted = part.partition("=")
            key = key.strip()
            if not eq or not key.isidentifier():
                continue
            try:
                value = ast.literal_eval(quoted.strip())
            except (ValueError, SyntaxError):
                continue  # a name (DEFAULT_ALPHA), "1 MiB", "..."
            line = text.count("\n", 0, m.start()) + 1
            where = f"{doc.name}:{line} `{name}(... {key}=...)`"
            if key not in params:
                problems.append(f"{where}: the code has no parameter {key!r}")
            elif params[key].default is inspect.Parameter.empty:
                problems.append(f"{where}: documented default {value!r}, the code has none")
            elif params[key].default != value:
                problems.append(
                    f"{where}: documented default {value!r}, the code says {params[key].default!r}"
                )
        seen.add(name)
    return problems, seen


def cli_defaults() -> dict[str, list[Any]]:
    """Option string -> its defaults in every subcommand of the command line that has it."""
    from .cli import build_parser

    out: dict[str, list[Any]] = {}
    parsers = [build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:  # argparse has no public list of a parser's options
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            for option in action.option_strings:
                out.setdefault(option, []).append(action.default)
    return out


#: Docs whose ``--options`` are not the command line's (benchmarks.md: the benchmark scripts').
FLAG_CHECK_SKIPS = frozenset({"benchmarks.md"})
_FLAG_DEFAULTS = (
    # `--read-timeout` seconds (default 30), `--overlap`, default 32
    re.compile(r"`(--[a-z][\w-]*)(?: [A-Z]+)?`[^`()|]{0,45}?[(,] ?default ([\d.]+)(?! MiB)"),
    # option tables: | `--commit-every N` | 512 | ... |
    re.compile(r"^\| `(--[a-z][\w-]*)(?: [A-Z]+)?` \| ([\d.]+) \|", re.MULTILINE),
    # usage lines: [--host 127.0.0.1] [--port 8000]
    re.compile(r"\[(--[a-z][\w-]*) (\d[\w.]*)\]"),
)


def flag_mismatches(doc: Path, text: str, defaults: dict[str, list[Any]]) -> list[str]:
    """Numeric defaults quoted for command-line options that differ from the parser's.

    Options whose parser default is None (decided later, e.g. ``--chunk-tokens``: what the
    index records) are skipped here; `PROSE_DEFAULTS` covers those."""
    problems = []
    for pattern in _FLAG_DEFAULTS:
        for m in pattern.finditer(text):
            flag, quoted = m[1], m[2].rstrip(".")
            line = text.count("\n", 0, m.start()) + 1
            if flag not in defaults:
                problems.append(f"{doc.name}:{line}: no command has the option {flag}")
                continue
            known = [d for d in defaults[flag] if d is not None]
            if known and not any(_same(quoted, d) for d in known):
                problems.append(
                    f"{doc.name}:{line}: {flag} documented default {quoted}, the code says "
                    + " or ".join(map(str, known))
                )
    return problems


def _same(quoted: str, value: Any) -> bool:
    """Whether a default quoted in a doc is ``value`` (numbers compare as numbers: 8 == 8.0)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(quoted) == float(value)
        except ValueError:
            return False
    return quoted == str(value)


def check_prose(root: Path = ROOT) -> list[str]:
    """Every quoted default that differs from the code (empty when the docs agree)."""
    problems: list[str] = []
    for item in PROSE_DEFAULTS:
        text = (root / item.doc).read_text()
        found = re.findall(item.pattern, text, re.MULTILINE)
        if not found:
            problems.append(
                f"{item.doc}: no sentence matches {item.pattern!r} any more; "
                "update PROSE_DEFAULTS in llm2vec_retrieval/docgen.py"
            )
        expected = item.value()
        for value in found:
            if not _same(value, expected):
                problems.append(
                    f"{item.doc}: {item.pattern!r} quotes {value}, the code says {expected}"
                )
    flags = cli_defaults()
    for doc in doc_paths(root):
        text = doc.read_text()
        problems += signature_mismatches(doc, text)[0]
        if doc.name not in FLAG_CHECK_SKIPS:
            problems += flag_mismatches(doc, text, flags)
    return problems


# ---------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llm2vec_retrieval.docgen",
        description="regenerate the settings tables in README.md and docs/*.md",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 when a table is stale or a quoted default is wrong",
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="the source checkout")
    args = parser.parse_args(argv)
    paths = doc_paths(args.root)
    if not paths:
        print(f"error: no README.md or docs/*.md under {args.root} (--root CHECKOUT)")
        return 2
    try:
        stale = stale_docs(paths)
        if not args.check:
            for path in stale:
                atomic_write_text(path, update_tables(path.read_text()))
                print(f"updated {path.relative_to(args.root)}")
            stale = []
        problems = [f"{p.relative_to(args.root)}: settings table is stale" for p in stale]
        problems += check_prose(args.root)
    except UserError as exc:
        print(f"error: {exc}")
        return 2
    for problem in problems:
        print(problem)
    if problems:
        if stale:
            print("run: python -m llm2vec_retrieval.docgen")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
