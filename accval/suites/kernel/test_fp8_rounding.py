"""Exact FP8 / bf16 / fp16 rounding inside kernels, on the GPU and in the CPU interpreter.

Triton's interpreter rounds fp32 -> float8 wrongly (31.015 -> 16.0); accval/kernels/fp8_rounding.py rounds
in fp32 first. These tests run the kernel helpers themselves and compare with torch's casts.
"""

from __future__ import annotations

import importlib
from fractions import Fraction

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from hypothesis import given
from hypothesis import strategies as st

from accval.kernels import _platform, fp8_rounding
from accval.kernels.constants import FP8_DTYPE, FP8_E4M3_MAX
from accval.kernels.fp8_rounding import div_rn_by, fma_fp32, round_through, to_fp8_e4m3, to_fp8_e4m3_pairs

from .checks import assert_exact, assert_fp8_equal

LO, HI = fp8_rounding.RCP_PATH_MIN.value, fp8_rounding.RCP_PATH_MAX.value  # the correction's exact divisors, unfolded
# divisors below BELOW and above ABOVE are multiplied by FOLD and 1/FOLD
BELOW, ABOVE, FOLD = fp8_rounding.RCP_FOLD_BELOW.value, fp8_rounding.RCP_FOLD_ABOVE.value, fp8_rounding.RCP_FOLD.value


@triton.jit
def _cast_kernel(x_ptr, fp8_ptr, bf16_ptr, fp16_ptr, n, BLOCK: tl.constexpr, SOFTWARE: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(fp8_ptr + offs, to_fp8_e4m3(x, 448.0, SOFTWARE), mask=mask)
    tl.store(bf16_ptr + offs, round_through(x, tl.bfloat16, SOFTWARE), mask=mask)
    tl.store(fp16_ptr + offs, round_through(x, tl.float16, SOFTWARE), mask=mask)


def run_casts(values: torch.Tensor, device):
    x = values.float().to(device)
    fp8 = torch.empty(x.shape, dtype=FP8_DTYPE, device=device)
    bf16 = torch.empty_like(x)
    fp16 = torch.empty_like(x)
    _cast_kernel[(1,)](x, fp8, bf16, fp16, x.numel(), BLOCK=triton.next_power_of_2(max(x.numel(), 16)),
                       SOFTWARE=_platform.interpreting(), **_platform.gpu_launch_options())
    return fp8, bf16, fp16


#: Boundary cases: round-up carrying into the exponent, ties to even, subnormals, saturation.
BOUNDARY = [31.015, 31.0, 30.0, 17.0, 19.0, 15.5, 0.0, -0.0, 1.0625, 1.1875, 2.0**-6, 2.0**-7 * 1.5,
            2.0**-9, 2.0**-10, 2.0**-10 * 1.0001, 0.9999 * 2.0**-10, 3 * 2.0**-10, 240.0, 247.9, 248.0, 440.0,
            447.9, 448.0, 464.0, 500.0, 1e6, -31.015, -17.0, -448.0, -1e6, 1e-30]


def _expected(values: torch.Tensor):
    x = values.float()
    return (x.clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(FP8_DTYPE), x.to(torch.bfloat16).float(), x.to(torch.float16).float())


def test_boundary_values_round_like_torch(device):
    """31.015 -> 32.0 and every other boundary case: codes equal torch's round-to-nearest-even cast."""
    vals = torch.tensor(BOUNDARY)
    fp8, bf16, fp16 = run_casts(vals, device)
    want8, want16b, want16 = _expected(vals)
    assert fp8[0].float().item() == 32.0, f"31.015 must round to 32.0, got {fp8[0].float().item()}"
    ctx = f"values={BOUNDARY} interpreting={_platform.interpreting()}"
    assert_fp8_equal(fp8.cpu(), want8, "fp8 cast", ctx)
    assert_exact(bf16.cpu(), want16b, "bf16 rounding", ctx)
    assert_exact(fp16.cpu(), want16, "fp16 rounding", ctx)


@given(st.lists(st.floats(-460.0, 460.0, allow_nan=False, width=32), min_size=1, max_size=64),
       st.sampled_from([1.0, 2.0**-8, 2.0**-4, 64.0]))
def test_any_value_rounds_like_torch(values, scale):
    """For any fp32 x in range, the kernel's casts equal torch's (fp8 saturating, bf16, fp16)."""
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    vals = torch.tensor(values, dtype=torch.float32) * scale
    fp8, bf16, fp16 = run_casts(vals, device)
    want8, want16b, want16 = _expected(vals)
    ctx = f"{values=} {scale=}"
    assert_fp8_equal(fp8.cpu(), want8, "fp8 cast", ctx)
    assert_exact(bf16.cpu(), want16b, "bf16 rounding", ctx)
    assert_exact(fp16.cpu(), want16, "fp16 rounding", ctx)


def test_every_fp8_midpoint_rounds_to_even(device):
    """All 2*126 midpoints between adjacent positive e4m3 values are ties: each goes to the even code."""
    codes = torch.arange(0, 0x7E, dtype=torch.uint8).view(FP8_DTYPE).float()
    mids = (codes[:-1].double() + codes[1:].double()) / 2
    vals = torch.cat([mids, -mids]).float()
    fp8, _, _ = run_casts(vals, device)
    assert_fp8_equal(fp8.cpu(), _expected(vals)[0], "fp8 midpoints", "ties to even")
    assert (fp8.cpu().view(torch.uint8) & 1).eq(0).all(), "a midpoint rounded to an odd code"


@triton.jit
def _pairs_kernel(lo_ptr, hi_ptr, words_ptr, lo8_ptr, hi8_ptr, n, BLOCK: tl.constexpr, SOFTWARE: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    lo = tl.load(lo_ptr + offs, mask=mask, other=0.0)
    hi = tl.load(hi_ptr + offs, mask=mask, other=0.0)
    tl.store(words_ptr + offs, to_fp8_e4m3_pairs(lo, hi, 448.0, SOFTWARE), mask=mask)
    tl.store(lo8_ptr + offs, to_fp8_e4m3(lo, 448.0, SOFTWARE), mask=mask)
    tl.store(hi8_ptr + offs, to_fp8_e4m3(hi, 448.0, SOFTWARE), mask=mask)


def test_fp8_pairs_are_the_casts_codes_side_by_side(device):
    """``to_fp8_e4m3_pairs(lo, hi)`` is one int16 per element whose low byte is ``to_fp8_e4m3(lo)``'s code
    and whose high byte is ``hi``'s, bit for bit (NaN signs included), for boundary values, midpoints,
    saturation, infinities and NaNs of both signs, each beside every sign of its partner."""
    codes = torch.arange(0, 0x7E, dtype=torch.uint8).view(FP8_DTYPE).float()
    mids = ((codes[:-1].double() + codes[1:].double()) / 2).float()
    special = torch.tensor([float("nan"), float("inf"), 1e30, 2.0**-12])
    vals = torch.cat([torch.tensor(BOUNDARY), mids, special])
    vals = torch.cat([vals, -vals])
    lo = vals.repeat(2)
    hi = torch.cat([vals.roll(1), -vals.roll(5)])
    n = lo.numel()
    words = torch.empty(n, dtype=torch.int16, device=device)
    lo8 = torch.empty(n, dtype=FP8_DTYPE, device=device)
    hi8 = torch.empty(n, dtype=FP8_DTYPE, device=device)
    _pairs_kernel[(1,)](lo.to(device), hi.to(device), words, lo8, hi8, n, BLOCK=triton.next_power_of_2(n),
                        SOFTWARE=_platform.interpreting(), **_platform.gpu_launch_options())
    ctx = f"interpreting={_platform.interpreting()}"
    assert_fp8_equal(lo8.cpu(), _expected(lo)[0], "fp8 cast of lo", ctx)
    pairs = words.cpu().view(torch.uint8).reshape(n, 2)  # little-endian: the low byte first
    for byte, (name, single) in enumerate((("lo", lo8), ("hi", hi8))):
        got, want = pairs[:, byte], single.cpu().view(torch.uint8)
        bad = (got != want).nonzero()
        assert not len(bad), (f"{int(len(bad))} of {n} {name} codes differ from to_fp8_e4m3's; first at {int(bad[0])}: "
                              f"value {(lo if name == 'lo' else hi)[int(bad[0])].item()!r} got {int(got[bad[0]])} "
                              f"want {int(want[bad[0]])}; {ctx}")


# ---------------------------------------------------------------------------------------------------
# div_rn_by: a tile divided by per-block scales with the bits of a correctly rounded division.


@triton.jit
def _div_kernel(y_ptr, s_ptr, q_ptr, BLOCKS: tl.constexpr, SOFTWARE: tl.constexpr):
    """Row r: ``q[r] = div_rn_by(y[r], s[r])``, y ``[BLOCKS, 128]`` and one scale per 128-block."""
    row = tl.program_id(0)
    d = tl.arange(0, BLOCKS)[:, None] * 128 + tl.arange(0, 128)[None, :]
    y = tl.load(y_ptr + row * BLOCKS * 128 + d)
    s = tl.load(s_ptr + row * BLOCKS + tl.arange(0, BLOCKS))[:, None]
    tl.store(q_ptr + row * BLOCKS * 128 + d, div_rn_by(y, s, SOFTWARE))


def _fp8_midpoints() -> torch.Tensor:
    """Every point halfway between two neighbouring non-negative float8 e4m3 values (0 to 448)."""
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(FP8_DTYPE).float()
    vals = codes[torch.isfinite(codes) & (codes >= 0)].unique()
    return (vals[:-1] + vals[1:]) / 2


def _division_cases(rows: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y [rows, 4, 128], s [rows, 4])`` as the producer divides them: ``s = amax / 448`` of each block,
    amax from 2**-141 to 2**127 (scales from subnormal to 2**118: inside the reciprocal range and on
    both sides of where ``div_rn_by`` folds them in; rows 0-3 hold the fold's thresholds and the scales
    just past them, rows 4-5 the ends of the exact range), ``y`` half uniform in ``[-amax, amax]`` and
    half placed on float8 midpoints times ``s`` (where a quotient one ulp off rounds to another code),
    with zeros of both signs and subnormals."""
    exp = torch.randint(-140, 128, (rows, 4, 1), generator=generator).float()
    amax = (torch.rand(rows, 4, 1, generator=generator) + 1.0) * torch.exp2(exp) / 2
    edges = torch.tensor([BELOW, BELOW * (1 - 2.0**-20), ABOVE, ABOVE * (1 + 2.0**-20), LO, HI])
    amax[:6] = edges[:, None, None] * 448
    s = amax / 448
    uniform = (torch.rand(rows, 4, 64, generator=generator) * 2 - 1) * amax
    mids = _fp8_midpoints()
    picked = mids[torch.randint(0, mids.numel(), (rows, 4, 64), generator=generator)]
    signs = torch.randint(0, 2, (rows, 4, 64), generator=generator) * 2 - 1
    y = torch.cat([uniform, (picked.double() * signs * s.double()).float()], dim=2)
    y[:, :, 0], y[:, :, 1], y[:, :, 2] = 0.0, -0.0, -amax[:, :, 0]
    y[:, :, 3] = 1e-45
    return y, s[:, :, 0]


def _run_div(y: torch.Tensor, s: torch.Tensor, device) -> torch.Tensor:
    yd, sd = y.contiguous().to(device), s.contiguous().to(device)
    q = torch.empty_like(yd)
    _div_kernel[(y.shape[0],)](yd, sd, q, BLOCKS=y.shape[1], SOFTWARE=_platform.interpreting(),
                               **_platform.gpu_launch_options())
    return q.cpu()


def test_div_rn_by_gives_the_bits_of_a_correctly_rounded_division(device):
    """The producer's division by its block scales (``div_rn_by``: one reciprocal per block and a
    Markstein correction on the GPU) is bit for bit the IEEE quotient torch computes wherever a float8
    code can tell them apart (``|y/s| >= 2**-11``), for scales from subnormal to 2**118, and gives the
    same float8 code (sign included) everywhere; a correction left out or a divisor not folded into
    the exact range gives other bits."""
    y, s = _division_cases(4096 if device.type == "cuda" else 64, torch.Generator().manual_seed(0))
    want = y / s[:, :, None]
    got = _run_div(y, s, device)
    bad = ((got.view(torch.int32) != want.view(torch.int32)) & (want.abs() >= 2.0**-11)).nonzero()
    assert bad.numel() == 0, (f"{bad.shape[0]} quotients differ from y / s, first at {bad[0].tolist()}: "
                              f"y={y[tuple(bad[0])].item()!r} s={s[tuple(bad[0][:2])].item()!r} "
                              f"got {got[tuple(bad[0])].item()!r} want {want[tuple(bad[0])].item()!r}")
    codes = lambda x: x.clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(FP8_DTYPE).view(torch.uint8)  # noqa: E731
    assert torch.equal(codes(got), codes(want)), "a quotient below 2**-11 changed its float8 code"


def test_div_rn_by_an_infinite_scale_gives_y_over_inf(device):
    """A block whose scale is infinite (its amax overflowed) divides as IEEE does: a zero of y's sign for
    a finite y, NaN for an infinite one; the blocks beside it are not disturbed."""
    y = torch.linspace(-3.0, 3.0, 4 * 128).reshape(1, 4, 128)
    y[0, :, :4] = torch.tensor([0.0, -0.0, float("inf"), -float("inf")])
    y[0, 1:, 2:4] = 1.0  # infinities only in the infinite block
    s = torch.tensor([[float("inf"), 1.0, 2.0**-100, 2.0**100]])
    want, got = y / s[:, :, None], _run_div(y, s, device)
    assert torch.equal(got.isnan(), want.isnan()), "NaN where y / s is not, or the reverse"
    finite = ~want.isnan()
    assert torch.equal(got[finite].view(torch.int32), want[finite].view(torch.int32)), "a quotient or its sign differs"


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """fp32 fma on numpy arrays, one rounding (:func:`accval.kernels.fp8_rounding.fma_fp32`, tested below)."""
    a, b, c = (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in np.broadcast_arrays(a, b, c))
    return fma_fp32(a, b, c).numpy()


def _round_to_fp32(q: Fraction) -> float:
    """The exact rational ``q`` rounded once to fp32 (nearest, ties to even; subnormals; overflow to inf)."""
    if q == 0:
        return 0.0
    sign, a = (-1.0 if q < 0 else 1.0), abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()  # 2**e <= a < 2**(e + 2)
    if a < Fraction(2) ** e:
        e -= 1
    if a >= Fraction(2) ** (e + 1):
        e += 1
    ulp = Fraction(2) ** (max(e, -126) - 23)
    n, rest = divmod(a, ulp)
    n += 1 if rest > ulp / 2 or (rest == ulp / 2 and n % 2) else 0
    value = n * ulp
    return sign * (float("inf") if value >= Fraction(2) ** 128 else float(value))


def _fma_cases() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Operands whose fma plain float64 rounding gets wrong (sums on an fp32 tie after a float64
    rounding), near-cancellations, subnormal results, results past the fp32 range, and random ones."""
    gen = torch.Generator().manual_seed(0)
    n = 3000
    x = torch.randn(n, generator=gen) * torch.exp2(torch.randint(-40, 40, (n,), generator=gen).float())
    y = torch.randn(n, generator=gen)
    z = torch.randn(n, generator=gen) * torch.exp2(torch.randint(-40, 40, (n,), generator=gen).float())
    z[: n // 3] = -(x[: n // 3] * y[: n // 3]) * (1 + torch.randn(n // 3, generator=gen) * 2.0**-20)  # cancellations
    ties_x = [2.0**-24 * (1 + 2.0**-18), 2.0**-23 * (1 + 2.0**-20), -(2.0**-24) * (1 + 2.0**-17)]
    ties_y = [1 - 2.0**-18, 1 - 2.0**-20, 1 - 2.0**-17]
    # an odd z plus a product just below its half ulp (1 + 2**-23 + 2**-24 - 2**-60 and the like): float64 rounds
    # the sum onto the fp32 tie, which then goes to the even neighbour, away from the exact sum's
    ties_z = [1.0 + 2.0**-23, 2.0 + 2.0**-22, -(1.0 + 2.0**-23)]
    edge_x = [2.0**-75, 3.0 * 2.0**-80, 2.0**64, -(2.0**100), 1.5, 0.0]
    edge_y = [2.0**-75, 2.0**-70, 2.0**64, 2.0**40, 2.0**-149, -1.0]
    edge_z = [2.0**-149, -(2.0**-148), 3.0e38, -1.0, 0.0, 0.0]  # subnormal sums, overflow, -0 + +0
    x = torch.cat([x, torch.tensor(ties_x + edge_x)])
    y = torch.cat([y, torch.tensor(ties_y + edge_y)])
    z = torch.cat([z, torch.tensor(ties_z + edge_z)])
    return x, y, z


def test_fma_fp32_rounds_once():
    """The emulated fma equals the exact product-plus-sum rounded once (by rational arithmetic), where
    rounding the float64 sum to fp32 differs from it too, on every kind of operand, and with Triton's
    C fma where the interpreter has one."""
    x, y, z = _fma_cases()
    got = fma_fp32(x, y, z)
    want = torch.tensor([_round_to_fp32(Fraction(a) * Fraction(b) + Fraction(c))
                         for a, b, c in zip(x.tolist(), y.tolist(), z.tolist())], dtype=torch.float32)
    same = (got.view(torch.int32) == want.view(torch.int32)) | ((got == 0) & (want == 0))
    assert same.all(), f"{int((~same).sum())} of {len(x)} differ, first at {int((~same).nonzero()[0])}"
    twice = (x.double() * y.double() + z.double()).float()
    assert (twice != want)[3000:3003].all(), "the tie cases must be ones plain float64 rounding gets wrong"
    interp = getattr(importlib.import_module("triton._C.libtriton"), "interpreter", None)
    if hasattr(interp, "fma_fp32"):
        native = torch.from_numpy(interp.fma_fp32(x.numpy(), y.numpy(), z.numpy()))
        assert torch.equal(got.view(torch.int32), native.view(torch.int32))


def _markstein(y: np.ndarray, s: np.ndarray, negated: bool = True) -> np.ndarray:
    """The reciprocal and correction ``div_rn_by`` runs on the GPU, in fp32 with emulated fmas: the
    residual negated, ``fma(-fma(q0, s, -y), r, q0)``, against 1 where the reciprocal is 0 (an infinite
    ``s``). ``negated=False``: the residual the other way round, ``fma(fma(-q0, s, y), r, q0)``."""
    y, s = np.broadcast_arrays(np.asarray(y, np.float32), np.asarray(s, np.float32))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
        r = (1.0 / s.astype(np.float64)).astype(np.float32)
        q0 = y * r
        s_res = np.where(r == 0, np.float32(1), s)
        if negated:
            return _fma32(-_fma32(q0, s_res, -y), r, q0)
        return _fma32(_fma32(-q0, s_res, y), r, q0)


def _emulated_cases(seed: int):
    y, s = _division_cases(20000, torch.Generator().manual_seed(seed))
    y, s = y.numpy(), np.broadcast_to(s.numpy()[:, :, None], y.shape)
    exact = (y.astype(np.float64) / s.astype(np.float64)).astype(np.float32)  # 53 >= 2 * 24 + 2: one rounding
    return y, s, exact, np.abs(exact) >= 2.0**-11


needs_x87 = pytest.mark.skipif(np.finfo(np.longdouble).nmant < 63, reason="needs x87 extended precision to emulate an fma")


@needs_x87
def test_markstein_correction_is_exact_inside_the_reciprocal_range():
    """The arithmetic ``div_rn_by`` runs on the GPU, emulated with fmas on the CPU, on divisors as they
    come: for every scale in [RCP_PATH_MIN, RCP_PATH_MAX] the corrected quotient equals the IEEE
    quotient wherever a float8 code can tell them apart (``|y/s| >= 2**-11``) and keeps its sign
    below; subnormal scales break it (so they must be folded in, and the emulation is the GPU's)."""
    y, s, exact, visible = _emulated_cases(1)
    q = _markstein(y, s)
    inside = (s >= LO) & (s <= HI)
    assert inside.mean() > 0.5 and (~inside).any()
    wrong = inside & visible & (q.view(np.int32) != exact.view(np.int32))
    assert not wrong.any(), f"{wrong.sum()} quotients inside the range differ, e.g. y={y[wrong][0]!r} s={s[wrong][0]!r}"
    assert not (inside & (np.signbit(q) != np.signbit(exact))).any(), "a quotient inside the range changed its sign"
    assert ((~inside) & visible & (q.view(np.int32) != exact.view(np.int32))).any(), \
        "outside the range (subnormal scales) the correction should fail somewhere: else the emulation is not the GPU's"


@needs_x87
def test_the_correction_keeps_zeros_signed_and_divides_by_inf():
    """``div_rn_by``'s arithmetic, emulated: a zero dividend keeps its sign with no select (the residual
    negated), a dividend whose quotient underflows gives the product's zero, and an infinite divisor gives
    IEEE's ``y / inf`` (a zero of ``y``'s sign, NaN for an infinite ``y``). The residual the other way
    round turns ``-0.0 / s`` into ``+0.0``."""
    y = np.array([0.0, -0.0, 1e-45, -1e-45, 3.0, -3.0, 0.0, -0.0, 2.5, -2.5, np.inf, -np.inf, np.nan], np.float32)
    s = np.array([1.5, 1.5, 2.0**60, 2.0**60, 0.75, 0.75] + [np.inf] * 7, np.float32)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        exact = (y.astype(np.float64) / s.astype(np.float64)).astype(np.float32)
    q = _markstein(y, s)
    assert np.array_equal(np.isnan(q), np.isnan(exact)), f"NaN where y / s is not, or the reverse: {q} vs {exact}"
    finite = ~np.isnan(exact)
    assert np.array_equal(q[finite].view(np.int32), exact[finite].view(np.int32)), f"{q} vs {exact}"
    other = _markstein(y, s, negated=False)
    assert other[1] == 0 and not np.signbit(other[1]), "the residual the other way round should lose -0.0's sign"


@needs_x87
def test_folding_the_divisor_makes_every_scale_exact():
    """``div_rn_by``'s fold, emulated: y and s multiplied by 2**100 below 2**-60 and by 2**-100 above
    2**60 (fp32 products, as on the GPU) put every divisor, subnormal ones included, inside the range
    the correction is exact for, and the quotient is the IEEE one wherever a float8 code can tell them
    apart, its sign everywhere. The thresholds keep every folded divisor inside that range."""
    assert BELOW * FOLD >= LO and BELOW <= HI and ABOVE >= LO and ABOVE / FOLD <= HI
    assert 2.0**-149 * FOLD >= LO and 2.0**128 / FOLD <= HI
    y, s, exact, visible = _emulated_cases(2)
    fold = np.where(s < BELOW, np.float32(FOLD), np.where(s > ABOVE, np.float32(1 / FOLD), np.float32(1)))
    with np.errstate(under="ignore"):
        q = _markstein(y * fold, s * fold)
    assert (s < BELOW).any() and (s > ABOVE).any() and (s < 2.0**-126).any()
    wrong = visible & (q.view(np.int32) != exact.view(np.int32))
    assert not wrong.any(), f"{wrong.sum()} quotients differ, e.g. y={y[wrong][0]!r} s={s[wrong][0]!r}"
    assert not (np.signbit(q) != np.signbit(exact)).any(), "a quotient changed its sign"


@pytest.mark.parametrize("bad,error,says", [
    ((torch.ones(2, dtype=torch.float64), torch.ones(2), torch.ones(2)), TypeError, "x: expected dtype in ['torch.float32']"),
    ((torch.ones(2), [1.0, 2.0], torch.ones(2)), TypeError, "y: expected a torch.Tensor, got list"),
    ((torch.ones(2), torch.ones(3), torch.ones(2)), ValueError, "fma_fp32: expected shapes that broadcast, got (2,), (3,), (2,)"),
    ((torch.ones(2), torch.ones(2), torch.ones(2, device="meta")), ValueError, "expected all tensors on one device"),
], ids=["float64", "list", "shapes", "devices"])
def test_fma_fp32_refuses_bad_input(bad, error, says):
    with pytest.raises(error) as err:
        fma_fp32(*bad)
    assert says in str(err.value), str(err.value)
