"""How close consumers come to the accumulation bound when products share a sign, on a CUDA GPU.

The kernel suite bounds a consumer's output by ``2**-8 |ref| + 2**-9 (|A| @ |B|)`` (``checks.BF16_HALF_ULP``,
``checks.FP32_ACC_TOL``). With mixed signs, ``|A| @ |B|`` is far larger than ``|ref|`` and hides how blocks
are summed. With one sign they are equal, and Hopper's FP8 tensor cores, which keep about 14 bits while they
sum a 128-deep block, spend part of the bound. This probe measures that share before the suite relies on it
(``test_consumer_sums_same_sign_k_blocks_within_the_bound``, whose inputs are ``same-sign``'s).

For each consumer, DSv4-Pro shape (K = 8192, N = 1024; DEP8 G = 8, TEP8 G = 1) and M, it prints the worst
|out - ref| / bound over three kinds of data:

``mixed-sign``  codes ``randn * 100``, activation scales 0.01-1.01 (the random-data property's inputs)
``same-sign``   codes 16-448, every scale 0.75-1.25
``one-large``   same signs, and in each row one k-block 2**10 times each of the others (its activation scale 1,
                theirs 2**-10), at every position over the rows

A ratio above 1 fails the suite. Each result names the implementation that ran and its launch (provenance).
A probe: nothing in accval calls it.

    python scripts/consumer_accumulation_probe.py --out probe.json [--consumer module:attr ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from accval.implementations import CONSUMERS  # noqa: E402
from accval.kernels import provenance  # noqa: E402
from accval.kernels.constants import FP8_DTYPE, pad4  # noqa: E402
from accval.kernels.reference import dequantize_activations, dequantize_weight  # noqa: E402
from accval.suites.kernel.cases import SUM_BLOCKS  # noqa: E402
from accval.suites.kernel.checks import BF16_HALF_ULP, FP32_ACC_TOL  # noqa: E402

K = 128 * SUM_BLOCKS
N = 1024
SHAPES = {"dep8": 8, "tep8": 1}
KINDS = ("mixed-sign", "same-sign", "one-large")


def one_large(g: int, m: int, seed: int):
    """Same signs; in row r of group i the activation scale of k-block ``(r + i) % SUM_BLOCKS`` is 1 and every
    other block's 2**-10."""
    gen = torch.Generator().manual_seed(seed)
    a = (torch.rand(g, m, K, generator=gen) * 432 + 16).to(FP8_DTYPE)
    b = (torch.rand(g, N, K, generator=gen) * 432 + 16).to(FP8_DTYPE)
    b_scale = torch.rand(g, N // 128, SUM_BLOCKS, generator=gen) * 0.5 + 0.75
    large = (torch.arange(m)[None, :] + torch.arange(g)[:, None]) % SUM_BLOCKS  # [G, M]
    s = torch.full((g, SUM_BLOCKS, pad4(m)), 2.0**-10)
    s[:, :, :m].scatter_(1, large[:, None, :], 1.0)
    s[:, :, m:] = float("nan")
    return a, s, b, b_scale


def inputs(kind: str, g: int, m: int, seed: int):
    if kind == "one-large":
        return one_large(g, m, seed)
    gen = torch.Generator().manual_seed(seed)
    if kind == "mixed-sign":
        a = (torch.randn(g, m, K, generator=gen) * 100).clamp(-448, 448).to(FP8_DTYPE)
        b = (torch.randn(g, N, K, generator=gen) * 100).clamp(-448, 448).to(FP8_DTYPE)
        sa = torch.rand(g, SUM_BLOCKS, pad4(m), generator=gen) + 0.01
        sb = torch.rand(g, N // 128, SUM_BLOCKS, generator=gen) + 0.01
    else:
        a = (torch.rand(g, m, K, generator=gen) * 432 + 16).to(FP8_DTYPE)
        b = (torch.rand(g, N, K, generator=gen) * 432 + 16).to(FP8_DTYPE)
        sa = torch.rand(g, SUM_BLOCKS, pad4(m), generator=gen) * 0.5 + 0.75
        sb = torch.rand(g, N // 128, SUM_BLOCKS, generator=gen) * 0.5 + 0.75
    sa[:, :, m:] = float("nan")
    return a, sa, b, sb


def worst(consumer, a, sa, b, sb) -> tuple[float, float, str]:
    """(worst |err| / bound, worst |err| / |ref|, what ran) for one call; the reference in float64 on the GPU."""
    with provenance.capture() as ran:
        out = consumer(a, sa, b, sb)
    torch.cuda.synchronize()
    x, w = dequantize_activations(a, sa), dequantize_weight(b, sb)
    ref = torch.bmm(x, w.transpose(1, 2))
    absref = torch.bmm(x.abs(), w.abs().transpose(1, 2))
    err = (out.double() - ref).abs()
    bound = BF16_HALF_ULP * ref.abs() + FP32_ACC_TOL * absref
    what = "; ".join(sorted({f"{r.op}:{r.impl} " + ",".join(f"{k}={v}" for k, v in r.details) for r in ran}))
    return float((err / bound).max()), float((err / ref.abs().clamp_min(1e-30)).max()), what


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="JSON results here (a Markdown table beside it)")
    p.add_argument("--m", default="1,64,256,1024,2048", help="token counts M")
    p.add_argument("--consumer", action="append", default=[], help="another consumer (registered name or module:attr)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("consumer_accumulation_probe: needs a CUDA GPU")
    names = ["accval", "torch", *args.consumer, "mutant:consumer-bf16-accumulator"]
    rows = []
    for shape, g in SHAPES.items():
        for m in (int(x) for x in args.m.split(",")):
            for kind in KINDS:
                a, sa, b, sb = (t.cuda() for t in inputs(kind, g, m, seed=m * 7 + g))
                for name in names:
                    try:
                        ratio, rel, what = worst(CONSUMERS.get(name), a, sa, b, sb)
                    except (ValueError, RuntimeError) as e:  # a consumer that refuses the shape: said, not fatal
                        ratio, rel, what = float("nan"), float("nan"), f"raised {type(e).__name__}: {e}"[:200]
                    rows.append(dict(consumer=name, shape=shape, m=m, data=kind, worst_over_bound=ratio,
                                     worst_relative=rel, ran=what))
                    print(f"{name:40s} {shape} M={m:5d} {kind:10s} err/bound {ratio:8.4f}  err/|ref| {rel:.2e}  {what}",
                          flush=True)
    dev = torch.cuda.get_device_name()
    Path(args.out).write_text(json.dumps(dict(device=dev, torch=torch.__version__, k=K, n=N, rows=rows), indent=1))
    lines = [f"# Consumers' worst |err| / bound, K = {K}, N = {N} ({dev}, torch {torch.__version__})", "",
             "| consumer | shape | " + " | ".join(f"{k}: worst over M" for k in KINDS) + " |",
             "|---|---|" + "---|" * len(KINDS)]
    for name in names:
        for shape in SHAPES:
            cells = []
            for kind in KINDS:
                mine = [r for r in rows if r["consumer"] == name and r["shape"] == shape and r["data"] == kind
                        and r["worst_over_bound"] == r["worst_over_bound"]]
                top = max(mine, key=lambda r: r["worst_over_bound"], default=None)
                cells.append("raised" if top is None else f"{top['worst_over_bound']:.3f} (M={top['m']})")
            lines.append(f"| {name} | {shape} | " + " | ".join(cells) + " |")
    Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
