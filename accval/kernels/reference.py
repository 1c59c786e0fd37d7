"""Torch references, with the same signatures as the kernels they check.

Two kinds, named as such (as in docs/contract.md):
  * *mirror* references repeat the kernel's order of operations in fp32 and are compared bit for bit:
    :func:`inv_rope_fp8_quant_ref` is also the legacy two-step path (inverse RoPE in place in the
    input dtype, then 1x128 quantization with ``permute(1, 0, 2)``).
  * *math* references dequantize and compute in float64: :func:`fp8_block_bmm_math_ref`,
    :func:`inverse_rope_math_ref`.
All run on CPU and GPU.
"""

from __future__ import annotations

import torch

from . import provenance
from .constants import FP8_DTYPE, FP8_E4M3_MAX, QUANT_BLOCK, WEIGHT_BLOCK, pad4
from .recipes import block_scales, get_recipe, pack_ue8m0, scale_values


def _cos_sin(cos_sin_cache: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = cos_sin_cache[positions.long()]
    if rows.dim() == 2:
        half = rows.shape[1] // 2
        return rows[:, :half], rows[:, half:]
    return rows[:, 0], rows[:, 1]


def inverse_rope_(o: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor, rope_dim: int,
                  is_neox: bool) -> torch.Tensor:
    """Inverse RoPE in place on ``o[..., -rope_dim:]`` (the legacy ``mla_rope_inplace`` step).

    Computed in fp32 as ``x*cos + x'*(+-sin)`` (two products, one add: what the kernel does with FMA
    contraction off) and stored back in ``o``'s dtype.
    """
    cos, sin = _cos_sin(cos_sin_cache, positions)
    cos, sin = cos[:, None, :], sin[:, None, :]
    r = o[..., o.shape[-1] - rope_dim:].float()
    if is_neox:
        half = rope_dim // 2
        x1, x2 = r[..., :half], r[..., half:]
        out = torch.cat([x1 * cos + x2 * sin, x2 * cos + x1 * (-sin)], dim=-1)
    else:
        x1, x2 = r[..., 0::2], r[..., 1::2]
        out = torch.stack([x1 * cos + x2 * sin, x2 * cos + x1 * (-sin)], dim=-1).flatten(-2)
    o[..., o.shape[-1] - rope_dim:] = out.to(o.dtype)
    return o


def block_scale(amax: torch.Tensor) -> torch.Tensor:
    """``amax / 448`` as a true IEEE division on every device (the ``fp32-div`` recipe's scale)."""
    return block_scales(amax, "fp32-div")


def quantize_1x128_permute102(x: torch.Tensor, recipe="fp32-div") -> tuple[torch.Tensor, torch.Tensor]:
    """``x [M, G, K]`` -> ``fp8 [G, M, K]``, scales ``[G, K/128, pad4(M)]`` (zero padding rows).

    The scales follow ``recipe`` (:mod:`accval.kernels.recipes`): fp32 for the ``fp32-*`` and ``ue8m0``
    recipes, int32 words of packed exponents ``[G, ceil(K/512), pad4(M)]`` for ``ue8m0-packed``.
    Codes are ``RNE(clamp(x / scale, -448, 448))`` with an IEEE division, 0 where the scale is 0.
    """
    r = get_recipe(recipe)
    m, g, k = x.shape
    xg = x.permute(1, 0, 2).float().reshape(g, m, k // QUANT_BLOCK, QUANT_BLOCK)
    amax = xg.abs().amax(dim=-1)
    scale = block_scales(amax, r)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.where(scale[..., None] > 0, xg / safe[..., None], torch.zeros_like(xg))
    fp8 = q.clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(FP8_DTYPE).reshape(g, m, k).contiguous()
    scale_buf = torch.zeros((g, k // QUANT_BLOCK, pad4(m)), dtype=torch.float32, device=x.device)
    scale_buf[:, :, :m] = scale.transpose(1, 2)
    return fp8, (pack_ue8m0(scale_buf) if r.packed else scale_buf)


def inv_rope_fp8_quant_ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                           quant_group_size=QUANT_BLOCK, is_neox=True, *, block_tokens_m=None, check_positions=None,
                           recipe="fp32-div"):
    """Mirror reference of :func:`accval.kernels.inv_rope_fp8_quant`: the legacy two-step path in torch.

    ``recipe`` picks the scale rule and storage (:mod:`accval.kernels.recipes`); the default, ``fp32-div``,
    is the legacy path itself and what accval's kernel computes bit for bit. ``block_tokens_m`` is
    validated and ignored (the reference has no token blocks).
    """
    from .inv_rope_fp8_quant import validate_producer_args

    p = validate_producer_args(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                               quant_group_size, is_neox, block_tokens_m=block_tokens_m, check_positions=check_positions)
    x = inverse_rope_(o.clone(), positions, cos_sin_cache, rope_dim, is_neox)
    r = get_recipe(recipe)
    out = quantize_1x128_permute102(x.reshape(p.m, n_groups, p.k), r)
    provenance.record("producer", "torch-reference", f"torch-{o.device.type}", recipe=r.name)
    return out


def inverse_rope_math_ref(o, positions, cos_sin_cache, rope_dim, is_neox):
    """Math reference: inverse RoPE in float64, no rounding to the input dtype."""
    x = o.double().clone()
    cos, sin = _cos_sin(cos_sin_cache.double(), positions)
    cos, sin = cos[:, None, :], sin[:, None, :]
    r = x[..., x.shape[-1] - rope_dim:]
    if is_neox:
        half = rope_dim // 2
        x1, x2 = r[..., :half].clone(), r[..., half:].clone()
        r[..., :half], r[..., half:] = x1 * cos + x2 * sin, x2 * cos - x1 * sin
    else:
        x1, x2 = r[..., 0::2].clone(), r[..., 1::2].clone()
        r[..., 0::2], r[..., 1::2] = x1 * cos + x2 * sin, x2 * cos - x1 * sin
    return x


def dequantize_activations(fp8: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``fp8 [G, M, K]`` with scales ``[G, K/128, >=M]`` (fp32, or int32 packed UE8M0) -> float64 ``[G, M, K]``."""
    g, m, k = fp8.shape
    s = scale_values(scale, k // QUANT_BLOCK)[:, :, :m].transpose(1, 2).double()  # [G, M, K/128]
    return (fp8.to(torch.float32).double().reshape(g, m, k // QUANT_BLOCK, QUANT_BLOCK) * s[..., None]).reshape(g, m, k)


def dequantize_weight(w_fp8: torch.Tensor, w_scale: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    """``w_fp8 [G, N, K]`` with ``w_scale [G, N/128, K/128]`` -> ``[G, N, K]`` in ``dtype``."""
    s = w_scale.repeat_interleave(WEIGHT_BLOCK, dim=1).repeat_interleave(WEIGHT_BLOCK, dim=2)
    return (w_fp8.to(torch.float32) * s).to(dtype) if dtype != torch.float64 else w_fp8.double() * s.double()


def fp8_block_bmm_math_ref(a, a_scale, b, b_scale) -> torch.Tensor:
    """Math reference of the consumer: dequantize both sides, float64 batched matmul ``[G, M, N]``."""
    return torch.bmm(dequantize_activations(a, a_scale), dequantize_weight(b, b_scale).transpose(1, 2))


def fp8_block_bmm_abs_ref(a, a_scale, b, b_scale) -> torch.Tensor:
    """``|A| @ |B|^T`` in float64: the scale of the accumulation error bound for each output."""
    return torch.bmm(dequantize_activations(a, a_scale).abs(), dequantize_weight(b, b_scale).abs().transpose(1, 2))
