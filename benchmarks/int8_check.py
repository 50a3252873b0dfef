"""Does int8 dynamic quantization keep SciFact nDCG@10 within 0.5 points of fp32?

    python -m benchmarks.int8_check [--model gemma3-270m-llm2vec] [--max-queries 100] [--max-docs 300]

The encoder's linear layers are quantized with torch.ao's `quantize_dynamic` (int8 weights, int8
activations quantized per batch, fp32 accumulate); everything else stays fp32. Both variants
encode the same SciFact test subset (queries with the SciFact instruction, documents none; all
judged documents + a seeded sample) and are scored the same way. Issue 5's rule: offer int8 as a
user mode only if its nDCG@10 is within 0.005 of fp32. Writes benchmarks/results/int8_<stamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_DROP = 0.005  # 0.5 nDCG@10 points


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.int8_check", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--model", default=None, help="model name or folder (default: the shipped default)"
    )
    p.add_argument("--max-queries", type=int, default=100)
    p.add_argument("--max-docs", type=int, default=300)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from llm2vec_retrieval import LLM2Vec
    from llm2vec_retrieval.evaluation import evaluate_beir, load_beir, subset_corpus, subset_queries
    from llm2vec_retrieval.evaluation.data import default_data_dir
    from llm2vec_retrieval.instructions import get_instruction

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    data = subset_corpus(
        subset_queries(load_beir(data_dir / "scifact", "test"), args.max_queries or None),
        args.max_docs or None,
    )
    instruction = get_instruction("SciFact")
    rows, vectors = {}, {}
    encoder = LLM2Vec.from_pretrained(args.model, dtype=torch.float32)
    for variant in ("float32", "int8-dynamic"):
        if variant == "int8-dynamic":  # a quantized copy of the same loaded model
            encoder.model = torch.ao.quantization.quantize_dynamic(
                encoder.model, {torch.nn.Linear}, dtype=torch.qint8
            )
        t0 = time.perf_counter()
        res = evaluate_beir(
            encoder, data, query_instruction=instruction, metrics=("ndcg@10", "recall@100")
        )
        rows[variant] = {
            k: round(v, 4) for k, v in res["metrics"].items() if k in ("ndcg@10", "recall@100")
        }
        rows[variant]["seconds"] = round(time.perf_counter() - t0, 1)
        vectors[variant] = encoder.encode_documents(data.documents()[:64])
        print(variant, rows[variant], flush=True)
    cos = np.sum(vectors["float32"] * vectors["int8-dynamic"], axis=1)
    drop = rows["float32"]["ndcg@10"] - rows["int8-dynamic"]["ndcg@10"]
    report = {
        "benchmark": "int8",
        "command": "python -m benchmarks.int8_check "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "model": args.model or "default",
        "torch": torch.__version__,
        "data": {"queries": len(data.queries), "docs": len(data.corpus), "subset": data.subset},
        "rows": rows,
        "ndcg@10_drop": round(drop, 4),
        "max_drop": MAX_DROP,
        "passes": drop <= MAX_DROP,
        "doc_cosine_to_fp32": {"min": float(cos.min()), "mean": float(cos.mean()), "n": len(cos)},
    }
    out = Path(args.results_dir) / f"int8_{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"nDCG@10 drop {drop:+.4f} (limit {MAX_DROP}): {'passes' if report['passes'] else 'fails'}; wrote {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
