"""int8 on CPU: the encoder's linear layers with int8 weights, converted when it loads.

`quantize_linears` replaces the ``nn.Linear`` layers of a float32 model with torch.ao's
dynamically quantized ones (``torch.ao.nn.quantized.dynamic.Linear``): weights stored as
int8 with one scale per output channel (``per_channel_dynamic_qconfig``), activations
quantized to int8 per call from their observed range, products accumulated in int32 by the
quantized engine's kernels (FBGEMM or oneDNN on x86: AVX512-VNNI / AMX-INT8 where the CPU
has them; QNNPACK on ARM) and returned in float32. Everything else (embeddings, norms,
attention's softmax and matmuls) stays float32. This is "dynamic quantization" in
PyTorch's terms; see Jacob et al. 2018, "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference", for the affine int8 scheme.

`int8_unavailable` says in one line why int8 cannot run on a device (no CPU quantized
engine in this torch build, or a GPU), so `hardware.resolve_dtype` rejects
``--dtype int8`` before a model loads.

Not here: choosing int8 (``hardware.resolve_dtype``; "auto" picks it only where
``benchmarks/int8.py`` measured it fast and accurate enough), static or weight-only
quantization (measured as arms in ``benchmarks/int8.py``), GPU int8.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "INT8_ENGINES",
    "QUANTIZED_ATTR",
    "decoder_blocks",
    "int8_unavailable",
    "quantize_linears",
]

#: Quantized engines whose dynamic int8 Linear kernels `quantize_linears` can use, best first.
INT8_ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")
#: Attribute set on a model converted by `quantize_linears` ("int8"): what
#: `hardware.compute_dtype` reports, since its remaining float parameters say float32.
QUANTIZED_ATTR = "llm2vec_quantized"


def int8_unavailable(device: Any = "cpu", engines: Sequence[str] | None = None) -> str | None:
    """Why int8 encoding cannot run on ``device`` (one line), or None when it can.

    ``engines``: the quantized engines this torch build has (default:
    ``torch.backends.quantized.supported_engines``).
    """
    kind = str(getattr(device, "type", device) or "cpu").lower().split(":", 1)[0]
    if isinstance(device, int) or kind != "cpu":
        return f"int8 runs on CPU only, not on {device!r}; use --dtype auto or bfloat16 there"
    if engines is None:
        import torch

        engines = list(torch.backends.quantized.supported_engines)
    if not any(e in INT8_ENGINES for e in engines):
        have = ", ".join(e for e in engines if e != "none") or "none"
        return (
            f"this torch build has no int8 CPU kernels (quantized engines: {have}; needs one "
            f"of {', '.join(INT8_ENGINES)}); use --dtype auto or float32"
        )
    return None


def decoder_blocks(model: Any) -> list[str]:
    """Qualified names of the model's transformer blocks, in order: the children of its
    largest ``nn.ModuleList`` (``layers.0`` ... for Llama/Gemma/Qwen, ``h.0`` ... for GPT-2)."""
    import torch

    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        return []
    name, blocks = max(lists, key=lambda nm: len(nm[1]))
    return [f"{name}.{i}" if name else str(i) for i in range(len(blocks))]


def quantize_linears(
    model: Any, *, per_channel: bool = True, keep: Iterable[str] = (), engine: str | None = None
) -> Any:
    """``model`` (float32, on CPU) with its ``nn.Linear`` layers dynamically quantized to int8,
    in place; returns it. ``per_channel``: one weight scale per output channel (else one per
    tensor). ``keep``: module-name prefixes left in float32 (e.g. ``decoder_blocks(model)[0]``).
    ``engine``: the quantized engine (default: the first of `INT8_ENGINES` this build has).
    ValueError (one line) where int8 cannot run."""
    import torch
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    reason = int8_unavailable("cpu")
    if reason:
        raise ValueError(reason)
    supported = torch.backends.quantized.supported_engines
    torch.backends.quantized.engine = engine or next(e for e in INT8_ENGINES if e in supported)
    float_dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if float_dtypes - {torch.float32}:
        raise ValueError(f"quantize a float32 model, not {sorted(map(str, float_dtypes))}")
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    kept = tuple(keep)
    spec = {
        name: qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and not any(name == k or name.startswith(k + ".") for k in kept)
    }
    with warnings.catch_warnings():  # torch.ao's notice that the API moves to torchao
        warnings.simplefilter("ignore")
        quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    setattr(model, QUANTIZED_ATTR, "int8")
    return model
