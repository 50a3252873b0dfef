"""The `eval` command: `eval beir` and `eval sts`: quality on local BEIR and STS data (nothing is downloaded)."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from typing import Any

from ..errors import UserError
from ..hardware import compute_dtype
from .common import Formatter, Subparsers, add_model_args, reading_inputs, say_dtype, wrap


def register(sub: Subparsers) -> None:
    ev = sub.add_parser(
        "eval",
        help="evaluate a model on BEIR retrieval or STS data",
        description=wrap("Quality evaluation on local data (nothing is downloaded)."),
    )
    ev_sub = ev.add_subparsers(dest="eval_command", required=True, metavar="TASK")
    beir = ev_sub.add_parser(
        "beir",
        formatter_class=Formatter,
        help="nDCG@10, Recall@100, MRR@10 on a BEIR folder",
        description=wrap(
            "Evaluate dense retrieval on a BEIR folder (corpus.jsonl, queries.jsonl, "
            "qrels/SPLIT.tsv)."
        ),
        epilog="example: llm2vec-retrieval eval beir ../shared/data/scifact --max-docs 2000",
    )
    beir.add_argument("dir", metavar="DIR", help="BEIR dataset folder")
    add_model_args(beir)
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
    beir.set_defaults(func=run_beir)
    sts = ev_sub.add_parser(
        "sts",
        formatter_class=Formatter,
        help="Spearman on an STS Benchmark file",
        description=wrap("Spearman and Pearson (x100) of cosine similarity vs gold scores."),
        epilog="example: llm2vec-retrieval eval sts ../shared/data/stsb",
    )
    sts.add_argument("file", metavar="FILE", help="sts-SPLIT.csv file, or the folder holding it")
    add_model_args(sts)
    sts.add_argument("--split", default="test", help="split when FILE is a folder")
    sts.add_argument(
        "--instruction", default=None, help="instruction for both sentences (default: the STS one)"
    )
    sts.add_argument("--cache-dir", default=None, help="cache embeddings in this folder")
    sts.add_argument("--json", action="store_true", help="print JSON")
    sts.set_defaults(func=run_sts)


@contextlib.contextmanager
def _reading_data() -> Iterator[None]:
    """Loading a dataset: a missing or malformed file (OSError, ValueError) is the user's."""
    try:
        yield
    except (OSError, ValueError) as exc:
        raise UserError(str(exc)) from exc


def _eval_encoder(args: argparse.Namespace):
    from ..ingest.folder import embedder_spec, encoder_from_spec

    with reading_inputs():
        encoder = encoder_from_spec(embedder_spec(args.model, args.adapter), args.encoder_dtype)
    say_dtype(args)  # next: the first texts are encoded
    return _DtypeKeyed(encoder)


class _DtypeKeyed:
    """An encoder whose fingerprint also names its compute dtype, so that `--cache-dir`
    never hands bfloat16 embeddings to a float32 run (the encoder's own fingerprint leaves
    the dtype out: it says which indexes are compatible, and both dtypes are)."""

    def __init__(self, encoder: Any):
        self._encoder = encoder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def fingerprint(self) -> dict:
        return {**self._encoder.fingerprint(), "dtype": compute_dtype(self._encoder)}


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


def run_beir(args: argparse.Namespace) -> int:
    from .. import evaluation as ev
    from ..instructions import get_instruction

    with _reading_data():
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


def run_sts(args: argparse.Namespace) -> int:
    from .. import evaluation as ev
    from ..instructions import STS_INSTRUCTION

    with _reading_data():
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
