"""Where the producer's time goes at large M (a diagnosis on a GPU, not a kernel accval ships).

Builds variants of ``kernels/inv_rope_fp8_quant.py`` by text substitution (each loaded as its own
module, its torch op renamed), times each at the dispatched launch next to a device copy of the
same bytes, and prints one table. A variant that drops work the contract needs is wrong by design:
it only shows what that work costs.

    python scripts/producer_probe.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from accval import bench  # noqa: E402
from scripts.kernel_variants import load_variant  # noqa: E402
from kernels.inv_rope_fp8_quant import config_for  # noqa: E402


#: name -> (what it drops, [(old, new), ...])
VARIANTS = {
    "shipped": ("nothing", []),
    "reciprocal-multiply": ("the correctly rounded division: y * (1/scale) instead (not bit-equal)",
                            [("tl.math.div_rn(y, safe[:, :, None])", "y * (1.0 / safe[:, :, None])")]),
    "no-rope": ("the inverse RoPE: partner and cos/sin loads, the rotation (wrong output)",
                [("xp = tl.load(row_base + partner_d, mask=rope_live, other=0.0).to(tl.float32)", "xp = x"),
                 ("cos = tl.load(cs_row, mask=rope_live, other=1.0)", "cos = 1.0"),
                 ("sin = tl.load(cs_row + stride_cs_sin, mask=rope_live, other=0.0)", "sin = 0.0"),
                 ("y = tl.where(is_rope, round_through(rot, IN_DTYPE, SOFTWARE), x)", "y = x")]),
    "no-scale-store": ("the strided scale stores (wrong output)",
                       [("mask=(j2 < NBH) & (m2 < rows_end))", "mask=(j2 < 0) & (m2 < rows_end))")]),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("producer_probe needs a CUDA GPU")
    bench.warm_up_clocks()
    rows = []
    mods = {name: load_variant("inv_rope_fp8_quant.py", "inv_rope_fp8_quant", name, subs) for name, (_, subs) in VARIANTS.items()}
    try:
        for shape, m in (("dep8", 2048), ("dep8", 8192), ("tep8", 2048), ("tep8", 8192)):
            g = bench.SHAPES[shape]
            o, pos, cache, p, fp8, scale, nbytes = bench._producer_inputs(m, g)
            copy_us = bench._copy_us(nbytes // 2)[0]
            cfg = config_for(m, o.device)
            for name, (mod, _) in mods.items():
                us = bench._time(lambda mod=mod: mod.launch_producer(p, o, pos, cache, fp8, scale, cfg))[0]
                rows.append({"shape": shape, "M": m, "variant": name, "us": us, "copy_us": copy_us,
                             "pct_of_copy": 100 * copy_us / us, "config": str(cfg)})
    finally:
        for _, path in mods.values():
            path.unlink(missing_ok=True)
    print(f"{torch.cuda.get_device_name()} · torch {torch.__version__}")
    print("| shape | M | variant | us | copy us | % of copy |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['M']} | {r['variant']} | {r['us']:.1f} | {r['copy_us']:.1f} | {r['pct_of_copy']:.0f}% |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "producer-probe.json").write_text(json.dumps(
            {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
             "variants": {k: v[0] for k, v in VARIANTS.items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
