"""A Triton producer with reciprocal scales (the ``fp32-rcp`` recipe), written in the style engines ship.

One program per (16 tokens, head): it loads the head's rows, loads each rotary element's partner at
``offsets ^ 1`` (GPT-J) or ``offsets -+ rope/2`` (NEOX), rotates in fp32 without rounding to bf16,
takes ``scale = max(absmax, 1e-10) * (1/448)`` per 128-block and divides with Triton's default
division (approximate on a GPU). So it is not bit-exact with the recipe's mirror reference and
declares ``accval_exact = False``; the suite holds it to the graded bounds. Tokens past the last one
write the zero padding rows of the scale buffer. Head dims must be powers of two (one
``tl.arange`` over the head), so it declares 128, 256 and 512. Its op takes the contract's nine
arguments (no ``block_tokens_m``).

``pytest suites/kernel --producer accval.examples.rcp_triton_producer:inv_rope_fp8_quant``. Planted
defects: ``broken_pad`` (scale buffer padded to ``max(BTM, 4)`` rows) and ``broken_fake`` (its fake
allocates those rows; the real op pads to 4).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._planted import padded_rows

FP8 = torch.float8_e4m3fn
AMAX_FLOOR = 1e-10


@triton.jit
def _rcp_quant_kernel(o_ptr, pos_ptr, cs_ptr, fp8_ptr, scale_ptr, M, stride_o_m, stride_o_h, stride_pos,
                      stride_cs, HPG: tl.constexpr, D: tl.constexpr, ROPE: tl.constexpr, IS_NEOX: tl.constexpr,
                      EPS: tl.constexpr, TOKENS: tl.constexpr):
    """Program (TOKENS tokens, one head): a [TOKENS, D] tile, partner loads, per-128-block scales."""
    tokens = tl.program_id(0).to(tl.int64) * TOKENS + tl.arange(0, TOKENS)
    head = tl.program_id(1)
    g = (head // HPG).to(tl.int64)
    h = head % HPG
    NB: tl.constexpr = D // 128
    K: tl.constexpr = HPG * D
    rows_end = (M + 3) // 4 * 4
    live = tokens < M
    offs = tl.arange(0, D)
    row = o_ptr + tokens[:, None] * stride_o_m + head * stride_o_h
    x = tl.load(row + offs[None, :], mask=live[:, None], other=0.0).to(tl.float32)
    r = offs - (D - ROPE)
    is_rope = r >= 0
    if IS_NEOX:
        partner = tl.where(r < ROPE // 2, offs + ROPE // 2, offs - ROPE // 2)
        freq = tl.where(r < ROPE // 2, r, r - ROPE // 2)
        first = r < ROPE // 2
    else:
        partner = offs ^ 1
        freq = r // 2
        first = (r % 2) == 0
    rope_live = live[:, None] & is_rope[None, :]
    xp = tl.load(row + partner[None, :], mask=rope_live, other=0.0).to(tl.float32)
    pos = tl.load(pos_ptr + tokens * stride_pos, mask=live, other=0).to(tl.int64)
    cs = cs_ptr + pos[:, None] * stride_cs + freq[None, :]
    cos = tl.load(cs, mask=rope_live, other=1.0)
    sin = tl.load(cs + ROPE // 2, mask=rope_live, other=0.0)
    rotated = tl.where(first[None, :], x * cos + xp * sin, x * cos - xp * sin)
    y = tl.reshape(tl.where(is_rope[None, :], rotated, x), (TOKENS, NB, 128))
    amax = tl.maximum(tl.max(tl.abs(y), axis=2), EPS)  # [TOKENS, NB]
    scale = amax * (1.0 / 448.0)
    q = tl.clamp(y / scale[:, :, None], -448.0, 448.0)
    out = fp8_ptr + g * M * K + tokens[:, None] * K + h * D + offs[None, :]
    tl.store(out, tl.reshape(q, (TOKENS, D)).to(tl.float8e4nv), mask=live[:, None])
    blocks = tl.arange(0, NB)
    scale_at = scale_ptr + g * (K // 128) * rows_end + (h * NB + blocks)[None, :] * rows_end + tokens[:, None]
    tl.store(scale_at, tl.where(live[:, None], scale, 0.0), mask=(tokens < rows_end)[:, None])


#: tokens per program: few programs for Triton's CPU interpreter (its cost is per program), and a
#: [16, D] tile on a GPU
TOKENS_PER_PROGRAM = 16


def _launch(o, positions, cos_sin_cache, n_groups, heads_per_group, rope_dim, is_neox):
    m, heads, d = o.shape
    k = heads_per_group * d
    if d & (d - 1) or d % 128:
        raise ValueError(f"o: head dim must be a power of two multiple of 128 (128, 256, 512), got {d}")
    if o.stride(2) != 1:
        raise ValueError(f"o: expected a contiguous last dim, got strides {o.stride()}")
    cache = cos_sin_cache.reshape(cos_sin_cache.shape[0], -1)
    fp8 = torch.empty((n_groups, m, k), dtype=FP8, device=o.device)
    scale = torch.empty((n_groups, k // 128, -(-m // 4) * 4), dtype=torch.float32, device=o.device)
    if scale.numel():
        grid = (triton.cdiv(scale.shape[2], TOKENS_PER_PROGRAM), heads)
        _rcp_quant_kernel[grid](
            o, positions, cache, fp8, scale, m, o.stride(0), o.stride(1), positions.stride(0), cache.stride(0),
            HPG=heads_per_group, D=d, ROPE=rope_dim, IS_NEOX=is_neox, EPS=AMAX_FLOOR, TOKENS=TOKENS_PER_PROGRAM,
            num_warps=4)
    return fp8, scale


def _fake(o, n_groups, heads_per_group, rows):
    k = heads_per_group * o.shape[2]
    return o.new_empty((n_groups, o.shape[0], k), dtype=FP8), o.new_empty((n_groups, k // 128, rows), dtype=torch.float32)


@torch.library.custom_op("accval_examples::rcp_triton_quant", mutates_args=())
def _op(o: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor, n_groups: int, heads_per_group: int,
        nope_dim: int, rope_dim: int, quant_group_size: int, is_neox: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch(o, positions, cos_sin_cache, n_groups, heads_per_group, rope_dim, is_neox)


@_op.register_fake
def _(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox):
    return _fake(o, n_groups, heads_per_group, -(-o.shape[0] // 4) * 4)


@torch.library.custom_op("accval_examples::rcp_triton_quant_stale_fake", mutates_args=())
def _stale_fake_op(o: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor, n_groups: int,
                   heads_per_group: int, nope_dim: int, rope_dim: int, quant_group_size: int,
                   is_neox: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch(o, positions, cos_sin_cache, n_groups, heads_per_group, rope_dim, is_neox)


@_stale_fake_op.register_fake
def _(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox):
    return _fake(o, n_groups, heads_per_group, padded_rows(o.shape[0]))  # the planted defect


def _declare(fn, op):
    fn.accval_recipe = "fp32-rcp"
    fn.accval_exact = False
    fn.accval_rope_layouts = ("neox", "gptj")
    fn.accval_head_dims = (128, 256, 512)
    fn.accval_output = "gmk"
    fn.accval_op = op
    return fn


def inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                       quant_group_size=128, is_neox=True):
    return torch.ops.accval_examples.rcp_triton_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim,
                                                      rope_dim, quant_group_size, is_neox)


def broken_pad(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
               is_neox=True):
    fp8, scale = _launch(o, positions, cos_sin_cache, n_groups, heads_per_group, rope_dim, is_neox)
    rows = padded_rows(o.shape[0])
    drifted = scale.new_zeros((scale.shape[0], scale.shape[1], rows))
    drifted[:, :, :o.shape[0]] = scale[:, :, :o.shape[0]]
    return fp8, drifted


def broken_fake(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
                is_neox=True):
    return torch.ops.accval_examples.rcp_triton_quant_stale_fake(o, positions, cos_sin_cache, n_groups, heads_per_group,
                                                                 nope_dim, rope_dim, quant_group_size, is_neox)


_declare(inv_rope_fp8_quant, torch.ops.accval_examples.rcp_triton_quant)
_declare(broken_pad, None)
_declare(broken_fake, torch.ops.accval_examples.rcp_triton_quant_stale_fake)
