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
    "docs/tuning.md, \"Consumer\" (NVIDIA H200, torch 2.11, triton 3.6; every launch compared gave the same bits). "
    "BLOCK_M 64, BLOCK_N 128, 4 warps, 3 stages: dep8 M=8192 1629 vs 1659 us at BLOCK_M 128 and 8 warps "
    "(reports/bench/sweep-NVIDIA_H200-2026-11-28.json). Grids under half the SMs split K to about "
    "SPLIT_PROGRAMS_PER_SM programs per SM, BLOCK_N 32 where 128-wide tiles would leave SMs idle, scales a block ahead "
    "(reports/kernel/speed-probe-rounding-NVIDIA_H200-2026-12-03-s21call2.json, reports/kernel/speed-probe-splitfma-"
    "NVIDIA_H200-2026-12-03-s21call4.json; reports/kernel/speed-probe-prefetch-NVIDIA_H200-2026-12-02-s12call1.json: "
    "tep8 M=64 14.7 vs 15.3 us), with pointer loads (TMA's descriptors: as called 51.9 vs 36.1 us at dep8 M=64, "
    "s21call4), the sum a programmatic dependent (tep8 M=64 12.38 vs 13.22 us; reports/kernel/speed-probe-pdl-"
    "NVIDIA_H200-2026-12-04-s26call6.json). Unsplit Triton grids load with TMA from TMA_MIN_TILES_PER_SM tiles per SM "
    "(dep8 M=8192 1293 vs 1441 us; reports/kernel/speed-probe-NVIDIA_H200-2026-12-02-call1.json). The Gluon wgmma "
    "kernel takes the grids of at least half as many tiles as SMs from WGMMA_MIN_M, 128-row tiles with a loader warp "
    "from WGMMA_128_MIN_TILES_PER_SM (reports/kernel/speed-probe-pin-defer-NVIDIA_H200-2026-12-03-s23call3.json; "
    "reports/kernel/speed-probe-loader-NVIDIA_H200-2026-12-03-s25call1.json: dep8 M=8192 1039.8 vs 1107.1 us without "
    "the loader). Each block's product is scaled into the accumulator by one fma (dep8 M=8192 1167.1 vs 1283.6 us "
    "mul-add; reports/kernel/consumer-against-NVIDIA_H200-2026-12-03-s21call1/compare.md). What bounds the small-M "
    "target: reports/kernel/speed-probe-floors-fusedsum-NVIDIA_H200-2026-12-04-s26call1.json."
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
#: Not taken: the chain's consumer as the producer's programmatic dependent (commit 083ee8b), slower everywhere
#: measured (docs/tuning.md, "Measured and not shipped").


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
                     backend: str = "triton", check_contract: bool = True) -> torch.Tensor:
    return _consumer_impl(a, a_scale, b, b_scale, None, backend, check_contract)


@fp8_block_bmm_op.register_fake
def _(a, a_scale, b, b_scale, backend="triton", check_contract=True):
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
