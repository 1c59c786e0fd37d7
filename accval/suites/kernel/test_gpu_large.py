"""GPU-only cases at the DeepSeek-V4-Pro DEP8 shape: the producer at M = 65536 (64-bit indexing), and the chain
through the consumer under test and the bundled ones (K = 8192, o_lora_rank 1024)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from accval.kernels.reference import inv_rope_fp8_quant_ref

from .cases import ProducerCase, fit, make_inputs
from .checks import assert_exact, assert_fp8_equal
from .test_consumer_chain import check_chain
from .test_producer import judge_against_mirror

pytestmark = [pytest.mark.gpu, pytest.mark.gpu_memory]

DSV4_PRO_DEP8 = dict(n_groups=8, heads_per_group=16, head_dim=512, rope_dim=64)


def token_windows(m: int, k: int, heads: int, head_dim: int, width: int = 64) -> list[tuple[int, int]]:
    """Windows of ``width`` tokens (a multiple of 4: no padding rows inside) where 32-bit offsets would first go
    wrong: the first tokens, those around the 2**31st element of ``o [m, heads, head_dim]`` and of one group's
    ``[m, k]`` output slab, and the last tokens."""
    if width % 4 or not 0 < width <= m:
        raise ValueError(f"expected a window width that is a multiple of 4 in (0, m={m}], got {width}")
    starts = {0, m - width}
    for row_elems in (heads * head_dim, k):
        boundary = 2**31 // row_elems  # the first token whose offset needs more than 31 bits
        if boundary < m:
            starts.add(min(max(0, boundary - width // 2), m - width))
    return [(a, a + width) for a in sorted(starts)]


def check_token_windows(producer, case: ProducerCase, device, record=None) -> list[tuple[int, int]]:
    """The producer on all of ``case``, then each of :func:`token_windows`' tokens judged against the mirror as a
    case of its own (bit for bit for an exact producer, the graded bounds for the others), in every group."""
    case = fit(producer, case)
    o, pos, cache = make_inputs(case, device)
    fp8, scale = producer(*case.args(o, pos, cache), is_neox=case.is_neox)
    k = case.heads_per_group * case.head_dim
    windows = token_windows(case.m, k, case.heads, case.head_dim)
    for lo, hi in windows:
        window = dataclasses.replace(case, m=hi - lo)
        judge_against_mirror(producer, window, o[lo:hi], pos[lo:hi], cache, fp8[:, lo:hi], scale[:, :, lo:hi], record,
                             where=f"tokens {lo}..{hi - 1} of a call at M={case.m}, judged as ")
    return windows


@pytest.mark.parametrize("m", [32768 + 3, 65536], ids=lambda m: f"M{m}")
def test_dsv4_shape_large_m_token_windows(producer, m, accval_record):
    """Past 2**31 elements (32-bit offsets overflow there: vLLM #53390) every producer still meets its recipe's
    mirror, in the token windows where an overflow would show first (its input's boundary, one output group's,
    the last tokens), every group included (at M = 65536 groups 4-7 start past 2**31 elements of the output)."""
    case = ProducerCase(m=m, is_neox=False, seed=m, **DSV4_PRO_DEP8)
    if case.head_dim not in producer.head_dims or case.rope_dim not in producer.rope_dims:
        pytest.skip(f"producer {producer.name!r} declares no layout at the DSv4-Pro head (512, rope 64)")
    check_token_windows(producer, case, torch.device("cuda"), record=accval_record)


@pytest.mark.parametrize("m", [32768 + 3, 65536], ids=lambda m: f"M{m}")
def test_dsv4_shape_large_m_matches_reference(producer, m):
    """An exact producer past 2**31 elements equals the reference in every token of every group."""
    if not producer.exact or "gptj" not in producer.rope_layouts:
        pytest.skip(f"producer {producer.name!r}: this bit-for-bit check of every token needs an exact GPT-J producer "
                    "(test_dsv4_shape_large_m_token_windows judges every producer where an overflow would show)")
    case = ProducerCase(m=m, is_neox=False, seed=m, **DSV4_PRO_DEP8)
    o, pos, cache = make_inputs(case, "cuda")
    fp8, scale = producer(*case.args(o, pos, cache), is_neox=False)
    torch.cuda.synchronize()
    ctx = f"{m=} DSv4-Pro DEP8 producer={producer.name}"
    hpg = case.heads_per_group
    for g in range(case.n_groups):  # the reference one group at a time: its fp32 temporaries fit in memory
        ref_fp8, ref_scale = inv_rope_fp8_quant_ref(o[:, g * hpg:(g + 1) * hpg], pos, cache, 1, hpg, case.nope_dim,
                                                    case.rope_dim, is_neox=False, recipe=producer.recipe)
        assert_exact(scale[g:g + 1], ref_scale, f"scales of group {g}", ctx)
        assert_fp8_equal(fp8[g:g + 1], ref_fp8, f"fp8 codes of group {g}", ctx)
        del ref_fp8, ref_scale


@pytest.mark.parametrize("m", [1, 7, 1500, 2048], ids=lambda m: f"M{m}")
def test_dsv4_chain_every_consumer(producer, consumer, m, accval_record):
    """At the DSv4-Pro DEP8 shape (K = 8192, o_lora_rank 1024) the consumer under test meets the math reference
    after the producer under test (paired as :func:`accval.implementations.chain_pairs` pairs them when it does
    not read that producer's recipe), and so do accval's other bundled consumers that read it."""
    from accval.implementations import CONSUMERS, chain_pairs

    pairs = chain_pairs(producer, consumer)
    for name in ("accval", "torch", "reference"):
        bundled = CONSUMERS.get(name)
        if name != consumer.name and bundled.reads(producer.recipe):
            pairs.append((producer, bundled))
    case = ProducerCase(m=m, seed=m, **DSV4_PRO_DEP8)
    for p, c in pairs:
        if "cuda" not in c.devices:
            pytest.fail(f"consumer {c.name!r} runs on {c.devices}: this is a GPU-only test")
        check_chain(p, c, case, torch.device("cuda"), r=1024, record=accval_record)
