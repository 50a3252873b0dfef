"""Retrain the shipped default's supervised stage on more data: source ablation, final run, fold.

    python -m benchmarks.supervised_data --out benchmarks/.cache/supervised            # once (~20 s)
    python -m benchmarks.train_default --runs snli,snli+medquad,snli+altlex,snli+stackexchange
    python -m benchmarks.train_default --runs shipped,final --sources all --recipe cpu --ship
    python -m benchmarks.train_default --runs folded --install      # after benchmarks.quality says so

Every run is one supervised contrastive stage (a new LoRA) trained on the default it replaces
(Gemma 3 270M with the first default's MNTP + SimCSE + SNLI adapter merged; that adapter is kept
in benchmarks/baselines/gemma3-270m-llm2vec-v1, so the runs mean the same after a new default
ships), then scored on the
dev sets only: STS-B dev (Spearman x100, STS instruction on both sides) and the retrieval
dev sets carved from the training data by `benchmarks.supervised_data` (nDCG@10 per source,
anchors as queries with their instruction, the dev positives as corpus). SciFact and STS-B
test are never looked at here: they are measured once, by `benchmarks.quality`, for the
chosen model. `shipped` scores that previous default (v1) without training.

Runs (`--runs`): `shipped`, one name per source mix (`snli`, `snli+medquad`, ...; `all` = every
shippable source) trained with the ablation budget, `final` = `--sources` with the
recipe's full budget, and `folded` (the folded adapter of `--ship`, scored again: it is what
ships). `--ship` folds the v1 adapter and the final run into one adapter (`combine`,
truncated SVD to `--rank`, bf16) in the work folder, and only when the prepared data is
shippable (no restricted/ source). `--install` then copies that fold into the package
(`llm2vec_retrieval/adapters/gemma3-270m-llm2vec/`, official layout, training_configs.json
extended with the new stage): done by hand, after `benchmarks.quality` shows it beats the
current default on both SciFact and STS-B test.

Recipes: `cpu` (2 cores, bf16 autocast, batch 32 without GradCache, 240 steps: ~1.5 h for the final run)
and `gpu` (one H200-class GPU, ~15 min: batch 256 as GradCache mini-batches of 64). Both
resume from their checkpoints when rerun with the same --work-dir.

Results: benchmarks/results/train_default_<timestamp>.json, rewritten after every run (the
command, machine and CPU flags, settings, dev scores, loss curves, timings).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import sys
import time
from pathlib import Path

from benchmarks.speed import machine_info
from benchmarks.train_evidence import _curve

ROOT = Path(__file__).resolve().parents[1]
BASE = "gemma3-270m"  # the untrained base every adapter here applies to
# The default before this retraining (MNTP + SimCSE + SNLI, session 2), kept outside the package:
# the new stage trains on it merged into BASE, and the fold starts from it, whatever ships now.
PREVIOUS = ROOT / "benchmarks" / "baselines" / "gemma3-270m-llm2vec-v1"
SHIPPED_NAME = "gemma3-270m-llm2vec"  # the package's adapter folder that --install replaces
SHIPPABLE = ("snli", "medquad", "altlex", "stackexchange")
# Common settings: the paper's supervised lr (2e-4) halved because the model is already trained
# (this stage continues from the shipped supervised adapter); temperature 0.02 (official
# loss_scale 50); LoRA dropout 0 on the CPU: torch's CPU dropout (bernoulli_) took 35% of a
# training step in a profile of this stage, and the stage is short.
COMMON = {
    "lr": 1e-4,
    "temperature": 0.02,
    "false_negative_margin": 0.1,
    "one_source_per_batch": True,
    "lora_dropout": 0.0,
    "bf16": True,
}
RECIPES = {
    # ablation: the same short budget for every source mix
    "ablation": {
        "max_steps": 40,
        "batch_size": 32,
        "max_length": 128,
        "warmup_steps": 4,
        "mini_batch_size": 0,
    },
    "cpu": {
        "max_steps": 240,
        "batch_size": 32,
        "max_length": 128,
        "warmup_steps": 20,
        "mini_batch_size": 0,
    },
    "gpu": {
        "max_steps": 300,
        "batch_size": 256,
        "max_length": 256,
        "warmup_steps": 20,
        "mini_batch_size": 64,
        "lora_dropout": 0.05,
    },
}


def source_files(data: Path, sources: list[str]) -> list[str]:
    """Training files of the source names (stackexchange = its two row kinds)."""
    files = []
    for s in sources:
        names = ["stackexchange-title", "stackexchange-answer"] if s == "stackexchange" else [s]
        for n in names:
            f = data / "train" / f"{n}.jsonl"
            if not f.is_file():
                raise SystemExit(
                    f"error: {f} missing; run python -m benchmarks.supervised_data --out {data}"
                )
            files.append(str(f))
    return files


def dev_sets(data: Path):
    """{name: BeirData} of the dev files (queries = anchors, corpus = their positives)."""
    from llm2vec_retrieval.evaluation.data import beir_from_pairs

    out = {}
    for f in sorted((data / "dev").glob("*.jsonl")):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        beir = beir_from_pairs(f.stem, [(r["query"], r["positive"], None) for r in rows])
        (instruction,) = {r["instruction"] for r in rows}  # one instruction per source
        out[f.stem] = (beir, instruction)
    return out


class Runner:
    def __init__(self, args):
        import torch

        from llm2vec_retrieval.evaluation import load_sts
        from llm2vec_retrieval.evaluation.data import default_data_dir

        self.args = args
        self.torch = torch
        self.data = Path(args.data)
        manifest = json.loads((self.data / "manifest.json").read_text())
        self.shippable = bool(manifest.get("shippable"))
        self.stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.work = Path(args.work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        shared = Path(args.data_dir) if args.data_dir else default_data_dir()
        self.sts_dev = load_sts(shared / "stsb", split="dev")
        self.dev = dev_sets(self.data)
        self.path = (
            Path(args.results_file)
            if args.results_file
            else Path(args.results_dir) / f"train_default_{self.stamp}.json"
        )
        self.results = {
            "benchmark": "train_default",
            "command": shlex.join(["python", "-m", "benchmarks.train_default", *args.argv]),
            "started": _dt.datetime.now().isoformat(timespec="seconds"),
            "machine": machine_info(),
            "prepared_data": {"path": str(self.data), "manifest": manifest},
            "eval": {
                "sts": "STS-B dev",
                "dev_sets": {k: len(v[0].queries) for k, v in self.dev.items()},
                "dtype": "bfloat16",
                "doc_max_length": args.doc_max_length,
            },
            "runs": {},
        }
        if (
            args.results_file and self.path.is_file()
        ):  # continue a results file (e.g. after a restart)
            old = json.loads(self.path.read_text())
            self.results["runs"] = old.get("runs", {})
            self.results["command"] = old.get("command", "") + " ; then " + self.results["command"]
            self.results["started"] = old.get("started", self.results["started"])
        self.t0 = time.perf_counter()

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.0f}s] {msg}", flush=True)

    def write(self) -> None:
        self.results["wall_s"] = round(time.perf_counter() - self.t0, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.results, indent=2) + "\n")
        os.replace(tmp, self.path)

    def train(self, name: str, sources: list[str], recipe: str) -> Path:
        from llm2vec_retrieval.training import SupervisedConfig, train

        settings = {**COMMON, **RECIPES[recipe]}
        cfg = SupervisedConfig(
            model=BASE,
            init_adapter=[str(PREVIOUS)],
            data=source_files(self.data, sources),
            output=str(self.work / name),
            seed=self.args.seed,
            save_steps=self.args.save_steps,
            progress=True,
            **settings,
        )
        t0 = time.perf_counter()
        result = train(cfg)
        run = self.results["runs"].setdefault(name, {})
        run.update(
            sources=sources,
            recipe=recipe,
            settings=cfg.to_dict(),
            train_s=round(time.perf_counter() - t0, 1),
            steps=result.step,
            loss_curve=_curve(Path(cfg.output)),
        )
        self.log(f"{name}: trained ({result.step} steps)")
        return Path(cfg.output)

    def evaluate(self, name: str, adapters: list[Path]) -> dict:
        """Dev scores of BASE with ``adapters`` merged in order."""
        from llm2vec_retrieval.evaluation import evaluate_beir, evaluate_sts
        from llm2vec_retrieval.instructions import STS_INSTRUCTION
        from llm2vec_retrieval.training.modeling import load_training_base

        t0 = time.perf_counter()
        kwargs = {"dtype": self.torch.bfloat16, "doc_max_length": self.args.doc_max_length}
        enc = load_training_base(BASE, [str(a) for a in adapters], **kwargs)
        scores = {
            "stsb_dev": round(
                evaluate_sts(enc, self.sts_dev, instruction=STS_INSTRUCTION)["metrics"]["spearman"],
                2,
            )
        }
        for dev_name, (beir, instruction) in self.dev.items():
            res = evaluate_beir(enc, beir, query_instruction=instruction, metrics=("ndcg@10",))
            scores[f"{dev_name}_ndcg@10"] = round(res["metrics"]["ndcg@10"], 4)
        ret = [v for k, v in scores.items() if k.endswith("ndcg@10")]
        scores["retrieval_dev_mean"] = round(sum(ret) / len(ret), 4)
        # one number to choose by: similarity and retrieval weigh the same
        scores["dev_score"] = round(
            (scores["stsb_dev"] / 100 + scores["retrieval_dev_mean"]) / 2, 4
        )
        self.results["runs"].setdefault(name, {}).update(
            dev=scores, eval_s=round(time.perf_counter() - t0, 1)
        )
        self.log(f"{name}: {scores}")
        self.write()
        return scores

    def ship(self, final: Path) -> None:
        from llm2vec_retrieval.training.combine import combine_adapters

        if not self.shippable:
            raise SystemExit("error: the prepared data includes restricted/ sources: not shipping")
        out = self.work / f"combined-r{self.args.rank}"
        info = combine_adapters(
            [PREVIOUS, final], out, rank=self.args.rank, dtype="bfloat16", overwrite=True
        )
        self.results["combined"] = {
            "from": [str(PREVIOUS), str(final)],
            "rank": self.args.rank,
            "bytes": (out / "adapter_model.safetensors").stat().st_size,
            **info,
        }
        self.log(f"folded into {out}: {self.results['combined']['bytes'] / 2**20:.1f} MiB")
        self.write()
        self.evaluate_folded()

    def install(self) -> Path:
        """Copy the fold into the package's adapter folder (the files the official layout needs)."""
        import shutil

        from llm2vec_retrieval.sources import shipped_adapter_dir

        if not self.shippable:
            raise SystemExit(
                "error: the prepared data includes restricted/ sources: not installing"
            )
        fold = self.work / f"combined-r{self.args.rank}"
        final = self.work / "final"
        target = shipped_adapter_dir(SHIPPED_NAME)
        for name in (
            "adapter_config.json",
            "adapter_model.safetensors",
            "llm2vec_config.json",
            "llm2vec_retrieval_config.json",
        ):
            shutil.copyfile(fold / name, target / name)
        stages = json.loads((PREVIOUS / "training_configs.json").read_text())
        new_stage = json.loads((final / "training_config.json").read_text())
        new_stage["output"] = "W/final"
        new_stage["data"] = [
            f"benchmarks/.cache/supervised/train/{Path(d).name}" for d in new_stage["data"]
        ]
        (target / "training_configs.json").write_text(
            json.dumps([*stages, new_stage], indent=1) + "\n"
        )
        folded = json.loads((PREVIOUS / "combined_from.json").read_text())
        info = {
            k: v
            for k, v in json.loads((fold / "combined_from.json").read_text()).items()
            if k != "adapters"
        }
        (target / "combined_from.json").write_text(
            json.dumps(
                {
                    **info,
                    "adapters": [*folded["adapters"], "W/final"],
                    "previous_fold": {k: v for k, v in folded.items() if k != "adapters"},
                },
                indent=2,
            )
            + "\n"
        )
        self.log(f"installed {fold} into {target}")
        return target

    def evaluate_folded(self) -> None:
        """Dev scores of the folded adapter on the untrained base (what ships), beside `final`."""
        out = self.work / f"combined-r{self.args.rank}"
        if not (out / "adapter_model.safetensors").is_file():
            raise SystemExit(f"error: no folded adapter in {out}; run with --runs ...,final --ship")
        self.evaluate(f"folded-r{self.args.rank}", [out])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.train_default", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--data",
        default=str(ROOT / "benchmarks" / ".cache" / "supervised"),
        help="prepared folder of benchmarks.supervised_data",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="shared data folder for STS-B dev (default: ../shared/data)",
    )
    p.add_argument(
        "--work-dir",
        default=str(ROOT / "benchmarks" / ".cache" / "train_default"),
        help="adapters, logs and checkpoints (rerun with the same folder to resume)",
    )
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument(
        "--results-file",
        default=None,
        help="write into this results file, keeping the runs it already holds (continue a session)",
    )
    p.add_argument(
        "--runs",
        default="shipped,snli,snli+medquad,snli+altlex,snli+stackexchange,all",
        help="comma-separated: shipped, a source mix (snli+medquad, ...; all), or final",
    )
    p.add_argument(
        "--sources", default="all", help="source mix of the final run (e.g. snli,medquad,altlex)"
    )
    p.add_argument(
        "--recipe", choices=("cpu", "gpu"), default="cpu", help="budget of the final run"
    )
    p.add_argument(
        "--max-steps", type=int, default=None, help="override the final run's step count"
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads for training and evaluation (0: torch's default; 1 keeps a 2-core "
        "machine usable meanwhile: OpenMP threads that share a core with other work stall)",
    )
    p.add_argument("--save-steps", type=int, default=25)
    p.add_argument("--doc-max-length", type=int, default=256, help="token cap on dev documents")
    p.add_argument(
        "--install",
        action="store_true",
        help="copy the fold of --ship (in the work folder) into the package's adapter folder",
    )
    p.add_argument(
        "--ship",
        action="store_true",
        help="fold the shipped adapter and the final run into one adapter",
    )
    p.add_argument(
        "--rank",
        type=int,
        default=40,
        help="rank of the folded adapter (40 keeps it under 20 MB in bf16)",
    )
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    runner = Runner(args)

    def mix(text: str) -> list[str]:
        names = (
            list(SHIPPABLE)
            if text == "all"
            else [s for s in text.replace(",", "+").split("+") if s]
        )
        bad = [s for s in names if s not in SHIPPABLE]
        if bad:
            raise SystemExit(f"error: unknown source(s) {bad}; valid: {', '.join(SHIPPABLE)}, all")
        return names

    final = None
    for name in [r.strip() for r in args.runs.split(",") if r.strip()]:
        if name == "shipped":
            runner.evaluate(name, [PREVIOUS])
        elif name == "folded":
            runner.evaluate_folded()
        elif name == "final":
            if args.max_steps:
                RECIPES[args.recipe]["max_steps"] = args.max_steps
            final = runner.train("final", mix(args.sources), args.recipe)
            runner.evaluate("final", [PREVIOUS, final])
        else:
            runner.evaluate(name, [PREVIOUS, runner.train(name, mix(name), "ablation")])
    if args.ship:
        if final is None:
            raise SystemExit("error: --ship needs the final run (--runs ...,final)")
        runner.ship(final)
    if args.install:
        runner.install()
    if runner.results["runs"] or args.results_file:
        runner.write()
        print(f"wrote {runner.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
