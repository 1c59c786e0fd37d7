"""A foreign Triton kernel's float8 / bf16 conversions give the GPU's bits, also in the interpreter.

The kernels below are written as anyone else's would be (plain ``x.to(tl.float8e4nv)``, no accval
helper). On a CPU they run in Triton's interpreter, whose own conversions are wrong;
:mod:`accval.kernels.interpreter_casts` (installed by importing :mod:`kernels`) must make them give exactly
the codes an sm90 GPU gives. On a GPU the same tests check the hardware against the same rules.

The expected codes come from references written here from the formats' definitions (decoded code
tables searched for the nearest value, ties to the even code), not from the patch's own arithmetic.
The GPU rules they encode (saturation of finite values and infinities, NaN codes, float8e5 -> bf16's
treatment of exponent 31) were read on an H200; see :mod:`accval.kernels.interpreter_casts`.

Each test is one kernel launch over all its values (at most a few hundred thousand).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

from accval.kernels import _platform, interpreter_casts

#: Values one program converts (the interpreter handles a block as one numpy array).
BLOCK = 65536


@triton.jit
def _foreign_casts(x_ptr, e4m3_ptr, e5m2_ptr, bf16_ptr, bf16_rz_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(e4m3_ptr + offs, x.to(tl.float8e4nv), mask=mask)
    tl.store(e5m2_ptr + offs, x.to(tl.float8e5), mask=mask)
    tl.store(bf16_ptr + offs, x.to(tl.bfloat16), mask=mask)
    tl.store(bf16_rz_ptr + offs, x.to(tl.bfloat16, fp_downcast_rounding="rtz"), mask=mask)


@triton.jit
def _foreign_narrow(x_ptr, e4m3_ptr, e5m2_ptr, fp32_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(e4m3_ptr + offs, x.to(tl.float8e4nv), mask=mask)
    tl.store(e5m2_ptr + offs, x.to(tl.float8e5), mask=mask)
    tl.store(fp32_ptr + offs, x.to(tl.float32), mask=mask)


@triton.jit
def _foreign_widen(x_ptr, fp32_ptr, fp16_ptr, bf16_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(fp32_ptr + offs, x.to(tl.float32), mask=mask)
    tl.store(fp16_ptr + offs, x.to(tl.float16), mask=mask)
    tl.store(bf16_ptr + offs, x.to(tl.bfloat16), mask=mask)


# ---- the formats, from their definitions -------------------------------------------------------

#: (exponent bits, mantissa bits, bias, largest finite code) of the two float8 formats.
FP8_FORMATS = {
    "e4m3": (4, 3, 7, 0x7E),   # OCP e4m3fn: no infinities, S.1111.111 is NaN, max 448
    "e5m2": (5, 2, 15, 0x7B),  # IEEE-like: exponent 31 is inf/NaN, max 57344
}
#: What the GPU (``cvt.rn.satfinite``) writes for any NaN, either sign; bf16 likewise.
GPU_FP8_NAN = 0x7F
GPU_BF16_NAN = 0x7FFF
#: The canonical NaN the GPU writes when widening any float8 NaN.
GPU_WIDE_NAN = {"fp32": 0x7FFFFFFF, "fp16": 0x7FFF, "bf16": 0x7FFF}

_NAN_BITS = (0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF)


def _fp8_positive_values(fmt: str) -> np.ndarray:
    """Value of each code 0..largest finite code (increasing with the code), decoded by formula."""
    ebits, mbits, bias, top = FP8_FORMATS[fmt]
    codes = np.arange(top + 1)
    e, m = codes >> mbits, codes & ((1 << mbits) - 1)
    sub = m * 2.0 ** (1 - bias - mbits)
    norm = (m + 2.0 ** mbits) * 2.0 ** (e.astype(np.float64) - bias - mbits)
    return np.where(e == 0, sub, norm)


def _f32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _bits(values) -> np.ndarray:
    return np.asarray(values, dtype=np.uint32).view(np.float32)


def _around(v: np.ndarray) -> list[np.ndarray]:
    """v and v +- 1 fp32 ulp."""
    v = _f32(v)
    with np.errstate(over="ignore"):  # fp32 max + 1 ulp is inf, which is wanted
        return [v, np.nextafter(v, np.float32(np.inf)), np.nextafter(v, np.float32(-np.inf))]


def fp8_boundary_values(fmt: str) -> np.ndarray:
    """Every value, every midpoint of adjacent values (a tie), each +-1 ulp; both signs; past max."""
    vals = _fp8_positive_values(fmt)
    mids = (vals[1:] + vals[:-1]) / 2  # exact in fp32: one more mantissa bit than the format
    top, step = vals[-1], vals[-1] - vals[-2]
    beyond = [top + step / 2, top + step, 2 * top, 1e6, np.finfo(np.float32).max, np.inf]
    pos = np.concatenate(_around(vals) + _around(mids) + _around(_f32(beyond)[:-1]) + [_f32([np.inf])])
    return np.concatenate([pos, -pos])


def bf16_boundary_values() -> np.ndarray:
    """Every finite bf16 value (both signs, subnormals), its midpoint to the next, each +-1 ulp."""
    hi = np.arange(1 << 16, dtype=np.uint32)
    hi = hi[((hi >> 7) & 0xFF) != 0xFF] << np.uint32(16)
    return np.concatenate([(hi + np.uint32(d)).view(np.float32) for d in (0, 1, 0x7FFF, 0x8000, 0x8001)]
                          + [(hi[hi != 0] - np.uint32(1)).view(np.float32)])


def special_values() -> np.ndarray:
    """+-0, +-inf, NaNs with several payloads and signs, fp32 subnormals."""
    return np.concatenate([_f32([0.0, -0.0, np.inf, -np.inf]), _bits(_NAN_BITS),
                           _bits([1, 0x80000001, 0x007FFFFF, 0x807FFFFF, 0x00400000])])


def gpu_fp8_codes(x: np.ndarray, fmt: str) -> np.ndarray:
    """``cvt.rn.satfinite``: nearest code (ties to the even code), beyond max -> max, NaN -> 0x7F."""
    with np.errstate(invalid="ignore"):  # NaN rows compute garbage here; they are replaced below
        return _gpu_fp8_codes(x, fmt)


def _gpu_fp8_codes(x: np.ndarray, fmt: str) -> np.ndarray:
    vals = _fp8_positive_values(fmt)
    mag = np.minimum(np.abs(x.astype(np.float64)), vals[-1])
    hi = np.clip(np.searchsorted(vals, np.nan_to_num(mag), side="left"), 0, len(vals) - 1)
    lo = np.maximum(hi - 1, 0)
    d_lo, d_hi = mag - vals[lo], vals[hi] - mag
    code = np.where(d_lo < d_hi, lo, np.where(d_hi < d_lo, hi, np.where(lo % 2 == 0, lo, hi)))
    code = code.astype(np.uint8) | np.where(np.signbit(x), 0x80, 0).astype(np.uint8)
    return np.where(np.isnan(x), GPU_FP8_NAN, code).astype(np.uint8)


def gpu_bf16_codes(x: np.ndarray, nearest: bool) -> np.ndarray:
    """``cvt.rn.bf16.f32`` (torch's CPU cast, nearest even) or ``cvt.rz`` (toward zero); NaN -> 0x7FFF."""
    t = torch.from_numpy(x.copy())
    rn = t.to(torch.bfloat16)
    if not nearest:  # one code toward zero wherever rounding to nearest went away from zero
        away = rn.float().abs() > t.abs()
        rn = torch.where(away, (rn.view(torch.int16) - 1).view(torch.bfloat16), rn)
    return np.where(np.isnan(x), GPU_BF16_NAN, rn.view(torch.int16).numpy().view(np.uint16)).astype(np.uint16)


def gpu_widened(codes: np.ndarray, fmt: str, dst: str) -> np.ndarray:
    """float8 codes widened as the GPU does: exactly, e5m2 +-inf kept, NaN canonical; except e5m2 ->
    bf16, where sm90 multiplies the shifted code by 2**112 and exponent 31 is an ordinary exponent."""
    ebits, mbits, bias, _ = FP8_FORMATS[fmt]
    mag = codes & 0x7F
    e, m = mag >> mbits, mag & ((1 << mbits) - 1)
    val = np.where(e == 0, m * 2.0 ** (1 - bias - mbits), (m + 2.0 ** mbits) * 2.0 ** (e.astype(np.float64) - bias - mbits))
    if fmt == "e4m3":
        val = np.where(mag == 0x7F, np.nan, val)
    elif dst != "bf16":
        top_exp = (1 << ebits) - 1
        val = np.where((e == top_exp) & (m == 0), np.inf, np.where(e == top_exp, np.nan, val))
    val = np.where(codes & 0x80, -val, val).astype(np.float32)  # exact: every float8 value is an fp32 value
    if dst == "fp32":
        out = val.view(np.uint32).astype(np.uint64)
    elif dst == "fp16":
        out = val.astype(np.float16).view(np.uint16).astype(np.uint64)
    else:
        out = (val.view(np.uint32) >> np.uint32(16)).astype(np.uint64)
    return np.where(np.isnan(val), GPU_WIDE_NAN[dst], out)


def _codes(t: torch.Tensor) -> np.ndarray:
    """A tensor's bit patterns as unsigned numpy integers (uint64 for comparing across widths)."""
    t = t.cpu()
    signed = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()]
    bits = t.view(signed).numpy().astype(np.int64)
    return (bits & ((1 << (8 * t.element_size())) - 1)).astype(np.uint64)


# ---- one launch over all values ------------------------------------------------------------------

@pytest.fixture(scope="module")
def converted(device):
    """Run the foreign kernel once over every test value; codes as numpy uint8/uint16 arrays."""
    parts = {"e4m3": fp8_boundary_values("e4m3"), "e5m2": fp8_boundary_values("e5m2"),
             "bf16": bf16_boundary_values(), "special": special_values()}
    x = np.concatenate(list(parts.values()))
    n = x.size
    xt = torch.from_numpy(x).to(device)
    e4 = torch.empty(n, dtype=torch.float8_e4m3fn, device=device)
    e5 = torch.empty(n, dtype=torch.float8_e5m2, device=device)
    bf, bz = (torch.empty(n, dtype=torch.bfloat16, device=device) for _ in range(2))
    _foreign_casts[(triton.cdiv(n, BLOCK),)](xt, e4, e5, bf, bz, n, BLOCK=BLOCK)
    out = {"x": x, "e4m3": e4.view(torch.uint8).cpu().numpy(), "e5m2": e5.view(torch.uint8).cpu().numpy(),
           "bf16": bf.view(torch.int16).cpu().numpy().view(np.uint16),
           "bf16_rz": bz.view(torch.int16).cpu().numpy().view(np.uint16)}
    start, out["slices"] = 0, {}
    for name, values in parts.items():
        out["slices"][name] = slice(start, start + values.size)
        start += values.size
    return out


def _assert_codes(x, got, want, what):
    bad = np.nonzero(got != want)[0]
    def bits(i):
        return f"{int(x[i:i + 1].view(f'u{x.itemsize}')[0]):#x}"

    shown = ", ".join(f"{x[i]!r} (bits {bits(i)}): got {int(got[i]):#x} want {int(want[i]):#x}" for i in bad[:8])
    assert bad.size == 0, (f"{what}: {bad.size} of {x.size} values convert differently from the GPU "
                           f"(mode {_platform.interpreting() and 'interpreter' or 'gpu'}, "
                           f"{interpreter_casts.describe()}): {shown}")


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_fp8_boundaries_and_ties_match_gpu(converted, fmt):
    """At every float8 value, midpoint (tie -> even code) and +-1 ulp of each, both signs, up to and
    past the largest finite value (saturating), ``x.to(float8)`` gives the GPU's code."""
    for part in (fmt, "special"):
        s = converted["slices"][part]
        x = converted["x"][s]
        _assert_codes(x, converted[fmt][s], gpu_fp8_codes(x, fmt), f"fp32->{fmt} on the {part} values")


@pytest.mark.parametrize("rounding", ["rtne", "rtz"])
def test_bf16_boundaries_and_ties_match_gpu(converted, rounding):
    """At every bf16 value, midpoint and +-1 ulp of each, ``x.to(tl.bfloat16)`` rounds to nearest even
    (and with ``fp_downcast_rounding="rtz"`` toward zero) as the GPU does, subnormals kept, NaN 0x7FFF."""
    key = "bf16" if rounding == "rtne" else "bf16_rz"
    for part in ("bf16", "e4m3", "special"):
        s = converted["slices"][part]
        x = converted["x"][s]
        _assert_codes(x, converted[key][s], gpu_bf16_codes(x, rounding == "rtne"),
                      f"fp32->bf16 {rounding} on the {part} values")


#: What an H200 (sm90) wrote for these inputs: saturation, infinities, NaNs, signed zeros, the
#: interpreter's known mis-roundings (31.015 -> 16.0, the tie 136.0 -> 144.0, 1e6 -> NaN).
GPU_TABLE = [  # (fp32 bits, e4m3 code, e5m2 code, bf16 rtne code)
    (0x7F800000, 0x7E, 0x7B, 0x7F80),  # +inf -> max finite (satfinite); bf16 keeps inf
    (0xFF800000, 0xFE, 0xFB, 0xFF80),
    (0x7FC00000, 0x7F, 0x7F, 0x7FFF),
    (0xFFC00000, 0x7F, 0x7F, 0x7FFF),  # NaN sign dropped
    (0x7F800001, 0x7F, 0x7F, 0x7FFF),  # NaN with only a low payload bit stays NaN
    (0x00000000, 0x00, 0x00, 0x0000),
    (0x80000000, 0x80, 0x80, 0x8000),
    (0x80000001, 0x80, 0x80, 0x8000),  # -tiny -> -0
    (0x41F81EB8, 0x60, 0x50, 0x41F8),  # 31.015 -> 32.0 (e4m3), 32.0 (e5m2)
    (0x43080000, 0x70, 0x58, 0x4308),  # 136.0: tie in e4m3 -> 128.0 (even); 128.0 in e5m2
    (0x49742400, 0x7E, 0x7B, 0x4974),  # 1e6 -> 448 / 57344
]


def test_documented_gpu_codes(device):
    """The special cases give the codes read on an H200 (table above)."""
    x = _bits([row[0] for row in GPU_TABLE])
    n = x.size
    xt = torch.from_numpy(x).to(device)
    e4 = torch.empty(n, dtype=torch.float8_e4m3fn, device=device)
    e5 = torch.empty(n, dtype=torch.float8_e5m2, device=device)
    bf, bz = (torch.empty(n, dtype=torch.bfloat16, device=device) for _ in range(2))
    _foreign_casts[(1,)](xt, e4, e5, bf, bz, n, BLOCK=16)
    got = list(zip(e4.view(torch.uint8).tolist(), e5.view(torch.uint8).tolist(),
                   (bf.view(torch.int16).cpu().numpy().view(np.uint16)).tolist()))
    for row, g in zip(GPU_TABLE, got):
        assert tuple(row[1:]) == g, f"fp32 bits {row[0]:#010x}: got {[hex(v) for v in g]}, GPU gives {[hex(v) for v in row[1:]]}"


@pytest.mark.parametrize("src", ["fp16", "bf16"])
def test_every_fp16_and_bf16_pattern_narrows_like_gpu(device, src):
    """Every one of the 65,536 fp16 / bf16 bit patterns converts to e4m3 and e5m2 as the GPU does
    (it widens exactly, then ``cvt.rn.satfinite``); bf16 -> fp32 keeps every bit, NaN payloads too."""
    patterns = np.arange(1 << 16, dtype=np.uint16)
    if src == "fp16":
        x, dtype = patterns.view(np.float16).astype(np.float32), torch.float16
    else:
        x, dtype = (patterns.astype(np.uint32) << np.uint32(16)).view(np.float32), torch.bfloat16
    n = patterns.size
    xt = torch.from_numpy(patterns.view(np.int16)).to(device).view(dtype)
    e4 = torch.empty(n, dtype=torch.float8_e4m3fn, device=device)
    e5 = torch.empty(n, dtype=torch.float8_e5m2, device=device)
    f32 = torch.empty(n, dtype=torch.float32, device=device)
    _foreign_narrow[(triton.cdiv(n, BLOCK),)](xt, e4, e5, f32, n, BLOCK=BLOCK)
    for fmt, out in (("e4m3", e4), ("e5m2", e5)):
        _assert_codes(x, _codes(out), gpu_fp8_codes(x, fmt).astype(np.uint64), f"{src}->{fmt}, every pattern")
    widened = _codes(f32)
    if src == "bf16":
        _assert_codes(x, widened, x.view(np.uint32).astype(np.uint64), "bf16->fp32, every pattern")
    else:  # fp16 -> fp32 is numpy's exact astype in the interpreter (not patched); NaN payloads may differ
        finite = ~np.isnan(x)
        _assert_codes(x[finite], widened[finite], x[finite].view(np.uint32).astype(np.uint64), "fp16->fp32")


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_every_fp8_code_widens_like_gpu(device, fmt):
    """Every float8 code converts to fp32, fp16 and bf16 as the GPU does (table in the docstring of
    :func:`gpu_widened`): the e4m3 NaN is NaN, not 480; e5m2 subnormals keep their value."""
    codes = np.arange(256, dtype=np.uint8)
    dtype = torch.float8_e4m3fn if fmt == "e4m3" else torch.float8_e5m2
    xt = torch.from_numpy(codes).to(device).view(dtype)
    f32 = torch.empty(256, dtype=torch.float32, device=device)
    f16 = torch.empty(256, dtype=torch.float16, device=device)
    bf = torch.empty(256, dtype=torch.bfloat16, device=device)
    _foreign_widen[(1,)](xt, f32, f16, bf, 256, BLOCK=256)
    for dst, out in (("fp32", f32), ("fp16", f16), ("bf16", bf)):
        _assert_codes(codes, _codes(out), gpu_widened(codes, fmt, dst), f"{fmt}->{dst}, every code")


# ---- the patch itself ----------------------------------------------------------------------------

@pytest.mark.skipif(not _platform.interpreting(), reason="the patch is installed only under the interpreter")
def test_installed_with_kernels_and_reported():
    """Importing kernels under the interpreter installs the patch; status() names target and version."""
    s = interpreter_casts.status()
    assert s["installed"] and s["triton"] == triton.__version__, s
    assert s["target"] == "triton.runtime.interpreter._convert_float", s
    assert any(c.startswith("fp32/fp16/bf16->fp8e4nv rtne") for c in s["conversions"]), s
    assert s["fp32 fma"].endswith("(one rounding)"), s


def test_install_is_idempotent():
    """A second install() keeps the one wrapper (no wrapper around a wrapper)."""
    import triton.runtime.interpreter as interpreter

    interpreter_casts.install()
    first = interpreter._convert_float
    interpreter_casts.install()
    assert interpreter._convert_float is first
    original = getattr(first, "__accval_interpreter_casts_original__")
    assert not hasattr(original, "__accval_interpreter_casts_original__"), "wrapper wraps a wrapper"
    assert original.__module__ == "triton.runtime.interpreter", original


@pytest.mark.parametrize("breakage", ["target-missing", "target-signature", "caller-bypasses", "bf16-storage"])
def test_unknown_layout_is_refused(monkeypatch, breakage):
    """On an interpreter without the expected internals install() raises, naming what is missing."""
    import triton.runtime.interpreter as interpreter

    if breakage == "target-missing":
        monkeypatch.delattr(interpreter, "_convert_float")
        expected = "_convert_float is missing"
    elif breakage == "target-signature":
        monkeypatch.setattr(interpreter, "_convert_float", lambda data, dtype: data)
        expected = "takes ('data', 'dtype')"
    elif breakage == "caller-bypasses":
        monkeypatch.setattr(interpreter.InterpreterBuilder, "create_fp_to_fp", lambda self, *a: None)
        expected = "create_fp_to_fp is missing or no longer calls _convert_float"
    else:
        original = interpreter._get_np_dtype
        monkeypatch.setattr(interpreter, "_get_np_dtype",
                            lambda t: np.dtype(np.float32) if t == tl.bfloat16 else original(t))
        expected = "stores bfloat16 as float32, expected uint16"
    with pytest.raises(interpreter_casts.InterpreterLayoutError) as err:
        interpreter_casts.install()
    assert expected in str(err.value) and triton.__version__ in str(err.value), (breakage, str(err.value))


@pytest.mark.parametrize("version, runs", [("3.6.0", False), ("3.5.1", False), ("2.3.1", False), ("nightly", False),
                                           ("3.7.0", True), ("3.7.1", True), ("3.9.0", True), ("3.10.0+git1a2b3c", True)])
def test_the_interpreter_needs_a_triton_that_runs_the_kernels(version, runs):
    """Triton 3.6's CPU interpreter cannot run a loop whose bounds come from ``tl.program_id`` (the
    consumer's k loop), so on a CPU an older Triton is refused with a clear error naming both versions,
    not left to fail inside every consumer launch."""
    if runs:
        _platform.check_interpreter_triton(version)
        return
    with pytest.raises(_platform.InterpreterVersionError) as err:
        _platform.check_interpreter_triton(version)
    assert version in str(err.value) and "triton>=3.7" in str(err.value), str(err.value)


def test_importing_the_kernels_on_an_old_interpreter_says_so():
    """``import accval.kernels`` under the interpreter with a Triton older than 3.7 raises that error
    (the installed Triton made to report 3.6.0 in a fresh process)."""
    import subprocess
    import sys

    code = ("import triton; triton.__version__ = '3.6.0'\n"
            "from accval.kernels import _platform\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "TRITON_INTERPRET": "1"})
    assert run.returncode != 0 and "InterpreterVersionError" in run.stderr and "triton>=3.7" in run.stderr, run.stderr[-800:]


@triton.jit
def _foreign_fma(x_ptr, y_ptr, z_ptr, out_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.fma(tl.load(x_ptr + offs), tl.load(y_ptr + offs), tl.load(z_ptr + offs)))


#: x, y, z whose fp32 fma rounds once to z's neighbour nearer the exact sum, where rounding the product
#: first (or the float64 sum) lands on the tie and goes the other way; and the one-rounding results
FMA_TIES = ([2.0**-24 * (1 + 2.0**-18), 2.0**-23 * (1 + 2.0**-20), 3.0, 2.0**-24 * (1 + 2.0**-18)],
            [1 - 2.0**-18, 1 - 2.0**-20, 0.3333333432674408, 1 - 2.0**-18],
            [1.0 + 2.0**-23, 2.0 + 2.0**-22, -1.0, -(1.0 + 2.0**-23)],
            [1.0 + 2.0**-23, 2.0 + 2.0**-22, 2.0**-25, -(1.0 + 2.0**-23)])


def test_foreign_fma_rounds_fp32_once(device):
    """``tl.fma`` in a foreign kernel rounds fp32 once, as ``fma.rn.f32`` on the GPU: Triton 3.9's
    interpreter by itself, older ones through the patch."""
    x, y, z, want = (torch.tensor(v, dtype=torch.float32) for v in FMA_TIES)
    assert ((x.double() * y.double()).float() + z != want).any(), "the cases must tell one rounding from two"
    out = torch.empty(4, device=device)
    _foreign_fma[(1,)](x.to(device), y.to(device), z.to(device), out, BLOCK=4)
    assert torch.equal(out.cpu().view(torch.int32), want.view(torch.int32)), (out.tolist(), want.tolist())


def test_fma_patch_rounds_once_where_triton_rounds_twice():
    """The replacement of an interpreter's two-rounding ``create_fma`` (what Triton before its C fma did:
    numpy multiply, then add) rounds fp32 once and leaves other dtypes to it."""

    class Handle:
        def __init__(self, data, dtype):
            self.data, self.dtype = np.asarray(data), dtype

    class Dtype:
        scalar = "fp32"

    def two_roundings(self, x, y, z):
        return Handle(x.data * y.data + z.data, z.dtype.scalar)

    patched = interpreter_casts._make_fma(two_roundings)
    x, y, z, want = (np.array(v, dtype=np.float32) for v in FMA_TIES)
    got = patched(None, Handle(x, Dtype), Handle(y, Dtype), Handle(z, Dtype))
    assert np.array_equal(got.data.view(np.int32), want.view(np.int32)), got.data
    assert not np.array_equal(two_roundings(None, Handle(x, Dtype), Handle(y, Dtype), Handle(z, Dtype)).data, want)
    halves = [Handle(v.astype(np.float16), Dtype) for v in (x, y, z)]
    assert patched(None, *halves).data.dtype == np.float16  # not fp32: Triton's own
    assert getattr(patched, "__accval_interpreter_casts_original__") is two_roundings
