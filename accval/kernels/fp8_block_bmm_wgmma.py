"""The consumer as a Gluon kernel for Hopper (sm90): explicit asynchronous wgmma, so the tensor cores
multiply block kb+1 while block kb's product is scaled into the accumulator.

Same programs and the same arithmetic in the same order as :func:`accval.kernels.fp8_block_bmm._fp8_block_bmm_tma_kernel`
(bit-identical output): each 128-block's product starts from nothing (the wgmma's ``use_acc=False``, as
Triton's ``tl.dot``), is scaled by ``a_s * b_s`` into an fp32 accumulator, block after block, with one
explicit fused multiply-add per element (``accval.kernels.fp8_block_bmm._scale_into``'s arithmetic).

Why Gluon: Triton 3.6 issues a block's wgmma and waits for it (``wait_group 0``) before scaling it, so
the tensor cores idle while each block is scaled; what that costs against ``torch._scaled_mm`` is in
``accval.kernels.fp8_block_bmm.CONSUMER_TUNING``. Here K is walked in chunks of :data:`UNROLL` blocks written
out in full: each block's wgmma is issued, then the wait leaves it in flight (``num_outstanding=1``)
while the previous block is scaled. A chunk ends with nothing in flight, so no product in flight is
carried around the loop (the loop's register copies would read it before it retired, and ptxas then
serializes the wgmmas); 4 blocks per chunk run out of registers (spills, ptxas' C7512 note), as
``scripts/kernel_ir.py --wgmma`` shows. Tiles come by TMA into a ring of ``STAGES`` buffers, each with
an mbarrier; a block's buffer is refilled once its wgmma has retired.

What it gives on an H200 is in ``accval.kernels.fp8_block_bmm.CONSUMER_TUNING``.

Only Triton builds with Gluon's Hopper API import this; :data:`AVAILABLE` says whether it did. Gluon
kernels do not run in Triton's CPU interpreter, so on a CPU the dispatch never picks this kernel.
"""

from __future__ import annotations

import functools

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    # a TMA load into shared memory: async_load from Triton 3.7 on (3.6 names it as below)
    _tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
except (ImportError, AttributeError):  # pragma: no cover - a Triton without Gluon's Hopper API (as used here)
    gluon = None

#: Gluon's Hopper API imported (a GPU with sm90 is also needed: ``accval.kernels.fp8_block_bmm``)
AVAILABLE = gluon is not None

#: blocks per unrolled chunk (see the module docstring for why not more)
UNROLL = 2


def descriptors(a, b, a_rows: int, b_rows: int, k: int, block_m: int, block_n: int) -> tuple:
    """Gluon TMA descriptors over ``a`` as ``[G*M, K]`` and ``b`` as ``[G*N, K]`` (row stride
    ``b.stride(1)``), 128-byte swizzled tiles of ``[block, 128]`` fp8 codes."""
    layout = _tile_layout()
    return (TensorDescriptor(a, [a_rows, k], [k, 1], [block_m, 128], layout),
            TensorDescriptor(b, [b_rows, k], [b.stride(1), 1], [block_n, 128], layout))


@functools.cache
def _tile_layout():
    """The shared-memory layout of every tile: built once (a few us of host time per build)."""
    return gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=8, rank=2)


if AVAILABLE:

    @gluon.jit
    def _load_block(a_desc, b_desc, a_smem, b_smem, ready, j, k_blocks, row_a, row_b, STAGES: gl.constexpr):
        """Start the TMA loads of k-block ``j`` (none past the last block) into buffer ``j % STAGES``."""
        s = j % STAGES
        ok = j < k_blocks
        mbarrier.expect(ready.index(s), a_desc.block_type.nbytes + b_desc.block_type.nbytes, pred=ok)
        _tma_load(a_desc, [row_a, j * 128], ready.index(s), a_smem.index(s), pred=ok)
        _tma_load(b_desc, [row_b, j * 128], ready.index(s), b_smem.index(s), pred=ok)

    @gluon.jit
    def _chunk(a_desc, b_desc, a_smem, b_smem, ready, as_ptrs, bs_ptr_g, m_ok, scale_m_stride, acc, spare, kb0,
               k_blocks, row_a, row_b, BLOCKS: gl.constexpr, STAGES: gl.constexpr):
        """Blocks ``kb0 .. kb0+BLOCKS-1`` into ``acc``: each block's product is issued, the previous one
        (retired by the wait that leaves one in flight) is scaled in and its buffer refilled; the
        chunk ends with every product retired. ``spare``: registers a product may be written over."""
        # registers a product may be written over: ``spare``, then from the third step of a chunk on the
        # product scaled in two steps before (with 2 blocks per chunk both products take ``spare``)
        done = spare
        for u in gl.static_range(BLOCKS):
            kb = kb0 + u
            st = kb % STAGES
            a_s = gl.load(as_ptrs + kb * scale_m_stride, mask=m_ok, other=0.0)
            b_s = gl.load(bs_ptr_g + kb)
            mbarrier.wait(ready.index(st), (kb // STAGES) & 1)
            cur = warpgroup_mma(a_smem.index(st), b_smem.index(st).permute((1, 0)), done, use_acc=False,
                                is_async=True)
            if u > 0:
                # prev, prev_as, prev_bs: the previous step's (u >= 1)
                prev, cur = warpgroup_mma_wait(num_outstanding=1, deps=[prev, cur])  # noqa: F821
                # block kb-1 retired: its buffer is refilled. With 8 warps (two warpgroups) one thread
                # issues the load; the compiler's barrier after this wait (Triton's shared-memory
                # barrier analysis) keeps it behind both warpgroups' reads of that buffer
                _load_block(a_desc, b_desc, a_smem, b_smem, ready, kb - 1 + STAGES, k_blocks, row_a, row_b, STAGES)
                acc = gl.fma(prev, (prev_as * prev_bs)[:, None], acc)  # noqa: F821
                done = prev
            prev = cur
            prev_as = a_s
            prev_bs = b_s
        prev = warpgroup_mma_wait(num_outstanding=0, deps=[prev])
        _load_block(a_desc, b_desc, a_smem, b_smem, ready, kb0 + BLOCKS - 1 + STAGES, k_blocks, row_a, row_b, STAGES)
        acc = gl.fma(prev, (prev_as * prev_bs)[:, None], acc)
        return acc

    @gluon.jit
    def fp8_block_bmm_wgmma_kernel(
        a_desc, as_ptr, b_desc, bs_ptr, out_ptr, M, N, K, k_blocks_per_split,
        stride_b_g, stride_b_n, stride_bs_g, stride_bs_n,
        stride_out_s, stride_out_g, stride_out_m, stride_out_n,
        BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, SCALE_M_ALIGN: gl.constexpr,
        UNROLL: gl.constexpr,
    ):
        """Program (n tile, m tile, group), as the Triton TMA kernel's unsplit grid; the integer arguments
        are that kernel's (``k_blocks_per_split``, ``stride_b_*`` and ``stride_out_s`` unused: no split,
        and the descriptors hold ``b``'s strides). A tile of ``a`` past the group's last row reads the
        next group's rows or zeros; those rows' scales load as 0 and their outputs are not stored."""
        pid_n = gl.program_id(0)
        pid_m = gl.program_id(1)
        g = gl.program_id(2)
        k_blocks = K // 128
        row_a = g * M + pid_m * BLOCK_M
        row_b = g * N + pid_n * BLOCK_N
        mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[gl.num_warps(), 1],
                                                      instr_shape=[16, BLOCK_N, 32])
        a_smem = gl.allocate_shared_memory(a_desc.dtype, [STAGES, BLOCK_M, 128], a_desc.layout)
        b_smem = gl.allocate_shared_memory(b_desc.dtype, [STAGES, BLOCK_N, 128], b_desc.layout)
        ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(STAGES):
            mbarrier.init(ready.index(i), count=1)
        fence_async_shared()
        for j in gl.static_range(STAGES):
            _load_block(a_desc, b_desc, a_smem, b_smem, ready, j, k_blocks, row_a, row_b, STAGES)

        scale_m_stride = (M + SCALE_M_ALIGN - 1) // SCALE_M_ALIGN * SCALE_M_ALIGN
        offs_m = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, mma))
        m_ok = offs_m < M
        g64 = g.to(gl.int64)
        as_ptrs = as_ptr + g64 * k_blocks * scale_m_stride + offs_m
        bs_ptr_g = bs_ptr + g64 * stride_bs_g + ((pid_n * BLOCK_N) // 128) * stride_bs_n
        spare = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, mma)
        acc = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, mma)
        for c in range(0, k_blocks // UNROLL):
            acc = _chunk(a_desc, b_desc, a_smem, b_smem, ready, as_ptrs, bs_ptr_g, m_ok, scale_m_stride, acc, spare,
                         c * UNROLL, k_blocks, row_a, row_b, UNROLL, STAGES)
        for kb in range(k_blocks // UNROLL * UNROLL, k_blocks):
            acc = _chunk(a_desc, b_desc, a_smem, b_smem, ready, as_ptrs, bs_ptr_g, m_ok, scale_m_stride, acc, spare,
                         kb, k_blocks, row_a, row_b, 1, STAGES)
        for i in gl.static_range(STAGES):
            mbarrier.invalidate(ready.index(i))

        # stored through a row-major layout: 16-byte stores along n
        out_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [gl.num_warps(), 1], [1, 0])
        res = gl.convert_layout(acc.to(out_ptr.dtype.element_ty), out_layout)
        om = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, out_layout))
        on = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, out_layout))
        ptrs = out_ptr + g64 * stride_out_g + om.to(gl.int64)[:, None] * stride_out_m + on[None, :] * stride_out_n
        gl.store(ptrs, res, mask=(om < M)[:, None] & (on < N)[None, :])
