"""The CPU-capable FP8 chain (chain backend ``"torch"``) against the Triton kernels.

The A/B runs arm B on a CPU through this chain, so it must be the kernels' arithmetic, not an
approximation of it: its producer is bit-identical to the Triton producer (``test_producer``
proves the mirror reference equal to the kernel), and its consumer is held here to the Triton
consumer, and to the same address arithmetic (a drifted producer layout corrupts both alike).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

import accval.kernels as kernels
from accval.kernels.constants import FP8_DTYPE, pad4
from accval.kernels.reference import fp8_block_bmm_abs_ref

from .cases import ProducerCase, make_inputs, producer_cases, random_weight
from .checks import BF16_HALF_ULP, FP32_ACC_TOL, assert_within_bound


def _consumer_inputs(g, m, n, k, seed, device):
    gen = torch.Generator().manual_seed(seed)
    a = (torch.randn(g, m, k, generator=gen) * 40).clamp(-448, 448).to(FP8_DTYPE)
    a_scale = torch.zeros(g, k // 128, pad4(m))
    a_scale[:, :, :m] = torch.rand(g, k // 128, m, generator=gen) + 0.01
    b = (torch.randn(g, n, k, generator=gen) * 40).clamp(-448, 448).to(FP8_DTYPE)
    b_scale = torch.rand(g, n // 128, k // 128, generator=gen) + 0.01
    return tuple(t.to(device) for t in (a, a_scale, b, b_scale))


@pytest.mark.parametrize("m", [1, 3, 37, 130], ids=lambda m: f"M{m}")
def test_emulated_consumer_matches_triton_consumer(m, device):
    """Emulated vs Triton: within the FP32 accumulation bound; against the CPU interpreter also at least
    99% of outputs bit-equal (they differ only where fp32 sums in another order round differently; on a
    GPU the tensor cores sum in their own order, so only the bound applies there)."""
    a, a_scale, b, b_scale = _consumer_inputs(2, m, 256, 384, seed=m, device=device)
    emu = kernels.fp8_block_bmm(a, a_scale, b, b_scale, backend="emulated")
    tri = kernels.fp8_block_bmm(a, a_scale, b, b_scale, backend="triton")
    # both round an fp32 sum to bf16: sums a hair apart can round one bf16 ulp apart (2 half ulps)
    bound = (FP32_ACC_TOL * fp8_block_bmm_abs_ref(a, a_scale, b, b_scale)
             + 2 * BF16_HALF_ULP * torch.maximum(emu.double().abs(), tri.double().abs()) + 1e-30)
    assert_within_bound(emu, tri, bound, "emulated vs triton consumer", f"M={m}")
    if str(device) != "cpu":
        return
    equal = (emu == tri).double().mean().item()
    assert equal >= 0.99, f"only {equal:.4f} of outputs bit-equal at M={m}"


@pytest.mark.parametrize("rows_extra", [4, 8], ids=lambda r: f"pad+{r}")
def test_emulated_consumer_reads_drifted_layout_like_the_kernel(rows_extra, device):
    """A scale buffer padded past pad4(M) (scale-pad-btm): both consumers read the same wrong
    addresses, so they agree with each other and both differ from the correct result."""
    g, m, n, k = 2, 1001, 128, 256
    a, a_scale, b, b_scale = _consumer_inputs(g, m, n, k, seed=rows_extra, device=device)
    drifted = torch.zeros(g, k // 128, pad4(m) + rows_extra, device=device)
    drifted[:, :, :m] = a_scale[:, :, :m]
    good = kernels.fp8_block_bmm(a, a_scale, b, b_scale, backend="emulated")
    emu = kernels.fp8_block_bmm(a, drifted, b, b_scale, backend="emulated", check_contract=False)
    tri = kernels.fp8_block_bmm(a, drifted, b, b_scale, backend="triton", check_contract=False)
    bound = (FP32_ACC_TOL * fp8_block_bmm_abs_ref(a, a_scale, b, b_scale).abs().amax()
             + 2 * BF16_HALF_ULP * torch.maximum(emu.double().abs(), tri.double().abs()) + 1e-30)
    assert ((emu.double() - tri.double()).abs() <= bound).all(), "the two consumers read a drifted layout differently"
    assert not torch.equal(emu, good), "a drifted scale layout did not change the emulated consumer's output"


@settings(max_examples=6, deadline=None)
@given(case=producer_cases(max_tokens=40))
def test_torch_chain_equals_triton_chain(case, device):
    """``o_a_proj_fp8_chain(backend="torch")`` vs ``backend="triton"`` on the same inputs: within the
    FP32 accumulation bound of the consumer (the producers are bit-identical)."""
    case = ProducerCase(**{**case.__dict__, "dtype": torch.bfloat16})
    o, pos, cache = make_inputs(case, device)
    k = case.heads_per_group * case.head_dim
    w_fp8, w_scale = kernels.quantize_weight_fp8(random_weight(case.n_groups, 128, k, case.seed, device))
    args = (o, pos, cache, w_fp8, w_scale, case.n_groups, case.heads_per_group, case.nope_dim, case.rope_dim, case.is_neox)
    with kernels.provenance.capture() as ran:
        torch_chain = kernels.o_a_proj_fp8_chain(*args, backend="torch")
    assert [(r.op, r.impl) for r in ran if r.op in ("producer", "consumer")] == [
        ("producer", "torch-reference"), ("consumer", "emulated")], ran
    triton_chain = kernels.o_a_proj_fp8_chain(*args, backend="triton")
    fp8, scale = kernels.inv_rope_fp8_quant_ref(o, pos, cache, case.n_groups, case.heads_per_group, case.nope_dim,
                                                case.rope_dim, 128, case.is_neox)
    abs_ref = fp8_block_bmm_abs_ref(fp8, scale, w_fp8, w_scale).transpose(0, 1)
    bound = (FP32_ACC_TOL * abs_ref
             + 2 * BF16_HALF_ULP * torch.maximum(torch_chain.double().abs(), triton_chain.double().abs()) + 1e-30)
    assert_within_bound(torch_chain, triton_chain, bound, "torch chain vs triton chain", f"{case}")


def test_unknown_chain_backend_is_a_value_error():
    case = ProducerCase(m=4, n_groups=1, heads_per_group=1)
    o, pos, cache = make_inputs(case, "cpu")
    w_fp8, w_scale = kernels.quantize_weight_fp8(random_weight(1, 128, case.head_dim, 0, "cpu"))
    with pytest.raises(ValueError, match="backend: expected one of"):
        kernels.o_a_proj_fp8_chain(o, pos, cache, w_fp8, w_scale, 1, 1, case.nope_dim, case.rope_dim, backend="cuda-fast")


def test_emulated_consumer_reads_every_fp8_code_as_torch_does():
    """The emulated consumer's table lookup gives torch's own float64 value of all 256 codes (NaNs at
    0x7f and 0xff included), in any shape and for strided views."""
    from accval.kernels.fp8_block_bmm import _fp8_to_double

    codes = torch.arange(256, dtype=torch.uint8).view(FP8_DTYPE)
    got, want = _fp8_to_double(codes), codes.double()
    assert torch.equal(got.isnan(), want.isnan()) and int(want.isnan().sum()) == 2
    assert torch.equal(got[~want.isnan()], want[~want.isnan()])
    block = codes[torch.randperm(256, generator=torch.Generator().manual_seed(0))].view(4, 8, 8)[:, 1:5, ::2]
    assert torch.equal(_fp8_to_double(block).nan_to_num(7.0), block.double().nan_to_num(7.0))


def test_emulated_consumer_keeps_weight_values_only_while_the_weight_is_unchanged():
    """The float64 values of a weight are kept for the weight tensor (and views of it) while it lives
    and is unchanged: an in-place change, another view of it, or a new tensor at the freed address
    are converted afresh, so a cached value never stands for other codes."""
    import gc

    from accval.kernels.fp8_block_bmm import _WeightValues

    values = _WeightValues()
    w = torch.randn(2, 128, 256).to(FP8_DTYPE)
    first = values(w)
    assert torch.equal(first, w.double()) and values(w) is first  # kept
    view = w[1:]
    assert torch.equal(values(view), view.double()) and values(w[1:]) is values(view)  # a view: its own entry
    w.view(torch.uint8)[0, 0, 0] ^= 1  # an in-place change bumps the version counter
    again = values(w)
    assert again is not first and torch.equal(again, w.double())
    assert values.nbytes() > 0
    del w, view, first, again
    gc.collect()
    assert values.nbytes() == 0  # the weight is gone, and its entries with it
    with torch.inference_mode():
        frozen = torch.randn(1, 128, 128).to(FP8_DTYPE)
    assert torch.equal(values(frozen), frozen.double()) and values.nbytes() == 0  # no version counter: not kept
    big = _WeightValues()
    big.MAX_BYTES = 1024
    small = torch.randn(1, 128, 128).to(FP8_DTYPE)
    assert torch.equal(big(small), small.double()) and big.nbytes() == 0  # over the cap: converted each call


@pytest.mark.parametrize("m", [1, 7, 300], ids=lambda m: f"M{m}")
def test_bf16_fallback_fp32_matmul_is_the_bf16_bmm_up_to_summation_order(m):
    """Arm A with ``fp32_matmul=True`` (the A/B's CPU mode): an fp32 bmm of the same bf16 values rounded
    once, so within one bf16 ulp of the bf16 bmm (plus the fp32 summation error) and mostly bit-equal;
    a float32 copy of the bf16 weight gives the same result; provenance names the mode."""
    case = ProducerCase(m=m, n_groups=4, heads_per_group=2)
    o, pos, cache = make_inputs(case, "cpu")
    w_fp8, w_scale = kernels.quantize_weight_fp8(random_weight(4, 256, 2 * case.head_dim, m, "cpu"))
    args = (o, pos, cache, w_fp8, w_scale, 4, 2, case.nope_dim, case.rope_dim)
    want = kernels.o_a_proj_bf16_fallback(*args)
    with kernels.provenance.capture() as ran:
        got = kernels.o_a_proj_bf16_fallback(*args, fp32_matmul=True)
    assert [(r.impl, r.mode) for r in ran] == [("bf16-fallback", "torch-cpu fp32-matmul")]
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    w = kernels.reference.dequantize_weight(w_fp8, w_scale, dtype=torch.bfloat16)
    x = kernels.reference.inverse_rope_(o.clone(), pos, cache, case.rope_dim, True).to(torch.bfloat16).float()
    mag = torch.einsum("mgk,gnk->mgn", x.reshape(m, 4, -1).abs(), w.float().abs())
    bound = torch.maximum(got.float().abs(), want.float().abs()) * 2.0**-7 + w.shape[2] * 2.0**-24 * mag
    assert ((got.float() - want.float()).abs() <= bound).all(), "more than one bf16 ulp from the bf16 bmm"
    assert (got == want).float().mean() >= 0.99, f"only {(got == want).float().mean():.4f} bit-equal"
    assert torch.equal(kernels.o_a_proj_bf16_fallback(*args, w_bf16=w.float(), fp32_matmul=True), got)
    with pytest.raises(TypeError, match="w_bf16: expected dtype"):
        kernels.o_a_proj_bf16_fallback(*args, w_bf16=w.float())  # float32 only with fp32_matmul
    with pytest.raises(TypeError, match="fp32_matmul: expected a bool"):
        kernels.o_a_proj_bf16_fallback(*args, fp32_matmul="yes")
