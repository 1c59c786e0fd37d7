"""The probe's one-launch split-K consumer (scripts/fused_split_k.py) gives the shipped consumer's bits:
its last program per tile adds the splits' partials in the order the shipped sum kernel does. Run in
the interpreter here (programs one after another), on the GPU by ``speed_probe.py --parts fusedsum``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import accval.kernels as kernels
from accval.kernels.fp8_block_bmm import ConsumerConfig
from accval.suites.kernel.cases import one_rounding_operands

ROOT = Path(__file__).resolve().parents[3]
if not (ROOT / "scripts" / "fused_split_k.py").exists():
    pytest.skip("scripts/ is in the repository, not in an installed accval", allow_module_level=True)
sys.path.insert(0, str(ROOT))

from scripts.fused_split_k import _COUNTS, fused_split_bmm  # noqa: E402

from . import needs_interpreter  # noqa: E402

pytestmark = needs_interpreter


@pytest.mark.parametrize("g,m,split", [(2, 5, 4), (1, 9, 3), (3, 1, 2)])
def test_fused_splits_give_the_two_launch_bits(g, m, split):
    torch.manual_seed(g * 100 + m)
    n, k = 128, 512
    w_fp8, w_scale = kernels.quantize_weight_fp8(torch.randn(g, n, k) * 0.05)
    o = torch.randn(m, g, k, dtype=torch.bfloat16)
    pos = torch.arange(m)
    cache = torch.randn(64, 64)
    a, a_scale = kernels.inv_rope_fp8_quant(o, pos, cache, g, 1, k - 64, 64)
    cfg = ConsumerConfig(16, 64, 4, 2, split, prefetch_scales=True)
    want = kernels.launch_consumer(a, a_scale, w_fp8, w_scale, torch.empty(g, m, n, dtype=torch.bfloat16), cfg)
    for _ in range(2):  # the second launch reuses the counts the first left zeroed
        got = fused_split_bmm(a, a_scale, w_fp8, w_scale, cfg)
        assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    assert not _COUNTS[a.device].any(), "a tile's count was left set"


def test_fused_splits_scale_each_block_in_with_one_rounding():
    """Two blocks per split whose sum rounds differently once and twice (q * fl32(1/q) - 1, as in the
    kernel suite's one-rounding test): the fused launch gives the shipped split launch's bits, so it
    scales with the shipped fused multiply-add, not a multiply and an add."""
    qs = torch.tensor([3.0, 5.0, 7.0, 9.0, 11.0])
    m, n = len(qs), 128
    args, exact = one_rounding_operands(qs, k=512, n=n)
    cfg = ConsumerConfig(16, 64, 4, 2, 2, prefetch_scales=True)
    want = kernels.launch_consumer(*args, torch.empty(1, m, n, dtype=torch.bfloat16), cfg)
    assert torch.equal(want[0, :, 0].view(torch.int16), exact.to(torch.bfloat16).view(torch.int16)), "the shipped split launch rounds twice"
    got = fused_split_bmm(*args, cfg)
    assert torch.equal(got.view(torch.int16), want.view(torch.int16)), f"{got[0, :, 0].tolist()} vs {want[0, :, 0].tolist()}"
