"""What the consumer's per-block scaling costs at large M (a diagnosis on a GPU, not a kernel accval ships).

Builds variants of ``accval/kernels/fp8_block_bmm.py`` by text substitution (each loaded as its own module,
its torch ops renamed), times each at several launches at the DeepSeek-V4-Pro shapes next to
``torch._scaled_mm`` blockwise and bf16 ``torch.bmm``, and prints one table. A variant that drops
work the contract needs is wrong by design: it only shows what that work costs.

    python scripts/consumer_probe.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import accval.kernels as kernels  # noqa: E402
from accval.bench import timing  # noqa: E402
from accval.kernels.reference import dequantize_weight  # noqa: E402
from scripts.kernel_variants import load_variant  # noqa: E402

SCALED = "acc = _scale_into(acc, tl.dot(a, b), a_s, b_s)"

#: name -> (what it changes, [(old, new), ...])
VARIANTS = {
    "shipped": ("nothing: acc = fma(dot, a_s * b_s, acc), the two scales multiplied first (one fused multiply-add per element)", []),
    "two-scales": ("the other order: acc += (dot * a_s) * b_s (two multiplies per element; other rounding)",
                   [(SCALED, "acc += tl.dot(a, b) * a_s[:, None] * b_s")]),
    "no-scale": ("no scaling at all: acc += dot (wrong output; what the scaling costs)", [(SCALED, "acc += tl.dot(a, b)")]),
}
LAUNCHES = [(64, 128, 4, 3), (64, 128, 4, 4), (128, 128, 8, 3), (128, 128, 8, 4), (128, 128, 4, 3)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("consumer_probe needs a CUDA GPU")
    timing.warm_up_clocks()
    rows = []
    mods = {name: load_variant("fp8_block_bmm.py", "fp8_block_bmm", name, subs) for name, (_, subs) in VARIANTS.items()}
    try:
        for shape, m in (("dep8", 2048), ("dep8", 8192), ("tep8", 2048), ("tep8", 8192)):
            g = timing.SHAPES[shape]
            a, a_scale, w_fp8, w_scale, n, k = timing.consumer_inputs(m, g)
            flops = 2 * g * m * n * k
            out = torch.empty(g, m, n, dtype=torch.bfloat16, device="cuda")
            a_bf16 = torch.randn(g, m, k, device="cuda", dtype=torch.bfloat16)
            w_bf16 = dequantize_weight(w_fp8, w_scale, dtype=torch.bfloat16)
            refs = {"torch-scaled-mm": lambda: kernels.fp8_block_bmm(a, a_scale, w_fp8, w_scale, backend="torch"),
                    "bf16-bmm": lambda: torch.bmm(a_bf16, w_bf16.transpose(1, 2))}
            ref_us = {impl: timing.time_cuda(fn).median_us for impl, fn in refs.items()}
            want = kernels.fp8_block_bmm(a, a_scale, w_fp8, w_scale, backend="triton")
            for name, (mod, _) in mods.items():
                for launch in LAUNCHES:
                    cfg = mod.ConsumerConfig(*launch)
                    mod.launch_consumer(a, a_scale, w_fp8, w_scale, out, cfg)
                    err = ((out.float() - want.float()).abs().max() / want.float().abs().max()).item()  # normwise
                    us = timing.time_cuda(lambda mod=mod, cfg=cfg: mod.launch_consumer(a, a_scale, w_fp8, w_scale, out, cfg)).median_us
                    rows.append({"shape": shape, "M": m, "variant": name, "launch": str(cfg), "us": us,
                                 "tflops": flops / us / 1e6, "vs_scaled_mm": ref_us["torch-scaled-mm"] / us,
                                 "vs_bf16_bmm": ref_us["bf16-bmm"] / us, "max_diff_vs_shipped_rel_to_max": err, **ref_us})
    finally:
        for _, path in mods.values():
            path.unlink(missing_ok=True)
    print(f"{torch.cuda.get_device_name()} · torch {torch.__version__}")
    print("| shape | M | variant | launch (BM, BN, warps, stages) | us | TFLOP/s | vs scaled_mm | vs bf16 bmm | max diff / max |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        launch = r["launch"].split("(")[1].split(", split_k")[0]
        print(f"| {r['shape']} | {r['M']} | {r['variant']} | {launch} | {r['us']:.1f} | {r['tflops']:.0f} | "
              f"{r['vs_scaled_mm']:.2f}x | {r['vs_bf16_bmm']:.2f}x | {r['max_diff_vs_shipped_rel_to_max']:.1e} |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "consumer-probe.json").write_text(json.dumps(
            {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
             "variants": {k: v[0] for k, v in VARIANTS.items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
