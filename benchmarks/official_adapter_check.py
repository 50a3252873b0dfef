"""Does the official llm2vec 0.2.3 load an adapter this project trained, and agree with our encoder?

    python -m benchmarks.official_adapter_check --adapter DIR [--base smollm2-135m-instruct]
        [--official-venv benchmarks/.cache/venv-official]

The adapter folder (official layout: adapter_config.json, adapter_model.safetensors,
llm2vec_config.json; e.g. a `llm2vec-retrieval combine` output) is loaded on the cached base by
the official library in its own venv (transformers 4.44.2, `LLM2Vec.from_pretrained(base,
peft_model_name_or_path=DIR, merge_peft=True)`) and by ours; both encode the same queries (with
an instruction) and documents in fp32; the script prints and returns the cosines and the largest
relative difference. Only architectures transformers 4.44.2 knows can be checked (Llama-family
SmolLM2 yes, Gemma 3 no).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

TEXTS = [
    "Vaccines train the immune system to recognise a pathogen.",
    "Rivers flood after heavy rain.",
    "A man is playing a guitar.",
]
INSTRUCTION = "Retrieve semantically similar text:"

OFFICIAL = r"""
import json, sys, torch
try:
    import torch.distributed.tensor  # noqa: F401  (peft's merge looks the attribute up)
except ImportError:
    pass
from llm2vec import LLM2Vec
base, adapter, out, texts, instruction = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
m = LLM2Vec.from_pretrained(base, peft_model_name_or_path=adapter, merge_peft=True, torch_dtype=torch.float32)
q = m.encode([[instruction, t] for t in texts], batch_size=8)
d = m.encode(texts, batch_size=8)
json.dump({"queries": q.tolist(), "docs": d.tolist()}, open(out, "w"))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--adapter", required=True, help="adapter folder in the official layout")
    p.add_argument(
        "--base", default="smollm2-135m-instruct", help="base model (embedded name or folder)"
    )
    p.add_argument(
        "--official-venv",
        default=str(Path(__file__).parent / ".cache" / "venv-official"),
        help="venv with llm2vec==0.2.3 (benchmarks/speed.py creates it on first use)",
    )
    args = p.parse_args(argv)

    import torch

    from llm2vec_retrieval import LLM2Vec
    from llm2vec_retrieval.sources import resolve_model_path

    python = Path(args.official_venv) / "bin" / "python"
    if not python.is_file():
        p.error(
            f"no official venv at {args.official_venv} (run benchmarks.speed once, or pass --official-venv)"
        )
    base_path = resolve_model_path(args.base)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "official.json"
        run = subprocess.run(
            [
                str(python),
                "-c",
                OFFICIAL,
                base_path,
                args.adapter,
                str(out),
                json.dumps(TEXTS),
                INSTRUCTION,
            ],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            print(run.stderr[-3000:], file=sys.stderr)
            return 1
        official = json.loads(out.read_text())
    enc = LLM2Vec.from_pretrained(args.base, peft_model_name_or_path=args.adapter, merge_peft=True)
    ours = {
        "queries": enc.encode([[INSTRUCTION, t] for t in TEXTS], show_progress_bar=False),
        "docs": enc.encode(TEXTS, show_progress_bar=False),
    }
    report = {}
    for kind in ("queries", "docs"):
        a, b = torch.tensor(official[kind]), ours[kind]
        report[kind] = {
            "min_cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min()),
            "max_relative_difference": float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max()),
        }
    print(json.dumps({"adapter": args.adapter, "base": args.base, **report}, indent=2))
    ok = all(r["max_relative_difference"] < 1e-4 for r in report.values())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
