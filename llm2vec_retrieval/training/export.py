"""Export: adapters merged into the base, saved as a stock transformers checkpoint.

The folder holds the base *AutoModel* (e.g. `LlamaModel`) with `"is_causal": false` in
config.json (transformers >= 5.2 then builds bidirectional masks by itself), the
tokenizer, this project's encoder configs (`llm2vec_config.json`,
`llm2vec_retrieval_config.json`) and sentence-transformers module files
(`modules.json`, `sentence_bert_config.json`, `1_Pooling/config.json`), so that

    LLM2Vec.from_pretrained(folder)            # our encoder
    SentenceTransformer(folder)                 # no custom code
    AutoModel.from_pretrained(folder)           # plain transformers, bidirectional

all load it. sentence-transformers pools over every attended token, including a BOS token
if the tokenizer adds one, while LLM2Vec leaves the BOS (an instruction token) out: the two
agree exactly for tokenizers without BOS (SmolLM2, Qwen2) and differ slightly otherwise.
Queries with an instruction: `SentenceTransformer.encode(q, prompt="<instruction> ")`
with `include_prompt: false` approximates `skip_instruction`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, cast

from ..bidirectional import is_bidirectional, set_bidirectional
from ..config import EncoderConfig
from ..errors import InvalidInputError
from ..hardware import weight_dtype
from .folders import patch_json, staged_folder
from .modeling import input_embeddings, load_training_base

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ST_POOLING = {
    "mean": "mean",
    "weighted_mean": "weightedmean",
    "eos_token": "lasttoken",
    "last_token": "lasttoken",
    "bos_token": "cls",
}


def export_model(
    model: str | None,
    adapters: list[str] | str,
    output: str | os.PathLike,
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Merge `adapters` (in order) into `model` and write a standalone bidirectional checkpoint."""
    if isinstance(adapters, (str, os.PathLike)):
        adapters = [os.fspath(adapters)]
    if not adapters:
        raise InvalidInputError("export needs at least one --adapter folder")
    output = Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise InvalidInputError(
            f"output folder {output} is not empty (pass --overwrite to replace it)"
        )
    try:
        torch_dtype = weight_dtype(dtype)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    encoder = load_training_base(model, adapters)
    saved = EncoderConfig.read_saved(adapters[-1])
    saved.pop("enable_bidirectional", None)
    enc_cfg = EncoderConfig.from_dict({**saved, "enable_bidirectional": True})
    loaded = encoder.model
    set_bidirectional(loaded, True)
    if not is_bidirectional(loaded):
        raise RuntimeError("the merged model is not bidirectional after setting is_causal=False")
    merged = cast("PreTrainedModel", loaded.to(torch_dtype))  # a transformers model

    with staged_folder(output) as tmp:
        merged.save_pretrained(tmp)
        patch_json(tmp / "config.json", {"is_causal": False})
        encoder.tokenizer.save_pretrained(tmp)
        enc_cfg.save(tmp)
        hidden = int(input_embeddings(merged).weight.shape[1])
        (tmp / "modules.json").write_text(
            json.dumps(
                [
                    {
                        "idx": 0,
                        "name": "0",
                        "path": "",
                        "type": "sentence_transformers.models.Transformer",
                    },
                    {
                        "idx": 1,
                        "name": "1",
                        "path": "1_Pooling",
                        "type": "sentence_transformers.models.Pooling",
                    },
                ],
                indent=2,
            )
        )
        (tmp / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": enc_cfg.max_length, "do_lower_case": False}, indent=2)
        )
        (tmp / "1_Pooling").mkdir()
        mode = ST_POOLING[enc_cfg.pooling_mode]
        (tmp / "1_Pooling" / "config.json").write_text(
            json.dumps(
                {
                    "word_embedding_dimension": hidden,
                    "pooling_mode_cls_token": mode == "cls",
                    "pooling_mode_mean_tokens": mode == "mean",
                    "pooling_mode_max_tokens": False,
                    "pooling_mode_mean_sqrt_len_tokens": False,
                    "pooling_mode_weightedmean_tokens": mode == "weightedmean",
                    "pooling_mode_lasttoken": mode == "lasttoken",
                    "include_prompt": not enc_cfg.skip_instruction,
                },
                indent=2,
            )
        )
        (tmp / "config_sentence_transformers.json").write_text(
            json.dumps(
                {
                    "prompts": {"query": f"{enc_cfg.query_instruction.strip()} ", "document": ""},
                    "default_prompt_name": None,
                    "similarity_fn_name": "cosine",
                },
                indent=2,
            )
        )
        (tmp / "llm2vec_export.json").write_text(
            json.dumps(
                {
                    "base": encoder.source.get("model"),
                    "adapters": [os.path.abspath(a) for a in adapters],
                    "dtype": dtype,
                },
                indent=2,
            )
        )
    return output
