"""The consumer: FP8 block-scaled batched matmul ``out[g] = dequant(a[g]) @ dequant(b[g])^T``.

``a [G, M, K]`` e4m3fn with 1x128 scales in the producer's layout ``a_scale [G, K/128, pad4(M)]``;
``b [G, N, K]`` e4m3fn with 128x128 scales ``b_scale [G, N/128, K/128]``; result bf16 ``[G, M, N]``.

Backends (``backend=``), each recorded in :mod:`accval.kernels.provenance`; one that cannot run raises:
  * ``"triton"``: one grouped Triton kernel for all groups. Like production consumers, it reads
    ``a_scale`` with the m-stride ``pad4(M)`` it computes itself and ignores the tensor's strides.
    On an sm90 GPU its large grids run the same arithmetic as a Gluon kernel
    (:mod:`accval.kernels.fp8_block_bmm_wgmma`: explicit asynchronous wgmma), same bits.
  * ``"torch"``: ``torch._scaled_mm`` blockwise (1x128 x 128x128), one call per group; CUDA only.
  * ``"emulated"``: the Triton kernel's arithmetic in torch, on any device (the FP8 chain of the A/B
    on a CPU). Like the kernel it reads ``a`` and ``a_scale`` from their storage with the strides it
    computes itself (``M*K`` and ``pad4(M)``), so producer drift corrupts it exactly as it corrupts
    the kernel. Each 128-block dot product is summed exactly (float64: products of two e4m3 values
    need at most 8 significant bits and span < 2**44, so 128 of them fit in 53 bits) and rounded
    once to fp32, then scaled into the fp32 accumulator in the kernel's order, one rounding per block
    as the kernel's fused multiply-add (:func:`accval.kernels.fp8_rounding.fma_fp32`).
"""

from __future__ import annotations

import dataclasses
import functools
import weakref

import torch
import triton
import triton.language as tl

from . import _platform, fp8_block_bmm_wgmma, host, provenance
from .fp8_rounding import fma_fp32

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - a Triton without host TMA descriptors: pointer loads only
    TensorDescriptor = None
try:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - a Triton without grid dependency control: no programmatic launch
    gdc_launch_dependents = gdc_wait = None

from .constants import FP8_DTYPE, QUANT_BLOCK, SCALE_M_ALIGN, WEIGHT_BLOCK, cdiv, pad4
from .fp8_rounding import to_bf16
from .validation import (
    byte_extent,
    check_apart,
    check_apart_at,
    check_bool,
    check_contiguous,
    check_int,
    check_no_overlap,
    check_same_device,
    check_shape,
    check_storage_holds,
    check_tensor,
)

BACKENDS = ("triton", "torch", "emulated")


@triton.jit
def _block_scales(as_ptrs, bs_ptr_g, kb, scale_m_stride, m_ok):
    """The two scales of k-block ``kb``: ``a``'s per row of the tile and ``b``'s for the tile's columns."""
    return tl.load(as_ptrs + kb * scale_m_stride, mask=m_ok, other=0.0), tl.load(bs_ptr_g + kb)


@triton.jit
def _scale_into(acc, prod, a_s, b_s):
    """``acc + prod * (a_s * b_s)``: a block's product scaled into the accumulator with one fused
    multiply-add per element, rounded once (an explicit ``fma``, which ``enable_fp_fusion=False`` leaves
    alone: every launch rounds alike). ``a_s * b_s`` is one ``[BLOCK_M]`` vector per block."""
    return tl.fma(prod, (a_s * b_s)[:, None], acc)


@triton.jit
def _tile(M, N, K, k_blocks_per_split, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr,
          SCALE_M_ALIGN: tl.constexpr):
    """This program's tile: group (int64), split, its k-blocks ``[kb_lo, kb_hi)`` (never empty: the
    launcher makes no empty split, so block ``kb_lo`` exists), the rows and columns with their masks,
    ``a_scale``'s m-stride ``pad4(M)`` (whatever the buffer says), and the tile's first row in ``a``
    seen as ``[G*M, K]`` and in ``b`` seen as ``[G*N, K]`` (the TMA kernel's descriptor coordinates)."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    g = tl.program_id(2) // SPLIT_K
    split = tl.program_id(2) % SPLIT_K
    k_blocks = K // 128
    kb_lo = split * k_blocks_per_split
    kb_hi = tl.minimum(kb_lo + k_blocks_per_split, k_blocks)
    scale_m_stride = (M + SCALE_M_ALIGN - 1) // SCALE_M_ALIGN * SCALE_M_ALIGN
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    return (g.to(tl.int64), split, k_blocks, kb_lo, kb_hi, scale_m_stride, offs_m, offs_n, offs_m < M, offs_n < N,
            g * M + pid_m * BLOCK_M, g * N + pid_n * BLOCK_N)


@triton.jit
def _store_tile(out_ptr, acc, split, g, offs_m, offs_n, m_ok, n_ok, stride_out_s, stride_out_g, stride_out_m,
                stride_out_n, SPLIT_K: tl.constexpr, SOFTWARE: tl.constexpr):
    """The tile's result: bf16 into ``out[g]``, or with K split its fp32 partial into ``out[split, g]``."""
    out_ptrs = (out_ptr + split * stride_out_s + g * stride_out_g + offs_m.to(tl.int64)[:, None] * stride_out_m
                + offs_n[None, :] * stride_out_n)
    if SPLIT_K == 1:
        tl.store(out_ptrs, to_bf16(acc, SOFTWARE), mask=m_ok[:, None] & n_ok[None, :])
    else:
        tl.store(out_ptrs, acc, mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _fp8_block_bmm_kernel(
    a_ptr, as_ptr, b_ptr, bs_ptr, out_ptr, M, N, K, k_blocks_per_split,
    stride_b_g, stride_b_n, stride_bs_g, stride_bs_n,
    stride_out_s, stride_out_g, stride_out_m, stride_out_n,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr, SCALE_M_ALIGN: tl.constexpr,
    SOFTWARE: tl.constexpr, DEFER_SCALE: tl.constexpr, PREFETCH_SCALES: tl.constexpr, PDL: tl.constexpr,
):
    """Program (n tile, m tile, group x k split). K is walked in 128-blocks, each with its own two scales.

    The n tile is the fastest grid axis, so the programs running together share their ``a`` rows
    in L2 (N is small: o_lora_rank). With ``SPLIT_K > 1`` the program sums only its slice of the
    k-blocks and writes fp32 partials ``out[split, g, m, n]`` that the launcher adds in split order.
    Like production consumers, ``a`` is assumed dense ``[G, M, K]`` and ``a_scale`` dense
    ``[G, K/128, pad4(M)]``: both strides are computed here, not read from the tensors.

    Each block's product is scaled by the two scales multiplied first (``a_s * b_s``, one ``[BLOCK_M]``
    vector per block), so each element takes one fused multiply-add (:func:`_scale_into`) where
    ``(dot * a_s) * b_s`` takes two multiplies and an add (``CONSUMER_TUNING``). The emulated consumer
    rounds in the same order.

    ``DEFER_SCALE``: block kb's product is scaled into the accumulator after block kb+1's dot is
    issued, so the tensor cores need not wait for the scaling; the arithmetic and its order are the
    same (bit-identical results).

    ``PREFETCH_SCALES``: block kb+1's scales are loaded before block kb's dot and carried to the next
    iteration. Triton's pipeliner streams the tile loads ahead but not these small loads (in a loop
    with a dot it pipelines only the dot's operands), so without it each block's scaling waits for
    its scales' round trip after the dot. The arithmetic is the same (bit-identical results). Two
    blocks ahead makes Triton 3.6 drop the tile pipelining, so it is one.

    ``PDL`` (K split, launched before :func:`_sum_splits_kernel` with programmatic dependent launch): each
    program lets the sum's launch begin as it starts; the sum waits for this grid to finish before it reads
    (``gdc_wait``), so only the gap between the two launches goes.
    """
    if PDL:
        gdc_launch_dependents()
    g, split, k_blocks, kb_lo, kb_hi, scale_m_stride, offs_m, offs_n, m_ok, n_ok, _, _ = _tile(
        M, N, K, k_blocks_per_split, BLOCK_M, BLOCK_N, SPLIT_K, SCALE_M_ALIGN)
    offs_k = tl.arange(0, 128)
    a_ptrs = a_ptr + g * M * K + offs_m.to(tl.int64)[:, None] * K + offs_k[None, :] + kb_lo * 128
    b_ptrs = b_ptr + g * stride_b_g + offs_n.to(tl.int64)[None, :] * stride_b_n + offs_k[:, None] + kb_lo * 128
    as_ptrs = as_ptr + g * k_blocks * scale_m_stride + offs_m
    bs_ptr_g = bs_ptr + g * stride_bs_g + ((tl.program_id(0) * BLOCK_N) // 128) * stride_bs_n
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if DEFER_SCALE:
        a = tl.load(a_ptrs, mask=m_ok[:, None], other=0.0)
        b = tl.load(b_ptrs, mask=n_ok[None, :], other=0.0)
        prev_as = tl.load(as_ptrs + kb_lo * scale_m_stride, mask=m_ok, other=0.0)
        prev_bs = tl.load(bs_ptr_g + kb_lo)
        prev = tl.dot(a, b)
        a_ptrs += 128
        b_ptrs += 128
        for kb in range(kb_lo + 1, kb_hi):
            a = tl.load(a_ptrs, mask=m_ok[:, None], other=0.0)
            b = tl.load(b_ptrs, mask=n_ok[None, :], other=0.0)
            a_s = tl.load(as_ptrs + kb * scale_m_stride, mask=m_ok, other=0.0)
            b_s = tl.load(bs_ptr_g + kb)
            cur = tl.dot(a, b)
            acc = _scale_into(acc, prev, prev_as, prev_bs)
            prev = cur
            prev_as = a_s
            prev_bs = b_s
            a_ptrs += 128
            b_ptrs += 128
        acc = _scale_into(acc, prev, prev_as, prev_bs)
    elif not PREFETCH_SCALES:
        for kb in range(kb_lo, kb_hi):
            a = tl.load(a_ptrs, mask=m_ok[:, None], other=0.0)
            b = tl.load(b_ptrs, mask=n_ok[None, :], other=0.0)
            a_s, b_s = _block_scales(as_ptrs, bs_ptr_g, kb, scale_m_stride, m_ok)
            acc = _scale_into(acc, tl.dot(a, b), a_s, b_s)
            a_ptrs += 128
            b_ptrs += 128
    else:
        a_s, b_s = _block_scales(as_ptrs, bs_ptr_g, kb_lo, scale_m_stride, m_ok)
        for kb in range(kb_lo, kb_hi):
            a = tl.load(a_ptrs, mask=m_ok[:, None], other=0.0)
            b = tl.load(b_ptrs, mask=n_ok[None, :], other=0.0)
            a_s1, b_s1 = _block_scales(as_ptrs, bs_ptr_g, tl.minimum(kb + 1, kb_hi - 1), scale_m_stride, m_ok)
            acc = _scale_into(acc, tl.dot(a, b), a_s, b_s)
            a_s, b_s = a_s1, b_s1
            a_ptrs += 128
            b_ptrs += 128
    _store_tile(out_ptr, acc, split, g, offs_m, offs_n, m_ok, n_ok, stride_out_s, stride_out_g, stride_out_m,
                stride_out_n, SPLIT_K, SOFTWARE)


@triton.jit
def _fp8_block_bmm_tma_kernel(
    a_desc, as_ptr, b_desc, bs_ptr, out_ptr, M, N, K, k_blocks_per_split,
    stride_b_g, stride_b_n, stride_bs_g, stride_bs_n,
    stride_out_s, stride_out_g, stride_out_m, stride_out_n,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr, SCALE_M_ALIGN: tl.constexpr,
    SOFTWARE: tl.constexpr, PREFETCH_SCALES: tl.constexpr, PDL: tl.constexpr,
):
    """:func:`_fp8_block_bmm_kernel` with ``a`` and ``b`` tiles read by tensor-memory-accelerator (TMA)
    descriptors: the same programs, the same arithmetic in the same order.

    ``a_desc`` covers ``a`` as ``[G*M, K]`` (dense, as the contract lays it out) and ``b_desc`` ``b`` as
    ``[G*N, K]`` (the launcher takes this kernel only when ``b``'s group stride is ``N`` rows). A tile
    of ``a`` that runs past the group's last row reads the next group's first rows (or zeros past the
    buffer): those rows' scales load as 0 and their outputs are never stored, and every output row
    depends on its own row of ``a`` only. ``stride_b_*`` are unused (the descriptor holds them).
    """
    if PDL:
        gdc_launch_dependents()
    g, split, k_blocks, kb_lo, kb_hi, scale_m_stride, offs_m, offs_n, m_ok, n_ok, row_a, row_b = _tile(
        M, N, K, k_blocks_per_split, BLOCK_M, BLOCK_N, SPLIT_K, SCALE_M_ALIGN)
    as_ptrs = as_ptr + g * k_blocks * scale_m_stride + offs_m
    bs_ptr_g = bs_ptr + g * stride_bs_g + ((tl.program_id(0) * BLOCK_N) // 128) * stride_bs_n
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if not PREFETCH_SCALES:
        for kb in range(kb_lo, kb_hi):
            a = a_desc.load([row_a, kb * 128])
            b = b_desc.load([row_b, kb * 128])
            a_s, b_s = _block_scales(as_ptrs, bs_ptr_g, kb, scale_m_stride, m_ok)
            acc = _scale_into(acc, tl.dot(a, b.T), a_s, b_s)
    else:
        a_s, b_s = _block_scales(as_ptrs, bs_ptr_g, kb_lo, scale_m_stride, m_ok)
        for kb in range(kb_lo, kb_hi):
            a = a_desc.load([row_a, kb * 128])
            b = b_desc.load([row_b, kb * 128])
            a_s1, b_s1 = _block_scales(as_ptrs, bs_ptr_g, tl.minimum(kb + 1, kb_hi - 1), scale_m_stride, m_ok)
            acc = _scale_into(acc, tl.dot(a, b.T), a_s, b_s)
            a_s, b_s = a_s1, b_s1
    _store_tile(out_ptr, acc, split, g, offs_m, offs_n, m_ok, n_ok, stride_out_s, stride_out_g, stride_out_m,
                stride_out_n, SPLIT_K, SOFTWARE)


@triton.jit
def _sum_splits_kernel(part_ptr, out_ptr, MN, N, stride_part_s, stride_out_g, stride_out_m, stride_out_n,
                       SPLIT_K: tl.constexpr, BLOCK: tl.constexpr, SOFTWARE: tl.constexpr, PDL: tl.constexpr):
    """``out[g] = bf16(sum over splits, in split order, of part[split, g])`` for one [M*N] slice per group.
    ``PDL``: launched as the products kernel's programmatic dependent, it waits here until that grid has
    finished and its partials are visible."""
    if PDL:
        gdc_wait()
    g = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < MN
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(part_ptr + s * stride_part_s + g * MN + offs, mask=ok, other=0.0)
    m = offs // N
    n = offs % N
    tl.store(out_ptr + g * stride_out_g + m * stride_out_m + n * stride_out_n, to_bf16(acc, SOFTWARE), mask=ok)


@dataclasses.dataclass(frozen=True)
class ConsumerConfig:
    """One launch of the Triton consumer: tile sizes, warps, stages, and K splits."""

    block_m: int
    block_n: int = 128
    num_warps: int = 8
    num_stages: int = 3
    #: K is cut into this many slices of whole 128-blocks summed by separate programs, then added
    #: in fixed split order by a second kernel (deterministic). 1 = no split.
    split_k: int = 1
    #: scale block k's product after block k+1's dot is issued (same arithmetic, same order)
    defer_scale: bool = False
    #: read the ``a`` and ``b`` tiles with TMA descriptors (:func:`_fp8_block_bmm_tma_kernel`); a call whose
    #: buffers a descriptor cannot cover (:func:`_tma_layout_ok`, :func:`_tma_aligned`) runs the pointer
    #: kernel, and says so
    tma: bool = False
    #: load block k+1's scales before block k's dot (same arithmetic, same bits)
    prefetch_scales: bool = False
    #: the Gluon kernel (:mod:`accval.kernels.fp8_block_bmm_wgmma`; sm90 only, TMA loads, ``num_stages`` TMA
    #: buffers): block k+1's wgmma runs while block k is scaled (same arithmetic, same bits). Where it
    #: cannot run, the call runs the Triton launch of :func:`_triton_for`, and says so. With ``split_k`` it
    #: splits K over one program per tile; slower than the Triton split launches where the table splits, so
    #: the table never asks for that (``CONSUMER_TUNING``)
    wgmma: bool = False
    #: the Gluon kernel's programs per SM of a persistent grid (each program takes every P-th tile, the next
    #: tile's first blocks loading while a tile is stored; same bits); 0: one program per tile. Slower on an
    #: H200 at every shape measured, so the table never takes it (``CONSUMER_TUNING``)
    persistent: int = 0
    #: the Gluon kernel's TMA loads issued by a warp of their own, the compute warps handing each buffer back
    #: through an mbarrier once its wgmma has retired (warp specialization; same bits); one program per tile
    loader_warp: bool = False

    def __post_init__(self):
        for name in ("block_m", "block_n", "num_warps", "num_stages", "split_k"):
            check_int(f"ConsumerConfig.{name}", getattr(self, name))
        check_int("ConsumerConfig.persistent", self.persistent, minimum=0)
        if self.persistent and not self.wgmma:
            raise ValueError(f"ConsumerConfig: a persistent grid is the Gluon kernel's; expected wgmma=True with "
                             f"persistent={self.persistent}")
        for name in ("defer_scale", "tma", "prefetch_scales", "wgmma", "loader_warp"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"ConsumerConfig.{name}: expected a bool, got {type(getattr(self, name)).__name__}")
        if self.tma and self.defer_scale:
            raise ValueError("ConsumerConfig: defer_scale is a pointer-kernel schedule; expected tma=False with it")
        if self.prefetch_scales and self.defer_scale:
            raise ValueError("ConsumerConfig: defer_scale already loads block k+1's scales while scaling block k; "
                             "expected prefetch_scales=False with it")
        if self.block_m not in (16, 32, 64, 128, 256):
            raise ValueError(f"ConsumerConfig.block_m: expected one of 16, 32, 64, 128, 256, got {self.block_m}")
        if self.block_n not in (16, 32, 64, 128):
            raise ValueError(f"ConsumerConfig.block_n: expected one of 16, 32, 64, 128 (a tile takes one weight "
                             f"scale column), got {self.block_n}")
        if self.wgmma:
            if not self.tma or self.prefetch_scales:
                raise ValueError("ConsumerConfig: wgmma reads its tiles by TMA, each block's scales loaded with its "
                                 f"tiles; expected tma=True, prefetch_scales=False, got tma={self.tma}, "
                                 f"prefetch_scales={self.prefetch_scales}")
            if self.split_k != 1 and (self.persistent or self.loader_warp):
                raise ValueError("ConsumerConfig: the Gluon kernel splits K over one program per tile, loading its own "
                                 f"tiles; expected persistent=0 and loader_warp=False with split_k={self.split_k}, got "
                                 f"persistent={self.persistent}, loader_warp={self.loader_warp}")
            if self.block_m not in (64, 128) or self.block_n not in (64, 128) or self.num_warps != self.block_m // 16:
                raise ValueError("ConsumerConfig: wgmma takes block_m 64 or 128 with one warp per 16 rows and block_n "
                                 f"64 or 128; got block_m={self.block_m}, block_n={self.block_n}, "
                                 f"num_warps={self.num_warps}")
            if self.num_stages < 2:
                raise ValueError(f"ConsumerConfig: wgmma needs num_stages >= 2 TMA buffers, got {self.num_stages}")
        if self.loader_warp and (not self.wgmma or self.persistent):
            raise ValueError("ConsumerConfig: a loader warp is the Gluon kernel's, one program per tile; expected "
                             f"wgmma=True and persistent=0 with loader_warp=True, got wgmma={self.wgmma}, "
                             f"persistent={self.persistent}")


def _sm_count(device: torch.device) -> int:
    """The SMs the split rule aims to fill (132 on an H100 SXM). The interpreter claims 8, so CPU
    tests of small problems take the split-K paths the GPU takes at small M."""
    if device.type != "cuda":
        return 8
    return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


#: The measurement behind :func:`consumer_config` (sm90). Every candidate launch was timed at the
#: DeepSeek-V4-Pro shapes (K 8192, N 1024; DEP8 G=8, TEP8 G=1) by ``accval bench --sweep``.
CONSUMER_TUNING = (
    "reports/bench/sweep-NVIDIA_H200-2026-11-28.json (NVIDIA H200, torch 2.11, triton 3.6), median us of the best vs "
    "the previous launch (BLOCK_M 128 for M > 64, BLOCK_N 128, 8 warps, no split): M >= 1024 every shape: BLOCK_M 64, "
    "BLOCK_N 128, 4 warps best (dep8 M=8192 1629 vs 1659, tep8 M=1024 44.7 vs 59.2); small grids: K split so programs "
    "oversubscribe the SMs about 4x (tep8 M=64 15.0 with BLOCK_N 64 split 16 vs 44.1 unsplit; dep8 M=64 36.8 with "
    "BLOCK_N 64 split 4 vs 56.5; tep8 M=256 19.5 with split 8 vs 53.5 unsplit at BLOCK_M 128, BLOCK_N 64). "
    "Deferred scaling (defer_scale, same bits), reports/bench/sweep-consumer-defer-NVIDIA_H200-2026-11-28.json: the best "
    "deferred launch was 1-6% slower than the best plain one at M 1024-8192 on both shapes (dep8 M=8192 1619 vs 1538, "
    "tep8 M=8192 199.6 vs 187.8) except tep8 M=1024 (43.6 vs 46.0), so the table leaves it off; the same on an H100 "
    "(reports/bench/sweep-consumer-ws-defer-NVIDIA_H100_80GB_HBM3-2026-11-28-063504.json). That sweep also tried Triton's "
    "warp specialization of the k loop (tl.range(..., warp_specialize=True), not kept in the kernel): with triton 3.6 "
    "on sm90, 36 of 54 launches failed to compile (PassManager::run failed) and the rest were 3-12% slower. "
    "Scaling order, reports/bench/consumer-probe-NVIDIA_H200-2026-11-28.json (scripts/consumer_probe.py): dot * (a_s * b_s) "
    "beats (dot * a_s) * b_s at every launch tried (dep8 M=8192 1454 vs 1576 us at BLOCK_M 64, 4 warps, 3 stages); "
    "BLOCK_M 64 with 4 warps stays the best launch. "
    "TMA loads (ConsumerConfig.tma), reports/kernel/speed-probe-NVIDIA_H200-2026-12-02-call1.json (scripts/speed_probe.py; "
    "NVIDIA H200, torch 2.11, triton 3.6; 25 launches x pointer/TMA x dep8/tep8 x 6 M; every TMA output bit-identical "
    "to its pointer launch's): best TMA vs best pointer launch, median us: with K split, dep8 M=64 34.0 vs 37.2, tep8 "
    "M=64 14.4 vs 14.8, tep8 M=256 17.9 vs 19.6; unsplit, by tiles per SM (132 SMs): 7.8 (dep8 M=1024) 174.0 vs 181.2, "
    "15.5 (dep8 M=2048) 346.5 vs 349.7, 31 (dep8 M=4096) 658.2 vs 712.4, 62 (dep8 M=8192) 1293 vs 1441, 7.8 (tep8 "
    "M=8192) 170.0 vs 176.5; but 1 to 3.9 (tep8 M=1024..4096) 46.1 vs 42.8, 52.1 vs 47.7, 97.0 vs 90.4: TMA from 6 tiles "
    "per SM. BLOCK_M 128 with 8 warps stays slower with TMA too (dep8 M=8192 1533 us). Not where K is split: called "
    "without a graph, building and encoding two descriptors per call cost more host time than the device time saved "
    "(reports/kernel/host-path-NVIDIA_H200-2026-12-02-call5.json, TMA at M=64: as called minus kernel 82 us dep8, "
    "93 us tep8, where a bare launch of the same kernels took 12 and 27 us over; the pointer kernels' path measured "
    "12.5 and 25.3 us over in reports/kernel/host-path-NVIDIA_H200-2026-12-02.json). "
    "What limits the kernel against torch._scaled_mm (reports/kernel/speed-probe-ceiling-NVIDIA_H200-2026-12-02-call4.json, "
    "M 2048 and 8192, both shapes): the same TMA kernel without the per-block scaling, its dot accumulating in place, "
    "reaches 0.99-1.22x of _scaled_mm at BLOCK_M 128, 8 warps, 4 stages (dep8 M=8192 1056 vs 1047 us); with the scaling, "
    "each 128-block's product must be finished and scaled before the next is added, and the best launch is 0.66-0.80x "
    "(dep8 M=8192 1311 us). Deferring the scaling by one block does not recover it (0.66-0.70x). "
    "Scales a block ahead (prefetch_scales), reports/kernel/speed-probe-prefetch-NVIDIA_H200-2026-12-02-s12call1.json "
    "(scripts/speed_probe.py --parts prefetch; NVIDIA H200, torch 2.11, triton 3.6; each launch with and without it, "
    "every output bit-identical to the plain pointer launch's): Triton 3.6 pipelines the tile loads but loads the "
    "scales in the iteration that uses them (the compiled TTGIR: tt.load in the loop, the scaling after the dot's wait), "
    "so each block waits for a scale round trip. Prefetched, median us: K split, dep8 M=64 34.0 vs 37.5, tep8 M=64 14.7 "
    "vs 15.3, tep8 M=256 18.0 vs 19.3. Unsplit with TMA: no gain at 3 stages (dep8 M=1024 175.6 vs 175.4, M=4096 692.9 "
    "vs 686.1, M=8192 1351.9 vs 1342.5); with 4 stages the probe saw dep8 M=1024 167.4 and M=2048 344.5 vs 354.9, but "
    "two accval bench runs of a table using it below 24 tiles per SM lost at dep8 M=1500 (consumer 261.8 vs 245.9 us "
    "in the runs before; chain 368.4 and 373.4 vs 355.8 and 358.4) and M=2048 (356.8 vs 348.2; "
    "reports/kernel/bench-prefetch-stages4-NVIDIA_H200-2026-12-02-092027.md.log), so unsplit grids keep 3 stages "
    "without it. At one to four waves TMA with prefetch and 4 stages "
    "was the fastest launch (tep8 M=1024 39.6 vs 42.5 pointer, M=2048 45.4 vs 47.0, M=4096 84.7 vs 88.9, dep8 M=256 "
    "50.5 vs 56.1) but stays off: its descriptors' host cost (above) exceeds those kernels' 40-90 us. The pointer kernel "
    "unsplit is slower with prefetch at BLOCK_M 64 (tep8 M=1024 50.5 vs 42.5, dep8 M=8192 1644 vs 1530). Two blocks "
    "ahead makes Triton 3.6 drop the tile pipelining altogether (TTGIR without async copies), so it was not timed. "
    "Narrower tiles at small M, reports/kernel/speed-probe-smallm-NVIDIA_H200-2026-12-02-s13call1.json (scripts/"
    "speed_probe.py --parts smallm; NVIDIA H200; BLOCK_N 16/32/64, K split 4-16, 3-4 stages, pointer and TMA, scales "
    "prefetched; 84 launches, all bit-identical to their split's plain launch): no launch beat the shipped one by more "
    "than the spread of timing it twice (tep8 M=64 best 14.0 us at BLOCK_N 32 split 8 vs 14.4 shipped; tep8 M=256 17.5 "
    "vs 17.8; dep8 M=64 33.6 vs 33.8; dep8 M=256 55.9 vs 55.7), so the table stays. "
    "The Gluon wgmma kernel (ConsumerConfig.wgmma, accval/kernels/fp8_block_bmm_wgmma.py: block k+1's wgmma in flight while "
    "block k is scaled, which Triton's tl.dot loop cannot express), reports/kernel/speed-probe-wgmma-NVIDIA_H200-"
    "2026-12-03-s18call9.json and -rep1/-rep2-...-s18call10.json (scripts/speed_probe.py --parts wgmma; NVIDIA H200, "
    "torch 2.11, triton 3.6; every output bit-identical to the plain pointer launch's), median us of the Triton TMA "
    "launch the table took before vs WGMMA_CONFIG (BLOCK_M 128, 8 warps, 4 TMA buffers), three runs where measured: "
    "dep8 M=1024 173.1/171.6/173.5 vs 166.8/166.5/168.1, M=2048 349.7/337.9/358.6 vs 345.9/338.1/333.5, M=4096 730.3 "
    "vs 709.5, M=8192 1328.5 vs 1324.9, tep8 M=8192 170.8 vs 164.4; slower at dep8 M=1500 (233.5/238.2/241.5 vs "
    "248.5/245.5/253.8), the one grid it loses on; BLOCK_M 64 (3 or 4 buffers) wins at dep8 M=1024-4096 and tep8 "
    "but loses at dep8 M=8192 (1392.9, 1407.9). Two accval bench runs with this table "
    "(reports/bench/NVIDIA_H200-2026-12-03-062754 and -062854, consumer median us): dep8 M=1024 168.3/167.9, 1500 "
    "254.3/254.9, 2048 336.6/337.7, 4096 668.7/670.9, 8192 1312.2/1331.7, tep8 M=8192 164.3/163.8; the previous "
    "table's two runs on another lease (-031611, -032116): 173.0/173.5, 243.8/247.3, 349.9/353.8, 685.2/706.3, "
    "1325.1/1383.0, 170.5/170.4. 3 TMA buffers instead of 4 measured within 1-2% (dep8 M=1500-8192 a little faster, "
    "M=4096 677.9 vs 709.5; tep8 M=8192 167.2 vs 164.4); the table keeps the launch its two bench runs measured. "
    "Against torch._scaled_mm the best wgmma launch at each M >= 2048 reaches 0.71-0.83x (WGMMA_CONFIG 0.68-0.82x), "
    "not 0.9x: what it overlaps is the scaling, which still takes a multiply and an add per element and block "
    "(accval's kernels round like the torch mirrors: enable_fp_fusion=False). The table's wgmma rows (WGMMA_TABLE), reports/kernel/speed-probe-table-NVIDIA_H200-2026-12-03-s19call1.json "
    "and -s19call2.json (scripts/speed_probe.py --parts table; NVIDIA H200, torch 2.11, triton 3.6; each candidate "
    "through the public function, the table patched to answer it; every output bit-identical to the plain pointer "
    "launch's), CUDA-graph median us of the two runs, with the s18 runs above where they measured it: BLOCK_M 64, 4 "
    "warps, 3 buffers against BLOCK_M 128, 8 warps, 4 buffers (the table's before) at dep8 M=1024 166.8/165.4 "
    "(160.0/159.4/160.5) vs 169.2/172.7 (166.8/166.5/168.1), M=2048 325.2/330.8 (327.0/324.2/325.9) vs 350.9/342.0 "
    "(345.9/338.1/333.5), M=4096 653.3/664.5 (689.2) vs 676.6/689.5 (709.5), M=1500 237.6/254.4 (243.2/236.4/247.3) "
    "vs 247.8/247.6, where the Triton TMA launch measured 239.5/237.0 (233.5/238.2/241.5); at dep8 M=8192 (62 tiles "
    "per SM) 1307.4/1330.7 (1392.9) vs 1313.4/1300.0 (1324.9): 128-row tiles from 48 tiles per SM. Below 6 tiles "
    "per SM, where the Triton table keeps pointer loads, BLOCK_M 64 with 4 buffers against the pointer launch: dep8 "
    "M=256 47.9/47.8 vs 56.7/56.2 (3 buffers 50.9/50.7), tep8 M=1024 35.4/35.1 vs 43.1/42.4 (3 buffers 37.5/37.1), "
    "M=1500 40.8/40.6 vs 46.1/45.7, M=2048 43.1/42.5 vs 48.0/47.1, M=4096 83.5/82.5 vs 93.4/92.4 (3 buffers "
    "82.4/81.8); tep8 M=8192 (7.8 tiles per SM) 3 buffers 163.7/169.5, 128-row tiles 166.6/166.0. There the host "
    "cost of TMA had kept the Gluon kernel off (above); each call now rebases descriptors built once per layout "
    "(kernels.host.rebased) instead of building two, and the shared-memory layout is built once: on that host "
    "building both took 11.8 us per call with the layout built per call, 3.7 us with it built once, rebasing them "
    "1.5 us (a second row, tep8: 11.2 and 2.7 us). Called without a graph, tep8 M=1024, the pointer launch took "
    "33.1/33.2 us per call and BLOCK_M 64 with 4 buffers 35.6 with descriptors built per call, 28.9 rebased. "
    "Two accval bench runs with this table (reports/bench/NVIDIA_H200-2026-12-03-081156 and -081423) against one "
    "with the table before, the same day (-075737), consumer median us: dep8 M=256 47.7/47.6 vs 56.8, 1024 "
    "161.4/163.8 vs 168.0, 1500 245.6/246.0 vs 253.7, 2048 344.8/333.8 vs 336.7, 4096 676.7/682.8 vs 665.5 (the "
    "s18 runs 668.7/670.9: within the two launches' spread), 8192 (the same launch) 1331.7/1326.1 vs 1306.9; tep8 "
    "M=1024 35.0/34.8 vs 42.9, 1500 40.4/40.3 vs 46.2, 2048 42.2/42.1 vs 47.6, 4096 80.0/79.7 vs 89.5, 8192 "
    "159.8/161.0 vs 163.9. "
    "The scaling as one fused multiply-add (_scale_into; the kernels before rounded the multiply and the add apart), "
    "scripts/consumer_against.py on the NVIDIA H200 (torch 2.11, triton 3.6), the shipped dispatch as it was (mul-add) "
    "and with the fma, four processes each, alternating, two calls (reports/kernel/consumer-against-NVIDIA_H200-"
    "2026-12-03-s21call1/ and -s21call2/, compare.md), CUDA-graph median us of the two runs per call, before vs fma: "
    "dep8 M=1024 161.6/162.3 vs 158.0/158.3, M=2048 323.0/324.0 vs 310.0/311.6, M=4096 645.2/654.8 vs 629.8/635.4, "
    "M=8192 1283.6/1292.0 vs 1167.1/1186.3 (0.83x of torch._scaled_mm -> 0.91-0.93x), tep8 M=1024 35.7/35.6 vs "
    "33.9/34.0, 2048 43.0/43.0 vs 41.5/41.7, 4096 79.9/80.1 vs 78.5/79.2, 8192 158.3/158.0 vs 153.0/154.0; dep8 M=256 "
    "(Gluon) 47.8/47.7 vs 46.7/46.8. But the small-M split launches of that table (BLOCK_N 64) lost: dep8 M=64 "
    "33.0/32.9 vs 35.1/35.3, tep8 M=64 15.0/14.8 vs 15.1/15.5, M=256 17.9/17.9 vs 18.4/18.6. speed_probe --parts "
    "rounding (reports/kernel/speed-probe-rounding-NVIDIA_H200-2026-12-03-s21call2.json; each launch twice, fma and "
    "mul-add, 18 neighbours of the shipped launch; fma time / mul-add time, over the three shapes): BLOCK_N 64 lost "
    "most (split 4 1.06-1.16, split 8 1.03-1.09, split 16 1.00-1.04), BLOCK_N 128 less (split 4 1.03-1.06, 8 "
    "1.01-1.03, 16 0.99-1.05), BLOCK_N 32 nothing (0.98-1.01); the PTX differs "
    "only in fma.rn.f32 for mul.rn.f32 + add.rn.f32 (scripts/kernel_ir.py --against). The fastest fma launches, "
    "min of two, us: tep8 M=64 BLOCK_N 32 split 8 14.11 (the shipped mul-add launch, BLOCK_N 64 split 16, 14.37), "
    "tep8 M=256 BLOCK_N 128 split 8 17.79-17.87 (mul-add shipped 18.02), dep8 M=64 BLOCK_N 128 split 4 35.2 (mul-add "
    "shipped 33.57; no fma launch tried came closer): about 2 programs per SM of 128-wide tiles, 32-wide where 16 "
    "splits of those leave SMs idle (SPLIT_PROGRAMS_PER_SM, SPLIT_K_MAX). The earlier 4x oversubscription was "
    "measured with BLOCK_N 64 (above). Accuracy is not traded: one rounding per block is closer to the exact sum. "
    "speed_probe --parts splitfma (reports/kernel/speed-probe-splitfma-NVIDIA_H200-2026-12-03-s21call4.json; the fma "
    "split launches at M 1-256, BLOCK_N 32/128, split 2-16, 3/4 stages, pointer and TMA, twice each): TMA is faster "
    "under a graph (dep8 M=64 34.1 vs 35.1 us, tep8 M=256 17.0 vs 18.2) but 51.9 and 78.6 us as called through the "
    "public function against 36.1 and 52.7 (Triton's descriptors on the host), so split grids keep pointer loads; "
    "elsewhere the table's launch was within 0.3 us of the fastest. "
    "The fma with this rule against the mul-add with the rule before, the same script, a third call "
    "(reports/kernel/consumer-against-NVIDIA_H200-2026-12-03-s21call3/compare.md), us, before vs after: dep8 M=1 "
    "29.7 vs 29.6, M=16 31.6 vs 31.6, M=64 34.0 vs 35.7 (the one shape it loses), M=256 47.8 vs 46.8, M=2048 323.3 "
    "vs 312.0, M=8192 1284.7 vs 1166.0; tep8 M=1 13.9 vs 13.2, M=16 13.7 vs 13.8, M=64 14.6 vs 14.3, M=256 18.3 vs "
    "18.2, M=4096 79.5 vs 76.2. Two accval bench runs (reports/bench/NVIDIA_H200-2026-12-03-133348, -133452): "
    "consumer against torch._scaled_mm at M >= 2048 worst 0.80x/0.82x (dep8 M=4096), at M <= 256 1.37x/1.37x "
    "(tep8 M=64), against 0.78x/0.77x and 1.36x/1.35x in the last two runs before (-120446, -120548). "
    "With the fma, 128-row wgmma tiles from 6 tiles per SM (WGMMA_TABLE; the 64-row launch with 3 buffers is gone): "
    "speed_probe --parts table,unroll (reports/kernel/speed-probe-unroll-table-NVIDIA_H200-2026-12-03-s22call1.json; "
    "NVIDIA H200, torch 2.11, triton 3.6; one process, three timings of each launch, bits compared): BLOCK_M 128, 8 "
    "warps, 4 buffers against BLOCK_M 64, 4 warps, 3 buffers at dep8 M=1024 151.8/155.4/154.3 vs 159.0/159.0/159.1 "
    "us, M=2048 324.0/307.4/307.7 vs 320.0/317.3/317.2, M=4096 636.4/592.7/618.6 vs 644.2/639.2/646.5, tep8 M=8192 "
    "156.4/150.7/152.1 vs 161.7/154.3/154.6 (7.8 tiles per SM); at 3.9 tiles per SM (tep8 M=4096) it loses to 64-row "
    "tiles with 4 buffers (79.5/78.8/78.9 vs 78.3/76.7/77.0); 1 block per unrolled chunk lost 10-40% at every launch. "
    "scripts/consumer_against.py, the shipped dispatch before and after, alternating, two processes each "
    "(reports/kernel/consumer-against-NVIDIA_H200-2026-12-03-s22call3/compare.md), us: dep8 M=1024 158.8 vs 151.8, "
    "M=1500 235.2 vs 227.8, M=2048 315.8 vs 300.4, M=4096 638.9 vs 601.8 (0.84x -> 0.90x of torch._scaled_mm), tep8 "
    "M=8192 155.9 vs 151.0; the launches both versions share measured within 4% of each other (dep8 M=8192 1185.3 vs "
    "1235.6: the spread of two processes), tep8 M=1024-4096 within 2%. A Gluon kernel that scales each chunk's last "
    "product under the next chunk's first wgmma (reports/kernel/consumer-against-NVIDIA_H200-2026-12-03-s22call2-carry/, "
    "carry.diff) kept the bits but was 0-4% slower: carrying the product through the loop took 252 registers instead "
    "of 225 and 373 more PTX instructions. Two accval bench runs with this table (reports/bench/NVIDIA_H200-2026-12-03-"
    "162941 and -163043) against the last with the table before (-133452), consumer median us: dep8 M=1024 151.8/152.0 "
    "vs 158.2, 1500 229.7/228.3 vs 234.2, 2048 303.7/308.2 vs 319.4, 4096 607.6/605.4 vs 644.6, tep8 M=8192 "
    "149.7/150.7 vs 153.5; against torch._scaled_mm at M >= 2048 the worst is now tep8 M=4096 (0.80x/0.81x, a launch "
    "this table does not change). "
    "Then the Gluon kernel's scaling pinned between its waits (fp8_block_bmm_wgmma.PIN_FMA: before, the compiler sank "
    "a chunk's multiply-adds past its last wait, so none overlapped a wgmma; scripts/kernel_ir.py --wgmma shows it) "
    "and 4 blocks per chunk: speed_probe --parts pin (reports/kernel/speed-probe-pin-NVIDIA_H200-2026-12-03-s23call1"
    ".json; NVIDIA H200, torch 2.11, triton 3.6; two timings each, every output bit-identical to the pointer launch), "
    "128/8w/4 buffers, 2 blocks not pinned vs 4 pinned, us: dep8 M=2048 314.5/309.5 vs 291.0/267.2, M=4096 "
    "619.6/635.8 vs 586.7/571.0, M=8192 1234.7/1232.1 vs 1152.0/1163.8, tep8 M=4096 78.9/78.9 vs 71.5/71.5, M=8192 "
    "152.8/153.8 vs 141.7/144.1; 8 and 16 pinned blocks per chunk were slower than 4 (tep8 M=4096 77.3/77.6 and "
    "75.7/76.0). speed_probe --parts chunks (-s23call2.json): 4 buffers beat 3, 5 and 6, and 4 blocks per chunk beat "
    "3 and 6 (tep8 M=4096 128-row: 70.8/70.7 us, 3 buffers 79.4/79.4, 6 buffers 75.9/75.8, 3 blocks 81.8/81.9, 6 "
    "blocks 77.1/76.6). Then each chunk's last product deferred to the next chunk (DEFER_LAST), speed_probe --parts "
    "pin (-s23call3.json, same card, all outputs bit-identical), 4 pinned blocks not deferred vs deferred, us: tep8 "
    "M=2048 39.1/39.2 vs 37.5/37.4, M=4096 71.0/70.8 vs 68.5/68.7, M=8192 135.8/139.9 vs 136.9/136.9, dep8 M=1024 "
    "146.8/144.6 vs 143.5/143.1, M=2048 283.4/290.0 vs 292.9/294.2 (the one shape it loses), M=4096 569.1/572.3 vs "
    "575.6/574.9, M=8192 1141.4/1145.2 vs 1135.1/1150.4. The same run sets WGMMA_128_MIN_TILES_PER_SM: at 1.94 "
    "tiles per SM 128-row tiles win (tep8 M=2048 37.5/37.4 vs 38.4/38.9; dep8 M=256 44.5/44.6 vs 45.4/45.7), at 1.45 "
    "64-row tiles (tep8 M=1500 35.9/35.8 vs 36.6/36.4). And the split-K sum over 256 elements per program instead "
    "of 1024 (SUM_BLOCK): speed_probe --parts sums (reports/kernel/speed-probe-sums-NVIDIA_H200-2026-12-03-s23call1"
    ".json, two timings each, same bits): tep8 M=1 12.0/12.0 vs 13.3/13.4 us, M=64 13.2/12.8 vs 14.2/14.3, M=256 "
    "17.2/17.2 vs 17.9/18.2, dep8 M=64 35.1/35.1 vs 35.0/35.3 (128 elements: 36.2/36.2). Two accval bench runs with "
    "all of it (reports/bench/NVIDIA_H200-2026-12-03-180233, -180333): consumer against torch._scaled_mm at M >= 2048 "
    "worst 0.91x (dep8 M=4096) / 0.93x (tep8 M=2048), at M <= 256 1.53x/1.51x (tep8 M=64); pinned without the "
    "deferral and with 128-row tiles from 3 tiles per SM (-175146, -175245) 0.89x/0.89x (tep8 M=2048, 64-row tiles). "
    "Persistent grids (ConsumerConfig.persistent: P programs per SM, each taking every P-th tile, the next tile's "
    "first blocks loading while a tile is stored) lose at every shape, so the table never takes them: speed_probe "
    "--parts persistent (reports/kernel/speed-probe-persistent-NVIDIA_H200-2026-12-03-s24call2.json; NVIDIA H200, "
    "torch 2.11, triton 3.6; two timings each, every output bit-identical to the pointer launch), one program per "
    "tile vs persistent, us: 128-row tiles, 1 per SM: dep8 M=2048 279.1/276.8 vs 308.1/296.0, M=4096 569.1/559.8 vs "
    "620.5/628.1, M=8192 1168.6/1164.2 vs 1222.5/1160.3, tep8 M=4096 68.9/68.8 vs 73.1/73.2, M=8192 137.2/135.9 vs "
    "144.1/142.8; 64-row tiles, 2 per SM (1 per SM leaves half the SM's room unused): tep8 M=1024 31.0/31.0 vs "
    "34.1/34.1, dep8 M=4096 663.6/646.8 vs 679.3/678.4. The persistent kernel takes 255 registers and spills about "
    "100 bytes outside its k loop (scripts/kernel_ir.py --wgmma); not persistent it compiles as before (236 "
    "registers) and times the same (consumer_against, reports/kernel/consumer-against-NVIDIA_H200-2026-12-03-s24call2"
    "/compare.md: 0.980-1.012 of the kernel before it). A first version that ran every grid as a loop over tiles and "
    "put block kb into buffer (its place in the program's stream of blocks) % STAGES, known only at run time, was "
    "1.09-1.16x slower at every shape (-s24call1-runtime-buffers/): with a chunk of as many blocks as buffers, each "
    "block's buffer must be known when the kernel is compiled. "
    "A loader warp (ConsumerConfig.loader_warp: warp specialization, the TMA loads issued by one warp of their own "
    "that waits on an empty barrier per buffer, the compute warps arriving there once a block's wgmma has retired) "
    "takes the 128-row rows: the shipped 128-row kernel's k loop waits at 16 thread-block barriers (BAR.SYNC) per 4 "
    "blocks, mostly around the refills' expect and copies; with the loader it waits at 8, with 240 registers for the "
    "compute warps and 24 for the loader (setmaxnreg), no spills (scripts/kernel_ir.py --wgmma, triton 3.6: "
    "reports/kernel/kernel-ir-wgmma-NVIDIA_H200-2026-12-03-s25call1.log). speed_probe --parts loader "
    "(reports/kernel/speed-probe-loader-NVIDIA_H200-2026-12-03-s25call1.json and -loader-stages-...-s25call2.json; "
    "NVIDIA H200, torch 2.11, triton 3.6; two timings each, every output bit-identical to the pointer launch), "
    "128-row, 4 buffers, without vs with the loader, us, s25call1 then s25call2: dep8 M=1024 141.0/140.5 vs 134.5/135.6, "
    "139.0/139.9 vs 134.8/133.0; M=1500 204.8/205.5 vs 195.4/198.6; M=2048 276.2/284.3 vs 264.2/265.0, 286.9/284.6 vs "
    "252.2/269.3; M=4096 565.0/584.2 vs 523.8/545.0, 573.5/578.4 vs 533.9/546.7; M=8192 1107.1/1142.5 vs "
    "1039.8/1082.8, 1133.6/1139.7 vs 1043.7/1072.3; tep8 M=2048 37.6/37.7 vs 37.0/37.1; M=4096 69.4/69.5 vs 67.7/67.8; "
    "M=8192 136.0/138.2 vs 129.3/130.9, 135.9/135.9 vs 127.2/129.6; the one loss: dep8 M=256 (1.94 tiles per SM) "
    "44.3/44.4 vs 44.8/44.9, 44.1/44.2 vs 44.6/44.5. With the loader 3, 5 and 6 buffers were slower than 4 but at "
    "dep8 M=256 (5: 43.6/43.7; dep8 M=4096 540.4/541.6 vs 533.9/546.7, M=8192 1070.6/1063.8 vs 1043.7/1072.3, tep8 "
    "M=8192 131.6/132.9 vs 127.2/129.6; 3: 10-20% slower). The 64-row launch keeps its own loads: with a loader at "
    "two programs per SM its compute warps get 232 registers and spill 56 bytes, 1-20% slower (tep8 M=1024 "
    "32.2/32.3 vs 31.4/31.7, dep8 M=4096 741.4/717.5 vs 640.6/660.8). Two accval bench runs with the loader "
    "(reports/bench/NVIDIA_H200-2026-12-03-222215, -222322) against the two before it (-184523, -184624), consumer "
    "median us: dep8 M=1024 131.4/132.6 vs 138.7/139.6, 1500 198.2/196.3 vs 205.7/205.7, 2048 264.5/263.3 vs "
    "285.4/282.5, 4096 537.2/543.7 vs 575.2/576.0, 8192 1081.1/1052.1 vs 1164.2/1171.0; tep8 M=2048 36.4/36.5 vs "
    "37.1/36.9, 4096 66.4/66.5 vs 68.3/68.4, 8192 128.5/128.4 vs 134.8/136.4; against torch._scaled_mm at dep8 "
    "0.96-1.02x from M=2048 (was 0.91-0.94x), worst at M >= 2048 0.92x/0.92x (tep8 M=4096 and M=2048). "
    "What bounds the split launches at M <= 256 under the bench's timing (speed_probe --parts floors, "
    "reports/kernel/speed-probe-floors-fusedsum-NVIDIA_H200-2026-12-04-s26call1.json; NVIDIA H200, torch 2.11, triton "
    "3.6; each timed twice), us: an empty launch 4.4-4.6, two empty launches 5.3-5.8; a kernel that only reads the "
    "consumer's input bytes once, fastest of 16 launches: tep8 M=1 8.2-8.3, M=64 9.3-9.4, M=256 9.4; the split "
    "products kernel alone: tep8 M=1 10.3-10.4, M=64 10.9-11.1, M=256 14.4-14.5 (with the sum 11.9-12.3, 12.9-13.0, "
    "17.2-17.3). Against it 2x torch._scaled_mm asks for <= 9.9 us at tep8 M=64 and <= 15.1 at M=256. The splits "
    "added in the one launch (scripts/fused_split_k.py) at BLOCK_N 32/64/128, K split 2-8, 3/4 stages "
    "(-fusedgrid-...-s26call2.json): fastest 11.5 at tep8 M=1, 13.8 at M=64, 18.7 at M=256, against the shipped "
    "11.9, 12.9 and 17.2. The sum launched as the products kernel's programmatic dependent (SPLIT_PDL; speed_probe "
    "--parts pdl, reports/kernel/speed-probe-pdl-NVIDIA_H200-2026-12-04-s26call6.json, same card and versions, two "
    "timings each, same bits), without vs with, us: tep8 M=1 11.87/11.87 vs 11.23/11.23, M=64 13.22/13.22 vs "
    "12.38/12.42, M=256 17.12/17.12 vs 16.80/16.74, dep8 M=1 29.66/29.54 vs 29.09/29.06, M=64 35.04/35.01 vs "
    "34.66/34.56; the kernel suite on that card with it: 318 passed, 1 skipped (-gpu-suite-...-s26call6.log). "
    "The Gluon kernel with K split (ConsumerConfig(wgmma=True, split_k>1)) loses to the table's Triton split launch "
    "wherever the table splits, so the table never takes it: speed_probe --parts gluonsplit (reports/kernel/"
    "speed-probe-gluonsplit-NVIDIA_H200-2026-12-04-s26call8.json, same card and versions, two timings each, every "
    "output bit-identical to the pointer launch of its splits), fastest Gluon launch vs the shipped one, us: tep8 "
    "M=64 12.90/13.12 (64x64 tiles, 8 splits) vs 12.00/12.29, M=256 17.25/17.41 (64x64, 4 splits) vs 16.80/16.83, "
    "dep8 M=64 35.26/35.55 (64x128, 4 splits) vs 34.62/34.88; the kernel suite with it: 320 passed, 1 skipped "
    "(-gpu-suite-...-s26call8.log)."
)


#: The unsplit grid takes TMA loads from this many tiles per SM on (``CONSUMER_TUNING``).
TMA_MIN_TILES_PER_SM = 6
#: A grid of fewer tiles than half the SMs splits K until it has about this many programs per SM, in at
#: most :data:`SPLIT_K_MAX` splits (``CONSUMER_TUNING``, the fused multiply-add's small-M launches).
SPLIT_PROGRAMS_PER_SM = 2
SPLIT_K_MAX = 16


def consumer_config(m: int, n: int, k: int, g: int, device: torch.device) -> ConsumerConfig:
    """The Triton consumer's launch for this problem (the measurements: ``CONSUMER_TUNING``).

    BLOCK_M 64 (16/32 for tiny M), BLOCK_N 128, 4 warps, 3 stages. When that grid has fewer tiles
    than half the SMs, K is split into up to :data:`SPLIT_K_MAX` slices so that about
    :data:`SPLIT_PROGRAMS_PER_SM` programs per SM keep enough loads in flight (the weight read is the
    whole cost at small M), with BLOCK_N 32 where even the most slices of 128-wide tiles would leave
    SMs idle, each block's scales loaded a block ahead (``prefetch_scales``). Tiles are read with TMA descriptors when the
    (unsplit) grid has at least :data:`TMA_MIN_TILES_PER_SM` tiles per SM. With one to four waves
    the pointer loads stay: TMA with prefetch was faster on the device there, but its descriptors'
    host cost would make an eager call slower than the kernel; where K is split that cost outweighs
    the few us TMA saves. On an sm90 GPU with Gluon (:func:`_wgmma_ok`) every grid of at least half as
    many tiles as SMs runs the Gluon kernel instead from M = :data:`WGMMA_MIN_M` (:data:`WGMMA_TABLE`,
    same bits); smaller grids keep the Triton kernel, K split or not.
    """
    check_int("m", m, minimum=0)
    for name, value in (("n", n), ("k", k), ("g", g)):
        check_int(name, value)
    return _device_config(m, n, k, g, device)


def _device_config(m: int, n: int, k: int, g: int, device: torch.device) -> ConsumerConfig:
    """The table's launch on ``device`` (its SMs, whether the wgmma kernel runs there), sizes unchecked."""
    return _consumer_config(m, n, k, g, _sm_count(device), _wgmma_ok(device))


def _wgmma_ok(device: torch.device) -> bool:
    """Whether the Gluon wgmma kernel runs on ``device``: an sm90 GPU (wgmma is Hopper's) and a Triton
    with Gluon's Hopper API; never in the interpreter."""
    return (fp8_block_bmm_wgmma.AVAILABLE and device.type == "cuda" and not _platform.interpreting()
            and _cuda_capability(device.index if device.index is not None else torch.cuda.current_device()) == (9, 0))


def _launch_pdl_option() -> bool:
    """Whether this Triton's CUDA launches take ``launch_pdl`` (the option that makes a launch a programmatic
    dependent); without it the kernels' grid dependency control has nothing to pair with."""
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:  # pragma: no cover - a Triton without its NVIDIA backend
        return False
    return "launch_pdl" in {f.name for f in dataclasses.fields(CUDAOptions)}


#: grid dependency control in the kernels and ``launch_pdl`` at launch: what :func:`_pdl_ok` needs of Triton
PDL_AVAILABLE = gdc_wait is not None and _launch_pdl_option()


#: launch the split-K sum as the products kernel's programmatic dependent where :func:`_pdl_ok` allows
#: (``CONSUMER_TUNING``; ``scripts/speed_probe.py --parts pdl`` times both)
SPLIT_PDL = True
#: Not taken: the FP8 chain's consumer as the producer's programmatic dependent (commit 083ee8b: the producer's
#: programs trigger as they start, the products kernel waits before reading ``a``, optionally prefetching its
#: slice of ``b`` into L2 first). Same bits, slower everywhere measured on an H200 (reports/kernel/chain-pdl-
#: NVIDIA_H200-2026-12-04-s27call3/): chain tep8 M=64 13.3 us plain, 16.7 as a dependent, 20.2 with the
#: prefetch; the prefetch alone took the consumer from 35.3 to 49.4 us at dep8 M=64; and the trigger in every
#: program took GPT-J's 2-head producer launches from 444.0 to 635.5 us at dep8 M=8192.


def _pdl_ok(device: torch.device) -> bool:
    """Whether a split launch's sum runs as the products' programmatic dependent launch (:data:`SPLIT_PDL`): a
    CUDA GPU of compute capability 9.0 or later (grid dependency control is Hopper's), a Triton that has it
    (:data:`PDL_AVAILABLE`), never in the interpreter."""
    return (SPLIT_PDL and PDL_AVAILABLE and device.type == "cuda" and not _platform.interpreting()
            and _cuda_capability(device.index if device.index is not None else torch.cuda.current_device())[0] >= 9)


@functools.lru_cache(maxsize=None)
def _cuda_capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


#: the Gluon kernel takes 128-row tiles from this many tiles per SM of the grid at BLOCK_M 64, BLOCK_N 128
#: (``CONSUMER_TUNING``: 64-row tiles won at 1.45, 128-row tiles at 1.94)
WGMMA_128_MIN_TILES_PER_SM = 1.75
#: the Gluon kernel's launches, by the least tiles per SM of the grid at BLOCK_M 64, BLOCK_N 128
#: (``CONSUMER_TUNING``): 64-row tiles with 4 TMA buffers up to one wave of 128-row tiles, 128-row tiles with 8
#: warps, 4 buffers and a loader warp from :data:`WGMMA_128_MIN_TILES_PER_SM` tiles per SM
WGMMA_TABLE = (
    (WGMMA_128_MIN_TILES_PER_SM, ConsumerConfig(128, 128, 8, 4, tma=True, wgmma=True,
                                                loader_warp=fp8_block_bmm_wgmma.LOADER_AVAILABLE)),
    (0, ConsumerConfig(64, 128, 4, 4, tma=True, wgmma=True)),
)
#: the least M from which the Gluon kernel takes the grids of at least half as many tiles as SMs (the
#: least measured; below it the table's Triton launches take BLOCK_M 16/32 tiles)
WGMMA_MIN_M = 256


def _triton_for(cfg: ConsumerConfig, tma: bool) -> ConsumerConfig:
    """``cfg`` as a Triton launch with TMA loads or not: a wgmma launch becomes BLOCK_M 64, 4 warps,
    3 stages (the table's Triton launch for the grids the dispatch gives the wgmma kernel), with its K split
    (the same splits, so the same bits) and then its scales prefetched."""
    if cfg.wgmma:
        return ConsumerConfig(64, cfg.block_n, 4, 3, cfg.split_k, tma=tma, prefetch_scales=cfg.split_k > 1)
    return dataclasses.replace(cfg, tma=tma)


@functools.lru_cache(maxsize=4096)
def _consumer_config(m: int, n: int, k: int, g: int, sms: int, wgmma: bool = False) -> ConsumerConfig:
    """:func:`consumer_config` for a multiprocessor count and whether the wgmma kernel runs, cached
    (looked up on every call)."""
    block_m = 16 if m <= 16 else 32 if m <= 32 else 64
    block_n = 128
    tiles = cdiv(m, block_m) * cdiv(n, block_n) * g
    if tiles < sms // 2:
        max_split = min(k // QUANT_BLOCK, SPLIT_K_MAX)
        if tiles * max_split < sms:  # even split as far as it goes, 128-wide tiles leave SMs idle
            block_n = 32
            tiles = cdiv(m, block_m) * cdiv(n, block_n) * g
        split = 1
        while tiles * split * 2 <= SPLIT_PROGRAMS_PER_SM * sms and split * 2 <= max_split:
            split *= 2
        return ConsumerConfig(block_m, block_n, 4, 3, split, prefetch_scales=split > 1)
    if wgmma and m >= WGMMA_MIN_M:  # block_m is 64: the table's tiles
        return next(cfg for min_tiles, cfg in WGMMA_TABLE if tiles >= min_tiles * sms)
    if tiles >= TMA_MIN_TILES_PER_SM * sms:
        return ConsumerConfig(block_m, block_n, 4, 3, tma=True)
    return ConsumerConfig(block_m, block_n, 4, 3)


def validate_consumer_args(a, a_scale, b, b_scale, out, check_contract: bool) -> tuple[int, int, int, int]:
    """Check every argument of the consumer; raise ValueError/TypeError saying what was expected.

    Every backend reads ``a`` as dense ``[G, M, K]`` and ``a_scale`` as dense ``[G, K/128, pad4(M)]``
    from their first element. ``check_contract=True`` demands exactly those layouts; ``False`` (the
    raw consumer, as engines run it) trusts them, but still refuses buffers too small to hold what
    would be read. ``out`` is written: its elements must not share memory with each other or with
    the inputs.
    """
    check_tensor("a", a, dtypes=(FP8_DTYPE,), ndim=3)
    check_tensor("b", b, dtypes=(FP8_DTYPE,), ndim=3)
    check_tensor("a_scale", a_scale, dtypes=(torch.float32,), ndim=3)
    check_tensor("b_scale", b_scale, dtypes=(torch.float32,), ndim=3)
    check_bool("check_contract", check_contract)
    check_same_device(a=a, a_scale=a_scale, b=b, b_scale=b_scale)
    g, m, k = a.shape
    if k == 0 or k % QUANT_BLOCK:
        raise ValueError(f"a: expected K a positive multiple of {QUANT_BLOCK}, got shape {tuple(a.shape)}")
    if b.shape[0] != g or b.shape[2] != k:
        raise ValueError(f"b: expected [{g}, N, {k}] (same groups and K as a), got {tuple(b.shape)}")
    n = b.shape[1]
    if n == 0 or n % WEIGHT_BLOCK:
        raise ValueError(f"b: expected N a positive multiple of {WEIGHT_BLOCK}, got shape {tuple(b.shape)}")
    check_shape("b_scale", b_scale, (g, n // WEIGHT_BLOCK, k // WEIGHT_BLOCK))
    if a.stride(2) != 1 or b.stride(2) != 1 or b_scale.stride(2) != 1:
        raise ValueError(f"a, b, b_scale: expected a contiguous last dim, got strides {a.stride()}, {b.stride()}, {b_scale.stride()}")
    kb = k // QUANT_BLOCK
    if check_contract:
        # The producer contract: the consumer computes these itself, so anything else is silent corruption.
        check_shape("a_scale", a_scale, (g, kb, pad4(m)))
        check_contiguous("a_scale", a_scale)
        check_contiguous("a", a)
    else:
        if a_scale.shape[0] != g or a_scale.shape[1] != kb or a_scale.shape[2] < m:
            raise ValueError(f"a_scale: expected [{g}, {kb}, >= {m}], got {tuple(a_scale.shape)}")
        _check_raw_storage(a, a_scale, g, m, k)
    if out is not None:
        check_tensor("out", out, dtypes=(torch.bfloat16,), ndim=3)
        check_shape("out", out, (g, m, n))
        check_same_device(a=a, out=out)
        check_no_overlap("out", out)
        check_apart("out", out, a=a, a_scale=a_scale, b=b, b_scale=b_scale)
    return g, m, n, k


def _check_raw_storage(a, a_scale, g, m, k) -> None:
    """What the raw consumer (``check_contract=False``) reads from ``a`` and ``a_scale``'s first elements
    lies inside their storage (depends on the storage, not the layout: checked on every call)."""
    kb = k // QUANT_BLOCK
    check_storage_holds("a", a, g * m * k, f"dense [{g}, {m}, {k}]")
    if g * kb and m:
        check_storage_holds("a_scale", a_scale, (g * kb - 1) * pad4(m) + m, f"[{g}, {kb}, pad4(M)={pad4(m)}] rows")


@dataclasses.dataclass(frozen=True, eq=False, slots=True)
class _TritonLaunch:
    """The Triton consumer's launches for one problem and configuration: the bmm kernel into ``out``, or,
    with K split, into fp32 partials ``[split, G, M, N]`` that a second kernel adds in split order."""

    split: int
    k_blocks_per_split: int
    grid: tuple[int, int, int]
    bmm: host.Launcher
    #: (rows of a's descriptor G*M, rows of b's G*N, BLOCK_M, BLOCK_N) for the TMA kernel; None: pointers
    tma: tuple[int, int, int, int] | None
    partial_shape: tuple[int, int, int, int] | None
    #: elements of the partials (a flat workspace at least this long: the kernels compute its strides)
    partial_numel: int
    sum_grid: tuple[int, int] | None
    sums: host.Launcher | None
    #: the bmm kernel is the Gluon wgmma kernel (its descriptors are Gluon's)
    wgmma: bool = False
    #: the sum is launched as the products' programmatic dependent (``_triton_launch``'s ``pdl``)
    pdl: bool = False
    #: the TMA descriptors by ``b``'s row stride, built once over the first call's tensors and kept
    #: without them (``base`` None): each call rebases them (:func:`accval.kernels.host.rebased`)
    templates: dict = dataclasses.field(default_factory=dict)

    def ints(self, m, n, k, b, b_scale, out_stride) -> tuple[tuple, tuple]:
        """The integer arguments of the two kernels, in their order (after their pointers)."""
        head = (m, n, k, self.k_blocks_per_split, b.stride(0), b.stride(1), b_scale.stride(0), b_scale.stride(1))
        if self.sums is None:
            return head + (0, *out_stride), ()
        _, g, _, _ = self.partial_shape
        part_stride = (g * m * n, m * n, n, 1)  # torch.empty's contiguous strides
        return head + part_stride, (m * n, n, part_stride[0], *out_stride)

    def descriptors(self, a, b, k: int) -> tuple:
        """The TMA kernel's descriptors over this call's ``a`` (as ``[G*M, K]``) and ``b`` (``[G*N, K]``),
        16-byte aligned (:func:`_tma_aligned`): the templates for ``b``'s row stride rebased."""
        templates = self.templates.get(b.stride(1))
        if templates is None:
            a_rows, b_rows, block_m, block_n = self.tma
            if self.wgmma:
                built = fp8_block_bmm_wgmma.descriptors(a, b, a_rows, b_rows, k, block_m, block_n)
            else:
                built = (TensorDescriptor(a, [a_rows, k], [k, 1], [block_m, QUANT_BLOCK]),
                         TensorDescriptor(b, [b_rows, k], [b.stride(1), 1], [block_n, QUANT_BLOCK]))
            templates = self.templates.setdefault(b.stride(1), tuple(host.rebased(d, None) for d in built))
        return host.rebased(templates[0], a), host.rebased(templates[1], b)

    def __call__(self, a, a_scale, b, b_scale, out, ints, layout=None, reuse_partials=False) -> None:
        """Launch; ``layout`` as :class:`accval.kernels.host.Launcher` takes it (a plan, for both launchers).
        ``reuse_partials``: split-K partials from :data:`_PARTIALS` (an eager call's) rather than a new
        allocation."""
        bmm_ints, sum_ints = ints
        if self.tma is not None:
            a, b = self.descriptors(a, b, bmm_ints[2])
        if self.sums is None:
            self.bmm(self.grid, (a, a_scale, b, b_scale, out), bmm_ints, layout)
            return
        if reuse_partials:
            part = _PARTIALS(a_scale.device, self.partial_numel, torch.float32)
        else:
            part = torch.empty(self.partial_numel, dtype=torch.float32, device=a_scale.device)
        self.bmm(self.grid, (a, a_scale, b, b_scale, part), bmm_ints, layout)
        self.sums(self.sum_grid, (part, out), sum_ints, layout)


#: the split-K partials of eager calls of the public function, one flat fp32 buffer per (device, stream,
#: thread). The custom op allocates its own: under torch.compile's CUDA graphs (cudagraph trees) its
#: warm-up runs allocate from the graph's private pool without a capture to see, and memory kept past
#: the call there could be handed to the graph's other tensors.
_PARTIALS = host.Workspaces()

#: elements per program of the split-K sum (``CONSUMER_TUNING``)
SUM_BLOCK = 256


@functools.lru_cache(maxsize=4096)
def _triton_launch(cfg: ConsumerConfig, g: int, m: int, n: int, k: int, scale_m_align: int, software: bool,
                   sms: int, pdl: bool = False) -> _TritonLaunch:
    """The launches of one problem on a device of ``sms`` SMs (built once): K split into whole 128-blocks, no
    split empty; the Gluon kernel's grid one program per tile, or ``cfg.persistent`` per SM. ``pdl``
    (:func:`_pdl_ok`): with K split, the sum is the products' programmatic dependent launch."""
    k_blocks = k // QUANT_BLOCK
    split = min(cfg.split_k, k_blocks)
    per_split = cdiv(k_blocks, split)
    split = cdiv(k_blocks, per_split)  # no empty split
    grid = (cdiv(n, cfg.block_n), cdiv(m, cfg.block_m), g * split)
    tma_rows = (g * m, g * n, cfg.block_m, cfg.block_n)  # a TMA launch's descriptors: [G*M, K] and [G*N, K]
    pdl = pdl and split > 1 and not cfg.wgmma
    meta = dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, SPLIT_K=split, SCALE_M_ALIGN=scale_m_align, SOFTWARE=software,
                PREFETCH_SCALES=cfg.prefetch_scales, PDL=pdl, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                **_platform.gpu_launch_options())
    if cfg.wgmma:
        wg_meta = dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, STAGES=cfg.num_stages, SCALE_M_ALIGN=scale_m_align,
                       UNROLL=fp8_block_bmm_wgmma.UNROLL, PIN_FMA=fp8_block_bmm_wgmma.PIN_FMA,
                       DEFER_LAST=fp8_block_bmm_wgmma.DEFER_LAST, PERSISTENT=cfg.persistent > 0, LOADER=cfg.loader_warp,
                       LOADER_REGS=fp8_block_bmm_wgmma.LOADER_REGS, SPLIT_K=split, num_warps=cfg.num_warps,
                       **_platform.gpu_launch_options())
        if cfg.loader_warp:  # the loader's warpgroup counts at launch
            wg_meta["maxnreg"] = fp8_block_bmm_wgmma.loader_maxnreg(cfg.block_m, cfg.num_warps)
        bmm = host.Launcher(fp8_block_bmm_wgmma.fp8_block_bmm_wgmma_kernel, wg_meta, descriptors=True)
        wg_grid = (min(grid[0] * grid[1] * grid[2], cfg.persistent * sms),) if cfg.persistent else grid
        tma = tma_rows
        if split == 1:
            return _TritonLaunch(1, k_blocks, wg_grid, bmm, tma, None, 0, None, None, True)
    elif cfg.tma:
        bmm, tma = host.Launcher(_fp8_block_bmm_tma_kernel, meta, descriptors=True), tma_rows
    else:
        bmm, tma = host.Launcher(_fp8_block_bmm_kernel, dict(meta, DEFER_SCALE=cfg.defer_scale)), None
    if split == 1:
        return _TritonLaunch(split, per_split, grid, bmm, tma, None, 0, None, None)
    sums = host.Launcher(_sum_splits_kernel, dict(SPLIT_K=split, BLOCK=SUM_BLOCK, SOFTWARE=software, PDL=pdl,
                                                  **({"launch_pdl": True} if pdl else {}),
                                                  **_platform.gpu_launch_options()))
    return _TritonLaunch(split, per_split, grid, bmm, tma, (split, g, m, n), split * g * m * n, (cdiv(m * n, SUM_BLOCK), g),
                         sums, cfg.wgmma, pdl=pdl)


def _tma_layout_ok(a: torch.Tensor, b: torch.Tensor, n: int) -> bool:
    """Whether the TMA kernel can read a call of this layout (what a plan may decide once): something to
    read, ``b`` covered by one 2-d descriptor ``[G*N, K]`` (group stride N rows, rows apart, not one
    broadcast row, at a multiple of 16 bytes; ``a`` is dense by the contract), and a GPU with TMA (sm90+)
    or the interpreter. Where the buffers are (:func:`_tma_aligned`) is checked on every call."""
    g, _, k = b.shape
    return (TensorDescriptor is not None and a.numel() > 0 and g * n > 0 and b.stride(1) >= k
            and b.stride(1) % 16 == 0 and (g == 1 or b.stride(0) == n * b.stride(1))
            and (a.device.type != "cuda" or _cuda_has_tma(a.device.index)))


def _tma_aligned(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Both buffers 16-byte aligned, as a descriptor's base must be (data, not layout: every call)."""
    return a.data_ptr() % 16 == 0 and b.data_ptr() % 16 == 0


@functools.lru_cache(maxsize=None)
def _cuda_has_tma(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9


def _with_loads(cfg: ConsumerConfig, a, b, n: int) -> ConsumerConfig:
    """``cfg``, or what runs instead (:func:`_triton_for`): pointer loads when it asks for TMA and this
    call's buffers cannot take it, the Triton TMA kernel when it asks for wgmma where that cannot run, the
    Gluon kernel loading its own tiles when it asks for a loader warp of a Triton whose Gluon cannot
    specialize warps that way (:data:`accval.kernels.fp8_block_bmm_wgmma.LOADER_AVAILABLE`)."""
    if cfg.tma and not (_tma_layout_ok(a, b, n) and _tma_aligned(a, b)):
        return _triton_for(cfg, False)
    if cfg.wgmma and not _wgmma_ok(a.device):
        return _triton_for(cfg, True)
    if cfg.loader_warp and not fp8_block_bmm_wgmma.LOADER_AVAILABLE:
        return dataclasses.replace(cfg, loader_warp=False)
    return cfg


def _run_triton(a, a_scale, b, b_scale, out, g, m, n, k, scale_m_align=SCALE_M_ALIGN, config: ConsumerConfig | None = None):
    mode = _platform.execution_mode(a.device)
    cfg = _with_loads(config or _device_config(m, n, k, g, a.device), a, b, n)
    launch = _triton_launch(cfg, g, m, n, k, scale_m_align, _platform.interpreting(), _sm_count(a.device), _pdl_ok(a.device))
    if m > 0:
        launch(a, a_scale, b, b_scale, out, launch.ints(m, n, k, b, b_scale, out.stride()))
    provenance.emit(_consumer_run(mode, cfg, launch.split, launch.pdl))


@functools.lru_cache(maxsize=1024)
def _consumer_run(mode: str, cfg: ConsumerConfig, split: int, pdl: bool = False) -> provenance.Run:
    """The provenance record of one Triton consumer launch (built once per configuration); ``pdl``: the
    split-K sum was launched as the products' programmatic dependent."""
    return provenance.Run("consumer", "triton", mode, tuple(sorted(dict(
        block_m=cfg.block_m, block_n=cfg.block_n, split_k=split, num_warps=cfg.num_warps,
        num_stages=cfg.num_stages, defer_scale=cfg.defer_scale, loads="tma" if cfg.tma else "pointer",
        prefetch_scales=cfg.prefetch_scales, kernel="gluon-wgmma" if cfg.wgmma else "triton",
        persistent=cfg.persistent, loader_warp=cfg.loader_warp, pdl_sum=pdl).items())))


def launch_consumer(a, a_scale, b, b_scale, out, config: ConsumerConfig):
    """The Triton consumer with an explicit launch (benchmark sweeps and tests); ``out`` [G, M, N] bf16.

    Validates like :func:`fp8_block_bmm` (contract checked) and records provenance."""
    if not isinstance(config, ConsumerConfig):
        raise TypeError(f"config: expected a ConsumerConfig, got {type(config).__name__}")
    if out is None:
        raise ValueError("out: expected a [G, M, N] bf16 tensor, got None")
    g, m, n, k = validate_consumer_args(a, a_scale, b, b_scale, out, True)
    _run_triton(a, a_scale, b, b_scale, out, g, m, n, k, config=config)
    return out


def consumer_launches(a, a_scale, b, b_scale, out, config: ConsumerConfig | None = None) -> list[tuple]:
    """``(launcher, grid, tensors, ints)`` of each Triton kernel :func:`launch_consumer` would launch into
    ``out`` (the split-K partials and any TMA descriptors built here, once, for these buffers), in order; ``launcher(grid, tensors, ints)``
    launches one (``scripts/host_path.py`` times the pieces). Validates like :func:`launch_consumer`."""
    g, m, n, k = validate_consumer_args(a, a_scale, b, b_scale, out, True)
    cfg = _with_loads(config or _device_config(m, n, k, g, a.device), a, b, n)
    launch = _triton_launch(cfg, g, m, n, k, SCALE_M_ALIGN, _platform.interpreting(), _sm_count(a.device), _pdl_ok(a.device))
    if m == 0:
        return []
    bmm_ints, sum_ints = launch.ints(m, n, k, b, b_scale, out.stride())
    if launch.tma is not None:  # descriptors over these buffers (a call rebases its own)
        a, b = launch.descriptors(a, b, k)
    if launch.sums is None:
        return [(launch.bmm, launch.grid, (a, a_scale, b, b_scale, out), bmm_ints)]
    part = torch.empty(launch.partial_shape, dtype=torch.float32, device=a_scale.device)
    return [(launch.bmm, launch.grid, (a, a_scale, b, b_scale, part), bmm_ints),
            (launch.sums, launch.sum_grid, (part, out), sum_ints)]


def _run_torch(a, a_scale, b, b_scale, out, g, m, n, k):
    if a.device.type != "cuda":
        raise ValueError(
            f"backend='torch': expected CUDA tensors (torch._scaled_mm blockwise FP8 is GPU only), got tensors on {a.device}"
        )
    if m == 0:  # nothing to multiply; _scaled_mm rejects an empty scale_a
        provenance.record("consumer", "torch", "torch-cuda", per_group_calls=0, padded_rows=0, padded_k=0)
        return
    # _scaled_mm's 1x128 x 128x128 recipe wants scale_a [M, K/128] outer-dim-major with stride(1) == M
    # exactly, and reads a [1, K/128] scale_a as the 128x128 recipe. When M % 4 != 0 (or M == 1) the
    # rows are padded to pad4(M) (at least 4) with zeros, matching the scale buffer's zero rows.
    mp = max(pad4(m), 4) if m % 4 or m == 1 else m
    # cuBLASLt reads 128x128 block scales with a leading dimension of whole groups of 4 K-blocks; torch
    # 2.11 lets a [N/128, K/128] scale with K/128 % 4 != 0 through and the product reads past it (wrong
    # columns at K=128/N=256 on an H200, or CUBLAS_STATUS_NOT_SUPPORTED). K is padded to a multiple of
    # 512 with zero codes (and unit scales) on both sides, which adds exactly nothing to the sums.
    kb, sm = k // QUANT_BLOCK, pad4(m)
    kbp = cdiv(kb, 4) * 4
    kp = kbp * QUANT_BLOCK
    # what the Triton kernel dereferences, whatever the tensors' strides: dense [G, M, K] and
    # [G, K/128, pad4(M)] from the buffers' start (the raw consumer trusts the contract's layout)
    a = a.as_strided((g, m, k), (m * k, k, 1), a.storage_offset())
    a_scale = a_scale.as_strided((g, kb, sm), (kb * sm, sm, 1), a_scale.storage_offset())
    for i in range(g):
        a_i, b_i = a[i], b[i]
        if mp != m or kp != k:
            a_i = torch.zeros((mp, kp), dtype=a.dtype, device=a.device)
            a_i[:m, :k] = a[i]
        if kp != k:
            b_i = torch.zeros((n, kp), dtype=b.dtype, device=b.device)
            b_i[:, :k] = b[i]
        s_a = a_scale[i].t()
        if s_a.shape[0] != mp or kp != k:
            s_a = torch.ones((kbp, mp), dtype=torch.float32, device=a.device)
            s_a[:kb, :m] = a_scale[i][:, :m]
            s_a[:, m:] = 0
            s_a = s_a.t()
        s_b = b_scale[i]
        if kp != k:
            s_b = torch.ones((n // WEIGHT_BLOCK, kbp), dtype=torch.float32, device=b.device)
            s_b[:, :kb] = b_scale[i]
        res = torch._scaled_mm(a_i, b_i.t(), scale_a=s_a, scale_b=s_b.contiguous().t(), out_dtype=torch.bfloat16)
        out[i].copy_(res[:m])
    provenance.record("consumer", "torch", "torch-cuda", per_group_calls=g, padded_rows=mp - m, padded_k=kp - k)


@functools.lru_cache(maxsize=None)
def _fp8_values(device: torch.device) -> torch.Tensor:
    """The float64 value of each of the 256 float8_e4m3fn codes (torch's own conversion, NaNs included)."""
    return torch.arange(256, dtype=torch.uint8).view(FP8_DTYPE).double().to(device)


def _fp8_to_double(x: torch.Tensor) -> torch.Tensor:
    """``x.double()`` as a table lookup: the same values, faster than torch's element-wise cast of fp8."""
    return _fp8_values(x.device).index_select(0, x.reshape(-1).view(torch.uint8).int()).view(x.shape)


class _WeightValues:
    """The float64 values of FP8 weights, kept while the weight tensor lives and is unchanged.

    An engine's weights are constants, and converting them at every call is most of the emulated
    consumer's time at small M (the sentinel's decode steps: 8 ranks x 4 layers per token; at M=1, G=8, N=128, K=256 on a
    2-core EPYC a call takes 0.58 ms with the kept values, 1.32 ms converting the weight each time). An entry is found by the
    identity of the tensor that owns the storage (``b`` or the tensor ``b`` is a view of, held by
    a weak reference: a freed tensor's entry goes with it, so a new tensor at the same address never
    matches), the view's geometry and the owner's version counter (every in-place change bumps it).
    Tensors without a version counter (inference mode) and weights above :attr:`MAX_BYTES` are
    converted on every call.
    """

    MAX_BYTES = 256 << 20

    def __init__(self):
        self._entries: dict[int, tuple] = {}  # id(owner) -> (weakref(owner), {view key: (version, values)})

    def __call__(self, b: torch.Tensor) -> torch.Tensor:
        owner = b._base if b._base is not None else b
        try:
            version = owner._version
        except RuntimeError:  # an inference tensor has no version counter
            return _fp8_to_double(b)
        view = (b.storage_offset(), tuple(b.shape), b.stride(), b.device)
        entry = self._entries.get(id(owner))
        if entry is not None and entry[0]() is owner:
            got = entry[1].get(view)
            if got is not None and got[0] == version:
                return got[1]
        values = _fp8_to_double(b)
        if values.numel() * values.element_size() + self.nbytes() > self.MAX_BYTES:
            return values
        if entry is None or entry[0]() is not owner:
            key = id(owner)
            entry = self._entries[key] = (weakref.ref(owner, lambda _ref, key=key: self._drop(key, _ref)), {})
        entry[1][view] = (version, values)
        return values

    def _drop(self, key: int, ref) -> None:
        if key in self._entries and self._entries[key][0] is ref:
            del self._entries[key]

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for _, views in self._entries.values() for _, v in views.values())


_weight_values = _WeightValues()


def _run_emulated(a, a_scale, b, b_scale, out, g, m, n, k, scale_m_align=SCALE_M_ALIGN):
    kb = k // QUANT_BLOCK
    sm = cdiv(m, scale_m_align) * scale_m_align
    # What the kernel dereferences: dense [G, M, K] and [G, K/128, pad4(M)] from the buffers' start.
    # Reading past a too-small buffer raises here, where the kernel would fault.
    a_raw = a.as_strided((g, m, k), (m * k, k, 1), a.storage_offset())
    s_raw = a_scale.as_strided((g, kb, m), (kb * sm, sm, 1), a_scale.storage_offset())
    a64, b64 = _fp8_to_double(a_raw), _weight_values(b)
    b_s = b_scale.repeat_interleave(WEIGHT_BLOCK, dim=1)  # [G, N, K/128]: each output column's weight scales
    acc = torch.zeros((g, m, n), dtype=torch.float32, device=a.device)
    for i in range(kb):
        blk = slice(i * QUANT_BLOCK, (i + 1) * QUANT_BLOCK)
        dot = torch.bmm(a64[:, :, blk], b64[:, :, blk].transpose(1, 2)).float()
        acc = fma_fp32(dot, s_raw[:, i, :, None] * b_s[:, None, :, i], acc)
    out.copy_(acc.to(torch.bfloat16))
    provenance.record("consumer", "emulated", f"torch-{a.device.type}")


@dataclasses.dataclass(frozen=True, eq=False, slots=True)
class _ConsumerPlan:
    """A call whose layout passed :func:`validate_consumer_args`, and what its backend needs but the tensors;
    calling it allocates ``out`` when None, runs the backend and records it (``accval.kernels.host``)."""

    backend: str
    g: int
    m: int
    n: int
    k: int
    device: torch.device
    #: the raw consumer (check_contract=False): storage sizes are checked on every call
    raw: bool
    #: byte extents of (out, a, a_scale, b, b_scale) when ``out`` is given: kept apart on every call
    apart: tuple[int, ...] | None
    triton: _TritonLaunch | None
    triton_ints: tuple
    record: provenance.Run | None
    #: with a TMA launch: the pointer launch and its record, for a call whose buffers are not 16-byte aligned
    pointer: tuple[_TritonLaunch, provenance.Run] | None

    def check_memory(self, a, a_scale, b, b_scale, out) -> None:
        """The checks that read where the tensors are, not how they are laid out."""
        if self.raw:
            _check_raw_storage(a, a_scale, self.g, self.m, self.k)
        if self.apart is not None:
            e_out, e_a, e_as, e_b, e_bs = self.apart
            check_apart_at("out", out, e_out, [("a", a, e_a), ("a_scale", a_scale, e_as), ("b", b, e_b),
                                               ("b_scale", b_scale, e_bs)])

    def __call__(self, a, a_scale, b, b_scale, out, reuse_partials=False):
        if out is None:
            out = torch.empty((self.g, self.m, self.n), dtype=torch.bfloat16, device=self.device)
        if self.triton is not None:
            launch, record = self.triton, self.record
            if self.pointer is not None and not _tma_aligned(a, b):
                launch, record = self.pointer
            if self.m:
                launch(a, a_scale, b, b_scale, out, self.triton_ints, self, reuse_partials)
            provenance.emit(record)
        elif self.backend == "torch":
            _run_torch(a, a_scale, b, b_scale, out, self.g, self.m, self.n, self.k)
        else:
            _run_emulated(a, a_scale, b, b_scale, out, self.g, self.m, self.n, self.k)
        return out


def _build_plan(a, a_scale, b, b_scale, out, backend, check_contract, g, m, n, k) -> _ConsumerPlan:
    """The plan of a call :func:`validate_consumer_args` has accepted (raises where Triton cannot run)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    apart = None
    if out is not None and out.numel() and out.device.type != "meta":
        apart = tuple(byte_extent(t) for t in (out, a, a_scale, b, b_scale))
    launch, ints, record, pointer = None, (), None, None
    if backend == "triton":
        mode = _platform.execution_mode(a.device)
        cfg = _device_config(m, n, k, g, a.device)
        if cfg.tma and not _tma_layout_ok(a, b, n):
            cfg = _triton_for(cfg, False)
        sms = _sm_count(a.device)
        pdl = _pdl_ok(a.device)
        launch = _triton_launch(cfg, g, m, n, k, SCALE_M_ALIGN, _platform.interpreting(), sms, pdl)
        # a new out has torch.empty's contiguous strides
        ints = launch.ints(m, n, k, b, b_scale, out.stride() if out is not None else (m * n, n, 1))
        record = _consumer_run(mode, cfg, launch.split, launch.pdl)
        if cfg.tma:  # alignment is where the buffers are: the call picks
            plain = _triton_for(cfg, False)
            plain_launch = _triton_launch(plain, g, m, n, k, SCALE_M_ALIGN, _platform.interpreting(), sms, pdl)
            pointer = (plain_launch, _consumer_run(mode, plain, plain_launch.split, plain_launch.pdl))
    return _ConsumerPlan(backend, g, m, n, k, a.device, not check_contract and a.device.type != "meta", apart,
                         launch, ints, record, pointer)


_PLANS = host.PlanCache()


def _plan(a, a_scale, b, b_scale, out, backend, check_contract) -> _ConsumerPlan | None:
    """The plan of a call on plain tensors, its per-call memory checks done; None for anything else (the
    caller validates it in full). The key is everything :func:`validate_consumer_args` reads about the
    layout; where the tensors are (storage sizes, ``out`` against the inputs) is checked every call."""
    tensors = host.layout_key(a, a_scale, b, b_scale, *(() if out is None else (out,)))
    if tensors is None or type(backend) is not str or type(check_contract) is not bool:
        return None
    key = (backend, check_contract, out is None, tensors)
    plan = _PLANS.get(key)
    if plan is None:
        g, m, n, k = validate_consumer_args(a, a_scale, b, b_scale, out, check_contract)
        return _PLANS.put(key, _build_plan(a, a_scale, b, b_scale, out, backend, check_contract, g, m, n, k))
    plan.check_memory(a, a_scale, b, b_scale, out)
    return plan


def _consumer_impl(a, a_scale, b, b_scale, out, backend, check_contract):
    plan = _plan(a, a_scale, b, b_scale, out, backend, check_contract)
    if plan is None:
        g, m, n, k = validate_consumer_args(a, a_scale, b, b_scale, out, check_contract)
        plan = _build_plan(a, a_scale, b, b_scale, out, backend, check_contract, g, m, n, k)
    return plan(a, a_scale, b, b_scale, out)


@torch.library.custom_op("accval::fp8_block_bmm", mutates_args=())
def fp8_block_bmm_op(a: torch.Tensor, a_scale: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor,
                     backend: str, check_contract: bool) -> torch.Tensor:
    return _consumer_impl(a, a_scale, b, b_scale, None, backend, check_contract)


@fp8_block_bmm_op.register_fake
def _(a, a_scale, b, b_scale, backend, check_contract):
    return a.new_empty((a.shape[0], a.shape[1], b.shape[1]), dtype=torch.bfloat16)


@torch.library.custom_op("accval::fp8_block_bmm_out", mutates_args=("out",))
def fp8_block_bmm_out_op(a: torch.Tensor, a_scale: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor,
                         out: torch.Tensor, backend: str, check_contract: bool) -> None:
    _consumer_impl(a, a_scale, b, b_scale, out, backend, check_contract)


@fp8_block_bmm_out_op.register_fake
def _(a, a_scale, b, b_scale, out, backend, check_contract):
    return None


def fp8_block_bmm(a, a_scale, b, b_scale, out=None, *, backend="triton", check_contract=True):
    """FP8 block-scaled batched matmul, ``[G, M, N]`` bf16 (written into ``out`` when given).

    ``out`` may be any strided ``[G, M, N]`` bf16 view, e.g. ``o_lora.transpose(0, 1)`` of an
    ``[M, G, N]`` buffer. ``check_contract`` (default True) raises ValueError unless ``a_scale`` is
    exactly ``[G, K/128, pad4(M)]`` contiguous and ``a`` is contiguous; False gives the raw consumer,
    which trusts its own pad4(M) stride (to show what silent producer drift does).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if host.eager_call():  # first: under torch.compile the plan cache is not traced
        plan = _plan(a, a_scale, b, b_scale, out, backend, check_contract)
        if plan is not None:
            return plan(a, a_scale, b, b_scale, out, reuse_partials=True)
    validate_consumer_args(a, a_scale, b, b_scale, out, check_contract)
    if out is None:
        return torch.ops.accval.fp8_block_bmm(a, a_scale, b, b_scale, backend, check_contract)
    torch.ops.accval.fp8_block_bmm_out(a, a_scale, b, b_scale, out, backend, check_contract)
    return out
