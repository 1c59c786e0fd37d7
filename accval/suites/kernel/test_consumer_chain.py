"""The consumer against a float64 math reference, and the whole chain producer -> consumer."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import accval.kernels as kernels
from accval.implementations import CONSUMERS, PRODUCERS
from accval.kernels import provenance
from accval.kernels.constants import FP8_DTYPE, cdiv, pad4
from accval.kernels.reference import (
    dequantize_weight,
    fp8_block_bmm_abs_ref,
    fp8_block_bmm_math_ref,
    inverse_rope_,
    inverse_rope_math_ref,
)

from .cases import (
    CHAIN_CPU_SIZES,
    SUM_BLOCKS,
    ProducerCase,
    explicit_case,
    explicit_sizes,
    fit,
    make_inputs,
    one_rounding_operands,
    producer_cases,
    random_weight,
    same_sign_inputs,
    stored_scales,
    tma_m,
)
from .checks import (
    BF16_HALF_ULP,
    CHAIN_RMS_TOL,
    FP8_HALF_ULP,
    FP32_ACC_TOL,
    OUT_AXES,
    assert_not_directed,
    assert_within_bound,
    op_calls,
    quant_error_bound,
    scale_window,
    worst_ratio,
)

_fb = importlib.import_module("accval.kernels.fp8_block_bmm")  # the module (``accval.kernels.fp8_block_bmm`` is the function)


def _skip_unless_runs_here(impl, device):
    if device.type not in impl.devices:
        pytest.skip(f"{impl.name!r} runs on {impl.devices}, not {device.type} (test_provenance checks it raises)")


@pytest.fixture
def consumer_here(consumer, device):
    """``consumer`` where it runs on ``device``; skipped otherwise, before Hypothesis runs anything (a skip
    inside an explicit example prints as Hypothesis' "Failing explicit example")."""
    _skip_unless_runs_here(consumer, device)
    return consumer


@pytest.fixture
def chain_here(chain_pair, device):
    """``chain_pair`` (producer, consumer) where both run on ``device``, as :func:`consumer_here`."""
    for impl in chain_pair:
        _skip_unless_runs_here(impl, device)
    return chain_pair


def check_consumer(consumer, a, a_scale, b, b_scale, ctx):
    out = consumer(a, a_scale, b, b_scale)
    ref = fp8_block_bmm_math_ref(a.cpu(), a_scale.cpu(), b.cpu(), b_scale.cpu())
    bound = BF16_HALF_ULP * ref.abs() + FP32_ACC_TOL * fp8_block_bmm_abs_ref(a.cpu(), a_scale.cpu(), b.cpu(), b_scale.cpu())
    assert out.dtype == torch.bfloat16 and tuple(out.shape) == tuple(ref.shape), (
        f"consumer output: expected torch.bfloat16 {tuple(ref.shape)}, got {out.dtype} {tuple(out.shape)}; {ctx}")
    return assert_within_bound(out.cpu(), ref, bound, "consumer vs float64 math reference", ctx,
                               nonfinite_why=GARBAGE_ROWS if (a_scale[:, :, a.shape[1]:] != 0).any() else "", axes=OUT_AXES)


#: why a consumer's output can be NaN where the suite's activation scales hold garbage padding rows
GARBAGE_ROWS = ("the activation scales' padding rows (m >= M) hold garbage here (NaN, or all-ones packed words), "
                "which a consumer must never read: a NaN is what reading them gives, e.g. scale rows read at a stride "
                "other than pad4(M)")


@st.composite
def consumer_cases(draw):
    return dict(g=draw(st.integers(1, 3)), m=draw(st.one_of(st.integers(1, 70), st.sampled_from([1, 2, 3, 5, 127, 129]))),
                n=draw(st.sampled_from([128, 256])), k=draw(st.sampled_from([128, 256, 512, 640, 1152])),
                seed=draw(st.integers(0, 2**31 - 1)))


def activation_scales(fmt: str, g: int, k: int, m: int, gen: torch.Generator) -> torch.Tensor:
    """Random activation scales in a consumer's storage ``fmt`` with garbage in the padding rows
    (NaN for fp32, all-ones bytes for packed words), which a consumer must never read: fp32 values
    from 0.01 to 1.01, or powers of two 2**-8..2**7 as fp32 (``fp32-pow2``) or packed UE8M0 bytes, a
    different one per k-block."""
    kb = k // 128
    if fmt == "fp32":
        s = torch.rand(g, kb, pad4(m), generator=gen) + 0.01
    else:
        s = torch.exp2(torch.randint(-8, 8, (g, kb, pad4(m)), generator=gen).float())
    return stored_scales(s, fmt, m)


@given(c=consumer_cases())
@example(c=dict(g=2, m=1500 % 256, n=128, k=256, seed=1))
@example(c=dict(g=1, m=5, n=128, k=640, seed=2))  # 5 k-blocks: a packed word holding one block
@example(c=dict(g=1, m=3, n=256, k=128, seed=3))  # K/128 % 4 != 0 with two weight-block rows: torch._scaled_mm
@example(c=dict(g=2, m=8, n=256, k=384, seed=4))  # read its 128x128 scales past the end, or refused (H200)
@example(c=dict(g=1, m=9, n=128, k=1152, seed=5))  # 9 k-blocks: a loop of 8 leaves one (a split-K tail)
@example(c=dict(g=1, m=5, n=128, k=8192, seed=6))  # DSv4-Pro's K (hpg 16 x 512): 64 k-blocks
def test_consumer_matches_math_reference(consumer_here, device, c, scale_format):
    """For any G, M, N, K and each scale storage the consumer reads: |out - ref| <= 2**-8 |ref| (bf16
    output) + 2**-9 (|A| @ |B|) (block accumulation), ref = dequantized float64 bmm. Scale padding
    rows hold garbage: never read."""
    consumer = consumer_here
    gen = torch.Generator().manual_seed(c["seed"])
    g, m, n, k = c["g"], c["m"], c["n"], c["k"]
    a = (torch.randn(g, m, k, generator=gen) * 100).clamp(-448, 448).to(FP8_DTYPE).to(device)
    a_scale = activation_scales(scale_format, g, k, m, gen)
    b = (torch.randn(g, n, k, generator=gen) * 100).clamp(-448, 448).to(FP8_DTYPE).to(device)
    b_scale = (torch.rand(g, n // 128, k // 128, generator=gen) + 0.01).to(device)
    check_consumer(consumer, a, a_scale.to(device), b, b_scale, f"{c} consumer={consumer.name} scales={scale_format}")


def short_scales(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """fp32 scales of 4 significant bits (1 to 1.875 times a power of two, 2**-11..2**0): an e4m3 code (4
    significant bits) times one is exact in bf16 (8), and so is the product of two such scales."""
    return (8 + torch.randint(0, 8, shape, generator=gen)).float() * torch.exp2(torch.randint(-11, 1, shape, generator=gen).float() - 3)


@pytest.mark.parametrize("k", [1152, 640], ids=lambda k: f"K{k}")
def test_consumer_rounds_its_output_to_nearest(consumer_here, device, scale_format, k):
    """Each output is one product (each weight row has one nonzero code, in a k-block of its own), so no
    summation order or tensor-core accumulation moves it: what is left is the product of codes and scales
    and its rounding to bf16. The scales have 4 significant bits (:func:`short_scales`; packed UE8M0 ones
    are powers of two), so every dequantized operand, and every product of two scales, is exact in bf16:
    a consumer that rounds its operands to bf16 or TF32 first (as the contract allows) computes the same
    product, and only the output's rounding is left to judge. Outputs that differ from the float64 value
    rounded to nearest must lean neither way: a truncating conversion moves all of them toward zero,
    inside the accumulation bound of the random-data properties (2**-8 |ref|). With random fp32 scales a
    weight's bf16 rounding moved all 37 outputs of its column one way, and correct bf16-operand consumers
    read as directed (binomial p down to 3e-19)."""
    consumer = consumer_here
    g, m, n = 2, 37, 256
    gen = torch.Generator().manual_seed(k)
    a = (torch.randn(g, m, k, generator=gen) * 100).clamp(-448, 448).to(FP8_DTYPE)
    a_scale = activation_scales(scale_format, g, k, m, gen)
    if scale_format == "fp32":
        a_scale[:, :, :m] = short_scales((g, k // 128, m), gen)
    b = torch.zeros(g, n, k)
    where = torch.randint(0, k, (g, n), generator=gen)
    b.scatter_(2, where[:, :, None], (torch.rand(g, n, 1, generator=gen) * 400 + 16) * (torch.randint(0, 2, (g, n, 1), generator=gen) * 2 - 1))
    b = b.to(FP8_DTYPE)
    b_scale = short_scales((g, n // 128, k // 128), gen)
    ctx = f"G={g} M={m} N={n} K={k} consumer={consumer.name} scales={scale_format}"
    out = consumer(*(t.to(device) for t in (a, a_scale, b, b_scale)))
    assert out.dtype == torch.bfloat16 and tuple(out.shape) == (g, m, n), (
        f"consumer output: expected torch.bfloat16 {(g, m, n)}, got {out.dtype} {tuple(out.shape)}; {ctx}")
    out = out.cpu().double()
    ref = fp8_block_bmm_math_ref(a, a_scale, b, b_scale)
    nearest = ref.to(torch.bfloat16).double()
    ulp = torch.ldexp(torch.ones_like(nearest), torch.frexp(nearest).exponent - 8)
    # any rounding of the one product to bf16 lands within a bf16 spacing of it: farther is a wrong value, not
    # a rounding (a misread scale, row or block), and is said so before the rounding's direction is judged
    assert_within_bound(out, ref, ulp, "consumer output vs the float64 product (one bf16 spacing: any rounding of it)",
                        ctx, nonfinite_why=GARBAGE_ROWS, axes=OUT_AXES)
    off_tie = ((ref - nearest).abs() / ulp < 0.5 - 2.0**-6) & (ref != 0)  # ties and double rounding: no direction
    assert int(off_tie.sum()) >= m * n, f"only {int(off_tie.sum())} outputs need rounding to bf16; {ctx}"
    differ = off_tie & (out != nearest)
    smaller = out.abs() < nearest.abs()
    assert_not_directed(int((differ & smaller).sum()), int((differ & ~smaller).sum()),
                        "consumer output vs the float64 product rounded to nearest bf16", ctx)


@pytest.mark.parametrize("g,m,n", [(1, 64, 128), pytest.param(2, 320, 256, marks=pytest.mark.slow_cpu)],
                         ids=lambda v: str(v))
def test_consumer_sums_same_sign_k_blocks_within_the_bound(consumer_here, device, scale_format, g, m, n):
    """Products of one sign over K = 8192 (64 k-blocks): the output stays within the random-data bound of
    :func:`test_consumer_matches_math_reference`, 2**-8 |ref| + 2**-9 (|A| @ |B|), which here is 3 * 2**-9
    |ref|. Mixed signs hide how blocks are summed (partial sums cancel, and |A| @ |B| is far larger than
    |ref|); with one sign, a sum of blocks kept in bf16 loses up to ~7 times the bound (catalog
    ``consumer-bf16-accumulator``). On an H200 correct consumers (accval's kernels on every launch path,
    ``torch._scaled_mm``, vLLM's Triton consumer) reached at most 0.54 of it on such data, Hopper's FP8
    tensor cores keeping about 14 bits inside a block, as reported for DeepSeek-V3
    (``scripts/consumer_accumulation_probe.py``,
    ``reports/kernel/consumer-accumulation-NVIDIA_H200-2026-12-05-s34/``)."""
    consumer = consumer_here
    a, a_scale, b, b_scale = same_sign_inputs(g, m, n, scale_format, seed=m + n)
    check_consumer(consumer, *(t.to(device) for t in (a, a_scale, b, b_scale)),
                   f"G={g} M={m} N={n} K={128 * SUM_BLOCKS}, products of one sign; consumer={consumer.name} "
                   f"scales={scale_format}")


def _consumer_inputs(g, m, n, k, scale_format, seed, device):
    gen = torch.Generator().manual_seed(seed)
    a = (torch.randn(g, m, k, generator=gen) * 100).clamp(-448, 448).to(FP8_DTYPE).to(device)
    a_scale = activation_scales(scale_format, g, k, m, gen).to(device)
    b = (torch.randn(g, n, k, generator=gen) * 100).clamp(-448, 448).to(FP8_DTYPE).to(device)
    b_scale = (torch.rand(g, n // 128, k // 128, generator=gen) + 0.01).to(device)
    return a, a_scale, b, b_scale


@pytest.mark.parametrize("layout", ["transposed", "row-gaps"])
def test_consumer_writes_any_strided_out(consumer_here, device, scale_format, layout):
    """``out`` may be any strided ``[G, M, N]`` bf16 view (the contract): the transposed view of an
    ``[M, G, N]`` buffer (how the model writes o_lora under DEP8, several groups) or rows with gaps
    between them. Every element of the view gets the right value (within the consumer's bound) and
    nothing outside it is written (the buffer is NaN-filled first)."""
    consumer = consumer_here
    g, m, n, k = 3, 37, 256, 384
    a, a_scale, b, b_scale = _consumer_inputs(g, m, n, k, scale_format, 11, device)
    if layout == "transposed":
        buf = torch.full((m, g, n), float("nan"), dtype=torch.bfloat16, device=device)
        out = buf.transpose(0, 1)
    else:
        buf = torch.full((g, m, n + 64), float("nan"), dtype=torch.bfloat16, device=device)
        out = buf[:, :, :n]
    ctx = f"out = {layout} view, strides {out.stride()}; consumer={consumer.name} scales={scale_format}"
    consumer(a, a_scale, b, b_scale, out=out)
    ref = fp8_block_bmm_math_ref(a.cpu(), a_scale.cpu(), b.cpu(), b_scale.cpu())
    bound = BF16_HALF_ULP * ref.abs() + FP32_ACC_TOL * fp8_block_bmm_abs_ref(a.cpu(), a_scale.cpu(), b.cpu(), b_scale.cpu())
    assert_within_bound(out.cpu(), ref, bound, "what the consumer wrote into out vs float64 math reference", ctx,
                        nonfinite_why="out was NaN-filled before the call: a NaN is an element of the view the consumer "
                                      f"never wrote (it must write through out's strides), or {GARBAGE_ROWS}", axes=OUT_AXES)
    if layout == "row-gaps":
        assert buf[:, :, n:].isnan().all(), f"the consumer wrote into the gaps between out's rows; {ctx}"


def _op_returns_a_tensor(op) -> bool:
    returns = getattr(op, "default", op)._schema.returns
    return len(returns) == 1 and str(returns[0].type) == "Tensor"


def test_consumer_op_fake_matches_real_and_opcheck(consumer_here, device, scale_format):
    """Where a consumer exposes its torch op (``accval_op``): the fake's shapes, strides and dtypes equal the
    real outputs' (what torch.compile and graph capture allocate), at M not a multiple of 4 and several
    groups, and ``torch.library.opcheck`` passes (fake tensor, autograd registration, AOT dispatch; its
    schema check cannot run on float8 inputs). An op of the contract's shape, ``fn(a, a_scale, b, b_scale)
    -> Tensor``, is called with the contract's four arguments; any other with the arguments the consumer
    itself passes to it (an engine's op takes its own)."""
    consumer = consumer_here
    if consumer.op is None:
        pytest.skip(f"consumer {consumer.name!r} exposes no torch op (accval_op); fake checks need one")
    schema = getattr(consumer.op, "default", consumer.op)._schema
    required = [arg.name for arg in schema.arguments if not arg.has_default_value()]
    contract_shaped = len(required) <= 4 and _op_returns_a_tensor(consumer.op)
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._pytree import tree_leaves, tree_map

    for g, m, n, k in ((2, 37, 256, 384), (1, 3, 128, 640)):
        args = _consumer_inputs(g, m, n, k, scale_format, m, device)
        ctx = f"g={g} m={m} n={n} k={k} consumer={consumer.name}"
        if contract_shaped:
            op, op_args, op_kwargs = consumer.op, args, {}
        else:
            _, calls = op_calls(consumer.op, lambda: consumer(*args))
            assert calls, (f"consumer {consumer.name!r} declares accval_op {schema.name} but did not call it; declare "
                           f"the op it calls (or none); {ctx}")
            op, op_args, op_kwargs = calls[0]
        real = tree_leaves(op(*op_args, **op_kwargs))
        with FakeTensorMode() as mode:
            faked = tree_map(lambda t: mode.from_tensor(t) if isinstance(t, torch.Tensor) else t, (op_args, op_kwargs))
            fake = tree_leaves(op(*faked[0], **faked[1]))
        meta = lambda ts: [(tuple(t.shape), t.stride(), t.dtype) for t in ts if isinstance(t, torch.Tensor)]  # noqa: E731
        assert meta(fake) == meta(real), f"fake != real: fake gives {meta(fake)}, real gives {meta(real)}; {ctx}"
        torch.library.opcheck(op, op_args, op_kwargs,
                              test_utils=("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"))


def chain_oracle(o, pos, cache, case: ProducerCase, w_fp8, w_scale, recipe, exact: bool):
    """The float64 product of the *unquantized* inverse-RoPE'd activations with the dequantized weight,
    and the most a correct producer -> consumer chain of ``recipe`` may differ from it.

    Per activation element (``checks.quant_error_bound``): ``E = rho (2**-3 |y| + 2**-9 s_max) +
    eps_in |y|``, with ``s_max`` the largest scale the recipe may choose for the block
    (``checks.scale_window``), rho 1/2 for an exact producer and 1 otherwise, ``eps_in`` the input
    dtype's half epsilon plus 2**-9 (the rotated value's rounding and the saturation it can cause).
    Per output: ``sum_k E_k |w_k|`` (quantization), ``FP32_ACC_TOL sum_k (|y_k| + E_k) |w_k|`` (the
    consumer's block accumulation), and half a bf16 ulp of the largest value the output can take. Any
    correct producer of the recipe passes whatever its own rounding; a misread scale or row moves an
    output by the size of the output itself."""
    y = inverse_rope_math_ref(o.cpu(), pos.cpu(), cache.cpu(), case.rope_dim, case.is_neox)
    g, m = case.n_groups, case.m
    y = y.reshape(m, g, -1).transpose(0, 1)  # [G, M, K] float64
    kb = y.shape[2] // 128
    amax = y.reshape(g, m, kb, 128).abs().amax(-1)
    s_max = scale_window(amax.float(), recipe)[1].double().repeat_interleave(128, dim=2)
    fi = torch.finfo(case.dtype)
    e = quant_error_bound(y, s_max, exact, fi.eps / 2 + 2.0**-9) + fi.smallest_normal * fi.eps / 2
    w = dequantize_weight(w_fp8.cpu(), w_scale.cpu())
    ref = torch.bmm(y, w.transpose(1, 2))
    quant = torch.bmm(e, w.abs().transpose(1, 2))
    acc = FP32_ACC_TOL * torch.bmm(y.abs() + e, w.abs().transpose(1, 2))
    return ref, quant + acc + BF16_HALF_ULP * (ref.abs() + quant + acc) + 1e-30


def check_chain(producer, consumer, case: ProducerCase, device, r: int | None = None, record=None):
    """The chain on ``case`` against :func:`chain_oracle`; ``r`` output features (default 128 or, for odd
    seeds, 256: two rows of weight blocks, so a consumer reading weight scales transposed shows)."""
    case = fit(producer, case)
    r = r or 128 * (1 + case.seed % 2)
    o, pos, cache = make_inputs(case, device)
    k = case.heads_per_group * case.head_dim
    w_fp8, w_scale = kernels.quantize_weight_fp8(random_weight(case.n_groups, r, k, case.seed, device))
    fp8, scale = producer(*case.args(o, pos, cache), is_neox=case.is_neox, block_tokens_m=case.block_tokens_m)
    out = consumer(fp8, scale, w_fp8, w_scale)
    ref, bound = chain_oracle(o, pos, cache, case, w_fp8, w_scale, producer.recipe, producer.exact)
    ctx = f"{case} producer={producer.name} consumer={consumer.name} recipe={producer.recipe.name}"
    assert out.dtype == torch.bfloat16 and tuple(out.shape) == tuple(ref.shape), (
        f"chain output: expected torch.bfloat16 {tuple(ref.shape)}, got {out.dtype} {tuple(out.shape)}; {ctx}")
    if record is not None:  # before judging it: the run's summary states a failed case's ratio too
        record("chain", worst=worst_ratio(out.cpu(), ref, bound), pair=f"{producer.name}->{consumer.name}")
    return assert_within_bound(out.cpu(), ref, bound, "producer -> consumer vs float64 math (unquantized activations)",
                               ctx, axes=OUT_AXES)


def test_chain_records_a_failed_cases_ratio_for_the_summary(device):
    """The run's summary line states the chain's worst |err|/bound over every case, a failed one's too: a
    consumer that reads the scale rows at stride M (the catalog's defect) is out of bound at M = 7, and
    what reaches the summary is that case's ratio, above 1, not the passed cases' alone."""
    got = []
    producer, consumer = PRODUCERS.get("accval"), CONSUMERS.get("mutant:consumer-scale-stride-m")
    case = ProducerCase(m=7, n_groups=2, heads_per_group=1, seed=7)
    with pytest.raises(AssertionError, match="exceeds bound"):
        check_chain(producer, consumer, case, device, record=lambda kind, **data: got.append((kind, data)))
    assert [kind for kind, _ in got] == ["chain"] and got[0][1]["worst"] > 1, got


@settings(max_examples=20)
@given(case=producer_cases(max_tokens=160))
@example(case=ProducerCase(m=1500, n_groups=2, heads_per_group=1, seed=1500))  # the DEP8 size, automatic BTM 8
@example(case=ProducerCase(m=1500, n_groups=2, heads_per_group=1, block_tokens_m=16, seed=15))
@example(case=ProducerCase(m=7, n_groups=3, heads_per_group=1, seed=7))  # M % 4 != 0 with several groups
def test_chain_matches_math_reference(chain_here, device, case, accval_record):
    """Producer output fed to the consumer as engines do (the consumer trusts pad4(M) and M*K
    strides), producer and consumer of one recipe, matches the float64 product of the unquantized
    activations within the recipe's quantization bound, for any M, in particular M not a multiple
    of any BTM."""
    producer, consumer = chain_here
    check_chain(producer, consumer, case, device, record=accval_record)


@pytest.mark.parametrize("m", explicit_sizes(cpu_sizes=CHAIN_CPU_SIZES))
def test_chain_explicit_sizes(chain_here, device, m, accval_record):
    """The chain at the pull request's sizes and every awkward size, automatic dispatch."""
    producer, consumer = chain_here
    check_chain(producer, consumer, explicit_case(m, is_neox=m % 2 == 1), device, record=accval_record)


def chain_vs_fallback(case: ProducerCase, device, r=128):
    o, pos, cache = make_inputs(case, device)
    k = case.heads_per_group * case.head_dim
    w_fp8, w_scale = kernels.quantize_weight_fp8(random_weight(case.n_groups, r, k, case.seed, device))
    args = (o, pos, cache, w_fp8, w_scale, case.n_groups, case.heads_per_group, case.nope_dim, case.rope_dim, case.is_neox)
    return kernels.o_a_proj_fp8_chain(*args), kernels.o_a_proj_bf16_fallback(*args), o, pos, cache, w_fp8, w_scale


@settings(max_examples=8)
@given(case=producer_cases(max_tokens=96))
@example(case=ProducerCase(m=1500 % 200, n_groups=2, heads_per_group=2, head_dim=512, is_neox=False, seed=3))
def test_fp8_chain_vs_bf16_fallback(device, case):
    """The two o_a_proj arms, [M, H, D] -> [M, G, R]: every element within the FP8 bound
    2**-4 sum|x||w| + 2**-7 |ref| and the RMS relative difference under CHAIN_RMS_TOL."""
    case = ProducerCase(**{**case.__dict__, "dtype": torch.bfloat16, "magnitude": 4.0, "zero_blocks": False})
    chain, fallback, o, pos, cache, w_fp8, w_scale = chain_vs_fallback(case, device)
    assert chain.shape == fallback.shape == (case.m, case.n_groups, 128), f"{chain.shape} {fallback.shape}; {case}"
    x = inverse_rope_(o.cpu().clone(), pos.cpu(), cache.cpu(), case.rope_dim, case.is_neox).double()
    x = x.reshape(case.m, case.n_groups, -1).transpose(0, 1)
    w = dequantize_weight(w_fp8.cpu(), w_scale.cpu())
    abs_ref = torch.bmm(x.abs(), w.abs().transpose(1, 2)).transpose(0, 1)
    bound = FP8_HALF_ULP * abs_ref + 2 * BF16_HALF_ULP * fallback.cpu().double().abs() + 1e-6
    assert_within_bound(chain.cpu(), fallback.cpu(), bound, "FP8 chain vs bf16 fallback", f"{case}")
    rms = ((chain.double() - fallback.double()).norm() / fallback.double().norm().clamp_min(1e-30)).item()
    assert rms < CHAIN_RMS_TOL, f"RMS relative difference {rms:.4f} >= {CHAIN_RMS_TOL}; {case}"


def test_consumer_writes_through_transposed_out(device):
    """``out`` may be the transposed view of an [M, G, N] buffer (how the model writes o_lora)."""
    g, m, n, k = 2, 37, 128, 256
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(g, m, k, generator=gen).to(FP8_DTYPE).to(device)
    a_scale = torch.zeros(g, k // 128, pad4(m))
    a_scale[:, :, :m] = torch.rand(g, k // 128, m, generator=gen) + 0.1
    b = torch.randn(g, n, k, generator=gen).to(FP8_DTYPE).to(device)
    b_scale = (torch.rand(g, n // 128, k // 128, generator=gen) + 0.1).to(device)
    buf = torch.full((m, g, n), float("nan"), dtype=torch.bfloat16, device=device)
    res = kernels.fp8_block_bmm(a, a_scale.to(device), b, b_scale, buf.transpose(0, 1))
    assert res.data_ptr() == buf.data_ptr()
    expect = kernels.fp8_block_bmm(a, a_scale.to(device), b, b_scale)
    assert torch.equal(buf.transpose(0, 1), expect), "writing through the transposed view changed the result"


def _consumer_operands(g, m, n, k, seed, device):
    """Consumer operands of the given sizes from ``seed``: codes up to 50x the unit normal, scales in [0.1, 1.1)."""
    gen = torch.Generator().manual_seed(seed)
    a = (torch.randn(g, m, k, generator=gen) * 50).to(FP8_DTYPE).to(device)
    a_scale = torch.zeros(g, k // 128, pad4(m))
    a_scale[:, :, :m] = torch.rand(g, k // 128, m, generator=gen) + 0.1
    b = (torch.randn(g, n, k, generator=gen) * 50).to(FP8_DTYPE).to(device)
    b_scale = (torch.rand(g, n // 128, k // 128, generator=gen) + 0.1).to(device)
    return a, a_scale.to(device), b, b_scale


@pytest.mark.parametrize("cfg", [
    kernels.ConsumerConfig(64, 128, 4, 3, 1, True), kernels.ConsumerConfig(32, 64, 4, 3, 1, True),
    kernels.ConsumerConfig(16, 128, 4, 3, 2, True), kernels.ConsumerConfig(16, 128, 4, 3, 4, False),
    kernels.ConsumerConfig(64, 128, 4, 3, 1, prefetch_scales=True), kernels.ConsumerConfig(16, 64, 4, 3, 1, prefetch_scales=True),
    kernels.ConsumerConfig(32, 128, 4, 3, 2, prefetch_scales=True), kernels.ConsumerConfig(64, 64, 4, 3, 4, prefetch_scales=True),
], ids=str)
def test_consumer_launches_agree_bit_for_bit(device, cfg):
    """Deferred scaling and scales loaded a block ahead compute the same products in the same order,
    so they give the default launch's bits; a K split adds the same fp32 per-block terms in another
    grouping (within the accumulation bound)."""
    g, m, n, k = 2, 37, 256, 512
    a, a_scale, b, b_scale = _consumer_operands(g, m, n, k, 3, device)
    plain = dataclasses.replace(cfg, split_k=1, defer_scale=False, prefetch_scales=False)
    want = kernels.launch_consumer(a, a_scale, b, b_scale, torch.empty(g, m, n, dtype=torch.bfloat16, device=device), plain)
    got = kernels.launch_consumer(a, a_scale, b, b_scale, torch.empty(g, m, n, dtype=torch.bfloat16, device=device), cfg)
    if cfg.split_k == 1:
        assert torch.equal(got, want), f"{cfg} changed bits against {plain}"
    else:
        check_consumer(lambda *t: got, a, a_scale, b, b_scale, str(cfg))
        if cfg.prefetch_scales:  # the small-M dispatch's launch: the same split without prefetch, bit for bit
            same_split = dataclasses.replace(cfg, prefetch_scales=False)
            assert torch.equal(got, kernels.launch_consumer(a, a_scale, b, b_scale, torch.empty_like(got), same_split)), \
                f"{cfg} changed bits against {same_split}"


@settings(deadline=None)
@given(g=st.integers(1, 3), m=st.sampled_from([1, 5, 16, 37, 64, 65, 130]), n=st.sampled_from([128, 256]),
       k=st.sampled_from([128, 384, 512]), block_m=st.sampled_from([16, 64, 128]), block_n=st.sampled_from([64, 128]),
       split=st.sampled_from([1, 2, 4]), prefetch=st.booleans(), seed=st.integers(0, 2**31 - 1))
@example(g=3, m=37, n=256, k=512, block_m=64, block_n=128, split=1, prefetch=False, seed=0)  # tiles run into the next group's rows
@example(g=1, m=5, n=128, k=384, block_m=16, block_n=128, split=2, prefetch=True, seed=1)  # a split of one block, one of two
def test_consumer_tma_loads_match_pointer_loads(device, g, m, n, k, block_m, block_n, split, prefetch, seed):
    """The TMA kernel reads the same tiles as the pointer kernel (a tile past a group's last row reads
    the next group's rows, whose outputs are never stored), and loading each block's scales a block
    ahead changes no arithmetic, so a launch gives the plain pointer launch's bits either way, and the
    record says which loads ran."""
    a, a_scale, b, b_scale = _consumer_operands(g, m, n, k, seed, device)
    cfg = kernels.ConsumerConfig(block_m, block_n, 4, 3, split)
    want = kernels.launch_consumer(a, a_scale, b, b_scale, torch.empty(g, m, n, dtype=torch.bfloat16, device=device), cfg)
    fast = dataclasses.replace(cfg, tma=True, prefetch_scales=prefetch)
    with provenance.capture() as ran:
        got = kernels.launch_consumer(a, a_scale, b, b_scale, torch.full((g, m, n), float("nan"), dtype=torch.bfloat16,
                                                                         device=device), fast)
    assert ran[-1].detail("loads") == "tma" and ran[-1].detail("prefetch_scales") == prefetch, ran[-1]
    assert torch.equal(got.view(torch.int16), want.view(torch.int16)), f"{fast} changed bits at G={g} M={m} N={n} K={k}"


#: the unsplit launches of the consumer's kernels (a K split adds per-split sums: another grouping)
ONE_ROUNDING_LAUNCHES = [
    kernels.ConsumerConfig(64, 128, 4, 3), kernels.ConsumerConfig(16, 128, 4, 3, prefetch_scales=True),
    kernels.ConsumerConfig(32, 128, 4, 3, defer_scale=True), kernels.ConsumerConfig(64, 128, 4, 3, tma=True),
    kernels.ConsumerConfig(64, 128, 4, 4, tma=True, wgmma=True), kernels.ConsumerConfig(128, 128, 8, 4, tma=True, wgmma=True),
    kernels.ConsumerConfig(128, 128, 8, 4, tma=True, wgmma=True, loader_warp=True), "emulated",
]


@pytest.mark.parametrize("launch", ONE_ROUNDING_LAUNCHES, ids=str)
def test_consumer_scales_each_block_in_with_one_rounding(device, launch):
    """Each block's product is scaled into the accumulator with one rounding (a fused multiply-add), in
    every kernel and in the emulated consumer, so every launch rounds alike (the operands:
    ``cases.one_rounding_operands``: exact with one rounding, 0 or an fp32 ulp with two)."""
    if launch != "emulated" and launch.wgmma:
        _skip_unless_wgmma(device)
    qs = torch.tensor([3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0, 6.0])
    m, n = len(qs), 128
    args, exact = one_rounding_operands(qs, k=256, n=n, device=device)
    rounded_twice = (qs * (1.0 / qs.double()).float()) - 1.0
    assert (exact != rounded_twice).all(), "a row whose two roundings agree would not tell them apart"
    out = torch.full((1, m, n), float("nan"), dtype=torch.bfloat16, device=device)
    if launch == "emulated":
        got = kernels.fp8_block_bmm(*args, out=out, backend="emulated")
    else:
        got = kernels.launch_consumer(*args, out, launch)
    want = exact.to(torch.bfloat16)[None, :, None].expand(1, m, n)
    assert torch.equal(got.cpu().view(torch.int16), want.view(torch.int16)), \
        f"{launch}: rows {got[0, :, 0].tolist()}, one rounding gives {want[0, :, 0].tolist()}"


def test_consumer_takes_pointer_loads_where_tma_cannot_read(device):
    """A call whose dispatch asks for TMA but whose buffers a descriptor cannot cover (a weight whose
    group stride is not N rows or whose rows are one broadcast row; an activation buffer not 16-byte
    aligned; no groups at all) runs the pointer kernel, records it, and gives the same bits."""
    g, n, k = 4, 256, 128
    m = tma_m(device, g, n, k)
    a, a_scale, b, b_scale = _consumer_operands(g, m, n, k, 5, device)
    assert kernels.consumer_config(m, n, k, g, a.device).tma, f"the dispatch should ask for TMA at M={m}"
    with provenance.capture() as ran:
        want = kernels.fp8_block_bmm(a, a_scale, b, b_scale)
    assert ran[-1].detail("loads") == "tma", ran[-1]
    wide = torch.zeros(g, 2 * n, k, dtype=torch.uint8, device=device).view(FP8_DTYPE)
    wide[:, :n] = b
    shifted = torch.zeros(g * m * k + 1, dtype=torch.uint8, device=device).view(FP8_DTYPE)[1:].view(g, m, k)
    shifted.copy_(a)
    row = b[:1, :1].clone()  # every weight row the same one (stride 0): only the pointer kernel reads it
    same_rows = row.expand(g, n, k)
    with provenance.capture():
        want_same_rows = kernels.fp8_block_bmm(a, a_scale, row.repeat(g, n, 1), b_scale)
    for what, args, expect in (("a weight slice with group stride 2N rows", (a, a_scale, wide[:, :n], b_scale), want),
                               ("an activation buffer at an odd address", (shifted, a_scale, b, b_scale), want),
                               ("a weight with one broadcast row", (a, a_scale, same_rows, b_scale), want_same_rows)):
        with provenance.capture() as ran:
            got = kernels.fp8_block_bmm(*args)
        assert ran[-1].detail("loads") == "pointer", (what, ran[-1])
        assert torch.equal(got.view(torch.int16), expect.view(torch.int16)), what
    empty = [t[:0] for t in (a, a_scale, b, b_scale)]  # no groups: nothing for a descriptor to cover
    with provenance.capture() as ran:
        kernels.launch_consumer(*empty, torch.empty(0, m, n, dtype=torch.bfloat16, device=device),
                                kernels.ConsumerConfig(64, 128, 4, 3, tma=True))
    assert ran[-1].detail("loads") == "pointer", ran[-1]


def _skip_unless_wgmma(device):
    if not _fb._wgmma_ok(device):
        pytest.skip("the Gluon wgmma kernel runs on an sm90 GPU only (Gluon kernels do not run in Triton's interpreter)")


@pytest.fixture
def wgmma_device(device):
    """``device`` where the Gluon kernel runs; skips before hypothesis draws anything elsewhere."""
    _skip_unless_wgmma(device)
    return device


#: (persistent programs per SM, loader warp, K splits) of the Gluon launches the hypothesis test draws
_WGMMA_SCHEDULES = [(0, False, 1), (1, False, 1), (2, False, 1), (0, True, 1), (0, False, 3), (0, False, 8)]


@settings(deadline=None)
@given(g=st.integers(1, 3), m=st.sampled_from([1, 5, 37, 64, 65, 130, 200]), n=st.sampled_from([128, 256]),
       k=st.sampled_from([128, 384, 512, 640]), block_m=st.sampled_from([64, 128]), block_n=st.sampled_from([64, 128]),
       stages=st.sampled_from([2, 3, 4]), schedule=st.sampled_from(_WGMMA_SCHEDULES), seed=st.integers(0, 2**31 - 1))
@example(g=3, m=37, n=256, k=640, block_m=128, block_n=128, stages=4, schedule=(0, False, 1), seed=0)  # into the next group; odd block
@example(g=1, m=130, n=128, k=8192, block_m=128, block_n=128, stages=4, schedule=(0, False, 1), seed=1)  # 64 blocks, rings wrap
@example(g=2, m=1, n=128, k=128, block_m=64, block_n=64, stages=2, schedule=(0, False, 1), seed=2)  # one block: nothing overlaps
@example(g=3, m=37, n=256, k=640, block_m=128, block_n=128, stages=4, schedule=(0, True, 1), seed=3)  # the same with a loader warp
@example(g=1, m=130, n=128, k=8192, block_m=128, block_n=128, stages=4, schedule=(0, True, 1), seed=4)
@example(g=2, m=1, n=128, k=128, block_m=64, block_n=64, stages=2, schedule=(0, True, 1), seed=5)
@example(g=2, m=200, n=256, k=384, block_m=64, block_n=128, stages=4, schedule=(0, True, 1), seed=6)  # fewer blocks than buffers
@example(g=2, m=37, n=256, k=640, block_m=64, block_n=128, stages=4, schedule=(0, False, 3), seed=7)  # splits of 2, 2, 1 blocks
@example(g=1, m=64, n=128, k=8192, block_m=64, block_n=64, stages=4, schedule=(0, False, 8), seed=8)  # 8 blocks a split
@example(g=3, m=5, n=256, k=1024, block_m=128, block_n=128, stages=2, schedule=(0, False, 8), seed=9)  # 1 block a split
def test_consumer_wgmma_kernel_matches_triton_kernel(wgmma_device, g, m, n, k, block_m, block_n, stages, schedule,
                                                     seed):
    """The Gluon kernel (a block's wgmma in flight while the previous block is scaled, TMA buffers in a
    ring) computes the Triton kernel's products, scales and sums in its order: the plain pointer
    launch's bits at every size, block count (odd, even, one) and ring depth, into a strided ``out``
    too, with a persistent grid (here of at least one program per tile) or a loader warp too, and the
    record names the launch. With K split, each split's blocks into its partial and the partials added in
    split order: the bits of the pointer launch with the same splits."""
    device = wgmma_device
    persistent, loader_warp, split = schedule
    a, a_scale, b, b_scale = _consumer_operands(g, m, n, k, seed, device)
    want = kernels.launch_consumer(a, a_scale, b, b_scale, torch.empty(g, m, n, dtype=torch.bfloat16, device=device),
                                   kernels.ConsumerConfig(64, block_n, 4, 3, split))
    cfg = kernels.ConsumerConfig(block_m, block_n, block_m // 16, stages, split, tma=True, wgmma=True,
                                 persistent=persistent, loader_warp=loader_warp)
    out = torch.full((m, g, n), float("nan"), dtype=torch.bfloat16, device=device).transpose(0, 1)
    with provenance.capture() as ran:
        got = kernels.launch_consumer(a, a_scale, b, b_scale, out, cfg)
    assert ran[-1].detail("kernel") == "gluon-wgmma" and ran[-1].detail("loads") == "tma", ran[-1]
    assert ran[-1].detail("persistent") == persistent and ran[-1].detail("loader_warp") == loader_warp, ran[-1]
    blocks = k // 128
    assert ran[-1].detail("split_k") == cdiv(blocks, cdiv(blocks, min(split, blocks))), ran[-1]  # no split empty
    assert torch.equal(got.view(torch.int16), want.view(torch.int16)), f"{cfg} changed bits at G={g} M={m} N={n} K={k}"


#: (G, M, N, K, BLOCK_M, BLOCK_N, buffers, programs per SM) of persistent Gluon launches whose programs take
#: several tiles on a GPU of at most 132 SMs: tiles running into the next group, K of 5 blocks (the next tile's
#: first blocks loaded under this tile's last; an odd block), K of 3 blocks under 4 buffers (each tile starts
#: its own), DeepSeek-V4's K with 128-row tiles, 2 programs per SM, and 2 buffers
_PERSISTENT_CASES = [(3, 1000, 512, 640, 64, 64, 4, 1), (3, 1000, 512, 384, 64, 64, 4, 1),
                     (2, 1500, 1024, 8192, 128, 128, 4, 1), (3, 3001, 512, 640, 64, 128, 3, 2),
                     (1, 2000, 1024, 1024, 128, 64, 2, 1)]


@pytest.mark.parametrize("g, m, n, k, block_m, block_n, stages, persistent", _PERSISTENT_CASES)
def test_consumer_persistent_wgmma_matches_triton_kernel(device, g, m, n, k, block_m, block_n, stages, persistent):
    """A persistent Gluon launch (each program takes every P-th tile, its TMA buffers running on from one
    tile to the next) computes every tile as the one-program-per-tile launch does: the plain pointer
    launch's bits, where programs take several tiles, and its record says it was persistent."""
    _skip_unless_wgmma(device)
    cfg = kernels.ConsumerConfig(block_m, block_n, block_m // 16, stages, tma=True, wgmma=True, persistent=persistent)
    tiles = g * cdiv(m, block_m) * cdiv(n, block_n)
    programs = _fb._triton_launch(cfg, g, m, n, k, _fb.SCALE_M_ALIGN, False, _fb._sm_count(device)).grid[0]
    assert programs < tiles, (programs, tiles)  # each program takes more than one tile
    a, a_scale, b, b_scale = _consumer_operands(g, m, n, k, m + k, device)
    want = kernels.launch_consumer(a, a_scale, b, b_scale, torch.empty(g, m, n, dtype=torch.bfloat16, device=device),
                                   kernels.ConsumerConfig(64, block_n, 4, 3))
    out = torch.full((m, g, n), float("nan"), dtype=torch.bfloat16, device=device).transpose(0, 1)
    with provenance.capture() as ran:
        got = kernels.launch_consumer(a, a_scale, b, b_scale, out, cfg)
    assert ran[-1].detail("kernel") == "gluon-wgmma" and ran[-1].detail("persistent") == persistent, ran[-1]
    assert torch.equal(got.view(torch.int16), want.view(torch.int16)), f"{cfg} changed bits at G={g} M={m} N={n} K={k}"


def test_consumer_persistent_grid_has_its_programs_per_sm_at_most_one_per_tile():
    """The Gluon kernel's grid: one program per tile (n tiles, m tiles, groups), or ``persistent`` programs per
    SM and never more than tiles; a persistent launch is the Gluon kernel's only, and its programs per SM
    are counted from 0."""
    cfg = kernels.ConsumerConfig(128, 128, 8, 4, tma=True, wgmma=True)
    for persistent, m, want in ((0, 4096, (8, 32, 8)), (1, 4096, (132,)), (2, 4096, (264,)), (1, 64, (64,)),
                                (2, 1024, (264,))):
        launch = _fb._triton_launch(dataclasses.replace(cfg, persistent=persistent), 8, m, 1024, 8192, 4, False, 132)
        assert launch.grid == want, (persistent, m, launch.grid)
    with pytest.raises(ValueError, match="persistent grid is the Gluon kernel's"):
        kernels.ConsumerConfig(64, 128, 4, 3, tma=True, persistent=1)
    with pytest.raises(ValueError, match="persistent: expected an int >= 0"):
        kernels.ConsumerConfig(128, 128, 8, 4, tma=True, wgmma=True, persistent=-1)


def test_split_sum_launched_as_the_products_dependent_keeps_every_bit(device, monkeypatch):
    """Where K is split, on a Hopper GPU the sum is launched as the products kernel's programmatic dependent
    (the products let it launch as they start, it waits for their grid before reading): the same bits as
    the two launches in plain stream order, and the record says which ran. A CPU, the interpreter or a
    Triton without it never asks for it; an unsplit or Gluon launch has no second launch to overlap."""
    cfg = kernels.ConsumerConfig(16, 32, 4, 3, 8, prefetch_scales=True)
    launch = _fb._triton_launch(cfg, 1, 64, 1024, 8192, 4, False, 132, True)
    assert launch.pdl and launch.bmm.meta["PDL"] and launch.sums.meta["PDL"] and launch.sums.meta["launch_pdl"]
    plain = _fb._triton_launch(cfg, 1, 64, 1024, 8192, 4, False, 132)
    assert not (plain.pdl or plain.bmm.meta["PDL"] or plain.sums.meta["PDL"]) and "launch_pdl" not in plain.sums.meta
    for other in (dataclasses.replace(cfg, split_k=1, prefetch_scales=False),
                  kernels.ConsumerConfig(128, 128, 8, 4, tma=True, wgmma=True)):
        unsplit = _fb._triton_launch(other, 1, 64, 1024, 8192, 4, False, 132, True)
        assert not unsplit.pdl and unsplit.sums is None, other
    assert not _fb._pdl_ok(torch.device("cpu"))
    g, m, n, k = 2, 37, 256, 1024
    a, a_scale, b, b_scale = _consumer_operands(g, m, n, k, 7, device)
    split = kernels.ConsumerConfig(16, 32, 4, 3, 4, prefetch_scales=True)
    outs = {}
    for pdl in (True, False):
        monkeypatch.setattr(_fb, "SPLIT_PDL", pdl)
        with provenance.capture() as ran:
            outs[pdl] = kernels.launch_consumer(a, a_scale, b, b_scale, torch.empty(g, m, n, dtype=torch.bfloat16,
                                                                                   device=device), split)
        assert ran[-1].detail("split_k") == 4 and ran[-1].detail("pdl_sum") == _fb._pdl_ok(device), ran[-1]
    assert torch.equal(outs[True].view(torch.int16), outs[False].view(torch.int16))
    # a Triton without grid dependency control or launch_pdl: the two launches in stream order, recorded so
    monkeypatch.setattr(_fb, "SPLIT_PDL", True)
    monkeypatch.setattr(_fb, "PDL_AVAILABLE", False)
    assert not _fb._pdl_ok(device)
    with provenance.capture() as ran:
        kernels.launch_consumer(a, a_scale, b, b_scale, torch.empty(g, m, n, dtype=torch.bfloat16, device=device), split)
    assert ran[-1].detail("pdl_sum") is False, ran[-1]


def test_consumer_wgmma_split_k_is_one_program_per_tile_loading_its_own(device):
    """The Gluon kernel splits K over its one-program-per-tile grid with its own loads: asked of a persistent
    grid or with a loader warp it is refused, naming both. Its launch is the split grid (group x split on
    the last axis) with the split-K sum after it; where it cannot run (a CPU, a GPU other than sm90) the
    Triton launch with the same splits runs (so the same bits), and the record says so."""
    for kw in (dict(persistent=1), dict(loader_warp=True)):
        with pytest.raises(ValueError, match="splits K over one program per tile"):
            kernels.ConsumerConfig(64, 128, 4, 4, 8, tma=True, wgmma=True, **kw)
    cfg = kernels.ConsumerConfig(64, 128, 4, 4, 8, tma=True, wgmma=True)
    launch = _fb._triton_launch(cfg, 1, 256, 1024, 8192, 4, False, 132, True)
    assert (launch.split, launch.grid, launch.wgmma, launch.pdl) == (8, (8, 4, 8), True, False)
    assert launch.bmm.meta["SPLIT_K"] == 8 and launch.sums is not None and launch.partial_shape == (8, 1, 256, 1024)
    assert _fb._triton_for(cfg, True) == kernels.ConsumerConfig(64, 128, 4, 3, 8, tma=True, prefetch_scales=True)
    g, m, n, k = 2, 37, 256, 640
    a, a_scale, b, b_scale = _consumer_operands(g, m, n, k, 11, device)
    want = kernels.launch_consumer(a, a_scale, b, b_scale, torch.empty(g, m, n, dtype=torch.bfloat16, device=device),
                                   kernels.ConsumerConfig(64, 128, 4, 3, 3))
    with provenance.capture() as ran:
        got = kernels.launch_consumer(a, a_scale, b, b_scale, torch.empty_like(want),
                                      kernels.ConsumerConfig(64, 128, 4, 4, 3, tma=True, wgmma=True))
    assert ran[-1].detail("split_k") == 3, ran[-1]
    assert ran[-1].detail("kernel") == ("gluon-wgmma" if _fb._wgmma_ok(device) else "triton"), ran[-1]
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))


def test_consumer_loader_warp_is_the_gluon_kernels_with_one_program_per_tile(monkeypatch):
    """A loader warp (warp specialization) is a schedule of the Gluon kernel's one-program-per-tile grid:
    asked of another kernel or with a persistent grid it is refused, naming what was asked; its launch
    caps registers so the loader's warpgroup fits beside the compute warps (two 64-row programs per SM).
    Where Triton's Gluon cannot specialize warps so, the Gluon kernel runs loading its own tiles (and
    the record says so: it is made from the launch that ran)."""
    with pytest.raises(ValueError, match="loader warp is the Gluon kernel's"):
        kernels.ConsumerConfig(64, 128, 4, 3, tma=True, loader_warp=True)
    with pytest.raises(ValueError, match="persistent=1"):
        kernels.ConsumerConfig(128, 128, 8, 4, tma=True, wgmma=True, persistent=1, loader_warp=True)
    with pytest.raises(TypeError, match="loader_warp: expected a bool"):
        kernels.ConsumerConfig(128, 128, 8, 4, tma=True, wgmma=True, loader_warp=1)
    cfg = kernels.ConsumerConfig(128, 128, 8, 4, tma=True, wgmma=True, loader_warp=True)
    launch = _fb._triton_launch(cfg, 8, 4096, 1024, 8192, 4, False, 132)
    assert launch.grid == (8, 32, 8)
    if _fb.fp8_block_bmm_wgmma.AVAILABLE:
        # 12 warps (8 + the loader's warpgroup) x 32 threads x 168 <= 65536; 2 x 8 warps x 32 x 128
        assert launch.bmm.meta["maxnreg"] == 168 and launch.bmm.meta["LOADER"] is True, launch.bmm.meta
        small = _fb._triton_launch(dataclasses.replace(cfg, block_m=64, num_warps=4), 8, 4096, 1024, 8192, 4, False, 132)
        assert small.bmm.meta["maxnreg"] == 128, small.bmm.meta
    a, _, b, _ = _consumer_operands(1, 64, 128, 256, 0, torch.device("cpu"))
    monkeypatch.setattr(_fb, "_wgmma_ok", lambda device: True)  # as on an sm90 GPU
    if _fb._tma_layout_ok(a, b, 128):
        assert _fb._with_loads(cfg, a, b, 128) == cfg
        monkeypatch.setattr(_fb.fp8_block_bmm_wgmma, "LOADER_AVAILABLE", False)
        assert _fb._with_loads(cfg, a, b, 128) == dataclasses.replace(cfg, loader_warp=False)


def test_consumer_dispatch_takes_wgmma_on_hopper_grids_that_take_tma(device):
    """On an sm90 GPU the unsplit grids run the Gluon kernel (a launch of ``WGMMA_TABLE``) through the
    public function, with the pointer launch's bits; split grids keep the Triton kernel."""
    _skip_unless_wgmma(device)
    g, n, k = 4, 256, 512
    m = tma_m(device, g, n, k)
    assert kernels.consumer_config(m, n, k, g, device) in [cfg for _, cfg in _fb.WGMMA_TABLE]
    a, a_scale, b, b_scale = _consumer_operands(g, m, n, k, 7, device)
    with provenance.capture() as ran:
        got = kernels.fp8_block_bmm(a, a_scale, b, b_scale)
    assert ran[-1].detail("kernel") == "gluon-wgmma", ran[-1]
    want = kernels.launch_consumer(a, a_scale, b, b_scale, torch.empty_like(got), kernels.ConsumerConfig(64, 128, 4, 3))
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    small = kernels.consumer_config(m // 4, n, k, g, device)
    assert not small.wgmma, small


def test_consumer_wgmma_launch_where_it_cannot_run_says_so(device):
    """A wgmma launch where the Gluon kernel cannot run (a CPU, a GPU other than sm90) runs the table's
    Triton launch (TMA loads where the device has them), and one whose buffers a descriptor cannot cover
    runs its pointer launch; the record says which, and the bits are the pointer launch's."""
    g, m, n, k = 2, 37, 256, 384
    a, a_scale, b, b_scale = _consumer_operands(g, m, n, k, 4, device)
    want = kernels.launch_consumer(a, a_scale, b, b_scale, torch.empty(g, m, n, dtype=torch.bfloat16, device=device),
                                   kernels.ConsumerConfig(64, 128, 4, 3))
    shifted = torch.zeros(g * m * k + 1, dtype=torch.uint8, device=device).view(FP8_DTYPE)[1:].view(g, m, k)
    shifted.copy_(a)
    aligned = ("gluon-wgmma", "tma") if _fb._wgmma_ok(device) else ("triton", "tma" if _fb._tma_layout_ok(a, b, n) else "pointer")
    for what, a_in, expect in (("aligned", a, aligned),
                               ("an activation buffer at an odd address", shifted, ("triton", "pointer"))):
        with provenance.capture() as ran:
            got = kernels.launch_consumer(a_in, a_scale, b, b_scale, torch.empty_like(want), _WGMMA_128)
        assert (ran[-1].detail("kernel"), ran[-1].detail("loads")) == expect, (what, ran[-1])
        if expect[0] == "triton":
            assert ran[-1].detail("block_m") == 64, (what, ran[-1])  # the table's Triton launch, not BLOCK_M 128
        assert torch.equal(got.view(torch.int16), want.view(torch.int16)), what


#: the wgmma launch with 128-row tiles and a loader warp (the table's from WGMMA_128_MIN_TILES_PER_SM tiles per SM)
_WGMMA_128 = kernels.ConsumerConfig(128, 128, 8, 4, tma=True, wgmma=True,
                                    loader_warp=_fb.fp8_block_bmm_wgmma.LOADER_AVAILABLE)


def test_consumer_table_takes_wgmma_on_grids_of_half_the_sms_from_its_least_m():
    """The dispatch's rule: a device that runs the Gluon kernel gets it for every grid of at least half
    as many tiles (BLOCK_M 64, BLOCK_N 128) as SMs from M = ``WGMMA_MIN_M`` on, BLOCK_M 64 with 4 TMA
    buffers below one wave of 128-row tiles and 128-row tiles with 8 warps and a loader warp from
    ``WGMMA_128_MIN_TILES_PER_SM`` tiles per SM
    (what an H200 measured at the DeepSeek-V4-Pro shapes, ``CONSUMER_TUNING``); smaller grids (K split,
    or too short to split) and smaller M keep the Triton launch."""
    few, many = kernels.ConsumerConfig(64, 128, 4, 4, tma=True, wgmma=True), _WGMMA_128
    dsv4 = {("dep8", 256): many, ("dep8", 1024): many, ("dep8", 1500): many, ("dep8", 4096): many,
            ("dep8", 8192): many, ("tep8", 1024): few, ("tep8", 1500): few, ("tep8", 2048): many, ("tep8", 4096): many, ("tep8", 8192): many}
    for (shape, m), want in dsv4.items():
        got = _fb._consumer_config(m, 1024, 8192, 8 if shape == "dep8" else 1, 132, True)
        assert got == want, (shape, m, got)
    for n, k in ((1024, 8192), (128, 128), (256, 256)):  # DeepSeek-V4-Pro; one K block (nothing to split)
        for m in (1, 16, 64, 255, 256, 257, 1000, 1024, 1500, 2048, 4096, 8192):
            for g in (1, 8, 128):
                plain, fast = _fb._consumer_config(m, n, k, g, 132, False), _fb._consumer_config(m, n, k, g, 132, True)
                tiles = cdiv(m, 64) * cdiv(n, 128) * g
                if m < _fb.WGMMA_MIN_M or tiles < 132 // 2:
                    assert fast == plain, (m, n, k, g, plain, fast)
                else:
                    assert fast.wgmma and fast.tma and fast.split_k == 1, (m, n, k, g, fast)
                    assert (fast.block_m == 128) == (tiles >= _fb.WGMMA_TABLE[0][0] * 132), (m, n, k, g, fast)
    assert _fb._consumer_config(16, 1024, 8192, 128, 132, True) == _fb._consumer_config(16, 1024, 8192, 128, 132, False)
    assert _fb._consumer_config(64, 1024, 8192, 1, 132, True).split_k > 1  # TEP8 decode: K split, Triton
    assert not _fb._wgmma_ok(torch.device("cpu"))


def test_consumer_table_splits_small_grids_into_about_two_programs_per_sm():
    """Grids of fewer tiles than half the SMs split K (at most ``SPLIT_K_MAX`` slices, a power of two) into
    about ``SPLIT_PROGRAMS_PER_SM`` programs per SM of 128-wide tiles, 32-wide where even the most
    slices of 128-wide tiles leave SMs idle (never 64: with the fused multiply-add those launches were
    the slow ones, ``CONSUMER_TUNING``); what an H200 measured fastest at the DeepSeek-V4-Pro shapes."""
    split = lambda bm, bn, sk: kernels.ConsumerConfig(bm, bn, 4, 3, sk, prefetch_scales=True)  # noqa: E731
    dsv4 = {("tep8", 64): split(64, 32, 8), ("tep8", 256): split(64, 128, 8), ("dep8", 64): split(64, 128, 4),
            ("tep8", 1): split(16, 32, 8), ("dep8", 1): split(16, 128, 4)}
    for (shape, m), want in dsv4.items():
        got = _fb._consumer_config(m, 1024, 8192, 8 if shape == "dep8" else 1, 132, True)
        assert got == want, (shape, m, got)
    for sms in (8, 78, 132):
        for n, k in ((1024, 8192), (128, 128), (256, 512), (128, 384)):
            for m in (1, 16, 33, 64, 200):
                for g in (1, 2, 8):
                    got = _fb._consumer_config(m, n, k, g, sms, True)
                    tiles = cdiv(m, got.block_m) * cdiv(n, 128) * g
                    if tiles >= sms // 2:
                        assert got.split_k == 1 and got.block_n == 128, (sms, m, n, k, g, got)
                        continue
                    most = min(k // 128, _fb.SPLIT_K_MAX)
                    assert got.block_n == (32 if tiles * most < sms else 128), (sms, m, n, k, g, got)
                    programs = cdiv(m, got.block_m) * cdiv(n, got.block_n) * g * got.split_k
                    assert got.split_k & (got.split_k - 1) == 0 and got.split_k <= most, (sms, m, n, k, g, got)
                    assert programs <= _fb.SPLIT_PROGRAMS_PER_SM * sms or got.split_k == 1, (sms, m, n, k, g, got)
                    assert got.split_k * 2 > most or 2 * programs > _fb.SPLIT_PROGRAMS_PER_SM * sms, (sms, m, n, k, g, got)
                    assert got.prefetch_scales == (got.split_k > 1), got


@pytest.mark.parametrize("m", [3, 64, 1025], ids=lambda m: f"M{m}")
def test_consumer_opcheck(device, m):
    """torch.library.opcheck on the consumer op (out-of-place and out= forms)."""
    g, n, k = 2, 128, 256
    a = torch.randn(g, m, k).to(FP8_DTYPE).to(device)
    a_scale = torch.zeros(g, k // 128, pad4(m), device=device)
    a_scale[:, :, :m] = 0.5
    b = torch.randn(g, n, k).to(FP8_DTYPE).to(device)
    b_scale = torch.full((g, 1, k // 128), 0.25, device=device)
    # test_schema is dropped: its SchemaCheckMode compares inputs with aten.mul, which torch has no
    # float8 kernel for ("mul_cpu_reduced_float not implemented for Float8_e4m3fn"); the fake,
    # autograd-registration and AOT-dispatch checks still run on the FP8 inputs.
    utils = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(torch.ops.accval.fp8_block_bmm, (a, a_scale, b, b_scale, "triton", True), test_utils=utils)
    out = torch.empty(m, g, n, dtype=torch.bfloat16, device=device).transpose(0, 1)
    torch.library.opcheck(torch.ops.accval.fp8_block_bmm_out, (a, a_scale, b, b_scale, out, "triton", True), test_utils=utils)
