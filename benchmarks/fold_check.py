"""How close is a rank-R fold of a stage-adapter chain to the exact fold? (embeddings, not weights)

    python -m benchmarks.fold_check --model gemma3-270m --adapter W/mntp W/mntp+simcse W/mntp+simcse+supervised \
        --ranks 32,40

Folds the chain exactly and at each rank (`combine_adapters`, into a temporary folder), encodes the
first `--n` SciFact documents (no instruction) and test queries (SciFact instruction) in fp32 with
each fold, and prints the min / mean cosine of every rank's vectors to the exact fold's, with the
fold's size and weight-space relative error. This is the check behind the shipped rank-40 adapter
(docs/default_model.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="base model the adapters were trained on")
    p.add_argument(
        "--adapter", nargs="+", required=True, help="stage adapter folders, in training order"
    )
    p.add_argument("--ranks", default="32,40")
    p.add_argument("--dtype", default="bfloat16", help="storage dtype of the folds")
    p.add_argument("--n", type=int, default=64, help="documents and queries to encode")
    p.add_argument(
        "--data-dir",
        default=None,
        help="shared data folder (default: $LLM2VEC_DATA_DIR or ../shared/data)",
    )
    args = p.parse_args(argv)

    from llm2vec_retrieval.evaluation import load_beir
    from llm2vec_retrieval.evaluation.data import default_data_dir
    from llm2vec_retrieval.instructions import get_instruction
    from llm2vec_retrieval.training.combine import combine_adapters
    from llm2vec_retrieval.training.modeling import load_training_base

    data = load_beir(Path(args.data_dir or default_data_dir()) / "scifact", "test")
    docs = [(d["title"] + " " + d["text"]).strip() for d in list(data.corpus.values())[: args.n]]
    queries = list(data.queries.values())[: args.n]
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        vectors = {}
        for rank in [None] + [int(r) for r in args.ranks.split(",") if r.strip()]:
            folder = Path(tmp) / f"r{rank or 'exact'}"
            info = combine_adapters(args.adapter, folder, rank=rank, dtype=args.dtype)
            enc = load_training_base(args.model, [str(folder)])
            vectors[rank] = (
                enc.encode_documents(docs, show_progress_bar=False),
                enc.encode_queries(
                    queries, instruction=get_instruction("SciFact"), show_progress_bar=False
                ),
            )
            report[f"r{rank or 'exact'}"] = {
                "rank": info["rank"],
                "bytes": info["bytes"],
                "relative_error": info["relative_error"],
            }
            del enc
        for rank, (d, q) in vectors.items():
            if rank is None:
                continue
            cd, cq = (
                (d * vectors[None][0]).sum(1),
                (q * vectors[None][1]).sum(1),
            )  # vectors are L2-normalized
            report[f"r{rank}"].update(
                {
                    "docs_cosine_min": float(cd.min()),
                    "docs_cosine_mean": float(cd.mean()),
                    "queries_cosine_min": float(cq.min()),
                    "queries_cosine_mean": float(cq.mean()),
                }
            )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
