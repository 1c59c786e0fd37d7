"""The producer's numbers: its recipe's mirror reference (bit for bit, or graded), and the exact math.

Which comparison applies is the producer's declaration (``accval.implementations``): an
``accval_exact`` producer must equal its recipe's mirror reference bit for bit; any other is held to
the graded bounds of ``checks.py`` and the run's summary line reports how often it differed.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from accval.kernels.constants import FP8_DTYPE, FP8_E4M3_MAX, QUANT_BLOCK
from accval.kernels.recipes import UE8M0_PER_WORD, block_scales, scale_values, unpack_ue8m0
from accval.kernels.reference import dequantize_activations, inv_rope_fp8_quant_ref, inverse_rope_, inverse_rope_math_ref

from .cases import (
    BLOCK_SIZES,
    LongContextCase,
    ProducerCase,
    boundary_absmaxes,
    explicit_case,
    explicit_sizes,
    fit,
    make_inputs,
    place_boundary_absmaxes,
    producer_cases,
)
from .checks import (
    CODE_AXES,
    FP8_CODE_TOL_ULPS,
    ROTATION_REL_TOL,
    assert_exact,
    assert_fp8_equal,
    assert_not_directed,
    assert_within_bound,
    at,
    fp8_is_nan,
    fp8_ordinal,
    quant_error_bound,
    scale_axes,
    scale_window,
)


def mirror_rotated(o, pos, cache, case: ProducerCase) -> torch.Tensor:
    """The mirror's quantizer input: inverse RoPE rounded to the input dtype, as fp32 ``[G, M, K]``."""
    x = inverse_rope_(o.clone(), pos, cache, case.rope_dim, case.is_neox)
    return x.reshape(case.m, case.n_groups, -1).transpose(0, 1).float().cpu()


def check_against_mirror(producer, case: ProducerCase, device, record=None) -> None:
    """The producer on ``case`` (moved inside its declaration), judged by :func:`judge_against_mirror`."""
    case = fit(producer, case)
    o, pos, cache = make_inputs(case, device)
    fp8, scale = producer(*case.args(o, pos, cache), is_neox=case.is_neox, block_tokens_m=case.block_tokens_m)
    judge_against_mirror(producer, case, o, pos, cache, fp8, scale, record)


def judge_against_mirror(producer, case: ProducerCase, o, pos, cache, fp8, scale, record=None, where: str = "") -> None:
    """``fp8, scale``, the producer's output for ``o, pos, cache`` as ``case`` describes them. Exact producers:
    codes and scales (padding included) equal the mirror's. Others: every scale in the recipe's window around
    the block's absmax (of the mirror's rotated values, or of the exact ones), every code within
    FP8_CODE_TOL_ULPS of the mirror's quantization at the producer's own scale (of the rotated value rounded
    to the input dtype, or not), NaN where the mirror has NaN. ``where`` says which part of a larger call this is."""
    recipe = producer.recipe
    ref_fp8, ref_scale = inv_rope_fp8_quant_ref(*case.args(o, pos, cache), is_neox=case.is_neox, recipe=recipe)
    fp8, scale, ref_fp8, ref_scale = fp8.cpu(), scale.cpu(), ref_fp8.cpu(), ref_scale.cpu()
    ctx = f"{where}{case} producer={producer.name} recipe={recipe.name}"
    if (tuple(scale.shape), scale.dtype) != (tuple(ref_scale.shape), ref_scale.dtype):
        raise AssertionError(f"scales: got {tuple(scale.shape)} {scale.dtype}, the {recipe.name} contract is "
                             f"{tuple(ref_scale.shape)} {ref_scale.dtype}; {ctx}")
    g, m, k = ref_fp8.shape
    kb = k // QUANT_BLOCK
    if record is not None:
        s_impl, s_ref = scale_values(scale, kb)[:, :, :m], scale_values(ref_scale, kb)[:, :, :m]
        code_diff = fp8.view(torch.uint8) != ref_fp8.view(torch.uint8) if fp8.shape == ref_fp8.shape else None
        differ = ~((s_impl == s_ref) | (s_impl.isnan() & s_ref.isnan()))
        extra = {}
        if not producer.exact:  # the mirror rounds the rotated slice to the input dtype; a fused kernel may not
            y32 = inverse_rope_(o.to(torch.float32, copy=True), pos, cache, case.rope_dim, case.is_neox).cpu()  # rotated in fp32, kept fp32
            amax = y32.reshape(m, g, kb, QUANT_BLOCK).abs().amax(-1).permute(1, 2, 0)  # [G, KB, M]
            s_alt = block_scales(amax, recipe)
            neither = differ & ~((s_impl == s_alt) | (s_impl.isnan() & s_alt.isnan()))
            extra["scales_neither"] = (int(neither.sum()), s_ref.numel())
        record("mirror", codes=(int(code_diff.sum()) if code_diff is not None else -1, ref_fp8.numel()),
               scales=(int(differ.sum()), s_ref.numel()), **extra)
    if producer.exact:
        assert_fp8_equal(fp8, ref_fp8, f"fp8 codes vs the {recipe.name} mirror reference", ctx, CODE_AXES)
        assert_exact(scale, ref_scale, f"scales (padding rows included) vs the {recipe.name} mirror reference", ctx,
                     scale_axes(recipe), rows=m)
        return
    if fp8.dtype != FP8_DTYPE or fp8.shape != ref_fp8.shape:
        raise AssertionError(f"fp8: got {tuple(fp8.shape)} {fp8.dtype}, expected {tuple(ref_fp8.shape)} {FP8_DTYPE}; {ctx}")
    y = mirror_rotated(o, pos, cache, case)
    y_exact = inverse_rope_math_ref(o.cpu(), pos.cpu(), cache.cpu(), case.rope_dim, case.is_neox)
    y_exact = y_exact.reshape(case.m, case.n_groups, -1).transpose(0, 1)  # float64, no input-dtype rounding
    s_impl = scale_values(scale, kb)[:, :, :m]
    amax = [t.reshape(g, m, kb, QUANT_BLOCK).abs().amax(-1).transpose(1, 2).float() for t in (y, y_exact)]  # [G, KB, M]
    lo = scale_window(torch.minimum(*amax), recipe, ROTATION_REL_TOL)[0]
    hi = scale_window(torch.maximum(*amax), recipe, ROTATION_REL_TOL)[1]
    ok = ((s_impl >= lo) & (s_impl <= hi)) | (s_impl.isnan() & amax[0].isnan())
    if not ok.all():
        i = tuple(int(v) for v in (~ok).nonzero()[0])
        raise AssertionError(f"scales: {int((~ok).sum())} of {ok.numel()} outside the {recipe.name} window for the "
                             f"block's absmax; first at {at(i, 'g, kb, m')}: got {s_impl[i].item()!r}, allowed "
                             f"[{lo[i].item()!r}, {hi[i].item()!r}] (absmax {amax[0][i].item()!r}); {ctx}")
    if recipe.packed and scale.shape[1] * UE8M0_PER_WORD > kb:
        spare = unpack_ue8m0(scale, scale.shape[1] * UE8M0_PER_WORD)[:, kb:]
        assert (spare == 0).all(), f"packed scale bytes past the last k-block are not zero; {ctx}"
    # the codes a faithful rounding may give, at the producer's own scale, of y rounded to the input
    # dtype (the mirror) or not (the exact value), and anything between
    s = s_impl.transpose(1, 2).repeat_interleave(QUANT_BLOCK, dim=2).double()  # [G, M, K]
    safe = torch.where(s > 0, s, torch.ones_like(s))
    t = [torch.where(s > 0, v.double() / safe, torch.zeros_like(s)) for v in (y, y_exact)]
    want = [v.clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).float().to(FP8_DTYPE) for v in t]
    low, high = torch.minimum(*(fp8_ordinal(w) for w in want)), torch.maximum(*(fp8_ordinal(w) for w in want))
    got = fp8_ordinal(fp8)
    nan = fp8_is_nan(want[0])
    bad = (fp8_is_nan(fp8) != nan) | (((got < low - FP8_CODE_TOL_ULPS) | (got > high + FP8_CODE_TOL_ULPS)) & ~nan)
    if bad.any():
        i = tuple(int(v) for v in bad.nonzero()[0])
        raise AssertionError(
            f"fp8 codes: {int(bad.sum())} of {bad.numel()} more than {FP8_CODE_TOL_ULPS} ULP from the {recipe.name} "
            f"mirror's quantization at the producer's own scale; first at {at(i, CODE_AXES)}: got {fp8[i].float().item()}, expected "
            f"{want[0][i].float().item()} (y/scale = {t[0][i].item():.6g}, exact {t[1][i].item():.6g}); {ctx}")
    # the codes a step off both roundings to nearest: a faithful rounding puts them either side, a
    # directed one (truncation) all on one
    off = ~nan & ((got < low) | (got > high))
    smaller = torch.where(t[0] >= 0, got < low, got > high)
    assert_not_directed(int((off & smaller).sum()), int((off & ~smaller).sum()),
                        f"fp8 codes vs the {recipe.name} mirror's quantization at the producer's own scale", ctx)


@given(case=producer_cases())
@example(case=ProducerCase(m=1500 % 260 + 1, n_groups=2, heads_per_group=2, block_tokens_m=16))  # M % BTM != 0
@example(case=ProducerCase(m=7, n_groups=3, heads_per_group=1, head_dim=512, rope_dim=64, is_neox=False))
@example(case=ProducerCase(m=33, head_dim=384, rope_dim=128, block_tokens_m=32, token_pad=130, head_pad=16))
def test_producer_matches_mirror_reference(producer, device, case, accval_record):
    """For every valid call inside the producer's declaration, its FP8 codes and scales equal its
    recipe's mirror reference (inverse RoPE in the input dtype, then 1x128 quantization with
    permute(1,0,2)) exactly, or, for a producer that does not claim exactness, within the graded
    bounds: both layouts, strided o, any BTM."""
    check_against_mirror(producer, case, device, accval_record)


@given(case=producer_cases(max_tokens=24))
@example(case=ProducerCase(m=7, n_groups=2, heads_per_group=2, head_dim=512, rope_dim=64, dtype=torch.float32))
@example(case=ProducerCase(m=5, n_groups=1, heads_per_group=3, head_dim=256, rope_dim=16, dtype=torch.bfloat16,
                           is_neox=False, token_pad=130))
@example(case=ProducerCase(m=3, n_groups=2, heads_per_group=1, head_dim=384, rope_dim=32, dtype=torch.float16))
def test_scales_at_the_recipes_boundaries(producer, device, case, accval_record):
    """Blocks whose absmax sits exactly on, or a few ulps either side of, the edges of the recipe's scale
    rule (``448 * 2**k``, where UE8M0 rounding turns; the amax floor; the dtype's largest value; scales past
    2**+-60) get the mirror's codes and scales like any other block: bit for bit from an exact producer,
    within the graded bounds otherwise. Random draws almost never land there: a UE8M0 scale taken as
    ``exp2(ceil(log2(amax / 448)))`` in fp32 is one power of two too small only for an absmax within a few
    ulps above ``448 * 2**k`` (sglang #29954), and passes every other property. A non-exact producer's window
    reaches ``checks.ROTATION_REL_TOL`` past the edge, so there it passes: its largest code saturates by at most that
    share of its value."""
    case = fit(producer, case)
    if case.nope_dim == 0:  # no element the rotation leaves alone: move to a declared head that has one
        heads = [(h, r) for h in sorted(producer.head_dims) for r in sorted(producer.rope_dims) if r < h]
        if not heads:
            pytest.skip(f"producer {producer.name!r} declares no head dim larger than a rope dim: every element is "
                        "rotated, so no block's absmax can be placed")
        head_dim, rope_dim = heads[case.seed % len(heads)]
        case = dataclasses.replace(case, head_dim=head_dim, rope_dim=rope_dim)
    o, pos, cache = make_inputs(case, device)
    assert place_boundary_absmaxes(o, case, boundary_absmaxes(case.dtype, producer.recipe.eps), case.seed) > 0
    fp8, scale = producer(*case.args(o, pos, cache), is_neox=case.is_neox, block_tokens_m=case.block_tokens_m)
    judge_against_mirror(producer, case, o, pos, cache, fp8, scale, accval_record, where="boundary absmaxes: ")


@pytest.mark.parametrize("m", explicit_sizes())
def test_explicit_sizes_match_reference(producer, device, m, accval_record):
    """The pull request's sizes and every awkward size around the dispatch thresholds, automatic BTM."""
    check_against_mirror(producer, explicit_case(m, is_neox=m % 2 == 0), device, accval_record)


@pytest.mark.parametrize("positions_dtype", [torch.int32, torch.int64], ids=["int32", "int64"])
def test_long_context_positions_match_reference(producer, device, positions_dtype, accval_record):
    """Positions up to 2**20 - 1 (DeepSeek-V4's context), a strided view, into a YaRN cache of all 2**20 rows:
    every other property draws positions below 4096, where a producer keeping 16 bits of a position (an
    int16 index) is right."""
    case = fit(producer, LongContextCase(m=6, n_groups=2, heads_per_group=1, rope_dim=8, positions_dtype=positions_dtype,
                                         positions_stride=2, seed=3))
    o, pos, cache = make_inputs(case, device)
    fp8, scale = producer(*case.args(o, pos, cache), is_neox=case.is_neox)
    judge_against_mirror(producer, case, o, pos, cache, fp8, scale, accval_record,
                         where=f"positions up to {int(pos.max())}: ")


#: BTM 1-4 at M ~1500 run 375-1500 programs per head in the CPU interpreter (~40 s each) and cannot
#: show the padding defect (pad_up(M, max(BTM, 4)) == pad4(M)); the explicit M1500 case and the
#: GPU runs cover them.
_FORCED_BTM = [pytest.param(b, id=f"BTM{b}", marks=pytest.mark.slow_cpu if b < 8 else ()) for b in BLOCK_SIZES]


@pytest.mark.parametrize("btm", _FORCED_BTM)
@pytest.mark.parametrize("m", [1500, 1503], ids=lambda m: f"M{m}")
def test_forced_block_sizes_match_reference(producer, device, m, btm, accval_record):
    """M=1500 (the DEP8 size that exposed scale-pad-btm) and 1503 (M % 4 == 3) at every token block."""
    if not producer.accepts_block_tokens_m:
        pytest.skip(f"producer {producer.name!r} takes no block_tokens_m: no token block to force")
    check_against_mirror(producer, ProducerCase(m=m, n_groups=2, heads_per_group=1, block_tokens_m=btm, seed=btm), device,
                         accval_record)


@settings(max_examples=15)
@given(case=producer_cases(max_tokens=64))
def test_producer_is_faithful_to_math(producer, device, case):
    """Dequantized output is within FP8 rounding of the exact (float64) inverse RoPE, whatever the
    recipe: |deq - y| <= rho (2**-3 |y| + 2**-9 s) + (eps_in/2 + 2**-9) |y| + u, rho = 1/2 for an exact
    producer and 1 for a faithful one, eps_in the input dtype's epsilon (the rotated value's rounding
    and the saturation it can cause), u half its smallest subnormal (fp16 inputs of magnitude ~1e-3
    rope into them)."""
    case = fit(producer, case)
    o, pos, cache = make_inputs(case, device)
    fp8, scale = producer(*case.args(o, pos, cache), is_neox=case.is_neox, block_tokens_m=case.block_tokens_m)
    y = inverse_rope_math_ref(o.cpu(), pos.cpu(), cache.cpu(), case.rope_dim, case.is_neox)
    y = y.reshape(case.m, case.n_groups, -1).transpose(0, 1)
    deq = dequantize_activations(fp8.cpu(), scale.cpu())
    k = y.shape[2]
    s = scale_values(scale.cpu(), k // QUANT_BLOCK)[:, :, : case.m].transpose(1, 2).double()
    s = s.repeat_interleave(QUANT_BLOCK, dim=2)
    fi = torch.finfo(case.dtype)
    bound = quant_error_bound(y, s, producer.exact, fi.eps / 2 + 2.0**-9) + fi.smallest_normal * fi.eps / 2 + 1e-30
    assert_within_bound(deq, y, bound, "dequantized producer output vs float64 inverse RoPE",
                        f"{case} producer={producer.name} recipe={producer.recipe.name}")


@pytest.mark.parametrize("is_neox, apart", [(True, True), (True, False), (False, False)],
                         ids=["neox-apart", "neox-in-row", "gptj"])
def test_accval_rope_keeps_signed_zeros(device, is_neox, apart):
    """accval's kernel gives the reference's codes for zeros of both signs in the rope slice at position 0
    (0x80 and 0x00 told apart), on both NEOX rope paths (the slice rotated in a tile of its own and in the
    row's) and GPT-J's: there ``sin`` is +0 and the sign of ``x * cos + x' * (-sin)`` for ``x = -0`` turns
    on ``-sin`` being -0.0 (``fp8_rounding.negated``; Triton 3.6 and 3.7 compile ``-sin`` as ``0 - sin``,
    +0.0). Asked of accval's own kernel only: a zero's sign changes no value the consumer computes, so
    the suite does not hold a plugged producer to it."""
    from accval.kernels.inv_rope_fp8_quant import LaunchConfig, launch_producer, validate_producer_args
    case = ProducerCase(m=3, n_groups=1, heads_per_group=2, head_dim=256, rope_dim=64, is_neox=is_neox)
    o, pos, cache = make_inputs(case, device)
    pos.zero_()
    d = torch.arange(case.rope_dim, device=device)
    second = d >= case.rope_dim // 2 if is_neox else d % 2 == 1  # x's whose partner's sin term is negated
    partners = torch.where((d // (1 if is_neox else 2)) % 2 == 0, 1.0, -1.0)  # partners of both signs
    for head, zero in ((0, -0.0), (1, 0.0)):
        o[:, head, case.nope_dim:] = torch.where(second, zero, partners).to(o.dtype)
    ref_fp8, _ = inv_rope_fp8_quant_ref(*case.args(o, pos, cache), is_neox=is_neox)
    want = ref_fp8.view(torch.uint8).cpu()
    assert bool((want == 0x80).any()) and bool((want == 0x00).any()), "the case must hold zero codes of both signs"
    p = validate_producer_args(*case.args(o, pos, cache), is_neox=is_neox)
    fp8 = torch.full(p.fp8_shape(), 1.0, dtype=FP8_DTYPE, device=device)
    scale = torch.empty(p.scale_shape(), device=device)
    launch_producer(p, o, pos, cache, fp8, scale, LaunchConfig(1, 1, 1), force_rope_apart=apart)
    got = fp8.view(torch.uint8).cpu()
    assert torch.equal(got, want), f"{int((got != want).sum())} codes differ from the reference; is_neox={is_neox} apart={apart}"


#: straight-kernel programs of 1, 2 and 4 heads and loop-kernel iterations of 1 and 4 tokens, each
#: rotating the NEOX rope slice in a tile of its own (True) or in the row's (False); the dispatch takes
#: the first way in programs of at most ``ROPE_APART_MAX_ROWS`` rows in large launches (``rope_apart``)
_NEOX_LAUNCHES = ((1, 1, 1, 1, 1, False), (1, 1, 1, 1, 1, True), (1, 1, 1, 1, 2, True), (1, 1, 1, 1, 4, False),
                  (8, 1, 1, 1, 1, True), (8, 1, 1, 4, 1, False))


@given(case=producer_cases(max_tokens=40), special=st.sampled_from((None, float("nan"), float("inf"), float("-inf"), 0.0)))
def test_accval_neox_rope_paths_give_the_same_bits(device, case, special):
    """accval's NEOX kernel has two ways to rotate the rope slice (``rope_apart``): every launch above
    gives the same codes and scales, compared as raw bits, for every head and rope dimension, with NaN,
    infinities or zeros placed in the rope slice and in a nope block."""
    from accval.kernels.inv_rope_fp8_quant import LaunchConfig, launch_producer, validate_producer_args
    case = dataclasses.replace(case, is_neox=True, n_groups=2, heads_per_group=2, m=max(1, case.m // 4))
    o, pos, cache = make_inputs(case, device)
    if special is not None:
        o[0, 0, case.head_dim - 1] = special  # the rope slice's last element (second half of a pair)
        o[-1, 3, case.head_dim - case.rope_dim] = special  # its first
        o[0, 1, 0] = special  # a nope element (of the last block when the head is one block)
    p = validate_producer_args(*case.args(o, pos, cache))
    outs = []
    for btm, warps, stages, per_iter, heads, apart in _NEOX_LAUNCHES:
        fp8 = torch.full(p.fp8_shape(), 1.0, dtype=FP8_DTYPE, device=device)
        scale = torch.full(p.scale_shape(), -1.0, device=device)
        launch_producer(p, o, pos, cache, fp8, scale, LaunchConfig(btm, warps, stages, per_iter, heads_per_program=heads),
                        force_rope_apart=apart)
        outs.append((fp8.view(torch.uint8).cpu(), scale.view(torch.int32).cpu()))
    for launch, (codes, scales) in zip(_NEOX_LAUNCHES[1:], outs[1:]):
        ctx = f"launch {launch} vs {_NEOX_LAUNCHES[0]}; {case} special={special}"
        assert torch.equal(codes, outs[0][0]), f"codes differ at {int((codes != outs[0][0]).sum())} places; {ctx}"
        assert torch.equal(scales, outs[0][1]), f"scales differ at {int((scales != outs[0][1]).sum())} places; {ctx}"
