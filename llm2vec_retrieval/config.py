"""The encoder's configuration: one dataclass, saved as JSON beside the weights.

Two files are written: `llm2vec_config.json` holds exactly the four keys the
official llm2vec 0.2.3 reads (it passes every key to its constructor, so an extra
key would break it), and `llm2vec_retrieval_config.json` holds the full config.
Reading accepts either; unknown keys are an error that lists the valid ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .instructions import DEFAULT_QUERY_INSTRUCTION

POOLING_MODES = ("mean", "weighted_mean", "eos_token", "last_token", "bos_token")
PACKING_MODES = ("auto", "on", "off")
OFFICIAL_CONFIG_FILE = "llm2vec_config.json"
CONFIG_FILE = "llm2vec_retrieval_config.json"
_OFFICIAL_KEYS = ("pooling_mode", "max_length", "doc_max_length", "skip_instruction")


@dataclass
class EncoderConfig:
    """How text becomes a vector. Every field is saved; see `validate` for the rules."""

    pooling_mode: str = field(default="mean", metadata={"help": f"one of {POOLING_MODES}"})
    max_length: int = field(default=512, metadata={"help": "token cap on instruction + text"})
    doc_max_length: int = field(
        default=400, metadata={"help": "token cap on the text part alone (cut by tokens)"}
    )
    skip_instruction: bool = field(
        default=True, metadata={"help": "leave instruction tokens out of the pooled vector"}
    )
    enable_bidirectional: bool = field(default=True, metadata={"help": "non-causal attention"})
    query_instruction: str = field(
        default=DEFAULT_QUERY_INSTRUCTION,
        metadata={"help": "instruction for encode_queries when none is given"},
    )
    document_instruction: str = field(
        default="", metadata={"help": "instruction for encode_documents (LLM2Vec uses none)"}
    )
    normalize: bool = field(
        default=True, metadata={"help": "L2-normalize encode_queries/encode_documents output"}
    )
    max_batch_tokens: int = field(
        default=4096,
        metadata={
            "help": "padded-token budget per forward pass (bounds memory). 2048-4096 measured fastest "
            "on a 2-core CPU in bf16 (python -m benchmarks.budget_sweep); GPUs want far larger budgets"
        },
    )

    packing: str = field(
        default="auto",
        metadata={
            "help": f"one of {PACKING_MODES}: run each batch's texts end to end without padding, attention "
            "per text (llm2vec_retrieval.packing); auto = on CPU, on = any device, off = padded batches"
        },
    )

    matryoshka: bool = field(
        default=False,
        metadata={
            "help": "trained so that the first N dimensions of a vector are an embedding too "
            "(Matryoshka representation learning): only then does the server accept OpenAI's "
            "`dimensions`. False for the shipped default"
        },
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.pooling_mode not in POOLING_MODES:
            raise ValueError(
                f"Unknown pooling mode {self.pooling_mode!r}. Valid pooling modes are: "
                + ", ".join(POOLING_MODES)
            )
        if self.packing not in PACKING_MODES:
            raise ValueError(
                f"Unknown packing mode {self.packing!r}. Valid packing modes are: "
                + ", ".join(PACKING_MODES)
            )
        for name in ("max_length", "doc_max_length", "max_batch_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("query_instruction", "document_instruction"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string")
        if not isinstance(self.matryoshka, bool):
            raise ValueError(f"matryoshka must be true or false, got {self.matryoshka!r}")

    # -- JSON ---------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EncoderConfig:
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(
                f"Unknown encoder config keys {unknown}. Valid keys are: {', '.join(sorted(valid))}"
            )
        return cls(**data)

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        official = {key: getattr(self, key) for key in _OFFICIAL_KEYS}
        (directory / OFFICIAL_CONFIG_FILE).write_text(json.dumps(official, indent=4))
        (directory / CONFIG_FILE).write_text(json.dumps(self.to_dict(), indent=2))

    @staticmethod
    def read_saved(directory: str | os.PathLike | None) -> dict:
        """Saved settings in `directory` (ours take precedence over the official file)."""
        if directory is None or not os.path.isdir(directory):
            return {}
        data: dict = {}
        for name in (OFFICIAL_CONFIG_FILE, CONFIG_FILE):
            path = Path(directory) / name
            if path.is_file():
                try:
                    data.update(json.loads(path.read_text()))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path} is not valid JSON: {exc}") from None
        return data
