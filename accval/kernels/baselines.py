"""An upstream-style producer: the shape of kernel engines ship, written here as a benchmark row.

What the Triton producers of serving engines typically do: one program per (token, head); the
rotation partner loaded with a second gather, at ``offsets ^ 1`` (GPT-J) or ``offsets +- rope/2``
(NEOX); the scale as a reciprocal multiply ``amax * (1/448)``, amax floored at 1e-10; ``x / scale``
with Triton's default (approximate) division; the rotation in fp32 without rounding to the input
dtype. It writes the producer's buffer contract (``fp8 [G, M, K]``, ``scale [G, K/128, pad4(M)]``
with zero padding rows) but is NOT bit-exact with the legacy path, so nothing but ``accval bench``
calls it; it is not an implementation under test.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .constants import FP8_DTYPE, FP8_E4M3_MAX, QUANT_BLOCK, pad4

#: The amax floor of the upstream producers (a zero block gets a tiny scale instead of 0).
AMAX_FLOOR = 1e-10


@triton.jit
def _upstream_style_kernel(
    o_ptr, pos_ptr, cs_ptr, fp8_ptr, scale_ptr, M, rows_end,
    stride_o_m, stride_o_h, stride_cs_pos, stride_fp8_g, stride_scale_g, stride_scale_b,
    HPG: tl.constexpr, D: tl.constexpr, ROPE: tl.constexpr, IS_NEOX: tl.constexpr, FP8_MAX: tl.constexpr,
    AMAX_FLOOR: tl.constexpr,
):
    """Program (token, head): the head's D elements as a [D/128, 128] tile."""
    m = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    g = head // HPG
    h = head % HPG
    NBH: tl.constexpr = D // 128
    HALF: tl.constexpr = ROPE // 2
    blk = tl.arange(0, NBH)[:, None]
    offs = blk * 128 + tl.arange(0, 128)[None, :]
    scale_ptrs = scale_ptr + g * stride_scale_g + (h * NBH + tl.arange(0, NBH)) * stride_scale_b + m
    if m >= M:  # a padding row of the scale buffer
        tl.store(scale_ptrs, tl.zeros([NBH], dtype=tl.float32), mask=m < rows_end)
        return
    row = o_ptr + m * stride_o_m + head * stride_o_h
    x = tl.load(row + offs).to(tl.float32)
    r = offs - (D - ROPE)
    is_rope = r >= 0
    if IS_NEOX:
        first = r < HALF
        partner = tl.where(first, offs + HALF, offs - HALF)
        freq = tl.where(first, r, r - HALF)
    else:
        first = (r % 2) == 0
        partner = offs ^ 1
        freq = r // 2
    xp = tl.load(row + partner, mask=is_rope, other=0.0).to(tl.float32)
    pos = tl.load(pos_ptr + m).to(tl.int64)
    cos = tl.load(cs_ptr + pos * stride_cs_pos + freq, mask=is_rope, other=1.0)
    sin = tl.load(cs_ptr + pos * stride_cs_pos + HALF + freq, mask=is_rope, other=0.0)
    y = tl.where(is_rope, x * cos + tl.where(first, xp * sin, -xp * sin), x)
    amax = tl.maximum(tl.max(tl.abs(y), axis=1), AMAX_FLOOR)
    scale = amax * (1.0 / FP8_MAX)
    q = tl.clamp(y / scale[:, None], -FP8_MAX, FP8_MAX)
    tl.store(fp8_ptr + g * stride_fp8_g + m * (HPG * D) + h * D + offs, q.to(tl.float8e4nv))
    tl.store(scale_ptrs, scale)


def upstream_style_producer(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, is_neox,
                            fp8=None, scale=None, num_warps=4):
    """Launch :func:`_upstream_style_kernel` (CUDA only; contiguous ``o``, ``[max_pos, rope]`` cache).

    Returns ``(fp8, scale)``, written into ``fp8``/``scale`` when given. A benchmark row only.
    """
    if o.device.type != "cuda":
        raise ValueError(f"upstream_style_producer: expected CUDA tensors (a GPU benchmark row), got {o.device}")
    m, heads, d = o.shape
    if heads != n_groups * heads_per_group or d != nope_dim + rope_dim or o.stride(2) != 1:
        raise ValueError(f"o: expected [M, {n_groups * heads_per_group}, {nope_dim + rope_dim}] with a contiguous "
                         f"last dim, got shape {tuple(o.shape)} strides {o.stride()}")
    if cos_sin_cache.dim() != 2 or cos_sin_cache.shape[1] != rope_dim or cos_sin_cache.stride(1) != 1:
        raise ValueError(f"cos_sin_cache: expected [max_pos, {rope_dim}] with a contiguous last dim, got "
                         f"{tuple(cos_sin_cache.shape)}")
    k = heads_per_group * d
    if fp8 is None:
        fp8 = torch.empty((n_groups, m, k), dtype=FP8_DTYPE, device=o.device)
    if scale is None:
        scale = torch.empty((n_groups, k // QUANT_BLOCK, pad4(m)), dtype=torch.float32, device=o.device)
    rows_end = pad4(m)
    if rows_end:
        _upstream_style_kernel[(rows_end, heads)](
            o, positions, cos_sin_cache, fp8, scale, m, rows_end, o.stride(0), o.stride(1), cos_sin_cache.stride(0),
            fp8.stride(0), scale.stride(0), scale.stride(1), HPG=heads_per_group, D=d, ROPE=rope_dim,
            IS_NEOX=is_neox, FP8_MAX=FP8_E4M3_MAX, AMAX_FLOOR=AMAX_FLOOR, num_warps=num_warps)
    return fp8, scale
