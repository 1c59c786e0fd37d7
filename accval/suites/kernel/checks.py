"""Comparison helpers, written once, each reporting the worst element.

Tolerances are named constants with the reason behind them.
"""

from __future__ import annotations

import torch

from accval.kernels.constants import FP8_DTYPE, pad4

#: bf16 keeps 8 significant bits (7 stored): rounding to nearest moves a value by at most half a
#: spacing, 2**(e-8) <= 2**-8 of its magnitude.
BF16_HALF_ULP = 2.0**-8
#: Accumulation error of the consumer relative to sum(|a|*|b|): K/128 block partial sums in fp32
#: plus two scale multiplies per block. On Hopper the FP8 tensor cores accumulate each 128-deep
#: block with only ~14 significant bits before it is promoted to fp32 (as reported for DeepSeek-V3);
#: one case on an H100 (this suite) showed at least 6.3e-4 * sum(|a||b|); in the CPU
#: interpreter (exact products, fp32 sums) well under 1e-5. The bound is 2**-9 ~ 1.95e-3: a misread
#: scale or row moves results by O(100%).
FP32_ACC_TOL = 2.0**-9
#: e4m3 keeps 4 significant bits (3 stored): quantizing an activation moves it by at most 2**-4 of
#: its magnitude (half a spacing), so a dot product moves by at most 2**-4 * sum(|a|*|w|).
FP8_HALF_ULP = 2.0**-4
#: RMS relative error of the whole FP8 chain against the bf16 fallback. Rounding to 4 significant
#: bits gives ~2**-4/sqrt(3) ~ 3.6% per element at worst alignment; averaged over a dot product and
#: over real exponents it measured 1.9-2.3% on CPU and GPU (random Gaussian data, DSv4-like shapes).
CHAIN_RMS_TOL = 0.035


def _nan_canonical(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes with both NaN codes (0x7F, 0xFF) as 0x7F: a NaN's sign is not part of the contract
    (``inf / inf`` is a negative NaN on x86 and a positive one on CUDA; the GPU's e4m3 cast drops it)."""
    u = codes.contiguous().view(torch.uint8)
    return torch.where(u == 0xFF, torch.full_like(u, 0x7F), u)


#: the axes of a producer's codes ``[G, M, K]`` and scales ``[G, K/128, pad4(M)]`` (``[G, words, pad4(M)]``
#: for ue8m0-packed), as failure messages name an element
CODE_AXES = "g, m, k"
#: the axes of a consumer's output ``[G, M, N]``
OUT_AXES = "g, m, n"


def scale_axes(recipe) -> str:
    from accval.kernels.recipes import get_recipe

    return "g, word, m" if get_recipe(recipe).packed else "g, kb, m"


def at(idx: tuple, axes: str | None = None, rows: int | None = None) -> str:
    """An element's index as a message gives it: ``[g, kb, m] = (0, 1, 6)`` when the axes are known, and a
    scale padding row (``m >= rows``, the call's M) said to be one."""
    text = f"[{axes}] = {idx}" if axes else str(idx)
    if rows is not None and idx and idx[-1] >= rows:
        text += f" (a padding row: m >= M = {rows}; the contract's rows M..pad4(M)-1 are 0)"
    return text


def assert_fp8_equal(actual: torch.Tensor, expected: torch.Tensor, what: str, context: str, axes: str | None = None
                     ) -> None:
    """FP8 codes equal bit for bit (compared through a uint8 view), a NaN equal to a NaN of either sign."""
    if actual.dtype != FP8_DTYPE or expected.dtype != FP8_DTYPE:
        raise AssertionError(f"{what}: expected float8_e4m3fn tensors, got {actual.dtype} and {expected.dtype}; {context}")
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}; {context}")
    a, e = _nan_canonical(actual), _nan_canonical(expected)
    diff = a != e
    if diff.any():
        idx = tuple(int(i) for i in diff.nonzero()[0])
        n = int(diff.sum())
        raise AssertionError(
            f"{what}: {n} of {diff.numel()} FP8 codes differ; first at {at(idx, axes)}: got {actual[idx].float().item()} "
            f"expected {expected[idx].float().item()}; {context}"
        )


def assert_exact(actual: torch.Tensor, expected: torch.Tensor, what: str, context: str, axes: str | None = None,
                 rows: int | None = None) -> None:
    """Equal element for element, NaN equal to NaN; ``axes`` and ``rows`` (scales: the call's M) name the
    first element that differs (:func:`at`)."""
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}; {context}")
    diff = ~((actual == expected) | (actual.isnan() & expected.isnan()))
    if diff.any():
        idx = tuple(int(i) for i in diff.nonzero()[0])
        raise AssertionError(f"{what}: {int(diff.sum())} of {diff.numel()} values differ; first at {at(idx, axes, rows)}: got "
                             f"{actual[idx].item()!r} expected {expected[idx].item()!r}; {context}")


def worst_ratio(actual: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor) -> float:
    """The worst ``|actual - ref| / bound`` (inf where ``actual`` is not finite): what a report states of a
    case, passed or failed."""
    if not torch.isfinite(actual).all():
        return float("inf")
    return float(((actual.double() - ref.double()).abs() / bound.double().clamp_min(1e-30)).max())


def assert_within_bound(actual: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor, what: str, context: str,
                        nonfinite_why: str = "", axes: str | None = None) -> float:
    """Every ``|actual - ref| <= bound``; returns the worst ratio err/bound (for reporting). A non-finite
    result where the reference is finite fails naming the first one and ``nonfinite_why`` (what in the
    inputs can make one)."""
    err = (actual.double() - ref.double()).abs()
    wrong = ~torch.isfinite(actual) & torch.isfinite(ref)
    if wrong.any():
        idx = tuple(int(i) for i in wrong.nonzero()[0])
        raise AssertionError(f"{what}: {int(wrong.sum())} of {wrong.numel()} results non-finite where the reference is "
                             f"finite; first at {at(idx, axes)}: got {actual[idx].item()}, ref {ref[idx].item():.6g}"
                             f"{'; ' + nonfinite_why if nonfinite_why else ''}; {context}")
    if not torch.isfinite(ref).all():
        idx = tuple(int(i) for i in (~torch.isfinite(ref)).nonzero()[0])
        raise AssertionError(f"{what}: the reference is not finite at {at(idx, axes)} (ref {ref[idx].item()}, got "
                             f"{actual[idx].item()}); {context}")
    ratio = err / bound.double().clamp_min(1e-30)
    worst = int(ratio.argmax())
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), ratio.shape))
    if ratio.flatten()[worst] > 1:
        raise AssertionError(
            f"{what}: |err| {err[idx].item():.4g} exceeds bound {bound[idx].item():.4g} at {at(idx, axes)} (got "
            f"{actual[idx].item():.6g}, ref {ref[idx].item():.6g}); {int((ratio > 1).sum())} elements out; {context}"
        )
    return float(ratio.flatten()[worst])


def check_layout(fp8: torch.Tensor, scale: torch.Tensor, n_groups: int, m: int, k: int, context: str,
                 recipe="fp32-div") -> None:
    """The producer's buffer contract, exactly (``docs/contract.md``): ``fp8 [G, M, K]`` with strides
    ``(M*K, K, 1)`` (those of size-1 dimensions address nothing and may be anything); scales contiguous
    ``[G, K/128, pad4(M)]`` fp32 (``[G, ceil(K/512), pad4(M)]`` int32 for ``ue8m0-packed``)."""
    from accval.implementations import output_problems
    from accval.kernels.recipes import get_recipe

    r = get_recipe(recipe)
    problems = output_problems(fp8, scale, n_groups, m, k, r)
    if tuple(fp8.shape) == (n_groups, m, k) and not fp8.is_contiguous():  # a size-1 dimension's stride is no layout
        problems.append(f"fp8 strides {fp8.stride()} != {(m * k, k, 1)} (padded or non-contiguous)")
    if tuple(scale.shape) == r.scale_shape(n_groups, k, pad4(m)) and not scale.is_contiguous():
        problems.append(f"scale strides {scale.stride()} are not contiguous")
    if problems:
        raise AssertionError("layout contract violated: " + "; ".join(problems) + f"; {context}")


# --- graded properties: implementations that are not bit-exact with their recipe's mirror -------------

#: How far a producer's block absmax may lie from the mirror's, relative. The mirror rounds the rotated
#: slice to the input dtype (bf16: half an ulp, 2**-9 relative) before taking the absmax, as the legacy
#: path does; a fused kernel that skips that rounding, or rotates with one FMA, differs by up to that
#: plus a few fp32 ulps. 2**-8 is twice the rounding bound.
AMAX_REL_TOL = 2.0**-8
#: How far a producer's block absmax may lie outside the range between the mirror's (rotated slice rounded
#: to the input dtype) and the exact one's (float64): the rotation's own fp32 rounding (a multiply and an
#: add, or one FMA), a few fp32 ulps. 2**-20 is 8 of them. Wider (AMAX_REL_TOL again) passed a producer
#: whose every scale was rounded to bf16 (86% of its scales off both absmaxes' rule).
ROTATION_REL_TOL = 2.0**-20
#: A non-exact producer's codes may differ from the mirror's quantization at the producer's own scale
#: by one FP8 code (a faithful rounding: an approximate division, or y one input-dtype ulp away).
#: Measured on an NVIDIA H200: TensorRT-LLM's and vLLM's producers stay within 1.000 ULP of
#: x/scale for float64 x, accval's within 1.058 (it rounds the rotated slice to bf16 first).
FP8_CODE_TOL_ULPS = 1
#: Quantization error per element relative to the exact value, as a multiple of the e4m3 spacing:
#: half a spacing for exact rounding, one for a faithful one (see :func:`quant_error_bound`).
ROUNDING_ULPS = {True: 0.5, False: 1.0}


#: A rounding to nearest leaves the results that differ from a reference's rounding (near-ties, an
#: approximate division, an operand rounded differently) as often below it as above: the direction of each
#: is a fair coin. A directed rounding (truncation toward zero) moves every one the same way. p below this
#: under the binomial test of "fair" is that (a fair rounding reaches it once in 10**9 cases; truncation
#: at ~30 differing results).
DIRECTED_ROUNDING_P = 1e-9


def assert_not_directed(toward_zero: int, away: int, what: str, context: str) -> None:
    """``toward_zero`` of the results that differ from the reference's rounding are smaller in magnitude,
    ``away`` larger: fail when the split is one-sided beyond :data:`DIRECTED_ROUNDING_P` (a pure function
    of the counts, scipy's exact binomial test)."""
    from scipy.stats import binomtest

    n = toward_zero + away
    if n and binomtest(toward_zero, n, 0.5).pvalue < DIRECTED_ROUNDING_P:
        side = "toward zero" if toward_zero > away else "away from zero"
        raise AssertionError(f"{what}: rounded {side}, not to nearest: of {n} results that differ from the "
                             f"reference's rounding, {toward_zero} are smaller in magnitude and {away} larger "
                             f"(binomial p < {DIRECTED_ROUNDING_P:g}); {context}")


def fp8_ordinal(codes: torch.Tensor) -> torch.Tensor:
    """e4m3 codes -> integers in value order (adjacent values differ by 1; +0 and -0 are both 0)."""
    u = codes.contiguous().view(torch.uint8).to(torch.int32)
    mag = u & 0x7F
    return torch.where((u & 0x80) != 0, -mag, mag)


def fp8_is_nan(codes: torch.Tensor) -> torch.Tensor:
    return (codes.contiguous().view(torch.uint8) & 0x7F) == 0x7F


def quant_error_bound(y: torch.Tensor, scale: torch.Tensor, exact: bool, input_eps: float) -> torch.Tensor:
    """The most a dequantized element ``code * s`` may differ from the exact inverse-RoPE value ``y``.

    Derivation: ``t = y / s`` is rounded to an e4m3 code. Where ``|t| >= 2**-6`` (normal) the code
    spacing is at most ``2**-3 |t|``; below it (subnormal) it is ``2**-9``. A correct rounding is off by
    at most half a spacing, a faithful one by one (:data:`ROUNDING_ULPS`), so ``|code*s - y| <=
    rho * (2**-3 |y| + 2**-9 s)``. Before that, the implementation may round the rotated value to
    the input dtype (``|y' - y| <= 2**-8 |y|`` for bf16, ``input_eps``) or saturate a ``t`` pushed
    just past 448 by that rounding of the absmax (the same size); together ``input_eps * |y|``."""
    rho = ROUNDING_ULPS[exact]
    return rho * (2.0**-3 * y.abs() + 2.0**-9 * scale) + input_eps * y.abs()


def scale_window(amax: torch.Tensor, recipe, rel: float = AMAX_REL_TOL) -> tuple[torch.Tensor, torch.Tensor]:
    """The scales a producer of ``recipe`` may choose for a block whose absmax is ``amax`` (give ``rel``
    :data:`ROTATION_REL_TOL` when ``amax`` already spans the mirror's and the exact one's): the recipe's rule
    applied at ``amax * (1 -+ rel)`` (its rule is monotone), widened by one fp32 ulp each side for a
    reciprocal or division rounded the other way."""
    from accval.kernels.recipes import block_scales

    a = amax.float()
    lo = block_scales(a * (1 - rel), recipe)
    hi = block_scales(a * (1 + rel), recipe)
    return torch.nextafter(lo, torch.zeros_like(lo)), torch.nextafter(hi, torch.full_like(hi, float("inf")))


def op_calls(op, fn) -> tuple[object, list]:
    """``fn()``'s result and the calls it made of the torch op ``op`` (an ``OpOverloadPacket`` or
    ``OpOverload``), each as ``(overload, args, kwargs)``, in order; calls made inside another op's
    kernel are not seen. What an implementation passes to its own op is what ``opcheck`` should be given:
    an engine's op need not take the contract's arguments (vLLM's producer op takes its launch's
    arguments, precomputed by the Python function around it)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    overload = op if isinstance(op, torch._ops.OpOverload) else None
    name = op._schema.name if overload is not None else op._qualified_op_name
    calls = []

    class _Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is overload or (overload is None and func._schema.name == name):
                calls.append((func, args, kwargs))
            return func(*args, **kwargs)

    with _Recorder():
        result = fn()
    return result, calls
