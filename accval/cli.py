"""The ``accval`` command: a thin layer over library functions.

Exit codes: 0 ok, 1 regression found (a mutant survived, an A/B verdict of regression), 2 usage or
environment error, 130 stopped by Ctrl-C and 143 by SIGTERM (:mod:`accval.stop`: an A/B saves what
finished and prints the command that resumes it). Errors print one line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import textwrap
import traceback
from pathlib import Path

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE = 0, 1, 2
BENCH_SHAPES = ("dep8", "tep8")
BENCH_OPS = ("producer", "consumer", "chain")
BENCH_LAYOUTS = ("neox", "gptj")
SENTINEL_QUESTIONS = 1000  # accval.sentinel.data.N_TEST (not imported: it pulls in the model code)
GSM8K_QUESTIONS = 1319


class UsageError(ValueError):
    """A bad command line, found before any work starts."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``accval <command>: error: ... (see --help)``) and exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option that has one (not after flags and unset options); descriptions
    and examples keep their line breaks."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {n}")
    return n


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0..65535 (0: a free one), got {text!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0..65535 (0: a free one), got {n}")
    return n


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}") from None
    if not 0 < x < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return x


def _token_counts(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        ms = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated token counts >= 1, got {text!r}") from None
    if not ms or min(ms) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated token counts >= 1, got {text!r}")
    return ms


def _subset(allowed: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(p.strip() for p in text.split(",") if p.strip())
        bad = [x for x in items if x not in allowed]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(allowed)}, got {text!r}")
        return items

    return parse


def _cmd_mutants(args) -> int:
    from . import mutation, runs

    if args.resume and not args.json:
        raise UsageError("mutants: --resume needs --json FILE, the report of the run to continue")
    json_path = Path(args.json) if args.json else runs.new_path("mutants", ".json")
    md = Path(args.markdown) if args.markdown else json_path.with_suffix(".md")
    mutation.check_report_path(json_path, args.resume)
    args.saved_to = json_path  # for the resume hint on an interrupt
    previous = mutation.load(json_path) if args.resume else None
    report = mutation.run(only=args.only or None, suites=("accval",) if args.no_baseline else ("accval", "baseline-pr"),
                          progress=not args.quiet, jobs=args.jobs, previous=previous,
                          save=lambda r: mutation.write(r, json_path, md))
    print(mutation.to_markdown(report))
    print(f"report: {json_path}", file=sys.stderr)
    return 0 if mutation.all_killed(report) else 1


def _cmd_bench(args) -> int:
    from .bench import render, rows, sweep

    ops = args.ops or (("producer", "consumer") if args.sweep else BENCH_OPS)
    ms, shapes, layouts = args.m, args.shapes, args.layouts
    if args.sweep:
        result = sweep.run(ms=ms, shapes=shapes, ops=ops, out_dir=Path(args.out), layouts=layouts)
        print(sweep.summary(result))
        return 0
    result = rows.run(ops=ops, ms=ms, shapes=shapes, out_dir=Path(args.out), layouts=layouts, reps_ms=args.reps_ms,
                      with_compiled=args.with_compiled)
    print(render.to_markdown(result))
    return 0


def _ranks_arg(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number of processes, got {text!r}") from None


def resume_command(argv: list[str], out: Path, flag: str = "--out") -> str:
    """The command line that continues the run of ``argv`` saved in ``out``: the same options, with
    ``flag`` (``--out``, or ``--json`` for ``accval mutants``) and ``--resume``."""
    cmd = ["accval", *argv]
    if not any(a == flag or a.startswith(f"{flag}=") for a in argv):
        cmd += [flag, str(out)]
    if "--resume" not in argv:
        cmd.append("--resume")
    return shlex.join(cmd)


def _plan(settings, out: Path) -> str:
    """The A/B's first line: what it will run (``settings`` validated: the data directory is known)."""
    n = "all"
    if settings.data_dir is not None:
        try:
            with (Path(settings.data_dir) / "test.jsonl").open("rb") as f:
                n = sum(1 for line in f if line.strip())
        except OSError:
            pass
        if settings.limit is not None and n != "all":
            n = f"{n} (all of them; --limit {settings.limit} asked for more)" if settings.limit > n else settings.limit
    elif settings.limit is not None:
        n = f"up to {settings.limit}"
    if settings.endpoint_a:
        arms = "endpoints"
    else:
        from .gsm8k.config import arms_for

        arms = ", ".join(f"{name} {arm.describe()}" for name, arm in arms_for(settings.resolved()).items())
    procs = "the servers' ranks" if settings.endpoint_a else (
        f"8 {settings.mode[:3].upper()} ranks in {settings.ranks or 1} process(es)")
    from .report import prefill_text

    where = "" if settings.endpoint_a else (f", {settings.device}, model {settings.model}, matmul {settings.matmul}, "
                                            f"{prefill_text(settings.resolved().prefill_tokens)}")
    return f"accval gsm8k: {n} questions x 2 arms ({arms}); {procs}{where}; run directory {out}"


def _seed(seed: int | None, model: str) -> int:
    """``--seed``: 0 when not given; given with a model other than ``builtin``, whose weights are trained or
    loaded rather than drawn, it would change nothing, so it is a usage error instead of being ignored."""
    if seed is None:
        return 0
    if model != "builtin":
        raise UsageError(f"--seed: only --model builtin has seeded (random) weights; --model {model!r} loads its own, so "
                         "the seed would be ignored")
    return seed


@contextlib.contextmanager
def _no_library_bars():
    """While inside: no progress bars from lm-eval or transformers either (``--quiet``). In this process
    every tqdm bar is made disabled, whatever its caller passes (tqdm reads ``TQDM_DISABLE`` when it is
    imported, and validating the options has imported it); rank processes started inside inherit the
    variables, which their fresh imports read."""
    from unittest import mock

    from tqdm import std

    made = std.tqdm.__init__

    def disabled(self, *args, **kwargs):
        kwargs["disable"] = True
        made(self, *args, **kwargs)

    with mock.patch.dict(os.environ, TQDM_DISABLE="1", HF_HUB_DISABLE_PROGRESS_BARS="1"), \
            mock.patch.object(std.tqdm, "__init__", disabled):
        yield


def _cmd_gsm8k(args) -> int:
    from .gsm8k import config, rundir

    if not args.ab:
        raise UsageError("gsm8k: pass --ab (the only mode: arm A bf16 fallback against arm B FP8 chain)")
    if args.resume and args.out is None:
        raise UsageError("gsm8k: --resume needs --out DIR, the run directory to continue (each new run gets its own "
                         "timestamped directory, so there is nothing to guess)")
    if args.resume:  # what this command line leaves out, the run began with (what it gives must match the run's)
        recorded = rundir.recorded_settings(rundir.out_dir(args.out, args.mode))
        if recorded.get("model") != "builtin":
            recorded.pop("seed", None)  # the 0 recorded for weights that no seed draws
        for name, value in recorded.items():
            if name not in getattr(args, "given", set(vars(args))):
                setattr(args, name, value)
    model = args.model if args.model is not None else (  # endpoints: the servers'
        "builtin" if args.endpoint_a is not None or args.endpoint_b is not None else "sentinel")
    settings = config.Settings(mode=args.mode, model=model, data_dir=args.data_dir, limit=args.limit,
                               num_fewshot=args.num_fewshot, batch_size=args.batch_size, max_gen_toks=args.max_gen_toks,
                               device=args.device, seed=_seed(args.seed, model), backend=args.backend, inject=args.inject,
                               producer=args.producer, consumer=args.consumer,
                               endpoint_a=args.endpoint_a, endpoint_b=args.endpoint_b, ranks=args.ranks,
                               matmul=args.matmul, prefill_tokens=args.prefill_tokens)
    out = rundir.out_dir(args.out, args.mode)  # an empty --out is a usage error, not the default
    with _no_library_bars() if args.quiet else contextlib.nullcontext():
        return _run_gsm8k(args, settings, out)


def _run_gsm8k(args, settings, out) -> int:
    from .gsm8k import ab, config, rundir

    settings = config.validate(settings)  # every usage error before the plan line and before any rank starts
    rundir.check_out(out, args.resume)  # a file as --out, --resume of a path with no run: before the plan line too
    if args.resume:
        rundir.check_resume_early(out, settings)  # settings that differ from the run's: one line, no plan line
    args.run_dir = out  # for the resume hint on Ctrl-C
    if not args.quiet:
        print(_plan(settings, out), file=sys.stderr, flush=True)
    try:
        rep = ab.run(settings, out, resume=args.resume, progress=not args.quiet)
    except OSError as e:  # the Hub unreachable, a file missing
        hub = settings.data_dir is None  # the questions come from the Hugging Face Hub
        hint = " (no network? --data-dir DIR reads gsm8k's train.jsonl/test.jsonl offline)" if hub else ""
        raise RuntimeError(f"{e}{hint}") from e
    from . import report

    if "verdict" not in rep:  # a rank other than 0 under torchrun: rank 0 reports, and its exit code is the verdict
        return 0
    print(report.to_markdown(rep))
    print(f"report: {rep['out']}/report.md")
    return 1 if rep["verdict"]["regression"] else 0


def _cmd_serve(args) -> int:
    from . import serve
    from .gsm8k import config

    settings = config.Settings(mode=args.mode, model=args.model, device=args.device, seed=_seed(args.seed, args.model),
                               backend=args.backend,
                               inject=args.inject, producer=args.producer, consumer=args.consumer, matmul=args.matmul)
    if args.arm.lower() == "a":  # arm A is the bf16 fallback: nothing of the FP8 chain would take effect
        given = [f"--{flag}" for flag in ("backend", "inject", "producer", "consumer")
                 if getattr(args, flag) not in (None, "auto")]
        if given:
            raise UsageError(f"{', '.join(given)}: apply to the FP8 chain, which --arm b serves; --arm a serves the "
                             "bf16 fallback")
    config.check_device(args.device)
    return serve.serve(settings, args.arm, args.port, args.max_requests, args.idle_timeout, args.ready_file)


def _cmd_report(args) -> int:
    from . import report

    if args.label and len(args.label) != len(args.paths):
        raise ValueError(f"--label: expected one per report path ({len(args.paths)}), got {len(args.label)}")
    reps = [report.load(p) for p in args.paths]
    print(report.to_markdown(reps[0]) if len(reps) == 1 else report.compare(reps, args.label or args.paths))
    return 1 if any(r["verdict"]["regression"] for r in reps) and args.fail_on_regression else 0


def _cmd_results(args) -> int:
    from . import results

    return results.main(Path(args.reports), Path(args.out), check=args.check)


def _sub(sub, name: str, help: str, description: str, examples: list[str]) -> argparse.ArgumentParser:
    paragraphs = "\n\n".join(textwrap.fill(par, 100) for par in description.split("\n\n"))
    text = paragraphs + "\n\nexamples:\n" + "\n".join(f"  {e}" for e in examples)
    parser = sub.add_parser(name, help=help, description=text, formatter_class=_Help)
    # also after the command (accval gsm8k ... --debug); SUPPRESS keeps a --debug given before it
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks instead of one-line errors (also accepted before the command)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="accval", formatter_class=_Help,
                description="Accuracy validation for FP8 kernel chains (DeepSeek-V4 o_a_proj): mutation testing of "
                            "the kernel suite, kernel benchmarks, and a paired gsm8k A/B of the bf16 fallback "
                            "against the FP8 chain.\n\nstart here: accval gsm8k --ab --limit 50 (the sentinel A/B, "
                            "minutes on a CPU); pytest suites/kernel --producer MODULE:FN (your kernel against the "
                            "contract, docs/contract.md)\n\nexit codes: 0 ok, 1 regression found, 2 usage or "
                            "environment error, 130 stopped by Ctrl-C, 143 by SIGTERM")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    p.add_argument("--version", action="version", version=f"accval {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    m = _sub(sub, "mutants", "run the kernel suite against every catalog mutant",
             "Run the kernel suite once per catalog mutant (a deliberately broken kernel) and report which ones it "
             "kills. Exit 1 if any mutant survives.",
             ["accval mutants --jobs 2 --json runs/mutants/mine.json", "accval mutants --only scale-pad-btm --no-baseline"])
    m.add_argument("--json", help="write the report as JSON here (Markdown beside it), saved as each mutant finishes "
                                  "(default: runs/mutants/<timestamp>.json under the current directory, or under "
                                  "$ACCVAL_RUNS_DIR)")
    m.add_argument("--markdown", help="write the Markdown table here")
    m.add_argument("--only", nargs="+", action="extend", metavar="ID", help="only these mutants, given once or repeated (default: all; the catalog's ids and defects are in accval/mutants.py, and an "
                                                          "unknown ID lists them)")
    m.add_argument("--jobs", type=_positive_int, default=1, help="mutant runs side by side (each is its own pytest process)")
    m.add_argument("--no-baseline", action="store_true", help="skip the pull request's baseline test")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.add_argument("--resume", action="store_true", help="continue the run saved in --json: keep its finished mutants, "
                                                         "run the rest (needs --json)")
    m.set_defaults(fn=_cmd_mutants)
    b = _sub(sub, "bench", "time the kernels and their baselines on the GPU",
             "Time the FP8 producer, consumer and chain against their baselines at DeepSeek-V4 shapes (a CUDA GPU "
             "is needed); writes JSON and Markdown under --out.",
             ["accval bench", "accval bench --ops chain --m 1500,4096 --shapes dep8 --layouts gptj",
              "accval bench --sweep --ops consumer"])
    b.add_argument("--ops", type=_subset(BENCH_OPS), default=None, metavar="OPS",
                   help="comma-separated ops to time, from producer,consumer,chain (default: all; with --sweep: "
                        "producer,consumer)")
    b.add_argument("--m", type=_token_counts, default="64,256,1024,1500,2048,4096,8192", metavar="M,...",
                   help="token counts M (rows) to time at")
    b.add_argument("--shapes", type=_subset(BENCH_SHAPES), default="dep8,tep8", metavar="SHAPES",
                   help="per-rank shapes, from dep8 (8 groups per rank), tep8 (1 group per rank)")
    b.add_argument("--layouts", type=_subset(BENCH_LAYOUTS), default="neox,gptj", metavar="LAYOUTS",
                   help="RoPE layouts of the producer and chain rows, from neox, gptj")
    b.add_argument("--reps-ms", type=_positive_int, default=200, help="do_bench's timing window per row, ms")
    b.add_argument("--with-compiled", action="store_true", help="add the torch.compile'd two-step producer rows")
    b.add_argument("--out", default="reports/bench", help="directory for the JSON and Markdown results")
    b.add_argument("--sweep", action="store_true",
                   help="time every candidate launch configuration instead (the measurements behind the dispatch tables; "
                        "--ops producer,consumer)")
    b.set_defaults(fn=_cmd_bench)
    g = _sub(sub, "gsm8k", "gsm8k 5-shot A/B: bf16 fallback (A) against the FP8 chain (B)",
             "Run both arms on the same gsm8k questions (5-shot, greedy) and compare them with paired statistics "
             "and teacher-forced agreement. --ab is required (it is the only mode). Each run writes a run directory "
             "as it goes; Ctrl-C (or SIGTERM) saves what finished and prints the command that resumes it.\n\n"
             "exit codes: 0 no regression, 1 regression, 2 usage or environment error, 130 stopped by Ctrl-C, 143 by SIGTERM",
             ["accval gsm8k --ab --limit 64", "accval gsm8k --ab --mode tep8 --inject scale-pad-btm --limit 32",
              "accval gsm8k --ab --out runs/gsm8k/mine --resume"])
    g.add_argument("--ab", action="store_true", help="required: run both arms on the same questions and compare them")
    g.add_argument("--mode", choices=("dep8", "tep8"), default="dep8",
                   help="sharding at the o_a_proj site: dep8 (data parallel, each rank its own requests) or tep8 "
                        "(tensor parallel, heads and groups split over 8 ranks)")
    g.add_argument("--model", default=None,
                   help="'sentinel' (the small trained DeepSeek-V4 shipped with accval, on its own synthetic "
                   "gsm8k-format problems unless --data-dir says otherwise), 'builtin' (seeded random weights: "
                   "agreement only) or a DeepSeek-V4 checkpoint directory. Default: sentinel (builtin with "
                   "--endpoint-a/-b)")
    g.add_argument("--data-dir", help="read train.jsonl/test.jsonl here (offline); default: the sentinel's own "
                   "problems for --model sentinel, Hugging Face openai/gsm8k for any other model")
    g.add_argument("--limit", type=int, help=f"first N test questions (default: all: {SENTINEL_QUESTIONS} for the "
                   f"sentinel's problems, {GSM8K_QUESTIONS} for gsm8k)")
    g.add_argument("--num-fewshot", type=int, default=5, help="solved examples before each question (gsm8k's standard: 5)")
    g.add_argument("--batch-size", type=int, default=32,
                   help="questions generated together (under DEP8 each rank gets 1/8 of them); also the unit that is saved")
    g.add_argument("--prefill-tokens", type=_positive_int, default=None, metavar="N",
                   help="most prompt tokens one rank prefills in one forward, as an engine batches a rank's requests: "
                        "a DEP rank's M at prefill is the sum of its prompts' tokens up to N (a longer prompt alone); "
                        "1: one prompt at a time (default: 8192)")
    g.add_argument("--max-gen-toks", type=int, default=256, help="most tokens generated per answer")
    g.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:N")
    g.add_argument("--seed", type=int, help="seed of the built-in model's random weights (--model builtin only; "
                   "default 0)")
    g.add_argument("--backend", default="auto", help="FP8 chain of arm B: auto (triton on GPU, torch on CPU), triton, "
                   "triton+scaled_mm, torch")
    g.add_argument("--inject", metavar="ID", help="apply catalog mutant ID to arm B (the catalog: accval/mutants.py; "
                   "an unknown ID lists the ids)")
    g.add_argument("--producer", metavar="NAME", help="arm B's producer instead of the backend's: a registered name "
                   "(accval, reference, reference:RECIPE, mutant:ID) or module:attr of your own; its accval_* "
                   "attributes declare its recipe (the report records it)")
    g.add_argument("--consumer", metavar="NAME", help="arm B's consumer instead of the backend's (accval, emulated, "
                   "torch, reference, mutant:ID, or module:attr); it must read the producer's recipe")
    g.add_argument("--matmul", default="auto", choices=("auto", "model", "fp32"),
                   help="the bf16 matmuls (the model's attention, linear layers and experts; arm A's bmm): as the "
                        "model and arm A compute them, or as fp32 matmuls of the same bf16 values rounded to bf16 (equal up to summation "
                        "order; ~10x faster on CPUs without bf16 units). auto: fp32 on a CPU, model on a GPU")
    g.add_argument("--ranks", type=_ranks_arg, default="auto", metavar="N|auto",
                   help="run the 8 DEP/TEP ranks in N real processes (torch.distributed: gloo on CPU, NCCL on "
                        "GPUs); 1: one process; auto: under DEP on a CPU one process per core (a "
                        "divisor of 8), otherwise one; under torchrun the group is torchrun's")
    g.add_argument("--endpoint-a", metavar="URL", help="arm A is this OpenAI-compatible completions server")
    g.add_argument("--endpoint-b", metavar="URL", help="arm B is this OpenAI-compatible completions server")
    g.add_argument("--out", help="run directory (default: runs/gsm8k/<timestamp>-<mode> under the current directory, "
                   "or under $ACCVAL_RUNS_DIR)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out (needs --out)")
    g.add_argument("--quiet", action="store_true", help="no plan line, no progress bars (accval's, lm-eval's, "
                   "transformers'), no ETA")
    g.set_defaults(fn=_cmd_gsm8k)
    v = _sub(sub, "serve", "serve one arm as an OpenAI-compatible completions endpoint on 127.0.0.1",
             "Serve arm A or B of the A/B as /v1/completions on 127.0.0.1, for accval gsm8k --endpoint-a/-b "
             "or any OpenAI-compatible client. Stops after --max-requests, --idle-timeout or SIGTERM.",
             ["accval serve --arm a --port 8001 & accval serve --arm b --port 8002 &",
              "accval gsm8k --ab --endpoint-a http://127.0.0.1:8001 --endpoint-b http://127.0.0.1:8002 --limit 32"])
    v.add_argument("--arm", required=True, choices=("a", "b", "A", "B"), help="A: bf16 fallback; B: FP8 chain")
    v.add_argument("--mode", choices=("dep8", "tep8"), default="dep8", help="sharding at the o_a_proj site")
    v.add_argument("--model", default="sentinel", help="as for accval gsm8k: sentinel, builtin or a checkpoint directory")
    v.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:N")
    v.add_argument("--seed", type=int, help="seed of the built-in model's random weights (--model builtin only; "
                   "default 0)")
    v.add_argument("--backend", default="auto", help="FP8 chain of arm B, as for accval gsm8k")
    v.add_argument("--matmul", default="auto", choices=("auto", "model", "fp32"), help="as for accval gsm8k")
    v.add_argument("--inject", metavar="ID", help="apply catalog mutant ID to arm B (an unknown ID lists the ids)")
    v.add_argument("--producer", metavar="NAME", help="arm B's producer instead of the backend's, as for accval gsm8k")
    v.add_argument("--consumer", metavar="NAME", help="arm B's consumer instead of the backend's, as for accval gsm8k")
    v.add_argument("--port", type=_port, default=8000, help="TCP port on 127.0.0.1; 0 picks a free one")
    v.add_argument("--max-requests", type=_positive_int, help="stop after this many completions (default: no limit)")
    v.add_argument("--idle-timeout", type=_positive_float, default=600.0, help="stop after this many idle seconds")
    v.add_argument("--ready-file", help="write the base URL here once listening")
    v.set_defaults(fn=_cmd_serve)
    r = _sub(sub, "report", "print a gsm8k A/B report, or compare several (oldest first)",
             "Print one report as Markdown, or a table comparing several (oldest first, for a nightly trend).",
             ["accval report reports/gsm8k/cpu-sentinel-dep8-limit50",
              "accval report --fail-on-regression nightly/*/report.json"])
    r.add_argument("paths", nargs="+", help="report.json files or run directories")
    r.add_argument("--fail-on-regression", action="store_true", help="exit 1 when any report's verdict is regression")
    r.add_argument("--label", action="append", metavar="NAME",
                   help="name of a compared report's row, once per path in order (default: the path)")
    r.set_defaults(fn=_cmd_report)
    s = _sub(sub, "results", "write docs/results.md from the committed reports under reports/",
             "Write the results page (every committed A/B, benchmark and defect-catalog run as tables) from "
             "reports/. Exit 0: written (or, with --check, up to date); 1: --check found it out of date; 2: --reports "
             "holds no report.",
             ["accval results", "accval results --check"])
    s.add_argument("--reports", default="reports", help="the reports directory")
    s.add_argument("--out", default="docs/results.md", help="the page to write")
    s.add_argument("--check", action="store_true", help="write nothing; exit 1 when --out differs from what it would be")
    s.set_defaults(fn=_cmd_results)
    return p


_UNSET = object()


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("accval")
    except PackageNotFoundError:
        return "(not installed)"


def _given(parser: argparse.ArgumentParser, argv: list[str], command: str) -> set[str]:
    """The options of ``command`` given on its command line (their ``dest`` names): parsed again into a
    namespace holding a marker for each, which argparse leaves where no option set it."""
    sub = _commands(parser)[command]
    # options that add to what is there (append, extend, count) start from nothing instead of the marker
    adding = {a.dest for a in sub._actions if isinstance(a, (argparse._AppendAction, argparse._CountAction))}
    ns = argparse.Namespace(**{a.dest: None if a.dest in adding else _UNSET for a in sub._actions
                               if a.dest != argparse.SUPPRESS})
    sub.parse_known_args(argv[argv.index(command) + 1:], namespace=ns)
    return {dest for dest, value in vars(ns).items() if value is not _UNSET and value is not None}


def _interrupted(argv: list[str], args) -> int:
    """Ctrl-C or SIGTERM: say what is saved and the command that continues (gsm8k), exit 128 + the
    signal, no traceback."""
    from . import stop

    saved_to = getattr(args, "saved_to", None)
    if saved_to is not None:  # accval mutants
        from . import mutation

        try:
            done = f"{len(mutation.load(saved_to)['mutants'])} finished mutant(s) are saved in {saved_to}"
        except (ValueError, KeyError, TypeError):
            done = f"no mutant had finished ({saved_to} not written)"
        print(f"accval: interrupted ({stop.signal_name()}); {done}. Resume with:\n"
              f"  {resume_command(argv, saved_to, '--json')}", file=sys.stderr)
        return stop.exit_code()
    out = getattr(args, "run_dir", None)
    if out is None:
        print(f"accval: interrupted ({stop.signal_name()})", file=sys.stderr)
        return stop.exit_code()
    from .gsm8k import rundir

    if not (out / "run.json").exists():
        print(f"accval: interrupted ({stop.signal_name()}) before the run directory {out} was made; nothing is saved",
              file=sys.stderr)
        return stop.exit_code()
    try:
        saved = rundir.saved_questions(out)
    except (OSError, ValueError) as e:
        saved = f"? ({e})"
    print(f"accval: interrupted ({stop.signal_name()}); {saved} finished question{'' if saved == 1 else 's'} "
          f"{'is' if saved == 1 else 'are'} saved in {out}. Resume with:\n"
          f"  {resume_command(argv, out)}", file=sys.stderr)
    return stop.exit_code()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # said by the command's parser, whose --help describes its options
            _commands(parser)[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
        args.given = _given(parser, argv, args.command)
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    from . import stop

    try:
        with stop.signals_interrupt():
            return args.fn(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        return _interrupted(argv, args)
    except (ValueError, TypeError, KeyError, RuntimeError, OSError, ImportError) as e:
        if args.debug:  # the traceback, and the exit code the line below would give (not Python's 1)
            traceback.print_exc()
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        if _is_contract_violation(e):  # a plugged producer's wrong buffers in the model: what the A/B looks for
            print(f"accval: regression: {' '.join(str(msg).split())}", file=sys.stderr)
            return EXIT_REGRESSION
        print(f"accval: error: {' '.join(str(msg).split())}", file=sys.stderr)
        return EXIT_USAGE


def _is_contract_violation(e: BaseException) -> bool:
    implementations = sys.modules.get("accval.implementations")  # imported by whatever raised one
    return implementations is not None and isinstance(e, implementations.ContractViolation)


if __name__ == "__main__":
    sys.exit(main())
