"""Regenerate the parity fixtures against the official `llm2vec` 0.2.3 library.

Run from the repository root with the project's interpreter:

    .venv/bin/python tests/parity/generate_fixtures.py [--official-venv /tmp/offvenv]

What it does:
  1. creates the official library's own virtual environment if it is missing
     (torch 2.13.0 CPU, llm2vec 0.2.3, transformers 4.44.2, peft);
  2. in that environment, writes tiny random checkpoints for Llama and Mistral to
     tests/fixtures/parity/<arch>/ and a tiny random LoRA adapter for each to
     tests/fixtures/parity/<arch>-lora/ (written by transformers 4.44.2, they load in
     both 4.44.2 and 5.x);
  3. in that environment, encodes a fixed set of inputs with the official `LLM2Vec`
     for every case below and writes tests/fixtures/parity/expected.json.

This one file is both the driver (stdlib only at import time) and the helper that runs
inside the official environment (`--stage checkpoints|encode`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures" / "parity"
DEFAULT_OFFICIAL_VENV = os.environ.get("LLM2VEC_OFFICIAL_VENV", "/tmp/offvenv")

OFFICIAL_PINS = ["llm2vec==0.2.3", "transformers==4.44.2", "peft==0.21.2"]
TORCH_PIN = "torch==2.13.0"  # resolves to the CPU wheel here; install it first

ARCHS = {"llama": 0, "mistral": 1}  # arch -> seed
POOLING_MODES = ["mean", "weighted_mean", "eos_token", "last_token", "bos_token"]

# Texts of different lengths (so padding happens inside a batch), one with digits,
# punctuation and a non-ASCII character. None contains the official separator
# "!@#$%^&*()", none is empty and all are far below doc_max_length: those are the
# official library's known bugs, tested elsewhere as deliberate differences.
TEXTS = [
    "Bidirectional attention lets every token see the whole sentence.",
    "Rivers flow into the sea.",
    "In 2024, 3 of 10 proteins (about 30%) were studied in a café; see section 4.2!",
    "Retrieval finds documents that answer a question, and embeddings map text to vectors "
    "so that search indexes can store them with their ids, texts and metadata.",
    "Cells",
]
PAIRS = [
    ["Given a question, retrieve passages that answer the question:", TEXTS[0]],
    ["Retrieve semantically similar text: ", TEXTS[1]],  # trailing space: stripped
    ["Given a scientific claim, retrieve documents that support or refute the claim", TEXTS[2]],
    ["", TEXTS[3]],  # empty instruction, same as a plain string
    ["Retrieve semantically similar text:", TEXTS[4]],
]
ONE_BATCH = 8  # all five texts in one padded batch
# same weights as the base arch, config.json "_name_or_path" naming a chat model
CHAT_VARIANTS = {"mistral-instruct": ("mistral", "mistralai/Mistral-7B-Instruct-v0.2")}


def build_cases() -> list[dict]:
    """The list of cases (arguments only), the same for both architectures."""
    cases = []
    for arch in ARCHS:
        lora = f"{arch}-lora"

        def add(
            pooling,
            bidir,
            inputs,
            skip=True,
            peft=None,
            merge=False,
            bs=ONE_BATCH,
            checkpoint=arch,
            arch=arch,
        ):
            parts = [checkpoint, pooling, "bi" if bidir else "causal", inputs]
            if not skip:
                parts.append("noskip")
            if peft:
                parts.append("lora-merged" if merge else "lora")
            if bs != ONE_BATCH:
                parts.append(f"bs{bs}")
            cases.append(
                dict(
                    id="-".join(parts),
                    arch=arch,
                    checkpoint=checkpoint,
                    peft=peft,
                    merge_peft=merge,
                    enable_bidirectional=bidir,
                    pooling_mode=pooling,
                    skip_instruction=skip,
                    batch_size=bs,
                    inputs_kind=inputs,
                )
            )

        # every pooling mode x attention x input kind (skip_instruction default True)
        for pooling in POOLING_MODES:
            for bidir in (True, False):
                for inputs in ("plain", "pairs"):
                    add(pooling, bidir, inputs)
        # skip_instruction=False for the masked poolings
        for pooling in ("mean", "weighted_mean"):
            for bidir in (True, False):
                for inputs in ("plain", "pairs"):
                    add(pooling, bidir, inputs, skip=False)
        # PEFT adapter (unmerged and merged)
        add("mean", True, "pairs", peft=lora)
        add("weighted_mean", True, "plain", peft=lora)
        add("eos_token", True, "pairs", peft=lora)
        add("last_token", False, "pairs", peft=lora)
        add("mean", False, "plain", skip=False, peft=lora)
        add("mean", True, "pairs", peft=lora, merge=True)
        # several batches (batch_size=2): length-sorted batching, different padding
        add("mean", True, "pairs", bs=2)
        add("eos_token", False, "plain", bs=2)
        add("bos_token", True, "pairs", bs=2)
        # a checkpoint whose config.json names a chat model: the official library wraps
        # the input in that model's template (prepare_for_tokenization)
        for variant, (base_arch, _name) in CHAT_VARIANTS.items():
            if base_arch == arch:
                add("mean", True, "pairs", checkpoint=variant)
                add("mean", True, "plain", checkpoint=variant)
                add("mean", True, "pairs", skip=False, checkpoint=variant)
                add("eos_token", True, "pairs", checkpoint=variant)
                add("last_token", False, "plain", checkpoint=variant)
    return cases


# ---------------------------------------------------------------------------------
# Helper stages: these run inside the official environment (transformers 4.44.2).
# ---------------------------------------------------------------------------------

# Same corpus as llm2vec_retrieval/testing.py, so the vocabulary is of the same kind.
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


def _make_tokenizer(vocab_size: int = 384):
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
        model_input_names=["input_ids", "attention_mask"],  # like Llama/Mistral: no token_type_ids
        clean_up_tokenization_spaces=False,
    )


def _config(arch: str, vocab_size: int):
    import transformers

    common = dict(
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
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        # larger than the default 0.02 so attention is far from uniform and any
        # difference in masking/positions shows up clearly in the outputs
        initializer_range=0.1,
    )
    if arch == "llama":
        return transformers.LlamaConfig(**common)
    if arch == "mistral":
        return transformers.MistralConfig(**common, sliding_window=None)
    raise ValueError(arch)


def stage_checkpoints(out_dir: Path) -> None:
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoModelForCausalLM

    for arch, seed in ARCHS.items():
        path = out_dir / arch
        lora_path = out_dir / f"{arch}-lora"
        for p in (path, lora_path):
            if p.exists():
                shutil.rmtree(p)
        tokenizer = _make_tokenizer()
        config = _config(arch, len(tokenizer))
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
        model.save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)
        cfg_file = path / "config.json"
        data = json.loads(cfg_file.read_text())
        data["_name_or_path"] = f"tiny-random-{arch}"
        cfg_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        (path / "generation_config.json").unlink(missing_ok=True)

        # LoRA adapter on the bare decoder (like the official LLM2Vec adapters, whose
        # keys are base_model.model.layers.*), random non-zero A and B.
        base = AutoModel.from_pretrained(path, torch_dtype=torch.float32)
        torch.manual_seed(100 + seed)
        lcfg = LoraConfig(
            r=4,
            lora_alpha=4,
            lora_dropout=0.0,
            bias="none",
            target_modules=[
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
            init_lora_weights=False,
        )
        peft_model = get_peft_model(base, lcfg)
        peft_model.save_pretrained(lora_path, safe_serialization=True)
        acfg_file = lora_path / "adapter_config.json"
        adata = json.loads(acfg_file.read_text())
        adata["base_model_name_or_path"] = f"tiny-random-{arch}"  # no absolute path
        adata["target_modules"] = sorted(adata["target_modules"])  # saved from a set
        acfg_file.write_text(json.dumps(adata, indent=2, sort_keys=True) + "\n")
        readme = lora_path / "README.md"
        readme.unlink(missing_ok=True)
        print(f"wrote {path} and {lora_path}", file=sys.stderr)

    for variant, (arch, name) in CHAT_VARIANTS.items():
        path = out_dir / variant
        if path.exists():
            shutil.rmtree(path)
        shutil.copytree(out_dir / arch, path)
        cfg_file = path / "config.json"
        data = json.loads(cfg_file.read_text())
        data["_name_or_path"] = name
        cfg_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        print(f"wrote {path}", file=sys.stderr)


def _rows(t) -> list[list[float]]:
    # 9 significant digits represent a float32 exactly
    return [[float(f"{v:.9g}") for v in row] for row in t.detach().to("cpu").float().tolist()]


def stage_encode(out_dir: Path, out_file: Path) -> None:
    import importlib.metadata as md

    import torch
    from llm2vec import LLM2Vec

    torch.set_num_threads(1)
    inputs = {"plain": TEXTS, "pairs": PAIRS}
    results = []
    for case in build_cases():
        kwargs = dict(
            peft_model_name_or_path=str(out_dir / case["peft"]) if case["peft"] else None,
            merge_peft=case["merge_peft"],
            enable_bidirectional=case["enable_bidirectional"],
            pooling_mode=case["pooling_mode"],
            skip_instruction=case["skip_instruction"],
            torch_dtype=torch.float32,
        )
        model = LLM2Vec.from_pretrained(str(out_dir / case["checkpoint"]), **kwargs)
        sentences = inputs[case["inputs_kind"]]
        emb = model.encode(
            [list(s) if isinstance(s, list) else s for s in sentences],
            batch_size=case["batch_size"],
            show_progress_bar=False,
            device="cpu",
        )
        assert emb.shape == (len(sentences), 32), emb.shape
        assert torch.isfinite(emb).all()
        results.append({**case, "inputs": sentences, "output": _rows(emb)})
        print(f"  {case['id']}", file=sys.stderr)

    # Token positions the official library counts as text (embed_mask) for the pair
    # inputs, as fed to LLM2Vec.tokenize after _convert_to_str/prepare_for_tokenization.
    tokenization = []
    for checkpoint in [*ARCHS, *CHAT_VARIANTS]:
        arch = CHAT_VARIANTS[checkpoint][0] if checkpoint in CHAT_VARIANTS else checkpoint
        for pooling in ("mean", "eos_token"):
            model = LLM2Vec.from_pretrained(
                str(out_dir / checkpoint), pooling_mode=pooling, torch_dtype=torch.float32
            )
            for kind in ("pairs", "plain"):
                if checkpoint != "llama" and kind == "plain":
                    continue
                sentences = inputs[kind]
                pairs = [["", s] if isinstance(s, str) else s for s in sentences]
                converted = [model._convert_to_str(i, t) for i, t in pairs]
                prepared = [model.prepare_for_tokenization(c) for c in converted]
                feats = model.tokenize(prepared)
                tokenization.append(
                    dict(
                        id=f"{checkpoint}-{pooling}-{kind}",
                        arch=arch,
                        checkpoint=checkpoint,
                        pooling_mode=pooling,
                        inputs=sentences,
                        prepared_texts=prepared,
                        input_ids=feats["input_ids"].tolist(),
                        attention_mask=feats["attention_mask"].tolist(),
                        embed_mask=feats["embed_mask"].tolist(),
                    )
                )

    meta = {
        "generator": "tests/parity/generate_fixtures.py",
        "llm2vec": md.version("llm2vec"),
        "transformers": md.version("transformers"),
        "torch": md.version("torch"),
        "peft": md.version("peft"),
        "tokenizers": md.version("tokenizers"),
        "dtype": "float32",
        "device": "cpu",
        "note": "encode() of plain strings treats each as ['', text]; tokenizer pad = eos, left padding",
    }
    doc = {"meta": meta, "cases": results, "tokenization": tokenization}
    out_file.write_text(_dumps(doc) + "\n")
    print(f"wrote {out_file} ({len(results)} cases)", file=sys.stderr)


def _dumps(obj, indent: int = 0) -> str:
    """JSON with one line per list of scalars (diffable, compact)."""
    pad = " " * indent
    inner = " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(v, (list, dict)) for v in obj):
            return json.dumps(obj, ensure_ascii=False)
        items = [f"{inner}{_dumps(v, indent + 1)}" for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


# ---------------------------------------------------------------------------------
# Driver (runs with any Python 3.10+; stdlib only).
# ---------------------------------------------------------------------------------


def ensure_official_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if python.exists():
        return python
    print(f"creating the official environment at {venv}", file=sys.stderr)
    subprocess.run(
        [sys.executable if sys.version_info >= (3, 10) else "python3", "-m", "venv", str(venv)],
        check=True,
    )
    pip = [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check"]
    subprocess.run(pip + [TORCH_PIN], check=True)  # first: a bare torch pulls CUDA wheels
    subprocess.run(pip + OFFICIAL_PINS, check=True)
    return python


def _check_distinct_lengths() -> None:
    # The official encode() sorts by the converted text's length with a non-stable
    # argsort; distinct lengths keep the batching (batch_size=2) unambiguous.
    for kind, items in (("plain", [["", t] for t in TEXTS]), ("pairs", PAIRS)):
        conv = [f"{i.strip()} !@#$%^&*(){t}" if i else f"!@#$%^&*(){t}" for i, t in items]
        lengths = [len(c) for c in conv]
        assert len(set(lengths)) == len(lengths), (kind, lengths)
    for t in TEXTS:
        assert t and "!@#$%^&*()" not in t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--official-venv",
        default=DEFAULT_OFFICIAL_VENV,
        help="venv with llm2vec 0.2.3 / transformers 4.44.2 (created if missing)",
    )
    ap.add_argument("--out", default=str(FIXTURE_DIR), help="fixture folder")
    ap.add_argument(
        "--stage", choices=["all", "checkpoints", "encode"], default="all", help=argparse.SUPPRESS
    )
    ap.add_argument(
        "--skip-checkpoints",
        action="store_true",
        help="keep the existing checkpoints, only recompute expected.json",
    )
    args = ap.parse_args(argv)
    out_dir = Path(args.out).resolve()

    if args.stage == "checkpoints":
        stage_checkpoints(out_dir)
        return 0
    if args.stage == "encode":
        stage_encode(out_dir, out_dir / "expected.json")
        return 0

    _check_distinct_lengths()
    out_dir.mkdir(parents=True, exist_ok=True)
    python = ensure_official_venv(Path(args.official_venv))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        CUDA_VISIBLE_DEVICES="",
    )
    me = str(Path(__file__).resolve())
    if not args.skip_checkpoints:
        subprocess.run(
            [str(python), me, "--stage", "checkpoints", "--out", str(out_dir)], check=True, env=env
        )
    subprocess.run(
        [str(python), me, "--stage", "encode", "--out", str(out_dir)], check=True, env=env
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
