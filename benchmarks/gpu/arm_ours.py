"""Our arm of `benchmarks.gpu.measure`: run in the ours environment, from the repository root.

    python -m benchmarks.gpu.arm_ours SPEC.json

For each model shape in the spec (a folder with config.json and tokenizer files: the embedded
models' own, written by `benchmarks.gpu.wheels`, or tiny ones made here): random weights in
bf16 (fp32 on a CPU), bidirectional attention, then
- ours: `LLM2Vec.encode_documents` with each token budget (`budgets`);
- bare: the same model object, a plain transformers forward + mean pooling over length-sorted
  batches of each `batch_sizes`, tokenization included, as a reference without our wrapper.
Speed depends on the shapes and the token counts, not on the weights' values, so random
weights measure what the trained models would.
For the Mistral-7B shape: ours only (the official arm runs the same texts in its own venv);
its texts and their token counts are written for that arm.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from benchmarks.gpu.shapes import TINY_SHAPES, write_tiny_shape
from benchmarks.gpu.timing import peak_memory_gb, read_spec, timed
from benchmarks.speed import prepare_texts


def documents(sentences: list[str], tokenizer, n: int, max_tokens: int, seed: int = 0) -> list[str]:
    """`n` documents of consecutive sentences, each up to a length drawn between 16 and
    `max_tokens` tokens (a mix of short and long texts, as a corpus has). Sentences are
    tokenized 1,024 at a time, as far as the documents need."""
    rng = random.Random(seed)
    counts: list[int] = []

    def count(i: int) -> int:
        while i >= len(counts):
            start = len(counts)
            chunk = [sentences[j % len(sentences)] for j in range(start, start + 1024)]
            counts.extend(
                len(ids) for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]
            )
        return counts[i]

    docs, i = [], 0
    while len(docs) < n:
        target, parts, size = rng.randint(16, max_tokens), [], 0
        while size < target:
            parts.append(sentences[i % len(sentences)])
            size += count(i) + 1
            i += 1
        docs.append(" ".join(parts))
    return docs


def _load(spec: dict, shape: Path):
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from llm2vec_retrieval.bidirectional import enable_bidirectional

    config = AutoConfig.from_pretrained(shape)
    dtype = getattr(torch, spec["dtype"])
    torch.manual_seed(0)
    with torch.device(spec["device"]):
        model = AutoModel.from_config(config, dtype=dtype, attn_implementation=spec["attention"])
    model.eval()
    enable_bidirectional(model)
    tok = AutoTokenizer.from_pretrained(shape)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def _ours(spec, model, tok, texts, budget):
    from llm2vec_retrieval import LLM2Vec
    from llm2vec_retrieval.config import EncoderConfig

    cfg = EncoderConfig(
        pooling_mode="mean",
        max_length=spec["max_length"],
        doc_max_length=spec["max_length"],
        max_batch_tokens=budget,
    )
    enc = LLM2Vec(model, tok, config=cfg)

    def run(warmup):
        enc.encode_documents(texts[:64] if warmup else texts, batch_size=budget)

    return {
        "impl": "ours",
        "max_batch_tokens": budget,
        "packing": cfg.packing,
        **timed(run, spec["device"], spec["repeats"]),
    }


def _bare(spec, model, tok, texts, batch_size):
    import torch

    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    sorted_texts = [texts[i] for i in order]

    def run(warmup):
        chosen = sorted_texts[:64] if warmup else sorted_texts
        with torch.inference_mode():
            for i in range(0, len(chosen), batch_size):
                batch = tok(
                    chosen[i : i + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=spec["max_length"],
                    return_tensors="pt",
                ).to(spec["device"])
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                ((hidden * mask).sum(1) / mask.sum(1)).float().cpu()

    return {"impl": "bare", "batch_size": batch_size, **timed(run, spec["device"], spec["repeats"])}


def main(argv=None) -> int:
    import torch

    spec = read_spec(argv)
    if spec is None:
        return 2
    device = spec["device"]
    if spec["sentences"] is None:  # --tiny
        from llm2vec_retrieval.testing import HYBRID_CORPUS

        sentences = list(HYBRID_CORPUS)
    else:
        lines = Path(spec["sentences"]).read_text(encoding="utf-8").splitlines()
        sentences = [s.strip() for s in lines if s.strip()]
    out = {
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "models": {},
    }
    import transformers

    out["transformers"] = transformers.__version__
    for name, shape in spec["shapes"].items():
        if shape is None:  # a tiny shape, made here
            shape = write_tiny_shape(Path(spec["work"]) / "shapes" / name, TINY_SHAPES[name])
        shape = Path(shape)
        model, tok = _load(spec, shape)
        is_mistral = name == spec["mistral"]
        n = spec["mistral_docs"] if is_mistral else spec["docs"]
        docs = documents(sentences, tok, n, spec["doc_tokens"])
        texts, lengths, _ = prepare_texts(tok, docs, spec["max_length"] - 8, spec["max_length"])
        row = {
            "shape": str(shape),
            "config": json.loads((shape / "config.json").read_text()),
            "docs": len(texts),
            "lengths": lengths,
            "runs": [],
        }
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        for budget in spec["mistral_budgets"] if is_mistral else spec["budgets"]:
            row["runs"].append(_ours(spec, model, tok, texts, budget))
            print(name, row["runs"][-1]["impl"], budget, row["runs"][-1]["s_best"], flush=True)
        if not is_mistral:
            for bs in spec["batch_sizes"]:
                row["runs"].append(_bare(spec, model, tok, texts, bs))
                print(name, "bare", bs, row["runs"][-1]["s_best"], flush=True)
        else:  # the same texts for the official arm
            Path(spec["mistral_texts"]).write_text(
                json.dumps({"shape": str(shape), "texts": texts})
            )
        row["peak_memory_gb"] = peak_memory_gb(device)
        out["models"][name] = row
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    Path(spec["result"]).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
