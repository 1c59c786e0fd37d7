"""The producer's buffer contract: shapes, strides, zeroed padding, no stray writes, fake == real."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

from accval.kernels.constants import FP8_DTYPE, pad4
from accval.kernels.inv_rope_fp8_quant import config_for, launch_producer, validate_producer_args

from .cases import BLOCK_SIZES, ProducerCase, fit, make_inputs, producer_cases
from .checks import check_layout, op_calls


def _poisoned(fn):
    """Run ``fn`` with torch.empty filling new memory with NaN, so unwritten outputs show."""
    prev_det, prev_fill = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        return fn()
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.utils.deterministic.fill_uninitialized_memory = prev_fill


@given(case=producer_cases())
@example(case=ProducerCase(m=1500 % 256 + 3, block_tokens_m=16))
@example(case=ProducerCase(m=5, n_groups=3, block_tokens_m=8))
@example(case=ProducerCase(m=1500, n_groups=2, seed=1500))  # the DEP8 size: BTM 8 where the seed's table applies
@example(case=ProducerCase(m=9, head_dim=128, rope_dim=128, is_neox=False))  # a head that is all rope
def test_layout_contract(producer, device, case, accval_record):
    """For every M: fp8 is [G, M, K] with strides (M*K, K, 1); the scales are [G, K/128, pad4(M)]
    contiguous fp32 ([G, ceil(K/512), pad4(M)] int32 for ue8m0-packed) and their rows M..pad4(M)-1 are
    exactly zero (new memory is NaN-poisoned first); an mgk-view producer's views lie over exactly
    these buffers; the inputs o, positions and cos_sin_cache are left unchanged (the one property given
    the caller's own tensors: every other gets copies, so an input written to fails here alone)."""
    accval_record("cover", **check_layout_case(producer, case, device))


def check_layout_case(producer, case: ProducerCase, device) -> dict:
    """The layout property for one case; returns what was covered (layout, head_dim, rope_dim)."""
    case = fit(producer, case)
    o, pos, cache = make_inputs(case, device)
    before = [t.clone() for t in (o, pos, cache)]
    fp8, scale = _poisoned(lambda: producer(*case.args(o, pos, cache), is_neox=case.is_neox,
                                            block_tokens_m=case.block_tokens_m, own_inputs=True))
    k = case.heads_per_group * case.head_dim
    ctx = f"{case} producer={producer.name} recipe={producer.recipe.name}"
    check_layout(fp8, scale, case.n_groups, case.m, k, ctx, producer.recipe)
    pad = scale[:, :, case.m:]
    assert torch.equal(pad, torch.zeros_like(pad)), f"scale padding rows M..pad4(M) not zero: {pad.flatten()[:8]}; {ctx}"
    if scale.dtype == torch.float32:
        assert torch.isfinite(scale).all(), f"non-finite scales (unwritten rows?); {ctx}"
    for name, old, new in zip(("o", "positions", "cos_sin_cache"), before, (o, pos, cache)):
        assert torch.equal(old, new), f"the producer wrote into its input {name}; {ctx}"
    return dict(layout="neox" if case.is_neox else "gptj", head_dim=case.head_dim, rope_dim=case.rope_dim)


GUARD = 4096


@pytest.mark.parametrize("btm", BLOCK_SIZES, ids=lambda b: f"BTM{b}")
@pytest.mark.parametrize("m", [1, 5, 33, 67], ids=lambda m: f"M{m}")
def test_launcher_writes_nothing_outside_its_buffers(device, m, btm):
    """accval's launcher, at every token block (the loop overshoots pad4(M) when pad4(M) % BTM != 0):
    guard regions of 4096 bytes before and after both output buffers keep their canary values."""
    case = ProducerCase(m=m, n_groups=2, heads_per_group=2, block_tokens_m=btm, seed=m)
    o, pos, cache = make_inputs(case, device)
    p = validate_producer_args(*case.args(o, pos, cache))
    fp8_len, scale_len = p.n_groups * p.m * p.k, p.n_groups * p.k_blocks * pad4(p.m)
    fp8_flat = torch.full((fp8_len + 2 * GUARD,), 0x5A, dtype=torch.uint8, device=device)
    scale_flat = torch.full((scale_len + 2 * GUARD,), 1234.5, dtype=torch.float32, device=device)
    fp8 = fp8_flat[GUARD:GUARD + fp8_len].view(FP8_DTYPE).view(p.fp8_shape())
    scale = scale_flat[GUARD:GUARD + scale_len].view(p.scale_shape())
    launch_producer(p, o, pos, cache, fp8, scale, config_for(p.m, o.device, btm, is_neox=p.is_neox))
    ctx = f"{m=} {btm=}"
    for name, flat, n, canary in (("fp8", fp8_flat, fp8_len, 0x5A), ("scale", scale_flat, scale_len, 1234.5)):
        before, after = flat[:GUARD], flat[GUARD + n:]
        assert (before == canary).all(), f"{name}: {int((before != canary).sum())} writes before the buffer; {ctx}"
        assert (after == canary).all(), f"{name}: {int((after != canary).sum())} writes after the buffer; {ctx}"


@pytest.fixture
def producer_op(producer):
    """``producer`` where it exposes a torch op (``accval_op``); skipped otherwise, before Hypothesis runs
    anything (a skip inside an explicit example prints as Hypothesis' "Failing explicit example")."""
    if producer.op is None:
        pytest.skip(f"producer {producer.name!r} exposes no torch op (accval_op); fake checks need one")
    return producer


def _fake_vs_real(producer, case, device, note=""):
    o, pos, cache = make_inputs(case, device)
    fp8, scale = producer.raw(*case.args(o, pos, cache), is_neox=case.is_neox, block_tokens_m=case.block_tokens_m)
    with FakeTensorMode() as mode:
        fo, fpos, fcache = (mode.from_tensor(t) for t in (o, pos, cache))
        ffp8, fscale = producer.raw(*case.args(fo, fpos, fcache), is_neox=case.is_neox,
                                    block_tokens_m=case.block_tokens_m)
    ctx = f"{case} producer={producer.name}{note}"
    for name, real, fake in (("fp8", fp8, ffp8), ("scale", scale, fscale)):
        assert (tuple(fake.shape), fake.stride(), fake.dtype) == (tuple(real.shape), real.stride(), real.dtype), (
            f"fake != real: {name}: fake gives shape {tuple(fake.shape)} strides {fake.stride()} {fake.dtype}, real gives "
            f"{tuple(real.shape)} {real.stride()} {real.dtype}; {ctx}")


@settings(max_examples=10)
@given(m=st.integers(1, 64), btm=st.sampled_from((None,) + BLOCK_SIZES))
@example(m=67, btm=32)  # first (examples run in order): the cheapest case where max(BTM, 4) padding differs
@example(m=1500, btm=None)
@example(m=1025, btm=None)
@example(m=1026, btm=16)
@example(m=4097, btm=None)
def test_fake_matches_real(producer_op, device, m, btm):
    """At every dispatch branch the fake (meta) implementation's shapes, strides and dtypes equal the
    real outputs' (what torch.compile and graph capture allocate)."""
    producer = producer_op
    note = ""
    if btm is not None and not producer.accepts_block_tokens_m:
        # the producer's own dispatch: M still walks every branch it has
        note = f" (the example's btm={btm} not forced: the producer takes no block_tokens_m)"
        btm = None
    case = fit(producer, ProducerCase(m=m, n_groups=2, heads_per_group=1, block_tokens_m=btm, seed=m))
    _fake_vs_real(producer, case, device, note)


#: (1025, 0): the dispatch's loop-kernel branch, ~45 s in the CPU interpreter; its fake-vs-real is
#: test_fake_matches_real's example m=1025 and (19, 8)/(67, 32) opcheck the loop kernel on a CPU.
@pytest.mark.parametrize("m,btm", [(3, 0), (7, 1), pytest.param(1025, 0, marks=pytest.mark.slow_cpu), (19, 8), (67, 32)],
                         ids=lambda v: str(v))
def test_producer_opcheck(producer, device, m, btm):
    """torch.library.opcheck (schema, fake tensor, autograd registration, AOT dispatch) on the op, called
    with the arguments the producer itself passes to it (an engine's op need not take the contract's);
    cases that force a token block run only where the producer takes ``block_tokens_m``."""
    if producer.op is None:
        pytest.skip(f"producer {producer.name!r} exposes no torch op (accval_op)")
    if btm and not producer.accepts_block_tokens_m:
        pytest.skip(f"producer {producer.name!r} takes no block_tokens_m; the case forcing BTM={btm} is covered "
                    "by the others")
    case = fit(producer, ProducerCase(m=m, n_groups=2, heads_per_group=1, seed=m))
    o, pos, cache = make_inputs(case, device)
    _, calls = op_calls(producer.op, lambda: producer.raw(*case.args(o, pos, cache), is_neox=case.is_neox,
                                                          block_tokens_m=btm or None))
    assert calls, (f"producer {producer.name!r} declares accval_op {producer.op} but did not call it; declare the "
                   f"op it calls (or none); {case}")
    op, args, kwargs = calls[0]
    torch.library.opcheck(op, args, kwargs)
