"""SimCSE learning-rate sweep from one MNTP adapter, scored on STS-B dev.

    python -m benchmarks.simcse_lr_sweep --mntp-adapter DIR [--lrs 1e-3,3e-3,1e-2] [--steps 40]

How the CPU recipe's SimCSE learning rate (benchmarks/train_evidence.py) was chosen: for each lr,
SimCSE trains `--steps` steps (batch 32, sentences <= 48 tokens, 4 warmup steps, `--seed` 42, the
train_evidence CPU sizes) on english-sentences from the MNTP adapter, then the MNTP+SimCSE
encoder is scored on STS-B dev (all 1,500 pairs unless `--sts-pairs`; Spearman x100, both sides
with the STS instruction, bf16). Score on the whole split: its first 500 pairs (one genre) ranked
SmolLM2's learning rates differently from the whole split. The untrained causal and bidirectional models are scored the same way.
STS-B test and SciFact are not looked at. About 9 minutes per lr on 2 CPU cores with SmolLM2.

Writes benchmarks/results/simcse_lr_sweep_<timestamp>.json after every scored encoder.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.simcse_lr_sweep", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--mntp-adapter",
        required=True,
        help="MNTP adapter folder (e.g. a train_evidence work dir's mntp)",
    )
    p.add_argument(
        "--model", default="smollm2-135m-instruct", help="the base the MNTP adapter was trained on"
    )
    p.add_argument("--lrs", default="1e-3,3e-3,1e-2", help="comma-separated SimCSE learning rates")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument(
        "--seed", type=int, default=42, help="SimCSE seed (data order, dropout, LoRA init)"
    )
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bf16 autocast while training (as the train_evidence CPU recipe)",
    )
    p.add_argument("--sts-pairs", type=int, default=0, help="first N STS-B dev pairs (0: all)")
    p.add_argument(
        "--work-dir",
        default=None,
        help="where the SimCSE adapters go (default: benchmarks/.cache/lr_sweep)",
    )
    p.add_argument("--data-dir", default=None)
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    lrs = [float(x) for x in args.lrs.split(",") if x.strip()]

    import torch

    from llm2vec_retrieval import LLM2Vec
    from llm2vec_retrieval.evaluation import StsData, evaluate_sts, load_sts
    from llm2vec_retrieval.evaluation.data import default_data_dir
    from llm2vec_retrieval.ingest.folder import write_json_atomic
    from llm2vec_retrieval.instructions import STS_INSTRUCTION
    from llm2vec_retrieval.training import SimCSEConfig, train
    from llm2vec_retrieval.training.modeling import load_training_base

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    sts = load_sts(data_dir / "stsb", split="dev")
    n = args.sts_pairs or len(sts)
    sts = StsData(
        sts.name, sts.split, sts.sentences1[:n], sts.sentences2[:n], sts.scores[:n], sts.checksum
    )
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = (
        Path(args.work_dir)
        if args.work_dir
        else ROOT / "benchmarks" / ".cache" / "lr_sweep" / stamp
    )
    out = Path(args.results_dir) / f"simcse_lr_sweep_{stamp}.json"
    report: dict = {
        "benchmark": "simcse_lr_sweep",
        "command": "python -m benchmarks.simcse_lr_sweep "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "model": args.model,
        "mntp_adapter": str(args.mntp_adapter),
        "sts": {"split": "dev", "pairs": len(sts)},
        "steps": args.steps,
        "seed": args.seed,
        "bf16": args.bf16,
        "rows": [],
    }

    def score(label: str, encoder, **extra) -> None:
        spearman = evaluate_sts(encoder, sts, instruction=STS_INSTRUCTION)["metrics"]["spearman"]
        report["rows"].append({"encoder": label, "stsb_dev_spearman": round(spearman, 2), **extra})
        print(f"{label}: STS-B dev ({len(sts)} pairs) {spearman:.2f}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, report)

    dtype = torch.bfloat16
    score("causal", LLM2Vec.from_pretrained(args.model, enable_bidirectional=False, dtype=dtype))
    score("bidirectional", load_training_base(args.model, [], dtype=dtype))
    score("mntp", load_training_base(args.model, [str(args.mntp_adapter)], dtype=dtype))
    for lr in lrs:
        cfg = SimCSEConfig(
            model=args.model,
            data=[str(data_dir / "english-sentences" / "all_sentences.txt")],
            output=str(work / f"simcse_lr{lr:g}"),
            init_adapter=[str(args.mntp_adapter)],
            max_steps=args.steps,
            batch_size=32,
            max_length=48,
            lr=lr,
            warmup_steps=4,
            seed=args.seed,
            bf16=args.bf16,
            progress=True,
        )
        t0 = time.perf_counter()
        train(cfg)
        train_s = round(time.perf_counter() - t0, 1)
        encoder = load_training_base(args.model, [str(args.mntp_adapter), cfg.output], dtype=dtype)
        score(f"mntp+simcse lr {lr:g}", encoder, lr=lr, train_s=train_s)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
