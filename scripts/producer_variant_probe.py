"""Which part of the producer a GPU-only mismatch comes from: variants of the shipped kernel file (text
substitution, each its own module) and an earlier version (``--before FILE``), run on one case at a
forced launch and compared with the mirror reference bit for bit.

    python scripts/producer_variant_probe.py [--before FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from accval.suites.kernel.cases import ProducerCase, make_inputs  # noqa: E402
from kernels.reference import inv_rope_fp8_quant_ref  # noqa: E402
from scripts.kernel_variants import load_variant  # noqa: E402

VARIANTS = {
    "shipped": [],
    "old-clamp": [("q8 = to_fp8_e4m3(q, FP8_MAX, SOFTWARE)", "q8 = tl.minimum(tl.maximum(q, -FP8_MAX), FP8_MAX).to(tl.float8e4nv)")],
    "absmax-by-flag": [("    if SOFTWARE:\n        amax = tl.max(a, axis=2)", "    if True:\n        amax = tl.max(a, axis=2)")],
    "cast-after-reshape": [("tl.reshape(q8, [x.shape[0], NBH_P2, 16, 8])",
                            "to_fp8_e4m3(tl.reshape(q, [x.shape[0], NBH_P2, 16, 8]), FP8_MAX, SOFTWARE)")],
    "store-3d": [("    if IS_NEOX:\n        tl.store(fp8_row + d, q8, mask=live)", "    if True:\n        tl.store(fp8_row + d, q8, mask=live)")],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path)
    args = ap.parse_args()
    mods = {name: load_variant("inv_rope_fp8_quant.py", "inv_rope_fp8_quant", f"v{i}", subs)
            for i, (name, subs) in enumerate(VARIANTS.items())}
    if args.before:
        mods = {"shipped": mods.pop("shipped"),
                "before": load_variant("inv_rope_fp8_quant.py", "inv_rope_fp8_quant", "vb", [], source=args.before.read_text()),
                **mods}
    try:
        for is_neox in (False, True):
            case = ProducerCase(m=1, n_groups=1, heads_per_group=1, head_dim=256, rope_dim=2, is_neox=is_neox,
                                positions_dtype=torch.int32, magnitude=0.001, block_tokens_m=2)
            o, pos, cache = make_inputs(case, "cuda")
            ref = inv_rope_fp8_quant_ref(*case.args(o, pos, cache), is_neox=is_neox)
            for name, (mod, _) in mods.items():
                for cfg in (mod.LaunchConfig(2, 2, 2, tokens_per_iter=1),):
                    p = mod.validate_producer_args(*case.args(o, pos, cache), is_neox=is_neox)
                    fp8 = torch.full(p.fp8_shape(), 0.5, device="cuda").to(torch.float8_e4m3fn)
                    scale = torch.full(p.scale_shape(), -1.0, device="cuda")
                    mod.launch_producer(p, o, pos, cache, fp8, scale, cfg)
                    torch.cuda.synchronize()
                    codes = int((fp8.view(torch.uint8) != ref[0].view(torch.uint8)).sum())
                    scales = int((scale != ref[1]).sum())
                    print(f"{'neox' if is_neox else 'gptj'} {name:15s} btm={cfg.block_tokens_m} codes differ {codes:4d} "
                          f"scales differ {scales} scale={scale.flatten()[:2].tolist()} ref={ref[1].flatten()[:2].tolist()}")
    finally:
        for _, path in mods.values():
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
