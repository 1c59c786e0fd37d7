"""A producer written independently of accval's kernels, to show how to plug your own implementation.

``pytest suites/kernel --producer accval.examples.torch_producer:inv_rope_fp8_quant`` runs accval's whole
property suite against it. Internally it differs from accval's (one group at a time, quantization by
``unflatten`` and an explicit scale buffer), but it computes the legacy path's numbers: inverse RoPE
rounded to the input dtype, then 1x128 FP8 blocks with ``scale = absmax / 448``, so it declares the
``fp32-div`` recipe and bit-exactness. It is a torch custom op with a fake, so the suite's fake and
opcheck properties run on it too.

Planted defects the suite must fail (``accval/examples/_planted.py``): ``broken_pad`` pads the scale buffer
to ``max(BTM, 4)`` rows; ``broken_fake``'s fake allocates those rows while the real op pads to 4.
"""

from __future__ import annotations

import torch

from ._planted import padded_rows

FP8 = torch.float8_e4m3fn


def _inverse_rope(o, positions, cache, rope_dim, is_neox):
    rows = cache[positions.long()]
    cos, sin = (rows[:, :rope_dim // 2], rows[:, rope_dim // 2:]) if rows.dim() == 2 else (rows[:, 0], rows[:, 1])
    cos, sin = cos[:, None], sin[:, None]
    x = o.clone()
    r = x[..., -rope_dim:].float()
    if is_neox:
        a, b = r.chunk(2, dim=-1)
        new = torch.cat([a * cos + b * sin, b * cos + a * (-sin)], dim=-1)
    else:
        a, b = r[..., 0::2], r[..., 1::2]
        new = torch.empty_like(r)
        new[..., 0::2], new[..., 1::2] = a * cos + b * sin, b * cos + a * (-sin)
    x[..., -rope_dim:] = new.to(o.dtype)
    return x


def _producer(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
              is_neox=True, *, rows=None):
    m, _, d = o.shape
    k = heads_per_group * d
    x = _inverse_rope(o, positions, cos_sin_cache, rope_dim, is_neox).reshape(m, n_groups, k)
    rows = -(-m // 4) * 4 if rows is None else rows
    fp8 = torch.empty((n_groups, m, k), dtype=FP8, device=o.device)
    scale = torch.zeros((n_groups, k // 128, rows), dtype=torch.float32, device=o.device)
    for g in range(n_groups):
        blocks = x[:, g].float().unflatten(-1, (k // 128, 128))  # [M, K/128, 128]
        s = blocks.abs().amax(-1) / torch.full((1,), 448.0, device=o.device)
        q = torch.where(s[..., None] > 0, blocks / torch.where(s > 0, s, 1.0)[..., None], 0.0)
        fp8[g] = q.clamp(-448.0, 448.0).to(FP8).flatten(1)
        scale[g, :, :m] = s.t()
    return fp8, scale


def _fake(o, n_groups, heads_per_group, rows):
    k = heads_per_group * o.shape[2]
    return o.new_empty((n_groups, o.shape[0], k), dtype=FP8), o.new_empty((n_groups, k // 128, rows), dtype=torch.float32)


@torch.library.custom_op("accval_examples::torch_inv_rope_fp8_quant", mutates_args=())
def _op(o: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor, n_groups: int, heads_per_group: int,
        nope_dim: int, rope_dim: int, quant_group_size: int, is_neox: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _producer(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox)


@_op.register_fake
def _(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox):
    return _fake(o, n_groups, heads_per_group, -(-o.shape[0] // 4) * 4)


@torch.library.custom_op("accval_examples::torch_inv_rope_fp8_quant_stale_fake", mutates_args=())
def _stale_fake_op(o: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor, n_groups: int,
                   heads_per_group: int, nope_dim: int, rope_dim: int, quant_group_size: int,
                   is_neox: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _producer(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox)


@_stale_fake_op.register_fake
def _(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox):
    return _fake(o, n_groups, heads_per_group, padded_rows(o.shape[0]))  # the planted defect


def _declare(fn, op):
    fn.accval_recipe = "fp32-div"
    fn.accval_exact = True
    fn.accval_rope_layouts = ("neox", "gptj")
    fn.accval_output = "gmk"
    fn.accval_op = op
    return fn


def inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                       quant_group_size=128, is_neox=True):
    return torch.ops.accval_examples.torch_inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group,
                                                              nope_dim, rope_dim, quant_group_size, is_neox)


def broken_pad(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
               is_neox=True):
    return _producer(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox,
                     rows=padded_rows(o.shape[0]))


def broken_fake(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                is_neox=True):
    return torch.ops.accval_examples.torch_inv_rope_fp8_quant_stale_fake(
        o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox)


_declare(inv_rope_fp8_quant, torch.ops.accval_examples.torch_inv_rope_fp8_quant)
_declare(broken_pad, None)
_declare(broken_fake, torch.ops.accval_examples.torch_inv_rope_fp8_quant_stale_fake)


def wrong_signature(o, positions):
    """Cannot be called with the contract's arguments: the plugin must refuse it before any test."""
    raise AssertionError("never called")
