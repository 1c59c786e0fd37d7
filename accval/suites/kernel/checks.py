"""Comparison helpers, written once, each reporting the worst element (STYLE.md: Tests).

Tolerances are named constants with the reason behind them.
"""

from __future__ import annotations

import torch

from kernels.constants import FP8_DTYPE, pad4

#: bf16 keeps 8 significant bits (7 stored): rounding to nearest moves a value by at most half a
#: spacing, 2**(e-8) <= 2**-8 of its magnitude.
BF16_HALF_ULP = 2.0**-8
#: Accumulation error of the consumer relative to sum(|a|*|b|): K/128 block partial sums in fp32
#: plus two scale multiplies per block. On Hopper the FP8 tensor cores accumulate each 128-deep
#: block with only ~14 significant bits before it is promoted to fp32 (as reported for DeepSeek-V3);
#: one case on an H100 (2026-11-25, this suite) showed at least 6.3e-4 * sum(|a||b|); in the CPU
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


def assert_fp8_equal(actual: torch.Tensor, expected: torch.Tensor, what: str, context: str) -> None:
    """FP8 codes equal bit for bit (compared through a uint8 view; NaN codes compare too)."""
    if actual.dtype != FP8_DTYPE or expected.dtype != FP8_DTYPE:
        raise AssertionError(f"{what}: expected float8_e4m3fn tensors, got {actual.dtype} and {expected.dtype}; {context}")
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}; {context}")
    a, e = actual.contiguous().view(torch.uint8), expected.contiguous().view(torch.uint8)
    diff = a != e
    if diff.any():
        idx = tuple(int(i) for i in diff.nonzero()[0])
        n = int(diff.sum())
        raise AssertionError(
            f"{what}: {n} of {diff.numel()} FP8 codes differ; first at {idx}: got {actual[idx].float().item()} "
            f"expected {expected[idx].float().item()}; {context}"
        )


def assert_exact(actual: torch.Tensor, expected: torch.Tensor, what: str, context: str) -> None:
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}; {context}")
    diff = ~((actual == expected) | (actual.isnan() & expected.isnan()))
    if diff.any():
        idx = tuple(int(i) for i in diff.nonzero()[0])
        raise AssertionError(f"{what}: {int(diff.sum())} of {diff.numel()} values differ; first at {idx}: got "
                             f"{actual[idx].item()!r} expected {expected[idx].item()!r}; {context}")


def assert_within_bound(actual: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor, what: str, context: str) -> float:
    """Every ``|actual - ref| <= bound``; returns the worst ratio err/bound (for reporting)."""
    err = (actual.double() - ref.double()).abs()
    if not torch.isfinite(actual).all():
        raise AssertionError(f"{what}: non-finite values in the result; {context}")
    ratio = err / bound.double().clamp_min(1e-30)
    worst = int(ratio.argmax())
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), ratio.shape))
    if ratio.flatten()[worst] > 1:
        raise AssertionError(
            f"{what}: |err| {err[idx].item():.4g} exceeds bound {bound[idx].item():.4g} at {idx} (got "
            f"{actual[idx].item():.6g}, ref {ref[idx].item():.6g}); {int((ratio > 1).sum())} elements out; {context}"
        )
    return float(ratio.flatten()[worst])


def check_layout(fp8: torch.Tensor, scale: torch.Tensor, n_groups: int, m: int, k: int, context: str) -> None:
    """The producer's buffer contract, exactly (DOMAIN.md section 1)."""
    problems = []
    if fp8.dtype != FP8_DTYPE:
        problems.append(f"fp8 dtype {fp8.dtype} != float8_e4m3fn")
    if tuple(fp8.shape) != (n_groups, m, k):
        problems.append(f"fp8 shape {tuple(fp8.shape)} != {(n_groups, m, k)}")
    elif fp8.stride() != (m * k, k, 1) and m > 0:
        problems.append(f"fp8 strides {fp8.stride()} != {(m * k, k, 1)} (padded or non-contiguous)")
    if scale.dtype != torch.float32:
        problems.append(f"scale dtype {scale.dtype} != float32")
    want = (n_groups, k // 128, pad4(m))
    if tuple(scale.shape) != want:
        problems.append(f"scale shape {tuple(scale.shape)} != {want} ([G, K/128, pad4(M)])")
    elif not scale.is_contiguous():
        problems.append(f"scale strides {scale.stride()} are not contiguous")
    if problems:
        raise AssertionError("layout contract violated: " + "; ".join(problems) + f"; {context}")
