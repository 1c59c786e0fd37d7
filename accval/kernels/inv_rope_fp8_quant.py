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
#: Against the rows' tile, faster from 4096 programs (dep8 M=256: 22.9/23.0 vs 24.2/24.3 us), slower at 2048
#: (tep8 M=256: 8.70/8.77 vs 8.48/8.54): reports/kernel/speed-probe-neox-rope-apart-NVIDIA_H200-2026-12-03-s17call6.json
#: (docs/tuning.md, "NEOX: the rope slice rotated apart").
ROPE_APART_MIN_PROGRAMS = 4096
#: Tried and not taken (the slice as two halves, one program per block, variants at tep8 M=64 where the
#: upstream-style kernel stays 1-3% ahead): docs/tuning.md, "Measured and not shipped".


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
    "docs/tuning.md, \"Producer\" (NVIDIA H200, torch 2.11, triton 3.6; every launch compared gave the same bits). "
    "NEOX: 4 heads per program from 16384 programs (dep8 M=8192 439.7 vs 501.9 us with 2; reports/kernel/"
    "speed-probe-regs-NVIDIA_H200-2026-12-02-s13call6.json), 2 heads from 2048 and 1 below (dep8 M=64 10.5 vs 11.2 "
    "us with 1 head; tep8 M=64, 1024 programs: 6.5 vs 6.7 with 2; reports/kernel/speed-probe-producer-NVIDIA_H200-"
    "2026-12-02-s13call3.json), rows kept after the trimmed quantization (dep8 M=8192 455.9 us; reports/kernel/"
    "speed-probe-trim-NVIDIA_H200-2026-12-04-s27call1.json). GPT-J: 2 heads, 1 warp at every M (same report: dep8 "
    "M=8192 429.1 us, 446.7 with 4 heads, 458.6 with 8 heads and 2 warps). One token per program: on an H100, M=8192 "
    "725 vs 976 us for the B200 table (reports/bench/NVIDIA_H100_80GB_HBM3-2026-11-25-run1.json). No launch caps "
    "registers (reports/kernel/speed-probe-regs-NVIDIA_H200-2026-12-04-s27call4.json)."
)
PRODUCER_LAYOUT_MEASUREMENT = (
    "docs/tuning.md, \"GPT-J: pairs read as words\" (NVIDIA H200, torch 2.11, triton 3.6; same bits): each GPT-J pair "
    "read as one word and split with shifts keeps one layout from load to store: dep8 M=8192 GPT-J 448.8 us, NEOX "
    "440.6, rows split in registers 608.4 (reports/kernel/speed-probe-layouts-NVIDIA_H200-2026-12-02-s14call6.json); "
    "the partner loaded at r ^ 1 took 1192 (reports/bench/producer-probe-NVIDIA_H200-2026-12-02-call1.json). The "
    "pairs' codes are packed by to_fp8_e4m3_pairs: packing two casts' bytes with shifts was compiled wrong by "
    "Triton 3.6 for sm90 (every other word's low code read 0 on the H200)."
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
    p = validate_producer_args(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                               quant_group_size, is_neox, block_tokens_m=block_tokens_m or None, check_positions=False)
    # the shapes the launcher allocates, from the one rule (ProducerProblem): a fake of its own drifts
    return o.new_empty(p.fp8_shape(), dtype=FP8_DTYPE), o.new_empty(p.scale_shape(), dtype=torch.float32)


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
