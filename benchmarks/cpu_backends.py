"""CPU forward paths of our encoder, A/B in one process: padded, packed, torch.compile, ONNX Runtime.

    python -m benchmarks.cpu_backends                                  # padded vs packed, fp32
    python -m benchmarks.cpu_backends --modes padded,packed,compile,onnx --repeats 3

Same model and documents as benchmarks/speed.py (the SmolLM2-135M-Instruct base, the first 32
SciFact documents cut to 400 tokens), our encoder loaded once; the modes run interleaved
(rotated order each repeat) on the same length-sorted token-budget batches, so that a noisy
machine moves them alike. Modes:
  padded   encode_documents with EncoderConfig.packing = "off" (right-padded batches, SDPA
           with the padding mask)
  packed   encode_documents with packing = "auto" (the default on CPU: llm2vec_retrieval.packing)
  compile  the padded forward through torch.compile(model, dynamic=True), inductor artifacts
           cached under <cache dir>/inductor (run twice: the second run's first call is the
           warm-cache start)
  onnx     the padded forward exported with torch.onnx.export(dynamo=True) and run by
           onnxruntime (CPUExecutionProvider, same thread count); needs `pip install onnxruntime
           onnx onnxscript`
Reported per mode: every repeat, the median, the setup time (compile: first call; onnx: export +
session) and the minimum cosine of its vectors with the padded eager ones.
Writes benchmarks/results/cpu_backends_<timestamp>.json.
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

from benchmarks.speed import (
    REFERENCE_MODEL,
    RESULTS_DIR,
    default_threads,
    load_documents,
    machine_info,
    prepare_texts,
)

MODES = ("padded", "packed", "compile", "onnx")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cpu_backends", description=__doc__.splitlines()[0]
    )
    p.add_argument("--modes", default="padded,packed", help=f"comma-separated from {MODES}")
    p.add_argument("--dtype", default="float32", help="float32 or bfloat16 (default float32)")
    p.add_argument("--n-docs", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        p.error(f"unknown modes {bad}; valid: {', '.join(MODES)}")
    return args


class Runner:
    """Encodes the benchmark documents through one forward path of a loaded encoder."""

    def __init__(self, encoder, texts):
        import torch

        from llm2vec_retrieval.batching import token_budget_batches

        self.torch, self.encoder, self.texts = torch, encoder, texts
        lengths = encoder.tokenize(texts)["attention_mask"].sum(dim=1).tolist()
        self.batches = token_budget_batches(lengths, encoder.config.max_batch_tokens, 32)
        self.eager = encoder.model
        self.compiled = None
        self.session = None

    def encode(self, mode: str):
        if mode in ("padded", "packed"):
            self.encoder.config.packing = "off" if mode == "padded" else "auto"
            return self.encoder.encode_documents(self.texts, batch_size=32)
        return self._forward_each(mode)

    def _forward_each(self, mode: str):
        import numpy as np

        from llm2vec_retrieval.pooling import pool

        torch, enc = self.torch, self.encoder
        out = np.zeros((len(self.texts), enc.embedding_dim), np.float32)
        with torch.inference_mode():
            for batch in self.batches:
                f = enc.tokenize([self.texts[i] for i in batch])
                ids, mask = f["input_ids"], f["attention_mask"]
                if mode == "compile":
                    hidden = self.compiled(input_ids=ids, attention_mask=mask).last_hidden_state
                else:
                    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
                    hidden = torch.from_numpy(self.session.run(None, feeds)[0])
                out[batch] = pool(hidden, mask, mask, enc.config.pooling_mode).float().numpy()
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def setup_compile(self) -> dict:
        torch = self.torch
        cache = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])  # set in main before torch loads
        warm = cache.is_dir() and any(cache.iterdir())
        self.encoder.config.packing = "off"
        self.compiled = torch.compile(self.eager, dynamic=True)
        t0 = time.perf_counter()
        self._forward_each("compile")
        return {
            "first_call_s": round(time.perf_counter() - t0, 2),
            "cache_dir": str(cache),
            "cache_was_warm": warm,
        }

    def setup_onnx(self, threads: int) -> dict:
        torch = self.torch
        import onnxruntime as ort

        from llm2vec_retrieval import cachedir

        class Hidden(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                return self.model(input_ids=input_ids, attention_mask=attention_mask)[0]

        self.encoder.config.packing = "off"
        folder = cachedir.cache_dir() / "onnx-bench"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "model.onnx"
        f = self.encoder.tokenize(self.texts[:2])
        batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", max=1024)
        t0 = time.perf_counter()
        torch.onnx.export(
            Hidden(self.eager).eval(),
            (f["input_ids"], f["attention_mask"]),
            str(path),
            dynamo=True,
            input_names=["input_ids", "attention_mask"],
            output_names=["hidden"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            external_data=True,
        )
        export_s = time.perf_counter() - t0
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        t0 = time.perf_counter()
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return {
            "export_s": round(export_s, 2),
            "session_s": round(time.perf_counter() - t0, 2),
            "onnxruntime": ort.__version__,
        }


def main(argv=None) -> int:
    args = parse_args(argv)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")
    started, machine = _dt.datetime.now(), machine_info()
    threads = args.threads or default_threads()
    from llm2vec_retrieval import cachedir, sources

    # inductor reads its cache folder when torch loads: set it first, under our cache dir
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cachedir.cache_dir() / "inductor"))
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from llm2vec_retrieval import LLM2Vec
    from llm2vec_retrieval.evaluation.data import default_data_dir

    encoder = LLM2Vec.from_pretrained(sources.resolve_model_path(REFERENCE_MODEL), dtype=args.dtype)
    corpus = Path(default_data_dir()) / "scifact" / "corpus.jsonl"
    _, raw = load_documents(corpus, args.n_docs)
    texts, counts, _ = prepare_texts(encoder.tokenizer, raw)
    runner = Runner(encoder, texts)
    setup = {}
    for mode in args.modes:
        if mode == "compile":
            setup[mode] = runner.setup_compile()
        elif mode == "onnx":
            setup[mode] = runner.setup_onnx(threads)
        print(f"{mode}: setup {setup.get(mode, {})}", flush=True)
    reference = runner.encode("padded")
    runner.encode("packed")  # warm-up
    times: dict[str, list[float]] = {m: [] for m in args.modes}
    cosines: dict[str, float] = {}
    for r in range(args.repeats):
        order = args.modes[r % len(args.modes) :] + args.modes[: r % len(args.modes)]
        for mode in order:
            t0 = time.perf_counter()
            vectors = runner.encode(mode)
            times[mode].append(round(time.perf_counter() - t0, 3))
            cosines[mode] = float((np.asarray(vectors) * reference).sum(axis=1).min())
            print(f"  rep {r + 1}/{args.repeats} {mode}: {times[mode][-1]:.2f} s", flush=True)
    rows = []
    for mode in args.modes:
        median = float(np.median(times[mode]))
        rows.append(
            {
                "mode": mode,
                "seconds": times[mode],
                "median_s": median,
                "tokens_per_s": sum(counts) / median,
                "min_cos_vs_padded": cosines[mode],
                "setup": setup.get(mode),
            }
        )
        print(
            f"{mode:8s} median {median:6.2f} s  {sum(counts) / median:6.0f} tokens/s  "
            f"min cos {cosines[mode]:.6f}  repeats {times[mode]}"
        )
    report = {
        "benchmark": "cpu_backends",
        "command": "python -m benchmarks.cpu_backends " + shlex.join(sys.argv[1:]),
        "started": started.isoformat(timespec="seconds"),
        "machine": machine,
        "threads": threads,
        "dtype": args.dtype,
        "n_docs": len(texts),
        "tokens": sum(counts),
        "rows": rows,
    }
    out = (
        Path(args.output)
        if args.output
        else RESULTS_DIR / (f"cpu_backends_{started:%Y%m%d-%H%M%S}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
