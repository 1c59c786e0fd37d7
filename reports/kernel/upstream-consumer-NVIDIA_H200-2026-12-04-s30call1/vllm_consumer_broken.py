"""Planted defect (a control, not upstream's): the same plug reading the scale rows at stride M instead of pad4(M)
(the catalog's consumer-scale-stride-m), to show the suite's consumer properties are not vacuous for this op."""
import torch

import vllm_consumer_plug as plug


def stride_m(a, a_scale, b, b_scale, out=None):
    g, m, k = a.shape
    kb = k // 128
    if out is None:
        out = torch.empty(g, m, b.shape[1], dtype=torch.bfloat16, device=a.device)
    for i in range(g):
        rows = a_scale[i].reshape(-1)[: kb * m].view(kb, m)   # rows read M apart: wrong unless M % 4 == 0
        out[i].copy_(plug.OP(a[i], b[i], rows.transpose(0, 1), b_scale[i], plug.BLOCK_SIZE, torch.bfloat16))
    return out


for _attr in ("accval_recipe", "accval_op", "accval_devices"):
    setattr(stride_m, _attr, getattr(plug.fp8_block_bmm, _attr))
