"""Issue 21 on a GPU, one process: what TMA loads give the consumer, what warps and cache hints give
the producer, and where the host time of a call goes. Prints tables; ``--out FILE`` writes the rows.

    python scripts/speed_probe.py [--parts prefetch,consumer,smallm,ceiling,producer,division,regs,layouts,host,fusedsum,wgmma,table,unroll,pin,chunks,persistent,loader,deep,sums,wave,rounding,splitfma,m64,floors,fusedgrid,pdl,gluonsplit]
        [--baseline FILE [--baseline-rounding FILE]] [--out FILE.json]

prefetch  the consumer's launches with each block's scales loaded a block ahead (``prefetch_scales``)
          and without, pointer and TMA loads, next to ``torch._scaled_mm`` blockwise and the shipped
          dispatch; every output compared bit for bit with the plain pointer launch of its configuration
consumer  every launch in ``CONSUMER_LAUNCHES`` with pointer and with TMA loads, next to
          ``torch._scaled_mm`` blockwise and the shipped dispatch, DeepSeek-V4-Pro shapes; a TMA
          launch's output is compared bit for bit with the pointer launch of the same configuration
producer  launches at small M (warps per head) and cache-hint variants of the kernel file at large M,
          each against the upstream-style kernel and a same-bytes copy; outputs compared with the
          shipped launch's bit for bit
smallm    the consumer at M <= 256 with narrower tiles (BLOCK_N 16/32/64) and K split 4-16, scales
          prefetched, pointer and TMA loads, each compared bit for bit with the pointer launch of the
          same split without prefetch, next to ``torch._scaled_mm`` and the shipped dispatch
ceiling   the TMA launch without its per-block scaling, the dot accumulating in place (wrong output:
          what a plain FP8 GEMM of the same structure reaches), against ``torch._scaled_mm``
division  the producer's shipped launches with the per-element division ``tl.math.div_rn`` (the
          "exact-div" variant of the kernel file) against the working tree's (``div_rn_by``: a
          reciprocal per block and a Markstein correction), both layouts, next to the upstream-style
          kernel; outputs compared bit for bit, also on inputs spanning the whole bf16 range
regs      the producer's straight kernel with its registers capped (Triton's ``maxnreg``: more one-warp
          programs resident per SM, some values spilled), 2 and 4 heads per program, at large M;
          outputs compared bit for bit with the shipped launch
layouts   both RoPE layouts at 1-8 heads per program and 1-2 warps, with the kernel file as it is, its
          ``LAYOUT_VARIANTS`` and (``--baseline FILE``) another version of the file (importing
          ``--baseline-rounding``'s version of fp8_rounding.py when given); outputs compared bit for
          bit with the public function's
host      cProfile of the public calls at M = 64 (top functions by own time) and a few pieces timed alone
fusedsum  the consumer at M <= 256 with its K splits added in its one launch (scripts/fused_split_k.py)
          against the shipped two launches: CUDA-graph median, as called, bits compared
wgmma     the Gluon wgmma kernel (accval/kernels/fp8_block_bmm_wgmma.py) at BLOCK_M 64/128 and 3/4 TMA buffers
          against the Triton TMA kernel the table took before it, ``torch._scaled_mm`` blockwise and the
          shipped dispatch; every output compared bit for bit with the plain pointer launch
table     candidate rows of the consumer's table (``TABLE_CANDIDATES``: pointer, Triton TMA, wgmma): each
          one's CUDA-graph median (``launch_consumer``) and its time as called through the public
          function with the table patched to answer it (no graph, a new output per call, its
          descriptors and their encoding per call included), next to the shipped table's; bits compared with the plain pointer launch; and the
          host time of the two TMA descriptors alone, built and as a call gets them (rebased)
wave      the producer at M 64-1024 (a launch of a few waves at most): the working tree's and
          ``--baseline``'s launches (with ``--baseline-rounding`` as for layouts), NEOX's rope slice forced apart and not, inexact-division variants
          (what the exact divisions cost; not bit-exact), the upstream-style kernel at 1/2/4 warps,
          each timed twice
rounding  the Triton consumer's small-M launches (the shipped one and neighbours: BLOCK_N, K split,
          stages) with the fused multiply-add and with the scaling rounded twice
          (``MUL_ADD_VARIANTS``), each timed twice; bits compared with the tree's launch
splitfma  the tree's split launches at M 1-256 where the table splits K (BLOCK_N 32/128, split 2-16,
          3/4 stages, pointer and TMA), each timed twice; the fastest three and the shipped one also
          as called through the public function (descriptors rebased per call included)
unroll    the Gluon kernel as it was before its scaling was pinned, at 1 and 2 blocks per unrolled chunk
          (``UNROLL_LAUNCHES``), each timed twice; bits compared with the plain pointer launch
pin       the Gluon kernel's schedules (``PIN_LAUNCHES``): scaling pinned between two wgmma waits or not
          (``PIN_FMA``), 2-16 blocks per chunk, each chunk's last product deferred to the next chunk or not
          (``DEFER_LAST``), each timed twice; bits compared with the plain pointer launch
chunks    the Gluon kernel at 3-6 TMA buffers and 3-6 blocks per chunk (``CHUNK_LAUNCHES``), each timed
          twice; bits compared with the plain pointer launch
persistent the Gluon kernel's table launches with one program per tile and persistent (1 or 2 programs per
          SM, ``PERSISTENT_LAUNCHES``), each timed twice; bits compared with the plain pointer launch
loader    the Gluon kernel's table launches with its own warps loading and with a loader warp
          (``LOADER_LAUNCHES``, warp specialization), each timed twice; bits compared with the plain pointer launch
deep      the small-M split launches with 3-8 stages (``deep_launches``), each timed twice, bits compared;
          and the shipped split launch's two kernels timed alone
sums      the small-M split launches with the split-K sum over ``SUM_BLOCKS`` elements per program, each
          timed twice, bits compared
m64       the producer at tep8 NEOX M=64 (where it trails the upstream-style kernel) with ``M64_VARIANTS``
          (the absmax by tl.max and a NaN flag; the rotation not rounded; the row unmasked), three rounds
floors    what bounds the consumer at M <= 256 under the bench's timing: an empty launch, two, one kernel
          reading the consumer's input bytes once, a copy of them, the split launch's two kernels alone;
          each timed twice
fusedgrid the consumer at tep8 M 1/64/256 with its K splits added in its one launch (scripts/fused_split_k.py)
          at BLOCK_N 32-128, K split 2-8, 3/4 stages, each timed twice, bits compared
pdl       the split launches at M 1/64/256 with the split-K sum launched as the products kernel's programmatic
          dependent and without (``SPLIT_PDL``), each timed twice (graph and as called), bits compared
gluonsplit the Gluon kernel with K split (``GLUON_SPLIT_LAUNCHES``) where the table splits K at M 64/256, against
          the shipped Triton split launch, each timed twice, bits compared with the pointer launch of the same splits
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import importlib
import io
import json
import pstats
import sys
import time
from pathlib import Path

import torch
import triton
import triton.language as tl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import accval.kernels as kernels  # noqa: E402
from accval.bench import timing  # noqa: E402
from accval.bench.rows import UPSTREAM_STYLE_WARPS  # noqa: E402
from accval.kernels import ConsumerConfig, provenance  # noqa: E402
from accval.kernels.baselines import upstream_style_producer  # noqa: E402
from accval.kernels.fp8_block_bmm import launch_consumer  # noqa: E402
from accval.kernels.inv_rope_fp8_quant import LaunchConfig, config_for, launch_producer  # noqa: E402
from scripts.kernel_variants import load_variant, loaded_variants  # noqa: E402

REPS_MS = 60


def consumer_launches(m: int) -> list[ConsumerConfig]:
    if m <= 256:
        bm = 64 if m <= 64 else 128
        return [ConsumerConfig(bm, bn, 4, st, sk) for bn in (64, 128) for st in (3, 4) for sk in (1, 4, 8, 16)]
    return [ConsumerConfig(bm, bn, w, st) for bm, bn, w in ((64, 128, 4), (128, 128, 8), (128, 64, 4), (128, 128, 4))
            for st in (3, 4)] + [ConsumerConfig(64, 128, 4, 5)]


def consumer_setup(shape: str, m: int, shipped: bool = True):
    """The consumer's inputs at one shape and M, an output buffer, and the baselines' median us:
    ``torch._scaled_mm`` blockwise and (``shipped``) the shipped dispatch."""
    g = timing.SHAPES[shape]
    a, a_scale, w, ws, n, k = timing.consumer_inputs(m, g)
    out = torch.empty(g, m, n, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()  # the graph timer starts on a side stream
    base = {"scaled_mm": timing.time_cuda(lambda: kernels.fp8_block_bmm(a, a_scale, w, ws, backend="torch"), REPS_MS).median_us}
    if shipped:
        base["shipped"] = timing.time_cuda(lambda: kernels.fp8_block_bmm(a, a_scale, w, ws, out=out), REPS_MS).median_us
    return (a, a_scale, w, ws), n, k, out, base


def consumer_part(ms, rows: list) -> None:
    for shape in ("dep8", "tep8"):
        for m in ms:
            (a, a_scale, w, ws), n, k, out, base = consumer_setup(shape, m)
            ref = torch.empty_like(out)
            best = {}
            for cfg in consumer_launches(m):
                for tma in (False, True):
                    c = dataclasses.replace(cfg, tma=tma)
                    try:
                        us = timing.time_cuda(lambda: launch_consumer(a, a_scale, w, ws, out, c), REPS_MS).median_us
                        same = None
                        if tma:
                            launch_consumer(a, a_scale, w, ws, ref, cfg)
                            launch_consumer(a, a_scale, w, ws, out, c)
                            torch.cuda.synchronize()
                            same = bool(torch.equal(out.view(torch.int16), ref.view(torch.int16)))
                    except Exception as e:  # noqa: BLE001 - a launch that cannot compile is a row, not a stop
                        rows.append({"part": "consumer", "shape": shape, "M": m, "config": str(c), "error": f"{type(e).__name__}: {e}"[:300]})
                        continue
                    rows.append({"part": "consumer", "shape": shape, "M": m, "config": str(c), "us": us, "bit_same": same,
                                 "vs_scaled_mm": base["scaled_mm"] / us, "vs_shipped": base["shipped"] / us, **base})
                    key = "tma" if tma else "pointer"
                    if key not in best or us < best[key][0]:
                        best[key] = (us, c)
            line = " | ".join(f"{key} {us:.1f}us x{base['scaled_mm'] / us:.2f} {c.block_m}/{c.block_n}/{c.num_warps}w/{c.num_stages}s/k{c.split_k}"
                              for key, (us, c) in best.items())
            print(f"consumer {shape} M={m}: scaled_mm {base['scaled_mm']:.1f} shipped {base['shipped']:.1f} "
                  f"(x{base['scaled_mm'] / base['shipped']:.2f}) | {line}", flush=True)
            a = a_scale = w = ws = out = ref = None  # freed before the next M
            torch.cuda.empty_cache()


def prefetch_launches(m: int, shipped: ConsumerConfig) -> list[ConsumerConfig]:
    """The shipped launch and its neighbours, each with and without scale prefetch (TMA only unsplit)."""
    if shipped.split_k > 1:
        bm = shipped.block_m
        base = [shipped, ConsumerConfig(bm, 64, 4, 3, 8), ConsumerConfig(bm, 64, 4, 3, 16), ConsumerConfig(bm, 128, 4, 3, 16),
                ConsumerConfig(bm, 64, 4, 4, 16)]
        tmas = (False,)
    else:
        base = [shipped, ConsumerConfig(64, 128, 4, 3), ConsumerConfig(64, 128, 4, 4), ConsumerConfig(128, 128, 8, 3),
                ConsumerConfig(128, 128, 8, 4), ConsumerConfig(128, 64, 4, 3)]
        tmas = (False, True)
    out = []
    for cfg in base:
        for tma in tmas:
            for pf in (False, True):
                c = dataclasses.replace(cfg, tma=tma, prefetch_scales=pf)
                if c not in out:
                    out.append(c)
    return out


def _time_against_plain(operands, out, c: ConsumerConfig, refs: dict) -> tuple[float, bool]:
    """Median us of launch ``c`` into ``out``, and whether its output is bit for bit that of the pointer
    launch of its split without prefetch (kept in ``refs``, made once per such launch)."""
    plain = dataclasses.replace(c, tma=False, prefetch_scales=False, wgmma=False, persistent=0, loader_warp=False)
    if plain not in refs:
        refs[plain] = launch_consumer(*operands, torch.empty_like(out), plain)
    us = timing.time_cuda(lambda: launch_consumer(*operands, out, c), REPS_MS).median_us
    out.fill_(float("nan"))
    launch_consumer(*operands, out, c)
    torch.cuda.synchronize()
    return us, bool(torch.equal(out.view(torch.int16), refs[plain].view(torch.int16)))


def _consumer_trial(part: str, shape: str, m: int, operands, out, c: ConsumerConfig, refs: dict, base: dict,
                    rows: list, **facts) -> tuple[float, bool] | None:
    """:func:`_time_against_plain` of launch ``c``, its row appended to ``rows`` with ``facts`` and the
    baselines ``base``; None (and an error row) when it cannot compile or run."""
    try:
        us, same = _time_against_plain(operands, out, c, refs)
    except Exception as e:  # noqa: BLE001 - a launch that cannot compile is a row, not a stop
        rows.append({"part": part, "shape": shape, "M": m, "config": str(c), "error": f"{type(e).__name__}: {e}"[:300]})
        return None
    rows.append({"part": part, "shape": shape, "M": m, "config": str(c), "us": us, "bit_same": same, **facts,
                 "vs_scaled_mm": base["scaled_mm"] / us, **base})
    return us, same


def prefetch_part(ms, rows: list) -> None:
    for shape in ("dep8", "tep8"):
        for m in ms:
            (a, a_scale, w, ws), n, k, out, base = consumer_setup(shape, m)
            shipped = kernels.consumer_config(m, n, k, timing.SHAPES[shape], a.device)
            refs, best = {}, {}
            for c in prefetch_launches(m, shipped):
                trial = _consumer_trial("prefetch", shape, m, (a, a_scale, w, ws), out, c, refs, base, rows,
                                        shipped_config=str(shipped), is_shipped=c == shipped)
                if trial is None:
                    continue
                us, same = trial
                key = ("tma" if c.tma else "ptr") + ("+pf" if c.prefetch_scales else "")
                if key not in best or us < best[key][0]:
                    best[key] = (us, c)
                if not same:
                    print(f"  DIFFERS: {shape} M={m} {c}", flush=True)
            line = " | ".join(f"{key} {us:.1f} x{base['scaled_mm'] / us:.2f} {c.block_m}/{c.block_n}/{c.num_warps}w/{c.num_stages}s/k{c.split_k}"
                              for key, (us, c) in sorted(best.items()))
            print(f"prefetch {shape} M={m}: scaled_mm {base['scaled_mm']:.1f} shipped {base['shipped']:.1f} "
                  f"(x{base['scaled_mm'] / base['shipped']:.2f}) | {line}", flush=True)
            a = a_scale = w = ws = out = None
            refs.clear()
            torch.cuda.empty_cache()


#: what the TMA kernel would do without the per-block scaling (wrong outputs: a ceiling, not a candidate)
CEILING_VARIANTS = {
    "shipped": [],
    "no-scale, dot accumulates in place": [("acc = _scale_into(acc, tl.dot(a, b.T), a_s, b_s)", "acc = tl.dot(a, b.T, acc)")],
}
CEILING_LAUNCHES = [ConsumerConfig(64, 128, 4, 3, tma=True), ConsumerConfig(64, 128, 4, 4, tma=True),
                    ConsumerConfig(128, 128, 8, 3, tma=True), ConsumerConfig(128, 128, 8, 4, tma=True)]


def smallm_launches(m: int) -> list[ConsumerConfig]:
    bm = 64 if m <= 64 else 128
    return [ConsumerConfig(bm, bn, 4, st, sk, tma=tma, prefetch_scales=True)
            for bn, splits in ((32, (4, 8, 16)), (64, (4, 8, 16)), (16, (8,)))
            for sk in splits for st, tma in ((3, False), (3, True), (4, True))]


def smallm_part(rows: list) -> None:
    for shape in ("dep8", "tep8"):
        for m in (64, 256):
            (a, a_scale, w, ws), n, k, out, base = consumer_setup(shape, m)
            shipped = kernels.consumer_config(m, n, k, timing.SHAPES[shape], a.device)
            refs, cells = {}, []
            for c in [shipped] + smallm_launches(m):
                trial = _consumer_trial("smallm", shape, m, (a, a_scale, w, ws), out, c, refs, base, rows,
                                        is_shipped=c == shipped)
                if trial is None:
                    continue
                us, same = trial
                cells.append((us, f"{c.block_n}/{c.num_stages}s/k{c.split_k}/{'tma' if c.tma else 'ptr'}{'' if same else ' DIFFERS'}"))
            best = " | ".join(f"{cell} {us:.1f}" for us, cell in sorted(cells)[:6])
            print(f"smallm {shape} M={m}: scaled_mm {base['scaled_mm']:.1f} shipped {base['shipped']:.1f} | best: {best}", flush=True)
            a = a_scale = w = ws = out = None
            refs.clear()
            torch.cuda.empty_cache()


#: the producer's kernel file with the division it had before ``div_rn_by``: one ``div_rn`` per element
EXACT_DIV = [("div_rn_by(y, safe[:, :, None], SOFTWARE)", "tl.math.div_rn(y, safe[:, :, None])")]


def _wide_range_o(m: int, heads: int, d: int) -> torch.Tensor:
    """bf16 ``o`` whose (token, head) rows are scaled by 2**U(-135, 120): blocks whose scales fall
    outside ``div_rn_by``'s reciprocal range (subnormal, huge) next to ordinary ones."""
    exp = torch.randint(-135, 121, (m, heads, 1), device="cuda").float()
    return (torch.randn(m, heads, d, device="cuda") * torch.exp2(exp)).to(torch.bfloat16)


def _producer_cases(ms):
    """For each DeepSeek-V4-Pro shape, M in ``ms`` and RoPE layout: ``(shape, M, layout, is_neox, args, p,
    fp8, scale, nbytes)``, the producer's inputs (``timing.producer_inputs``) with ``args`` its public
    arguments; the caller's tensors of one case go when it unpacks the next."""
    for shape, g in timing.SHAPES.items():
        for m in ms:
            for layout, is_neox in timing.LAYOUTS.items():
                o, pos, cache, p, fp8, scale, nbytes = timing.producer_inputs(m, g, is_neox)
                yield shape, m, layout, is_neox, (o, pos, cache, g, p.heads_per_group, p.nope_dim, p.rope_dim), p, fp8, scale, nbytes
                del o, pos, cache, fp8, scale
                torch.cuda.empty_cache()


def division_part(rows: list) -> None:
    with loaded_variants("inv_rope_fp8_quant.py", "inv_rope_fp8_quant", "exact_div", {"exact-div": EXACT_DIV}) as mods:
        mod = mods["exact-div"]
        for shape, m, layout, is_neox, args, p, fp8, scale, _ in _producer_cases((64, 256, 1024, 1500, 2048, 8192)):
            o, pos, cache = args[:3]
            cfg = config_for(m, o.device, is_neox=is_neox)
            up = timing.time_cuda(lambda: upstream_style_producer(*args, is_neox, fp8, scale, num_warps=UPSTREAM_STYLE_WARPS),
                                  REPS_MS).median_us
            mp = mod.validate_producer_args(*args, is_neox=is_neox)
            mcfg = mod.LaunchConfig(**dataclasses.asdict(cfg))
            old = timing.time_cuda(lambda: mod.launch_producer(mp, o, pos, cache, fp8, scale, mcfg), REPS_MS).median_us
            new = timing.time_cuda(lambda: launch_producer(p, o, pos, cache, fp8, scale, cfg), REPS_MS).median_us
            same = {}
            for data, oo in (("randn", o), ("wide", _wide_range_o(m, o.shape[1], o.shape[2]))):
                a8, a_s = mod.inv_rope_fp8_quant(oo, *args[1:], is_neox=is_neox)
                b8, b_s = kernels.inv_rope_fp8_quant(oo, *args[1:], is_neox=is_neox)
                same[data] = bool(torch.equal(a8.view(torch.uint8), b8.view(torch.uint8))
                                  and torch.equal(a_s.view(torch.int32), b_s.view(torch.int32)))
            rows.append({"part": "division", "shape": shape, "M": m, "layout": layout, "config": str(cfg),
                         "exact_div_us": old, "div_rn_by_us": new, "upstream_us": up, "speedup": old / new,
                         "vs_upstream": up / new, "bit_same": same})
            print(f"division {shape} {layout} M={m}: div_rn {old:.1f} div_rn_by {new:.1f} (x{old / new:.3f}) "
                  f"upstream-style {up:.1f} (x{up / new:.2f} over it) bit-same {same}", flush=True)

def _time_producer(mod, cfg: LaunchConfig, args: tuple, is_neox: bool, fp8, scale, want, **launch_kw) -> tuple[float, bool]:
    """Median us of ``mod``'s (a variant of the kernel file's) producer launch ``cfg`` on ``args`` into
    ``fp8``/``scale`` (``launch_kw``: launch_producer's keywords), and whether its codes and scales are
    bit for bit ``want``."""
    o, pos, cache = args[:3]
    mp = mod.validate_producer_args(*args, is_neox=is_neox)
    mcfg = mod.LaunchConfig(**dataclasses.asdict(cfg))
    us = timing.time_cuda(lambda: mod.launch_producer(mp, o, pos, cache, fp8, scale, mcfg, **launch_kw), REPS_MS).median_us
    fp8.zero_()
    scale.zero_()
    mod.launch_producer(mp, o, pos, cache, fp8, scale, mcfg, **launch_kw)
    torch.cuda.synchronize()
    return us, bool(torch.equal(fp8.view(torch.uint8), want[0].view(torch.uint8)) and torch.equal(scale, want[1]))


#: register caps tried (None: the compiler's choice) and the straight-kernel launches they are tried on
REG_CAPS = (None, 80, 72, 64)
REG_LAUNCHES = [LaunchConfig(1, 1, 1, heads_per_program=hb) for hb in (2, 4)]


def reg_cap_subs(cap: int) -> list[tuple[str, str]]:
    """The substitution that launches the producer with at most ``cap`` registers per thread."""
    launch = "num_warps=warps_per_program(cfg, hb), **_platform.gpu_launch_options())"
    return [(launch, launch.replace("**_platform", f"maxnreg={cap}, **_platform"))]


def regs_part(rows: list) -> None:
    shipped = importlib.import_module("accval.kernels.inv_rope_fp8_quant")
    with loaded_variants("inv_rope_fp8_quant.py", "inv_rope_fp8_quant", "reg", {cap: reg_cap_subs(cap) for cap in REG_CAPS if cap is not None}) as mods:
        for shape, m, layout, is_neox, args, _, fp8, scale, nbytes in _producer_cases((1024, 2048, 8192)):
            copy = timing.copy_us(nbytes // 2, REPS_MS).median_us
            want_fp8, want_scale = kernels.inv_rope_fp8_quant(*args, is_neox=is_neox)
            cells = []
            for cfg in REG_LAUNCHES:
                for cap in REG_CAPS:
                    us, same = _time_producer(shipped if cap is None else mods[cap], cfg, args, is_neox, fp8,
                                              scale, (want_fp8, want_scale))
                    rows.append({"part": "regs", "shape": shape, "M": m, "layout": layout, "config": str(cfg),
                                 "maxnreg": cap, "us": us, "bit_same": same, "copy_us": copy, "pct_copy": 100 * copy / us})
                    cells.append(f"hb{cfg.heads_per_program} r{cap or '-'} {us:.1f} ({100 * copy / us:.0f}%){'' if same else ' DIFFERS'}")
            print(f"regs {shape} {layout} M={m}: copy {copy:.1f} | " + " | ".join(cells), flush=True)

def ceiling_part(rows: list) -> None:
    """The TMA kernel's launches with and without the per-block scaling, against torch._scaled_mm."""
    with loaded_variants("fp8_block_bmm.py", "fp8_block_bmm", "ce", CEILING_VARIANTS) as mods:
        for shape in ("dep8", "tep8"):
            for m in (2048, 8192):
                (a, a_scale, w, ws), _, _, out, base = consumer_setup(shape, m, shipped=False)
                ref = base["scaled_mm"]
                cells = []
                want = {cfg: launch_consumer(a, a_scale, w, ws, torch.empty_like(out), cfg) for cfg in CEILING_LAUNCHES}
                for name, mod in mods.items():
                    for cfg in CEILING_LAUNCHES:
                        mcfg = mod.ConsumerConfig(**dataclasses.asdict(cfg))
                        us = timing.time_cuda(lambda: mod.launch_consumer(a, a_scale, w, ws, out, mcfg), REPS_MS).median_us
                        same = bool(torch.equal(out.view(torch.int16), want[cfg].view(torch.int16)))
                        rows.append({"part": "ceiling", "shape": shape, "M": m, "variant": name, "config": str(cfg),
                                     "us": us, "scaled_mm_us": ref, "vs_scaled_mm": ref / us, "bit_same": same})
                        cells.append(f"{name} {cfg.block_m}x{cfg.block_n}/{cfg.num_warps}w/{cfg.num_stages}s {us:.1f} "
                                     f"(x{ref / us:.2f}{'' if same else ', differs'})")
                print(f"ceiling {shape} M={m}: scaled_mm {ref:.1f} | " + " | ".join(cells), flush=True)
                a = a_scale = w = ws = out = want = None
                torch.cuda.empty_cache()

#: the Triton consumer's scaling rounded twice (a multiply, then an add), as before the fused multiply-add
MUL_ADD_VARIANTS = {"mul-add": [("return tl.fma(prod, (a_s * b_s)[:, None], acc)", "return acc + prod * (a_s * b_s)[:, None]")]}


def rounding_launches(m: int, shipped: ConsumerConfig) -> list[ConsumerConfig]:
    """The shipped small-M launch and its neighbours: BLOCK_N 32/64/128, K split 4/8/16, 3/4 stages,
    scales prefetched (pointer loads, as the table's split launches)."""
    out = [shipped]
    for bn in (32, 64, 128):
        for sk in (4, 8, 16):
            for st in (3, 4):
                c = ConsumerConfig(shipped.block_m, bn, 4, st, sk, prefetch_scales=True)
                if c not in out:
                    out.append(c)
    return out


def rounding_part(rows: list) -> None:
    """The Triton consumer's small-M launches with the fused multiply-add (the tree) and with the
    scaling rounded twice, each timed twice; bits compared with the tree's launch (the mul-add ones
    are expected to differ: that shows which ran)."""
    with loaded_variants("fp8_block_bmm.py", "fp8_block_bmm", "rd", MUL_ADD_VARIANTS) as mods:
        variants = {"fma": importlib.import_module("accval.kernels.fp8_block_bmm"), **mods}
        for shape in ("dep8", "tep8"):
            for m in (64, 256):
                (a, a_scale, w, ws), n, k, out, base = consumer_setup(shape, m)
                shipped = kernels.consumer_config(m, n, k, timing.SHAPES[shape], a.device)
                cells = []
                for c in rounding_launches(m, shipped):
                    want = None
                    for name, mod in variants.items():
                        if c.wgmma and name != "fma":
                            continue  # the Gluon kernel is not in the edited file: it would run the fma as "mul-add"
                        mcfg = mod.ConsumerConfig(**dataclasses.asdict(c))
                        try:
                            if want is None:
                                want = launch_consumer(a, a_scale, w, ws, torch.empty_like(out), c)
                            us = [timing.time_cuda(lambda: mod.launch_consumer(a, a_scale, w, ws, out, mcfg), REPS_MS).median_us
                                  for _ in range(2)]
                        except Exception as e:  # noqa: BLE001 - a launch that cannot compile is a row, not a stop
                            rows.append({"part": "rounding", "shape": shape, "M": m, "variant": name, "config": str(c),
                                         "error": f"{type(e).__name__}: {e}"[:300]})
                            continue
                        out.fill_(float("nan"))
                        mod.launch_consumer(a, a_scale, w, ws, out, mcfg)
                        torch.cuda.synchronize()
                        same = bool(torch.equal(out.view(torch.int16), want.view(torch.int16)))
                        rows.append({"part": "rounding", "shape": shape, "M": m, "variant": name, "config": str(c),
                                     "is_shipped": c == shipped, "us": us, "bit_same_as_fma": same, **base})
                        cells.append((min(us), f"{name} {c.block_n}/{c.num_stages}s/k{c.split_k}{'/pf' if c.prefetch_scales else ''}"
                                      f"{'*' if c == shipped else ''} {us[0]:.1f}/{us[1]:.1f}{'' if same else ' (bits differ)'}"))
                best = " | ".join(cell for _, cell in sorted(cells)[:8])
                print(f"rounding {shape} M={m}: scaled_mm {base['scaled_mm']:.1f} shipped {base['shipped']:.1f} | fastest: {best}",
                      flush=True)
                a = a_scale = w = ws = out = want = None
                torch.cuda.empty_cache()


@contextlib.contextmanager
def launch_constant(module: str, name: str, value):
    """``accval.kernels.<module>.<name>`` set to ``value`` while the consumer's launches are built (its launch
    cache emptied on the way in and out), so every launch inside the ``with`` block is built with it."""
    mod = importlib.import_module(f"accval.kernels.{module}")
    fbm = importlib.import_module("accval.kernels.fp8_block_bmm")
    shipped = getattr(mod, name)
    setattr(mod, name, value)
    fbm._triton_launch.cache_clear()
    try:
        yield
    finally:
        setattr(mod, name, shipped)
        fbm._triton_launch.cache_clear()


@contextlib.contextmanager
def table_says(c: ConsumerConfig):
    """The consumer's dispatch answering ``c`` for every call (its plan cache emptied on the way in and
    out), so the public function, host path included, runs that launch."""
    fbm = importlib.import_module("accval.kernels.fp8_block_bmm")
    real = fbm._device_config
    fbm._device_config = lambda *_: c
    fbm._PLANS.clear()
    try:
        yield
    finally:
        fbm._device_config = real
        fbm._PLANS.clear()


def split_launches(m: int, k: int, shipped: ConsumerConfig) -> list[ConsumerConfig]:
    """The shipped split launch and the tree's others at its BLOCK_M: BLOCK_N 32/128, K split 2-16,
    3/4 stages, pointer and TMA loads, scales prefetched."""
    out = [shipped]
    for bn in (32, 128):
        for sk in (2, 4, 8, 16):
            for st in (3, 4):
                for tma in (False, True):
                    c = ConsumerConfig(shipped.block_m, bn, 4, st, sk, tma=tma, prefetch_scales=True)
                    if sk <= k // 128 and c not in out:
                        out.append(c)
    return out


def _split_cases(part: str, ms):
    """``(shape, m, operands, k, out, base, shipped)`` of each DeepSeek-V4-Pro shape and M in ``ms`` where the
    table splits K (``consumer_setup``'s inputs and baselines; the others are printed as skipped)."""
    for shape in ("dep8", "tep8"):
        for m in ms:
            operands, n, k, out, base = consumer_setup(shape, m)
            shipped = kernels.consumer_config(m, n, k, timing.SHAPES[shape], operands[0].device)
            if shipped.split_k == 1:
                print(f"{part} {shape} M={m}: the table does not split K here ({shipped})", flush=True)
                continue
            yield shape, m, operands, k, out, base, shipped


def _timed_twice(part: str, shape: str, m: int, operands, out, base: dict, rows: list, shipped: ConsumerConfig,
                 launches) -> list[tuple[float, ConsumerConfig, bool]]:
    """Each launch of ``launches`` timed twice (``_consumer_trial``, then again), fastest first:
    ``(min us, launch, bits same)``."""
    refs, timed = {}, []
    for c in launches:
        trial = _consumer_trial(part, shape, m, operands, out, c, refs, base, rows, is_shipped=c == shipped)
        if trial is None:
            continue
        again = timing.time_cuda(lambda: launch_consumer(*operands, out, c), REPS_MS).median_us
        rows[-1]["us_again"] = again
        timed.append((min(trial[0], again), c, trial[1]))
    return sorted(timed, key=lambda t: t[0])


def _split_label(c: ConsumerConfig, shipped: ConsumerConfig) -> str:
    """A split launch in a line: loads, BLOCK_N, stages, splits; ``*`` marks the shipped one."""
    return f"{'tma' if c.tma else 'ptr'} {c.block_n}/{c.num_stages}s/k{c.split_k}{'*' if c == shipped else ''}"


def splitfma_part(rows: list) -> None:
    """The tree's (fused multiply-add) split launches at M 1-256 where the table splits K: each timed
    twice under a CUDA graph, bits compared with the pointer launch of its split; the three fastest and
    the shipped one also as called through the public function with the table patched to answer them
    (TMA descriptors rebased per call included)."""
    for shape, m, operands, k, out, base, shipped in _split_cases("splitfma", (1, 16, 64, 256)):
        timed = _timed_twice("splitfma", shape, m, operands, out, base, rows, shipped, split_launches(m, k, shipped))
        cells = []
        for us, c, same in timed[:3] + [t for t in timed[3:] if t[1] == shipped]:
            with table_says(c):
                called = timing.as_called_us(lambda: kernels.fp8_block_bmm(*operands), us)
            rows.append({"part": "splitfma-called", "shape": shape, "M": m, "config": str(c), "us": us,
                         "as_called_us": called, "is_shipped": c == shipped})
            cells.append(f"{_split_label(c, shipped)} {us:.1f} called {called:.1f}{'' if same else ' BITS DIFFER'}")
        print(f"splitfma {shape} M={m}: scaled_mm {base['scaled_mm']:.1f} shipped {base['shipped']:.1f} | "
              + " | ".join(cells), flush=True)
        operands = out = None
        torch.cuda.empty_cache()


def deep_launches(shipped: ConsumerConfig, k: int) -> list[ConsumerConfig]:
    """The shipped split launch at 3-8 stages (8: every block of a split of 8 loaded before its first dot),
    pointer and TMA loads, and 128- and 32-wide neighbours at split 8 and 16 with 6 and 8 stages."""
    out = [dataclasses.replace(shipped, num_stages=st, tma=tma) for st in (3, 4, 5, 6, 8) for tma in (False, True)]
    for bn in (32, 128):
        for sk in (8, 16):
            for st in (6, 8):
                c = ConsumerConfig(shipped.block_m, bn, 4, st, sk, prefetch_scales=True)
                if sk <= k // 128 and c not in out:
                    out.append(c)
    return out


def deep_part(rows: list) -> None:
    """The small-M split launches with deeper pipelines (``deep_launches``), each timed twice, bits compared
    with the pointer launch of its split; and the shipped launch's two kernels timed alone (the split
    products, then their sum), launched bare under a CUDA graph."""
    from accval.kernels.fp8_block_bmm import consumer_launches
    from accval.kernels.host import bare_launch

    for shape, m, operands, k, out, base, shipped in _split_cases("deep", (1, 64, 256)):
        launches = consumer_launches(*operands, out)
        torch.cuda.synchronize()
        pieces = {"products": [launches[0]], "sum": launches[1:], "both": launches}
        split_us = {what: timing.time_cuda(bare_launch(ls), REPS_MS).median_us for what, ls in pieces.items()}
        rows.append({"part": "deep-pieces", "shape": shape, "M": m, "config": str(shipped), **split_us, **base})
        timed = _timed_twice("deep", shape, m, operands, out, base, rows, shipped, deep_launches(shipped, k))
        cells = [f"{_split_label(c, shipped)} {us:.1f}{'' if same else ' BITS DIFFER'}"
                 for us, c, same in timed[:5] + [t for t in timed[5:] if t[1] == shipped]]
        print(f"deep {shape} M={m}: scaled_mm {base['scaled_mm']:.1f} shipped {base['shipped']:.1f} (products "
              f"{split_us['products']:.1f} + sum {split_us['sum']:.1f}, bare {split_us['both']:.1f}) | " + " | ".join(cells),
              flush=True)
        operands = out = launches = None
        torch.cuda.empty_cache()


#: elements per program of the split-K sum timed by ``--parts sums`` (the tree's: ``SUM_BLOCK``)
SUM_BLOCKS = (128, 256, 512, 1024, 2048)


def sums_part(rows: list) -> None:
    """The shipped split launches at M 1/64/256 with the split-K sum's programs over ``SUM_BLOCKS`` elements
    (the sum's bits do not depend on it: each element adds its splits in split order), each timed twice
    in alternating rounds; bits compared with the tree's launch."""
    shipped_block = importlib.import_module("accval.kernels.fp8_block_bmm").SUM_BLOCK
    for shape, m, operands, k, out, base, cfg in _split_cases("sums", (1, 64, 256)):
        want = launch_consumer(*operands, torch.empty_like(out), cfg)
        times: dict = {b: [] for b in SUM_BLOCKS}
        same = {}
        for _ in range(2):
            for block in SUM_BLOCKS:
                with launch_constant("fp8_block_bmm", "SUM_BLOCK", block):
                    times[block].append(timing.time_cuda(lambda: launch_consumer(*operands, out, cfg), REPS_MS).median_us)
                    out.fill_(float("nan"))
                    launch_consumer(*operands, out, cfg)
                    torch.cuda.synchronize()
                    same[block] = bool(torch.equal(out.view(torch.int16), want.view(torch.int16)))
        for block, ts in times.items():
            rows.append({"part": "sums", "shape": shape, "M": m, "config": str(cfg), "sum_block": block, "us": ts,
                         "bit_same": same[block], **base})
        print(f"sums {shape} M={m}: scaled_mm {base['scaled_mm']:.1f} shipped {base['shipped']:.1f} | "
              + " | ".join(f"{b}{'*' if b == shipped_block else ''} {'/'.join(f'{t:.1f}' for t in ts)}"
                           f"{'' if same[b] else ' BITS DIFFER'}" for b, ts in times.items()), flush=True)
        operands = out = want = None
        torch.cuda.empty_cache()


@triton.jit
def _empty_kernel(x_ptr):
    """Does nothing: what any launch costs under the benchmark's timing (``--parts floors``)."""
    pass


def floors_part(rows: list) -> None:
    """What bounds the consumer at M <= 256 under the benchmark's timing (CUDA graph, L2 flushed before
    each repetition): an empty launch, two empty launches, one kernel reading the consumer's input bytes
    once (``timing.read_once_us``), a copy of the same bytes (the bench's reference row),
    the shipped split launch's two kernels alone and together, launched bare, each timed twice in
    alternating rounds (the read once: its fastest launch); next to the shipped call and ``torch._scaled_mm`` blockwise."""
    from accval.kernels.fp8_block_bmm import consumer_launches
    from accval.kernels.host import bare_launch

    dummy = torch.empty(1, device="cuda")
    empty = {"empty launch": lambda: _empty_kernel[(1,)](dummy),
             "two empty launches": lambda: (_empty_kernel[(1,)](dummy), _empty_kernel[(1,)](dummy))}
    for shape in ("dep8", "tep8"):
        for m in (1, 64, 256):
            operands, n, k, out, base = consumer_setup(shape, m)
            nbytes = timing.tensor_bytes(*operands)  # what the consumer must read
            launches = consumer_launches(*operands, out)
            torch.cuda.synchronize()
            pieces = dict(empty, both=launches) if len(launches) == 1 else dict(
                empty, products=launches[:1], sum=launches[1:], both=launches)
            fns = {what: (fn if callable(fn) else bare_launch(fn)) for what, fn in pieces.items()}
            fns["copy same bytes"] = None
            times: dict = {what: [] for what in fns}
            for _ in range(2):
                for what, fn in fns.items():
                    t = (timing.copy_us((nbytes + m * n * 2 * timing.SHAPES[shape]) // 2, REPS_MS) if fn is None
                         else timing.time_cuda(fn, REPS_MS))
                    times[what].append(t.median_us)
            read, launch = timing.read_once_us(nbytes, REPS_MS)
            times["read once"] = [read.median_us]
            rows.append({"part": "floors", "shape": shape, "M": m, "read_bytes": nbytes, "read_once_launch": launch,
                         "split": len(launches) > 1, **{f"{w} us": ts for w, ts in times.items()}, **base})
            print(f"floors {shape} M={m}: scaled_mm {base['scaled_mm']:.1f} shipped {base['shipped']:.1f} (2x needs "
                  f"{base['scaled_mm'] / 2:.1f}) | " + " | ".join(f"{w} {'/'.join(f'{t:.1f}' for t in ts)}"
                                                              for w, ts in times.items())
                  + f" | read {nbytes / 2**20:.1f} MiB with {launch}", flush=True)
            operands = out = launches = fns = None
            torch.cuda.empty_cache()


#: name -> substitutions in accval/kernels/inv_rope_fp8_quant.py
PRODUCER_VARIANTS = {
    "shipped": [],
    "evict-first": [("tl.load(o_ptr + row_off + d, mask=live, other=0.0)",
                     "tl.load(o_ptr + row_off + d, mask=live, other=0.0, eviction_policy='evict_first')"),
                    ("+ pair, mask=live, other=0)", "+ pair, mask=live, other=0, eviction_policy='evict_first')")],
    "stream-store": [("tl.store(fp8_row + d, to_fp8_e4m3(q, FP8_MAX, SOFTWARE), mask=live)",
                      "tl.store(fp8_row + d, to_fp8_e4m3(q, FP8_MAX, SOFTWARE), mask=live, cache_modifier='.cs')"),
                     ("to_fp8_e4m3_pairs(q_even, q_odd, FP8_MAX, SOFTWARE),\n                     mask=live)",
                      "to_fp8_e4m3_pairs(q_even, q_odd, FP8_MAX, SOFTWARE),\n                     mask=live, cache_modifier='.cs')")],
}
PRODUCER_SMALL = [LaunchConfig(1, w, 1, heads_per_program=hb) for hb, ws in ((1, (1, 2, 4, 8)), (2, (1, 2, 4)), (4, (2, 4)))
                  for w in ws]


def producer_part(rows: list) -> None:
    with loaded_variants("inv_rope_fp8_quant.py", "inv_rope_fp8_quant", "sp", PRODUCER_VARIANTS) as mods:
        for shape, m, layout, is_neox, args, _, fp8, scale, nbytes in _producer_cases((64, 256, 2048, 8192)):
            copy = timing.copy_us(nbytes // 2, REPS_MS).median_us  # a copy moving the producer's bytes
            up = timing.time_cuda(lambda: upstream_style_producer(*args, is_neox, fp8, scale, num_warps=UPSTREAM_STYLE_WARPS),
                                  REPS_MS).median_us
            shipped_cfg = config_for(m, args[0].device, is_neox=is_neox)
            want_fp8, want_scale = kernels.inv_rope_fp8_quant(*args, is_neox=is_neox)
            tried = [(name, shipped_cfg) for name in mods] if m >= 2048 else [("shipped", c) for c in PRODUCER_SMALL]
            if m < 2048 and shipped_cfg not in PRODUCER_SMALL:
                tried.insert(0, ("shipped", shipped_cfg))
            cells = []
            for name, cfg in tried:
                us, same = _time_producer(mods[name], cfg, args, is_neox, fp8, scale, (want_fp8, want_scale))
                rows.append({"part": "producer", "shape": shape, "M": m, "layout": layout, "variant": name,
                             "config": str(cfg), "us": us, "bit_same": same, "copy_us": copy, "upstream_us": up,
                             "pct_copy": 100 * copy / us, "vs_upstream": up / us, "shipped_config": cfg == shipped_cfg})
                tag = name if m >= 2048 else f"hb{cfg.heads_per_program}w{cfg.num_warps}"
                cells.append(f"{tag} {us:.1f}{'' if same else ' DIFFERS'}")
            print(f"producer {shape} {layout} M={m}: copy {copy:.1f} upstream {up:.1f} | " + " | ".join(cells), flush=True)

#: what folding each divisor into the reciprocal's exact range costs (``div_rn_by``: a select per block
#: and a multiply per element): the reciprocal and correction without it (wrong for divisors outside
#: [2**-80, 2**100], the same bits on the probe's inputs)
_NO_FOLD = ("@triton.jit\ndef _unpack_pairs", """@triton.jit
def _div_no_fold(y, s):
    r = tl.math.div_rn(tl.full(s.shape, 1.0, tl.float32), s)
    q0 = y * r
    return tl.where(q0 == 0.0, q0, tl.fma(tl.fma(-q0, s, y), r, q0))


@triton.jit
def _unpack_pairs""")
#: the producer's kernel file with substitutions: "split" reads GPT-J's rotation pairs as the fallback does
#: for rows not aligned to a pair (the row split into even and odd elements in registers), never as words;
#: "no-fold" divides without div_rn_by's fold (above)
LAYOUT_VARIANTS = {
    "shipped": [],
    "split": [("PAIR_WORD={0: None, 32: tl.int32, 64: tl.int64}[pair_bits],", "PAIR_WORD=None,")],
    "no-fold": [_NO_FOLD, ("div_rn_by(y, safe[:, :, None], SOFTWARE)", "_div_no_fold(y, safe[:, :, None])"),
                ("div_rn_by(y_even, safe, SOFTWARE)", "_div_no_fold(y_even, safe)"),
                ("div_rn_by(y_odd, safe, SOFTWARE)", "_div_no_fold(y_odd, safe)")],
}
#: straight-kernel launches (heads per program, warps) the layouts part times for every variant
LAYOUT_LAUNCHES = [LaunchConfig(1, w, 1, heads_per_program=hb) for hb, w in ((1, 1), (2, 1), (4, 1), (4, 2), (8, 2))]


@contextlib.contextmanager
def baseline_modules(tag: str, baseline: Path | None, rounding: Path | None):
    """``{"before": module}`` for ``baseline`` (another version of the producer's kernel file; ``{}``
    without one), importing its division and casts from ``rounding`` (another version of
    ``accval/kernels/fp8_rounding.py``) when given, else from the working tree's."""
    if baseline is None:
        yield {}
        return
    with contextlib.ExitStack() as stack:
        subs = []
        if rounding is not None:
            mod, path = load_variant("fp8_rounding.py", "fp8_rounding", f"{tag}rounding", [], source=rounding.read_text())
            stack.callback(path.unlink, missing_ok=True)
            subs = [("from .fp8_rounding import", f"from {mod.__name__} import")]
        yield stack.enter_context(loaded_variants("inv_rope_fp8_quant.py", "inv_rope_fp8_quant", tag, {"before": subs},
                                                  source=baseline.read_text()))


def layouts_part(rows: list, baseline: Path | None, rounding: Path | None = None) -> None:
    """Both RoPE layouts, every launch of ``LAYOUT_LAUNCHES``, with the working tree's kernel file, its
    ``LAYOUT_VARIANTS`` and (``baseline``) another version of the file, next to a same-bytes copy and
    the upstream-style kernel; outputs compared bit for bit with the public function's."""
    with (loaded_variants("inv_rope_fp8_quant.py", "inv_rope_fp8_quant", "lv", LAYOUT_VARIANTS) as variants,
          baseline_modules("lvbase", baseline, rounding) as other):
        mods = {**variants, **other}
        for shape, m, layout, is_neox, args, _, fp8, scale, nbytes in _producer_cases((64, 256, 1024, 2048, 8192)):
            copy = timing.copy_us(nbytes // 2, REPS_MS).median_us
            up = timing.time_cuda(lambda: upstream_style_producer(*args, is_neox, fp8, scale, num_warps=UPSTREAM_STYLE_WARPS),
                                  REPS_MS).median_us
            want = kernels.inv_rope_fp8_quant(*args, is_neox=is_neox)
            shipped_cfg = config_for(m, args[0].device, is_neox=is_neox)
            cells = []
            for name, mod in mods.items():
                for cfg in LAYOUT_LAUNCHES:
                    us, same = _time_producer(mod, cfg, args, is_neox, fp8, scale, want)
                    rows.append({"part": "layouts", "shape": shape, "M": m, "layout": layout, "variant": name,
                                 "config": str(cfg), "us": us, "bit_same": same, "copy_us": copy, "upstream_us": up,
                                 "pct_copy": 100 * copy / us, "vs_upstream": up / us,
                                 "shipped_config": str(shipped_cfg)})
                    cells.append(f"{name[:5]} hb{cfg.heads_per_program}w{cfg.num_warps} {us:.1f}{'' if same else ' DIFFERS'}")
            print(f"layouts {shape} {layout} M={m}: copy {copy:.1f} upstream {up:.1f} | " + " | ".join(cells), flush=True)

#: probe-only kernels, NOT bit-exact: the block scale as ``amax * (1/448)`` and the quotient as Triton's default
#: (approximate) division, what the upstream-style kernel does; they measure what the exact divisions cost
_FAST_DIV = ("@triton.jit\ndef _unpack_pairs", """@triton.jit
def _fast_div(y, s, SOFTWARE: tl.constexpr):
    return y / s


@triton.jit
def _unpack_pairs""")
INEXACT_SCALE = [("tl.math.div_rn(amax, FP8_MAX)", "(amax * (1.0 / FP8_MAX))"),
                 ("tl.math.div_rn(amax_last, FP8_MAX)", "(amax_last * (1.0 / FP8_MAX))")]
INEXACT_QUOTIENT = [_FAST_DIV] + [(f"div_rn_by({y},", f"_fast_div({y},") for y in ("yr", "x", "y", "y_even", "y_odd")]
WAVE_VARIANTS = {"inexact-scale": INEXACT_SCALE, "inexact-quotient": INEXACT_QUOTIENT,
                 "inexact-both": INEXACT_SCALE + INEXACT_QUOTIENT}


def _producer_rounds(trials: dict, args: tuple, is_neox: bool, fp8, scale, want, rounds: int,
                     upstream_warps: tuple, copy_bytes: int | None = None) -> tuple[dict, dict]:
    """Every trial (name -> (module, launch, launch_producer's keywords, compare bits)), then the
    upstream-style kernel at each of ``upstream_warps`` and (``copy_bytes``) a copy of that many bytes,
    timed once per round, the rounds one after another for the spread: ``({name: [us per round]},
    {name: bits equal to want in every round})`` for the trials that compare."""
    times: dict[str, list[float]] = {name: [] for name in [*trials, *(f"upstream-{w}w" for w in upstream_warps)]}
    if copy_bytes is not None:
        times["copy"] = []
    same: dict[str, bool] = {}
    for _ in range(rounds):
        for name, (mod, c, kw, compare) in trials.items():
            us, bits = _time_producer(mod, c, args, is_neox, fp8, scale, want, **kw)
            times[name].append(us)
            if compare:
                same[name] = same.get(name, True) and bits
        for w in upstream_warps:
            times[f"upstream-{w}w"].append(timing.time_cuda(
                lambda: upstream_style_producer(*args, is_neox, fp8, scale, num_warps=w), REPS_MS).median_us)
        if copy_bytes is not None:
            times["copy"].append(timing.copy_us(copy_bytes, REPS_MS).median_us)
    return times, same


#: the one shape where the producer trails the upstream-style kernel (tep8 NEOX M=64: 1024 one-warp programs,
#: part of one wave), edited where the two kernels still differ; "flag-max" keeps the bits
M64_VARIANTS = {
    # the block absmax by tl.max and a NaN flag (the interpreter's path) instead of a NaN-propagating max tree
    "flag-max": [("    if SOFTWARE:\n        amax = tl.max(a, axis=AXIS)", "    if True:\n        amax = tl.max(a, axis=AXIS)")],
    # the rotated slice not rounded to the input dtype (the upstream-style kernel does not round it)
    "no-round": [("y = tl.where(is_rope, round_through(rot, IN_DTYPE, SOFTWARE), x)", "y = tl.where(is_rope, rot, x)")],
    # the row loaded without its row mask (safe here only: M = 64 launches no padding rows)
    "unmasked-row": [("x = tl.load(o_ptr + row_off + d, mask=live, other=0.0).to(tl.float32)\n            pos = tl.load(",
                      "x = tl.load(o_ptr + row_off + d).to(tl.float32)\n            pos = tl.load(")],
}
M64_VARIANTS["all-three"] = [sub for subs in M64_VARIANTS.values() for sub in subs]


def m64_part(rows: list) -> None:
    """tep8 NEOX M=64: the tree's launch, ``M64_VARIANTS`` and the upstream-style kernel at 1 and 4 warps,
    in three rounds; bits compared with the public function's (only "flag-max" should keep them)."""
    shipped = importlib.import_module("accval.kernels.inv_rope_fp8_quant")
    with loaded_variants("inv_rope_fp8_quant.py", "inv_rope_fp8_quant", "m64", M64_VARIANTS) as mods:
        for shape, m, layout, is_neox, args, _, fp8, scale, nbytes in _producer_cases((64,)):
            if shape != "tep8" or layout != "neox":
                continue
            o = args[0]
            cfg = config_for(m, o.device, is_neox=is_neox)
            want = kernels.inv_rope_fp8_quant(*args, is_neox=is_neox)
            trials = {name: (mod, cfg, {}, True) for name, mod in {"tree": shipped, **mods}.items()}
            times, same = _producer_rounds(trials, args, is_neox, fp8, scale, want, rounds=3, upstream_warps=(1, 4))
            for name, ts in times.items():
                rows.append({"part": "m64", "shape": shape, "M": m, "layout": layout, "trial": name, "us": ts,
                             "config": str(cfg), "bit_same": same.get(name)})
            print(f"m64 {shape} {layout} M={m} ({cfg}):\n  " + "\n  ".join(
                f"{name:14s} " + " ".join(f"{t:6.2f}" for t in ts) + ("" if same.get(name, True) else "  bits differ")
                for name, ts in times.items()), flush=True)


def wave_part(rows: list, baseline: Path | None, rounding: Path | None = None) -> None:
    """The producer where a launch is at most a few waves (M 64-1024): the shipped launch of the working
    tree and of ``baseline`` (another version of the kernel file), NEOX with the rope slice forced apart
    and not, the tree with an int32 index, one head with 2 and 4 warps where M=64 launches one head per
    program, the ``WAVE_VARIANTS`` (inexact: what the exact divisions cost), the upstream-style kernel at
    1/2/4 warps; every timing twice, in two rounds, for the spread.
    Bit-exact launches are compared with the public function's output."""
    shipped = importlib.import_module("accval.kernels.inv_rope_fp8_quant")
    with (loaded_variants("inv_rope_fp8_quant.py", "inv_rope_fp8_quant", "wave", WAVE_VARIANTS) as inexact,
          baseline_modules("wavebase", baseline, rounding) as before):
        for shape, m, layout, is_neox, args, _, fp8, scale, nbytes in _producer_cases((64, 256, 1024)):
            o, pos, cache = args[:3]
            cfg = config_for(m, o.device, is_neox=is_neox)
            want = kernels.inv_rope_fp8_quant(*args, is_neox=is_neox)
            trials = {}  # name -> (module, cfg, launch_producer's keywords, compare bits)
            for mname, mod in (("tree", shipped), *before.items()):
                trials[mname] = (mod, cfg, {}, True)
                if is_neox:
                    for apart in (True, False):
                        trials[f"{mname} apart={apart}"] = (mod, cfg, {"force_rope_apart": apart}, True)
            trials["tree int32 index"] = (shipped, cfg, {"index_dtype": tl.int32}, True)
            if m == 64 and shipped.heads_per_program(cfg, o.shape[1], m) == 1:
                for w in (2, 4):
                    trials[f"tree 1h{w}w"] = (shipped, LaunchConfig(1, w, 1, heads_per_program=1), {}, True)
            for name, mod in inexact.items():
                trials[name] = (mod, cfg, {}, False)
            times, same = _producer_rounds(trials, args, is_neox, fp8, scale, want, rounds=2, upstream_warps=(1, 2, 4),
                                           copy_bytes=nbytes // 2)
            for name, ts in times.items():
                rows.append({"part": "wave", "shape": shape, "M": m, "layout": layout, "trial": name, "us": ts,
                             "config": str(trials[name][1]) if name in trials else None, "bit_same": same.get(name)})
            print(f"wave {shape} {layout} M={m} ({cfg}):\n  " + "\n  ".join(
                f"{name:24s} {ts[0]:7.2f} {ts[1]:7.2f}{'' if same.get(name, True) else '  DIFFERS'}"
                for name, ts in times.items()), flush=True)
            want = None


def _per_call_us(fn, calls=2000) -> float:
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls // 5):
            fn()
        best = min(best, (time.perf_counter() - t0) / (calls // 5) * 1e6)
        torch.cuda.synchronize()
    return best


def fusedsum_part(rows: list) -> None:
    """The consumer at M <= 256 with its K splits added in its one launch (``scripts/fused_split_k.py``)
    against the shipped two launches, each at the shipped dispatch's launch: CUDA-graph median and as
    called (no graph, host path included), output compared bit for bit with the shipped consumer's."""
    from scripts.fused_split_k import fused_split_bmm

    for shape in ("dep8", "tep8"):
        for m in (1, 64, 256):
            (a, a_scale, w, ws), n, k, out, base = consumer_setup(shape, m)
            cfg = kernels.consumer_config(m, n, k, timing.SHAPES[shape], a.device)
            want = kernels.fp8_block_bmm(a, a_scale, w, ws)
            try:
                got = fused_split_bmm(a, a_scale, w, ws, cfg)
                torch.cuda.synchronize()
                fused = timing.time_cuda(lambda: fused_split_bmm(a, a_scale, w, ws, cfg), REPS_MS).median_us
            except Exception as e:  # noqa: BLE001 - a launch that cannot compile is a row, not a stop
                rows.append({"part": "fusedsum", "shape": shape, "M": m, "config": str(cfg),
                             "error": f"{type(e).__name__}: {e}"[:300]})
                print(f"fusedsum {shape} M={m}: {type(e).__name__}: {e}"[:300], flush=True)
                continue
            same = bool(torch.equal(got.view(torch.int16), want.view(torch.int16)))
            called = {"shipped": timing.as_called_us(lambda: kernels.fp8_block_bmm(a, a_scale, w, ws), base["shipped"]),
                      "fused": timing.as_called_us(lambda: fused_split_bmm(a, a_scale, w, ws, cfg), fused)}
            rows.append({"part": "fusedsum", "shape": shape, "M": m, "config": str(cfg), "us": fused, "bit_same": same,
                         "as_called_us": called["fused"], "shipped_as_called_us": called["shipped"],
                         "vs_scaled_mm": base["scaled_mm"] / fused, **base})
            print(f"fusedsum {shape} M={m} split {cfg.split_k}: graph fused {fused:.1f} shipped {base['shipped']:.1f} "
                  f"scaled_mm {base['scaled_mm']:.1f} (x{base['scaled_mm'] / fused:.2f}); as called fused "
                  f"{called['fused']:.1f} shipped {called['shipped']:.1f}; {'same bits' if same else 'DIFFERS'}",
                  flush=True)


def fusedgrid_part(rows: list) -> None:
    """The consumer at tep8 M 1/64/256 with its K splits added in its one launch (``scripts/fused_split_k.py``)
    at BLOCK_N 32/64/128, K split 2-8 and 3/4 stages, each timed twice, bits compared with the shipped
    consumer's output; next to the shipped two launches and ``torch._scaled_mm`` blockwise."""
    from scripts.fused_split_k import fused_split_bmm

    for m in (1, 64, 256):
        (a, a_scale, w, ws), n, k, _, base = consumer_setup("tep8", m)
        shipped = kernels.consumer_config(m, n, k, 1, a.device)
        want = kernels.fp8_block_bmm(a, a_scale, w, ws)
        timed = []
        for bn in (32, 64, 128):
            for sk in (2, 4, 8):
                for st in (3, 4):
                    cfg = ConsumerConfig(shipped.block_m, bn, 4, st, sk, prefetch_scales=True)
                    got = fused_split_bmm(a, a_scale, w, ws, cfg)
                    torch.cuda.synchronize()
                    same = bool(torch.equal(got.view(torch.int16), want.view(torch.int16)))
                    ts = [timing.time_cuda(lambda c=cfg: fused_split_bmm(a, a_scale, w, ws, c), REPS_MS).median_us
                          for _ in range(2)]
                    rows.append({"part": "fusedgrid", "shape": "tep8", "M": m, "config": str(cfg), "us": ts,
                                 "bit_same": same, "shipped_config": str(shipped), **base})
                    timed.append((min(ts), ts, cfg, same))
        timed.sort(key=lambda t: t[0])
        print(f"fusedgrid tep8 M={m}: scaled_mm {base['scaled_mm']:.1f} (2x needs {base['scaled_mm'] / 2:.1f}) shipped "
              f"{base['shipped']:.1f} | " + " | ".join(f"{c.block_n}/{c.num_stages}s/k{c.split_k} {'/'.join(f'{t:.1f}' for t in ts)}"
                                                      f"{'' if same else ' BITS DIFFER'}" for _, ts, c, same in timed[:6]),
              flush=True)
        a = a_scale = w = ws = want = None
        torch.cuda.empty_cache()


def pdl_part(rows: list) -> None:
    """The split launches at M 1/64/256 with the split-K sum launched as the products kernel's programmatic
    dependent (``SPLIT_PDL``) and without, each timed twice in alternating rounds (CUDA graph, and as called),
    bits compared with the launch without; and what ran (the provenance record says ``pdl_sum``)."""
    fbm = importlib.import_module("accval.kernels.fp8_block_bmm")
    for shape, m, operands, k, out, base, cfg in _split_cases("pdl", (1, 64, 256)):
        outs, times, called, ran = {}, {True: [], False: []}, {}, {}
        for _ in range(2):
            for pdl in (False, True):
                with launch_constant("fp8_block_bmm", "SPLIT_PDL", pdl):
                    fn = lambda: launch_consumer(*operands, out, cfg)  # noqa: E731
                    times[pdl].append(timing.time_cuda(fn, REPS_MS).median_us)
                    with provenance.capture() as got:
                        outs[pdl] = launch_consumer(*operands, torch.empty_like(out), cfg)
                    ran[pdl] = dict(got[-1].details).get("pdl_sum")
                    fbm._PLANS.clear()
                    called[pdl] = timing.as_called_us(lambda: kernels.fp8_block_bmm(*operands), times[pdl][-1])
        torch.cuda.synchronize()
        same = bool(torch.equal(outs[True].view(torch.int16), outs[False].view(torch.int16)))
        rows.append({"part": "pdl", "shape": shape, "M": m, "config": str(cfg), "us_without": times[False],
                     "us_with": times[True], "as_called_without": called[False], "as_called_with": called[True],
                     "recorded_pdl_sum": ran, "bit_same": same, **base})
        print(f"pdl {shape} M={m}: scaled_mm {base['scaled_mm']:.1f} | without {'/'.join(f'{t:.2f}' for t in times[False])} "
              f"with {'/'.join(f'{t:.2f}' for t in times[True])} | as called {called[False]:.1f} vs {called[True]:.1f} | "
              f"recorded {ran} | {'same bits' if same else 'BITS DIFFER'}", flush=True)
        operands = out = outs = None
        torch.cuda.empty_cache()


#: ``--parts gluonsplit``: (BLOCK_M, BLOCK_N, TMA buffers, K splits) of the Gluon kernel's split launches
GLUON_SPLIT_LAUNCHES = [(64, bn, 4, sk) for bn in (64, 128) for sk in (4, 8, 16)] + [(128, 128, 4, 8)]


def gluonsplit_part(rows: list) -> None:
    """The Gluon kernel with K split (``GLUON_SPLIT_LAUNCHES``) where the table splits K, against the shipped
    Triton split launch: each timed twice in alternating rounds, bits compared with the pointer launch of
    the same splits."""
    for shape, m, operands, k, out, base, shipped in _split_cases("gluonsplit", (64, 256)):
        launches = [shipped] + [ConsumerConfig(bm, bn, bm // 16, st, sk, tma=True, wgmma=True)
                                for bm, bn, st, sk in GLUON_SPLIT_LAUNCHES if sk <= k // 128]
        times, same = {c: [] for c in launches}, {}
        for c in launches:
            want = launch_consumer(*operands, torch.empty_like(out), ConsumerConfig(64, c.block_n, 4, 3, c.split_k))
            got = launch_consumer(*operands, torch.empty_like(out), c)
            torch.cuda.synchronize()
            same[c] = bool(torch.equal(got.view(torch.int16), want.view(torch.int16)))
        for _ in range(2):
            for c in launches:
                times[c].append(timing.time_cuda(lambda c=c: launch_consumer(*operands, out, c), REPS_MS).median_us)
        for c in launches:
            rows.append({"part": "gluonsplit", "shape": shape, "M": m, "config": str(c), "us": times[c],
                         "bit_same": same[c], "is_shipped": c == shipped, **base})
        order = sorted(launches, key=lambda c: min(times[c]))
        print(f"gluonsplit {shape} M={m}: scaled_mm {base['scaled_mm']:.1f} (2x needs {base['scaled_mm'] / 2:.1f}) | "
              + " | ".join(f"{'gluon' if c.wgmma else 'triton*'} {c.block_m}/{c.block_n}/{c.num_stages}s/k{c.split_k} "
                           f"{'/'.join(f'{t:.2f}' for t in times[c])}{'' if same[c] else ' BITS DIFFER'}" for c in order),
              flush=True)
        operands = out = None
        torch.cuda.empty_cache()


def _against_scaled_mm(label: str, us: float, same: bool, base: dict) -> str:
    """One launch's cell of a consumer part's line: its us, its speed-up over ``torch._scaled_mm``, and whether its bits differ."""
    return f"{label} {us:.1f}us x{base['scaled_mm'] / us:.2f}{'' if same else ' BITS DIFFER'}"


def _print_consumer_line(part: str, shape: str, m: int, base: dict, cells: list[str]) -> None:
    print(f"{part} {shape} M={m}: scaled_mm {base['scaled_mm']:.1f} shipped {base['shipped']:.1f} "
          f"(x{base['scaled_mm'] / base['shipped']:.2f}) | " + " | ".join(cells), flush=True)


WGMMA_LAUNCHES = [ConsumerConfig(bm, 128, bm // 16, st, tma=True, wgmma=True) for bm in (128, 64) for st in (4, 3)]


def wgmma_part(ms, rows: list) -> None:
    for shape in ("dep8", "tep8"):
        for m in ms:
            operands, n, k, out, base = consumer_setup(shape, m)
            refs: dict = {}
            line = []
            for c in [ConsumerConfig(64, 128, 4, 3, tma=True), *WGMMA_LAUNCHES]:
                try:
                    with provenance.capture() as ran:  # what runs (a wgmma launch where it cannot run says so)
                        launch_consumer(*operands, out, c)
                except Exception as e:  # noqa: BLE001 - a launch that cannot compile is a row, not a stop
                    rows.append({"part": "wgmma", "shape": shape, "M": m, "config": str(c), "error": f"{type(e).__name__}: {e}"[:300]})
                    continue
                got = _consumer_trial("wgmma", shape, m, operands, out, c, refs, base, rows, ran=ran[-1].detail("kernel"))
                if got is not None:
                    line.append(_against_scaled_mm(f"{ran[-1].detail('kernel')} {c.block_m}/{c.num_warps}w/{c.num_stages}s",
                                                   *got, base))
            _print_consumer_line("wgmma", shape, m, base, line)
            operands = out = refs = None
            torch.cuda.empty_cache()


#: (BLOCK_M, warps, TMA buffers) x blocks per unrolled chunk of the Gluon kernel timed by ``--parts unroll``, as
#: it was before its scaling was pinned between waits (PIN_FMA and DEFER_LAST off)
UNROLL_LAUNCHES = [(ConsumerConfig(bm, 128, bm // 16, st, tma=True, wgmma=True),
                    dict(UNROLL=u, PIN_FMA=False, DEFER_LAST=False)) for bm in (64, 128) for st in (3, 4) for u in (1, 2)]


def _schedule_part(part: str, ms, rows: list, launches) -> None:
    """Each ``(config, constants)`` of ``launches``: the Gluon kernel's launch with
    ``accval.kernels.fp8_block_bmm_wgmma``'s constants set so (:func:`launch_constant`), at the DeepSeek-V4-Pro
    shapes and ``ms``, each twice in alternating rounds; bits compared with the plain pointer launch."""
    for shape in ("dep8", "tep8"):
        for m in ms:
            operands, n, k, out, base = consumer_setup(shape, m)
            refs: dict = {}
            line = []
            for rep in range(2):
                for c, constants in launches:
                    with contextlib.ExitStack() as stack:
                        for name, value in constants.items():
                            stack.enter_context(launch_constant("fp8_block_bmm_wgmma", name, value))
                        got = _consumer_trial(part, shape, m, operands, out, c, refs, base, rows, rep=rep,
                                              **{name.lower(): value for name, value in constants.items()})
                    if got is not None:
                        label = (f"{c.block_m}/{c.num_warps}w/{c.num_stages}s {_schedule_label(constants)}"
                                 + (f" persistent {c.persistent}/SM" if c.persistent else "")
                                 + (" loader warp" if c.loader_warp else ""))
                        line.append(_against_scaled_mm(label, *got, base))
            _print_consumer_line(part, shape, m, base, line)
            operands = out = refs = None
            torch.cuda.empty_cache()


def _schedule_label(constants: dict) -> str:
    if not constants:
        return "shipped schedule"
    return (f"u{constants['UNROLL']}" + (" pin" if constants.get("PIN_FMA") else "")
            + (" defer" if constants.get("DEFER_LAST") else ""))


#: (BLOCK_M, warps, 4 TMA buffers) x the Gluon kernel's schedule (``accval.kernels.fp8_block_bmm_wgmma``'s
#: UNROLL, PIN_FMA, DEFER_LAST) timed by ``--parts pin``: the kernel before the scaling was pinned (2 blocks
#: per chunk), pinned at 2-16 blocks per chunk, and each chunk's last product deferred to the next chunk
PIN_LAUNCHES = [(ConsumerConfig(bm, 128, bm // 16, 4, tma=True, wgmma=True), dict(UNROLL=u, PIN_FMA=pin, DEFER_LAST=defer))
                for bm in (64, 128)
                for u, pin, defer in ((2, False, False), (2, True, False), (4, True, False), (8, True, False),
                                      (16, True, False), (2, True, True), (4, True, True), (8, True, True))]


#: the Gluon kernel's launches timed by ``--parts chunks`` (its shipped schedule): (BLOCK_M, warps, TMA buffers) x
#: blocks per chunk
CHUNK_LAUNCHES = [(ConsumerConfig(bm, 128, bm // 16, st, tma=True, wgmma=True), dict(UNROLL=u))
                  for bm, st, u in ((128, 3, 4), (128, 4, 4), (128, 5, 4), (128, 6, 4), (128, 4, 3), (128, 4, 6),
                                    (64, 3, 4), (64, 4, 4), (64, 4, 3))]


#: the Gluon kernel's table launches, one program per tile and persistent (``ConsumerConfig.persistent``: 1 or 2
#: programs per SM, each taking every P-th tile with its TMA buffers running on), timed by ``--parts persistent``
PERSISTENT_LAUNCHES = [(ConsumerConfig(bm, 128, bm // 16, 4, tma=True, wgmma=True, persistent=p), {})
                       for bm, ps in ((128, (0, 1)), (64, (0, 1, 2))) for p in ps]


#: the Gluon kernel's table launches with its own warps loading and with a loader warp
#: (``ConsumerConfig.loader_warp``: warp specialization) at 3-6 TMA buffers, timed by ``--parts loader``
LOADER_LAUNCHES = [(ConsumerConfig(bm, 128, bm // 16, st, tma=True, wgmma=True, loader_warp=lw), {})
                   for bm, st, lw in ((128, 4, False), (128, 3, True), (128, 4, True), (128, 5, True), (128, 6, True),
                                      (64, 4, False), (64, 4, True))]


TABLE_CANDIDATES = [ConsumerConfig(64, 128, 4, 3), ConsumerConfig(64, 128, 4, 3, tma=True),
                    *[ConsumerConfig(bm, 128, bm // 16, st, tma=True, wgmma=True) for bm in (64, 128) for st in (3, 4)]]


def table_part(ms, rows: list) -> None:
    fbm = importlib.import_module("accval.kernels.fp8_block_bmm")
    wg = importlib.import_module("accval.kernels.fp8_block_bmm_wgmma")
    for shape in ("dep8", "tep8"):
        for m in ms:
            operands, n, k, out, base = consumer_setup(shape, m)
            a, _, b, _ = operands
            g = a.shape[0]
            shipped_cfg = kernels.consumer_config(m, n, k, g, a.device)
            base["shipped_as_called"] = timing.as_called_us(lambda: kernels.fp8_block_bmm(*operands), base["shipped"])
            if m == ms[0]:
                wg_launch = fbm._triton_launch(TABLE_CANDIDATES[-1], g, m, n, k, fbm.SCALE_M_ALIGN, False, fbm._sm_count(a.device))
                for what, make in (("gluon descriptors x2, built", lambda: wg.descriptors(a, b, *wg_launch.tma[:2], k, *wg_launch.tma[2:])),
                                   ("gluon descriptors x2, as a call gets them", lambda: wg_launch.descriptors(a, b, k))):
                    us = _per_call_us(make)
                    rows.append({"part": "table", "shape": shape, "M": m, "what": what, "us_per_call_host": us})
                    print(f"table {shape} M={m}: {what} {us:.2f} us per call (host)", flush=True)
            refs: dict = {}
            line = []
            for c in TABLE_CANDIDATES:
                call = lambda: kernels.fp8_block_bmm(*operands)  # noqa: E731
                with table_says(c):
                    with provenance.capture() as ran:
                        call()
                    got = _consumer_trial("table", shape, m, operands, out, c, refs, base, rows,
                                          ran=f"{ran[-1].detail('kernel')}/{ran[-1].detail('loads')}")
                    if got is None:
                        continue
                    us, same = got
                    called = timing.as_called_us(call, us)
                rows[-1].update(as_called_us=called, shipped_config=str(shipped_cfg))
                line.append(f"{ran[-1].detail('kernel')[:5]}/{ran[-1].detail('loads')[:3]} {c.block_m}/{c.num_warps}w/"
                            f"{c.num_stages}s {us:.1f} called {called:.1f}{'' if same else ' BITS DIFFER'}")
            print(f"table {shape} M={m}: scaled_mm {base['scaled_mm']:.1f} shipped {base['shipped']:.1f} called "
                  f"{base['shipped_as_called']:.1f} | " + " | ".join(line), flush=True)
            operands = out = refs = a = b = None
            torch.cuda.empty_cache()


def host_part(rows: list) -> None:
    from accval.kernels import host

    for shape in ("dep8", "tep8"):
        g = timing.SHAPES[shape]
        o, pos, cache, p, fp8, scale, _ = timing.producer_inputs(64, g, True)
        pargs = (o, pos, cache, g, p.heads_per_group, p.nope_dim, p.rope_dim)
        a, a_scale, w, ws, n, k = timing.consumer_inputs(64, g)
        calls = {"producer": lambda: kernels.inv_rope_fp8_quant(*pargs),
                 "consumer": lambda: kernels.fp8_block_bmm(a, a_scale, w, ws)}
        pieces = {
            "eager_call": host.eager_call,
            "layout_key x3": lambda: host.layout_key(o, pos, cache),
            "torch.empty x2 (cuda)": lambda: (torch.empty(p.fp8_shape(), dtype=kernels.FP8_DTYPE, device="cuda"),
                                              torch.empty(p.scale_shape(), dtype=torch.float32, device="cuda")),
            "current stream (triton driver)": lambda: host._driver.active.get_current_stream(host._driver.active.get_current_device()),
            "launch_producer (no plan)": lambda: launch_producer(p, o, pos, cache, fp8, scale, config_for(64, o.device)),
        }
        for name, fn in {**calls, **pieces}.items():
            us = _per_call_us(fn)
            rows.append({"part": "host", "shape": shape, "what": name, "us_per_call_host": us})
            print(f"host {shape} {name}: {us:.2f} us per call (host, no sync)", flush=True)
        for name, fn in calls.items():
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(2000):
                fn()
            prof.disable()
            torch.cuda.synchronize()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(14)
            text = buf.getvalue()
            rows.append({"part": "host-profile", "shape": shape, "what": name, "profile": text})
            print(f"--- cProfile {shape} {name}, 2000 calls ---\n" + "\n".join(text.splitlines()[6:24]), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="prefetch,producer,host", help="comma-separated (default: %(default)s)")
    ap.add_argument("--ms", default="64,256,1024,2048,4096,8192", help="M of the consumer parts (default: %(default)s)")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    ap.add_argument("--baseline", type=Path, help="layouts, wave: another version of accval/kernels/inv_rope_fp8_quant.py to time beside")
    ap.add_argument("--baseline-rounding", type=Path,
                    help="with --baseline: the version of accval/kernels/fp8_rounding.py it imports (default: the working tree's)")
    args = ap.parse_args()
    rounding = args.baseline_rounding
    if rounding is not None and (args.baseline is None or not rounding.is_file()):
        print(f"--baseline-rounding: expected a version of accval/kernels/fp8_rounding.py and --baseline, got {rounding}"
              f"{'' if rounding.is_file() else ' (no such file)'}{'' if args.baseline else ' without --baseline'}",
              file=sys.stderr)
        return 2
    if args.baseline is not None and not args.baseline.is_file():
        print(f"--baseline: expected a version of accval/kernels/inv_rope_fp8_quant.py, got {args.baseline} (no such file)",
              file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("speed_probe needs a CUDA GPU", file=sys.stderr)
        return 2
    env = timing.environment()
    print(env, flush=True)
    timing.warm_up_clocks()
    rows: list = []
    parts = args.parts.split(",")
    t0 = time.perf_counter()
    ms = lambda: [int(x) for x in args.ms.split(",")]  # noqa: E731 - read by the consumer parts only
    # the parts, in the order they run
    run = {"prefetch": lambda: prefetch_part(ms(), rows), "consumer": lambda: consumer_part(ms(), rows),
           "smallm": lambda: smallm_part(rows), "division": lambda: division_part(rows), "regs": lambda: regs_part(rows),
           "layouts": lambda: layouts_part(rows, args.baseline, args.baseline_rounding), "ceiling": lambda: ceiling_part(rows),
           "producer": lambda: producer_part(rows), "host": lambda: host_part(rows),
           "fusedsum": lambda: fusedsum_part(rows), "wgmma": lambda: wgmma_part(ms(), rows),
           "table": lambda: table_part(ms(), rows), "unroll": lambda: _schedule_part("unroll", ms(), rows, UNROLL_LAUNCHES),
           "pin": lambda: _schedule_part("pin", ms(), rows, PIN_LAUNCHES),
           "chunks": lambda: _schedule_part("chunks", ms(), rows, CHUNK_LAUNCHES),
           "persistent": lambda: _schedule_part("persistent", ms(), rows, PERSISTENT_LAUNCHES),
           "loader": lambda: _schedule_part("loader", ms(), rows, LOADER_LAUNCHES),
           "deep": lambda: deep_part(rows), "sums": lambda: sums_part(rows),
           "wave": lambda: wave_part(rows, args.baseline, args.baseline_rounding), "rounding": lambda: rounding_part(rows),
           "splitfma": lambda: splitfma_part(rows), "m64": lambda: m64_part(rows),
           "floors": lambda: floors_part(rows), "fusedgrid": lambda: fusedgrid_part(rows), "pdl": lambda: pdl_part(rows), "gluonsplit": lambda: gluonsplit_part(rows)}
    unknown = set(parts) - set(run)
    if unknown:
        print(f"--parts: expected some of {','.join(run)}, got {sorted(unknown)}", file=sys.stderr)
        return 2
    try:
        for name, part in run.items():
            if name in parts:
                part()
    finally:
        print(f"({time.perf_counter() - t0:.0f} s)")
        if args.out:
            args.out.write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
