"""Make Triton's CPU interpreter convert between float8, bf16, fp16 and fp32 with the GPU's bits.

What: :func:`install` replaces ``triton.runtime.interpreter._convert_float`` (the one routine the
interpreter's builder calls for float <-> float8 and fp32 <-> bfloat16 conversions, from
``cast_impl`` and ``create_fp_to_fp``, and internally for ``tl.dot`` on float8 operands) with a
wrapper that computes these conversions exactly as an sm90 GPU does and hands every other
conversion to the original unchanged:

=========================  ========  ================================================================
source -> destination      rounding  GPU lowering (Triton's NVIDIA backend, sm90) and what it gives
=========================  ========  ================================================================
fp32/bf16 -> float8e4nv    RTNE      ``cvt.rn.satfinite.e4m3x2.f32`` (bf16 widened exactly first):
fp16 -> float8e4nv                   ``cvt.rn.satfinite.e4m3x2.f16x2``: nearest, ties to even;
                                     finite values and +-inf beyond +-448 saturate to +-448
                                     (0x7E / 0xFE); every NaN gives 0x7F (sign dropped)
fp32/fp16/bf16 -> float8e5 RTNE      ``cvt.rn.satfinite.e5m2x2.*``: same rules, +-57344
                                     (0x7B / 0xFB); every NaN gives 0x7F
fp32 -> bfloat16           RTNE /    ``cvt.rn.bf16.f32`` (``llvm.nvvm.f2bf16.rn``, or LLVM's
                           none      fptrunc for a plain ``.to``): nearest, ties to even, overflow
                                     to +-inf, fp32 subnormals kept; every NaN gives 0x7FFF
fp32 -> bfloat16           RTZ       ``cvt.rz.bf16.f32``: truncation; every NaN gives 0x7FFF
float8 -> fp32/fp16/bf16   any       exact (``cvt.rn.f16x2.e4m3x2`` / ``.e5m2x2``, then widened);
                                     e5m2 +-inf stays +-inf; every NaN gives the canonical NaN
                                     (0x7FFFFFFF, 0x7FFF, 0x7FFF). Except float8e5 -> bf16, which
                                     sm90 does with a bit shift and a multiply by 2**112: there the
                                     exponent-31 codes (inf, NaN) become finite, +-(4+m) * 2**14
bf16 -> fp32               none      exact, NaN payload kept (a shift by 16 bits)
=========================  ========  ================================================================

Why: the interpreter's own routine (Triton 3.9) does not carry a rounding increment into the
exponent and rounds ties up (in e4m3: 31.015 -> 16.0 instead of 32.0; the tie 136.0 -> 144.0
instead of 128.0; 1e6 -> NaN instead of 448), truncates fp32 -> bf16 instead of rounding
(1.005859375 -> 1.0 instead of 1.0078125), turns NaNs with only low payload bits into infinities,
decodes the e4m3 NaN as 480 and e5m2 subnormals wrongly. :mod:`accval.kernels.fp8_rounding` protects
accval's own kernels; this module protects *any* Triton kernel run under the interpreter in this
process, e.g. a foreign producer plugged into the suite.

The table was read from Triton's source (``third_party/nvidia/lib/TritonNVIDIAGPUToLLVM/
ElementwiseOpToLLVM.cpp``: ``Fp32_to_Fp8E4M3Nv``, ``Fp32_to_Fp8E5M2``, ``Bf16_to_Fp8E4M3Nv``,
``Fp8E5M2_to_Bf16``, ``convertFp32ToBf16``; on compute capability >= 90 fp32 converts to float8
directly, below 90 it goes through fp16 and rounds twice, which this module does not reproduce) and
checked on an H200 (sm90, Triton 3.6.0) with plain ``.to(...)`` kernels: fp32 -> e4m3 / e5m2 / bf16
(nearest and toward zero) over 496,235 values (every float8 value, every midpoint, each +-1 ulp;
every bf16 value and midpoint +-1 ulp; +-0, +-inf, NaNs with several payloads, fp32 subnormals,
random values at five scales), every fp16 and bf16 bit pattern -> e4m3 / e5m2, every e4m3 and e5m2
code -> fp32 / fp16 / bf16 and every bf16 pattern -> fp32: all gave exactly the codes this module
gives, NaNs included.

``tl.fma`` on fp32: the GPU's ``fma.rn.f32`` rounds once. Triton 3.9's interpreter does too (its C
``fma_fp32``); older ones multiply and add in numpy, rounding twice. Where the interpreter has no
``fma_fp32``, :func:`install` also replaces ``InterpreterBuilder.create_fma`` for fp32 operands with
:func:`accval.kernels.fp8_rounding.fma_fp32` (one rounding); other dtypes keep Triton's.

Containment: the wrapper touches only the conversions above; the other float8 formats, RTZ into
float8 and anything else still go to Triton's routine. :func:`install` checks the interpreter's
layout first (:func:`_check_layout`) and raises :class:`InterpreterLayoutError` naming what is
missing on an unknown layout, rather than patching nothing. It is idempotent. :func:`status` says
what is patched and for which Triton version.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from .constants import FP8_E4M3_MAX
from .fp8_rounding import fma_fp32

#: Where the replaced routine lives, and its parameters (checked before patching).
TARGET_MODULE = "triton.runtime.interpreter"
TARGET_NAME = "_convert_float"
TARGET_PARAMETERS = ("input", "input_dtype", "output_dtype", "rounding_mode")
#: Interpreter builder methods that must reach the conversion through the module-level name.
CALLERS = ("cast_impl", "create_fp_to_fp")

#: Largest finite e5m2 value; ``cvt.rn.satfinite.e5m2x2.f32`` saturates to it.
FP8_E5M2_MAX = 57344.0
#: The code every NaN converts to on the GPU (sign dropped), for both float8 formats.
GPU_FP8_NAN = 0x7F
#: The bf16 code every NaN converts to on the GPU (``cvt.rn.bf16.f32`` / ``cvt.rz.bf16.f32``).
GPU_BF16_NAN = 0x7FFF

_MARK = "__accval_interpreter_casts_original__"


class InterpreterLayoutError(RuntimeError):
    """The installed Triton's interpreter does not have the internals this module replaces."""


def _interpreter():
    import triton.runtime.interpreter as interpreter

    return interpreter


def _triton_version() -> str:
    import triton

    return triton.__version__


def _check_layout(interpreter) -> None:
    """Raise :class:`InterpreterLayoutError` unless the interpreter looks as this module expects."""
    problems = []
    fn = getattr(interpreter, TARGET_NAME, None)
    original = getattr(fn, _MARK, fn)
    if not inspect.isfunction(original):
        problems.append(f"{TARGET_MODULE}.{TARGET_NAME} is missing (got {original!r})")
    else:
        params = tuple(inspect.signature(original).parameters)
        if params != TARGET_PARAMETERS:
            problems.append(f"{TARGET_MODULE}.{TARGET_NAME} takes {params}, expected {TARGET_PARAMETERS}")
    builder = getattr(interpreter, "InterpreterBuilder", None)
    if builder is None:
        problems.append(f"{TARGET_MODULE}.InterpreterBuilder is missing")
    else:
        for name in CALLERS:
            method = getattr(builder, name, None)
            if method is None or TARGET_NAME not in getattr(getattr(method, "__code__", None), "co_names", ()):
                problems.append(f"InterpreterBuilder.{name} is missing or no longer calls {TARGET_NAME}")
    ir = getattr(interpreter, "_ir", None)
    modes = getattr(ir, "ROUNDING_MODE", None)
    if modes is None or not all(hasattr(modes, m) for m in ("RTNE", "RTZ")):
        problems.append(f"{TARGET_MODULE}._ir.ROUNDING_MODE with RTNE and RTZ is missing")
    tl = getattr(interpreter, "tl", None)
    for attr, name in (("float32", "fp32"), ("float16", "fp16"), ("bfloat16", "bf16"),
                       ("float8e4nv", "fp8e4nv"), ("float8e5", "fp8e5")):
        if getattr(getattr(tl, attr, None), "name", None) != name:
            problems.append(f"triton.language.{attr} is missing or not named {name!r}")
    get_np_dtype = getattr(interpreter, "_get_np_dtype", None)
    if get_np_dtype is None:
        problems.append(f"{TARGET_MODULE}._get_np_dtype is missing")
    elif not problems:
        storage = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16,
                   "float8e4nv": np.uint8, "float8e5": np.uint8}
        for attr, expected in storage.items():
            got = get_np_dtype(getattr(tl, attr))
            if got != np.dtype(expected):
                problems.append(f"the interpreter stores {attr} as {got}, expected {np.dtype(expected)}")
    if problems:
        raise InterpreterLayoutError(
            f"cannot make Triton {_triton_version()}'s interpreter cast like the GPU: " + "; ".join(problems)
            + ". Its float8/bf16 conversions would differ from the GPU's; update accval/kernels/interpreter_casts.py "
            "for this Triton version")


#: The canonical NaN the GPU writes when widening a float8 NaN, per destination.
GPU_WIDE_NAN = {"fp32": 0x7FFFFFFF, "fp16": 0x7FFF, "bf16": 0x7FFF}
#: float8 name -> (torch dtype, mantissa bits, smallest normal exponent, bias, largest finite value).
_FP8 = {"fp8e4nv": (torch.float8_e4m3fn, 3, -6, 7, FP8_E4M3_MAX),
        "fp8e5": (torch.float8_e5m2, 2, -14, 15, FP8_E5M2_MAX)}
#: Storage of the wider formats in the interpreter (bf16 is kept as uint16).
_WIDE_STORAGE = {"fp32": np.dtype(np.float32), "fp16": np.dtype(np.float16), "bf16": np.dtype(np.uint16)}


def _widen_to_fp32(data: np.ndarray, name: str) -> np.ndarray:
    """fp32 / fp16 / bf16 data (interpreter storage) as fp32 values; exact."""
    expected = _WIDE_STORAGE[name]
    data = np.asarray(data)
    if data.dtype != expected:
        raise TypeError(f"interpreter cast from {name} expected a numpy {expected} array, got "
                        f"{type(data).__name__} {getattr(data, 'dtype', None)}")
    if name == "bf16":
        return (data.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return data.astype(np.float32)


def _fp32_to_fp8_satfinite(x: np.ndarray, fmt: str) -> np.ndarray:
    """``cvt.rn.satfinite``: clamp to +-max (inf included), round to nearest even; NaN -> 0x7F.

    Rounding to the format's grid is fp32's own round-to-nearest-even: for ``|x|`` of exponent ``e``
    the grid spacing is ``2**k``, ``k = max(e, EMIN) - MANT``; adding ``C = 2**(k + 23)`` puts the sum in
    a binade whose fp32 spacing is exactly ``2**k``, and subtracting ``C`` again is exact. A round-up
    into the next binade carries into the exponent by construction. Plain numpy (no torch threads).
    """
    _, mant, emin, bias, max_finite = _FP8[fmt]
    shape, x = np.shape(x), np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    bits = x.view(np.uint32)
    mag = np.minimum(np.abs(x), np.float32(max_finite))  # NaN stays NaN, +-inf saturates
    exp = ((mag.view(np.uint32) >> np.uint32(23)) & np.uint32(0xFF)).astype(np.int32) - 127
    k = np.maximum(exp, emin) - mant
    magic = ((k + 23 + 127).astype(np.uint32) << np.uint32(23)).view(np.float32)
    with np.errstate(invalid="ignore"):  # NaN rows; replaced below
        rounded = (mag + magic) - magic
    rbits = rounded.view(np.uint32)
    rexp = ((rbits >> np.uint32(23)) & np.uint32(0xFF)).astype(np.int32) - 127
    normal = ((rexp + bias) << mant) | ((rbits >> np.uint32(23 - mant)) & ((1 << mant) - 1)).astype(np.int32)
    with np.errstate(invalid="ignore"):
        subnormal = (rounded * np.float32(2.0 ** (mant - emin))).astype(np.int32)  # exact integer 0..2**mant
    code = np.where(rexp >= emin, normal, subnormal).astype(np.uint8)
    code |= ((bits >> np.uint32(24)) & np.uint32(0x80)).astype(np.uint8)
    code[np.isnan(x)] = GPU_FP8_NAN
    return code.reshape(shape)


def _fp32_to_bf16(x: np.ndarray, nearest: bool) -> np.ndarray:
    """``cvt.rn.bf16.f32`` (nearest even) or ``cvt.rz.bf16.f32`` (truncation) on the bits; NaN -> 0x7FFF."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = np.isnan(x)
    if nearest:
        # Adding 0x7FFF + lsb rounds the low half to nearest even and carries into the exponent
        # (up to +-inf past the largest bf16). NaN bits may wrap here; they are replaced below.
        with np.errstate(over="ignore"):
            bits = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    out = (bits >> np.uint32(16)).astype(np.uint16)
    out[nan] = GPU_BF16_NAN
    return out.reshape(x.shape)


def _fp8_widening_table(src: str, dst: str) -> np.ndarray:
    """For each of the 256 float8 codes, the GPU's result in ``dst`` storage (see the module table)."""
    codes = np.arange(256, dtype=np.uint8)
    values = torch.from_numpy(codes).view(_FP8[src][0]).float().numpy()  # exact decode
    if src == "fp8e5" and dst == "bf16":
        # sm90 shifts the code into bf16 position and multiplies by 2**112: exponent 31 is not special.
        special = (codes & 0x7C) == 0x7C
        magnitude = (4.0 + (codes & 0x03)) * 2.0 ** 14
        values = np.where(special, np.where(codes & 0x80, -magnitude, magnitude), values).astype(np.float32)
    if dst == "fp32":
        table = values.view(np.uint32).copy()
    elif dst == "fp16":
        table = values.astype(np.float16).view(np.uint16)  # exact: every float8 value is an fp16 value
    else:
        table = (values.view(np.uint32) >> np.uint32(16)).astype(np.uint16)  # exact likewise
    table[np.isnan(values)] = GPU_WIDE_NAN[dst]
    return table


_WIDENING_TABLES: dict = {}


def _fp8_widen(codes: np.ndarray, src: str, dst: str) -> np.ndarray:
    """float8 codes -> fp32 / fp16 / bf16 storage, exactly; NaN canonical (a 256-entry table)."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise TypeError(f"interpreter cast from {src} expected a numpy uint8 array, got {codes.dtype}")
    table = _WIDENING_TABLES.get((src, dst))
    if table is None:
        table = _WIDENING_TABLES[(src, dst)] = _fp8_widening_table(src, dst)
    return table[codes]


def _make_wrapper(original, interpreter):
    rtne, rtz = interpreter._ir.ROUNDING_MODE.RTNE, interpreter._ir.ROUNDING_MODE.RTZ

    def _gpu_exact(input, src, dst, rounding_mode):
        """The GPU's result for this conversion, or None where Triton's routine is kept."""
        if src in _WIDE_STORAGE and dst in _FP8 and rounding_mode == rtne:
            return _fp32_to_fp8_satfinite(_widen_to_fp32(input, src), dst)
        if src == "fp32" and dst == "bf16" and (rounding_mode is None or rounding_mode == rtne):
            return _fp32_to_bf16(_widen_to_fp32(input, src), nearest=True)
        if src == "fp32" and dst == "bf16" and rounding_mode == rtz:
            return _fp32_to_bf16(_widen_to_fp32(input, src), nearest=False)
        if src in _FP8 and dst in _WIDE_STORAGE:
            return _fp8_widen(input, src, dst)
        if src == "bf16" and dst == "fp32":
            return _widen_to_fp32(input, src).view(np.uint32)
        return None

    def _convert_float(input, input_dtype, output_dtype, rounding_mode):
        src, dst = getattr(input_dtype, "name", None), getattr(output_dtype, "name", None)
        result = _gpu_exact(input, src, dst, rounding_mode)
        if result is None:
            return original(input, input_dtype, output_dtype, rounding_mode)
        return np.asarray(result).reshape(np.shape(input))  # an array of the input's shape, 0-d included

    setattr(_convert_float, _MARK, original)
    _convert_float.__doc__ = f"GPU-exact float8/bf16 conversions (kernels.interpreter_casts), else {TARGET_NAME}."
    return _convert_float


#: The conversions the wrapper replaces, for status().
PATCHED_CONVERSIONS = (
    "fp32/fp16/bf16->fp8e4nv rtne (satfinite +-448, NaN->0x7F)",
    "fp32/fp16/bf16->fp8e5 rtne (satfinite +-57344, NaN->0x7F)",
    "fp32->bf16 rtne (NaN->0x7FFF)",
    "fp32->bf16 rtz (NaN->0x7FFF)",
    "fp8e4nv/fp8e5->fp32/fp16/bf16 (exact, canonical NaN; fp8e5->bf16 as sm90)",
    "bf16->fp32 (exact)",
)


def _native_fma(interpreter) -> bool:
    """Whether this interpreter's ``tl.fma`` rounds fp32 once by itself (Triton's C ``fma_fp32``)."""
    return hasattr(getattr(interpreter, "_interpreter", None), "fma_fp32")


def _make_fma(original):
    def create_fma(self, x, y, z):
        if np.asarray(z.data).dtype != np.float32:
            return original(self, x, y, z)
        xs, ys, zs = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
                      for a in np.broadcast_arrays(x.data, y.data, z.data))
        return type(z)(fma_fp32(xs, ys, zs).numpy(), z.dtype.scalar)

    setattr(create_fma, _MARK, original)
    create_fma.__doc__ = "tl.fma on fp32 rounded once (kernels.fp8_rounding.fma_fp32), else Triton's create_fma."
    return create_fma


def _fma_status(interpreter) -> str:
    """Whose fp32 ``tl.fma`` this interpreter runs, and how it rounds."""
    if _native_fma(interpreter):
        return "Triton's (one rounding)"
    if hasattr(getattr(interpreter.InterpreterBuilder, "create_fma", None), _MARK):
        return "accval.kernels.fp8_rounding.fma_fp32 (one rounding)"
    return "Triton's (two roundings)"


def _install_fma(interpreter) -> None:
    """Where the interpreter's fp32 ``tl.fma`` rounds twice, make it round once (idempotent)."""
    builder = interpreter.InterpreterBuilder
    current = getattr(builder, "create_fma", None)
    if current is None or hasattr(current, _MARK) or _native_fma(interpreter):
        return
    builder.create_fma = _make_fma(current)


def installed() -> bool:
    """True when this process' interpreter converts through the GPU-exact wrapper."""
    import sys

    interpreter = sys.modules.get(TARGET_MODULE)
    return interpreter is not None and hasattr(getattr(interpreter, TARGET_NAME, None), _MARK)


def install() -> None:
    """Replace the interpreter's float8/bf16 conversions (idempotent); raise on an unknown layout."""
    interpreter = _interpreter()
    _check_layout(interpreter)
    _install_fma(interpreter)
    current = getattr(interpreter, TARGET_NAME)
    if hasattr(current, _MARK):
        return
    setattr(interpreter, TARGET_NAME, _make_wrapper(current, interpreter))


def uninstall() -> None:
    """Restore Triton's own conversion (for tests that show what the interpreter does unpatched)."""
    interpreter = _interpreter()
    current = getattr(interpreter, TARGET_NAME, None)
    if hasattr(current, _MARK):
        setattr(interpreter, TARGET_NAME, getattr(current, _MARK))
    fma = getattr(interpreter.InterpreterBuilder, "create_fma", None)
    if hasattr(fma, _MARK):
        interpreter.InterpreterBuilder.create_fma = getattr(fma, _MARK)


def status() -> dict:
    """What is patched, where, and for which Triton version (for reports and the pytest header)."""
    active = installed()
    return {
        "installed": active,
        "triton": _triton_version(),
        "target": f"{TARGET_MODULE}.{TARGET_NAME}",
        "conversions": PATCHED_CONVERSIONS if active else (),
        "fp32 fma": _fma_status(_interpreter()),
    }


def describe() -> str:
    """One line for a report header."""
    s = status()
    if not s["installed"]:
        return f"interpreter casts: Triton {s['triton']}'s own (not patched)"
    return f"interpreter casts: GPU-exact float8/bf16 conversions via {s['target']} (Triton {s['triton']})"
