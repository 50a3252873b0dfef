"""The `llm2vec-retrieval` command line (also `python -m llm2vec_retrieval`).

Subcommands: demo, index, search, info, eval (beir, sts), serve, and train/export when
the training package provides them. Errors the user can fix are printed as one line
(`error: ...`) with exit code 2; `--debug` shows the traceback instead. Commands that
load a model take `--dtype` (default auto: bfloat16 where the CPU runs it natively, see
`hardware.py`) and say on stderr which dtype runs and why before they encode.
Heavy imports (torch, transformers, faiss) happen inside the commands.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

DEMO_QUERIES = [
    "How do vaccines train the immune system?",
    "What makes a river flood?",
    "Which animal is fast and red?",
]
DEMO_DOCUMENTS = [
    "Vaccines expose the immune system to a harmless piece of a pathogen so it can respond faster later.",
    "Heavy rain and melting snow raise river levels until the water spills over the banks.",
    "The quick brown fox jumps over the lazy dog.",
    "A database index stores keys in sorted order to speed up lookups.",
]
# Questions the demo asks of the project's own docs/ folder.
DEMO_SEARCHES = [
    "How do I continue indexing after the process was killed?",
    "Which pooling modes can turn token states into one vector?",
]
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class UserError(Exception):
    """An error the user can fix: printed as one line, exit code 2."""


# ---------------------------------------------------------------------- helpers
def _eprint(*args: Any) -> None:
    print(*args, file=sys.stderr)


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _mismatch(exc, folder: str, fix: str) -> UserError:
    keys = ", ".join(getattr(exc, "differing_keys", []) or ["?"])
    return UserError(f"index {folder} was built with another embedder (differs in: {keys}); {fix}")


_FILTER_RE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(==|!=|>=|<=|=|>|<)\s*(.*?)\s*$", re.S)
_OPS = {">=": "$gte", "<=": "$lte", ">": "$gt", "<": "$lt"}


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_filters(expressions: list[str] | None) -> dict[str, Any] | None:
    """``--filter`` expressions -> a store filter (AND of all).

    ``key=value`` (``==`` too) and ``key!=value``: a numeric value also matches the same
    number stored as text; ``true``/``false`` match booleans too; quote a value
    (``key="2"``) to compare it as text only. ``key>=n``, ``key<=n``, ``key>n``, ``key<n``:
    ordered comparison (numbers, else text).
    """
    if not expressions:
        return None
    clauses = []
    for expr in expressions:
        m = _FILTER_RE.match(expr)
        if not m:
            raise UserError(
                f"bad filter {expr!r}: expected KEY=VALUE, KEY!=VALUE, KEY>=N, KEY<=N, KEY>N or KEY<N"
            )
        key, op, raw = m.groups()
        quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'"
        text = raw[1:-1] if quoted else raw
        if op in _OPS:
            if not text:
                raise UserError(f"bad filter {expr!r}: missing value after {op}")
            num = None if quoted else _number(text)
            clauses.append({key: {_OPS[op]: num if num is not None else text}})
            continue
        values: list[Any] = [text]
        if not quoted:
            num = _number(text)
            if num is not None:
                values.insert(0, num)
            elif text.lower() in ("true", "false"):
                values.insert(0, text.lower() == "true")
        clauses.append({key: {"$in" if op in ("=", "==") else "$nin": values}})
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


# ---------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    """Index the project's docs/ folder, then search it (falls back to a similarity table)."""
    docs = PROJECT_ROOT / "docs"
    if not any(docs.glob("*.md")):
        return _demo_similarity(args)
    from .index import FingerprintMismatchError
    from .ingest import Indexer, IndexFolder, IndexSettings, Searcher
    from .ingest.indexer import summary

    index_dir = Path(args.index) if args.index else PROJECT_ROOT / ".cache" / "demo-index"
    folder = IndexFolder(index_dir)
    print(f"indexing {docs} into {folder.path}")
    settings = IndexSettings(model=args.model, root=str(PROJECT_ROOT), rebuild=args.rebuild)
    try:
        report = Indexer(folder, settings).run([docs])
    except FingerprintMismatchError:  # built with another model: start over
        settings.rebuild = True
        report = Indexer(folder, settings).run([docs])
    for src, reason in report.skipped:
        _eprint(f"skipped {src}: {reason}")
    print(summary(report, folder, folder.read_manifest()))
    searcher = Searcher(folder.path, model=args.model)
    enc = searcher.encoder
    print(
        f"model: {enc.source.get('model')}  dim: {enc.embedding_dim}  pooling: {enc.config.pooling_mode}"
    )
    print(f"query instruction: {args.instruction or searcher.query_instruction!r}")
    print(f"search mode: {searcher.default_mode} (--mode of `search` picks another)")
    for query in DEMO_SEARCHES:
        print(f"\nsearch: {query}")
        _print_results(searcher.search(query, k=3, instruction=args.instruction))
    print(f'\nsearch it yourself: llm2vec-retrieval search {folder.path} "your question"')
    return 0


def _demo_similarity(args: argparse.Namespace) -> int:
    """Encode queries (with an instruction) and documents; print their cosine similarities."""
    from .ingest.folder import embedder_spec, load_encoder

    encoder = load_encoder(embedder_spec(args.model, None))
    print(
        f"model: {encoder.source.get('model')}  dim: {encoder.embedding_dim}  pooling: {encoder.config.pooling_mode}"
    )
    queries = encoder.encode_queries(DEMO_QUERIES, instruction=args.instruction)
    docs = encoder.encode_documents(DEMO_DOCUMENTS)
    scores = queries @ docs.T
    print(f"query instruction: {args.instruction or encoder.config.query_instruction!r}\n")
    header = "".join(f"  doc{j}" for j in range(len(DEMO_DOCUMENTS)))
    print(f"{'cosine':<48}{header}")
    for i, query in enumerate(DEMO_QUERIES):
        row = "".join(f"  {s:+.2f}" for s in scores[i])
        best = scores[i].argmax()
        print(f"{query[:46]:<48}{row}   best: doc{best}")
    print()
    for j, doc in enumerate(DEMO_DOCUMENTS):
        print(f"doc{j}: {doc}")
    return 0


# ---------------------------------------------------------------------- index
def cmd_index(args: argparse.Namespace) -> int:
    from .index import FingerprintMismatchError
    from .ingest import Indexer, IndexFolder, IndexSettings
    from .ingest.indexer import summary

    folder = IndexFolder(args.index)
    settings = IndexSettings(
        model=args.model,
        adapter=args.adapter,
        kind=args.kind,
        chunk_tokens=args.chunk_tokens,
        overlap=args.overlap,
        text_field=args.text_field,
        text_column=args.text_column,
        query_instruction=args.query_instruction,
        root=args.root,
        rebuild=args.rebuild,
        commit_every=args.commit_every,
        lexical=args.lexical,
    )
    existed = folder.exists()
    indexer = Indexer(folder, settings, progress=args.progress)
    try:
        report = indexer.run(args.sources)
    except FingerprintMismatchError as exc:
        raise _mismatch(
            exc, args.index, "pass --rebuild to re-embed every file with this model"
        ) from None
    except KeyboardInterrupt:
        _eprint(_interrupted(indexer.report.commits, folder.path, existed))
        return 130
    for src, reason in report.skipped:
        _eprint(f"skipped {src}: {reason}")
    for src, note in report.notes:
        _eprint(f"note {src}: {note}")
    print(summary(report, folder, folder.read_manifest()))
    if report.total_chunks == 0:
        _eprint("warning: the index holds no chunks")
    return 0


def _interrupted(commits: int, path: Path, existed: bool) -> str:
    """What an index run stopped by Ctrl-C kept."""
    if commits:
        return (
            f"interrupted: the {commits} commit(s) of this run are kept in {path}; "
            "run the same command again to continue"
        )
    if existed:
        return (
            f"interrupted before anything was committed: {path} is as it was; "
            "run the same command again to continue"
        )
    return "interrupted before anything was committed: no index was written"


# ---------------------------------------------------------------------- search
def _print_results(results) -> None:
    from .ingest import snippet

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


def _open_searcher(args: argparse.Namespace):
    from .index import DimensionMismatchError, FingerprintMismatchError
    from .ingest import Searcher

    try:
        return Searcher(
            args.dir, model=args.model, adapter=args.adapter, allow_mismatch=args.allow_mismatch
        )
    except DimensionMismatchError as exc:
        raise UserError(
            f"index {args.dir} holds {exc.saved_dim}-dimensional vectors but this model makes "
            f"{exc.given_dim}-dimensional ones, which --allow-mismatch cannot bridge: search "
            "with the index's own model, or re-index with --rebuild"
        ) from None
    except FingerprintMismatchError as exc:
        raise _mismatch(
            exc, args.dir, "pass --allow-mismatch to use it anyway, or re-index with --rebuild"
        ) from None


def cmd_search(args: argparse.Namespace) -> int:
    from .index.store import DEFAULT_ALPHA, DEFAULT_FUSION
    from .ingest import IndexFolder

    flt = parse_filters(args.filter)
    if args.k < 1:
        raise UserError(f"-k must be at least 1, got {args.k}")
    IndexFolder(args.dir).read_manifest()  # a missing folder fails before the model loads
    if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.alpha is not None and args.fusion is None:
        args.fusion = "alpha"
    searcher = _open_searcher(args)
    try:
        mode = searcher.check_mode(args.mode)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.mode is None and searcher.notice:
        _eprint(f"note: {searcher.notice}")
    fusion = args.fusion or DEFAULT_FUSION
    alpha = DEFAULT_ALPHA if args.alpha is None else args.alpha
    try:
        results = searcher.search(
            args.query,
            k=args.k,
            filter=flt,
            instruction=args.instruction,
            mode=mode,
            fusion=fusion,
            alpha=alpha,
        )
    except ValueError as exc:
        raise UserError(f"bad filter: {exc}") from None
    if args.json:
        out = {
            "query": args.query,
            "instruction": args.instruction
            if args.instruction is not None
            else searcher.query_instruction,
            "mode": mode,
            **(
                {"fusion": fusion, **({"alpha": alpha} if fusion == "alpha" else {})}
                if mode == "hybrid"
                else {}
            ),
            "index": str(searcher.folder.path),
            "results": [r.to_dict() for r in results],
        }
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        _print_results(results)
    return 0


# ---------------------------------------------------------------------- info
def index_info(path: str) -> dict[str, Any]:
    """What `info` shows, read from the folder's JSON files (no model, no FAISS)."""
    from .ingest import IndexFolder
    from .ingest.folder import describe_embedder

    folder = IndexFolder(path)
    manifest = folder.read_manifest()
    store = folder.read_store_manifest() or {}
    files = folder.read_files()
    fp = store.get("fingerprint") or {}
    instruction = manifest.get("query_instruction")
    return {
        "index": str(folder.path),
        "model": describe_embedder(manifest["embedder"]),
        "model_label": fp.get("model"),
        "model_path": manifest["embedder"].get("model_path"),
        "model_digest": fp.get("model_digest"),
        "adapter": manifest["embedder"].get("adapter"),
        "pooling": fp.get("pooling_mode"),
        "bidirectional": fp.get("bidirectional"),
        "query_instruction": instruction
        if instruction is not None
        else fp.get("query_instruction"),
        "dim": store.get("dim"),
        "kind": store.get("kind", manifest.get("kind")),
        "metric": store.get("metric", manifest.get("metric")),
        "lexical": store.get("lexical") is not None,
        "files": len(files),
        "chunks": store.get("count", 0),
        "tokens": sum(int(e.get("tokens", 0)) for e in files.values()),
        "chunking": manifest.get("chunking"),
        "root": manifest.get("root"),
        "created_at": manifest.get("created_at"),
        "updated_at": manifest.get("updated_at"),
        "size_bytes": folder.size_on_disk(),
    }


def cmd_info(args: argparse.Namespace) -> int:
    info = index_info(args.dir)
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=2))
        return 0
    ch = info["chunking"] or {}
    rows = [
        ("index", info["index"]),
        ("model", info["model"]),
        ("model digest", info["model_digest"]),
        ("adapter", info["adapter"] or "-"),
        (
            "pooling",
            f"{info['pooling']} ({'bidirectional' if info['bidirectional'] else 'causal'})",
        ),
        ("query instruction", repr(info["query_instruction"])),
        ("kind", f"{info['kind']} ({info['metric']}, dim {info['dim']})"),
        (
            "lexical (BM25)",
            "yes: dense, lexical and hybrid search"
            if info["lexical"]
            else "no: dense search only (run `index` again to add it)",
        ),
        ("files", info["files"]),
        ("chunks", info["chunks"]),
        ("tokens", f"{info['tokens']:,}"),
        ("chunking", f"{ch.get('chunk_tokens')} tokens, overlap {ch.get('overlap')}"),
        ("root", info["root"]),
        ("created", info["created_at"]),
        ("updated", info["updated_at"]),
        ("size on disk", _fmt_bytes(info["size_bytes"])),
    ]
    for key, value in rows:
        print(f"{key + ':':<19}{value}")
    return 0


# ---------------------------------------------------------------------- eval
def _evaluation():
    try:
        from . import evaluation
    except ImportError as exc:
        raise UserError(f"the evaluation package is missing ({exc})") from None
    return evaluation


def _eval_encoder(args: argparse.Namespace):
    from .ingest.folder import embedder_spec, load_encoder

    return _DtypeKeyed(load_encoder(embedder_spec(args.model, args.adapter)))


class _DtypeKeyed:
    """An encoder whose fingerprint also names its compute dtype, so that `--cache-dir`
    never hands bfloat16 embeddings to a float32 run (the encoder's own fingerprint leaves
    the dtype out: it says which indexes are compatible, and both dtypes are)."""

    def __init__(self, encoder: Any):
        self._encoder = encoder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def fingerprint(self) -> dict:
        dtype = next(self._encoder.model.parameters()).dtype
        return {**self._encoder.fingerprint(), "dtype": str(dtype).removeprefix("torch.")}


def _print_eval(result: dict[str, Any], as_json: bool, title: str) -> None:
    result = {k: v for k, v in result.items() if k != "run"}
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    print(title)
    for name, value in result["metrics"].items():
        print(f"  {name:<12}{value:.4f}")
    timing = result.get("timing_s", {})
    if "total" in timing:
        print(
            f"  ({timing['total']:.1f}s{', cached embeddings' if result.get('cached') is True else ''})"
        )


def cmd_eval_beir(args: argparse.Namespace) -> int:
    ev = _evaluation()
    from .instructions import get_instruction

    data = ev.load_beir(args.dir, split=args.split)
    data = ev.subset_queries(data, args.max_queries)
    data = ev.subset_corpus(data, args.max_docs, seed=args.seed)
    instruction = args.instruction
    if instruction is None:
        try:
            instruction = get_instruction(args.task or data.name)
        except KeyError:
            if args.task:
                raise UserError(f"unknown task {args.task!r}; pass --instruction instead") from None
            instruction = None  # the model's default query instruction
    cache = ev.EmbeddingCache(args.cache_dir) if args.cache_dir else None
    result = ev.evaluate_beir(_eval_encoder(args), data, query_instruction=instruction, cache=cache)
    subset = " (subset)" if data.subset else ""
    _print_eval(
        result,
        args.json,
        f"{data.name} {data.split}{subset}: {result['n_queries']} queries, "
        f"{result['n_docs']} documents, instruction {instruction!r}",
    )
    return 0


def cmd_eval_sts(args: argparse.Namespace) -> int:
    ev = _evaluation()
    from .instructions import STS_INSTRUCTION

    data = ev.load_sts(args.file, split=args.split)
    instruction = STS_INSTRUCTION if args.instruction is None else args.instruction
    cache = ev.EmbeddingCache(args.cache_dir) if args.cache_dir else None
    result = ev.evaluate_sts(_eval_encoder(args), data, instruction=instruction, cache=cache)
    _print_eval(
        result,
        args.json,
        f"{data.name} {data.split}: {result['n_pairs']} pairs, instruction {instruction!r}",
    )
    return 0


# ---------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    from .server import API_KEY_ENV

    try:  # the serve extra, checked before anything slow
        from .server import app as srv
    except ImportError as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    if api_key is not None and (not api_key.strip() or api_key != api_key.strip()):
        raise UserError("the API key must be non-empty and have no surrounding whitespace")
    if args.index is not None:
        from .ingest import IndexFolder

        IndexFolder(args.index).read_manifest()
    try:
        sock = srv.bind(args.host, args.port)
    except srv.BindError as exc:
        raise UserError(exc.strerror) from None
    service = None
    try:
        searcher = None
        if args.index is not None:
            args.dir = args.index
            searcher = _open_searcher(args)
            encoder = searcher.encoder
        else:
            from .ingest.folder import embedder_spec, load_encoder

            encoder = load_encoder(embedder_spec(args.model, args.adapter))
        service = srv.EmbeddingService(
            encoder,
            searcher=searcher,
            model_name=args.served_model_name,
            max_inputs=args.max_inputs,
            max_input_tokens=args.max_input_tokens,
            truncate=args.truncate,
            max_batch_tokens=args.batch_tokens,
            batch_wait_ms=args.batch_wait_ms,
            query_instruction=searcher.query_instruction if searcher is not None else None,
            request_timeout=args.request_timeout,
        )
        app = srv.create_app(
            service,
            api_key=api_key,
            cors_origins=args.cors_origin,
            max_body_bytes=args.max_body_bytes,
        )
        index_note = (
            f", index {searcher.folder.path} ({len(searcher.store)} chunks)" if searcher else ""
        )
        _say_dtype(args)
        print(
            f"serving {service.model_name} (dim {encoder.embedding_dim}{index_note}) "
            f"on {srv.url_of(sock)}",
            flush=True,
        )
        if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
            _eprint(
                f"warning: listening on {args.host} without an API key "
                f"(--api-key or ${API_KEY_ENV}): anyone who reaches it can use it"
            )
        srv.run(
            app,
            sock,
            read_timeout=args.read_timeout,
            keep_alive=args.keep_alive,
            max_connections=args.max_connections,
            access_log=args.access_log,
        )
    finally:
        sock.close()
        if service is not None:
            service.close()
    _eprint("server stopped")
    return 0


def _serve_error(message: str):
    """The serve parser's errors: one line, exit code 2 (argparse prints usage too)."""
    _eprint(f"error: {message}")
    raise SystemExit(2)


def _int_in(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be an integer {span}, got {text!r}")
        return value

    return parse


def _seconds(low: float, inclusive: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (value >= low if inclusive else value > low)
        if not ok:
            bound = f"at least {low:g}" if inclusive else f"more than {low:g}"
            raise argparse.ArgumentTypeError(f"must be a number {bound}, got {text!r}")
        return value

    return parse


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _origin(text: str) -> str:
    if text != "*" and not re.fullmatch(r"https?://[^/\s?#]+", text):
        raise argparse.ArgumentTypeError(
            f"must be '*' or an origin like https://example.com:8080 (no path), got {text!r}"
        )
    return text


# ---------------------------------------------------------------------- parser
class _Formatter(argparse.RawDescriptionHelpFormatter):
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


def _wrap(text: str) -> str:
    import textwrap

    return textwrap.fill(text, 88)


def _add_model_args(
    p: argparse.ArgumentParser,
    what: str = "model folder, .gguf file or embedded name (default: the embedded default model)",
) -> None:
    p.add_argument("--model", default=None, help=what)
    p.add_argument(
        "--adapter", default=None, help="PEFT adapter folder applied on top of the model"
    )
    _add_dtype_arg(p)


def _add_dtype_arg(p: argparse.ArgumentParser) -> None:
    from .hardware import DTYPE_CHOICES

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


def build_parser() -> argparse.ArgumentParser:
    from .index.fusion import FUSIONS
    from .index.kinds import KINDS
    from .index.store import DEFAULT_ALPHA, DEFAULT_FUSION, DEFAULT_TEXT_MODE, MODES

    parser = argparse.ArgumentParser(
        prog="llm2vec-retrieval",
        description=_wrap(
            "LLM2Vec text encoders for retrieval: index folders, search them, serve embeddings."
        ),
        epilog="Run `llm2vec-retrieval COMMAND --help` for a command's options. Documentation: docs/cli.md",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: torch's choice, usually one per core)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # demo
    demo = sub.add_parser(
        "demo",
        formatter_class=_Formatter,
        help="index this project's docs/ and run two searches (the main job)",
        description=_wrap(
            "Index the project's docs/ folder into .cache/demo-index (incremental: "
            "later runs reuse it) and run two searches on it."
        ),
    )
    demo.add_argument(
        "--model",
        default=None,
        help="model folder or embedded name (default: the embedded default)",
    )
    demo.add_argument(
        "--instruction", default=None, help="query instruction (default: the model's)"
    )
    demo.add_argument(
        "--index", default=None, help="index folder (default: .cache/demo-index in the project)"
    )
    demo.add_argument("--rebuild", action="store_true", help="re-index from scratch")
    _add_dtype_arg(demo)
    demo.set_defaults(func=cmd_demo)

    # index
    idx = sub.add_parser(
        "index",
        formatter_class=_Formatter,
        help="index files and folders into an index folder",
        description=_wrap(
            "Chunk and embed .txt, .md, .jsonl, .csv and .pdf (with pypdf) files into an index "
            "folder. Re-running skips unchanged files, re-indexes changed ones and removes chunks of "
            "deleted files. Work is committed in groups: after a crash or Ctrl-C, run the same "
            "command again to continue."
        ),
        epilog="example: llm2vec-retrieval index docs/ notes.md --index my-index --chunk-tokens 200",
    )
    idx.add_argument("sources", nargs="+", metavar="SOURCE", help="files and folders to index")
    idx.add_argument(
        "--index", required=True, metavar="DIR", help="index folder (created if missing)"
    )
    _add_model_args(idx)
    idx.add_argument(
        "--kind",
        choices=KINDS,
        default=None,
        help="FAISS index kind for a new index (default: flat)",
    )
    idx.add_argument(
        "--chunk-tokens", type=int, default=None, help="tokens per chunk (default 256)"
    )
    idx.add_argument(
        "--overlap", type=int, default=None, help="tokens shared by consecutive chunks (default 32)"
    )
    idx.add_argument(
        "--text-field",
        default=None,
        help="field holding the text in .jsonl records (default: text)",
    )
    idx.add_argument(
        "--text-column", default=None, help="column holding the text in .csv files (default: text)"
    )
    idx.add_argument(
        "--query-instruction",
        default=None,
        help="instruction that `search` prepends to queries (default: the model's)",
    )
    idx.add_argument(
        "--root",
        default=None,
        help="folder that `source` paths are relative to (default: the current folder, fixed at creation)",
    )
    idx.add_argument(
        "--rebuild", action="store_true", help="discard the existing index and start over"
    )
    idx.add_argument(
        "--commit-every",
        type=int,
        default=512,
        metavar="N",
        help="commit (save) after about N new chunks, at file boundaries (and inside large files)",
    )
    idx.add_argument(
        "--lexical",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep a BM25 index of the chunks beside the vectors, for lexical and hybrid search "
        "(default: yes for a new index, else as recorded; an index made before hybrid search "
        "gets it on its next run, without re-embedding)",
    )
    prog = idx.add_mutually_exclusive_group()
    prog.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="always show the progress bar (default: only on a terminal)",
    )
    prog.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=None,
        help="never show the progress bar",
    )
    idx.set_defaults(func=cmd_index)

    # search
    se = sub.add_parser(
        "search",
        formatter_class=_Formatter,
        help="search an index folder",
        description=_wrap(
            "Rank the chunks of an index for a query. The embedder and the query instruction are "
            "the ones recorded in the index unless given."
        ),
        epilog='examples:\n  llm2vec-retrieval search my-index "how do I resume indexing?" -k 3\n'
        "  llm2vec-retrieval search my-index \"pooling\" --filter source=docs/concepts.md --filter 'chunk>=2' --json",
    )
    se.add_argument("dir", metavar="DIR", help="index folder")
    se.add_argument("query", metavar="QUERY", help="query text")
    se.add_argument("-k", type=int, default=5, help="number of results")
    se.add_argument(
        "--filter",
        action="append",
        metavar="EXPR",
        help="metadata filter, repeatable (AND): key=value, key!=value, key>=n, key<=n, key>n, key<n",
    )
    se.add_argument("--json", action="store_true", help="print JSON")
    se.add_argument("--instruction", default=None, help="query instruction (default: the index's)")
    se.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help=f"dense (vectors), lexical (BM25) or hybrid (both, fused) (default: {DEFAULT_TEXT_MODE}, "
        "or dense on an index without a lexical part)",
    )
    se.add_argument(
        "--fusion",
        choices=FUSIONS,
        default=None,
        help=f"hybrid fusion: rrf (reciprocal rank, k=60) or alpha (normalized scores) (default: {DEFAULT_FUSION})",
    )
    se.add_argument(
        "--alpha",
        type=float,
        default=None,
        help=f"alpha fusion weight of the dense part, 0-1 (implies --fusion alpha; default {DEFAULT_ALPHA})",
    )
    _add_model_args(se, "model folder or embedded name (default: the one recorded in the index)")
    se.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="search even if the embedder's fingerprint differs from the index's",
    )
    se.set_defaults(func=cmd_search)

    # info
    info = sub.add_parser(
        "info",
        formatter_class=_Formatter,
        help="describe an index folder",
        description=_wrap(
            "Print an index's manifest: model, adapter, pooling, instruction, "
            "file and chunk counts, index kind and size on disk. Loads no model."
        ),
    )
    info.add_argument("dir", metavar="DIR", help="index folder")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_info)

    # eval
    ev = sub.add_parser(
        "eval",
        help="evaluate a model on BEIR retrieval or STS data",
        description=_wrap("Quality evaluation on local data (nothing is downloaded)."),
    )
    ev_sub = ev.add_subparsers(dest="eval_command", required=True, metavar="TASK")
    beir = ev_sub.add_parser(
        "beir",
        formatter_class=_Formatter,
        help="nDCG@10, Recall@100, MRR@10 on a BEIR folder",
        description=_wrap(
            "Evaluate dense retrieval on a BEIR folder (corpus.jsonl, queries.jsonl, "
            "qrels/SPLIT.tsv)."
        ),
        epilog="example: llm2vec-retrieval eval beir ../shared/data/scifact --max-docs 2000",
    )
    beir.add_argument("dir", metavar="DIR", help="BEIR dataset folder")
    _add_model_args(beir)
    beir.add_argument("--split", default="test", help="qrels split")
    beir.add_argument(
        "--task",
        default=None,
        help="task name for the query instruction (default: the folder name)",
    )
    beir.add_argument("--instruction", default=None, help="query instruction (overrides --task)")
    beir.add_argument(
        "--max-queries", type=int, default=None, help="evaluate the first N judged queries"
    )
    beir.add_argument(
        "--max-docs",
        type=int,
        default=None,
        help="corpus subset: judged documents + a seeded sample",
    )
    beir.add_argument("--seed", type=int, default=0, help="seed of the corpus sample")
    beir.add_argument("--cache-dir", default=None, help="cache embeddings in this folder")
    beir.add_argument("--json", action="store_true", help="print JSON")
    beir.set_defaults(func=cmd_eval_beir)
    sts = ev_sub.add_parser(
        "sts",
        formatter_class=_Formatter,
        help="Spearman on an STS Benchmark file",
        description=_wrap("Spearman and Pearson (x100) of cosine similarity vs gold scores."),
        epilog="example: llm2vec-retrieval eval sts ../shared/data/stsb",
    )
    sts.add_argument("file", metavar="FILE", help="sts-SPLIT.csv file, or the folder holding it")
    _add_model_args(sts)
    sts.add_argument("--split", default="test", help="split when FILE is a folder")
    sts.add_argument(
        "--instruction", default=None, help="instruction for both sentences (default: the STS one)"
    )
    sts.add_argument("--cache-dir", default=None, help="cache embeddings in this folder")
    sts.add_argument("--json", action="store_true", help="print JSON")
    sts.set_defaults(func=cmd_eval_sts)

    # serve
    from .server import (
        API_KEY_ENV,
        DEFAULT_BATCH_TOKENS,
        DEFAULT_BATCH_WAIT_MS,
        DEFAULT_KEEP_ALIVE,
        DEFAULT_MAX_BODY_BYTES,
        DEFAULT_MAX_CONNECTIONS,
        DEFAULT_MAX_INPUTS,
        DEFAULT_READ_TIMEOUT,
        DEFAULT_REQUEST_TIMEOUT,
    )

    sv = sub.add_parser(
        "serve",
        formatter_class=_Formatter,
        help="serve embeddings (OpenAI-compatible) and search over HTTP",
        description=_wrap(
            "HTTP server (FastAPI + uvicorn, the serve extra): POST /v1/embeddings (OpenAI-compatible, "
            "plus input_type and instruction), POST /search (with --index), GET /v1/models, "
            "GET /health, OpenAPI docs at /docs. Requests are micro-batched by token budget."
        ),
        epilog="example: llm2vec-retrieval serve --index my-index --port 8000\n"
        '  curl -s localhost:8000/v1/embeddings -d \'{"input": ["hello"], "input_type": "query"}\'',
    )
    sv.error = _serve_error  # type: ignore[method-assign]
    sv.add_argument(
        "--index",
        default=None,
        metavar="DIR",
        help="index folder for /search (its model is served)",
    )
    _add_model_args(sv, "model to serve (default: the index's, else the embedded default)")
    sv.add_argument(
        "--host",
        type=_nonempty,
        default="127.0.0.1",
        help="address to bind (keep it local unless an --api-key is set)",
    )
    sv.add_argument(
        "--port", type=_int_in(0, 65535), default=8000, help="port (0 picks a free one)"
    )
    sv.add_argument(
        "--allow-mismatch", action="store_true", help="serve an index built with another embedder"
    )
    sv.add_argument(
        "--served-model-name",
        type=_nonempty,
        default=None,
        help="model name reported by the API (default: the model's)",
    )
    sv.add_argument(
        "--api-key",
        type=_nonempty,
        default=None,
        help=f"require 'Authorization: Bearer KEY' (401 without it; default: ${API_KEY_ENV}, "
        "else no key)",
    )
    sv.add_argument(
        "--cors-origin",
        type=_origin,
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser calls from this origin (repeatable; '*' for any; default: CORS off)",
    )
    sv.add_argument(
        "--max-body-bytes",
        type=_int_in(1),
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body (413 above)",
    )
    sv.add_argument(
        "--max-inputs",
        type=_int_in(1),
        default=DEFAULT_MAX_INPUTS,
        help="most inputs per request (413 above)",
    )
    sv.add_argument(
        "--max-input-tokens",
        type=_int_in(1),
        default=None,
        help="longest input in tokens (400 above; default and maximum: the model's doc_max_length)",
    )
    sv.add_argument(
        "--truncate",
        action="store_true",
        help="cut long inputs to the limit instead of refusing them",
    )
    sv.add_argument(
        "--batch-wait-ms",
        type=_seconds(0.0, inclusive=True),
        default=DEFAULT_BATCH_WAIT_MS,
        help="how long an idle batcher waits for more requests",
    )
    sv.add_argument(
        "--batch-tokens",
        type=_int_in(1),
        default=DEFAULT_BATCH_TOKENS,
        help="token budget of one model batch; large requests are encoded in pieces of this "
        "size, interleaved with the others",
    )
    sv.add_argument(
        "--read-timeout",
        type=_seconds(0.0, inclusive=False),
        default=DEFAULT_READ_TIMEOUT,
        metavar="S",
        help="seconds for a request (headers and body) to arrive (408 and close after)",
    )
    sv.add_argument(
        "--keep-alive",
        type=_seconds(0.0, inclusive=False),
        default=DEFAULT_KEEP_ALIVE,
        metavar="S",
        help="seconds an idle keep-alive connection stays open",
    )
    sv.add_argument(
        "--max-connections",
        type=_int_in(1),
        default=DEFAULT_MAX_CONNECTIONS,
        help="open connections at most (503 and close above)",
    )
    sv.add_argument(
        "--request-timeout",
        type=_seconds(0.0, inclusive=False),
        default=DEFAULT_REQUEST_TIMEOUT,
        metavar="S",
        help="seconds a request may wait for the model (503 after)",
    )
    sv.add_argument("--access-log", action="store_true", help="log every request to stderr")
    sv.set_defaults(func=cmd_serve)

    # train / export, provided by the training package when present
    try:
        from .training.cli import register
    except ImportError:
        register = None
    if register is not None:
        try:
            register(sub)
        except Exception as exc:  # a broken optional package must not take the other commands down
            _eprint(f"warning: train/export unavailable ({type(exc).__name__}: {exc})")
    return parser


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
        with _dtype_scope(args):
            return args.func(args)
    except KeyboardInterrupt:
        _eprint("interrupted")
        return 130
    except Exception as exc:
        if args.debug or not _is_user_error(exc):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _eprint(f"error: {msg}")
        return 2


def _dtype_scope(args: argparse.Namespace):
    """For a command that loads a model: its --dtype resolved (UserError for a bad one) for
    every encoder it loads (`args.dtype_choice`), and one stderr line saying which dtype runs
    and why, before the first text is encoded (an error before that stays one line; a run
    that embeds nothing says nothing). `serve` says it in its start-up log instead."""
    import contextlib

    choice = getattr(args, "encoder_dtype", None)
    if choice is None:
        return contextlib.nullcontext()
    from .hardware import DTYPE_CHOICES, resolve_dtype
    from .ingest.folder import encoder_dtype

    try:
        args.dtype_choice = resolve_dtype(choice)
    except ValueError:
        raise UserError(
            f"unknown --dtype {choice!r}; valid choices: {', '.join(DTYPE_CHOICES)}"
        ) from None
    say = None if args.func is cmd_serve else (lambda _: _say_dtype(args))
    return encoder_dtype(choice, on_encode=say)


def _say_dtype(args: argparse.Namespace) -> None:
    """One stderr line, once per command: which dtype the model encodes in, and why."""
    if getattr(args, "dtype_choice", None) is not None and not getattr(args, "dtype_said", False):
        args.dtype_said = True
        _eprint(args.dtype_choice.describe("--dtype"))


def _is_user_error(exc: BaseException) -> bool:
    from .ingest import EmptyCorpusError, IndexFolderError

    user = (
        UserError,
        FileNotFoundError,
        NotADirectoryError,
        PermissionError,
        ValueError,
        ImportError,
        IndexFolderError,
        EmptyCorpusError,
        OSError,
    )
    if isinstance(exc, user):
        return True
    try:
        from .index import IndexCorruptedError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, IndexCorruptedError)


if __name__ == "__main__":
    raise SystemExit(main())
