"""Which dtype to encode in on this machine: bfloat16 where the hardware runs it natively,
float32 elsewhere; int8 (CPU only) when asked.

bf16 matmuls are native on x86 CPUs with ``avx512_bf16`` or AMX (``amx_bf16``), on ARM CPUs
with the ARMv8.6 BF16 extension (``bf16`` in /proc/cpuinfo's Features) and on CUDA GPUs that
support it (``torch.cuda.is_bf16_supported()``). Without them torch emulates bf16, which is
far slower than float32, so "auto" picks float32 there.

The flag logic is pure (``parse_cpuinfo``, ``cpu_dtype``) so that it is tested on any
machine; ``read_cpu_features`` reads /proc/cpuinfo (Linux) or sysctl (macOS). Nothing here
loads a model: ``resolve_dtype`` turns a user's choice ("auto", "float32", "bfloat16",
"float16", "int8") into a `DtypeChoice`. Dtype names are parsed here only: `DTYPES` is the
table of names (a new one is a row there), `dtype_name` reads a name or a torch dtype,
`torch_dtype` gives the torch dtype and `weight_dtype` checks a dtype to save weights in
(training's export and combine).

"int8" loads float32 weights and quantizes the linear layers (`llm2vec_retrieval.quantize`:
int8 weights per output channel, int8 activations per call, VNNI/AMX kernels). "auto" picks it
only on a CPU class listed in `INT8_AUTO_CPUS`, where ``benchmarks/int8.py`` measured it at
least 1.5x bfloat16's tokens/s and within 0.5 points of bfloat16 on every dev set (the
int8 section of benchmarks/RESULTS.md). "auto" (`DEFAULT_DTYPE`) is the default of every entry
point: the CLI, `load_encoder`, the integrations and ``LLM2Vec.from_pretrained``, which
resolves it here before transformers sees it (transformers reads "auto" as "the
checkpoint's dtype").
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ARM_BF16_FLAGS",
    "DEFAULT_DTYPE",
    "DTYPE_CHOICES",
    "INT8_AUTO_CPUS",
    "X86_BF16_FLAGS",
    "CpuFeatures",
    "DtypeChoice",
    "DtypeUnavailableError",
    "DTYPES",
    "WEIGHT_DTYPES",
    "compute_dtype",
    "cpu_dtype",
    "dtype_name",
    "load_device",
    "parse_cpuinfo",
    "pick_dtype",
    "read_cpu_features",
    "resolve_dtype",
    "torch_dtype",
    "weight_dtype",
]

#: Dtype name -> the torch attribute it names: the one table of dtype names. "int8": CPU only,
#: the linear layers quantized when the encoder loads (`llm2vec_retrieval.quantize`).
DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "int8": "int8"}
#: What a user may ask for; "auto" picks by hardware (`pick_dtype`).
DTYPE_CHOICES = ("auto", *DTYPES)
#: What trained weights may be saved in (`weight_dtype`).
WEIGHT_DTYPES = ("float32", "bfloat16", "float16")
#: What every entry point (Python API, CLI, integrations) encodes in unless told otherwise.
DEFAULT_DTYPE = "auto"
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ARM_BF16_FLAGS = ("bf16",)
#: CPU classes (each a set of flags the CPU must all have) on which "auto" picks int8: where
#: benchmarks/int8.py measured int8 at least 1.5x bfloat16's tokens/s and within 0.5 points
#: of it on the dev sets. Empty: on AMD EPYC (avx512_vnni + avx512_bf16, no AMX) every int8 arm
#: failed both bars (benchmarks/results/int8_20261207-233015.json); AMX-INT8 is unmeasured.
INT8_AUTO_CPUS: tuple[frozenset[str], ...] = ()


class DtypeUnavailableError(ValueError):
    """A valid dtype that cannot run here (int8 without CPU int8 kernels, or on a GPU)."""


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's architecture family ("x86", "arm" or "unknown") and its feature flags."""

    arch: str
    flags: frozenset[str]

    @property
    def bf16_flags(self) -> list[str]:
        """The flags present that mean native bf16 matmuls (empty when none)."""
        names = ARM_BF16_FLAGS if self.arch == "arm" else X86_BF16_FLAGS
        return [f for f in names if f in self.flags]


@dataclass(frozen=True)
class DtypeChoice:
    """A resolved dtype: its torch name, what was asked ("auto" or a name) and why."""

    name: str
    asked: str
    reason: str
    #: A warning for an explicit choice that runs slowly here (bf16 emulated on this CPU).
    caveat: str | None = None

    @property
    def dtype(self) -> Any:
        """The torch dtype (imports torch)."""
        return torch_dtype(self.name)

    def describe(self, option: str = "--dtype") -> str:
        """One line for a start-up message, e.g. ``encoding in bfloat16 (CPU has avx512_bf16;
        --dtype float32 to override)``; ``option`` names how the user sets it (``--dtype``,
        or ``dtype=`` for a keyword argument)."""

        def setting(name: str) -> str:
            return f'{option}"{name}"' if option.endswith("=") else f"{option} {name}"

        if self.asked == "auto":
            other = "float32" if self.name != "float32" else "bfloat16"
            return f"encoding in {self.name} ({self.reason}; {setting(other)} to override)"
        caveat = f"; warning: {self.caveat}" if self.caveat else ""
        return f"encoding in {self.name} ({setting(self.name)}{caveat})"


def parse_cpuinfo(text: str, machine: str = "") -> CpuFeatures:
    """The features in /proc/cpuinfo ``text`` (the first processor's ``flags`` line on x86,
    ``Features`` on ARM). ``machine`` (``platform.machine()``) decides the family when the
    text names neither."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "flags":
            return CpuFeatures("x86", frozenset(value.split()))
        if key == "features":
            return CpuFeatures("arm", frozenset(value.split()))
    return CpuFeatures(_family(machine), frozenset())


def _family(machine: str) -> str:
    m = machine.lower()
    if m in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "x86"
    if m.startswith(("arm", "aarch64")):
        return "arm"
    return "unknown"


@functools.lru_cache(maxsize=1)
def read_cpu_features() -> CpuFeatures | None:
    """This machine's CPU features, or None when they cannot be read (then "auto" is float32)."""
    machine = platform.machine()
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                features = parse_cpuinfo(f.read(), machine)
        except OSError:
            return None
        return features if features.flags else None
    if sys.platform == "darwin" and _family(machine) == "arm":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"],
                capture_output=True,
                text=True,
                timeout=5,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        if out.returncode != 0 or out.stdout.strip() not in ("0", "1"):
            return None
        return CpuFeatures("arm", frozenset(ARM_BF16_FLAGS if out.stdout.strip() == "1" else ()))
    return None


def cpu_dtype(
    features: CpuFeatures | None, int8_cpus: tuple[frozenset[str], ...] | None = None
) -> tuple[str, str]:
    """(dtype name, reason) for encoding on a CPU with these features. ``int8_cpus``: the
    classes on which int8 passed the rule (default `INT8_AUTO_CPUS`)."""
    if features is None or features.arch == "unknown":
        return "float32", "unknown CPU features"
    for needed in INT8_AUTO_CPUS if int8_cpus is None else int8_cpus:
        if needed <= features.flags:
            from .quantize import int8_unavailable

            if int8_unavailable("cpu") is None:
                return "int8", f"CPU has {', '.join(sorted(needed))}, where int8 was measured"
    found = features.bf16_flags
    if found:
        return "bfloat16", f"CPU has {', '.join(found)}"
    wanted = "ARMv8.6 bf16 feature" if features.arch == "arm" else "/".join(X86_BF16_FLAGS)
    return (
        "float32",
        f"CPU has no native bf16 ({wanted}); bf16 would be emulated and ~10x slower",
    )


def load_device(kwargs: dict[str, Any]) -> Any:
    """The device a load with these `LLM2Vec.from_pretrained` keyword arguments puts the model
    on (``device_map``, else ``device``; a per-module map: its first placement; "auto": CUDA
    when available), for `resolve_dtype`."""
    device = kwargs.get("device_map", kwargs.get("device"))
    if isinstance(device, dict):
        device = next(iter(device.values()), None)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device if device is not None else "cpu"


def _device_type(device: Any) -> str:
    if device is None:
        return "cpu"
    if isinstance(device, int):  # a CUDA ordinal, as device_map takes it
        return "cuda"
    text = str(getattr(device, "type", device)).lower()
    return text.split(":", 1)[0]


def pick_dtype(device: Any = "cpu", features: CpuFeatures | None = None) -> tuple[Any, str]:
    """(torch dtype, reason) that "auto" means on ``device`` ("cpu", "cuda", "cuda:1", a torch
    device or a CUDA ordinal). ``features`` defaults to this machine's CPU."""
    import torch

    name, reason = _auto(device, features)
    return getattr(torch, name), reason


def _auto(device: Any, features: CpuFeatures | None) -> tuple[str, str]:
    kind = _device_type(device)
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "float32", "no CUDA device available"
        if torch.cuda.is_bf16_supported():
            return "bfloat16", f"CUDA device {torch.cuda.get_device_name()} supports bf16"
        return "float32", f"CUDA device {torch.cuda.get_device_name()} has no bf16 support"
    if kind != "cpu":
        return "float32", f"no bf16 detection for device {kind!r}"
    return cpu_dtype(features if features is not None else read_cpu_features())


def resolve_dtype(
    choice: Any = "auto", device: Any = "cpu", features: CpuFeatures | None = None
) -> DtypeChoice:
    """A user's dtype choice resolved for ``device``.

    ``choice``: one of `DTYPE_CHOICES` or a torch dtype; None means `DEFAULT_DTYPE`
    ("auto"). ValueError, listing the valid choices, for anything else.
    """
    key = dtype_name(DEFAULT_DTYPE if choice is None else choice, allow_auto=True)
    if key == "auto":
        name, reason = _auto(device, features)
        return DtypeChoice(name, "auto", reason)
    if key == "int8":
        from .quantize import int8_unavailable

        why = int8_unavailable(device)
        if why:
            raise DtypeUnavailableError(why)
    caveat = None
    if key == "bfloat16" and _device_type(device) == "cpu":
        features = features if features is not None else read_cpu_features()
        if features is not None and features.arch != "unknown" and not features.bf16_flags:
            caveat = cpu_dtype(features)[1]
    return DtypeChoice(key, key, "as asked", caveat)


def dtype_name(value: Any, allow_auto: bool = False) -> str:
    """The name in `DTYPES` of ``value``: a name (any case; "auto" too with ``allow_auto``)
    or a torch dtype. ValueError, listing the valid choices, for anything else."""
    choices = DTYPE_CHOICES if allow_auto else tuple(DTYPES)
    if not isinstance(value, str):  # a torch dtype
        name = str(value).removeprefix("torch.")
        if name not in DTYPES:
            raise ValueError(f"unsupported dtype {value!r}; valid choices: {', '.join(choices)}")
        return name
    key = value.strip().lower()
    if key not in choices:
        raise ValueError(f"unknown dtype {value!r}; valid choices: {', '.join(choices)}")
    return key


def torch_dtype(value: Any) -> Any:
    """The torch dtype a name in `DTYPES` (or a torch dtype) names (imports torch)."""
    import torch

    return getattr(torch, DTYPES[dtype_name(value)])


def weight_dtype(value: Any) -> Any:
    """The torch dtype to save trained weights in, for a name in `WEIGHT_DTYPES`; ValueError
    listing them for anything else."""
    if not isinstance(value, str) or value not in WEIGHT_DTYPES:
        raise ValueError(f"unknown dtype {value!r}. Valid choices are: {', '.join(WEIGHT_DTYPES)}")
    return torch_dtype(value)


def compute_dtype(encoder: Any) -> str | None:
    """The dtype an encoder's (or a torch module's) weights compute in ("bfloat16", ...,
    "int8" for a model quantized by `llm2vec_retrieval.quantize`); None when it has no
    weights here (a remote encoder)."""
    from .quantize import QUANTIZED_ATTR

    model = getattr(encoder, "model", encoder)
    quantized = getattr(model, QUANTIZED_ATTR, None)
    if isinstance(quantized, str):
        return quantized
    try:
        return str(next(model.parameters()).dtype).removeprefix("torch.")
    except (AttributeError, StopIteration, TypeError):
        return None
