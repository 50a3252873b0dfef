"""Evidence that the bundled trainer works: MNTP, then SimCSE, on the embedded default model.

    python -m benchmarks.train_evidence                 # the full CPU recipe (see RECIPE below)
    python -m benchmarks.train_evidence --smoke         # 10 steps per stage, small evals: timings only

Four encoders of SmolLM2-135M-Instruct (`resolve_model_path(None)`), evaluated the same way:
  causal          untrained, causal attention (LLM2Vec.from_pretrained(enable_bidirectional=False))
  bidirectional   untrained, bidirectional attention
  mntp            after MNTP (bidirectional, LoRA) on ../shared/data/english-sentences
  mntp+simcse     after MNTP then SimCSE (SimCSE adapter on the MNTP-merged base)

Metrics: STS-B *dev* Spearman x100 (both sides with the STS instruction, the instruction kept out
of the pooled vector), and SciFact test nDCG@10 on a corpus subset (queries with the SciFact
instruction, documents without; reported as a subset score) through
`llm2vec_retrieval.evaluation`. The STS-B test split and SciFact are never trained on.

Writes benchmarks/results/train_evidence_<timestamp>.json (settings, metrics, timings, loss curves
from each stage's train_log.jsonl) and prints a table. Training outputs go to --work-dir
(default benchmarks/.cache/train_evidence/<timestamp>), so a killed run resumes with --work-dir.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The CPU recipe (2 cores, bf16 autocast, ~36 min on idle cores, ~50 min with other jobs running).
# Measured with --smoke on 2 shared cores: MNTP ~2-3 s/step (4 x 128 tokens), SimCSE ~9-15 s/step
# (32 sentences <= 48 tokens, one forward per view: faster here than length-sorted GradCache chunks),
# STS-B dev ~40-90 s and the SciFact subset ~75 s per encoder. Learning rates are the paper's x4
# (MNTP 5e-5, SimCSE 3e-5) because the runs are ~10x shorter than the paper's 1000 steps.
RECIPE = {
    "mntp": {"max_steps": 150, "batch_size": 4, "block_size": 128, "lr": 2e-4},
    "simcse": {"max_steps": 120, "batch_size": 32, "max_length": 48, "lr": 1e-4, "mini_batch_size": 0},
}

def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model (default: the embedded default, SmolLM2-135M-Instruct)")
    p.add_argument("--data-dir", default=None, help="shared data folder (default: $LLM2VEC_DATA_DIR or ../shared/data)")
    p.add_argument("--train-file", default=None, help="training sentences (default: english-sentences/all_sentences.txt)")
    p.add_argument("--work-dir", default=None, help="where the adapters and logs go (reuse it to resume)")
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--smoke", action="store_true", help="10 steps per stage and small evaluations (timing check)")
    p.add_argument("--mntp-steps", type=int, default=RECIPE["mntp"]["max_steps"])
    p.add_argument("--mntp-batch-size", type=int, default=RECIPE["mntp"]["batch_size"])
    p.add_argument("--block-size", type=int, default=RECIPE["mntp"]["block_size"])
    p.add_argument("--mntp-lr", type=float, default=RECIPE["mntp"]["lr"])
    p.add_argument("--simcse-steps", type=int, default=RECIPE["simcse"]["max_steps"])
    p.add_argument("--simcse-batch-size", type=int, default=RECIPE["simcse"]["batch_size"])
    p.add_argument("--simcse-max-length", type=int, default=RECIPE["simcse"]["max_length"])
    p.add_argument("--simcse-lr", type=float, default=RECIPE["simcse"]["lr"])
    p.add_argument("--mini-batch-size", type=int, default=RECIPE["simcse"]["mini_batch_size"],
                   help="SimCSE texts per forward pass, length-sorted, with GradCache (0: whole batch)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast in training, bf16 weights in evaluation")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--sts-max-pairs", type=int, default=0, help="evaluate on the first N STS-B dev pairs (0: all 1,500)")
    p.add_argument("--scifact-queries", type=int, default=50, help="SciFact test queries (0: skip SciFact)")
    p.add_argument("--scifact-docs", type=int, default=300, help="SciFact corpus subset size (judged docs always kept)")
    p.add_argument("--doc-max-length", type=int, default=256, help="token cap on SciFact documents at evaluation")
    p.add_argument("--stages", default="causal,bidirectional,mntp,mntp+simcse")
    args = p.parse_args(argv)
    if args.smoke:
        args.mntp_steps = args.simcse_steps = 10
        args.sts_max_pairs = args.sts_max_pairs or 200
        args.scifact_queries = min(args.scifact_queries, 10)
        args.scifact_docs = min(args.scifact_docs, 60)
    return args


def _evaluate(encoder, sts, scifact) -> dict:
    from llm2vec_retrieval.evaluation import evaluate_beir, evaluate_sts
    from llm2vec_retrieval.instructions import STS_INSTRUCTION, get_instruction

    wrapped = encoder
    out = {}
    t0 = time.perf_counter()
    res = evaluate_sts(wrapped, sts, instruction=STS_INSTRUCTION)
    out["stsb_dev_spearman"] = round(res["metrics"]["spearman"], 2)
    out["stsb_s"] = round(time.perf_counter() - t0, 1)
    if scifact is not None:
        t0 = time.perf_counter()
        res = evaluate_beir(wrapped, scifact, query_instruction=get_instruction("SciFact"), metrics=("ndcg@10",))
        out["scifact_ndcg@10_subset"] = round(res["metrics"]["ndcg@10"], 4)
        out["scifact_s"] = round(time.perf_counter() - t0, 1)
    return out


def _curve(folder: Path) -> list[dict]:
    log = folder / "train_log.jsonl"
    if not log.is_file():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [{k: r[k] for k in ("step", "loss", "lr", "tokens_per_s", "elapsed_s") if k in r} for r in rows if "step" in r]


def main(argv=None) -> int:
    args = _parse(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from llm2vec_retrieval import LLM2Vec
    from llm2vec_retrieval.evaluation import load_beir, load_sts, subset_corpus, subset_queries
    from llm2vec_retrieval.evaluation.data import default_data_dir
    from llm2vec_retrieval.loading import resolve_model_path
    from llm2vec_retrieval.training import MNTPConfig, SimCSEConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    train_file = Path(args.train_file) if args.train_file else data_dir / "english-sentences" / "all_sentences.txt"
    work = Path(args.work_dir) if args.work_dir else ROOT / "benchmarks" / ".cache" / "train_evidence" / stamp
    work.mkdir(parents=True, exist_ok=True)
    base = resolve_model_path(args.model)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]

    sts = load_sts(data_dir / "stsb", split="dev")
    if args.sts_max_pairs:
        from llm2vec_retrieval.evaluation import StsData

        n = args.sts_max_pairs
        sts = StsData(sts.name, sts.split, sts.sentences1[:n], sts.sentences2[:n], sts.scores[:n], sts.checksum)
    scifact = None
    if args.scifact_queries:
        scifact = subset_corpus(subset_queries(load_beir(data_dir / "scifact", "test"), args.scifact_queries), args.scifact_docs)

    # evaluation in bf16 weights (adapters merged) when --bf16, as the reference numbers in the data README
    enc_kwargs = {"doc_max_length": args.doc_max_length, "dtype": torch.bfloat16 if args.bf16 else torch.float32}
    results: dict = {"rows": {}, "timings_s": {}}
    t_all = time.perf_counter()

    def run_eval(name, encoder):
        t0 = time.perf_counter()
        row = _evaluate(encoder, sts, scifact)
        results["rows"][name] = row
        results["timings_s"][f"eval:{name}"] = round(time.perf_counter() - t0, 1)
        print(f"[{time.perf_counter() - t_all:7.0f}s] {name}: {row}", flush=True)

    if "causal" in stages:
        run_eval("causal", LLM2Vec.from_pretrained(base, enable_bidirectional=False, **enc_kwargs))
    if "bidirectional" in stages:
        run_eval("bidirectional", LLM2Vec.from_pretrained(base, **enc_kwargs))

    common = dict(model=args.model, data=[str(train_file)], bf16=args.bf16, progress=True, save_steps=50,
                  num_threads=args.threads, seed=42)
    mntp_cfg = MNTPConfig(output=str(work / "mntp"), max_steps=args.mntp_steps, batch_size=args.mntp_batch_size,
                          block_size=args.block_size, lr=args.mntp_lr, warmup_steps=min(10, args.mntp_steps // 10), **common)
    simcse_cfg = SimCSEConfig(output=str(work / "simcse"), init_adapter=[str(work / "mntp")], max_steps=args.simcse_steps,
                              batch_size=args.simcse_batch_size, max_length=args.simcse_max_length, lr=args.simcse_lr,
                              warmup_steps=min(10, args.simcse_steps // 10), mini_batch_size=args.mini_batch_size, **common)
    if "mntp" in stages or "mntp+simcse" in stages:
        t0 = time.perf_counter()
        train(mntp_cfg)
        results["timings_s"]["train:mntp"] = round(time.perf_counter() - t0, 1)
        print(f"[{time.perf_counter() - t_all:7.0f}s] mntp trained", flush=True)
    if "mntp" in stages:
        run_eval("mntp", LLM2Vec.from_pretrained(base, peft_model_name_or_path=str(work / "mntp"), merge_peft=True, **enc_kwargs))
    if "mntp+simcse" in stages:
        t0 = time.perf_counter()
        train(simcse_cfg)
        results["timings_s"]["train:simcse"] = round(time.perf_counter() - t0, 1)
        print(f"[{time.perf_counter() - t_all:7.0f}s] simcse trained", flush=True)
        run_eval("mntp+simcse", LLM2Vec.from_pretrained(str(work / "mntp"), peft_model_name_or_path=str(work / "simcse"), merge_peft=True, **enc_kwargs))

    results["timings_s"]["total"] = round(time.perf_counter() - t_all, 1)
    results["settings"] = {
        "argv": sys.argv[1:] if argv is None else argv,
        "model": args.model or "smollm2-135m-instruct (embedded default)",
        "train_file": str(train_file),
        "work_dir": str(work),
        "mntp": mntp_cfg.to_dict(),
        "simcse": simcse_cfg.to_dict(),
        "sts": {"split": "dev", "pairs": len(sts)},
        "scifact": None if scifact is None else {"split": "test", **(scifact.subset or {})},
        "eval_bf16": args.bf16,
        "doc_max_length": args.doc_max_length,
        "smoke": args.smoke,
    }
    results["loss_curves"] = {"mntp": _curve(work / "mntp"), "simcse": _curve(work / "simcse")}
    results["environment"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
    }
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"train_evidence_{'smoke_' if args.smoke else ''}{stamp}.json"
    (out_dir / name).write_text(json.dumps(results, indent=2))

    print()
    header = f"{'encoder':<14}{'STS-B dev Spearman':>20}{'SciFact nDCG@10 (subset)':>27}"
    print(header)
    print("-" * len(header))
    for row_name, row in results["rows"].items():
        sci = row.get("scifact_ndcg@10_subset")
        print(f"{row_name:<14}{row['stsb_dev_spearman']:>20.2f}{(f'{sci:.4f}' if sci is not None else '-'):>27}")
    for stage in ("mntp", "simcse"):
        curve = results["loss_curves"][stage]
        if curve:
            k = max(1, len(curve) // 10)
            first = sum(r["loss"] for r in curve[:k]) / k
            last = sum(r["loss"] for r in curve[-k:]) / k
            print(f"{stage} loss: first {k} steps {first:.4f} -> last {k} steps {last:.4f} "
                  f"({curve[-1]['elapsed_s']:.0f} s, {len(curve)} steps)")
    print(f"\nwrote {out_dir / name} (total {results['timings_s']['total']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
