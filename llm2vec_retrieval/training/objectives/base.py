"""What the training loop asks of a stage, and the registry that maps a stage name to it.

The loop (`trainer.py`) loads the encoder, adds LoRA, owns the optimizer, scheduler,
checkpoints, logs and the step count; everything that differs between stages lives in an
`Objective`: how the encoder is loaded, which module is trained, how batches are made, and
one micro-batch's forward and backward. To add a stage: a `TrainConfig` subclass with its own
`stage` name, an `Objective` subclass, and `register_objective(MyObjective)`.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import torch

from ...config import EncoderConfig
from ...errors import InvalidInputError
from .. import data as data_mod
from ..config import TrainConfig

if TYPE_CHECKING:
    from ...encoder import LLM2Vec

MakeBatches = Callable[[int, random.Random, bool], Iterator]
# the config class of an objective: `self.cfg` is typed as the stage's own TrainConfig subclass
C = TypeVar("C", bound=TrainConfig)


@dataclass
class MicroStep:
    """One micro-batch as the loop hands it to `Objective.micro_step`."""

    module: torch.nn.Module  # as accelerate prepared it (DDP-wrapped when distributed)
    accelerator: Any
    step: int  # optimizer steps done before this one
    micro: int  # index of this micro-batch within the optimizer step
    last: bool  # the last micro-batch of the step: gradients are synchronised after it
    scale: float  # 1 / gradient_accumulation_steps: multiply the loss by it before backward
    bf16: bool
    stats: data_mod.DataStats

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def no_sync(self) -> contextlib.AbstractContextManager:
        """No gradient all-reduce for this backward unless it is the step's last micro-batch."""
        if self.last:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(self.module)

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate `loss` as it is (scale it first)."""
        self.accelerator.backward(loss)

    def unwrapped(self) -> torch.nn.Module:
        """The module `Objective.build_module` returned (without DDP's wrapper)."""
        return self.accelerator.unwrap_model(self.module)


class Objective(Generic[C]):
    """A training stage. The loop calls, in order: `check_data`, `encoder_kwargs`,
    `prepare_base` (before LoRA), `encoder_config`, `build_module` (after LoRA), `batches`,
    `start_fields`, then `micro_step` for every micro-batch."""

    config_class: ClassVar[type[TrainConfig]] = TrainConfig

    def __init__(self, cfg: C):
        self.cfg = cfg

    def check_data(self) -> None:
        """Missing or unsuitable data files: a one-line error before any model is loaded."""
        data_mod.check_data_paths(self.cfg.data, self.cfg.stage)

    def encoder_kwargs(self) -> dict:
        """Keyword arguments for `LLM2Vec.from_pretrained` (pooling, lengths)."""
        return {}

    def prepare_base(self, encoder: LLM2Vec) -> None:
        """Changes to the loaded encoder before LoRA is added (dropout, extra heads)."""

    def encoder_config(self, encoder: LLM2Vec) -> EncoderConfig:
        """The encoder settings saved beside the adapter (llm2vec_config.json)."""
        return EncoderConfig(
            pooling_mode=encoder.config.pooling_mode,
            skip_instruction=encoder.config.skip_instruction,
        )

    def build_module(self, encoder: LLM2Vec) -> torch.nn.Module:
        """The module to train; `encoder.model` is now the PEFT (LoRA) model."""
        raise NotImplementedError

    def batches(self, encoder: LLM2Vec, stats: data_mod.DataStats) -> MakeBatches:
        """`make_batches(pass_index, rng, first_pass)` for `data.BatchStream`."""
        raise NotImplementedError

    def start_fields(self) -> dict:
        """Extra fields of the first train_log.jsonl record."""
        return {}

    def micro_step(self, step: MicroStep, batch: Any) -> tuple[float, int]:
        """Forward and backward of one micro-batch: returns (unscaled loss, tokens processed)."""
        raise NotImplementedError


OBJECTIVES: dict[str, type[Objective[Any]]] = {}
Obj = TypeVar("Obj", bound=Objective[Any])


def register_objective(cls: type[Obj]) -> type[Obj]:
    """Make `cls` the objective of its config's stage (usable as a class decorator)."""
    OBJECTIVES[cls.config_class.stage] = cls
    return cls


def objective_for(cfg: TrainConfig) -> Objective[Any]:
    """The registered objective of `cfg.stage`, built for `cfg`."""
    cls = OBJECTIVES.get(cfg.stage)
    if cls is None:
        raise InvalidInputError(
            f"no objective for stage {cfg.stage!r}; registered: {', '.join(sorted(OBJECTIVES))} "
            "(add one with register_objective)"
        )
    if not isinstance(cfg, cls.config_class):
        raise InvalidInputError(
            f"{type(cfg).__name__} is not a {cls.config_class.__name__}, which the {cfg.stage} objective needs"
        )
    return cls(cfg)
