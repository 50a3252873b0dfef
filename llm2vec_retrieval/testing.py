"""Tiny random checkpoints built in code, for tests and examples that must run offline.

`make_tiny_checkpoint(path, arch)` writes a folder that `transformers` and
`LLM2Vec.from_pretrained` load like any local checkpoint: a randomly initialised
model of hidden size 32 with 2 layers, and a small byte-level BPE tokenizer trained
on a fixed built-in text (so every character round-trips and nothing is unknown).
It is deterministic for a given seed. Not for anything but tests: the vectors mean
nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerFast

# A fixed corpus for the tokenizer: enough English to learn a few hundred merges.
_TOKENIZER_TEXT = (
    "The quick brown fox jumps over the lazy dog. A scientific claim can be supported or refuted "
    "by evidence. Retrieval finds documents that answer a question. Embeddings map text to vectors. "
    "Language models read tokens and predict the next one. Bidirectional attention lets every token "
    "see the whole sentence. Masked next token prediction adapts a decoder to this new view. "
    "Contrastive learning pulls similar sentences together and pushes others apart. "
    "Search indexes store vectors with their ids, texts and metadata. Cells, proteins, genes and "
    "vaccines are studied in biology and medicine. Rivers flow into the sea; mountains rise above. "
    "Numbers like 1, 2, 3, 10, 100 and 2024 appear in text too. "
) * 4

ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")


def make_tiny_tokenizer(vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """A PreTrainedTokenizerFast with <s>/</s>/<unk>/<pad>, adding BOS like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_TOKENIZER_TEXT], trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


def tiny_config(arch: str = "llama", vocab_size: int = 384, **overrides: Any) -> PretrainedConfig:
    """A transformers config of hidden size 32, 2 layers, for the given architecture."""
    import transformers

    cfg: PretrainedConfig
    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
        attention_dropout=0.0,
    )
    if arch == "llama":
        cfg = transformers.LlamaConfig(**common)
    elif arch == "mistral":
        cfg = transformers.MistralConfig(**common, sliding_window=None)
    elif arch == "qwen2":
        cfg = transformers.Qwen2Config(**common, use_sliding_window=False)
    elif arch == "qwen3":
        cfg = transformers.Qwen3Config(**common, head_dim=8, use_sliding_window=False)
    elif arch == "gemma":
        cfg = transformers.GemmaConfig(**common, head_dim=8)
    elif arch == "gemma2":
        cfg = transformers.Gemma2Config(**common, head_dim=8, sliding_window=4)
    elif arch == "gemma3_text":
        cfg = transformers.Gemma3TextConfig(
            **common,
            head_dim=8,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
        )
    else:
        raise ValueError(
            f"Unknown tiny architecture {arch!r}. Valid ones are: {', '.join(ARCHITECTURES)}"
        )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def make_tiny_checkpoint(
    path: str | os.PathLike,
    arch: str = "llama",
    seed: int = 0,
    causal_lm: bool = True,
    name_or_path: str | None = None,
    config_overrides: dict | None = None,
) -> Path:
    """Write a tiny random checkpoint (model + tokenizer) to `path` and return it
    (`config_overrides`, e.g. ``{"hidden_size": 48}``, are set on the config)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tiny_tokenizer()
    config = tiny_config(arch, vocab_size=len(tokenizer), **(config_overrides or {}))
    torch.manual_seed(seed)
    cls = AutoModelForCausalLM if causal_lm else AutoModel
    model = cls.from_config(config)
    if name_or_path is not None:
        model.config._name_or_path = name_or_path
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if name_or_path is not None:
        cfg_file = path / "config.json"
        data = json.loads(cfg_file.read_text())
        data["_name_or_path"] = name_or_path
        cfg_file.write_text(json.dumps(data, indent=2))
    return path


# -- hybrid search fixtures ---------------------------------------------------------------
#: A small corpus for lexical/hybrid tests: two topics ("bio" at HYBRID_BIO, else "earth") and
#: a rare part number (HYBRID_RARE, document HYBRID_RARE_INDEX) next to three look-alike log
#: lines whose part numbers shuffle its digits: BM25 tells them apart, a tiny random
#: embedder does not.
HYBRID_RARE = "kw4471"
HYBRID_CORPUS = [
    "Vaccines train the immune system to recognise a virus.",
    "Rivers flood after heavy rain in the spring.",
    "The immune system fights infections with antibodies.",
    "Heavy rain and strong winds closed the coastal roads.",
    "Antibodies are proteins made by white blood cells.",
    "A virus can only replicate inside living cells.",
    "Spring floods damaged the bridges over the river.",
    "White blood cells patrol the body for invaders.",
    "Mountains rise above the plains and glaciers carve valleys.",
    "The delta forms where the river meets the sea.",
    f"Maintenance log: the {HYBRID_RARE} gasket of pump seven was replaced.",
    "Proteins fold into shapes that decide what they do.",
    "Snow melt feeds the mountain streams in early summer.",
    "Genes carry the instructions cells use to build proteins.",
    "Maintenance log: the kw4417 gasket of pump one was replaced.",
    "Maintenance log: the kw4741 gasket of pump two was replaced.",
    "Maintenance log: the kw7441 gasket of pump three was replaced.",
]
HYBRID_RARE_INDEX = 10
HYBRID_LOOKALIKES = (14, 15, 16)
HYBRID_BIO = frozenset({0, 2, 4, 5, 7, 11, 13})
HYBRID_QUERIES = [
    "how does the immune system fight a virus",
    "river flooding after rain",
    HYBRID_RARE,
]


def make_pre_hybrid(store_dir: str | os.PathLike) -> None:
    """Save the IndexStore at ``store_dir`` again without its BM25 part: what an index saved
    before hybrid search existed (or made with ``lexical=False``) holds. The format that
    had no BM25 part at all (format 1) no longer loads."""
    from .index import IndexStore

    store = IndexStore.load(store_dir)
    store.drop_lexical()
    store.save(store_dir)


def import_error_without(module: str, blocked: str) -> str:
    """The ImportError message of ``import module`` in a fresh interpreter where ``blocked``
    (a framework) cannot be imported; empty when the import succeeds."""
    import subprocess
    import sys

    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        f"try:\n    import {module}\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    return out.stdout


def make_small_corpus(root: str | os.PathLike) -> Path:
    """``root/corpus``: a .txt (many chunks), a .md, a .jsonl and a .csv file in a subfolder,
    for tests that compare ways of indexing the same files."""
    corpus = Path(root) / "corpus"
    (corpus / "sub").mkdir(parents=True)
    words = "the quick brown fox jumps over a lazy dog while rivers flood after rain".split()
    (corpus / "a.txt").write_text(" ".join(words[i % len(words)] for i in range(400)))
    (corpus / "b.md").write_text("# Vaccines\n\nVaccines train the immune system to fight.\n")
    records = [
        {"text": "GPUs encode text fast", "lang": "en", "year": 2024},
        {"text": "CPUs are slower at encoding", "lang": "en"},
    ]
    (corpus / "sub" / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (corpus / "sub" / "d.csv").write_text(
        "id,text,tag\n1,Rivers flood after heavy rain,water\n2,Mountains rise slowly,rock\n"
    )
    return corpus
