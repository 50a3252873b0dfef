"""Encoding throughput of our encoder against the padded-token budget per forward pass.

This is the measurement behind `EncoderConfig.max_batch_tokens = 4096`: on the 2-core CPU in bf16,
smaller budgets pad less and keep activations cache-sized. Prints tokens/s per budget and writes
`benchmarks/results/budget_sweep_<timestamp>.json`.

    python -m benchmarks.budget_sweep [--n-docs 32,128] [--budgets 2048,4096,8192,16384] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n-docs", default="32,128", help="first N SciFact documents, comma-separated"
    )
    parser.add_argument("--budgets", default="2048,4096,8192,16384")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("LLM2VEC_DATA_DIR", str(ROOT.parent / "shared" / "data")),
    )
    args = parser.parse_args(argv)

    import torch

    from llm2vec_retrieval import LLM2Vec

    docs = []
    with open(Path(args.data_dir) / "scifact" / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            docs.append(f"{record.get('title', '')} {record['text']}".strip())
    encoder = LLM2Vec.from_pretrained("smollm2-135m-instruct", dtype=getattr(torch, args.dtype))
    encoder.encode_documents(docs[:4])  # warm-up
    rows = []
    for n in (int(x) for x in args.n_docs.split(",")):
        subset = docs[:n]
        tokens = sum(min(c, encoder.config.doc_max_length) for c in encoder.count_tokens(subset))
        for budget in (int(x) for x in args.budgets.split(",")):
            encoder.config.max_batch_tokens = budget
            start = time.perf_counter()
            encoder.encode_documents(subset, batch_size=1000)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "n_docs": n,
                    "budget": budget,
                    "tokens": tokens,
                    "seconds": seconds,
                    "tokens_per_s": tokens / seconds,
                }
            )
            print(f"{n:5d} docs  budget {budget:6d}  {tokens / seconds:7.0f} tokens/s", flush=True)
    out = ROOT / "benchmarks" / "results" / f"budget_sweep_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "command": "python -m benchmarks.budget_sweep " + " ".join(argv or []),
                "machine": {
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                },
                "dtype": args.dtype,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
