"""Fold a chain of stage adapters (MNTP -> SimCSE -> supervised) into one LoRA adapter.

Each stage is trained on the base with the previous stages merged, so the final weights are
W0 + sum_i s_i * B_i @ A_i (s_i = lora_alpha / r of stage i). That sum is itself a low-rank
update of rank <= sum r_i:

* `rank=None` writes it exactly (the factors stacked side by side, rank = sum of ranks;
  modules that fewer stages trained are padded with zeros to the same rank);
* `rank=R` keeps the R largest singular directions of each module's summed update (truncated
  SVD: the best rank-R approximation in Frobenius norm) and reports the relative error.

The result is one adapter folder in the official layout (adapter_config.json with
lora_alpha = r so the scale is 1, adapter_model.safetensors, tokenizer and encoder configs of
the last stage) that `LLM2Vec.from_pretrained(base, peft_model_name_or_path=folder)` loads,
and so does the official llm2vec. Nothing here needs the base weights.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch

from ..errors import InvalidInputError, MissingInputError
from ..hardware import weight_dtype
from .folders import staged_folder

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])(?:\.default)?\.weight$")
# copied from the last stage next to the combined weights (tokenizer, encoder configs, ...)
_SKIP = {
    ADAPTER_WEIGHTS,
    ADAPTER_CONFIG,
    "adapter_model.bin",
    "training_config.json",
    "train_log.jsonl",
    "data_stats.json",
    "training_state.json",
    "checkpoints",
}


def _read_adapter(folder: Path) -> tuple[dict, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    from safetensors.torch import load_file

    cfg_path = folder / ADAPTER_CONFIG
    weights_path = folder / ADAPTER_WEIGHTS
    if not cfg_path.is_file() or not weights_path.is_file():
        raise MissingInputError(
            f"{folder} is not a LoRA adapter folder ({ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} needed)"
        )
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("peft_type", "LORA") != "LORA":
        raise InvalidInputError(
            f"{folder}: only LoRA adapters can be combined, got {cfg.get('peft_type')}"
        )
    if cfg.get("use_dora") or cfg.get("use_rslora"):
        raise InvalidInputError(f"{folder}: DoRA / rsLoRA adapters are not supported here")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(weights_path)).items():
        m = _KEY.match(key)
        if m is None:
            raise InvalidInputError(
                f"{folder}: unexpected tensor {key!r} (only LoRA A/B weights can be combined)"
            )
        pairs.setdefault(m["module"], {})[m["part"]] = value.float()
    modules = {}
    for name, parts in pairs.items():
        if set(parts) != {"A", "B"}:
            raise InvalidInputError(f"{folder}: module {name} lacks lora_A or lora_B")
        modules[name] = (parts["B"], parts["A"])
    return cfg, modules


def _scale(cfg: dict, module: str) -> float:
    r = cfg["r"]
    alpha = cfg.get("lora_alpha", r)
    short = module.rsplit(".", 1)[-1]
    r = (cfg.get("rank_pattern") or {}).get(short, r)
    alpha = (cfg.get("alpha_pattern") or {}).get(short, alpha)
    return float(alpha) / float(r)


def combine_adapters(
    adapters: list[str | os.PathLike],
    output: str | os.PathLike,
    rank: int | None = None,
    dtype: str = "float32",
    base_model: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Write one adapter equal (or, with `rank`, closest) to `adapters` merged in order.

    Returns {"rank", "dtype", "bytes", "relative_error": {"max", "mean"}} (errors are the
    Frobenius norm of the dropped part over the norm of the summed update, per module).
    """
    saved_dtype = _check_arguments(adapters, output, rank, dtype, overwrite)
    output = Path(output)
    folders = [Path(a) for a in adapters]
    read = [_read_adapter(f) for f in folders]
    stacked = _stack_updates(read)
    # one rank for every module (PEFT's config has one r): modules with fewer directions
    # (targeted by fewer stages) get zero padding, which changes nothing
    new_rank = rank if rank is not None else max(b.shape[1] for b, _ in stacked.values())

    tensors: dict[str, torch.Tensor] = {}
    errors: list[float] = []
    for name, (b_all, a_all) in stacked.items():
        b_new, a_new, err = _to_rank(b_all, a_all, new_rank)
        errors.append(err)
        tensors[f"{name}.lora_A.weight"] = a_new.to(saved_dtype).contiguous()
        tensors[f"{name}.lora_B.weight"] = b_new.to(saved_dtype).contiguous()

    provenance = {
        "adapters": [os.fspath(f) for f in folders],
        "rank": new_rank,
        "exact": rank is None or all(e == 0.0 for e in errors),
        "dtype": dtype,
        "relative_error_max": max(errors),
        "relative_error_mean": sum(errors) / len(errors),
    }
    cfg = _combined_config(read, sorted(stacked), new_rank, base_model)
    _write_adapter(output, folders[-1], tensors, cfg, provenance)
    return {
        "rank": new_rank,
        "dtype": dtype,
        "bytes": (output / ADAPTER_WEIGHTS).stat().st_size,
        "relative_error": {"max": max(errors), "mean": sum(errors) / len(errors)},
    }


def _check_arguments(
    adapters: list[str | os.PathLike],
    output: str | os.PathLike,
    rank: int | None,
    dtype: str,
    overwrite: bool,
) -> torch.dtype:
    """The dtype to save in, once `combine_adapters`' arguments are checked."""
    if not adapters:
        raise InvalidInputError("combine needs at least one adapter folder")
    try:
        saved_dtype = weight_dtype(dtype)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    if rank is not None and (not isinstance(rank, int) or rank <= 0):
        raise InvalidInputError(f"rank must be a positive integer or None (exact), got {rank!r}")
    output = Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise InvalidInputError(
            f"output folder {output} is not empty (pass overwrite=True to replace it)"
        )
    return saved_dtype


def _stack_updates(
    read: list[tuple[dict, dict[str, tuple[torch.Tensor, torch.Tensor]]]],
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per module (sorted by name), the stages' scaled factors side by side: (B, A) of
    shapes (out, R) and (R, in) with R the sum of the ranks of the stages that trained it."""
    names = sorted(set().union(*(set(m) for _, m in read)))
    stacked: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name in names:
        bs, as_ = [], []
        for cfg, modules in read:
            if name in modules:
                b, a = modules[name]
                bs.append(b * _scale(cfg, name))
                as_.append(a)
        stacked[name] = (torch.cat(bs, dim=1), torch.cat(as_, dim=0))  # (out, R), (R, in)
    return stacked


def _to_rank(
    b_all: torch.Tensor, a_all: torch.Tensor, rank: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(B, A, relative error) of rank ``rank`` for the update ``b_all @ a_all``: padded with
    zeros when it has fewer directions (exact), else its truncated SVD."""
    if b_all.shape[1] <= rank:
        pad = rank - b_all.shape[1]
        b_new = torch.cat([b_all, b_all.new_zeros(b_all.shape[0], pad)], dim=1)
        a_new = torch.cat([a_all, a_all.new_zeros(pad, a_all.shape[1])], dim=0)
        return b_new, a_new, 0.0
    # SVD of the product through thin QR factors: never forms the (out, in) matrix
    qb, rb = torch.linalg.qr(b_all.double())
    qa, ra = torch.linalg.qr(a_all.double().T)
    u, s, vh = torch.linalg.svd(rb @ ra.T)
    root = s[:rank].sqrt()
    b_new = ((qb @ u[:, :rank]) * root).float()
    a_new = (root[:, None] * (vh[:rank] @ qa.T)).float()
    total = float(s.pow(2).sum())
    err = float(s[rank:].pow(2).sum() / total) ** 0.5 if total > 0 else 0.0
    return b_new, a_new, err


def _combined_config(
    read: list[tuple[dict, dict[str, tuple[torch.Tensor, torch.Tensor]]]],
    names: list[str],
    rank: int,
    base_model: str | None,
) -> dict:
    """The last stage's adapter_config.json for one LoRA of ``rank`` (scale 1) over the
    modules ``names``; the base model given, else the first stage's."""
    cfg = dict(read[-1][0])
    targets = sorted({n.rsplit(".", 1)[-1] for n in names})
    cfg.update(
        {
            "r": rank,
            "lora_alpha": rank,
            "lora_dropout": 0.0,
            "rank_pattern": {},
            "alpha_pattern": {},
            "target_modules": targets,
            "inference_mode": True,
        }
    )
    if base_model is not None:
        cfg["base_model_name_or_path"] = base_model
    else:
        first = read[0][0].get("base_model_name_or_path")
        if first is not None:
            cfg["base_model_name_or_path"] = first
    return cfg


def _write_adapter(
    output: Path,
    last: Path,
    tensors: dict[str, torch.Tensor],
    cfg: dict,
    provenance: dict,
) -> None:
    """The adapter folder: the last stage's other files, the weights, the config and
    combined_from.json, swapped in at once."""
    from safetensors.torch import save_file

    with staged_folder(output) as tmp:
        for item in last.iterdir():
            if item.name not in _SKIP and item.is_file():
                shutil.copy2(item, tmp / item.name)
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True))
        (tmp / "combined_from.json").write_text(json.dumps(provenance, indent=2))
