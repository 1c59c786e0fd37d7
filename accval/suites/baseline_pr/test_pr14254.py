"""TensorRT-LLM PR 14254's test, as it was: fused vs the legacy two-kernel reference at
num_tokens in {3, 64, 257, 512, 1024, 2048, 8192}, mean relative difference of the dequantized
BF16 values under 1%.

It exists to be compared with accval's suite (``accval mutants`` runs both against every mutant):
the pull request itself says these sizes could not see the scale-padding defect. On a GPU it uses the
pull request's shape (G=8, hpg=16, D=512); the CPU interpreter uses G=2, hpg=1, D=512 to stay fast.
"""

from __future__ import annotations

import pytest
import torch

from accval.kernels.reference import dequantize_activations, inv_rope_fp8_quant_ref

from ..kernel.cases import ProducerCase, make_inputs

PR_SIZES = (3, 64, 257, 512, 1024, 2048, 8192)


@pytest.mark.parametrize("num_tokens", PR_SIZES)
def test_fused_inv_rope_fp8_quant_neox(producer, device, num_tokens):
    shape = dict(n_groups=8, heads_per_group=16) if device.type == "cuda" else dict(n_groups=2, heads_per_group=1)
    case = ProducerCase(m=num_tokens, head_dim=512, rope_dim=64, is_neox=True, seed=num_tokens, **shape)
    o, pos, cache = make_inputs(case, device)
    fp8, scale = producer(*case.args(o, pos, cache), is_neox=True)
    ref_fp8, ref_scale = inv_rope_fp8_quant_ref(*case.args(o, pos, cache), is_neox=True)
    got = dequantize_activations(fp8.float(), scale[:, :, :num_tokens].contiguous()).to(torch.bfloat16).double()
    want = dequantize_activations(ref_fp8.float(), ref_scale).to(torch.bfloat16).double()
    rel = ((got - want).abs().mean() / want.abs().mean()).item()
    assert rel < 0.01, f"mean relative diff {rel:.2e} at {num_tokens=}"
