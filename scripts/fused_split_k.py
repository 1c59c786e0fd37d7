"""A consumer that adds its K splits inside the one launch: a candidate for issue 21's small-M consumer
(one launch and its host time fewer), measured by ``scripts/speed_probe.py --parts fusedsum``; not
shipped, because it loses. On the H200 (torch 2.11, triton 3.6;
``reports/kernel/speed-probe-fusedsum-NVIDIA_H200-2026-12-02-s16call1.json``), same bits everywhere, the
CUDA-graph median wins only at M=1 (DEP8 29.3 vs 30.1 us, TEP8 11.1 vs 13.2) and loses at M=64 and 256
(TEP8 M=256: 23.5 vs 18.0, the arrival counting and the last program's serial sum), and called without
a graph it is slower at every size (DEP8 M=1 41.5 vs 27.4 us): the launch it saves costs less than the
counts buffer and the extra arguments it adds. Measured again at the later split launches (BLOCK_N 32,
K split 8; ``speed-probe-floors-fusedsum-...-2026-12-04-s26call1.json``, ``speed-probe-fusedgrid-...-s26call2
.json``, same card and versions, same bits): TEP8 M=1 11.7 vs 11.9 us, M=64 14.5 vs 13.2, M=256 30.0 vs 17.3;
over BLOCK_N 32/64/128, K split 2-8 and 3/4 stages the fastest at M=64 is 13.8 and at M=256 18.7 (the
shipped two launches 12.9 and 17.2). Its k loop repeats the shipped kernel's prefetching loop
line for line (kept apart so the shipped kernel stays untouched).

Each program computes its split's fp32 partial as the shipped pointer kernel does with its scales
prefetched (``accval.kernels.fp8_block_bmm._fp8_block_bmm_kernel``, ``PREFETCH_SCALES``), stores it into the
partials ``[split, G, M, N]`` and counts its tile's arrivals with an atomic (acquire-release at GPU
scope, with a barrier of the program's threads on each side). The program that arrives last adds
every split's partial in split order, exactly as ``_sum_splits_kernel`` does, stores bf16 and sets the
tile's count back to 0 for the next launch. Same arithmetic in the same order: the same bits as the
two launches. The counts live in a zeroed int32 buffer kept per device and size, which the kernel
leaves zeroed: launches on one stream at a time only (a probe's condition, not a caller's).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from accval.kernels import _platform
from accval.kernels.constants import QUANT_BLOCK, cdiv
from accval.kernels.fp8_block_bmm import (
    SCALE_M_ALIGN,
    ConsumerConfig,
    _block_scales,
    _consumer_config,
    _scale_into,
    _sm_count,
    _tile,
    validate_consumer_args,
)
from accval.kernels.fp8_rounding import to_bf16


@triton.jit
def _fused_split_kernel(
    a_ptr, as_ptr, b_ptr, bs_ptr, part_ptr, out_ptr, count_ptr, M, N, K, k_blocks_per_split,
    stride_b_g, stride_b_n, stride_bs_g, stride_bs_n, stride_out_g, stride_out_m, stride_out_n,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr, SCALE_M_ALIGN: tl.constexpr,
    SOFTWARE: tl.constexpr,
):
    g, split, k_blocks, kb_lo, kb_hi, scale_m_stride, offs_m, offs_n, m_ok, n_ok, _, _ = _tile(
        M, N, K, k_blocks_per_split, BLOCK_M, BLOCK_N, SPLIT_K, SCALE_M_ALIGN)
    offs_k = tl.arange(0, 128)
    a_ptrs = a_ptr + g * M * K + offs_m.to(tl.int64)[:, None] * K + offs_k[None, :] + kb_lo * 128
    b_ptrs = b_ptr + g * stride_b_g + offs_n.to(tl.int64)[None, :] * stride_b_n + offs_k[:, None] + kb_lo * 128
    as_ptrs = as_ptr + g * k_blocks * scale_m_stride + offs_m
    bs_ptr_g = bs_ptr + g * stride_bs_g + ((tl.program_id(0) * BLOCK_N) // 128) * stride_bs_n
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    a_s, b_s = _block_scales(as_ptrs, bs_ptr_g, kb_lo, scale_m_stride, m_ok)
    for kb in range(kb_lo, kb_hi):
        a = tl.load(a_ptrs, mask=m_ok[:, None], other=0.0)
        b = tl.load(b_ptrs, mask=n_ok[None, :], other=0.0)
        a_s1, b_s1 = _block_scales(as_ptrs, bs_ptr_g, tl.minimum(kb + 1, kb_hi - 1), scale_m_stride, m_ok)
        acc = _scale_into(acc, tl.dot(a, b), a_s, b_s)
        a_s, b_s = a_s1, b_s1
        a_ptrs += 128
        b_ptrs += 128
    ok = m_ok[:, None] & n_ok[None, :]
    mn = M * N  # M == 1 is specialized to a constant: no .to on it
    split_stride = (tl.num_programs(2) // SPLIT_K).to(tl.int64) * mn
    part = part_ptr + g * mn + offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
    tl.store(part + split * split_stride, acc, mask=ok)
    tl.debug_barrier()  # every thread's partial stored before the count says so
    tile = (g * tl.num_programs(1) + tl.program_id(1)) * tl.num_programs(0) + tl.program_id(0)
    arrived = tl.atomic_add(count_ptr + tile, 1, sem="acq_rel", scope="gpu")
    tl.debug_barrier()
    if arrived == SPLIT_K - 1:  # the last of the tile's splits: add them all, in split order
        total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for s in tl.static_range(SPLIT_K):
            total += tl.load(part + s * split_stride, mask=ok, other=0.0, cache_modifier=".cg")
        out_ptrs = (out_ptr + g * stride_out_g + offs_m.to(tl.int64)[:, None] * stride_out_m
                    + offs_n[None, :] * stride_out_n)
        tl.store(out_ptrs, to_bf16(total, SOFTWARE), mask=ok)
        tl.atomic_xchg(count_ptr + tile, 0, sem="relaxed", scope="gpu")


_COUNTS: dict = {}


def _counts(device: torch.device, n: int) -> torch.Tensor:
    """A zeroed int32 buffer of at least ``n`` tile counts on ``device`` (the kernel leaves it zeroed)."""
    have = _COUNTS.get(device)
    if have is None or have.numel() < n:
        have = _COUNTS[device] = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
    return have


def fused_split_bmm(a, a_scale, b, b_scale, config: ConsumerConfig | None = None) -> torch.Tensor:
    """``accval.kernels.fp8_block_bmm(a, a_scale, b, b_scale)`` with its K splits added in the same launch
    (``config``: the shipped dispatch's by default; its tile, warps, stages and split are taken, its
    loads are pointer loads with the scales prefetched). Validates like the shipped consumer."""
    g, m, n, k = validate_consumer_args(a, a_scale, b, b_scale, None, True)
    cfg = config or _consumer_config(m, n, k, g, _sm_count(a.device))
    k_blocks = k // QUANT_BLOCK
    per_split = cdiv(k_blocks, min(cfg.split_k, k_blocks))
    split = cdiv(k_blocks, per_split)  # no empty split, as the shipped launcher cuts them
    out = torch.empty((g, m, n), dtype=torch.bfloat16, device=a.device)
    if m == 0:
        return out
    grid = (cdiv(n, cfg.block_n), cdiv(m, cfg.block_m), g * split)
    part = torch.empty((split, g, m, n), dtype=torch.float32, device=a.device)
    counts = _counts(a.device, grid[0] * grid[1] * g)
    _fused_split_kernel[grid](
        a, a_scale, b, b_scale, part, out, counts, m, n, k, per_split,
        b.stride(0), b.stride(1), b_scale.stride(0), b_scale.stride(1), *out.stride(),
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, SPLIT_K=split, SCALE_M_ALIGN=SCALE_M_ALIGN,
        SOFTWARE=_platform.interpreting(), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        **_platform.gpu_launch_options())
    return out
