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
while the previous block is scaled. The accumulator goes through each wait (:data:`PIN_FMA`): without
that, nothing ties a block's multiply-adds to a place between two waits, and the compiler sinks them all
to the chunk's end, after its last wait, where every product of the chunk is live at once (no overlap,
and from 3 blocks per chunk more registers than an SM thread has: spills, or ptxas' C7512 note that it
serializes the wgmmas). A chunk ends with nothing in flight, so no product in flight is carried around
the loop (the loop's register copies would read it before it retired, and ptxas then serializes the
wgmmas). Each chunk's last product is scaled in under the next chunk's first wgmma instead
(:data:`DEFER_LAST`, :func:`_chunk_deferred`): it crosses the loop retired, so the tensor cores idle at a
chunk's end only while the next wgmma is issued. ``scripts/kernel_ir.py --wgmma`` shows the waits, the multiply-adds between them, registers
and spills. Tiles come by TMA into a ring of ``STAGES`` buffers, each with an mbarrier; a block's buffer
is refilled once its wgmma has retired. A persistent launch (``PERSISTENT``) loops each program over
its tiles, the next tile's first blocks loading while a tile is stored; the table does not take it
(slower on an H200, ``CONSUMER_TUNING``). With a loader warp (``LOADER``, what the table's 128-row launch
takes) the loads come from a warp of their own (:func:`_loader`, ``gl.warp_specialize``): the compute warps
hand each buffer back through its ``empty`` mbarrier instead of refilling it, so the copies and their
barriers leave their k loop (half the thread-block barriers per iteration).

What it gives on an H200 is in ``accval.kernels.fp8_block_bmm.CONSUMER_TUNING``.

Only Triton builds with Gluon's Hopper API import this; :data:`AVAILABLE` says whether it did. Gluon
kernels do not run in Triton's CPU interpreter, so on a CPU the dispatch never picks this kernel.
"""

from __future__ import annotations

import functools
import inspect

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
#: this Triton's ``gl.warp_specialize`` takes ``[(function, args), ...]`` (Triton 3.6 on; earlier Gluon took
#: the default partition and the workers apart): a loader warp (``LOADER``) needs it
LOADER_AVAILABLE = AVAILABLE and "functions_and_args" in inspect.signature(gl.warp_specialize).parameters

#: blocks per unrolled chunk: 4 was the fastest of 2-16 with the scaling pinned (``CONSUMER_TUNING``); an
#: even count keeps the two products' registers in step around the loop (no copies)
UNROLL = 4
#: each block's scaling pinned between two wgmma waits (the accumulator passed through the next wait);
#: False only to measure the kernel without it (``scripts/speed_probe.py --parts pin``): same bits
PIN_FMA = True
#: each chunk's last product scaled in under the next chunk's first wgmma (:func:`_chunk_deferred`); False
#: only to measure the kernel without it (``scripts/speed_probe.py --parts pin``): same bits
DEFER_LAST = True

#: registers a thread of a warp-specialized launch's loader warp keeps (``setmaxnreg``'s least: it holds a few
#: scalars); the compute warps get the rest of what :func:`loader_maxnreg` gives the launch
LOADER_REGS = 24


def loader_maxnreg(block_m: int, num_warps: int) -> int:
    """The register cap per thread of a warp-specialized launch of ``num_warps`` compute warps, so that its
    programs fit an SM's 64K registers, two per SM for 64-row tiles (what their shared memory allows), one
    for 128-row tiles: registers are handed out by warpgroup, so the loader warp takes a warpgroup's (4
    warps) at launch; a multiple of 8, at most 255."""
    programs = 2 if block_m == 64 else 1
    return min(65536 // programs // ((num_warps + 4) * 32) // 8 * 8, 255)


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
    def _tile_rows(t, n_tiles, m_tiles, M, N, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr):
        """Tile ``t`` of the grid's order (n tile fastest, then m tile, then group): ``(pid_n, pid_m, g)`` and its
        first rows in ``a`` seen as ``[G*M, K]`` and in ``b`` seen as ``[G*N, K]``."""
        pid_n = t % n_tiles
        tm = t // n_tiles
        pid_m = tm % m_tiles
        g = tm // m_tiles
        return pid_n, pid_m, g, g * M + pid_m * BLOCK_M, g * N + pid_n * BLOCK_N

    @gluon.jit
    def _load_block(a_desc, b_desc, a_smem, b_smem, ready, j, k_blocks, tile, pred, STAGES: gl.constexpr):
        """Start the TMA loads of k-block ``j`` of the tile ``tile`` (``(row_a, row_b, k0)``: its first rows, and
        its first k-block, where K is split) into buffer ``j % STAGES``: none past its last block, none where
        ``pred`` is false. Every tile starts at buffer 0, so where a chunk has as many blocks as there are
        buffers, each block's buffer is known when the kernel is compiled."""
        row_a, row_b, k0 = tile
        s = j % STAGES
        ok = (j < k_blocks) & pred
        mbarrier.expect(ready.index(s), a_desc.block_type.nbytes + b_desc.block_type.nbytes, pred=ok)
        _tma_load(a_desc, [row_a, (k0 + j) * 128], ready.index(s), a_smem.index(s), pred=ok)
        _tma_load(b_desc, [row_b, (k0 + j) * 128], ready.index(s), b_smem.index(s), pred=ok)

    @gluon.jit
    def _refill(a_desc, b_desc, a_smem, b_smem, ready, empty, j, k_blocks, tile, STAGES: gl.constexpr,
                LOADER: gl.constexpr):
        """Block ``j - STAGES``'s buffer is free (its wgmma has retired in every warpgroup): load block ``j``
        into it, or, ``LOADER``, hand it to the loader warp (:func:`_loader`) through its ``empty`` barrier."""
        if LOADER:
            mbarrier.arrive(empty.index(j % STAGES), pred=j < k_blocks)
        else:
            _load_block(a_desc, b_desc, a_smem, b_smem, ready, j, k_blocks, tile, True, STAGES)

    @gluon.jit
    def _loader(a_desc, b_desc, a_smem, b_smem, ready, empty, row_a, row_b, k_blocks, STAGES: gl.constexpr):
        """The loader warp of a warp-specialized launch: every k-block of the tile whose first rows are
        ``(row_a, row_b)``, each into its buffer once the compute warps have freed it (:func:`_refill`;
        a fresh barrier passes the wait for the parity before its first phase, so the first ``STAGES``
        loads start at once)."""
        for j in range(k_blocks):
            mbarrier.wait(empty.index(j % STAGES), ((j // STAGES) & 1) ^ 1)
            _load_block(a_desc, b_desc, a_smem, b_smem, ready, j, k_blocks, (row_a, row_b, 0), True, STAGES)

    @gluon.jit
    def _issue_block(a_smem, b_smem, ready, as_ptrs, bs_ptr_g, m_ok, scale_m_stride, kb, done, STAGES: gl.constexpr):
        """Block ``kb``'s two scales loaded, and its wgmma issued once its buffer is full, into the registers of
        ``done`` (``use_acc=False``: the product starts from nothing); returns ``(product, a_s, b_s)``. Each
        buffer's barrier starts a tile at an even phase (:func:`_even_phases`)."""
        st = kb % STAGES
        a_s = gl.load(as_ptrs + kb * scale_m_stride, mask=m_ok, other=0.0)
        b_s = gl.load(bs_ptr_g + kb)
        mbarrier.wait(ready.index(st), (kb // STAGES) & 1)
        cur = warpgroup_mma(a_smem.index(st), b_smem.index(st).permute((1, 0)), done, use_acc=False, is_async=True)
        return cur, a_s, b_s

    @gluon.jit
    def _scale_in_previous(a_desc, b_desc, a_smem, b_smem, ready, empty, prev, cur, acc, prev_s, kb, k_blocks, tile,
                           STAGES: gl.constexpr, PIN_FMA: gl.constexpr, LOADER: gl.constexpr):
        """With block ``kb``'s wgmma (``cur``) just issued: wait until it is the only one in flight, so block
        ``kb-1``'s product ``prev`` has retired, refill that block's buffer and scale ``prev`` (its
        ``[BLOCK_M]`` scales ``prev_s``) into ``acc``; returns ``(prev, cur, acc)``. ``PIN_FMA``: ``acc``
        goes through the wait, so the multiply-adds of the block before (already in ``acc``) stay ahead of it."""
        if PIN_FMA:
            prev, cur, acc = warpgroup_mma_wait(num_outstanding=1, deps=[prev, cur, acc])
        else:
            prev, cur = warpgroup_mma_wait(num_outstanding=1, deps=[prev, cur])
        # With 8 warps (two warpgroups) one thread issues the refill (or the arrival that hands the buffer to
        # the loader); the compiler's barrier after this wait (Triton's shared-memory barrier analysis; the
        # partition's own with a loader) keeps it behind both warpgroups' reads of that buffer
        _refill(a_desc, b_desc, a_smem, b_smem, ready, empty, kb - 1 + STAGES, k_blocks, tile, STAGES, LOADER)
        acc = gl.fma(prev, prev_s[:, None], acc)
        return prev, cur, acc

    @gluon.jit
    def _chunk(a_desc, b_desc, a_smem, b_smem, ready, empty, as_ptrs, bs_ptr_g, m_ok, scale_m_stride, acc, spare, kb0,
               k_blocks, tile, BLOCKS: gl.constexpr, STAGES: gl.constexpr, PIN_FMA: gl.constexpr, LOADER: gl.constexpr):
        """Blocks ``kb0 .. kb0+BLOCKS-1`` into ``acc``: each block's product is issued, the previous one
        (retired by the wait that leaves one in flight) is scaled in and its buffer refilled; the
        chunk ends with every product retired. ``spare``: registers a product may be written over.
        ``PIN_FMA``: ``acc`` goes through each wait, so the previous block's multiply-adds run before
        the next wait, while the block issued last is in flight."""
        # registers a product may be written over: ``spare``, then from the third step of a chunk on the
        # product scaled in two steps before (with 2 blocks per chunk both products take ``spare``)
        done = spare
        for u in gl.static_range(BLOCKS):
            kb = kb0 + u
            cur, a_s, b_s = _issue_block(a_smem, b_smem, ready, as_ptrs, bs_ptr_g, m_ok, scale_m_stride, kb, done,
                                         STAGES)
            if u > 0:
                # prev, prev_as, prev_bs: the previous step's (u >= 1)
                prev, cur, acc = _scale_in_previous(a_desc, b_desc, a_smem, b_smem, ready, empty, prev, cur, acc,  # noqa: F821
                                                    prev_as * prev_bs, kb, k_blocks, tile, STAGES,  # noqa: F821
                                                    PIN_FMA, LOADER)
                done = prev
            prev = cur
            prev_as = a_s
            prev_bs = b_s
        if PIN_FMA:
            prev, acc = warpgroup_mma_wait(num_outstanding=0, deps=[prev, acc])
        else:
            prev = warpgroup_mma_wait(num_outstanding=0, deps=[prev])
        _refill(a_desc, b_desc, a_smem, b_smem, ready, empty, kb0 + BLOCKS - 1 + STAGES, k_blocks, tile, STAGES, LOADER)
        acc = gl.fma(prev, (prev_as * prev_bs)[:, None], acc)
        return acc

    @gluon.jit
    def _chunk_deferred(a_desc, b_desc, a_smem, b_smem, ready, empty, as_ptrs, bs_ptr_g, m_ok, scale_m_stride, acc, last,
                        last_s, spare, kb0, k_blocks, tile, BLOCKS: gl.constexpr, STAGES: gl.constexpr,
                        LOADER: gl.constexpr):
        """:func:`_chunk` (pinned) with the previous chunk's last product scaled in under this chunk's first
        wgmma: ``last`` (retired, with its ``[BLOCK_M]`` scales ``last_s``) goes in after block ``kb0`` is
        issued, and this chunk's last product is returned retired but not scaled in, with its scales and
        the registers the next chunk's first product may be written over:
        ``(acc, last, last_s, spare)``. The values carried around the loop are all retired."""
        done = spare
        for u in gl.static_range(BLOCKS):
            kb = kb0 + u
            cur, a_s, b_s = _issue_block(a_smem, b_smem, ready, as_ptrs, bs_ptr_g, m_ok, scale_m_stride, kb, done,
                                         STAGES)
            if u == 0:
                # retires nothing (the previous chunk ended with none in flight), but tells ptxas that
                # ``last`` is no wgmma's in-flight output: without it, it waits for this block's wgmma here
                cur, last, acc = warpgroup_mma_wait(num_outstanding=1, deps=[cur, last, acc])
                acc = gl.fma(last, last_s[:, None], acc)
                done = last
            else:
                prev, cur, acc = _scale_in_previous(a_desc, b_desc, a_smem, b_smem, ready, empty, prev, cur, acc,  # noqa: F821
                                                    prev_as * prev_bs, kb, k_blocks, tile, STAGES,  # noqa: F821
                                                    True, LOADER)
                done = prev
            prev = cur
            prev_as = a_s
            prev_bs = b_s
        prev, acc = warpgroup_mma_wait(num_outstanding=0, deps=[prev, acc])
        _refill(a_desc, b_desc, a_smem, b_smem, ready, empty, kb0 + BLOCKS - 1 + STAGES, k_blocks, tile, STAGES, LOADER)
        return acc, prev, prev_as * prev_bs, done

    @gluon.jit
    def _even_phases(ready, k_blocks, STAGES: gl.constexpr):
        """With a tile's loads all waited for: one arrival at each buffer's barrier that took an odd number of
        them (``k_blocks // STAGES`` each, one more for the first ``k_blocks % STAGES``), completing a phase
        no one waits for, so every barrier starts the next tile at an even phase, as :func:`_issue_block`
        expects (none at K = 8192: 16 loads per buffer)."""
        for st in gl.static_range(STAGES):
            loads = k_blocks // STAGES + (st < k_blocks % STAGES).to(gl.int32)
            mbarrier.arrive(ready.index(st), pred=(loads % 2) == 1)

    @gluon.jit
    def _one_tile(a_desc, b_desc, a_smem, b_smem, ready, empty, as_ptr, bs_ptr, out_ptr, M, N, k_blocks, k_total, pid_n,
                  pid_m, g, tile, sched, stride_bs_g, stride_bs_n, stride_out_g, stride_out_m, stride_out_n,
                  BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, SCALE_M_ALIGN: gl.constexpr,
                  UNROLL: gl.constexpr, PIN_FMA: gl.constexpr, DEFER_LAST: gl.constexpr, PERSISTENT: gl.constexpr,
                  LOADER: gl.constexpr):
        """Tile ``(pid_n, pid_m, g)`` (``tile``: first rows and first k-block), its first blocks already loading, into
        ``out``: its ``k_blocks`` blocks of the group's ``k_total`` (fewer where K is split).
        ``PERSISTENT``: ``sched`` is ``(t, programs, tiles, n_tiles, m_tiles)``, this tile's place in the grid's
        order and what finds the program's next tile; once this tile's products have all retired, the next
        tile's first blocks start loading, and load while this tile is stored. Its place and the next
        tile's are worked out from ``sched`` after the k loop, not held through it (registers)."""
        mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[gl.num_warps(), 1],
                                                      instr_shape=[16, BLOCK_N, 32])
        scale_m_stride = (M + SCALE_M_ALIGN - 1) // SCALE_M_ALIGN * SCALE_M_ALIGN
        offs_m = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, mma))
        m_ok = offs_m < M
        g64 = g.to(gl.int64)
        _, _, k0 = tile
        as_ptrs = as_ptr + (g64 * k_total + k0) * scale_m_stride + offs_m
        bs_ptr_g = bs_ptr + g64 * stride_bs_g + ((pid_n * BLOCK_N) // 128) * stride_bs_n + k0
        spare = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, mma)
        acc = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, mma)
        if DEFER_LAST:
            last = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, mma)  # scaled by 0 into +0: acc stays +0
            last_s = gl.zeros([BLOCK_M], gl.float32, gl.SliceLayout(1, mma))
            for c in range(0, k_blocks // UNROLL):
                acc, last, last_s, spare = _chunk_deferred(a_desc, b_desc, a_smem, b_smem, ready, empty, as_ptrs,
                                                           bs_ptr_g, m_ok, scale_m_stride, acc, last, last_s, spare,
                                                           c * UNROLL, k_blocks, tile, UNROLL, STAGES, LOADER)
            acc = gl.fma(last, last_s[:, None], acc)
        else:
            for c in range(0, k_blocks // UNROLL):
                acc = _chunk(a_desc, b_desc, a_smem, b_smem, ready, empty, as_ptrs, bs_ptr_g, m_ok, scale_m_stride, acc,
                             spare, c * UNROLL, k_blocks, tile, UNROLL, STAGES, PIN_FMA, LOADER)
        # the blocks past the last whole chunk, one at a time (none at K = 8192); a deferred chunk's product
        # is in by now, so nothing is carried here
        for kb in range(k_blocks // UNROLL * UNROLL, k_blocks):
            acc = _chunk(a_desc, b_desc, a_smem, b_smem, ready, empty, as_ptrs, bs_ptr_g, m_ok, scale_m_stride, acc,
                         spare, kb, k_blocks, tile, 1, STAGES, PIN_FMA, LOADER)
        if PERSISTENT:  # every product has retired, so every buffer is free
            t, n_prog, tiles, n_tiles, m_tiles = sched
            _even_phases(ready, k_blocks, STAGES)
            _, _, _, next_a, next_b = _tile_rows(t + n_prog, n_tiles, m_tiles, M, N, BLOCK_M, BLOCK_N)
            for j in gl.static_range(STAGES):
                _load_block(a_desc, b_desc, a_smem, b_smem, ready, j, k_blocks, (next_a, next_b, 0), t + n_prog < tiles,
                            STAGES)
            pid_n, pid_m, g, _, _ = _tile_rows(t, n_tiles, m_tiles, M, N, BLOCK_M, BLOCK_N)
            g64 = g.to(gl.int64)

        # stored through a row-major layout: 16-byte stores along n
        out_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [gl.num_warps(), 1], [1, 0])
        res = gl.convert_layout(acc.to(out_ptr.dtype.element_ty), out_layout)
        om = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, out_layout))
        on = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, out_layout))
        ptrs = out_ptr + g64 * stride_out_g + om.to(gl.int64)[:, None] * stride_out_m + on[None, :] * stride_out_n
        gl.store(ptrs, res, mask=(om < M)[:, None] & (on < N)[None, :])

    @gluon.jit
    def fp8_block_bmm_wgmma_kernel(
        a_desc, as_ptr, b_desc, bs_ptr, out_ptr, M, N, K, k_blocks_per_split,
        stride_b_g, stride_b_n, stride_bs_g, stride_bs_n,
        stride_out_s, stride_out_g, stride_out_m, stride_out_n,
        BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, SCALE_M_ALIGN: gl.constexpr,
        UNROLL: gl.constexpr, PIN_FMA: gl.constexpr, DEFER_LAST: gl.constexpr, PERSISTENT: gl.constexpr,
        LOADER: gl.constexpr, LOADER_REGS: gl.constexpr, SPLIT_K: gl.constexpr,
    ):
        """Tiles ``[BLOCK_M, BLOCK_N]`` of ``out[g]``: program (n tile, m tile, group), as the Triton TMA kernel's
        unsplit grid; or, ``PERSISTENT``, program ``p`` of ``P`` takes tiles ``p, p + P, ...`` in that grid's
        order (n tile fastest, then m tile, then group), its TMA buffers running on from one tile to the next
        (:func:`_one_tile`). The integer arguments are the Triton TMA kernel's, so one launcher drives both
        (``stride_b_*`` unused: the descriptors hold ``b``'s strides); the group count is ``a``'s descriptor's
        rows over ``M`` (``SPLIT_K`` 1: ``program_id(2)`` is the group). ``SPLIT_K`` > 1 (one program per tile,
        no loader warp): program ``(n tile, m tile, group x split)`` takes the split's ``k_blocks_per_split``
        blocks (fewer in the last) and writes its fp32 partial into ``out[split, g]`` (``stride_out_s``), as the
        Triton kernel's split grid does, in the same order. A tile of ``a`` past
        the group's last row reads the next group's rows or zeros; those rows' scales load as 0 and their
        outputs are not stored. ``LOADER`` (one program per tile): the TMA loads come from a warp of their own
        (:func:`_loader`, ``LOADER_REGS`` registers a thread), each buffer handed back to it through an
        ``empty`` mbarrier once every warpgroup's wgmma reading it has retired."""
        k_blocks = K // 128
        a_smem = gl.allocate_shared_memory(a_desc.dtype, [STAGES, BLOCK_M, 128], a_desc.layout)
        b_smem = gl.allocate_shared_memory(b_desc.dtype, [STAGES, BLOCK_N, 128], b_desc.layout)
        ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        if LOADER:  # the loader waits on a buffer's barrier before refilling it
            empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        else:
            empty = ready  # not read
        for i in gl.static_range(STAGES):
            mbarrier.init(ready.index(i), count=1)
            if LOADER:
                mbarrier.init(empty.index(i), count=1)
        fence_async_shared()
        if PERSISTENT:
            pid = gl.program_id(0)
            n_prog = gl.num_programs(0)
            n_tiles = (N + BLOCK_N - 1) // BLOCK_N
            m_tiles = (M + BLOCK_M - 1) // BLOCK_M
            tiles = n_tiles * m_tiles * (a_desc.shape[0] // M)
            _, _, _, row_a, row_b = _tile_rows(pid, n_tiles, m_tiles, M, N, BLOCK_M, BLOCK_N)
            for j in gl.static_range(STAGES):  # the first tile's first blocks (the grid has no more programs than tiles)
                _load_block(a_desc, b_desc, a_smem, b_smem, ready, j, k_blocks, (row_a, row_b, 0), True, STAGES)
            for t in range(pid, tiles, n_prog):
                pid_n, pid_m, g, row_a, row_b = _tile_rows(t, n_tiles, m_tiles, M, N, BLOCK_M, BLOCK_N)
                _one_tile(a_desc, b_desc, a_smem, b_smem, ready, empty, as_ptr, bs_ptr, out_ptr, M, N, k_blocks, k_blocks,
                          pid_n, pid_m, g, (row_a, row_b, 0), (t, n_prog, tiles, n_tiles, m_tiles), stride_bs_g, stride_bs_n,
                          stride_out_g, stride_out_m, stride_out_n, BLOCK_M, BLOCK_N, STAGES, SCALE_M_ALIGN, UNROLL,
                          PIN_FMA, DEFER_LAST, True, False)
        else:
            pid_n = gl.program_id(0)
            pid_m = gl.program_id(1)
            if SPLIT_K == 1:
                g = gl.program_id(2)
                k0 = 0
                k_here = k_blocks
                out_here = out_ptr
            else:  # program (n tile, m tile, group x split): the split's blocks into its fp32 partial
                g = gl.program_id(2) // SPLIT_K
                split = gl.program_id(2) % SPLIT_K
                k0 = split * k_blocks_per_split
                k_here = gl.minimum(k_blocks_per_split, k_blocks - k0)
                out_here = out_ptr + split.to(gl.int64) * stride_out_s
            row_a = g * M + pid_m * BLOCK_M
            row_b = g * N + pid_n * BLOCK_N
            if LOADER:
                gl.warp_specialize([
                    (_one_tile, (a_desc, b_desc, a_smem, b_smem, ready, empty, as_ptr, bs_ptr, out_ptr, M, N, k_blocks,
                                 k_blocks, pid_n, pid_m, g, (row_a, row_b, 0), None, stride_bs_g, stride_bs_n,
                                 stride_out_g, stride_out_m, stride_out_n, BLOCK_M, BLOCK_N, STAGES, SCALE_M_ALIGN,
                                 UNROLL, PIN_FMA, DEFER_LAST, False, True)),
                    (_loader, (a_desc, b_desc, a_smem, b_smem, ready, empty, row_a, row_b, k_blocks, STAGES)),
                ], [1], [LOADER_REGS])
            else:
                for j in gl.static_range(STAGES):
                    _load_block(a_desc, b_desc, a_smem, b_smem, ready, j, k_here, (row_a, row_b, k0), True, STAGES)
                _one_tile(a_desc, b_desc, a_smem, b_smem, ready, empty, as_ptr, bs_ptr, out_here, M, N, k_here, k_blocks,
                          pid_n, pid_m, g, (row_a, row_b, k0), None, stride_bs_g, stride_bs_n, stride_out_g, stride_out_m,
                          stride_out_n, BLOCK_M, BLOCK_N, STAGES, SCALE_M_ALIGN, UNROLL, PIN_FMA, DEFER_LAST, False,
                          False)
        for i in gl.static_range(STAGES):
            mbarrier.invalidate(ready.index(i))
            if LOADER:
                mbarrier.invalidate(empty.index(i))
