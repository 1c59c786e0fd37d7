"""Where the NEOX producer's time goes at small M (issue 21): a ladder from the upstream-style kernel to
accval's bits, one ingredient at a time, on a CUDA GPU.

Every rung is the upstream-style kernel's shape (``accval.kernels.baselines``: one program per token and
head, one warp, the head as a [D/128, 128] tile, padding rows by an early branch) with some of what
bit-equality with the legacy path needs switched on:

==========  ========================================================================================
fused       the upstream-style kernel as the bench times it (the compiler may contract a*b + c into fma)
unfused     the same, compiled with ``enable_fp_fusion=False`` as accval's kernels are
+round      the rotated slice rounded to bf16, ``-sin`` as a true negation (``negated``)
+scale      ``scale = div_rn(amax, 448)``, no amax floor; a zero or NaN scale writes codes 0
+quot       codes from ``div_rn_by`` (one reciprocal per block, Markstein's correction), the
            saturating cast without a clamp (``to_fp8_e4m3``)
+nanmax     a NaN-propagating amax (``_block_absmax``): all of the above, accval's bits
+strides    the positions' and the cache's strides as arguments (accval takes any strides)
==========  ========================================================================================

Each rung's codes and scales are compared with accval's (``launch_producer``), and every rung,
accval's launch and the upstream-style kernel are timed twice, alternately (CUDA-graph medians,
``accval.bench.timing.time_cuda``), at DSv4-Pro shapes. A probe: nothing in accval calls it.

    python scripts/producer_ladder.py --out ladder.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from accval.bench.timing import DSV4_PRO, SHAPES, environment, producer_inputs, time_cuda  # noqa: E402
from accval.kernels.baselines import AMAX_FLOOR, upstream_style_producer  # noqa: E402
from accval.kernels.constants import FP8_E4M3_MAX  # noqa: E402
from accval.kernels.fp8_rounding import div_rn_by, negated, round_through, to_fp8_e4m3  # noqa: E402
from accval.kernels.inv_rope_fp8_quant import _nanmax  # noqa: E402

prod = importlib.import_module("accval.kernels.inv_rope_fp8_quant")

RUNGS = {  # name: (fused, ROUND, SCALE, QUOT, NANMAX, STRIDES)
    "fused": (True, False, False, False, False, False),
    "unfused": (False, False, False, False, False, False),
    "+round": (False, True, False, False, False, False),
    "+scale": (False, True, True, False, False, False),
    "+quot": (False, True, True, True, False, False),
    "+nanmax": (False, True, True, True, True, False),
    "+strides": (False, True, True, True, True, True),
}


@triton.jit
def _ladder_kernel(
    o_ptr, pos_ptr, cs_ptr, fp8_ptr, scale_ptr, M, rows_end,
    stride_o_m, stride_o_h, stride_pos, stride_cs_pos, stride_cs_sin, stride_cs_i,
    stride_fp8_g, stride_scale_g, stride_scale_b,
    HPG: tl.constexpr, D: tl.constexpr, ROPE: tl.constexpr, FP8_MAX: tl.constexpr, AMAX_FLOOR: tl.constexpr,
    ROUND: tl.constexpr, SCALE: tl.constexpr, QUOT: tl.constexpr, NANMAX: tl.constexpr, STRIDES: tl.constexpr,
):
    m = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    g = head // HPG
    h = head % HPG
    NBH: tl.constexpr = D // 128
    HALF: tl.constexpr = ROPE // 2
    blk = tl.arange(0, NBH)[:, None]
    offs = blk * 128 + tl.arange(0, 128)[None, :]
    scale_ptrs = scale_ptr + g * stride_scale_g + (h * NBH + tl.arange(0, NBH)) * stride_scale_b + m
    if m >= M:
        tl.store(scale_ptrs, tl.zeros([NBH], dtype=tl.float32), mask=m < rows_end)
        return
    row = o_ptr + m * stride_o_m + head * stride_o_h
    x = tl.load(row + offs).to(tl.float32)
    r = offs - (D - ROPE)
    is_rope = r >= 0
    first = r < HALF
    partner = tl.where(first, offs + HALF, offs - HALF)
    freq = tl.where(first, r, r - HALF)
    xp = tl.load(row + partner, mask=is_rope, other=0.0).to(tl.float32)
    if STRIDES:
        pos = tl.load(pos_ptr + m * stride_pos).to(tl.int64)
        cs = cs_ptr + pos * stride_cs_pos + freq * stride_cs_i
        cos = tl.load(cs, mask=is_rope, other=1.0)
        sin = tl.load(cs + stride_cs_sin, mask=is_rope, other=0.0)
    else:
        pos = tl.load(pos_ptr + m).to(tl.int64)
        cos = tl.load(cs_ptr + pos * stride_cs_pos + freq, mask=is_rope, other=1.0)
        sin = tl.load(cs_ptr + pos * stride_cs_pos + HALF + freq, mask=is_rope, other=0.0)
    if ROUND:
        y = tl.where(is_rope, round_through(x * cos + xp * tl.where(first, sin, negated(sin)), tl.bfloat16, False), x)
    else:
        y = tl.where(is_rope, x * cos + tl.where(first, xp * sin, -xp * sin), x)
    if NANMAX:
        amax = _nanmax(tl.abs(y), 1, False)
    else:
        amax = tl.max(tl.abs(y), axis=1)
    if SCALE:
        scale = tl.math.div_rn(amax, FP8_MAX)
        safe = tl.where(scale > 0, scale, 1.0)[:, None]
        if QUOT:
            q = tl.where(scale[:, None] > 0, div_rn_by(y, safe, False), 0.0)
            codes = to_fp8_e4m3(q, FP8_MAX, False)
        else:
            q = tl.where(scale[:, None] > 0, y / safe, 0.0)
            codes = tl.clamp(q, -FP8_MAX, FP8_MAX).to(tl.float8e4nv)
    else:
        scale = tl.maximum(amax, AMAX_FLOOR) * (1.0 / FP8_MAX)
        codes = tl.clamp(y / scale[:, None], -FP8_MAX, FP8_MAX).to(tl.float8e4nv)
    tl.store(fp8_ptr + g * stride_fp8_g + m * (HPG * D) + h * D + offs, codes)
    tl.store(scale_ptrs, scale)


def ladder(rung: str, o, pos, cache, fp8, scale, g: int, hpg: int, rope: int) -> None:
    fused, rnd, sc, quot, nan, strides = RUNGS[rung]
    m, heads, d = o.shape
    rows_end = scale.shape[-1]
    _ladder_kernel[(rows_end, heads)](
        o, pos, cache, fp8, scale, m, rows_end, o.stride(0), o.stride(1), pos.stride(0), cache.stride(0),
        rope // 2 * cache.stride(1), cache.stride(1), fp8.stride(0), scale.stride(0), scale.stride(1),
        HPG=hpg, D=d, ROPE=rope, FP8_MAX=FP8_E4M3_MAX, AMAX_FLOOR=AMAX_FLOOR, ROUND=rnd, SCALE=sc, QUOT=quot,
        NANMAX=nan, STRIDES=strides, num_warps=1, **({} if fused else {"enable_fp_fusion": False}))


def measure(ms: tuple[int, ...], reps_ms: int) -> list[dict]:
    rope, hpg, d = DSV4_PRO["rope_dim"], DSV4_PRO["heads_per_group"], DSV4_PRO["head_dim"]
    rows = []
    for shape, g in SHAPES.items():
        for m in ms:
            o, pos, cache, p, fp8, scale, _ = producer_inputs(m, g, True)
            cfg = prod.config_for(m, o.device, is_neox=True)
            fns, outs = {}, {}
            fns["accval"] = lambda: prod.launch_producer(p, o, pos, cache, fp8, scale, cfg)
            fu, su = torch.empty_like(fp8), torch.empty_like(scale)
            fns["upstream-style"] = lambda: upstream_style_producer(o, pos, cache, g, hpg, d - rope, rope, True, fu, su,
                                                                    num_warps=1)
            for rung in RUNGS:
                f8, sc = torch.empty_like(fp8), torch.empty_like(scale)
                fns[rung] = lambda rung=rung, f8=f8, sc=sc: ladder(rung, o, pos, cache, f8, sc, g, hpg, rope)
                outs[rung] = (f8, sc)
            for fn in fns.values():
                fn()
            torch.cuda.synchronize()
            codes_off = {k: int((f8.view(torch.uint8) != fp8.view(torch.uint8)).sum()) for k, (f8, _) in outs.items()}
            scales_off = {k: int((sc.view(torch.int32) != scale.view(torch.int32)).sum()) for k, (_, sc) in outs.items()}
            times = {k: [] for k in fns}
            for _ in range(2):
                for k, fn in fns.items():
                    times[k].append(time_cuda(fn, reps_ms).median_us)
            rows.append(dict(shape=shape, M=m, accval_config=prod.launched_config(cfg, g * hpg, m),
                             codes_off_accval=codes_off, scales_off_accval=scales_off, us=times))
            print(f"{shape} M={m}: " + "  ".join(f"{k} {t[0]:.2f}/{t[1]:.2f}" for k, t in times.items()), flush=True)
            print("   codes/scales off accval's: " + "  ".join(f"{k} {codes_off[k]}/{scales_off[k]}" for k in RUNGS),
                  flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ms", default="64,256,1024", help="token counts, comma-separated (default: 64,256,1024)")
    ap.add_argument("--reps-ms", type=int, default=100, help="milliseconds of repetitions per timing (default: 100)")
    ap.add_argument("--out", type=Path, required=True, help="JSON to write")
    args = ap.parse_args()
    rows = measure(tuple(int(x) for x in args.ms.split(",")), args.reps_ms)
    args.out.write_text(json.dumps({"environment": environment(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
