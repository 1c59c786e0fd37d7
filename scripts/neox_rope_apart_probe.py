"""accval's NEOX producer against another revision of it, in one process on a CUDA GPU (issue 21): each
DSv4-Pro shape (DEP8, TEP8) and M as the dispatch launches it, both revisions and the upstream-style
kernel timed alternately twice (CUDA-graph medians), and whether the two revisions' codes and scales
are the same bits. Written for the rope slice rotated apart in programs of <= 2 rows
(``ROPE_APART_MAX_ROWS``), against the revision before it.

    git show REV:accval/kernels/inv_rope_fp8_quant.py > /tmp/old.py    # on a machine with the repository
    python scripts/neox_rope_apart_probe.py --old /tmp/old.py --out probe.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from accval.bench.timing import DSV4_PRO, SHAPES, environment, producer_inputs, time_cuda  # noqa: E402
from accval.kernels.baselines import upstream_style_producer  # noqa: E402
from scripts.kernel_variants import load_variant  # noqa: E402

MS = (64, 256, 1024, 1500, 2048, 8192)


def measure(old, new, reps_ms: int = 100) -> list[dict]:
    rope, hpg, d = DSV4_PRO["rope_dim"], DSV4_PRO["heads_per_group"], DSV4_PRO["head_dim"]
    rows = []
    for shape, g in SHAPES.items():
        for m in MS:
            o, pos, cache, _, fp8, scale, _ = producer_inputs(m, g, True)
            args = (o, pos, cache, g, hpg, d - rope, rope)
            fns, outs = {}, {}
            for name, mod in (("old", old), ("new", new)):
                p = mod.validate_producer_args(*args, is_neox=True)
                cfg = mod.config_for(m, o.device, is_neox=True)
                f8, sc = torch.empty_like(fp8), torch.empty_like(scale)
                fns[name] = lambda mod=mod, p=p, f8=f8, sc=sc, cfg=cfg: mod.launch_producer(p, o, pos, cache, f8, sc, cfg)
                fns[name]()
                outs[name] = (f8, sc)
            fu, su = torch.empty_like(fp8), torch.empty_like(scale)
            fns["upstream-style"] = lambda: upstream_style_producer(*args, True, fu, su, num_warps=1)
            torch.cuda.synchronize()
            same = (torch.equal(outs["old"][0].view(torch.uint8), outs["new"][0].view(torch.uint8))
                    and torch.equal(outs["old"][1].view(torch.int32), outs["new"][1].view(torch.int32)))
            times = {k: [] for k in fns}
            for _ in range(2):
                for k in fns:
                    times[k].append(time_cuda(fns[k], reps_ms).median_us)
            config = new.launched_config(new.config_for(m, o.device, is_neox=True), g * hpg, m)
            rows.append(dict(shape=shape, M=m, config=config, same_bits=same, **{f"{k}_us": v for k, v in times.items()}))
            print(f"{shape} M={m:5} old {times['old'][0]:7.2f} {times['old'][1]:7.2f}  new {times['new'][0]:7.2f} "
                  f"{times['new'][1]:7.2f}  upstream-style {times['upstream-style'][0]:7.2f} "
                  f"{times['upstream-style'][1]:7.2f}  same bits {same}  ({config.split(': ')[-1]})", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", type=Path, required=True, help="another revision's accval/kernels/inv_rope_fp8_quant.py")
    ap.add_argument("--out", type=Path, help="also write the rows and the environment as JSON")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("neox_rope_apart_probe needs a CUDA GPU", file=sys.stderr)
        return 2
    old, path = load_variant("inv_rope_fp8_quant.py", "inv_rope_fp8_quant", "rope_apart_old", [],
                             source=args.old.read_text())
    try:
        rows = measure(old, importlib.import_module("accval.kernels.inv_rope_fp8_quant"))
    finally:
        path.unlink(missing_ok=True)
    if args.out:
        args.out.write_text(json.dumps({"environment": environment(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
