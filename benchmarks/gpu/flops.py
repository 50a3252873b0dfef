"""Model FLOPs utilisation (MFU): forward FLOPs per token and the GPU's peak, with sources.

FLOPs are counted by `benchmarks.speed.model_flops` (2 x non-embedding linear parameters per
token, + 4 x T x heads x head_dim per token per layer for QK^T and AV; no lm_head). Gemma 3's
sliding-window layers are counted as full attention (an upper bound on their attention term).
MFU = achieved FLOP/s / dense bf16 peak of the device.
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.speed import model_flops

# Dense (no structured sparsity) bf16 Tensor Core peaks, FLOP/s. The datasheets print the
# sparse figure; dense is half of it.
# - H100 SXM: 1,979 TFLOPS bf16 with sparsity -> 989.4 dense (NVIDIA H100 Tensor Core GPU
#   datasheet, "BFLOAT16 Tensor Core" row; also the H100 whitepaper, table 1).
# - H100 PCIe: 1,513 sparse -> 756 dense; H100 NVL: 1,671 sparse -> 835 dense (same datasheet).
# - H200 (SXM and NVL): 1,979 sparse -> 989.4 dense (NVIDIA H200 Tensor Core GPU datasheet):
#   the same chip as the H100 SXM with more, faster memory.
# - A100 (SXM and PCIe): 312 dense (NVIDIA A100 Tensor Core GPU datasheet, "BFLOAT16 Tensor Core").
# - L40S: 733 sparse -> 366 dense (NVIDIA L40S datasheet).
# Order matters: the first key found in the device name wins ("H100 PCIe" before "H100").
PEAK_BF16_DENSE = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989.4e12),  # torch names the SXM card "NVIDIA H100 80GB HBM3"
    ("H200", 989.4e12),
    ("A100", 312e12),
    ("L40S", 366e12),
)
PEAK_SOURCE = "NVIDIA datasheets (H100, H200, A100, L40S Tensor Core GPU), bf16 Tensor Core, sparse figure / 2"


def peak_flops(device_name: str | None) -> float | None:
    """Dense bf16 peak FLOP/s of a device by its name (torch.cuda.get_device_name), else None."""
    if not device_name:
        return None
    for key, peak in PEAK_BF16_DENSE:
        if key.lower() in device_name.lower():
            return peak
    return None


def throughput(config: dict, lengths: Sequence[int], seconds: float, peak: float | None) -> dict:
    """tokens/s, achieved TFLOP/s and MFU of encoding `lengths` (tokens per text) in `seconds`."""
    f = model_flops(config, lengths)
    achieved = f["total"] / seconds if seconds > 0 else 0.0
    return {
        "tokens": f["tokens"],
        "tok_s": round(f["tokens"] / seconds) if seconds > 0 else None,
        "tflop_s": round(achieved / 1e12, 3),
        "mfu": round(achieved / peak, 4) if peak else None,
        "flops_per_token": round(f["per_token"]),
        "linear_params": f["linear_params"],
    }
