"""The producer: fused inverse RoPE + 1x128 block FP8 quantization (DeepSeek-V4 ``o_a_proj`` input).

Reads the attention output ``o [M, G*hpg, D]``, undoes the rotary embedding on the trailing
``rope_dim`` channels of every head at each token's position, and quantizes each 128-element block
of the per-group row ``[hpg*D]`` to float8_e4m3fn with one fp32 scale.

Output contract (what the consumer relies on; ``suites/kernel/test_contract.py`` checks every line):
  * ``fp8``   ``[G, M, K]`` float8_e4m3fn, contiguous, strides ``(M*K, K, 1)``, K = hpg*D; no padding.
  * ``scale`` ``[G, K/128, pad4(M)]`` float32, contiguous, token index innermost; rows
    ``M..pad4(M)-1`` are zero. ``scale = absmax / 448`` per block (0 for an all-zero block).
  * ``q = clamp(y / scale, -448, 448)`` rounded to nearest even, ``y`` the roped value rounded to
    the input dtype (the legacy path rotates in place in that dtype before quantizing).

Layout: top to bottom, the kernels (a straight one for one token per program, a loop for
``BLOCK_TOKENS_M > 1``), the dispatch table, the launcher, then the torch custom op and its fake.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import triton
import triton.language as tl

from . import _platform, host, provenance
from .constants import FP8_DTYPE, FP8_E4M3_MAX, QUANT_BLOCK, SUPPORTED_HEAD_DIMS, cdiv, pad4
from .fp8_rounding import div_rn_by, negated, round_through, to_fp8_e4m3, to_fp8_e4m3_pairs
from .validation import check_bool, check_int, check_optional_bool, check_positions_in_range, check_same_device, check_tensor

_TL_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}


@triton.jit
def _absmax_nan(a, b):
    """Combine of a NaN-propagating max (``tl.max`` drops NaNs; torch's ``amax`` keeps them)."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _nanmax(a, AXIS: tl.constexpr, SOFTWARE: tl.constexpr):
    """``max`` of ``a`` along ``AXIS``, NaN where any element is NaN (what torch's ``amax`` gives).

    On the GPU a NaN-propagating max tree (``max.NaN``); the interpreter runs custom reductions one
    element at a time, so there it takes ``tl.max`` and a NaN flag instead (same values).
    """
    if SOFTWARE:
        amax = tl.max(a, axis=AXIS)
        has_nan = tl.max((a != a).to(tl.int32), axis=AXIS) > 0
        amax = tl.where(has_nan, float("nan"), amax)
    else:
        amax = tl.reduce(a, AXIS, _absmax_nan)
    return amax


@triton.jit
def _block_absmax(y, SOFTWARE: tl.constexpr):
    """``max |y|`` over the last axis of a 3-d tile, NaN if any element is NaN."""
    return _nanmax(tl.abs(y), 2, SOFTWARE)


@triton.jit
def _unpack_pairs(w, O_DTYPE: tl.constexpr):
    """The two elements of each pair word ``w`` (the first at the lower address), as fp32."""
    if O_DTYPE == tl.float32:
        first = (w & 0xFFFFFFFF).to(tl.int32).to(tl.float32, bitcast=True)
        second = (w >> 32).to(tl.int32).to(tl.float32, bitcast=True)
    elif O_DTYPE == tl.bfloat16:  # a bf16 is the top half of the fp32 of the same value
        first = (w << 16).to(tl.float32, bitcast=True)
        second = (w & -65536).to(tl.float32, bitcast=True)
    else:
        first = (w & 0xFFFF).to(tl.int16).to(O_DTYPE, bitcast=True).to(tl.float32)
        second = (w >> 16).to(tl.int16).to(O_DTYPE, bitcast=True).to(tl.float32)
    return first, second


#: NEOX programs of at most this many rows (tokens x heads) rotate the rope slice in a tile of its own
#: (``ROPE_APART``), in launches of at least :data:`ROPE_APART_MIN_PROGRAMS` programs (:func:`rope_apart`)
ROPE_APART_MAX_ROWS = 2
#: Against the rows' tile in one process on an H200 (reports/kernel/speed-probe-neox-rope-apart-NVIDIA_H200-
#: 2026-12-03-s17call6.json, two timings each, same bits): faster from 4096 programs (dep8 M=64, 2 heads per
#: program: 10.7/10.9 vs 10.8/11.2 us; dep8 M=256, 16384 programs: 22.9/23.0 vs 24.2/24.3; tep8 M=1024, 8192:
#: 15.0/14.9 vs 15.8/15.7), even at 1024 (tep8 M=64, 1 head: 6.75/6.82 vs 6.75/6.85), slower at 2048 (tep8
#: M=256: 8.70/8.77 vs 8.48/8.54): part of one wave, where the slice's own reduction lengthens each program.
#: accval bench, tep8 M=256 NEOX against the upstream-style kernel, median us: with this rule 8.2 vs 8.3 and
#: 8.5 vs 8.5 (reports/bench/NVIDIA_H200-2026-12-03-083706, -083808); apart, the three runs before it the same
#: day 8.6 vs 8.4, 8.5 vs 8.3, 8.4 vs 8.3 (-075737, -081156, -081423).
ROPE_APART_MIN_PROGRAMS = 4096
#: Not taken: the slice as its two halves (two [R, ROPE/2] tiles, no partner load, cos and sin once per
#: frequency; commit fa092ea), against this kernel in one process (reports/kernel/speed-probe-wave-NVIDIA_H200-
#: 2026-12-03-s20call2.json, "tree" vs "before", two timings each, same bits): dep8 M=256 23.33/23.36 vs
#: 23.01/23.01 us, tep8 M=1024 15.10/15.04 vs 15.07/14.85, dep8 M=64 10.69/11.14 vs 10.88/10.94.
#: The same probe on tep8 M=64 NEOX (1024 one-warp programs, part of one wave), where this kernel trails
#: the upstream-style one in accval bench: every launch tried took 6.46-6.69 us (apart or not, an int32
#: index, 1 head with 2 or 4 warps, and variants with the exact divisions replaced by inexact ones) against
#: 6.27-6.46 for the upstream-style kernel at 1 and 4 warps; timing one launch twice differed by up to 0.16.
#: Two accval bench runs with both rows timed twice (reports/bench/NVIDIA_H200-2026-12-04-053241, -053349) put
#: tep8 NEOX M=64 0.06-0.16 us behind, the row timed twice 0.06 apart. What Triton 3.6 makes of that launch
#: (scripts/kernel_ir.py --producer, reports/kernel/kernel-ir-producer-triton3.6-cpu-2026-12-04-s27.log): 592 SASS
#: instructions against the upstream-style kernel's 360; inexact divisions take 152 of them out (the exact ones'
#: slow paths among them), the unrounded rotation 40 (neither is bit-exact). In a launch of one partial wave one
#: program's latency is the time. A launch of one program per (token, head, 1 or 2 blocks), the rope branch
#: taken by the last block's program only, was slower at every M (reports/kernel/producer-block-split-
#: NVIDIA_H200-2026-12-04-s26call5/; same bits; tep8 M=64 7.0 us).


@triton.jit
def _quant_tokens(
    m, head, o_ptr, pos_ptr, cs_ptr, fp8_ptr, scale_ptr,
    M, rows_end, stride_pos,
    stride_o_m, stride_o_h, stride_cs_pos, stride_cs_sin, stride_cs_i,
    stride_fp8_g, stride_fp8_m, stride_scale_g, stride_scale_b,
    HPG: tl.constexpr, D: tl.constexpr, ROPE: tl.constexpr, IS_NEOX: tl.constexpr,
    NBH_P2: tl.constexpr, IN_DTYPE: tl.constexpr, INDEX_DTYPE: tl.constexpr,
    FP8_MAX: tl.constexpr, SOFTWARE: tl.constexpr, PAIR_WORD: tl.constexpr, ROPE_APART: tl.constexpr,
):
    """Quantize rows ``(m[r], head[r])`` (two [R] vectors: tokens and heads), [R, D/128, ..] tiles.

    Each row is read once, with contiguous (vectorized) loads. NEOX reads the rotation partner
    ``r +- ROPE/2`` with a second load of the same row (L1-resident). GPT-J's pairs are adjacent:
    with ``PAIR_WORD`` (an integer type twice the input's width; the launcher picks it where the row
    and the output are aligned to a pair) each pair is loaded as one word and its two elements taken
    apart with shifts, so the whole computation stays in one [R, D/128, 64] layout and the codes are
    stored as 16-bit words. Without it (a row not aligned to a pair) the row is viewed as
    ``[.., 64, 2]`` and split in registers (a layout exchange between threads). A partner load at
    ``r ^ 1`` has no contiguity the compiler can prove: scalar loads, 2.2x the time of NEOX on an
    H200 (``PRODUCER_LAYOUT_MEASUREMENT``).
    """
    NBH: tl.constexpr = D // 128
    HALF: tl.constexpr = ROPE // 2
    head = head.to(INDEX_DTYPE)
    g3 = (head // HPG)[:, None, None]
    h3 = (head % HPG)[:, None, None]
    m3 = m[:, None, None]
    j = tl.arange(0, NBH_P2)[None, :, None]
    d = j * 128 + tl.arange(0, 128)[None, None, :]
    live = (j < NBH) & (m3 < M)
    row_off = m3 * stride_o_m + head[:, None, None] * stride_o_h
    fp8_row = fp8_ptr + g3 * stride_fp8_g + m3 * stride_fp8_m + h3 * D
    if IS_NEOX:
        if ROPE_APART:
            # The rope slice (the last ROPE elements, inside the head's last block) rotated in a tile of its
            # own, [R, ROPE_P2]: the partner, cos and sin loads and the rotation cost each thread ROPE/32
            # elements instead of D/32, and the row's tile takes the slice's amax in (Triton 3.6, sm90: 548
            # -> 427 PTX instructions for one head, 875 -> 749 for two). With more rows the two tiles'
            # registers add up (96 -> 128 at 4 heads): the rows then rotate in the row's tile. When it is
            # taken: :func:`rope_apart`.
            ROPE_P2: tl.constexpr = 128 if ROPE > 64 else 64 if ROPE > 32 else 32 if ROPE > 16 else 16
            is_rope = d >= D - ROPE
            x = tl.load(o_ptr + row_off + d, mask=live & ~is_rope, other=0.0).to(tl.float32)
            m2 = m[:, None]
            rr = tl.arange(0, ROPE_P2)[None, :]
            rope_live = (m2 < M) & (rr < ROPE)
            first = rr < HALF
            partner = tl.where(first, rr + HALF, rr - HALF)
            freq = tl.where(first, rr, rr - HALF)
            rope_row = o_ptr + m2 * stride_o_m + head[:, None] * stride_o_h + (D - ROPE)
            xr = tl.load(rope_row + rr, mask=rope_live, other=0.0).to(tl.float32)
            xp = tl.load(rope_row + partner, mask=rope_live, other=0.0).to(tl.float32)
            pos = tl.load(pos_ptr + m * stride_pos, mask=m < M, other=0).to(INDEX_DTYPE)[:, None]
            cs_row = cs_ptr + pos * stride_cs_pos + freq * stride_cs_i
            cos = tl.load(cs_row, mask=rope_live, other=1.0)
            sin = tl.load(cs_row + stride_cs_sin, mask=rope_live, other=0.0)
            # Inverse rotation = forward rotation with -sin: first of a pair x*cos + x'*sin, second x*cos - x'*sin
            # (negated: a true -sin, whose -0.0 at sin = 0 keeps the sign of x*cos's zero as torch keeps it).
            yr = round_through(xr * cos + xp * tl.where(first, sin, negated(sin)), IN_DTYPE, SOFTWARE)  # [R, ROPE_P2]
            amax_rope = _nanmax(tl.abs(yr), 1, SOFTWARE)  # [R]; padding lanes are 0
            last = tl.arange(0, NBH_P2)[None, :] == NBH - 1
            # [R, NBH_P2]; NaN when the block holds a NaN (the rope lanes of the row's tile are 0)
            amax_rows = _block_absmax(x, SOFTWARE)
            amax = tl.where(last, _absmax_nan(amax_rows, amax_rope[:, None]), amax_rows)
            # the last block's scale in the slice's layout: the same amax (adding the other blocks' zeros is
            # exact and keeps a NaN), the same division as the row's below
            amax_last = _absmax_nan(tl.sum(tl.where(last, amax_rows, 0.0), axis=1), amax_rope)
            scale_r = tl.math.div_rn(amax_last, FP8_MAX)[:, None]
            # A NaN or zero scale fails "> 0": the block's codes are 0 (the legacy path's torch.where).
            q_r = tl.where(scale_r > 0, div_rn_by(yr, tl.where(scale_r > 0, scale_r, 1.0), SOFTWARE), 0.0)
            rope_fp8 = fp8_ptr + (head // HPG)[:, None] * stride_fp8_g + m2 * stride_fp8_m + (head % HPG)[:, None] * D
            tl.store(rope_fp8 + (D - ROPE) + rr, to_fp8_e4m3(q_r, FP8_MAX, SOFTWARE), mask=rope_live)
            scale = tl.math.div_rn(amax, FP8_MAX)
            safe = tl.where(scale > 0, scale, 1.0)
            q = tl.where(scale[:, :, None] > 0, div_rn_by(x, safe[:, :, None], SOFTWARE), 0.0)
            tl.store(fp8_row + d, to_fp8_e4m3(q, FP8_MAX, SOFTWARE), mask=live & ~is_rope)
        else:
            x = tl.load(o_ptr + row_off + d, mask=live, other=0.0).to(tl.float32)
            pos = tl.load(pos_ptr + m * stride_pos, mask=m < M, other=0).to(INDEX_DTYPE)[:, None, None]
            r = d - (D - ROPE)
            is_rope = r >= 0
            rope_live = live & is_rope
            first = r < HALF
            partner = tl.where(first, r + HALF, r - HALF)
            freq = tl.where(first, r, r - HALF)
            xp = tl.load(o_ptr + row_off + tl.where(is_rope, D - ROPE + partner, d), mask=rope_live, other=0.0).to(tl.float32)
            cs_row = cs_ptr + pos * stride_cs_pos + freq * stride_cs_i
            cos = tl.load(cs_row, mask=rope_live, other=1.0)
            sin = tl.load(cs_row + stride_cs_sin, mask=rope_live, other=0.0)
            # Inverse rotation = forward rotation with -sin: first of a pair x*cos + x'*sin, second x*cos - x'*sin.
            rot = x * cos + xp * tl.where(first, sin, negated(sin))
            y = tl.where(is_rope, round_through(rot, IN_DTYPE, SOFTWARE), x)
            amax = _block_absmax(y, SOFTWARE)  # [R, NBH_P2]; NaN when the block holds a NaN
            scale = tl.math.div_rn(amax, FP8_MAX)
            # A NaN or zero scale fails "> 0": the block's codes are 0 (the legacy path's torch.where).
            safe = tl.where(scale > 0, scale, 1.0)
            q = tl.where(scale[:, :, None] > 0, div_rn_by(y, safe[:, :, None], SOFTWARE), 0.0)
            tl.store(fp8_row + d, to_fp8_e4m3(q, FP8_MAX, SOFTWARE), mask=live)
    else:
        pair = j * 64 + tl.arange(0, 64)[None, None, :]  # pair index within the head
        if PAIR_WORD is not None:
            w = tl.load((o_ptr + row_off).to(tl.pointer_type(PAIR_WORD)) + pair, mask=live, other=0)
            x_even, x_odd = _unpack_pairs(w, o_ptr.dtype.element_ty)
        else:
            x = tl.load(o_ptr + row_off + d, mask=live, other=0.0).to(tl.float32)
            x_even, x_odd = tl.split(tl.reshape(x, [x.shape[0], NBH_P2, 64, 2]))
        pos = tl.load(pos_ptr + m * stride_pos, mask=m < M, other=0).to(INDEX_DTYPE)[:, None, None]
        fp = pair - (D - ROPE) // 2  # frequency index of the pair, negative outside the rope slice
        pair_rope = fp >= 0
        pair_live = live & pair_rope
        cs_row = cs_ptr + pos * stride_cs_pos + fp * stride_cs_i
        cos = tl.load(cs_row, mask=pair_live, other=1.0)
        sin = tl.load(cs_row + stride_cs_sin, mask=pair_live, other=0.0)
        y_even = tl.where(pair_rope, round_through(x_even * cos + x_odd * sin, IN_DTYPE, SOFTWARE), x_even)
        y_odd = tl.where(pair_rope, round_through(x_odd * cos + x_even * negated(sin), IN_DTYPE, SOFTWARE), x_odd)
        amax = _nanmax(tl.maximum(tl.abs(y_even), tl.abs(y_odd), propagate_nan=tl.PropagateNan.ALL), 2, SOFTWARE)
        scale = tl.math.div_rn(amax, FP8_MAX)
        safe = tl.where(scale > 0, scale, 1.0)[:, :, None]
        q_even = tl.where(scale[:, :, None] > 0, div_rn_by(y_even, safe, SOFTWARE), 0.0)
        q_odd = tl.where(scale[:, :, None] > 0, div_rn_by(y_odd, safe, SOFTWARE), 0.0)
        if PAIR_WORD is not None:
            # each pair's two codes as one 16-bit word, stored with the row's own (contiguous) layout
            tl.store(fp8_row.to(tl.pointer_type(tl.int16)) + pair, to_fp8_e4m3_pairs(q_even, q_odd, FP8_MAX, SOFTWARE),
                     mask=live)
        else:
            q8 = tl.join(to_fp8_e4m3(q_even, FP8_MAX, SOFTWARE), to_fp8_e4m3(q_odd, FP8_MAX, SOFTWARE))
            tl.store(fp8_row + d, tl.reshape(q8, [q8.shape[0], NBH_P2, 128]), mask=live)
    j2 = tl.arange(0, NBH_P2)[None, :]
    m2 = m[:, None]
    g2 = (head // HPG)[:, None]
    h2 = (head % HPG)[:, None]
    tl.store(scale_ptr + g2 * stride_scale_g + (h2 * NBH + j2) * stride_scale_b + m2, scale,
             mask=(j2 < NBH) & (m2 < rows_end))


@triton.jit
def _inv_rope_fp8_quant_straight(
    o_ptr, pos_ptr, cs_ptr, fp8_ptr, scale_ptr, M, rows_end, stride_pos,
    stride_o_m, stride_o_h, stride_cs_pos, stride_cs_sin, stride_cs_i,
    stride_fp8_g, stride_fp8_m, stride_scale_g, stride_scale_b,
    HPG: tl.constexpr, D: tl.constexpr, ROPE: tl.constexpr, IS_NEOX: tl.constexpr,
    NBH_P2: tl.constexpr, IN_DTYPE: tl.constexpr, INDEX_DTYPE: tl.constexpr,
    FP8_MAX: tl.constexpr, SOFTWARE: tl.constexpr, PAIR_WORD: tl.constexpr, ROPE_APART: tl.constexpr,
    HEADS: tl.constexpr,
):
    """BLOCK_TOKENS_M == 1: program (token, HEADS consecutive heads), no loop."""
    m = tl.program_id(0).to(INDEX_DTYPE) + tl.zeros([HEADS], dtype=INDEX_DTYPE)
    head = tl.program_id(1) * HEADS + tl.arange(0, HEADS)
    _quant_tokens(m, head, o_ptr, pos_ptr, cs_ptr, fp8_ptr, scale_ptr, M, rows_end, stride_pos,
                  stride_o_m, stride_o_h, stride_cs_pos, stride_cs_sin, stride_cs_i,
                  stride_fp8_g, stride_fp8_m, stride_scale_g, stride_scale_b,
                  HPG, D, ROPE, IS_NEOX, NBH_P2, IN_DTYPE, INDEX_DTYPE, FP8_MAX, SOFTWARE, PAIR_WORD, ROPE_APART)


@triton.jit
def _inv_rope_fp8_quant_loop(
    o_ptr, pos_ptr, cs_ptr, fp8_ptr, scale_ptr, M, rows_end, stride_pos,
    stride_o_m, stride_o_h, stride_cs_pos, stride_cs_sin, stride_cs_i,
    stride_fp8_g, stride_fp8_m, stride_scale_g, stride_scale_b,
    HPG: tl.constexpr, D: tl.constexpr, ROPE: tl.constexpr, IS_NEOX: tl.constexpr,
    NBH_P2: tl.constexpr, IN_DTYPE: tl.constexpr, INDEX_DTYPE: tl.constexpr,
    FP8_MAX: tl.constexpr, SOFTWARE: tl.constexpr, PAIR_WORD: tl.constexpr, ROPE_APART: tl.constexpr,
    BTM: tl.constexpr, SUB: tl.constexpr, STAGES: tl.constexpr,
):
    """BLOCK_TOKENS_M > 1: program (token block, head) loops over its BTM tokens, SUB at a time.

    The last block can overshoot ``rows_end`` (= pad4(M)) when pad4(M) % BTM != 0; every store is
    masked to ``m < rows_end`` (scales) and ``m < M`` (fp8), so the loop never writes past them.
    """
    m0 = tl.program_id(0).to(INDEX_DTYPE) * BTM
    for t in tl.range(0, BTM, SUB, num_stages=STAGES):
        _quant_tokens(m0 + t + tl.arange(0, SUB), tl.program_id(1) + tl.zeros([SUB], dtype=tl.int32), o_ptr, pos_ptr, cs_ptr, fp8_ptr, scale_ptr,
                      M, rows_end, stride_pos, stride_o_m, stride_o_h, stride_cs_pos, stride_cs_sin, stride_cs_i,
                      stride_fp8_g, stride_fp8_m, stride_scale_g, stride_scale_b,
                      HPG, D, ROPE, IS_NEOX, NBH_P2, IN_DTYPE, INDEX_DTYPE, FP8_MAX, SOFTWARE, PAIR_WORD, ROPE_APART)


# ---------------------------------------------------------------------------------------------------
# Dispatch: tokens per program by M, per architecture.


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    block_tokens_m: int
    num_warps: int
    num_stages: int
    #: tokens processed per loop iteration of the loop kernel (the tile's leading dim); divides BTM.
    tokens_per_iter: int = 1
    #: heads per program of the straight kernel (BTM == 1), at most: the launcher takes the largest
    #: power of two <= this that divides the head count, so a program never straddles the last head.
    heads_per_program: int = 1
    #: the straight kernel takes fewer heads per program where more would leave it fewer programs than
    #: this (a launch that small is one partial wave, timed by one program's latency); 0: never
    min_programs: int = 0

    def __post_init__(self):
        for name in ("block_tokens_m", "num_warps", "num_stages", "tokens_per_iter", "heads_per_program"):
            check_int(f"LaunchConfig.{name}", getattr(self, name))
        check_int("LaunchConfig.min_programs", self.min_programs, minimum=0)


def warps_per_program(cfg: LaunchConfig, hb: int) -> int:
    """The warps of a program taking ``hb`` heads (:func:`heads_per_program`): ``cfg.num_warps`` are for
    ``cfg.heads_per_program`` heads, and a straight-kernel program given fewer heads keeps the warps
    per head (at least one warp)."""
    if cfg.block_tokens_m != 1 or hb >= cfg.heads_per_program:
        return cfg.num_warps
    return max(1, cfg.num_warps * hb // cfg.heads_per_program)


def launched_config(cfg: LaunchConfig, n_heads: int, m: int) -> str:
    """``cfg`` as a report names it, with the heads and warps per program a straight-kernel launch over
    ``n_heads`` heads and ``m`` tokens takes from it (the row's counts are upper bounds)."""
    if cfg.block_tokens_m != 1:
        return str(cfg)
    hb = heads_per_program(cfg, n_heads, pad4(m))
    return f"{cfg}: launched {hb} heads, {warps_per_program(cfg, hb)} warps per program"


def heads_per_program(cfg: LaunchConfig, n_heads: int, rows: int) -> int:
    """The heads one straight-kernel program takes over ``rows`` token rows (pad4(M)): the largest power
    of two <= ``cfg.heads_per_program`` dividing ``n_heads`` whose launch keeps ``cfg.min_programs``
    programs (1 for the loop kernel)."""
    if cfg.block_tokens_m != 1:
        return 1
    hb = 1
    while (hb * 2 <= cfg.heads_per_program and n_heads % (hb * 2) == 0
           and rows * (n_heads // (hb * 2)) >= cfg.min_programs):
        hb *= 2
    return hb


#: (min M, config) rows, first match wins. "sm100" is the pull request's B200 tuning; "sm90" was
#: measured on an H100 and an H200 (see ``SM90_DISPATCH_MEASUREMENT``).
DISPATCH_TABLES: dict[str, tuple[tuple[int, LaunchConfig], ...]] = {
    "sm100": (
        (4096, LaunchConfig(32, 2, 3)),
        (2048, LaunchConfig(16, 2, 2)),
        (1024, LaunchConfig(8, 2, 2)),
        (0, LaunchConfig(1, 1, 1)),
    ),
}
DISPATCH_TABLES["sm90"] = (
    (1024, LaunchConfig(1, 1, 1, heads_per_program=4, min_programs=8192)),
    (0, LaunchConfig(1, 1, 1, heads_per_program=2, min_programs=2048)),
)
#: GPT-J on Hopper, pairs read as words and rows split in registers alike: 2 heads per program with 1 warp
#: at every M (SM90_DISPATCH_MEASUREMENT)
DISPATCH_TABLES["sm90-gptj"] = (
    (0, LaunchConfig(1, 1, 1, heads_per_program=2, min_programs=2048)),
)
DISPATCH_TABLES["sm90-gptj-split"] = DISPATCH_TABLES["sm90-gptj"]
#: The interpreter follows the B200 table's thresholds so CPU runs exercise both kernels where the
#: pull request switches, with several heads per straight-kernel program (that path is sm90's).
DISPATCH_TABLES["interpreter"] = DISPATCH_TABLES["sm100"][:-1] + ((0, LaunchConfig(1, 1, 1, heads_per_program=4)),)
SM90_DISPATCH_MEASUREMENT = (
    "reports/bench/NVIDIA_H100_80GB_HBM3-2026-11-25-run1.json (H100 80GB HBM3, torch 2.11, triton 3.6, DSv4-Pro "
    "DEP8 G=8 hpg=16 D=512): one token per program (BTM=1) beats the B200 table at every M, median us: M=1024 96 "
    "vs 134, M=8192 725 vs 976. Then reports/bench/sweep-NVIDIA_H200-2026-11-28.json (NVIDIA H200, same versions; "
    "19 launches x dep8/tep8 x 7 M): each row is the launch with the least worst-case slowdown against the "
    "fastest launch over both shapes at its M: M >= 2048 4 heads per program, 1 warp (<= 5.3% off the best; dep8 "
    "M=8192 555 vs 715 us with 1 head); 256 <= M < 2048 2 heads (<= 5%); M < 256 1 head (<= 4%; at M=64 the best "
    "of all 19 is 11.5 us DEP8, 7.1 us TEP8). Re-measured with both RoPE layouts in "
    "reports/bench/producer-probe-NVIDIA_H200-2026-12-02-call1.json (scripts/producer_probe.py; NVIDIA H200, "
    "torch 2.11, triton 3.6; 11 straight-kernel launches x dep8/tep8 x 7 M): NEOX, 2 heads per program with 1 "
    "warp is within 1.8% of the fastest launch at every M >= 256 on both shapes (dep8 M=8192 539 us, 4 heads 544; "
    "tep8 M=8192 74.8 us, 4 heads 77.4), so one row covers M >= 256; below 256 1 head, 1 warp is within 2.5%. "
    "GPT-J used the same table then: its kernel reads the same bytes with fewer loads (see "
    "PRODUCER_LAYOUT_MEASUREMENT). With the division by the block scales taken as one reciprocal per block and a "
    "Markstein correction (fp8_rounding.div_rn_by), "
    "reports/kernel/speed-probe-division-NVIDIA_H200-2026-12-02-s13call2.json (scripts/speed_probe.py --parts "
    "division; NVIDIA H200, torch 2.11, triton 3.6): 1.1-8.9% faster than a div_rn per element at every shape, "
    "layout and M of 64-8192 (dep8 M=8192 NEOX 513.2 vs 550.0 us, tep8 M=8192 69.5 vs 74.6), codes and scales "
    "bit-identical on randn inputs and on inputs spanning the bf16 range. Then "
    "reports/kernel/speed-probe-producer-NVIDIA_H200-2026-12-02-s13call3.json (same card; 9 straight-kernel "
    "launches at M=64 and 256): 2 heads per program, 1 warp, is the fastest launch wherever it keeps 2048 "
    "programs or more (dep8 M=64 NEOX 10.5 vs 11.2 us with 1 head, M=256 22.4 vs 26.7; tep8 M=256 8.5 vs 8.8), "
    "but at tep8 M=64 (1024 programs with 1 head: part of one wave, timed by one program's latency) 1 head is "
    "faster (6.5 vs 6.7 us): one row, 2 heads per program while at least 2048 programs remain (min_programs). "
    "Then reports/kernel/speed-probe-regs-NVIDIA_H200-2026-12-02-s13call6.json (scripts/speed_probe.py --parts "
    "regs; same card; 2 and 4 heads per program, registers capped at 64/72/80 or not, M 1024-8192, every output "
    "bit-identical): NEOX with 4 heads per program takes 9-12% less time than with 2 where the launch has 16384 "
    "programs or more (dep8 M=8192 439.7 vs 501.9 us, 88% of a same-bytes copy; dep8 M=1024 63.6 vs 69.7; tep8 "
    "M=8192 63.7 vs 69.8); at 8192 programs (tep8 M=2048) 23.4 vs 23.1, within the spread of timing one launch "
    "twice; at 4096 (tep8 M=1024) slower, 15.7 vs 14.9: a row from M=1024 with min_programs 8192 (tep8 M=2048 "
    "takes 4 heads on that tie). GPT-J with 4 heads is 30-40% slower than with 2 (dep8 M=8192 666.6 vs 486.7), so "
    "GPT-J has its own table, 2 heads per program. What Triton 3.6 compiles for sm90 (scripts/kernel_ir.py "
    "--producer, one warp): NEOX 62/68/96 registers at 1/2/4 heads, 2 layout conversions, 0/0/64 bytes of shared "
    "memory; GPT-J 44/64/128 registers, 5/3/3 conversions, 0/1024/2048 bytes: from 2 heads GPT-J exchanges values "
    "through shared memory, and at 4 heads it has 16 one-warp programs per SM to NEOX's 21. Capping registers "
    "(maxnreg 64-80) gained at most 1% (2 heads, 64: dep8 M=8192 NEOX 498.9 vs 501.9) and cost 4 heads 20-125%, "
    "so no launch caps them. Then GPT-J's pairs read as words (PRODUCER_LAYOUT_MEASUREMENT), "
    "reports/kernel/speed-probe-layouts-NVIDIA_H200-2026-12-02-s14call6.json (scripts/speed_probe.py --parts "
    "layouts; same card; 5 straight-kernel launches x both layouts x dep8/tep8 x 5 M, every output bit-identical "
    "to the kernel before): GPT-J is now fastest with 4 heads per program where the launch keeps 16384 programs "
    "or more (dep8 M=8192 448.8 vs 481.8 us with 2; dep8 M=1024 62.7 vs 64.4; tep8 M=8192 64.4 vs 65.0), and "
    "with 2 at 8192 programs (tep8 M=2048 21.8 vs 22.6) and 4096 (tep8 M=1024 14.2 vs 15.6): its own table "
    "is NEOX's with a row from M=2048 that asks 16384 programs of 4 heads (one threshold cannot give tep8 M=1024 "
    "2 heads at 8192 programs and tep8 M=2048 2 heads at 16384). NEOX's launches timed the same as before the change (dep8 "
    "M=8192 4 heads 440.6 vs 445.4). GPT-J rows not aligned to a pair, split in registers (the probe's 'split' "
    "variant), are fastest with 2 heads (dep8 M=8192 608.4 vs 625.9 with 4; tep8 M=8192 80.3 vs 85.4): their "
    "own table, sm90-gptj-split. Then with div_rn_by folding each divisor into its exact range instead of "
    "checking the tile, reports/kernel/speed-probe-layouts-NVIDIA_H200-2026-12-02-s15call3.json (same probe and "
    "card; the check it replaced, against the reciprocal with neither, in ...-s15call1.json): both cost a median "
    "1.6-1.7% of a launch's time, but GPT-J's launches moved: 4 heads with 1 warp went from 448.4 to 467.8 us at "
    "dep8 M=8192 while 8 heads with 2 warps went from 454.5 to 443.8 (tep8 M=8192 62.4 against 66.6; dep8 M=2048 "
    "114.8 against 117.9; dep8 M=1024 60.4 against 63.0); NEOX's 4 heads, 1 warp took 450.0 (442.7 before; "
    "within 1.7%). So GPT-J takes 8 heads with 2 warps from M=1024, and a program given fewer heads (to keep "
    "the programs min_programs asks) keeps 1 warp per 4 heads: tep8 M=2048 2 heads, 1 warp, 21.4 us (8 heads "
    "22.1, 4 heads 22.3), tep8 M=1024 2 heads, 14.3 (4 heads 15.0). What Triton 3.6 compiles for sm90 "
    "(reports/kernel/kernel-ir-producer-triton3.6-cpu-2026-12-02-s15.log): with the fold GPT-J takes 128 registers "
    "at 4 heads, 1 warp (120 with the check) and 96 at 8 heads, 2 warps; NEOX 96 at both; every launch has one "
    "layout conversion (two with the check's reduction). Then with three instructions fewer per element (the "
    "correction's residual negated instead of a select for zero quotients, no clamp before the saturating float8 "
    "conversion, a true negation folded into the fma instead of 0 - x), reports/kernel/speed-probe-trim-"
    "NVIDIA_H200-2026-12-04-s27call1.json (scripts/speed_probe.py --parts wave,layouts --baseline c58bb04's kernel "
    "and fp8_rounding.py; same card and versions; every output bit-identical to the public function's): NEOX's "
    "rows keep their launches (dep8 M=8192 4 heads 455.9 us against 475.1 before; tep8 M=2048 21.8 against 22.0), "
    "and GPT-J is now fastest with 2 heads and 1 warp at every M and shape (dep8 M=8192 429.1 us, 8 heads with 2 "
    "warps 458.6, 4 heads 446.7; dep8 M=2048 113.2 against 116.6; dep8 M=1024 60.1 against 61.2; tep8 M=8192 60.4 "
    "against 64.3), the row the split rows already took: one table for both. Triton 3.6 now gives NEOX's 4-head "
    "program 118 registers (96 before; kernel-ir-producer-triton3.6-cpu-2026-12-04-s27.log); capped at 104 (99 used, "
    "no spill) or 96 (8 bytes spilled) it was no faster (reports/kernel/speed-probe-regs-NVIDIA_H200-2026-12-04-"
    "s27call4.json, same card: dep8 M=8192 475.7 and 455.6 us against 456.7 uncapped; tep8 M=8192 67.6 and 64.8 "
    "against 65.2), and GPT-J's 2 heads capped at 96-112 were 1-7% slower, so still no launch caps them."
)
PRODUCER_LAYOUT_MEASUREMENT = (
    "GPT-J against NEOX, reports/bench/producer-probe-NVIDIA_H200-2026-12-02-call1.json (NVIDIA H200): with the partner "
    "loaded at r ^ 1 and cos/sin at r // 2 (scalar loads: the compiler cannot prove them contiguous) GPT-J took "
    "1192 us at dep8 M=8192 against 539 for NEOX. Splitting the loaded row into even/odd pairs in registers: 580 us "
    "(best launch), still 7% over NEOX, because the 16-byte fp8 store made the row load take 16 elements per thread "
    "while the per-pair cos/sin loads take 4, so the halves were exchanged between threads (4 layout conversions, "
    "shared memory; Triton's TTGIR for sm90). Storing the codes in 8-byte runs then left one conversion "
    "(reports/bench/NVIDIA_H200-2026-12-02-run2.json, GPT-J/NEOX 0.97-1.016 over both shapes and 7 M), but cost "
    "GPT-J 128 registers and 2048 bytes of shared memory at 4 heads per program, where 4 heads made NEOX 12% "
    "faster and GPT-J 30% slower (506.2 us with 2 heads, 669.2 with 4, dep8 M=8192). What ships instead: each "
    "pair is read as one word (32 bits for 16-bit inputs, 64 for fp32) and its halves taken apart with shifts, so "
    "GPT-J stays in one [.., 64] layout from load to store; the 8-byte-run store is gone (scripts/kernel_ir.py "
    "--producer under Triton 3.6, reports/kernel/kernel-ir-producer-triton3.6-cpu-2026-12-02-s14.log: 2 "
    "conversions, 64 bytes of shared memory, 120 registers at 4 heads to NEOX's 96; half NEOX's vector loads in "
    "its PTX). reports/kernel/speed-probe-layouts-NVIDIA_H200-2026-12-02-s14call6.json (scripts/speed_probe.py "
    "--parts layouts; NVIDIA H200, torch 2.11, triton 3.6), dep8 M=8192: GPT-J 448.8 us with 4 heads (481.8 with "
    "2), NEOX 440.6; the register split without the 8-byte runs, which rows not aligned to a pair still take: "
    "608.4 with 2 heads, 20% over the runs' 506.2; outputs bit-identical throughout. The pairs' codes are packed by "
    "to_fp8_e4m3_pairs (one cvt per pair): packing two casts' bytes with shifts was compiled wrong by Triton 3.6 "
    "for sm90 (every other word's low code read 0 on the H200). Keeping the rope slice apart as a second small "
    "tile instead was slower for both layouts (reports/kernel/speed-probe-layouts-rope-slice-NVIDIA_H200-"
    "2026-12-02-s14call1.json: NEOX dep8 M=8192 480.8 us with 4 heads against 448.8 for the kernel before it)."
)


def _arch_key(device: torch.device) -> str:
    if device.type != "cuda":
        return "interpreter"
    return _cuda_arch_key(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _cuda_arch_key(index: int) -> str:
    major, minor = torch.cuda.get_device_capability(index)
    key = f"sm{major}{minor if major < 10 else 0}"
    return key if key in DISPATCH_TABLES else "sm100"


def config_for(m: int, device: torch.device, block_tokens_m: int | None = None,
               tokens_per_iter: int | None = None, heads_per_program: int | None = None, *,
               is_neox: bool = True, pair_words: bool = True) -> LaunchConfig:
    """The launch configuration for ``m`` tokens: the table's, or a forced ``block_tokens_m``.

    A forced ``block_tokens_m == 1`` keeps the table's straight-kernel row for ``m`` (warps, heads per
    program) when the table has one. In the interpreter the loop kernel takes all BTM tokens in one
    iteration by default (the interpreter's cost is per operation, not per element); on the GPU the
    table decides. ``heads_per_program`` overrides the straight kernel's heads per program (fewer than
    the row's keep its warps per head, at least one warp: :func:`warps_per_program`).
    ``is_neox`` picks the layout's table where an architecture has one per layout
    (``DISPATCH_TABLES["<arch>-gptj"]``); ``pair_words=False`` (GPT-J rows split in registers, see
    :func:`pair_word_bits`) that split's table where there is one (``"<arch>-gptj-split"``).
    """
    arch = _arch_key(device)
    if not is_neox:
        for key in ((f"{arch}-gptj-split",) if not pair_words else ()) + (f"{arch}-gptj",):
            if key in DISPATCH_TABLES:
                arch = key
                break
    return _config(m, arch, device.type == "cuda", block_tokens_m, tokens_per_iter, heads_per_program)


@functools.lru_cache(maxsize=4096)
def _config(m, arch, on_cuda, block_tokens_m, tokens_per_iter, heads_per_program) -> LaunchConfig:
    """:func:`config_for` for an architecture key, cached (the host path looks it up on every call)."""
    table = DISPATCH_TABLES[arch]
    if block_tokens_m is not None:
        straight = next((c for min_m, c in table if c.block_tokens_m == 1 and m >= min_m), LaunchConfig(1, 1, 1))
        cfg = straight if block_tokens_m == 1 else LaunchConfig(block_tokens_m, 2, 2)
    else:
        cfg = next(c for min_m, c in table if m >= min_m)
    if heads_per_program is not None:  # forced: taken as it is; fewer heads than the row's, fewer warps
        cfg = dataclasses.replace(cfg, heads_per_program=heads_per_program, min_programs=0,
                                  num_warps=warps_per_program(cfg, heads_per_program))
    if tokens_per_iter is None and not on_cuda:
        tokens_per_iter = cfg.block_tokens_m
    if tokens_per_iter is not None:
        if tokens_per_iter < 1 or cfg.block_tokens_m % tokens_per_iter:
            raise ValueError(f"tokens_per_iter: expected a divisor of block_tokens_m={cfg.block_tokens_m}, got {tokens_per_iter}")
        cfg = dataclasses.replace(cfg, tokens_per_iter=tokens_per_iter)
    return cfg


# ---------------------------------------------------------------------------------------------------
# Validation, allocation, launch.


@dataclasses.dataclass(frozen=True)
class ProducerProblem:
    """A validated producer call: the shapes every implementation agrees on."""

    m: int
    n_groups: int
    heads_per_group: int
    head_dim: int
    nope_dim: int
    rope_dim: int
    is_neox: bool

    @property
    def k(self) -> int:
        return self.heads_per_group * self.head_dim

    @property
    def k_blocks(self) -> int:
        return self.k // QUANT_BLOCK

    def fp8_shape(self) -> tuple[int, int, int]:
        return (self.n_groups, self.m, self.k)

    def scale_shape(self) -> tuple[int, int, int]:
        return (self.n_groups, self.k_blocks, pad4(self.m))


#: The largest ``block_tokens_m`` accepted: 32x the largest any dispatch table uses. Where the
#: interpreter runs a whole token block as one tile ``[BTM, D/128, 128]``, it must stay under Triton's
#: 2**20-element tensor limit (D = 512: BTM <= 2048); larger blocks fail deep inside Triton.
MAX_BLOCK_TOKENS_M = 1024


def validate_producer_args(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                           quant_group_size=QUANT_BLOCK, is_neox=True, *, block_tokens_m=None,
                           check_positions=None) -> ProducerProblem:
    """Check every argument of the producer; raise ValueError/TypeError saying what was expected.

    Everything but the positions' values is layout (types, shapes, strides, dtypes, devices, flags):
    the public function checks it once per layout and keeps the result (``accval.kernels.host``).
    Positions outside ``[0, max_pos)`` make the kernel read outside the cos/sin cache (a crash, or
    garbage). They are data, read on every call where they are checked: on the CPU always (cheap,
    and the interpreter would fault), on CUDA only with ``check_positions=True``, because reading
    them costs a host sync per call and cannot run under CUDA graph capture (it raises there); by
    default a CUDA caller vouches for its positions, as engines do for their RoPE kernels.
    ``positions`` may have any stride (the kernel reads it with its stride).
    """
    check_tensor("o", o, dtypes=_TL_DTYPES, ndim=3)
    check_tensor("positions", positions, dtypes=(torch.int32, torch.int64), ndim=1)
    check_tensor("cos_sin_cache", cos_sin_cache, dtypes=(torch.float32,))
    check_same_device(o=o, positions=positions, cos_sin_cache=cos_sin_cache)
    g = check_int("n_groups", n_groups)
    hpg = check_int("heads_per_group", heads_per_group)
    nope = check_int("nope_dim", nope_dim, minimum=0)
    rope = check_int("rope_dim", rope_dim, minimum=2)
    check_int("quant_group_size", quant_group_size)
    check_bool("is_neox", is_neox)
    check_optional_bool("check_positions", check_positions)
    if quant_group_size != QUANT_BLOCK:
        raise ValueError(f"quant_group_size: expected {QUANT_BLOCK} (1x128 blocks), got {quant_group_size}")
    m, heads, d = o.shape
    if heads != g * hpg:
        raise ValueError(f"o: expected {g * hpg} heads (n_groups={g} x heads_per_group={hpg}), got {heads}")
    if d != nope + rope:
        raise ValueError(f"o: expected head dim nope_dim + rope_dim = {nope + rope}, got {d}")
    if d not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"o: expected head dim in {SUPPORTED_HEAD_DIMS}, got {d}")
    if rope % 2 or rope > QUANT_BLOCK or nope % QUANT_BLOCK != QUANT_BLOCK - rope:
        raise ValueError(
            f"rope_dim/nope_dim: expected an even rope_dim <= {QUANT_BLOCK} with nope_dim % {QUANT_BLOCK} == "
            f"{QUANT_BLOCK} - rope_dim (the rope slice inside the head's last quant block), got nope_dim={nope}, rope_dim={rope}"
        )
    if o.stride(2) != 1:
        raise ValueError(f"o: expected the last dim contiguous (stride 1), got strides {o.stride()}")
    if positions.shape[0] != m:
        raise ValueError(f"positions: expected shape ({m},) matching o's M, got {tuple(positions.shape)}")
    half = rope // 2
    if cos_sin_cache.dim() == 2:
        if cos_sin_cache.shape[1] != rope:
            raise ValueError(f"cos_sin_cache: expected [max_pos, {rope}] (cos half then sin half), got {tuple(cos_sin_cache.shape)}")
        if cos_sin_cache.stride(1) != 1:
            raise ValueError(f"cos_sin_cache: expected a contiguous last dim, got strides {cos_sin_cache.stride()}")
    elif cos_sin_cache.dim() == 3:
        if tuple(cos_sin_cache.shape[1:]) != (2, half):
            raise ValueError(f"cos_sin_cache: expected [max_pos, 2, {half}], got {tuple(cos_sin_cache.shape)}")
    else:
        raise ValueError(f"cos_sin_cache: expected [max_pos, {rope}] or [max_pos, 2, {half}], got {tuple(cos_sin_cache.shape)}")
    if block_tokens_m is not None:
        check_int("block_tokens_m", block_tokens_m)
        if block_tokens_m & (block_tokens_m - 1) or block_tokens_m > MAX_BLOCK_TOKENS_M:
            raise ValueError(f"block_tokens_m: expected a power of two from 1 to {MAX_BLOCK_TOKENS_M}, got {block_tokens_m}")
    if check_positions or o.device.type == "cpu":
        check_positions_in_range(positions, cos_sin_cache.shape[0])
    return ProducerProblem(m, g, hpg, d, nope, rope, is_neox)


def cos_sin_strides(cos_sin_cache: torch.Tensor) -> tuple[int, int, int]:
    """(stride per position, offset from cos to sin, stride per frequency) for both cache layouts."""
    if cos_sin_cache.dim() == 2:
        return cos_sin_cache.stride(0), cos_sin_cache.shape[1] // 2, 1
    return cos_sin_cache.stride(0), cos_sin_cache.stride(1), cos_sin_cache.stride(2)


def _runtime_ints(p: ProducerProblem, rows_end: int, o, positions, cos_sin_cache, fp8_stride, scale_stride) -> tuple:
    """The kernels' integer arguments, in their order (after the five pointers)."""
    return (p.m, rows_end, positions.stride(0), o.stride(0), o.stride(1), *cos_sin_strides(cos_sin_cache),
            fp8_stride[0], fp8_stride[1], scale_stride[0], scale_stride[1])


def _rows_on_pair(o: torch.Tensor) -> bool:
    """``o`` starts on a pair of its elements (with even strides, every row of it does)."""
    return o.data_ptr() % (2 * o.element_size()) == 0


def pair_word_bits(p: ProducerProblem, o: torch.Tensor, fp8: torch.Tensor | None = None) -> int:
    """The width of the word GPT-J's kernel loads a rotation pair as, or 0 where the row is split in
    registers instead: for NEOX, on a GPU older than sm89 (the pairs' codes are converted by an sm89
    instruction, ``to_fp8_e4m3_pairs``), and where ``o``'s rows or ``fp8``'s (None: the buffers the
    public function allocates, always aligned) do not start on a pair. Else twice ``o``'s element width."""
    if p.is_neox or (o.device.type == "cuda" and torch.cuda.get_device_capability(o.device) < (8, 9)):
        return 0
    if not _rows_on_pair(o) or o.stride(0) % 2 or o.stride(1) % 2:
        return 0
    if fp8 is not None and (fp8.data_ptr() % 2 or fp8.stride(0) % 2 or fp8.stride(1) % 2):
        return 0
    return 16 * o.element_size()


def producer_launch(p: ProducerProblem, o, positions, cos_sin_cache, fp8, scale, cfg: LaunchConfig, *,
                    rows_end: int | None = None, index_dtype=tl.int64, round_dtype=None,
                    force_rope_apart: bool | None = None) -> tuple | None:
    """``(launcher, grid, tensors, ints)`` of :func:`launch_producer`'s launch, or None when it launches
    nothing (M == 0): ``launcher(grid, tensors, ints)`` launches it (``scripts/host_path.py`` times the pieces)."""
    rows_end = pad4(p.m) if rows_end is None else rows_end
    if rows_end == 0:
        return None
    if fp8.stride(-1) != 1 or scale.stride(-1) != 1:
        raise ValueError(f"fp8/scale: expected buffers whose last dim is contiguous (stride 1), got strides "
                         f"{fp8.stride()} and {scale.stride()}")
    if fp8.device != o.device or scale.device != o.device:  # a direct launch passes addresses unchecked
        raise ValueError(f"fp8/scale: expected buffers on o's device {o.device}, got {fp8.device} and {scale.device}")
    if force_rope_apart is not None:
        check_bool("force_rope_apart", force_rope_apart)
        if force_rope_apart and not p.is_neox:
            raise ValueError("force_rope_apart: expected None or False for the GPT-J layout (is_neox=False: its "
                             "pairs are adjacent, no rope slice is rotated apart), got True")
    launcher, grid = _launch_plan(p, cfg, rows_end, round_dtype or o.dtype, index_dtype, _platform.interpreting(),
                                  pair_word_bits(p, o, fp8), force_rope_apart)
    return (launcher, grid, (o, positions, cos_sin_cache, fp8, scale),
            _runtime_ints(p, rows_end, o, positions, cos_sin_cache, fp8.stride(), scale.stride()))


def launch_producer(p: ProducerProblem, o, positions, cos_sin_cache, fp8, scale, cfg: LaunchConfig, *,
                    rows_end: int | None = None, index_dtype=tl.int64, round_dtype=None,
                    force_rope_apart: bool | None = None) -> None:
    """Launch the producer kernel into caller-provided buffers (strides are taken from them).

    ``rows_end`` is the number of scale rows written (default pad4(M): rows M.. get zero scales);
    ``round_dtype`` the dtype roped values are rounded to (default ``o``'s, as the legacy path).
    The public function always uses the defaults; the defect catalog overrides them.
    ``force_rope_apart`` (NEOX): rotate the rope slice in a tile of its own or not, whatever
    :func:`rope_apart` says (tests compare both ways' bits).
    """
    launch = producer_launch(p, o, positions, cos_sin_cache, fp8, scale, cfg, rows_end=rows_end,
                             index_dtype=index_dtype, round_dtype=round_dtype, force_rope_apart=force_rope_apart)
    if launch is not None:
        launcher, grid, tensors, ints = launch
        launcher(grid, tensors, ints)


def rope_apart(cfg: LaunchConfig, n_heads: int, rows: int, is_neox: bool) -> bool:
    """Whether the NEOX launch ``cfg`` gives over ``rows`` token rows (pad4(M)) and ``n_heads`` rotates the
    rope slice apart from the row's tile (same bits either way): programs of few rows, and for the
    straight kernel (where the threshold was measured) a launch of enough programs; the loop kernel
    (a program takes its tokens in turn; not measured) by its rows per iteration alone."""
    if not is_neox:
        return False
    if cfg.block_tokens_m != 1:
        return cfg.tokens_per_iter <= ROPE_APART_MAX_ROWS
    hb = heads_per_program(cfg, n_heads, rows)
    return hb <= ROPE_APART_MAX_ROWS and rows * (n_heads // hb) >= ROPE_APART_MIN_PROGRAMS


@functools.lru_cache(maxsize=4096)
def _launch_plan(p: ProducerProblem, cfg: LaunchConfig, rows_end: int, round_dtype: torch.dtype, index_dtype,
                 software: bool, pair_bits: int, force_rope_apart: bool | None) -> tuple[host.Launcher, tuple[int, int]]:
    """(launcher, grid) of one launch: everything but the tensors and their strides (``force_rope_apart``
    None: :func:`rope_apart` decides)."""
    btm = cfg.block_tokens_m
    heads = p.n_groups * p.heads_per_group
    hb = heads_per_program(cfg, heads, rows_end)
    grid = (cdiv(rows_end, btm), heads // hb)
    apart = rope_apart(cfg, heads, rows_end, p.is_neox) if force_rope_apart is None else force_rope_apart
    meta = dict(HPG=p.heads_per_group, D=p.head_dim, ROPE=p.rope_dim, IS_NEOX=p.is_neox,
                NBH_P2=triton.next_power_of_2(p.head_dim // QUANT_BLOCK), IN_DTYPE=_TL_DTYPES[round_dtype],
                INDEX_DTYPE=index_dtype, FP8_MAX=FP8_E4M3_MAX, SOFTWARE=software,
                PAIR_WORD={0: None, 32: tl.int32, 64: tl.int64}[pair_bits], ROPE_APART=apart,
                num_warps=warps_per_program(cfg, hb), **_platform.gpu_launch_options())
    if btm == 1:
        return host.Launcher(_inv_rope_fp8_quant_straight, dict(meta, HEADS=hb, num_stages=cfg.num_stages)), grid
    return host.Launcher(_inv_rope_fp8_quant_loop, dict(meta, BTM=btm, SUB=cfg.tokens_per_iter, STAGES=cfg.num_stages)), grid


@functools.lru_cache(maxsize=1024)
def _producer_run(mode: str, cfg: LaunchConfig, n_heads: int, rows: int, is_neox: bool, pair_bits: int) -> provenance.Run:
    """The provenance record of one dispatch (built once per configuration; recording it is a count).
    GPT-J's records say how the rotation pairs were read: as words, or split in registers."""
    hb = heads_per_program(cfg, n_heads, rows)
    facts = dict(kernel="straight" if cfg.block_tokens_m == 1 else "loop", block_tokens_m=cfg.block_tokens_m,
                 tokens_per_iter=cfg.tokens_per_iter, heads_per_program=hb, num_warps=warps_per_program(cfg, hb),
                 num_stages=cfg.num_stages)
    if not is_neox:
        facts["gptj_pairs"] = f"{pair_bits}-bit words" if pair_bits else "split in registers"
    else:
        facts["neox_rope"] = "apart" if rope_apart(cfg, n_heads, rows, is_neox) else "in the row's tile"
    return provenance.Run("producer", "triton", mode, tuple(sorted(facts.items())))


@dataclasses.dataclass(frozen=True, eq=False, slots=True)
class _ProducerPlan:
    """A call whose layout passed :func:`validate_producer_args`, and everything its launch needs but the
    tensors; calling it allocates, launches and records (``accval.kernels.host`` on what a plan stands for)."""

    device: torch.device
    fp8_shape: tuple[int, int, int]
    scale_shape: tuple[int, int, int]
    #: positions are read and checked on every call: on the CPU always, on CUDA when asked
    check_positions: bool
    max_pos: int
    launcher: host.Launcher | None  # None when there is nothing to launch (M == 0)
    grid: tuple[int, int]
    ints: tuple
    record: provenance.Run

    def __call__(self, o, positions, cos_sin_cache):
        fp8 = torch.empty(self.fp8_shape, dtype=FP8_DTYPE, device=self.device)
        scale = torch.empty(self.scale_shape, dtype=torch.float32, device=self.device)
        if self.launcher is not None:
            self.launcher(self.grid, (o, positions, cos_sin_cache, fp8, scale), self.ints, self)
        provenance.emit(self.record)
        return fp8, scale


def _build_plan(p: ProducerProblem, o, positions, cos_sin_cache, block_tokens_m, check_positions) -> _ProducerPlan:
    """The plan of a call :func:`validate_producer_args` has accepted (raises where it cannot run)."""
    mode = _platform.execution_mode(o.device)
    pair_bits = pair_word_bits(p, o)
    cfg = config_for(p.m, o.device, block_tokens_m, is_neox=p.is_neox, pair_words=bool(pair_bits))
    rows_end = pad4(p.m)
    launcher, grid = _launch_plan(p, cfg, rows_end, o.dtype, tl.int64, _platform.interpreting(), pair_bits, None)
    k, sm = p.k, pad4(p.m)
    # the strides torch.empty gives the buffers every call (contiguous)
    ints = _runtime_ints(p, rows_end, o, positions, cos_sin_cache, (p.m * k, k), (p.k_blocks * sm, sm))
    return _ProducerPlan(o.device, p.fp8_shape(), p.scale_shape(), bool(check_positions) or o.device.type == "cpu",
                         cos_sin_cache.shape[0], launcher if rows_end else None, grid, ints,
                         _producer_run(mode, cfg, p.n_groups * p.heads_per_group, rows_end, p.is_neox, pair_bits))


_PLANS = host.PlanCache()


def _plan(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox,
          block_tokens_m, check_positions) -> _ProducerPlan | None:
    """The plan of a call on plain tensors with plainly typed arguments, its per-call checks done; None
    for anything else (the caller validates it in full).

    The key is everything :func:`validate_producer_args` reads but the positions' values; those are
    checked on every call where they are checked at all (``check_positions``)."""
    tensors = host.layout_key(o, positions, cos_sin_cache)
    if tensors is None:
        return None
    if not (type(n_groups) is int and type(heads_per_group) is int and type(nope_dim) is int
            and type(rope_dim) is int and type(quant_group_size) is int and type(is_neox) is bool
            and (block_tokens_m is None or type(block_tokens_m) is int)
            and (check_positions is None or type(check_positions) is bool)):
        return None
    # GPT-J's kernel depends on whether o's rows start on a pair (pair_word_bits): the address's alignment
    key = (tensors, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox, block_tokens_m,
           check_positions, is_neox or _rows_on_pair(o))
    plan = _PLANS.get(key)
    if plan is None:
        p = validate_producer_args(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                   quant_group_size, is_neox, block_tokens_m=block_tokens_m, check_positions=check_positions)
        return _PLANS.put(key, _build_plan(p, o, positions, cos_sin_cache, block_tokens_m, check_positions))
    if plan.check_positions:
        check_positions_in_range(positions, plan.max_pos)
    return plan


def _producer_impl(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                   quant_group_size, is_neox, block_tokens_m):
    block_tokens_m = block_tokens_m or None
    plan = _plan(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox,
                 block_tokens_m, False)
    if plan is None:
        p = validate_producer_args(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                   quant_group_size, is_neox, block_tokens_m=block_tokens_m, check_positions=False)
        plan = _build_plan(p, o, positions, cos_sin_cache, block_tokens_m, False)
    return plan(o, positions, cos_sin_cache)


# ---------------------------------------------------------------------------------------------------
# Custom op (namespace "accval") and its fake: the fake allocates exactly what the launcher does.


@torch.library.custom_op("accval::inv_rope_fp8_quant", mutates_args=())
def inv_rope_fp8_quant_op(o: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
                          n_groups: int, heads_per_group: int, nope_dim: int, rope_dim: int,
                          quant_group_size: int, is_neox: bool, block_tokens_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``block_tokens_m == 0`` selects the dispatch table."""
    return _producer_impl(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                          quant_group_size, is_neox, block_tokens_m)


@inv_rope_fp8_quant_op.register_fake
def _(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size,
      is_neox, block_tokens_m):
    # what the real op refuses, the fake refuses too (a meta or traced call must not pass what a real one fails)
    validate_producer_args(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                           quant_group_size, is_neox, block_tokens_m=block_tokens_m or None, check_positions=False)
    m = o.shape[0]
    k = heads_per_group * o.shape[2]
    fp8 = o.new_empty((n_groups, m, k), dtype=FP8_DTYPE)
    scale = o.new_empty((n_groups, k // QUANT_BLOCK, (m + 3) // 4 * 4), dtype=torch.float32)
    return fp8, scale


def inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                       quant_group_size=QUANT_BLOCK, is_neox=True, *, block_tokens_m=None, check_positions=None):
    """Fused inverse RoPE + 1x128 FP8 quantization (Triton). Returns ``(fp8, scale)``.

    Args:
        o: ``[M, n_groups*heads_per_group, D]`` bf16 (fp16/fp32 accepted), last dim contiguous.
        positions: ``[M]`` int32/int64 token positions into ``cos_sin_cache``.
        cos_sin_cache: fp32 ``[max_pos, rope_dim]`` (cos half, then sin half) or ``[max_pos, 2, rope_dim/2]``.
        is_neox: True for half-split (NEOX) pairs, False for interleaved (GPT-J) pairs.
        block_tokens_m: force tokens per program (a power of two); None uses the dispatch table.
        check_positions: check positions are inside the cache on every call (default: on CPU
            only; on CUDA it costs a host sync per call and is refused under CUDA graph capture).

    Returns ``fp8 [G, M, K]`` e4m3fn and ``scale [G, K/128, pad4(M)]`` fp32, as the module docstring
    states. ``accval.kernels.provenance`` records which kernel and block size ran.
    """
    if host.eager_call():  # first: under torch.compile the plan cache is not traced
        plan = _plan(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size,
                     is_neox, block_tokens_m, check_positions)
        if plan is not None:
            return plan(o, positions, cos_sin_cache)
    validate_producer_args(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                           quant_group_size, is_neox, block_tokens_m=block_tokens_m, check_positions=check_positions)
    return torch.ops.accval.inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim,
                                               rope_dim, quant_group_size, is_neox, block_tokens_m or 0)
