"""``accval bench --sweep``: every candidate launch configuration at the DeepSeek-V4-Pro shapes, the
measurements behind the per-architecture dispatch tables in ``kernels`` (they cite the file this
writes)."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import torch

from accval.kernels.inv_rope_fp8_quant import LaunchConfig, launch_producer

from .timing import (
    LAYOUTS,
    SHAPES,
    consumer_inputs,
    copy_ceiling_tb_per_s,
    environment,
    per_s,
    producer_inputs,
    time_cuda,
    warm_up_clocks,
)

PRODUCER_SWEEP = [LaunchConfig(1, w, 1, heads_per_program=hb) for hb in (1, 2, 4, 8, 16) for w in (1, 2, 4, 8)
                  if w <= 2 * hb] + [LaunchConfig(8, 2, 2, tokens_per_iter=1), LaunchConfig(8, 4, 2, tokens_per_iter=8)]
#: do_bench's window per swept launch, ms
SWEEP_REPS_MS = 100


def consumer_sweep_configs(m: int) -> list:
    from accval.kernels import ConsumerConfig

    if m <= 256:
        bm = 64 if m <= 64 else 128
        return [ConsumerConfig(bm, bn, 4, st, sk) for bn in (32, 64, 128) for st in (3, 4) for sk in (1, 2, 4, 8, 16)]
    return ([ConsumerConfig(128, bn, w, st, 1, d) for bn in (64, 128) for w in (4, 8) for st in (3, 4, 5)
             for d in (False, True)]
            + [ConsumerConfig(64, 128, 4, st, 1, d) for st in (3, 4) for d in (False, True)]
            + [ConsumerConfig(64, 128, 8, st, 1, True) for st in (3, 4)])


def run(ms=(64, 256, 1024, 2048, 8192), shapes=("dep8", "tep8"), ops=("producer", "consumer"),
        out_dir: Path | None = None, layouts=("neox", "gptj")) -> dict:
    """Time every candidate launch configuration at the DeepSeek-V4-Pro shapes; with ``out_dir``,
    write ``sweep-<device>-<date>-<time>.json`` there."""
    from accval.kernels.fp8_block_bmm import launch_consumer

    swept = ("producer", "consumer")
    if not ops or set(ops) - set(swept):
        raise ValueError(f"--ops with --sweep: expected a non-empty subset of {swept}, got {list(ops)}")
    if not torch.cuda.is_available():
        raise RuntimeError("accval bench --sweep needs a CUDA GPU; this machine has none")
    warm_up_clocks()
    env = environment()
    ceiling = copy_ceiling_tb_per_s()
    rows = []
    for shape in shapes:
        g = SHAPES[shape]
        for m in ms:
            for layout in (layouts if "producer" in ops else ()):
                o, pos, cache, p, fp8, scale, nbytes = producer_inputs(m, g, LAYOUTS[layout])
                for cfg in PRODUCER_SWEEP:
                    med, p20, p80, how = time_cuda(lambda o=o, fp8=fp8, scale=scale, cfg=cfg: launch_producer(p, o, pos, cache, fp8, scale, cfg),
                                                   reps_ms=SWEEP_REPS_MS)
                    rows.append({"op": "producer", "shape": shape, "layout": layout, "M": m, "config": str(cfg),
                                 "median_us": med, "p20_us": p20, "p80_us": p80,
                                 "pct_copy_ceiling": 100 * per_s(nbytes, med) / ceiling, "timing": how})
                o = fp8 = scale = None  # free the buffers before the next M
            if "consumer" in ops:
                a, a_scale, w_fp8, w_scale, n, k = consumer_inputs(m, g)
                out = torch.empty(g, m, n, device="cuda", dtype=torch.bfloat16)
                for cfg in consumer_sweep_configs(m):
                    try:
                        med, p20, p80, how = time_cuda(lambda: launch_consumer(a, a_scale, w_fp8, w_scale, out, cfg),
                                                       reps_ms=SWEEP_REPS_MS)
                    except Exception as e:  # e.g. out of shared memory: recorded, not timed
                        rows.append({"op": "consumer", "shape": shape, "M": m, "config": str(cfg), "error": f"{type(e).__name__}: {e}"[:200]})
                        continue
                    rows.append({"op": "consumer", "shape": shape, "M": m, "config": str(cfg), "median_us": med,
                                 "p20_us": p20, "p80_us": p80, "tflops": per_s(2 * g * m * n * k, med), "timing": how})
                del a, a_scale, w_fp8, w_scale, out
            torch.cuda.empty_cache()
    result = {"schema": 1, "kind": "sweep", **env, "copy_ceiling_tb_per_s": ceiling, "rows": rows}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        # the time in the name: a second sweep on the same day must not overwrite the first (tables cite them)
        stem = f"sweep-{env['device'].replace(' ', '_')}-{env['date']}-{_dt.datetime.now():%H%M%S}"
        (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    return result


#: the producer's one-head, one-warp straight launch as a sweep row names it (before LaunchConfig had
#: min_programs, and since)
_ONE_HEAD_ONE_WARP = {str(LaunchConfig(1, 1, 1)),
                      "LaunchConfig(block_tokens_m=1, num_warps=1, num_stages=1, tokens_per_iter=1, heads_per_program=1)"}


def summary(result: dict) -> str:
    """The best three configurations per (op, shape, M)."""
    lines = []
    keys = dict.fromkeys((r["op"], r["shape"], r["M"], r.get("layout", "")) for r in result["rows"])
    for op, shape, m, lay in keys:
        timed = sorted((r for r in result["rows"] if (r["op"], r["shape"], r["M"], r.get("layout", "")) == (op, shape, m, lay)
                        and "median_us" in r), key=lambda r: r["median_us"])
        ref = next((r["median_us"] for r in timed if op == "producer" and r["config"] in _ONE_HEAD_ONE_WARP), None)
        best = "; ".join(f"{r['config']} {r['median_us']:.1f}us" for r in timed[:3])
        lines.append(f"{op} {shape}{' ' + lay if lay else ''} M={m}: {best}" + (f" (HB1 w1: {ref:.1f}us)" if ref else ""))
    return "\n".join(lines)
