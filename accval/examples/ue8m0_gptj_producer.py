"""A UE8M0 producer for GPT-J (interleaved) RoPE only that returns ``[M, G, K]`` views, as DeepGEMM users do.

It rotates the trailing ``rope_dim`` channels in fp32 and quantizes the fp32 result directly (no
rounding of the rotated values to bf16 first, unlike the legacy path), with power-of-two scales
``2**ceil(log2(max(absmax, 1e-10) / 448))`` (the ``ue8m0`` recipe) stored as fp32. So it is not
bit-exact with the recipe's mirror reference and says so (``accval_exact = False``): the suite holds
it to the graded bounds. It hands back ``fp8`` as an ``[M, G, K]`` view of a ``[G, M, K]`` buffer and
the scales as an ``[M, G, K/128]`` view of a ``[G, K/128, pad4(M)]`` buffer (``accval_output =
"mgk-view"``): the storage is the contract's, which is what a consumer reads.

``pytest suites/kernel --producer accval.examples.ue8m0_gptj_producer:inv_rope_fp8_quant``. Planted defects:
``broken_pad`` (scale storage padded to ``max(BTM, 4)`` rows) and ``broken_fake`` (its fake allocates
those rows; the real op pads to 4).
"""

from __future__ import annotations

import torch

from ._planted import padded_rows

FP8 = torch.float8_e4m3fn
AMAX_FLOOR = 1e-10


def _pow2_ceil(x: torch.Tensor) -> torch.Tensor:
    """Smallest power of two >= x (x > 0), via frexp: x = f * 2**e with f in [0.5, 1)."""
    f, e = torch.frexp(x)
    return torch.ldexp(torch.ones_like(x), torch.where(f == 0.5, e - 1, e))


def _quantize(o, positions, cos_sin_cache, n_groups, heads_per_group, rope_dim, rows):
    m, heads, d = o.shape
    k = heads_per_group * d
    x = o.to(torch.float32, copy=True)
    cs = cos_sin_cache[positions.long()].reshape(m, 2, rope_dim // 2)
    cos, sin = cs[:, 0, None, :], cs[:, 1, None, :]
    pairs = x[..., d - rope_dim:].unflatten(-1, (rope_dim // 2, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    x[..., d - rope_dim:] = torch.stack((a * cos + b * sin, b * cos - a * sin), dim=-1).flatten(-2)
    blocks = x.reshape(m, n_groups, k // 128, 128)
    scale = _pow2_ceil(blocks.abs().amax(-1).clamp_min(AMAX_FLOOR) * (1.0 / 448.0))  # [M, G, K/128]
    codes = (blocks / scale[..., None]).clamp(-448.0, 448.0).to(FP8).reshape(m, n_groups, k)
    fp8_buf = torch.empty((n_groups, m, k), dtype=FP8, device=o.device)
    fp8_buf.copy_(codes.transpose(0, 1))
    scale_buf = torch.zeros((n_groups, k // 128, rows), dtype=torch.float32, device=o.device)
    scale_buf[:, :, :m] = scale.permute(1, 2, 0)
    return fp8_buf.transpose(0, 1), scale_buf.permute(2, 0, 1)[:m]


def _check(is_neox, rope_dim, cos_sin_cache):
    if is_neox:
        raise NotImplementedError("ue8m0_gptj_producer: GPT-J (interleaved) RoPE only")
    if cos_sin_cache.shape[-1] * (2 if cos_sin_cache.dim() == 3 else 1) != rope_dim:
        raise ValueError(f"cos_sin_cache: expected rope_dim={rope_dim} columns, got {tuple(cos_sin_cache.shape)}")


def _views_fake(o, n_groups, heads_per_group, rows):
    m, _, d = o.shape
    k = heads_per_group * d
    fp8 = o.new_empty((n_groups, m, k), dtype=FP8).transpose(0, 1)
    scale = o.new_empty((n_groups, k // 128, rows), dtype=torch.float32).permute(2, 0, 1)[:m]
    return fp8, scale


@torch.library.custom_op("accval_examples::ue8m0_gptj_quant", mutates_args=())
def _op(o: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor, n_groups: int, heads_per_group: int,
        nope_dim: int, rope_dim: int, quant_group_size: int, is_neox: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check(is_neox, rope_dim, cos_sin_cache)
    return _quantize(o, positions, cos_sin_cache, n_groups, heads_per_group, rope_dim, -(-o.shape[0] // 4) * 4)


@_op.register_fake
def _(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox):
    return _views_fake(o, n_groups, heads_per_group, -(-o.shape[0] // 4) * 4)


@torch.library.custom_op("accval_examples::ue8m0_gptj_quant_stale_fake", mutates_args=())
def _stale_fake_op(o: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor, n_groups: int,
                   heads_per_group: int, nope_dim: int, rope_dim: int, quant_group_size: int,
                   is_neox: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check(is_neox, rope_dim, cos_sin_cache)
    return _quantize(o, positions, cos_sin_cache, n_groups, heads_per_group, rope_dim, -(-o.shape[0] // 4) * 4)


@_stale_fake_op.register_fake
def _(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox):
    return _views_fake(o, n_groups, heads_per_group, padded_rows(o.shape[0]))  # the planted defect


def _declare(fn, op):
    fn.accval_recipe = "ue8m0"
    fn.accval_exact = False
    fn.accval_rope_layouts = ("gptj",)
    fn.accval_output = "mgk-view"
    fn.accval_amax_floor = AMAX_FLOOR
    fn.accval_op = op
    return fn


def inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                       quant_group_size=128, is_neox=False):
    return torch.ops.accval_examples.ue8m0_gptj_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim,
                                                      rope_dim, quant_group_size, is_neox)


def broken_pad(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
               is_neox=False):
    _check(is_neox, rope_dim, cos_sin_cache)
    return _quantize(o, positions, cos_sin_cache, n_groups, heads_per_group, rope_dim, padded_rows(o.shape[0]))


def broken_fake(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                is_neox=False):
    return torch.ops.accval_examples.ue8m0_gptj_quant_stale_fake(o, positions, cos_sin_cache, n_groups, heads_per_group,
                                                                 nope_dim, rope_dim, quant_group_size, is_neox)


_declare(inv_rope_fp8_quant, torch.ops.accval_examples.ue8m0_gptj_quant)
_declare(broken_pad, None)
_declare(broken_fake, torch.ops.accval_examples.ue8m0_gptj_quant_stale_fake)
