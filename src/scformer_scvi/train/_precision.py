"""Choosing a numerical precision the hardware computes natively."""

from __future__ import annotations

import warnings

import torch


def native_bf16(accelerator: str = "auto") -> bool:
    """Whether the device Lightning picks for ``accelerator`` computes bfloat16 natively.

    GPUs: :func:`torch.cuda.is_bf16_supported`. CPUs: AVX512-BF16 or AMX instructions. Without
    them PyTorch emulates bfloat16 matrix products on the CPU, which measured here about a
    thousand times slower than float32 (0.24 vs 49 GFLOP/s on an AVX2-only EPYC core), while
    a CPU with AVX512-BF16 ran them four times faster than float32.
    """
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if accelerator not in ("auto", "cpu"):
        return False  # other accelerators (mps, tpu): leave the choice to the user
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_precision(precision: int | str | None, accelerator: str = "auto") -> int | str | None:
    """Lightning's ``precision`` with ``"auto"`` resolved, warning on emulated bfloat16.

    Parameters
    ----------
    precision
        ``"auto"``: ``"bf16-mixed"`` where :func:`native_bf16` holds, else ``"32"``. Any other
        value is returned unchanged (``None``: Lightning's default, float32); a bfloat16
        precision on a CPU without native support warns, since training then crawls.
    accelerator
        The ``accelerator`` passed to the trainer.
    """
    if precision == "auto":
        return "bf16-mixed" if native_bf16(accelerator) else "32"
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if str(precision).startswith("bf16") and on_cpu and not native_bf16("cpu"):
        warnings.warn(
            f"precision={precision!r}: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so "
            "PyTorch emulates it, typically 100-1000x slower than float32. Use "
            "precision='auto' (bfloat16 only where it is native) or precision='32'.",
            UserWarning,
            stacklevel=3,
        )
    return precision
