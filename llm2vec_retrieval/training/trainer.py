"""The training loop shared by every stage: accelerate, checkpoints, resume, logs.

The loop knows no stage: what differs between MNTP, SimCSE and supervised training (model
wrapper, batches, loss) is an `Objective` (`objectives/`), looked up by `cfg.stage`.

Outputs in `cfg.output`:
  adapter_config.json, adapter_model.safetensors   the LoRA adapter (official llm2vec layout)
  llm2vec_config.json, llm2vec_retrieval_config.json, tokenizer files
  training_config.json   every setting of the run (reload with `load_saved_config`)
  train_log.jsonl        one line per logged step: step, loss, lr, tokens_per_s, elapsed_s, ...
  data_stats.json        what the data readers kept and skipped
  training_state.json    {"finished": true, "step": ..., "loss": ...} once done
  checkpoints/step-N/    resumable state, written by `accelerator.save_state`:
      adapter_config.json, adapter_model.safetensors   the LoRA weights only (PEFT layout; the
                             frozen base is not saved: a save hook replaces accelerate's
                             full-model file)
      optimizer.bin, scheduler.bin, random_states_<rank>.pkl   accelerate's files (torch.save)
      trainer_state.json     step, data position (pass, batches consumed), elapsed time,
                             tokens, data stats; the data order is a function of the seed and
                             the position, so nothing else of the data stream needs saving

A checkpoint is written to a temporary folder and renamed into place (`_io.staged_dir`), so a
kill leaves either the previous complete checkpoint or the new one, never half of one.

Safety: accelerate loads optimizer.bin, scheduler.bin and the RNG states with
`torch.load(weights_only=True)` (plain tensors and containers, numpy arrays allowed; no
arbitrary objects are unpickled); the adapter is safetensors. Checkpoints are still meant for
resuming your own runs, not for loading files from elsewhere.

Checkpoints of the earlier format (optimizer.pt, scheduler.pt, rng.pt beside the adapter) are
refused with a one-line error: restart the stage with `--no-resume`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_write_json, atomic_write_text, restore_backup, staged_dir
from ..config import EncoderConfig
from ..errors import InvalidInputError
from ..progress import progress_bar
from . import data as data_mod
from .config import TrainConfig
from .modeling import (
    add_lora,
    base_reference,
    enable_gradient_checkpointing,
    load_training_base,
    save_adapter,
)
from .objectives import MicroStep, objective_for

logger = logging.getLogger("llm2vec_retrieval.training")

LOG_FILE = "train_log.jsonl"
STATE_FILE = "training_state.json"
STATS_FILE = "data_stats.json"
CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"
CHECKPOINT_FORMAT = 2  # 1 (unmarked): hand-rolled optimizer.pt/scheduler.pt/rng.pt


@dataclass
class TrainResult:
    output_dir: Path
    stage: str
    step: int
    loss: float | None
    losses: list[float] = field(default_factory=list)  # per optimizer step, this process only
    stats: data_mod.DataStats | None = None
    # the trained LLM2Vec (PEFT model, eval mode); None if nothing ran
    encoder: object | None = None
    resumed_from: int | None = None


# ---------------------------------------------------------------------- checkpoints
def list_checkpoints(output: str | os.PathLike) -> list[tuple[int, Path]]:
    root = Path(output) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("step-") and (p / TRAINER_STATE).is_file():
            try:
                found.append((int(p.name[5:]), p))
            except ValueError:
                continue
    return sorted(found)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ---------------------------------------------------------------------- the trainer
class Trainer:
    """One stage's run. Use `train(cfg)`; this class holds the state between steps."""

    def __init__(self, cfg: TrainConfig):
        cfg.check_required()
        self.objective = objective_for(cfg)
        self.objective.check_data()
        self.cfg = cfg
        self.out = Path(cfg.output)
        self.stats = data_mod.DataStats()
        self.step = 0
        self.elapsed = 0.0
        self.tokens_total = 0
        self.losses: list[float] = []
        self.resumed_from: int | None = None

    # -------------------------------------------------------------- setup
    def _setup(self) -> None:
        from accelerate import Accelerator

        cfg, objective = self.cfg, self.objective
        # the scheduler steps once per optimizer step, whatever the number of processes
        self.accelerator = Accelerator(step_scheduler_with_optimizer=False)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed)
        hf_kwargs = {}
        if cfg.attn_implementation:
            hf_kwargs["attn_implementation"] = cfg.attn_implementation
        self.encoder = load_training_base(
            cfg.model, cfg.init_adapter, hf_kwargs=hf_kwargs, **objective.encoder_kwargs()
        )
        enc = self.encoder
        objective.prepare_base(enc)
        self.saved_encoder_config = objective.encoder_config(enc)
        self.peft_model = add_lora(enc.model, cfg)
        enc.model = self.peft_model
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(self.peft_model)
        module = objective.build_module(enc)
        self.trainable = [p for p in self.peft_model.parameters() if p.requires_grad]
        n_train = sum(p.numel() for p in self.trainable)
        n_all = sum(p.numel() for p in self.peft_model.parameters())
        logger.info(
            "trainable parameters: %d of %d (%.3f%%)", n_train, n_all, 100 * n_train / max(1, n_all)
        )
        optimizer = torch.optim.AdamW(self.trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        self.module, self.optimizer, self.scheduler = self.accelerator.prepare(
            module, optimizer, scheduler
        )
        self.accelerator.register_save_state_pre_hook(self._save_adapter_hook)
        self.accelerator.register_load_state_pre_hook(self._load_adapter_hook)
        self.module.train()
        self.stream = data_mod.BatchStream(
            objective.batches(enc, self.stats), cfg.seed, stats=self.stats
        )

    def _lr_factor(self, step: int) -> float:
        cfg = self.cfg
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_scheduler == "constant":
            return 1.0
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        return max(0.0, (cfg.max_steps - step) / span)

    # -------------------------------------------------------------- one step
    def _next_batch(self):
        # each process takes its own batch out of every `num_processes` consecutive ones
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        mine = None
        for i in range(world):
            batch = next(self._batches)
            if i == rank:
                mine = batch
        return mine

    def _micro_step(self, micro: int, last: bool) -> tuple[float, int]:
        step = MicroStep(
            module=self.module,
            accelerator=self.accelerator,
            step=self.step,
            micro=micro,
            last=last,
            scale=1.0 / self.cfg.gradient_accumulation_steps,
            bf16=self.cfg.bf16,
            stats=self.stats,
        )
        return self.objective.micro_step(step, self._next_batch())

    # -------------------------------------------------------------- checkpoints
    def _save_adapter_hook(self, models, weights, output_dir) -> None:
        # only the LoRA weights, in PEFT's layout: the frozen base would be the model's full size
        weights.clear()
        if self.accelerator.is_main_process:
            self.peft_model.save_pretrained(output_dir)

    def _load_adapter_hook(self, models, input_dir) -> None:
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        models.clear()  # loaded here, not by accelerate
        weights = load_peft_weights(str(input_dir), device="cpu")
        result = set_peft_model_state_dict(self.peft_model, weights)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise InvalidInputError(
                f"{input_dir}: checkpoint does not match this model ({len(unexpected)} unexpected keys); "
                "use another --output or --no-resume"
            )

    def _save_checkpoint(self) -> None:
        from accelerate.utils import broadcast_object_list

        acc = self.accelerator
        target = self.out / CHECKPOINTS / f"step-{self.step:06d}"
        acc.wait_for_everyone()
        staged = staged_dir(target) if acc.is_main_process else contextlib.nullcontext()
        with staged as tmp:
            # every process writes its RNG state into the main process's staging folder
            tmp = Path(broadcast_object_list([tmp])[0])
            acc.save_state(str(tmp))
            if acc.is_main_process:
                state = {
                    "format": CHECKPOINT_FORMAT,
                    "step": self.step,
                    "stage": self.cfg.stage,
                    "max_steps": self.cfg.max_steps,
                    "num_processes": acc.num_processes,
                    "data_position": self.stream.position.to_dict(),
                    "elapsed_s": self.elapsed,
                    "tokens": self.tokens_total,
                    "last_loss": self.losses[-1] if self.losses else None,
                    "stats": self.stats.to_dict(),
                }
                (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2))
            acc.wait_for_everyone()  # all files written before the folder is swapped in
        if acc.is_main_process:
            for _, old in list_checkpoints(self.out)[: -self.cfg.save_total_limit or None]:
                if self.cfg.save_total_limit and old != target:
                    shutil.rmtree(old, ignore_errors=True)
            atomic_write_json(self.out / STATS_FILE, self.stats.to_dict())
        acc.wait_for_everyone()

    def _read_checkpoint_state(self, path: Path) -> dict:
        """The checkpoint's trainer state, if this run can resume it (checked before any model
        is loaded)."""
        state = json.loads((path / TRAINER_STATE).read_text())
        if state.get("format") != CHECKPOINT_FORMAT:
            raise InvalidInputError(
                f"{path} is a checkpoint of an earlier llm2vec-retrieval version, which this one "
                "cannot resume; restart the stage with --no-resume (or finish it with that version)"
            )
        if state.get("stage") != self.cfg.stage:
            raise InvalidInputError(
                f"{path} is a {state.get('stage')} checkpoint, not {self.cfg.stage}; use another --output or --no-resume"
            )
        return state

    def _load_checkpoint(self, path: Path, state: dict) -> None:
        acc = self.accelerator
        if state.get("num_processes", 1) != acc.num_processes:
            raise InvalidInputError(
                f"{path} was written by {state.get('num_processes')} processes, this run has "
                f"{acc.num_processes}; resume with the same number or use --no-resume"
            )
        rng_file = path / f"random_states_{acc.process_index}.pkl"
        if not rng_file.is_file():
            raise InvalidInputError(f"{path} lacks {rng_file.name}; use --no-resume")
        acc.load_state(str(path))
        self._check_rng_restored(rng_file)
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed_s", 0.0))
        self.tokens_total = int(state.get("tokens", 0))
        pos = state["data_position"]
        self.stream.position = data_mod.DataPosition(
            int(pos["pass_index"]), int(pos["batches_in_pass"])
        )
        self.resumed_from = self.step
        self._truncate_log(self.step)

    @staticmethod
    def _check_rng_restored(rng_file: Path) -> None:
        # accelerate logs, and otherwise ignores, an RNG file it cannot load: a resume that
        # would silently draw other dropout masks. Compare with the file instead.
        from accelerate.utils import load

        saved = load(rng_file)
        if not torch.equal(saved["torch_manual_seed"], torch.get_rng_state()):
            raise InvalidInputError(
                f"{rng_file}: random states could not be restored; use --no-resume"
            )

    def _truncate_log(self, step: int) -> None:
        log = self.out / LOG_FILE
        if not log.is_file():
            return
        kept = []
        for line in log.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            if rec.get("step", 0) <= step:
                kept.append(line)
        atomic_write_text(log, "".join(k + "\n" for k in kept))

    def _log(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.out / LOG_FILE, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    # -------------------------------------------------------------- run
    def run(self) -> TrainResult:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        state_file = self.out / STATE_FILE
        if cfg.resume and state_file.is_file():
            done = json.loads(state_file.read_text())
            if (
                done.get("finished")
                and done.get("step", 0) >= cfg.max_steps
                and done.get("stage") == cfg.stage
            ):
                print(
                    f"{cfg.stage}: already finished at step {done['step']} in {self.out}; nothing to do",
                    file=sys.stderr,
                )
                return TrainResult(self.out, cfg.stage, done["step"], done.get("loss"))
        if not cfg.resume:
            shutil.rmtree(self.out / CHECKPOINTS, ignore_errors=True)
            for name in (LOG_FILE, STATE_FILE, STATS_FILE):
                (self.out / name).unlink(missing_ok=True)
        ckpts = self.out / CHECKPOINTS
        if ckpts.is_dir():  # what a killed checkpoint save left (this run is the only writer)
            for bak in ckpts.glob(".step-*.bak"):
                restore_backup(ckpts / bak.name[1 : -len(".bak")])
            for stale in [*ckpts.glob(".tmp-*"), *ckpts.glob(".step-*.tmp-*")]:
                shutil.rmtree(stale, ignore_errors=True)
        state_file.unlink(missing_ok=True)
        checkpoints = list_checkpoints(self.out) if cfg.resume else []
        resume_state = self._read_checkpoint_state(checkpoints[-1][1]) if checkpoints else None
        self._setup()
        if resume_state is not None:
            self._load_checkpoint(checkpoints[-1][1], resume_state)
            print(
                f"{cfg.stage}: resuming from {checkpoints[-1][1]} (step {self.step})",
                file=sys.stderr,
            )
        else:
            (self.out / LOG_FILE).unlink(missing_ok=True)
        cfg.save(self.out)
        if self.step == 0:
            self._log(
                {
                    "event": "start",
                    "stage": cfg.stage,
                    "max_steps": cfg.max_steps,
                    **self.objective.start_fields(),
                }
            )
        self._batches = iter(self.stream)
        self._train_loop()
        return self._finish()

    def _train_loop(self) -> None:
        cfg, acc = self.cfg, self.accelerator
        enabled = cfg.progress and acc.is_main_process
        bar = progress_bar(cfg.max_steps, cfg.stage, "step", enabled, initial=self.step)
        try:
            while self.step < cfg.max_steps:
                t0 = time.perf_counter()
                lr = self.scheduler.get_last_lr()[0]
                micro_losses, tokens = [], 0
                for micro in range(cfg.gradient_accumulation_steps):
                    loss, n = self._micro_step(micro, micro == cfg.gradient_accumulation_steps - 1)
                    micro_losses.append(loss)
                    tokens += n
                if cfg.max_grad_norm:
                    acc.clip_grad_norm_(self.trainable, cfg.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                dt = time.perf_counter() - t0
                self.elapsed += dt
                self.tokens_total += tokens
                loss = float(np.mean(micro_losses))
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"loss became {loss} at step {self.step}; lower --lr or disable --bf16"
                    )
                self.losses.append(loss)
                tps = tokens / dt if dt > 0 else 0.0
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:.0f}")
                if self.step % cfg.logging_steps == 0 or self.step == cfg.max_steps:
                    self._log(
                        {
                            "step": self.step,
                            "loss": loss,
                            "lr": lr,
                            "tokens_per_s": round(tps, 1),
                            "tokens": self.tokens_total,
                            "elapsed_s": round(self.elapsed, 3),
                        }
                    )
                if self.step % cfg.save_steps == 0 or self.step == cfg.max_steps:
                    self._save_checkpoint()
        finally:
            bar.close()

    def _finish(self) -> TrainResult:
        cfg, acc = self.cfg, self.accelerator
        acc.wait_for_everyone()
        peft_model = self.peft_model
        peft_model.eval()
        self.module.eval()
        if acc.is_main_process:
            base_ref = (
                os.path.abspath(cfg.init_adapter[-1])
                if cfg.init_adapter
                else base_reference(cfg.model)
            )
            save_adapter(peft_model, self.encoder, self.out, base_ref, self.saved_encoder_config)
            atomic_write_json(self.out / STATS_FILE, self.stats.to_dict())
            final = {
                "finished": True,
                "stage": cfg.stage,
                "step": self.step,
                "loss": self.losses[-1] if self.losses else None,
                "elapsed_s": round(self.elapsed, 3),
                "tokens": self.tokens_total,
                "base": base_reference(cfg.model),
                "init_adapter": cfg.init_adapter,
            }
            atomic_write_json(self.out / STATE_FILE, final)
            print(self.stats.summary(), file=sys.stderr)
            logger.info(self.stats.summary())
        self.encoder.model = peft_model
        # as saved
        self.encoder.config = EncoderConfig.from_dict(self.saved_encoder_config.to_dict())
        return TrainResult(
            self.out,
            cfg.stage,
            self.step,
            self.losses[-1] if self.losses else None,
            list(self.losses),
            self.stats,
            self.encoder,
            self.resumed_from,
        )


def train(cfg: TrainConfig) -> TrainResult:
    """Run one stage (`MNTPConfig`, `SimCSEConfig`, `SupervisedConfig`, or the config of a
    registered objective) and write its outputs."""
    return Trainer(cfg).run()
