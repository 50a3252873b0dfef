"""The bundled LLM2Vec trainer: MNTP, SimCSE and supervised contrastive stages with LoRA.

    from llm2vec_retrieval.training import MNTPConfig, SimCSEConfig, train, export_model

    mntp = train(MNTPConfig(data=["sentences.txt"], output="out/mntp"))
    simcse = train(SimCSEConfig(data=["sentences.txt"], output="out/simcse", init_adapter=["out/mntp"]))
    export_model(None, ["out/mntp", "out/simcse"], "out/encoder")

Command line: `register(subparsers)` from `llm2vec_retrieval.training.cli` adds `train`,
`export` and `combine`; `python -m llm2vec_retrieval.training` runs them standalone. See docs/training.md.
Importing this package imports neither torch nor transformers; `train` and `export_model` do.
"""

from __future__ import annotations

from .config import (
    LORA_TARGETS,
    MASKING_MODES,
    STAGES,
    MNTPConfig,
    SimCSEConfig,
    SupervisedConfig,
    TrainConfig,
    build_config,
    config_class,
    load_saved_config,
    read_config_file,
)

__all__ = [
    "LORA_TARGETS",
    "MASKING_MODES",
    "STAGES",
    "MNTPConfig",
    "SimCSEConfig",
    "SupervisedConfig",
    "TrainConfig",
    "TrainResult",
    "build_config",
    "combine_adapters",
    "config_class",
    "export_model",
    "load_saved_config",
    "read_config_file",
    "register",
    "train",
]


def __getattr__(name: str):
    if name in ("train", "TrainResult", "Trainer"):
        from . import trainer

        return getattr(trainer, name)
    if name == "export_model":
        from .export import export_model

        return export_model
    if name == "combine_adapters":
        from .combine import combine_adapters

        return combine_adapters
    if name == "register":
        from .cli import register

        return register
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
