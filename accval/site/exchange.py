"""What the real ranks of a TEP A/B exchange at the ``o_a_proj`` site: every rank's ``o_b_proj``
partial product, summed in rank order in bf16 as an all-reduce would."""

from __future__ import annotations

import torch


def tep_all_reduce(parts: list[torch.Tensor], group=None) -> torch.Tensor:
    """The sum of the logical ranks' partial products, in rank order, in bf16.

    ``parts``: this process's ranks' partials, in rank order. ``group`` (an
    :class:`accval.gsm8k.ranks.Group`, or None when one process hosts every rank): every process
    gathers every rank's partial (the blocks arrive in process order, which is rank order under TEP)
    before summing, so every process holds the same total.
    """
    if group is not None:
        mine = torch.stack(parts).float()  # bf16 -> fp32 -> bf16 is exact; gloo has no bf16
        parts = [p.to(torch.bfloat16) for blk in group.all_gather_tensor(mine) for p in blk]
    total = None
    for part in parts:
        total = part if total is None else total + part
    return total
