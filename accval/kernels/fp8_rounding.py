"""Exact round-to-nearest-even casts inside Triton kernels, on the GPU and in the interpreter.

Why this exists: Triton's CPU interpreter (3.9 and earlier) converts fp32 to float8 wrongly: the
rounding increment is not carried into the exponent and ties are not handled (31.015 -> 16.0 instead
of 32.0; about 2.5% of a random block). Its fp32 -> bf16 conversion goes through the same routine.
On the GPU the conversion instructions (``cvt.rn.satfinite``) are correct.

The fix is contained here: when ``SOFTWARE`` is true (interpreter), the value is first rounded in
fp32 to the nearest value representable in the target format, with plain fp32 arithmetic whose
rounding numpy does correctly; the cast that follows is then exact and cannot be mis-rounded. On the
GPU (``SOFTWARE`` false) the hardware cast is used unchanged. ``suites/kernel/test_fp8_rounding.py``
checks both paths against torch's casts, including the boundary cases.

Rounding to a grid with ``MANT`` mantissa bits and smallest normal exponent ``EMIN`` uses the
classic magic-number addition: for ``|x|`` with exponent ``e`` the spacing is ``2**(k)``,
``k = max(e, EMIN) - MANT``; adding ``C = 2**(k + 23)`` places the sum in a binade whose fp32 spacing
is exactly ``2**k``, so fp32's own round-to-nearest-even does the work; subtracting ``C`` is exact.
A round-up into the next binade carries into the exponent by construction.

:func:`div_rn_by` divides a tile by per-block scales with the bits of ``tl.math.div_rn`` but one
division per block instead of one per element (Markstein's correction; see its docstring).

:func:`fma_fp32` is the one rounding of an fp32 fused multiply-add on torch tensors: the emulated
consumer's scaling, and the interpreter's ``tl.fma`` where Triton's own rounds twice
(:mod:`accval.kernels.interpreter_casts`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .validation import check_same_device, check_tensor


@triton.jit
def _round_to_grid(x, MANT: tl.constexpr, EMIN: tl.constexpr):
    """Round fp32 ``x`` to the nearest (ties to even) value with MANT mantissa bits (fp32 result).

    Valid for |x| < 2**(104 - MANT) (C must stay finite); callers clamp first.
    """
    bits = x.to(tl.int32, bitcast=True)
    exp = ((bits >> 23) & 0xFF) - 127
    k = tl.maximum(exp, EMIN) - MANT
    magic = ((k + 23 + 127) << 23).to(tl.float32, bitcast=True)
    mag = tl.abs(x)
    rounded = ((mag + magic) - magic).to(tl.int32, bitcast=True)
    return (rounded | (bits & -2147483648)).to(tl.float32, bitcast=True)  # keep the sign, -0.0 included


@triton.jit
def to_fp8_e4m3(x, FP8_MAX: tl.constexpr, SOFTWARE: tl.constexpr):
    """Saturating fp32 -> float8_e4m3fn cast with round-to-nearest-even on every backend.

    ``FP8_MAX`` is float8_e4m3fn's largest value, 448. On the GPU the conversion saturates by itself
    (``cvt.rn.satfinite``: a value past 448 after rounding, an infinity included, becomes 448 with its
    sign; a NaN stays a NaN), so there is no clamp before it. The interpreter rounds in fp32 first
    (:func:`_round_to_grid`), which needs the clamp (torch's ``clamp``, NaN propagated: ``tl.minimum``/
    ``tl.maximum`` would turn a NaN into -448); its own float8 conversion reads a NaN as a finite value,
    so there a NaN is first replaced by the fp32 pattern that converts to the e4m3 NaN code of the same
    sign. The suite compares NaN codes of either sign as equal.
    """
    tl.static_assert(FP8_MAX == 448.0, "to_fp8_e4m3: FP8_MAX must be float8_e4m3fn's largest value, 448")
    if SOFTWARE:
        x = tl.clamp(x, -FP8_MAX, FP8_MAX, propagate_nan=tl.PropagateNan.ALL)
        bits = x.to(tl.int32, bitcast=True)
        # exponent all ones, top three mantissa bits set: e4m3 S.1111.111 after the truncating conversion
        nan_bits = (bits & -2147483648) | 0x7FF00000
        x = tl.where(x != x, nan_bits.to(tl.float32, bitcast=True), _round_to_grid(x, 3, -6))
    return x.to(tl.float8e4nv)


@triton.jit
def to_fp8_e4m3_pairs(lo, hi, FP8_MAX: tl.constexpr, SOFTWARE: tl.constexpr):
    """The float8_e4m3fn codes of ``lo`` and ``hi`` (each as :func:`to_fp8_e4m3` gives it) packed in
    one int16 per element, ``lo``'s in the low byte: two adjacent codes as they lie in memory.

    On the GPU one ``cvt.rn.satfinite.e4m3x2.f32`` converts each pair, the instruction Triton's own
    float8 cast emits (sm89 and later), saturating as :func:`to_fp8_e4m3` says. Packing two casts'
    bytes with shifts and ors instead was compiled wrong for sm90 by Triton 3.6 (an H200 read a zero
    for the low code of every other word).
    """
    tl.static_assert(FP8_MAX == 448.0, "to_fp8_e4m3_pairs: FP8_MAX must be float8_e4m3fn's largest value, 448")
    if SOFTWARE:
        lo8 = to_fp8_e4m3(lo, FP8_MAX, SOFTWARE).to(tl.uint8, bitcast=True).to(tl.int16)
        hi8 = to_fp8_e4m3(hi, FP8_MAX, SOFTWARE).to(tl.uint8, bitcast=True).to(tl.int16)
        codes = lo8 | (hi8 << 8)
    else:
        # cvt d, a, b puts a's code in d's high byte and b's in its low byte
        codes = tl.inline_asm_elementwise("cvt.rn.satfinite.e4m3x2.f32 $0, $2, $1;", "=h,r,r", [lo, hi],
                                          dtype=tl.int16, is_pure=True, pack=1)
    return codes


@triton.jit
def negated(x):
    """``-x`` with a zero's sign flipped too. Triton 3.6 compiles ``-x`` as ``0 - x``, which gives +0.0
    for +0.0 (Triton 3.9 emits a true negation); a product with -1 is exact, and the compiler folds it
    into the instruction that uses it."""
    return x * -1.0


#: the divisors the reciprocal and correction of :func:`div_rn_by` are exact for: normal numbers with
#: room on both sides (the reciprocal stays normal; the tests find it exact inside, wrong for subnormals)
RCP_PATH_MIN = tl.constexpr(2.0**-80)
RCP_PATH_MAX = tl.constexpr(2.0**100)
#: a divisor below ``RCP_FOLD_BELOW`` is multiplied by ``RCP_FOLD``, one above ``RCP_FOLD_ABOVE`` by its
#: inverse (the dividend with it): every finite positive divisor lands inside [RCP_PATH_MIN, RCP_PATH_MAX]
#: (2**-149 * 2**100 = 2**-49; 2**128 / 2**100 = 2**28) and the quotient does not change
RCP_FOLD_BELOW = tl.constexpr(2.0**-60)
RCP_FOLD_ABOVE = tl.constexpr(2.0**60)
RCP_FOLD = tl.constexpr(2.0**100)


@triton.jit
def div_rn_by(y, s, SOFTWARE: tl.constexpr):
    """``y / s`` rounded to nearest even as ``tl.math.div_rn(y, s)`` gives it, for positive ``s``
    broadcast along ``y``'s last axis (one divisor per block) and quotients of at most about 448 in
    magnitude (the producer's): bit for bit wherever ``|y/s| >= 2**-11``, and below that (quotients
    every float8 cast turns into a zero) with the same sign. An infinite ``s`` gives ``y / inf``.

    ``div_rn`` costs a correctly rounded division per element. Here each block's reciprocal
    ``r = div_rn(1, s)`` is taken once, then per element ``q0 = y * r``, the residual
    ``e = fma(-q0, s, y)`` and ``q = fma(e, r, q0)``: Markstein's correction. Its proof assumes ``q0``
    within an ulp of ``y/s``, which ``RN(y * r)`` misses by up to half an ulp more in about 1% of
    cases; the result was still the correctly rounded quotient in every case checked
    (``suites/kernel/test_fp8_rounding.py``: ten million on a CPU with exact fmas, two million on the
    GPU, values next to float8 rounding boundaries among them) for divisors in [2**-80, 2**100]
    (``RCP_PATH_MIN``/``MAX``); for subnormal divisors the residual underflows and the bits differ.
    So a block whose divisor lies outside [2**-60, 2**60] first has ``y`` and ``s`` multiplied by
    2**100 or 2**-100 (``RCP_FOLD``): a power of two changes no quotient, puts ``s`` inside the exact
    range, and is itself exact for ``y`` (its magnitude is at most about 448 ``s``) unless ``y`` becomes
    subnormal, which happens only for quotients below 2**-86. This per-block select replaced a check of
    the whole tile (a reduction and a branch to per-element ``div_rn``); on an H200 both cost about the
    same against the reciprocal with neither (a median 1.6-1.7% of the producer's time;
    docs/tuning.md, "Exact division"), and the kernel no longer carries a second division path.
    The residual is taken negated, ``e' = fma(q0, s, -y)`` and ``q = fma(-e', r, q0)``: the same
    bits wherever ``q0`` is not zero (round to nearest is symmetric), and a zero ``q0`` comes out as it
    went in, its sign included (``-0.0 + -0.0`` is ``-0.0``; the other order gives ``+0.0``), with no
    select per element. An infinite ``s`` (its reciprocal 0) takes its residual against 1 instead, a
    select per block, so that ``y / inf`` is a zero of ``y``'s sign and no ``inf * 0`` appears. With
    the clamp :func:`to_fp8_e4m3` no longer takes, the producer's launches took a median 3.3% less time
    on an H200 (from 3.5% more to 14.8% less over 100 shape, M, layout and launch cells;
    docs/tuning.md, "The trimmed residual"). The interpreter (``SOFTWARE``) always divides: Triton 3.6's
    interpreter rounds an fma twice.
    """
    if SOFTWARE:
        q = tl.math.div_rn(y, s)
    else:
        fold = tl.where(s < RCP_FOLD_BELOW, RCP_FOLD, tl.where(s > RCP_FOLD_ABOVE, 1.0 / RCP_FOLD, 1.0))
        s = s * fold
        y = y * fold
        r = tl.math.div_rn(tl.full(s.shape, 1.0, tl.float32), s)
        q0 = y * r
        q = tl.fma(negated(tl.fma(q0, tl.where(r == 0.0, 1.0, s), negated(y))), r, q0)
    return q


@triton.jit
def round_through(x, DTYPE: tl.constexpr, SOFTWARE: tl.constexpr):
    """Round fp32 ``x`` to ``DTYPE`` (bf16, fp16 or fp32) and back to fp32, ties to even.

    This is what storing a value into a ``DTYPE`` tensor and reading it back does (the legacy
    reference applies RoPE in place in the input dtype before quantizing).
    """
    if DTYPE == tl.float32:
        y = x
    elif SOFTWARE:
        if DTYPE == tl.bfloat16:
            # Integer RNE on the fp32 bit pattern: exact for every finite value, subnormals included,
            # and for infinities; a NaN is kept as is (the increment could carry out of its payload).
            bits = x.to(tl.int32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
            y = tl.where(x != x, x, bits.to(tl.float32, bitcast=True))
        else:
            y = _round_to_grid(x, 10, -14)
            # fp16 overflows: a value that rounds past 65504 becomes +-inf, as the hardware cast does.
            inf_bits = 0x7F800000 | (x.to(tl.int32, bitcast=True) & -2147483648)
            y = tl.where(tl.abs(y) > 65504.0, inf_bits.to(tl.float32, bitcast=True), y)
    else:
        y = x.to(DTYPE).to(tl.float32)
    return y


@triton.jit
def to_bf16(x, SOFTWARE: tl.constexpr):
    """fp32 -> bf16 cast with round-to-nearest-even on every backend."""
    return round_through(x, tl.bfloat16, SOFTWARE).to(tl.bfloat16)


def fma_fp32(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``x * y + z`` of fp32 tensors (broadcast) rounded once to fp32, as an fma rounds.

    The product is exact in float64 (two 24-bit significands); the sum is rounded to odd there (its
    rounding error, from Knuth's TwoSum, moves an even result one ulp toward the exact sum), and a
    round-to-odd result with at least two more bits than fp32 rounds to the same fp32 as the exact sum.
    Plain float64 rounding would not: ``1 + 2**-23`` plus ``2**-24 - 2**-60`` lands on an fp32 tie and
    goes up. Non-finite sums are left as float64 gives them.

    Raises TypeError for anything but fp32 tensors, ValueError for tensors on different devices or of
    shapes that do not broadcast.
    """
    for name, t in (("x", x), ("y", y), ("z", z)):
        check_tensor(name, t, dtypes=(torch.float32,))
    check_same_device(x=x, y=y, z=z)
    try:
        torch.broadcast_shapes(x.shape, y.shape, z.shape)
    except RuntimeError:
        raise ValueError(f"fma_fp32: expected shapes that broadcast, got {tuple(x.shape)}, {tuple(y.shape)}, "
                         f"{tuple(z.shape)}") from None
    p = x.double() * y.double()
    c = z.double()
    t = p + c
    back = t - p
    err = (p - (t - back)) + (c - back)
    odd_fix = (err != 0) & ((t.view(torch.int64) & 1) == 0) & torch.isfinite(t)
    toward = torch.where(err > 0, torch.inf, -torch.inf).to(t.dtype)
    return torch.where(odd_fix, torch.nextafter(t, toward), t).float()
