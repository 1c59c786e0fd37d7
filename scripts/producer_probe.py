"""The producer on a GPU: bit-exactness first, then where its time goes, per RoPE layout.

One call does everything a tuning round needs (the device is lent by the minute):
  1. correctness on the GPU: the shipped producer against the mirror reference, bit for bit, in
     both layouts (DSv4-Pro shapes, awkward M, forced token blocks), blocks holding NaN/+Inf/-Inf,
     positions read through a stride; and the upstream-style baseline's distance from it;
  2. times (CUDA-graph medians) per shape, layout and M: another version of the producer
     (``--before FILE``: a ``accval/kernels/inv_rope_fp8_quant.py``, e.g. from
     ``git show REV:accval/kernels/inv_rope_fp8_quant.py``) at its dispatch, the shipped kernel at
     candidate launches, the upstream-style kernel (``accval.kernels.baselines``) at 1/2/4/8 warps, and a
     device copy of the same bytes;
  3. the host path at M=64: each step of a call timed on its own (host clock, no sync) and the
     public functions "as called" (back to back, no graph) against their kernels
     (``scripts/host_path.py`` measures the host path alone, at M 1, 64, 256).

    python scripts/producer_probe.py [--before FILE] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import accval.kernels as kernels  # noqa: E402
from accval.bench import timing  # noqa: E402
from accval.kernels import provenance  # noqa: E402
from accval.kernels.baselines import upstream_style_producer  # noqa: E402
from accval.kernels.fp8_block_bmm import validate_consumer_args  # noqa: E402
from accval.kernels.inv_rope_fp8_quant import LaunchConfig, config_for, launch_producer, validate_producer_args  # noqa: E402
from accval.kernels.reference import inv_rope_fp8_quant_ref  # noqa: E402
from scripts.kernel_variants import load_variant  # noqa: E402

MS = (64, 256, 1024, 1500, 2048, 4096, 8192)
CANDIDATES = [LaunchConfig(1, w, 1, heads_per_program=hb) for hb in (1, 2, 4, 8) for w in (1, 2, 4) if w <= 2 * hb]
HPG, D, ROPE = timing.DSV4_PRO["heads_per_group"], timing.DSV4_PRO["head_dim"], timing.DSV4_PRO["rope_dim"]


def _mismatch(got, want) -> tuple[int, int]:
    """(fp8 codes that differ, scales that differ; NaN scales equal each other)."""
    codes = int((got[0].view(torch.uint8) != want[0].view(torch.uint8)).sum())
    s1, s2 = got[1], want[1]
    scales = int((~((s1.view(torch.int32) == s2.view(torch.int32)) | (s1.isnan() & s2.isnan()))).sum())
    return codes, scales


def correctness() -> list[dict]:
    out = []
    for layout, is_neox in timing.LAYOUTS.items():
        for shape, m, btm in (("dep8", 1, None), ("dep8", 5, None), ("dep8", 64, None), ("tep8", 1500, None),
                              ("dep8", 2049, None), ("tep8", 4099, None), ("dep8", 77, 8), ("tep8", 301, 16)):
            g = timing.SHAPES[shape]
            o, pos, cache, *_ = timing.producer_inputs(m, g, is_neox)
            args = (o, pos, cache, g, HPG, D - ROPE, ROPE)
            got = kernels.inv_rope_fp8_quant(*args, is_neox=is_neox, block_tokens_m=btm)
            want = inv_rope_fp8_quant_ref(*args, is_neox=is_neox)
            out.append({"check": "random", "layout": layout, "shape": shape, "M": m, "btm": btm,
                        "mismatch": _mismatch(got, want)})
            if m == 64:
                up = upstream_style_producer(*args, is_neox)
                out.append({"check": "upstream-style vs reference (not bit-exact by design)", "layout": layout,
                            "shape": shape, "M": m, "mismatch": _mismatch(up, want)})
        for val in (float("nan"), float("inf"), float("-inf")):
            o, pos, cache, *_ = timing.producer_inputs(12, 1, is_neox)
            o[1, 0, 5] = val  # a nope block
            o[2, 3, 500] = val  # a rope block
            o[3, 2, 510], o[3, 2, 511] = val, -val  # both elements of a GPT-J pair
            o[4, 1, 130] = val
            o[4, 1, 131] = val
            args = (o, pos, cache, 1, HPG, D - ROPE, ROPE)
            got = kernels.inv_rope_fp8_quant(*args, is_neox=is_neox)
            want = inv_rope_fp8_quant_ref(*args, is_neox=is_neox)
            nan_codes = sorted({int(c) for c in got[0].view(torch.uint8).flatten().tolist() if c & 0x7F == 0x7F})
            out.append({"check": f"block with {val}", "layout": layout, "M": 12, "mismatch": _mismatch(got, want),
                        "nan_codes_kernel": nan_codes,
                        "nan_codes_reference": sorted({int(c) for c in want[0].view(torch.uint8).flatten().tolist()
                                                       if c & 0x7F == 0x7F})})
        for step in (2, 3):
            for dt in (torch.int32, torch.int64):
                o, pos, cache, *_ = timing.producer_inputs(33, 8, is_neox)
                wide = torch.full((33 * step,), 2**40 if dt == torch.int64 else 2**30, dtype=dt, device="cuda")
                wide[::step] = pos.to(dt)
                args = (o, wide[::step], cache, 8, HPG, D - ROPE, ROPE)
                got = kernels.inv_rope_fp8_quant(*args, is_neox=is_neox)
                want = inv_rope_fp8_quant_ref(*args, is_neox=is_neox)
                out.append({"check": f"positions stride {step} {dt}", "layout": layout, "M": 33,
                            "mismatch": _mismatch(got, want)})
    torch.cuda.synchronize()
    return out


def timings(before, ms=MS, candidates=CANDIDATES, references=True) -> list[dict]:
    rows = []
    for shape in ("dep8", "tep8"):
        g = timing.SHAPES[shape]
        for m in ms:
            for layout, is_neox in timing.LAYOUTS.items():
                o, pos, cache, p, fp8, scale, nbytes = timing.producer_inputs(m, g, is_neox)
                args = (o, pos, cache, g, HPG, D - ROPE, ROPE)
                fns = {}
                if before is not None:
                    bcfg = before.config_for(m, o.device)
                    fns[f"before {bcfg.block_tokens_m},{bcfg.num_warps},hb{bcfg.heads_per_program}"] = (
                        lambda c=bcfg: before.launch_producer(p, o, pos, cache, fp8, scale, c))
                for cfg in candidates:
                    fns[f"shipped hb{cfg.heads_per_program} w{cfg.num_warps}"] = (
                        lambda c=cfg: launch_producer(p, o, pos, cache, fp8, scale, c))
                for w in ((1, 2, 4, 8) if references else ()):
                    fns[f"upstream-style w{w}"] = (lambda w=w, args=args, fp8=fp8, scale=scale:
                                                     upstream_style_producer(*args, is_neox, fp8, scale, num_warps=w))
                for name, fn in fns.items():
                    us = timing.time_cuda(fn, reps_ms=60).median_us
                    rows.append({"shape": shape, "M": m, "layout": layout, "variant": name, "us": us})
                if references:
                    rows.append({"shape": shape, "M": m, "layout": layout, "variant": "copy-same-bytes",
                                 "us": timing.copy_us(nbytes // 2).median_us, "mbytes": nbytes / 1e6})
                dispatched = config_for(m, o.device, is_neox=is_neox)
                rows.append({"shape": shape, "M": m, "layout": layout, "variant": "dispatched",
                             "config": str(dispatched),
                             "us": timing.time_cuda(lambda: launch_producer(p, o, pos, cache, fp8, scale, dispatched), reps_ms=60).median_us})
                o = fp8 = scale = None  # free the buffers before the next M
            torch.cuda.empty_cache()
    return rows


def _host_us(fn, n=300) -> float:
    """Median host time of one call (no synchronization: what the caller's thread spends)."""
    for _ in range(5):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e6)
        if len(ts) % 50 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    return statistics.median(ts)


def host_path(before) -> list[dict]:
    rows = []
    m = 64
    for shape in ("dep8", "tep8"):
        g = timing.SHAPES[shape]
        for layout, is_neox in timing.LAYOUTS.items():
            o, pos, cache, p, fp8, scale, _ = timing.producer_inputs(m, g, is_neox)
            args = (o, pos, cache, g, HPG, D - ROPE, ROPE)
            cfg = config_for(m, o.device, is_neox=is_neox)
            kernel_us = timing.time_cuda(lambda: launch_producer(p, o, pos, cache, fp8, scale, cfg)).median_us
            steps = {
                "public inv_rope_fp8_quant": lambda: kernels.inv_rope_fp8_quant(*args, is_neox=is_neox),
                "torch.ops.accval.inv_rope_fp8_quant (validates inside)": lambda: torch.ops.accval.inv_rope_fp8_quant(
                    *args, 128, is_neox, 0),
                "validate_producer_args": lambda: validate_producer_args(*args, is_neox=is_neox),
                "launch_producer (launch only)": lambda: launch_producer(p, o, pos, cache, fp8, scale, cfg),
                "two torch.empty": lambda: (torch.empty(p.fp8_shape(), dtype=kernels.FP8_DTYPE, device="cuda"),
                                            torch.empty(p.scale_shape(), device="cuda")),
                "provenance.record": lambda: provenance.record("producer", "triton", "gpu", a=1, b=2, c=3, d=4, e=5, f=6),
            }
            if before is not None:
                steps["before: public inv_rope_fp8_quant"] = lambda: before.inv_rope_fp8_quant(*args, is_neox=is_neox)
            for name, fn in steps.items():
                row = {"op": "producer", "shape": shape, "layout": layout, "M": m, "step": name, "host_us": _host_us(fn),
                       "kernel_us": kernel_us}
                if name.startswith(("public", "before", "torch.ops")):
                    row["as_called_us"] = timing.as_called_us(fn, kernel_us, budget_ms=60)
                rows.append(row)
        a, a_scale, w_fp8, w_scale, n, k = timing.consumer_inputs(m, g)
        torch.cuda.synchronize()
        out = torch.empty(g, m, n, dtype=torch.bfloat16, device="cuda")
        kernel_us = timing.time_cuda(lambda: kernels.fp8_block_bmm(a, a_scale, w_fp8, w_scale, out)).median_us
        steps = {
            "public fp8_block_bmm": lambda: kernels.fp8_block_bmm(a, a_scale, w_fp8, w_scale),
            "validate + torch.ops.accval.fp8_block_bmm (validates twice)": lambda: (
                validate_consumer_args(a, a_scale, w_fp8, w_scale, None, True),
                torch.ops.accval.fp8_block_bmm(a, a_scale, w_fp8, w_scale, "triton", True)),
            "validate_consumer_args": lambda: validate_consumer_args(a, a_scale, w_fp8, w_scale, None, True),
        }
        for name, fn in steps.items():
            row = {"op": "consumer", "shape": shape, "M": m, "step": name, "host_us": _host_us(fn), "kernel_us": kernel_us}
            if name.startswith(("public", "validate +")):
                row["as_called_us"] = timing.as_called_us(fn, kernel_us, budget_ms=60)
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, help="an earlier accval/kernels/inv_rope_fp8_quant.py to time side by side")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--skip-timings", action="store_true")
    ap.add_argument("--check-only", action="store_true", help="only the bit-exactness checks")
    ap.add_argument("--quick", action="store_true",
                    help="only the launch sweep of the shipped kernel at M 1024, 2048, 8192 (no checks, references, host path)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("producer_probe needs a CUDA GPU")
    before, before_path = (None, None)
    if args.before:
        before, before_path = load_variant("inv_rope_fp8_quant.py", "inv_rope_fp8_quant", "before", [],
                                           source=args.before.read_text())
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    try:
        timing.warm_up_clocks()
        if args.quick:
            quick = [LaunchConfig(1, w, 1, heads_per_program=hb) for hb, w in ((1, 1), (2, 1), (4, 1), (8, 2), (2, 2))]
            result["timings"] = timings(None, ms=(1024, 2048, 8192), candidates=quick, references=False)
            for r in result["timings"]:
                print(f"{r['shape']} M={r['M']} {r['layout']} {r['variant']} {r['us']:.1f}")
            return
        result["correctness"] = correctness()
        bad = [c for c in result["correctness"] if c["mismatch"] != (0, 0) and not c["check"].startswith("upstream")]
        print(f"correctness: {len(result['correctness'])} checks, {len(bad)} with mismatches")
        for c in result["correctness"]:
            print("  ", c)
        if args.check_only:
            return
        result["host_path"] = host_path(before)
        if not args.skip_timings:
            result["timings"] = timings(before)
    finally:
        if before_path is not None:
            before_path.unlink(missing_ok=True)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "producer-probe.json").write_text(json.dumps(result, indent=1, default=str))
    print("\n| op | shape | layout | step | host us/call | as called us | kernel us |\n|---|---|---|---|---|---|---|")
    for r in result["host_path"]:
        print(f"| {r['op']} | {r['shape']} | {r.get('layout', '-')} | {r['step']} | {r['host_us']:.1f} | "
              f"{r.get('as_called_us', float('nan')):.1f} | {r['kernel_us']:.1f} |")
    if "timings" in result:
        print("\n| shape | M | layout | best shipped | dispatched | before | best upstream-style | copy | gptj/neox (dispatched) |")
        print("|---|---|---|---|---|---|---|---|---|")
        t = result["timings"]
        for shape in ("dep8", "tep8"):
            for m in MS:
                disp = {}
                for layout in timing.LAYOUTS:
                    sel = [r for r in t if (r["shape"], r["M"], r["layout"]) == (shape, m, layout)]
                    shipped = min((r for r in sel if r["variant"].startswith("shipped")), key=lambda r: r["us"])
                    up = min((r for r in sel if r["variant"].startswith("upstream")), key=lambda r: r["us"])
                    bef = next((r for r in sel if r["variant"].startswith("before")), None)
                    copy = next(r for r in sel if r["variant"] == "copy-same-bytes")
                    d = next(r for r in sel if r["variant"] == "dispatched")
                    disp[layout] = d["us"]
                    print(f"| {shape} | {m} | {layout} | {shipped['variant'][8:]} {shipped['us']:.1f} | {d['us']:.1f} | "
                          f"{bef['us'] if bef else float('nan'):.1f} | {up['variant'][15:]} {up['us']:.1f} | {copy['us']:.1f} | "
                          f"{disp['gptj'] / disp['neox'] if len(disp) == 2 else float('nan'):.3f} |")


if __name__ == "__main__":
    main()
