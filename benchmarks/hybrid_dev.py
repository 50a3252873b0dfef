"""Choose the default text-search mode and fusion on dev data (never on SciFact or STS-B test).

    python -m benchmarks.hybrid_dev                       # the shipped default model
    python -m benchmarks.hybrid_dev --adapter W/combined  # a candidate adapter on Gemma 3 270M

Scores every search setting below, through the IndexStore (flat, cosine, with its BM25 part),
on the retrieval dev sets that `benchmarks.supervised_data` carves from the supervised training
data (held-out anchors as queries with their instruction, their positives as the corpus):
dense, lexical (BM25), hybrid with reciprocal rank fusion (k=60), and hybrid with the
normalized-score fusion at several alphas. The mean nDCG@10 over the dev sets picks the
default (`DEFAULT_TEXT_MODE`, `DEFAULT_FUSION`, `DEFAULT_ALPHA` in llm2vec_retrieval/index/store.py).

Those dev sets share their sources with the training data, which flatters the dense side. With
`--ood`, the choice is made on out-of-domain sets instead, built from
`../shared/data/supervised-pairs/restricted/` (HealthVer claim -> evidence, WikiQA question ->
answer sentence; every anchor a query, every positive and hard negative in the corpus). Their
licenses allow experiments only: they are read here to score searches, never trained on.

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


OOD_SETS = {  # restricted/ file -> the query instruction (as benchmarks.supervised_data)
    "healthver": "Given a health claim, retrieve evidence that supports or refutes the claim:",
    "wikiqa": "Given a question, retrieve passages that answer the question:",
}


def ood_sets(data_dir: Path):
    """{name: (BeirData, instruction)} of the out-of-domain sets (restricted/, evaluation only)."""
    from llm2vec_retrieval.evaluation.data import beir_from_pairs
    from llm2vec_retrieval.training.data import read_examples

    out = {}
    for name, instruction in OOD_SETS.items():
        path = data_dir / "supervised-pairs" / "restricted" / f"{name}.tsv"
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing; --ood needs ../shared/data")
        rows = [(ex.query, ex.positive, ex.negative) for ex in read_examples(path)]
        beir = beir_from_pairs(f"ood-{name}", rows)
        out[f"ood-{name}"] = (beir, instruction)
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
    p.add_argument(
        "--ood",
        action="store_true",
        help="choose on out-of-domain sets from restricted/ (HealthVer, WikiQA; evaluation only)",
    )
    p.add_argument("--data-dir", default=None, help="shared data folder for --ood")
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
    if args.ood:
        from llm2vec_retrieval.evaluation.data import default_data_dir

        sets = ood_sets(Path(args.data_dir) if args.data_dir else default_data_dir())
    else:
        sets = dev_sets(Path(args.data))
    for name, (beir, instruction) in sets.items():
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
        "fingerprint": enc.fingerprint(),  # which adapter weights "shipped default" meant
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
