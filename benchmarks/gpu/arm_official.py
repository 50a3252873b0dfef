"""The official llm2vec 0.2.3 arm of `benchmarks.gpu.measure`, run in its own venv
(transformers 4.44.2) as a script: ``python benchmarks/gpu/arm_official.py SPEC.json``.

It reads the Mistral-7B-shaped folder (config.json + tokenizer) and the texts that our arm
wrote, builds `llm2vec.models.MistralBiModel` with random weights on the device (bf16 on a
GPU), wraps it in `llm2vec.LLM2Vec` (mean pooling, the same length caps as ours) and times
`LLM2Vec.encode(texts, batch_size=...)` for each batch size. It imports nothing from this
project: only torch, transformers and llm2vec, and timing.py beside it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import peak_memory_gb, read_spec, timed  # noqa: E402


def main(argv=None) -> int:
    import llm2vec
    import torch
    import transformers
    from llm2vec import LLM2Vec
    from llm2vec.models import MistralBiModel
    from transformers import AutoConfig, AutoTokenizer

    spec = read_spec(argv)
    if spec is None:
        return 2
    device = spec["device"]
    given = json.loads(Path(spec["mistral_texts"]).read_text())
    shape, texts = Path(given["shape"]), given["texts"]
    config = AutoConfig.from_pretrained(shape)
    dtype = getattr(torch, spec["dtype"])
    torch.manual_seed(0)
    with torch.device(device):
        model = MistralBiModel._from_config(
            config, torch_dtype=dtype, attn_implementation=spec["attention"]
        )
    model.eval()
    tok = AutoTokenizer.from_pretrained(shape)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # as llm2vec's LLM2Vec.from_pretrained sets it
    l2v = LLM2Vec(
        model,
        tok,
        pooling_mode="mean",
        max_length=spec["max_length"],
        doc_max_length=spec["max_length"],
    )
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    runs = []
    for bs in spec["official_batch_sizes"]:

        def run(warmup, bs=bs):
            with torch.inference_mode():
                l2v.encode(
                    texts[:64] if warmup else texts,
                    batch_size=bs,
                    show_progress_bar=False,
                    convert_to_numpy=True,
                )

        runs.append({"impl": "official", "batch_size": bs, **timed(run, device, spec["repeats"])})
        print("official", bs, runs[-1]["s_best"], flush=True)
    out = {
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "llm2vec": getattr(llm2vec, "__version__", None),
        "model_class": type(model).__name__,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "docs": len(texts),
        "runs": runs,
        "peak_memory_gb": peak_memory_gb(device),
    }
    Path(spec["official_result"]).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
