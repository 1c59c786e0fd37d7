"""GPU-only cases at the DeepSeek-V4-Pro DEP8 shape: the producer at M = 65536 (64-bit indexing), and the chain
through the consumer under test and the bundled ones (K = 8192, o_lora_rank 1024)."""

from __future__ import annotations

import pytest
import torch

from accval.kernels.reference import inv_rope_fp8_quant_ref

from .cases import ProducerCase, make_inputs
from .checks import assert_exact, assert_fp8_equal
from .test_consumer_chain import check_chain

pytestmark = pytest.mark.gpu

DSV4_PRO_DEP8 = dict(n_groups=8, heads_per_group=16, head_dim=512, rope_dim=64)


@pytest.mark.parametrize("m", [32768 + 3, 65536], ids=lambda m: f"M{m}")
def test_dsv4_shape_large_m_matches_reference(producer, m):
    """Past 2**31 elements the producer still equals the reference (int32 offsets would overflow)."""
    if not producer.exact or "gptj" not in producer.rope_layouts:
        pytest.skip(f"producer {producer.name!r}: this bit-for-bit check needs an exact GPT-J producer "
                    "(test_dsv4_chain_every_consumer covers the rest at M=2048)")
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
