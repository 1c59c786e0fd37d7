"""A consumer written independently of accval's kernels, to show how to plug your own FP8 block-scaled bmm.

``pytest suites/kernel --consumer accval.examples.torch_consumer:fp8_block_bmm`` runs the suite's consumer and
chain properties against it. It dequantizes both operands (each 1x128 activation block by its scale,
each 128x128 weight block by its scale) and multiplies them in one fp32 ``torch.bmm``: another
summation order than accval's kernels (which add one block's product at a time), so it is judged
against the float64 math reference within the accumulation bound, not bit for bit. It reads the scales
of every recipe stored as fp32 (``fp32-div``, ``fp32-rcp``, ``ue8m0``). ``bf16_weight`` rounds the dequantized
weight to bf16 first, which the contract allows.

Planted defect the suite must fail: ``broken_stride`` reads the activation scales at row stride M
instead of pad4(M), the padding ``docs/contract.md`` fixes (wrong wherever M is not a multiple of 4).
"""

from __future__ import annotations

import torch


def _pad4(m: int) -> int:
    return (m + 3) // 4 * 4


def _bmm(a, a_scale_rows, b, b_scale, out, weight_dtype=torch.float32):
    """``a_scale_rows``: ``[G, K/128, M]``, each k-block's scales of the M tokens; the dequantized weight is
    rounded to ``weight_dtype``."""
    g, m, k = a.shape
    n = b.shape[1]
    blocks = k // 128
    act = a.float().reshape(g, m, blocks, 128) * a_scale_rows.transpose(1, 2).unsqueeze(-1)
    weight = b.float().reshape(g, n, blocks, 128) * b_scale.repeat_interleave(128, dim=1).unsqueeze(-1)
    weight = weight.to(weight_dtype).float()
    res = torch.bmm(act.reshape(g, m, k), weight.reshape(g, n, k).transpose(1, 2)).to(torch.bfloat16)
    if out is None:
        return res
    return out.copy_(res)


def fp8_block_bmm(a, a_scale, b, b_scale, out=None):
    """``a [G, M, K]`` e4m3 with ``a_scale [G, K/128, pad4(M)]`` fp32, ``b [G, N, K]`` e4m3 with ``b_scale
    [G, N/128, K/128]`` fp32; returns ``out [G, M, N]`` bf16 (written into ``out`` when given)."""
    m = a.shape[1]
    return _bmm(a, a_scale[:, :, :m], b, b_scale, out)


def bf16_weight(a, a_scale, b, b_scale, out=None):
    """:func:`fp8_block_bmm` with the weight dequantized to bf16 once, as an engine's bf16 fallback keeps it
    (the contract allows operands rounded to bf16)."""
    m = a.shape[1]
    return _bmm(a, a_scale[:, :, :m], b, b_scale, out, torch.bfloat16)


def broken_stride(a, a_scale, b, b_scale, out=None):
    """Planted defect: the scale rows read at stride M, as if the buffer were ``[G, K/128, M]``."""
    g, m, k = a.shape
    rows = a_scale.reshape(-1)[: g * (k // 128) * m].reshape(g, k // 128, m)
    return _bmm(a, rows, b, b_scale, out)


for _fn in (fp8_block_bmm, bf16_weight, broken_stride):
    _fn.accval_recipe = ("fp32-div", "fp32-rcp", "ue8m0")
