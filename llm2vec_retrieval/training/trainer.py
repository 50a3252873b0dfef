"""The training loop shared by the three stages: accelerate, checkpoints, resume, logs.

Outputs in `cfg.output`:
  adapter_config.json, adapter_model.safetensors   the LoRA adapter (official llm2vec layout)
  llm2vec_config.json, llm2vec_retrieval_config.json, tokenizer files
  training_config.json   every setting of the run (reload with `load_saved_config`)
  train_log.jsonl        one line per logged step: step, loss, lr, tokens_per_s, elapsed_s, ...
  data_stats.json        what the data readers kept and skipped
  training_state.json    {"finished": true, "step": ..., "loss": ...} once done
  checkpoints/step-N/    resumable state: adapter, optimizer, scheduler, RNG states, data position

A checkpoint is written to a temporary folder and renamed into place, so a kill leaves
either the previous complete checkpoint or the new one, never half of one.
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
from . import data as data_mod
from .config import MNTPConfig, SimCSEConfig, SupervisedConfig, TrainConfig
from .gradcache import chunked, grad_cache_step
from .losses import false_negative_mask, info_nce, mask_tokens
from .modeling import (
    Embedder,
    MNTPModel,
    add_lora,
    base_reference,
    enable_gradient_checkpointing,
    load_encoder,
    load_lm_head,
    save_adapter,
    set_attention_dropout,
)

logger = logging.getLogger("llm2vec_retrieval.training")

LOG_FILE = "train_log.jsonl"
STATE_FILE = "training_state.json"
STATS_FILE = "data_stats.json"
CHECKPOINTS = "checkpoints"


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
        if p.is_dir() and p.name.startswith("step-") and (p / "trainer_state.json").is_file():
            try:
                found.append((int(p.name[5:]), p))
            except ValueError:
                continue
    return sorted(found)


def _rng_state() -> dict:
    """RNG states as plain types and tensors only, so resuming loads them with weights_only=True."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [
            name,
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(gauss),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ---------------------------------------------------------------------- the trainer
class Trainer:
    """One stage's run. Use `train(cfg)`; this class holds the state between steps."""

    def __init__(self, cfg: TrainConfig):
        cfg.check_required()
        data_mod.check_data_paths(cfg.data, cfg.stage)
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

        cfg = self.cfg
        self.accelerator = Accelerator()
        self.device = self.accelerator.device
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed)
        hf_kwargs = {}
        if cfg.attn_implementation:
            hf_kwargs["attn_implementation"] = cfg.attn_implementation
        encoder_kwargs = {}
        if isinstance(cfg, (SimCSEConfig, SupervisedConfig)):
            encoder_kwargs = dict(
                pooling_mode=cfg.pooling_mode,
                max_length=cfg.max_length,
                doc_max_length=cfg.max_length,
            )
        self.encoder = load_encoder(
            cfg.model, cfg.init_adapter, hf_kwargs=hf_kwargs, **encoder_kwargs
        )
        enc = self.encoder
        if getattr(cfg, "attention_dropout", None) is not None:
            set_attention_dropout(enc.model, float(cfg.attention_dropout))
        self.saved_encoder_config = EncoderConfig(
            pooling_mode=getattr(cfg, "pooling_mode", enc.config.pooling_mode),
            skip_instruction=enc.config.skip_instruction,
        )
        lm_head = load_lm_head(enc) if isinstance(cfg, MNTPConfig) else None
        self.peft_model = add_lora(enc.model, cfg)
        enc.model = self.peft_model
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(self.peft_model)
        if isinstance(cfg, MNTPConfig):
            self._setup_mntp()
            module = MNTPModel(self.peft_model, lm_head)
        else:
            module = Embedder(enc)
        self.trainable = [p for p in self.peft_model.parameters() if p.requires_grad]
        n_train = sum(p.numel() for p in self.trainable)
        n_all = sum(p.numel() for p in self.peft_model.parameters())
        logger.info(
            "trainable parameters: %d of %d (%.3f%%)", n_train, n_all, 100 * n_train / max(1, n_all)
        )
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.module, self.optimizer = self.accelerator.prepare(module, self.optimizer)
        self.module.train()
        self.stream = self._make_stream()

    def _setup_mntp(self) -> None:
        cfg, tok = self.cfg, self.encoder.tokenizer
        token = cfg.mask_token or tok.mask_token or "_"
        ids = tok.convert_tokens_to_ids([token])
        mask_id = ids[0] if ids else None
        if mask_id is None or mask_id == tok.unk_token_id:
            encoded = tok(token, add_special_tokens=False)["input_ids"]
            if len(encoded) != 1:
                raise ValueError(
                    f"mask token {token!r} is not a single token of this tokenizer; choose one with --mask-token"
                )
            mask_id = encoded[0]
        self.mask_token, self.mask_token_id = token, int(mask_id)
        self.special_ids = torch.tensor(sorted(set(tok.all_special_ids)), dtype=torch.long)
        self.vocab_size = int(self.encoder.model.get_input_embeddings().weight.shape[0])

    def _lr_factor(self, step: int) -> float:
        cfg = self.cfg
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_scheduler == "constant":
            return 1.0
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        return max(0.0, (cfg.max_steps - step) / span)

    def _make_stream(self) -> data_mod.BatchStream:
        cfg = self.cfg
        if isinstance(cfg, MNTPConfig):
            make = data_mod.mntp_batches(cfg.data, self.encoder.tokenizer, cfg, self.stats)
        elif isinstance(cfg, SimCSEConfig):
            make = data_mod.simcse_batches(cfg.data, cfg, self.stats)
        else:
            make = data_mod.supervised_batches(cfg.data, cfg, self.stats)
        return data_mod.BatchStream(make, cfg.seed, stats=self.stats)

    # -------------------------------------------------------------- one step
    def _autocast(self):
        if not self.cfg.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

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
        cfg, acc = self.cfg, self.accelerator
        batch = self._next_batch()
        scale = 1.0 / cfg.gradient_accumulation_steps
        sync = contextlib.nullcontext() if last else acc.no_sync(self.module)
        if isinstance(cfg, MNTPConfig):
            ids = torch.tensor(batch, dtype=torch.long)
            special = torch.isin(ids, self.special_ids)
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step * 101 + micro)
            inputs, labels = mask_tokens(
                ids,
                special,
                cfg.mask_probability,
                self.mask_token_id,
                self.vocab_size,
                cfg.masking,
                gen,
            )
            with sync:
                with self._autocast():
                    loss = self.module(
                        inputs.to(self.device),
                        torch.ones_like(inputs).to(self.device),
                        labels.to(self.device),
                    )
                acc.backward(loss * scale)
            return float(loss.detach()), int(ids.numel())
        return self._contrastive_step(batch, scale, sync, last)

    def _contrastive_step(self, batch, scale: float, sync, last: bool) -> tuple[float, int]:
        cfg, acc = self.cfg, self.accelerator
        embedder = self.module.module if hasattr(self.module, "module") else self.module
        if isinstance(cfg, SimCSEConfig):
            texts = list(batch)
            q_pairs = [("", t) for t in texts]
            groups_pairs = [q_pairs]  # encoded twice below: two dropout masks, one tokenization
            q_texts, cand_texts, margin = texts, texts, None
        else:
            q_pairs = [
                (ex.instruction if ex.instruction is not None else cfg.instruction, ex.query)
                for ex in batch
            ]
            p_pairs = [("", ex.positive) for ex in batch]
            n_pairs = [("", ex.negative) for ex in batch if ex.negative is not None]
            groups_pairs = [q_pairs, p_pairs] + ([n_pairs] if n_pairs else [])
            q_texts = [ex.query for ex in batch]
            cand_texts = [ex.positive for ex in batch] + [
                ex.negative for ex in batch if ex.negative is not None
            ]
            margin = cfg.false_negative_margin
        # Chunks of texts of similar length cut padding; each group is embedded in its sorted
        # order and put back in batch order before the loss (indexing keeps the gradients).
        chunking = cfg.mini_batch_size and cfg.mini_batch_size < len(batch)
        tokens = 0
        groups, inverse = [], []
        for pairs in groups_pairs:
            order = (
                sorted(range(len(pairs)), key=lambda i: len(pairs[i][1]))
                if chunking
                else list(range(len(pairs)))
            )
            inverse.append(torch.argsort(torch.tensor(order)))
            chunks = []
            for piece in chunked([pairs[i] for i in order], cfg.mini_batch_size):
                feats, truncated = embedder.features(list(piece))
                self.stats.truncated_texts += truncated
                tokens += int(feats["attention_mask"].sum())
                chunks.append(feats)
            groups.append(chunks)
        if isinstance(cfg, SimCSEConfig):
            groups, inverse = [groups[0], groups[0]], [inverse[0], inverse[0]]
            tokens *= 2

        def embed(feats):
            with self._autocast():
                return self.module(**{k: v.to(self.device) for k, v in feats.items()}).float()

        def loss_fn(*embs):
            q, p, n = [e[inv.to(e.device)] for e, inv in zip(embs, inverse, strict=True)] + [
                None
            ] * (3 - len(embs))
            cands = p if n is None else torch.cat([p, n])
            mask = false_negative_mask(q, cands, margin, q_texts, cand_texts)
            return info_nce(q, p, n, cfg.temperature, mask)

        if chunking and cfg.grad_cache:
            loss, _ = grad_cache_step(
                embed,
                groups,
                lambda *e: loss_fn(*e) * scale,
                backward=acc.backward,
                no_sync=None if last else (lambda: acc.no_sync(self.module)),
            )
            return float(loss) / scale, tokens
        with sync:
            embs = [torch.cat([embed(c) for c in chunks]) for chunks in groups]
            loss = loss_fn(*embs)
            acc.backward(loss * scale)
        return float(loss.detach()), tokens

    # -------------------------------------------------------------- checkpoints
    def _save_checkpoint(self) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            root = self.out / CHECKPOINTS
            target = root / f"step-{self.step:06d}"
            with staged_dir(target) as tmp:
                self._unwrapped_peft().save_pretrained(tmp)
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
                torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
                torch.save(_rng_state(), tmp / "rng.pt")
                state = {
                    "step": self.step,
                    "stage": self.cfg.stage,
                    "max_steps": self.cfg.max_steps,
                    "data_position": self.stream.position.to_dict(),
                    "elapsed_s": self.elapsed,
                    "tokens": self.tokens_total,
                    "last_loss": self.losses[-1] if self.losses else None,
                    "stats": self.stats.to_dict(),
                }
                (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
            for _, old in list_checkpoints(self.out)[: -self.cfg.save_total_limit or None]:
                if self.cfg.save_total_limit and old != target:
                    shutil.rmtree(old, ignore_errors=True)
            atomic_write_json(self.out / STATS_FILE, self.stats.to_dict())
        acc.wait_for_everyone()

    def _load_checkpoint(self, path: Path) -> None:
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        state = json.loads((path / "trainer_state.json").read_text())
        if state.get("stage") != self.cfg.stage:
            raise ValueError(
                f"{path} is a {state.get('stage')} checkpoint, not {self.cfg.stage}; use another --output or --no-resume"
            )
        weights = load_peft_weights(str(path), device="cpu")
        result = set_peft_model_state_dict(self._unwrapped_peft(), weights)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(
                f"{path}: checkpoint does not match this model ({len(unexpected)} unexpected keys)"
            )
        self.optimizer.load_state_dict(
            torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        )
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed_s", 0.0))
        self.tokens_total = int(state.get("tokens", 0))
        pos = state["data_position"]
        self.stream.position = data_mod.DataPosition(
            int(pos["pass_index"]), int(pos["batches_in_pass"])
        )
        self.resumed_from = self.step
        _set_rng_state(torch.load(path / "rng.pt", weights_only=True))
        self._truncate_log(self.step)

    def _unwrapped_peft(self):
        module = self.accelerator.unwrap_model(self.module)
        return module.model

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
        self._setup()
        checkpoints = list_checkpoints(self.out) if cfg.resume else []
        if checkpoints:
            self._load_checkpoint(checkpoints[-1][1])
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
                    **({"mask_token": self.mask_token} if isinstance(cfg, MNTPConfig) else {}),
                }
            )
        self._batches = iter(self.stream)
        self._train_loop()
        return self._finish()

    def _train_loop(self) -> None:
        from tqdm.auto import tqdm

        cfg, acc = self.cfg, self.accelerator
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            desc=cfg.stage,
            unit="step",
            disable=not (cfg.progress and acc.is_main_process),
            dynamic_ncols=True,
        )
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
        peft_model = self._unwrapped_peft()
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
    """Run one stage (`MNTPConfig`, `SimCSEConfig` or `SupervisedConfig`) and write its outputs."""
    return Trainer(cfg).run()
