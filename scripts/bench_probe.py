"""Two ``accval bench`` runs in one process on a lent GPU, JSON and Markdown each (no PNG, no progress bar:
the device image need not have matplotlib or rich), and the run-to-run spread of every row.

    python scripts/bench_probe.py --out DIR [--reps-ms 40] [--runs 2] [--deadline-s 120]

A run that would start after ``--deadline-s`` seconds is skipped (and the output says so).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from accval.bench import render, rows, targets  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reps-ms", type=int, default=40)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--deadline-s", type=float, default=1e9)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results = []
    for i in range(args.runs):
        if results and time.time() - t0 + (time.time() - t0) / len(results) > args.deadline_s:
            print(f"run {i + 1} skipped: it would end past the {args.deadline_s:.0f} s deadline")
            break
        result = rows.run(reps_ms=args.reps_ms, progress=False)
        stem = f"{result['device'].replace(' ', '_')}-{result['date']}-run{i + 1}"
        (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
        (args.out / f"{stem}.md").write_text(render.to_markdown(result))
        results.append(result)
        print(f"run {i + 1}: {len(result['rows'])} rows in {time.time() - t0:.0f} s")
    for t in targets.evaluate(results[-1]):
        print(f"{t['target']}: {t['measured']} at {t['where']} (want {t['want']}) -> {'met' if t['met'] else 'NOT met'}")
    if len(results) == 2:
        a, b = results
        key = lambda r: (r["op"], r["impl"], r["shape"], r["M"], r.get("layout", ""))  # noqa: E731
        other = {key(r): r["median_us"] for r in b["rows"]}
        spread = [abs(r["median_us"] - other[key(r)]) / r["median_us"] for r in a["rows"] if key(r) in other]
        spread.sort()
        print(f"run-to-run spread of medians over {len(spread)} rows: median {100 * spread[len(spread) // 2]:.1f}%, "
              f"p90 {100 * spread[int(0.9 * len(spread))]:.1f}%, max {100 * spread[-1]:.1f}%")
        for t1, t2 in zip(targets.evaluate(a), targets.evaluate(b)):
            print(f"  {t1['target']}: run1 {t1['measured']} ({t1['where']}), run2 {t2['measured']} ({t2['where']})")


if __name__ == "__main__":
    main()
