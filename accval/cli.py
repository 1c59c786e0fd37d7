"""The ``accval`` command: a thin layer over library functions.

Exit codes: 0 ok, 1 regression found (a mutant survived, an A/B verdict of regression), 2 usage or
environment error.
Errors print one line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_mutants(args) -> int:
    from . import mutation

    report = mutation.run(only=args.only or None, suites=("accval",) if args.no_baseline else ("accval", "baseline-pr"),
                          progress=not args.quiet, jobs=args.jobs)
    md = Path(args.markdown) if args.markdown else (Path(args.json).with_suffix(".md") if args.json else None)
    mutation.write(report, Path(args.json) if args.json else None, md)
    print(mutation.to_markdown(report))
    return 0 if mutation.all_killed(report) else 1


def _cmd_bench(args) -> int:
    from . import bench

    ops = tuple(s for s in (args.ops or ("producer,consumer" if args.sweep else "producer,consumer,chain")).split(",") if s)
    try:
        ms = tuple(int(s) for s in args.m.split(",") if s)
    except ValueError:
        raise SystemExit(f"accval bench: --m: expected comma-separated token counts, got {args.m!r}")
    shapes = tuple(args.shapes.split(","))
    layouts = tuple(s for s in args.layouts.split(",") if s)
    if not layouts or set(layouts) - set(bench.LAYOUTS):
        raise SystemExit(f"accval bench: --layouts: expected a comma-separated subset of {sorted(bench.LAYOUTS)}, got {args.layouts!r}")
    if args.sweep:
        result = bench.sweep(ms=ms, shapes=shapes, ops=ops, out_dir=Path(args.out), layouts=layouts)
        print(bench.sweep_summary(result))
        return 0
    result = bench.run(ops=ops, ms=ms, shapes=shapes, out_dir=Path(args.out), layouts=layouts, reps_ms=args.reps_ms,
                       with_compiled=args.with_compiled)
    print(bench.to_markdown(result))
    return 0


def _ranks_arg(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number of processes, got {text!r}") from None


def _cmd_gsm8k(args) -> int:
    from .gsm8k import ab

    if not args.ab:
        raise ValueError("gsm8k: pass --ab (the only mode: arm A bf16 fallback against arm B FP8 chain)")
    model = args.model or ("builtin" if args.endpoint_a or args.endpoint_b else "sentinel")  # endpoints: the servers'
    settings = ab.Settings(mode=args.mode, model=model, data_dir=args.data_dir, limit=args.limit,
                           num_fewshot=args.num_fewshot, batch_size=args.batch_size, max_gen_toks=args.max_gen_toks,
                           device=args.device, seed=args.seed, backend=args.backend, inject=args.inject,
                           endpoint_a=args.endpoint_a, endpoint_b=args.endpoint_b, ranks=args.ranks,
                           matmul=args.matmul)
    try:
        rep = ab.run(settings, Path(args.out) if args.out else None, resume=args.resume, progress=not args.quiet)
    except OSError as e:  # the Hub unreachable, a file missing
        hint = "" if args.data_dir else " (no network? --data-dir DIR reads gsm8k's train.jsonl/test.jsonl offline)"
        raise RuntimeError(f"{e}{hint}") from e
    from . import report

    if "verdict" not in rep:  # a rank other than 0 under torchrun: rank 0 reports, and its exit code is the verdict
        return 0
    print(report.to_markdown(rep))
    print(f"report: {rep['out']}/report.md")
    return 1 if rep["verdict"]["regression"] else 0


def _cmd_serve(args) -> int:
    from . import serve
    from .gsm8k import ab

    settings = ab.Settings(mode=args.mode, model=args.model, device=args.device, seed=args.seed, backend=args.backend,
                           inject=args.inject, matmul=args.matmul)
    return serve.serve(settings, args.arm, args.port, args.max_requests, args.idle_timeout, args.ready_file)


def _cmd_report(args) -> int:
    from . import report

    reps = [report.load(p) for p in args.paths]
    print(report.to_markdown(reps[0]) if len(reps) == 1 else report.compare(reps))
    return 1 if any(r["verdict"]["regression"] for r in reps) and args.fail_on_regression else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="accval", description="Accuracy validation for FP8 kernel chains.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mutants", help="run the kernel suite against every catalog mutant")
    m.add_argument("--json", help="write the report as JSON here (Markdown beside it)")
    m.add_argument("--markdown", help="write the Markdown table here")
    m.add_argument("--only", nargs="+", metavar="ID", help="only these mutants")
    m.add_argument("--jobs", type=int, default=1, help="mutant runs side by side (each is its own pytest process)")
    m.add_argument("--no-baseline", action="store_true", help="skip the pull request's baseline test")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(fn=_cmd_mutants)
    b = sub.add_parser("bench", help="time the kernels and their baselines on the GPU")
    b.add_argument("--ops", default=None, help="default producer,consumer,chain (with --sweep: producer,consumer)")
    b.add_argument("--m", default="64,256,1024,1500,2048,4096,8192")
    b.add_argument("--shapes", default="dep8,tep8")
    b.add_argument("--layouts", default="neox,gptj", help="RoPE layouts of the producer and chain rows (neox, gptj)")
    b.add_argument("--reps-ms", type=int, default=200, help="do_bench's timing window per row, ms")
    b.add_argument("--with-compiled", action="store_true", help="add the torch.compile'd two-step producer rows")
    b.add_argument("--out", default="reports/bench")
    b.add_argument("--sweep", action="store_true",
                   help="time every candidate launch configuration instead (the measurements behind the dispatch tables; "
                        "--ops producer,consumer)")
    b.set_defaults(fn=_cmd_bench)
    g = sub.add_parser("gsm8k", help="gsm8k 5-shot A/B: bf16 fallback (A) against the FP8 chain (B)",
                       description="Exit 0: no regression; 1: regression; 2: usage or environment error.")
    g.add_argument("--ab", action="store_true", help="run both arms on the same questions and compare them")
    g.add_argument("--mode", choices=("dep8", "tep8"), default="dep8", help="sharding at the o_a_proj site")
    g.add_argument("--model",
                   help="'sentinel' (default: the small trained DeepSeek-V4 shipped with accval, on its own synthetic "
                   "gsm8k-format problems unless --data-dir says otherwise), 'builtin' (seeded random weights: "
                   "agreement only) or a checkpoint directory")
    g.add_argument("--data-dir", help="read train.jsonl/test.jsonl here (offline); default: the sentinel's own "
                   "problems for --model sentinel, Hugging Face openai/gsm8k for any other model")
    g.add_argument("--limit", type=int, help="first N test questions (default all 1319)")
    g.add_argument("--num-fewshot", type=int, default=5)
    g.add_argument("--batch-size", type=int, default=32,
                   help="questions decoded together (each prompt is prefilled alone); default 32")
    g.add_argument("--max-gen-toks", type=int, default=256)
    g.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:N")
    g.add_argument("--seed", type=int, default=0, help="seed of the built-in model's weights")
    g.add_argument("--backend", default="auto", help="FP8 chain of arm B: auto (triton on GPU, torch on CPU), triton, "
                   "triton+scaled_mm, torch")
    g.add_argument("--inject", metavar="ID", help="apply catalog mutant ID to arm B (see accval mutants)")
    g.add_argument("--matmul", default="auto", choices=("auto", "model", "fp32"),
                   help="the bf16 matmuls (the model's attention, linear layers and experts; arm A's bmm): as the "
                        "model and arm A compute them, or as fp32 matmuls of the same bf16 values rounded to bf16 (equal up to summation "
                        "order; ~10x faster on CPUs without bf16 units). auto: fp32 on a CPU, model on a GPU")
    g.add_argument("--ranks", type=_ranks_arg, default="auto", metavar="N|auto",
                   help="run the 8 DEP/TEP ranks in N real processes (torch.distributed: gloo on CPU, NCCL on "
                        "GPUs); 1: one process; auto (default): under DEP on a CPU one process per core (a "
                        "divisor of 8), otherwise one; under torchrun the group is torchrun's")
    g.add_argument("--endpoint-a", metavar="URL", help="arm A is this OpenAI-compatible completions server")
    g.add_argument("--endpoint-b", metavar="URL", help="arm B is this OpenAI-compatible completions server")
    g.add_argument("--out", help="run directory (default reports/gsm8k/<timestamp>-<mode>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.set_defaults(fn=_cmd_gsm8k)
    v = sub.add_parser("serve", help="serve one arm as an OpenAI-compatible completions endpoint on 127.0.0.1")
    v.add_argument("--arm", required=True, choices=("a", "b", "A", "B"))
    v.add_argument("--mode", choices=("dep8", "tep8"), default="dep8")
    v.add_argument("--model", default="sentinel", help="as for accval gsm8k (default: the sentinel)")
    v.add_argument("--device", default="auto")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--backend", default="auto")
    v.add_argument("--matmul", default="auto", choices=("auto", "model", "fp32"))
    v.add_argument("--inject", metavar="ID")
    v.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    v.add_argument("--max-requests", type=int, help="stop after this many completions")
    v.add_argument("--idle-timeout", type=float, default=600.0, help="stop after this many idle seconds")
    v.add_argument("--ready-file", help="write the base URL here once listening")
    v.set_defaults(fn=_cmd_serve)
    r = sub.add_parser("report", help="print a gsm8k A/B report, or compare several (oldest first)")
    r.add_argument("paths", nargs="+", help="report.json files or run directories")
    r.add_argument("--fail-on-regression", action="store_true", help="exit 1 when any report's verdict is regression")
    r.set_defaults(fn=_cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    try:
        return args.fn(args)
    except (ValueError, TypeError, KeyError, RuntimeError, OSError, ImportError) as e:
        if args.debug:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"accval: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
