"""The shipped consumer (the public function, dispatch as it is) at the DeepSeek-V4-Pro shapes, CUDA-graph
median, next to ``torch._scaled_mm`` blockwise, in one process: with this checkout's kernels or another
version's (``--kernels-root DIR``, another checkout: its ``accval/kernels``, or ``kernels`` from before the
package moved). Run it alternately on two
versions on one card to compare them; ``--compare`` prints the ratios of such runs.

    python scripts/consumer_against.py [--kernels-root DIR] [--label NAME] [--ms 2048,4096] --out FILE.json
    python scripts/consumer_against.py --compare A.json B.json [A2.json B2.json ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(ms: list[int], reps_ms: int, label: str) -> list[dict]:
    import torch

    import accval.kernels as kernels
    from accval.bench import timing
    from accval.kernels import provenance

    rows = []
    timing.warm_up_clocks()
    for shape, g in timing.SHAPES.items():
        for m in ms:
            a, a_scale, w, ws, n, k = timing.consumer_inputs(m, g)
            out = torch.empty(g, m, n, device="cuda", dtype=torch.bfloat16)
            with provenance.capture() as ran:
                kernels.fp8_block_bmm(a, a_scale, w, ws, out=out)
            torch.cuda.synchronize()  # the graph timer starts on a side stream
            for impl, fn in (("accval", lambda: kernels.fp8_block_bmm(a, a_scale, w, ws, out=out)),
                             ("scaled_mm", lambda: kernels.fp8_block_bmm(a, a_scale, w, ws, backend="torch"))):
                t = timing.time_cuda(fn, reps_ms)
                rows.append({"label": label, "shape": shape, "M": m, "impl": impl, "median_us": t.median_us,
                             "p20_us": t.p20_us, "p80_us": t.p80_us, "how": t.how,
                             "ran": str(ran[-1]) if impl == "accval" else "torch._scaled_mm"})
                print(f"{label} {shape} M={m} {impl}: {t.median_us:.1f} us ({rows[-1]['ran']})", flush=True)
            a = a_scale = w = ws = out = None  # freed before the next M
            torch.cuda.empty_cache()
    return rows


def compare(files: list[Path]) -> int:
    """Per (shape, M): each label's accval median over its runs, and its ratio to ``_scaled_mm`` in the
    same runs; the first label is the one the others are divided by."""
    runs = [json.loads(f.read_text()) for f in files]
    labels = list(dict.fromkeys(r["label"] for run in runs for r in run["rows"]))
    cells: dict = {}
    for run in runs:
        for r in run["rows"]:
            cells.setdefault((r["shape"], r["M"], r["label"], r["impl"]), []).append(r["median_us"])
    keys = sorted({(s, m) for s, m, _, _ in cells}, key=lambda sm: (sm[0], sm[1]))
    head = [f"{lab} us (runs) | {lab} / _scaled_mm" for lab in labels] + [f"{lab} / {labels[0]}" for lab in labels[1:]]
    print("| shape | M | " + " | ".join(head) + " |")
    print("|---|---|" + "---|---|" * len(labels) + "---|" * (len(labels) - 1))
    for shape, m in keys:
        ours = {lab: cells.get((shape, m, lab, "accval"), []) for lab in labels}
        med = {lab: statistics.median(v) if v else None for lab, v in ours.items()}
        cols = []
        for lab in labels:
            theirs = cells.get((shape, m, lab, "scaled_mm"))
            cols.append("-" if med[lab] is None else f"{med[lab]:.1f} ({'/'.join(f'{v:.1f}' for v in ours[lab])})")
            cols.append("-" if med[lab] is None or not theirs else f"{statistics.median(theirs) / med[lab]:.2f}x")
        base = med[labels[0]]
        cols += ["-" if med[lab] is None or base is None else f"{med[lab] / base:.3f}" for lab in labels[1:]]
        print(f"| {shape} | {m} | " + " | ".join(cols) + " |")
    return 0


def _kernels_package(root: Path) -> Path | None:
    """The kernels package folder of the checkout at ``root``: ``accval/kernels``, or ``kernels`` in a checkout
    from before the package moved under ``accval``; None if it holds neither."""
    for package in (root / "accval" / "kernels", root / "kernels"):
        if (package / "__init__.py").is_file():
            return package
    return None


def _load_as_accval_kernels(package: Path):
    """Import the package folder ``package`` as ``accval.kernels`` (its modules import each other relatively),
    before anything imports this checkout's: the timing code then runs that version's kernels."""
    import accval

    if package.resolve() == (ROOT / "accval" / "kernels").resolve():
        import accval.kernels as kernels

        return kernels
    spec = importlib.util.spec_from_file_location("accval.kernels", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    kernels = importlib.util.module_from_spec(spec)
    sys.modules["accval.kernels"] = kernels
    spec.loader.exec_module(kernels)
    accval.kernels = kernels
    return kernels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels-root", type=Path, default=ROOT,
                    help="a folder holding the kernels package to time (default: this checkout, %(default)s)")
    ap.add_argument("--label", default=None, help="the rows' label (default: the folder's name)")
    ap.add_argument("--ms", default="64,256,1024,2048,4096,8192", help="M values (default: %(default)s)")
    ap.add_argument("--reps-ms", type=int, default=120, help="do_bench time per row, ms (default: %(default)s)")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    ap.add_argument("--compare", nargs="+", type=Path, metavar="FILE", help="print the ratios of runs written by --out")
    args = ap.parse_args(argv)
    if args.compare:
        missing = [str(f) for f in args.compare if not f.is_file()]
        if missing:
            print(f"--compare: expected files written by --out, got {', '.join(missing)} (no such file)", file=sys.stderr)
            return 2
        return compare(args.compare)
    package = _kernels_package(args.kernels_root)
    if package is None:
        print(f"--kernels-root: expected a checkout holding accval/kernels/__init__.py (kernels/__init__.py before the "
              f"package moved), got {args.kernels_root}", file=sys.stderr)
        return 2
    try:
        ms = [int(v) for v in args.ms.split(",")]
    except ValueError:
        print(f"--ms: expected comma-separated integers, got {args.ms!r}", file=sys.stderr)
        return 2
    # accval from this checkout, its kernels package from --kernels-root (which may be a whole other checkout)
    sys.path.insert(0, str(ROOT))
    import torch

    if not torch.cuda.is_available():
        print("consumer_against: needs a CUDA GPU", file=sys.stderr)
        return 2
    kernels = _load_as_accval_kernels(package)

    label = args.label or args.kernels_root.resolve().name
    rows = measure(ms, args.reps_ms, label)
    facts = {"kernels": str(Path(kernels.__file__).parent), "device": torch.cuda.get_device_name(),
             "torch": torch.__version__, "triton": __import__("triton").__version__}
    print(facts)
    if args.out:
        args.out.write_text(json.dumps({"facts": facts, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
