"""Choose the default text-search mode and fusion on dev data (never on SciFact or STS-B test).

    python -m benchmarks.hybrid_dev                       # the shipped default model
    python -m benchmarks.hybrid_dev --adapter W/combined  # a candidate adapter on Gemma 3 270M

Scores every search setting below, through the IndexStore (flat, cosine, with its BM25 part),
on the retrieval dev sets that `benchmarks.supervised_data` carves from the supervised training
data (held-out anchors as queries with their instruction, their positives as the corpus):
dense, lexical (BM25), hybrid with reciprocal rank fusion (k=60), and hybrid with the
normalized-score fusion at several alphas. The mean nDCG@10 over the dev sets picks the
default (`DEFAULT_TEXT_MODE`, `DEFAULT_FUSION`, `DEFAULT_ALPHA` in llm2vec_retrieval/index/store.py).

Writes benchmarks/results/hybrid_dev_<timestamp>.json (command, machine, per-set scores).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALPHAS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def searches() -> dict[str, dict]:
    out = {
        "dense": {"mode": "dense"},
        "lexical": {"mode": "lexical"},
        "hybrid rrf": {"mode": "hybrid", "fusion": "rrf"},
    }
    for a in ALPHAS:
        out[f"hybrid alpha={a}"] = {"mode": "hybrid", "fusion": "alpha", "alpha": a}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.hybrid_dev", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--data",
        default=str(ROOT / "benchmarks" / ".cache" / "supervised"),
        help="prepared folder of benchmarks.supervised_data (its dev/ sets)",
    )
    p.add_argument(
        "--adapter",
        default=None,
        help="candidate adapter on Gemma 3 270M (default: the shipped default)",
    )
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--doc-max-length", type=int, default=256)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from benchmarks.speed import machine_info
    from benchmarks.train_default import dev_sets
    from llm2vec_retrieval import LLM2Vec
    from llm2vec_retrieval.evaluation import evaluate_beir_store

    if args.threads:
        torch.set_num_threads(args.threads)
    started = _dt.datetime.now()
    kwargs = {"dtype": getattr(torch, args.dtype), "doc_max_length": args.doc_max_length}
    if args.adapter:
        enc = LLM2Vec.from_pretrained(
            "gemma3-270m", peft_model_name_or_path=args.adapter, merge_peft=True, **kwargs
        )
    else:
        enc = LLM2Vec.from_pretrained(**kwargs)
    table: dict[str, dict[str, float]] = {}
    for name, (beir, instruction) in dev_sets(Path(args.data)).items():
        res = evaluate_beir_store(
            enc, beir, searches(), query_instruction=instruction, metrics=("ndcg@10",)
        )
        res.pop("_timing_s")
        for setting, r in res.items():
            table.setdefault(setting, {})[name] = round(r["metrics"]["ndcg@10"], 4)
        print(name, {s: v[name] for s, v in table.items()}, flush=True)
    for row in table.values():
        row["mean"] = round(sum(row.values()) / len(row), 4)
    best = max(table, key=lambda s: table[s]["mean"])
    report = {
        "benchmark": "hybrid_dev",
        "command": shlex.join(
            ["python", "-m", "benchmarks.hybrid_dev", *(sys.argv[1:] if argv is None else argv)]
        ),
        "started": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "model": args.adapter or "shipped default (gemma3-270m-llm2vec)",
        "dtype": args.dtype,
        "searches": searches(),
        "ndcg@10": table,
        "best": best,
    }
    out = Path(args.results_dir) / f"hybrid_dev_{started.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    sets = [k for k in next(iter(table.values())) if k != "mean"]
    print(f"{'setting':<18}" + "".join(f"{s[:20]:>22}" for s in sets) + f"{'mean':>8}")
    for setting, row in table.items():
        print(f"{setting:<18}" + "".join(f"{row[s]:>22.4f}" for s in sets) + f"{row['mean']:>8.4f}")
    print(f"\nbest on dev: {best}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
