"""128x128 block FP8 quantization of weights (how DeepSeek-V4 checkpoints store ``o_a_proj``)."""

from __future__ import annotations

import torch

from . import provenance
from .constants import FP8_DTYPE, FP8_E4M3_MAX, WEIGHT_BLOCK
from .reference import block_scale
from .validation import check_tensor


def quantize_weight_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``w [G, N, K]`` (bf16/fp16/fp32) -> ``(w_fp8 [G, N, K] e4m3fn, w_scale [G, N/128, K/128] fp32)``.

    ``w_scale = absmax / 448`` per 128x128 block (0 for an all-zero block); N and K must be
    multiples of 128.
    """
    check_tensor("w", w, dtypes=(torch.bfloat16, torch.float16, torch.float32), ndim=3)
    g, n, k = w.shape
    if n % WEIGHT_BLOCK or k % WEIGHT_BLOCK or n == 0 or k == 0:
        raise ValueError(f"w: expected N and K positive multiples of {WEIGHT_BLOCK}, got shape {tuple(w.shape)}")
    blocks = w.float().reshape(g, n // WEIGHT_BLOCK, WEIGHT_BLOCK, k // WEIGHT_BLOCK, WEIGHT_BLOCK)
    amax = blocks.abs().amax(dim=(2, 4))
    scale = block_scale(amax)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))[:, :, None, :, None]
    q = torch.where(scale[:, :, None, :, None] > 0, blocks / safe, torch.zeros_like(blocks))
    w_fp8 = q.clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(FP8_DTYPE).reshape(g, n, k).contiguous()
    provenance.record("quantize_weight", "torch", f"torch-{w.device.type}")
    return w_fp8, scale.contiguous()
