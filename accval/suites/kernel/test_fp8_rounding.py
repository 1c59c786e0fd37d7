"""Exact FP8 / bf16 / fp16 rounding inside kernels, on the GPU and in the CPU interpreter.

Triton's interpreter rounds fp32 -> float8 wrongly (31.015 -> 16.0); kernels/fp8_rounding.py rounds
in fp32 first. These tests run the kernel helpers themselves and compare with torch's casts.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from hypothesis import given
from hypothesis import strategies as st

from kernels import _platform
from kernels.constants import FP8_DTYPE, FP8_E4M3_MAX
from kernels.fp8_rounding import round_through, to_fp8_e4m3

from .checks import assert_exact, assert_fp8_equal


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
