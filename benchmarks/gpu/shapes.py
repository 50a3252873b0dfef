"""Shape folders: config.json + tokenizer files, all a random-weight model needs.

Speed depends on a model's shapes and on the token counts, not on its weights, so the
throughput runs build models with random weights from these folders: the embedded models'
own config and tokenizer, a Mistral-7B-shaped config, or tiny ones for CPU tests. Their
tokenizer_config.json names `PreTrainedTokenizerFast`, which transformers 4.44.2 (the
official llm2vec's) and 5.x both load from tokenizer.json (5.x writes `TokenizersBackend`,
unknown to 4.44.2).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TINY_SHAPES = {"tiny-gemma3": "gemma3_text", "tiny-llama": "llama", "tiny-mistral": "mistral"}
EMBEDDED = ("gemma3-270m", "smollm2-135m-instruct")
MISTRAL = "mistral-7b"
SHAPE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# Mistral-7B-v0.1's config.json (mistralai/Mistral-7B-v0.1): the compute shape. The vocabulary
# is the tokenizer's below (Mistral's own tokenizer is not available offline), which changes
# only the embedding table, not the FLOPs per token.
MISTRAL_7B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "sliding_window": None,  # 4096 in v0.1; never reached by 512-token texts
    "tie_word_embeddings": False,
}


def portable_tokenizer(folder: Path) -> None:
    """Name the tokenizer class both transformers 4.44.2 and 5.x load (returning no
    token_type_ids, which decoder models refuse), and write BPE merges as
    "a b" strings: tokenizers < 0.20 (which transformers 4.44.2 needs) cannot read [a, b] pairs."""
    path = Path(folder) / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["model_input_names"] = ["input_ids", "attention_mask"]  # no token_type_ids
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    path = Path(folder) / "tokenizer.json"
    tok = json.loads(path.read_text(encoding="utf-8"))
    merges = tok.get("model", {}).get("merges") or []
    if merges and isinstance(merges[0], list) and not any(" " in a + b for a, b in merges):
        tok["model"]["merges"] = [f"{a} {b}" for a, b in merges]
        path.write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")


def write_tiny_shape(folder: Path, arch: str) -> Path:
    """config.json + tokenizer of a tiny random model of `arch` (llm2vec_retrieval.testing)."""
    from llm2vec_retrieval.testing import make_tiny_tokenizer, tiny_config

    tok = make_tiny_tokenizer()
    tiny_config(arch, vocab_size=len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    portable_tokenizer(folder)
    return folder


def write_shapes(out: Path) -> dict:
    """config + tokenizer of each embedded model, and the Mistral-7B shape (SmolLM2's tokenizer)."""
    from transformers import AutoTokenizer, MistralConfig

    from llm2vec_retrieval import sources

    sizes = {}
    for name in EMBEDDED:
        src, dst = Path(sources.resolve_model_path(name)), out / name
        dst.mkdir(parents=True, exist_ok=True)
        for f in SHAPE_FILES:
            if (src / f).is_file():
                shutil.copyfile(src / f, dst / f)
        sizes[name] = sum(p.stat().st_size for p in dst.iterdir())
    tok = AutoTokenizer.from_pretrained(out / "smollm2-135m-instruct")
    dst = out / MISTRAL
    cfg = MistralConfig(vocab_size=len(tok), **MISTRAL_7B)
    cfg.bos_token_id, cfg.eos_token_id = tok.bos_token_id, tok.eos_token_id
    cfg.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    cfg.save_pretrained(dst)
    for f in SHAPE_FILES[1:]:
        if (out / "smollm2-135m-instruct" / f).is_file():
            shutil.copyfile(out / "smollm2-135m-instruct" / f, dst / f)
    for name in (*EMBEDDED, MISTRAL):
        portable_tokenizer(out / name)
    sizes[MISTRAL] = sum(p.stat().st_size for p in dst.iterdir())
    return sizes
