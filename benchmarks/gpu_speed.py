"""Encoding throughput on a GPU: our encoder against a bare transformers forward.

    python -m benchmarks.gpu_speed                     # both embedded bases, all SciFact documents

For each model: `LLM2Vec.encode_documents` with token-budget batches (`--budgets`) and a bare
`AutoModel` forward + mean pooling over file-order batches padded to the longest
(`--batch-sizes`), bf16, sdpa attention, documents as title + text capped at `--max-length`
tokens, `--repeats` timed passes each (ours after a 500-document warm-up). Writes
benchmarks/results/gpu_speed_<timestamp>.json. The official llm2vec is not part of this run:
it needs transformers 4.44.2 (its own environment), which has no Gemma 3.

Kept to reproduce gpu_speed_20261122-232000.json. Its successor is `benchmarks.gpu.measure`
(docs/gpu.md): one offline command with the official arm on a Mistral-7B shape, MFU, and
sentences rather than SciFact (a test set) as its text.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _docs(data_dir: Path) -> list[str]:
    with open(data_dir / "scifact" / "corpus.jsonl") as fh:
        return [(d.get("title", "") + " " + d["text"]).strip() for d in map(json.loads, fh)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="smollm2-135m-instruct,gemma3-270m")
    p.add_argument(
        "--data-dir",
        default=None,
        help="shared data folder (default: $LLM2VEC_DATA_DIR or ../shared/data)",
    )
    p.add_argument("--budgets", default="16384,65536", help="token budgets for our encoder")
    p.add_argument("--batch-sizes", default="32,128", help="batch sizes for the bare forward")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModel, AutoTokenizer

    from llm2vec_retrieval import LLM2Vec
    from llm2vec_retrieval.evaluation.data import default_data_dir

    if not torch.cuda.is_available():
        p.error(
            "no CUDA device: this benchmark measures GPU throughput (use benchmarks.speed on CPU)"
        )
    docs = _docs(Path(args.data_dir) if args.data_dir else default_data_dir())
    runs: dict = {}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        for budget in [int(b) for b in args.budgets.split(",")]:
            enc = LLM2Vec.from_pretrained(
                name, dtype=torch.bfloat16, doc_max_length=args.max_length, max_batch_tokens=budget
            ).to("cuda")
            n_tokens = sum(min(args.max_length, n) for n in enc.count_tokens(docs))
            enc.encode_documents(docs[:500], show_progress_bar=False)
            torch.cuda.synchronize()
            for r in range(args.repeats):
                t = time.perf_counter()
                enc.encode_documents(docs, show_progress_bar=False)
                torch.cuda.synchronize()
                dt = time.perf_counter() - t
                runs[f"ours_{name}_mbt{budget}_r{r}"] = {
                    "s": round(dt, 2),
                    "tok_s": round(n_tokens / dt),
                    "doc_s": round(len(docs) / dt, 1),
                }
            path = enc.source["model_path"]
            del enc
        tok = AutoTokenizer.from_pretrained(path)
        model = (
            AutoModel.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa")
            .cuda()
            .eval()
        )
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        for bs in [int(b) for b in args.batch_sizes.split(",")]:
            for r in range(args.repeats):
                torch.cuda.synchronize()
                t, n = time.perf_counter(), 0
                with torch.inference_mode():
                    for i in range(0, len(docs), bs):
                        batch = tok(
                            docs[i : i + bs],
                            padding=True,
                            truncation=True,
                            max_length=args.max_length,
                            return_tensors="pt",
                        ).to("cuda")
                        hidden = model(**batch).last_hidden_state
                        mask = batch["attention_mask"].unsqueeze(-1)
                        (hidden * mask).sum(1) / mask.sum(1)
                        n += int(mask.sum())
                torch.cuda.synchronize()
                dt = time.perf_counter() - t
                runs[f"bare_{name}_bs{bs}_r{r}"] = {"s": round(dt, 2), "tok_s": round(n / dt)}
        del model
    import transformers

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = {
        "kind": "gpu_speed",
        "command": "python -m benchmarks.gpu_speed " + " ".join(argv or []),
        "machine": {
            "gpu": torch.cuda.get_device_name(0),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "docs": len(docs),
        "max_length": args.max_length,
        "dtype": "bfloat16",
        "runs": runs,
    }
    path = Path(args.results_dir) / f"gpu_speed_{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    for k, v in runs.items():
        print(f"{k:<45} {v}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
