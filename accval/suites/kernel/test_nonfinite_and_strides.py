"""Non-finite blocks and strided positions: the producer equals the legacy reference bit for bit.

NaN/Inf semantics (the legacy two-step path's, which the producer keeps):
  * a block holding a NaN gets a NaN scale (torch's ``amax`` propagates NaN) and all its codes are 0
    (``scale > 0`` is false, so the legacy ``torch.where`` writes zeros);
  * a block holding +-Inf (and no NaN) gets an infinite scale; finite elements become +-0 (codes
    0x00/0x80) and each +-Inf element ``inf / inf`` = NaN, code 0x7F or 0xFF by the NaN's sign bit.
    That sign is the platform's default NaN: positive on CUDA, negative on x86 CPUs (the
    interpreter). Kernel and reference run on the same platform, so they agree; only CPU and GPU
    results differ from each other, in that sign bit of those codes.
A rotation can also make a NaN (``inf * cos - inf * sin``), which then follows the NaN rule.
Those codes are asked of exact fp32-div producers. Of every producer, whatever its recipe: a NaN or an
Inf changes no block but its own (a whole NaN token row, as a CUDA graph's padding rows may hold,
corrupts no real token's scales).

``positions`` may be any 1-d view: the kernel reads it through its stride (a strided view is what a
caller gets from ``positions[::2]`` or a column of a ``[M, k]`` tensor).
"""

from __future__ import annotations

import pytest
import torch

from accval.kernels.reference import inv_rope_fp8_quant_ref

from .cases import ProducerCase, fit, make_inputs
from .checks import CODE_AXES, assert_exact, assert_fp8_equal, at, scale_axes

LAYOUTS = [pytest.param(True, id="neox"), pytest.param(False, id="gptj")]


def _declared(producer, case):
    reason = producer.uncovered(head_dim=case.head_dim, rope_dim=case.rope_dim, is_neox=case.is_neox)
    if reason:
        pytest.skip(reason)


def _fitted(producer, case: ProducerCase) -> ProducerCase:
    """``case`` with a head and rope dim the producer declares (:func:`fit`), so a producer of one head
    size meets these properties too; a layout the producer lacks skips, saying so."""
    moved = fit(producer, case)
    if moved.is_neox != case.is_neox:
        _declared(producer, case)
    return moved


def _strided_positions_read(producer):
    """Skip where the producer declares dense positions (``accval_positions = "contiguous"``)."""
    if producer.positions == "contiguous":
        pytest.skip(f"producer {producer.name!r} declares accval_positions='contiguous': it is handed dense positions "
                    "(the A/B too), so a strided view is not its to read")


def _nonfinite_places(case: ProducerCase) -> dict[str, list[tuple[int, int, int]]]:
    """Where the non-finite tests put their values, ``(token, head, d)``, for the case's head and rope
    dims: a nope element (token 0, block 0), a rope element, a rope element and its rotation partner, an
    element near the row's end and its partner (given the opposite value), two blocks of one token."""
    d, rope = case.head_dim, case.rope_dim
    r0, partner = d - rope, (rope // 2 if case.is_neox else 1)
    end = d - 1 if case.is_neox else d - 2  # NEOX: a second-half element (partner before it); GPT-J: a pair's first
    return {"nope": [(0, 0, 3)], "rope": [(1, 1, r0 + rope // 4)], "pair": [(2, 0, r0), (2, 0, r0 + partner)],
            "opposite": [(3, 1, end), (3, 1, end - partner if case.is_neox else end + 1)],
            "two blocks": [(4, 0, 10), (4, 0, 140 if d > 140 else d - 3)]}


def _compare(producer, case, o, pos, cache, what):
    """The producer against the legacy reference, bit for bit (an exact fp32-div producer), or, for
    any other producer, against its own output for a dense int64 copy of the positions: a strided
    view must give what its values give."""
    _declared(producer, case)
    fp8, scale = producer(*case.args(o, pos, cache), is_neox=case.is_neox)
    if producer.exact and producer.recipe.name == "fp32-div":
        ref_fp8, ref_scale = inv_rope_fp8_quant_ref(*case.args(o, pos, cache), is_neox=case.is_neox)
        against = "legacy two-step reference"
    else:
        ref_fp8, ref_scale = producer(*case.args(o, pos.contiguous().long(), cache), is_neox=case.is_neox)
        against = "the same producer on dense int64 positions"
    ctx = f"{what}; {case} producer={producer.name}"
    if not pos.is_contiguous():
        ctx += ("; a kernel that reads positions as if contiguous (at positions_ptr + token, ignoring the stride) "
                "fails here: pass it the stride, or declare accval_positions = 'contiguous' (docs/contract.md)")
    assert_fp8_equal(fp8.cpu(), ref_fp8.cpu(), f"fp8 codes vs {against}", ctx, CODE_AXES)
    assert_exact(scale.cpu(), ref_scale.cpu(), f"scales (NaN equals NaN) vs {against}", ctx, scale_axes(producer.recipe),
                 rows=case.m)
    return ref_fp8.cpu(), ref_scale.cpu()


#: every value in bf16 (the model's dtype); fp16 (which overflows to Inf in the rotation's rounding)
#: and fp32 (no rounding) once each
_VALUES = [pytest.param(float(v), torch.bfloat16, id=f"{v}-bf16") for v in ("nan", "inf", "-inf")] + [
    pytest.param(float("-inf"), torch.float16, id="-inf-fp16"), pytest.param(float("nan"), torch.float32, id="nan-fp32")]


@pytest.mark.parametrize("value, dtype", _VALUES)
@pytest.mark.parametrize("is_neox", LAYOUTS)
def test_nonfinite_blocks_match_reference(producer, device, is_neox, value, dtype):
    """NaN, +Inf and -Inf in a nope block, in the rope slice (one element, a pair, an element with
    its opposite), next to finite blocks: codes and scales as the legacy path gives them."""
    case = _fitted(producer, ProducerCase(m=6, n_groups=2, heads_per_group=1, head_dim=256, rope_dim=64,
                                          is_neox=is_neox, dtype=dtype))
    if not (producer.exact and producer.recipe.name == "fp32-div"):
        pytest.skip(f"producer {producer.name!r}: the legacy path's NaN/Inf codes are asked of exact fp32-div "
                    f"producers; it declares recipe={producer.recipe.name} exact={producer.exact} (that they stay in "
                    "their blocks is asked of every producer)")
    o, pos, cache = make_inputs(case, device)
    places = _nonfinite_places(case)
    for kind, signs in (("nope", (1,)), ("rope", (1,)), ("pair", (1, 1)), ("opposite", (1, -1)), ("two blocks", (1, -1))):
        for (t, h, d), sign in zip(places[kind], signs):
            o[t, h, d] = sign * value
    ref_fp8, ref_scale = _compare(producer, case, o, pos, cache, f"value={value}")
    # the semantics in the docstring, checked on the reference itself (the kernel equals it above)
    codes = ref_fp8.view(torch.uint8)
    if value != value:
        assert ref_scale[0, 0, 0].isnan() and bool((codes[0, 0, :128] == 0).all()), f"NaN block: {ref_scale[0, 0, 0]}"
    else:
        assert ref_scale[0, 0, 0].isinf(), f"Inf block: expected an infinite scale, got {ref_scale[0, 0, 0]}"
        assert int(codes[0, 0, 3]) in (0x7F, 0xFF), f"Inf element: expected a NaN code, got {int(codes[0, 0, 3]):#x}"
        assert bool(((codes[0, 0, :128] & 0x7F) == 0).sum() == 127), "Inf block: finite elements must quantize to +-0"
    clean = ref_scale[1, 0, [0, 2, 4]]  # head 1's first block in tokens that hold no non-finite value in head 1
    assert bool(torch.isfinite(clean).all()), f"blocks without non-finite values keep finite scales, got {clean}"


@pytest.mark.parametrize("value, dtype", _VALUES)
@pytest.mark.parametrize("is_neox", LAYOUTS)
def test_nonfinite_values_stay_in_their_blocks(producer, device, is_neox, value, dtype):
    """Any producer, any recipe: NaN or Inf in some blocks (a nope element, a rope element, a rope pair,
    two blocks of a head, and a whole token row, what a CUDA graph's padding rows may hold) leaves
    every other block's codes and scale as the same producer gives them with those values finite. What
    the blocks holding them get is the recipe's affair (the legacy path's codes, for exact fp32-div
    producers, in the test above)."""
    case = _fitted(producer, ProducerCase(m=6, n_groups=2, heads_per_group=1, head_dim=256, rope_dim=64,
                                          is_neox=is_neox, dtype=dtype))
    o, pos, cache = make_inputs(case, device)
    where = _nonfinite_places(case)
    places = where["nope"] + where["rope"] + where["pair"] + [where["two blocks"][0], (4, 1, where["two blocks"][1][2])]
    bad = o.clone()
    for t, h, d in places:
        bad[t, h, d] = value
    bad[5] = value
    fp8, scale = (x.cpu() for x in producer(*case.args(bad, pos, cache), is_neox=is_neox))
    ref_fp8, ref_scale = (x.cpu() for x in producer(*case.args(o, pos, cache), is_neox=is_neox))
    # the blocks holding a non-finite value (heads_per_group=1: group = head; a rope pair shares its block)
    blocks = case.head_dim // 128
    held = torch.zeros(case.n_groups, case.m, blocks, dtype=torch.bool)
    for t, h, d in places:
        held[h, t, d // 128] = True
    held[:, 5] = True
    ctx = f"value={value} {case} producer={producer.name} recipe={producer.recipe.name}"
    codes_kept = ~held.repeat_interleave(128, dim=2)
    differ = (fp8.view(torch.uint8) != ref_fp8.view(torch.uint8)) & codes_kept
    assert not differ.any(), (f"{int(differ.sum())} codes of blocks without a non-finite value changed, first at "
                              f"[g, m, k] = {differ.nonzero()[0].tolist()}; {ctx}")
    per_word = 4 if producer.recipe.packed else 1  # ue8m0-packed: one int32 word holds 4 blocks' exponents
    words = -(-blocks // per_word)
    word_held = torch.zeros(case.n_groups, words, scale.shape[2], dtype=torch.bool)
    for kb in range(blocks):
        word_held[:, kb // per_word, : case.m] |= held[:, :, kb]
    bits, ref_bits = (x.view(torch.int32) for x in (scale, ref_scale))
    differ = (bits != ref_bits) & ~word_held
    first = tuple(int(i) for i in differ.nonzero()[0]) if differ.any() else ()
    assert not differ.any(), (f"{int(differ.sum())} scales of blocks without a non-finite value changed, first at "
                              f"{at(first, scale_axes(producer.recipe), rows=case.m)}: {scale[first]} against "
                              f"{ref_scale[first]} (the same call with those values finite); {ctx}")


#: strides 2 and 3 with int32 and int64, the two layouts alternating (both read positions the same way)
_STRIDED = [pytest.param(step, dt, neox, id=f"stride{step}-{str(dt)[6:]}-{'neox' if neox else 'gptj'}")
            for step, dt, neox in ((2, torch.int32, True), (2, torch.int64, False), (3, torch.int32, False),
                                   (3, torch.int64, True))]


@pytest.mark.parametrize("step, positions_dtype, is_neox", _STRIDED)
def test_strided_positions_match_reference(producer, device, is_neox, step, positions_dtype):
    """A positions view with stride 2 or 3: the skipped elements hold other valid positions (a kernel
    that ignores the stride rotates by them) and, in a second call, values far outside the cache (a
    kernel that ignores the stride reads out of bounds)."""
    _strided_positions_read(producer)
    case = _fitted(producer, ProducerCase(m=7, n_groups=2, heads_per_group=1, is_neox=is_neox,
                                          positions_dtype=positions_dtype))
    o, pos, cache = make_inputs(case, device)
    wide = torch.randint(0, cache.shape[0], (case.m * step,), generator=torch.Generator().manual_seed(step))
    wide = wide.to(positions_dtype).to(device)
    wide[::step] = pos
    assert not wide[::step].is_contiguous()
    _compare(producer, case, o, wide[::step], cache, f"positions stride {step}, skipped elements in range")
    far = 2**31 - 1 if positions_dtype == torch.int32 else 2**40
    wide[1::step] = far
    _compare(producer, case, o, wide[::step], cache, f"positions stride {step}, skipped elements = {far}")


@pytest.mark.parametrize("is_neox", LAYOUTS)
def test_positions_column_of_a_matrix(producer, device, is_neox):
    """``positions`` as a column of an ``[M, 3]`` tensor (stride 3, storage offset 1)."""
    _strided_positions_read(producer)
    case = _fitted(producer, ProducerCase(m=9, n_groups=1, heads_per_group=2, head_dim=128, rope_dim=32, is_neox=is_neox))
    o, pos, cache = make_inputs(case, device)
    table = torch.zeros((case.m, 3), dtype=pos.dtype, device=device)
    table[:, 1] = pos
    table[:, 0] = cache.shape[0] - 1
    _compare(producer, case, o, table[:, 1], cache, "positions = table[:, 1]")
