"""The ``accval`` command: a thin layer over library functions.

Exit codes: 0 ok, 1 regression found (a mutant survived), 2 usage or environment error.
Errors print one line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_mutants(args) -> int:
    from . import mutation

    report = mutation.run(only=args.only or None, suites=("accval",) if args.no_baseline else ("accval", "baseline-pr"),
                          progress=not args.quiet)
    md = Path(args.markdown) if args.markdown else (Path(args.json).with_suffix(".md") if args.json else None)
    mutation.write(report, Path(args.json) if args.json else None, md)
    print(mutation.to_markdown(report))
    return 0 if mutation.all_killed(report) else 1


def _cmd_bench(args) -> int:
    from . import bench

    ops = tuple(s for s in args.ops.split(",") if s)
    ms = tuple(int(s) for s in args.m.split(",") if s)
    result = bench.run(ops=ops, ms=ms, shapes=tuple(args.shapes.split(",")), out_dir=Path(args.out))
    print(bench.to_markdown(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="accval", description="Accuracy validation for FP8 kernel chains.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mutants", help="run the kernel suite against every catalog mutant")
    m.add_argument("--json", help="write the report as JSON here (Markdown beside it)")
    m.add_argument("--markdown", help="write the Markdown table here")
    m.add_argument("--only", nargs="+", metavar="ID", help="only these mutants")
    m.add_argument("--no-baseline", action="store_true", help="skip the pull request's baseline test")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(fn=_cmd_mutants)
    b = sub.add_parser("bench", help="time the kernels and their baselines on the GPU")
    b.add_argument("--ops", default="producer,consumer,chain")
    b.add_argument("--m", default="64,256,1024,1500,2048,4096,8192")
    b.add_argument("--shapes", default="dep8,tep8")
    b.add_argument("--out", default="reports/bench")
    b.set_defaults(fn=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    try:
        return args.fn(args)
    except (ValueError, TypeError, KeyError, RuntimeError, OSError) as e:
        if args.debug:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"accval: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
