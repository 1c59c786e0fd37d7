"""``accval mutants``: run the kernel suite against every catalog mutant, and the pull request's
baseline test beside it, and report which defects each kills.

A mutant is *killed* when the suite run against it has a failing test; the first failing test and
the seconds until the run stopped are recorded. GPU-only mutants are reported as not run on a
machine without a GPU, never as killed.

The report is saved each time a mutant's last suite run ends (``"complete": false`` until every one
has), so an interrupted or failed run loses no finished mutant: ``accval mutants --resume`` keeps them
and runs the rest. A run that stops early ends its pytest processes with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from .mutants import CATALOG
from .pytest_plugin import TESTS_FIRST
from .testing import NO_SHRINK, child_pytest_env, plugin_args, threads_env

SUITES_DIR = Path(__file__).resolve().parent / "suites"
#: Files of the kernel suite in the order a mutant run takes them: cheap, decisive checks first.
KERNEL_ORDER = ("test_provenance.py", "test_bad_inputs.py", "test_contract.py", "test_consumer_chain.py",
                "test_producer.py", "test_nonfinite_and_strides.py", "test_fp8_rounding.py", "test_gpu_large.py")
#: The suite's core properties for each role, run before everything else in a mutant run (``-x`` stops
#: at the first failure); the rest of the suite still runs whenever these pass. A producer meets its
#: recipe's mirror bit for bit first (exact producers: any rounding change fails on the first example),
#: also at the edges of its scale rule, then fake vs real, the buffer contract and the chain against the
#: math reference; a consumer states what ran, then meets the chain and the consumer properties.
CORE_FIRST = {
    "producer": ("test_producer_matches_mirror_reference", "test_scales_at_the_recipes_boundaries",
                 "test_fake_matches_real", "test_layout_contract",
                 "test_chain_matches_math_reference", "test_nonfinite_values_stay_in_their_blocks"),
    "consumer": ("test_consumer_records_what_ran_or_raises", "test_chain_matches_math_reference",
                 "test_consumer_matches_math_reference", "test_consumer_rounds_its_output_to_nearest",
                 "test_consumer_sums_same_sign_k_blocks_within_the_bound",
                 "test_consumer_writes_any_strided_out", "test_fake_matches_real"),
}


@dataclasses.dataclass
class Outcome:
    id: str
    suite: str
    ran: bool
    killed: bool
    killed_by: str | None
    seconds: float
    note: str = ""


def _first_failure(junit: Path) -> str | None:
    try:
        root = ET.parse(junit).getroot()
    except (ET.ParseError, FileNotFoundError):
        return None
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            return f"{case.get('classname')}::{case.get('name')}"
    return None


class Children:
    """The pytest processes of a mutant run. :meth:`end_all` ends them when the run stops early, so
    none outlives it, and refuses to start more."""

    def __init__(self):
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self._ended = False

    def run(self, cmd: list[str], env: dict[str, str]) -> tuple[int, str, str]:
        """Run ``cmd`` to its end: its exit status, stdout and stderr."""
        with self._lock:
            if self._ended:
                raise RuntimeError("the mutant run is stopping; no new suite run starts")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            self._procs.add(proc)
        try:
            stdout, stderr = proc.communicate()
        finally:
            with self._lock:
                self._procs.discard(proc)
        return proc.returncode, stdout, stderr

    def end_all(self, grace_s: float = 10.0) -> None:
        """SIGTERM to every running child, SIGKILL to any still running ``grace_s`` later."""
        with self._lock:
            self._ended = True
            procs = list(self._procs)
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + grace_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_suite(suite: str, mutant_id: str, gpu: bool, jobs: int = 1, children: Children | None = None) -> Outcome:
    m = CATALOG[mutant_id]
    if m.gpu_only and not gpu:
        return Outcome(mutant_id, suite, False, False, None, 0.0, "needs a CUDA GPU; not run on this machine")
    if suite == "accval":
        files = [str(SUITES_DIR / "kernel" / f) for f in KERNEL_ORDER]
    else:
        files = [str(SUITES_DIR / "baseline_pr")]
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        env = child_pytest_env(ACCVAL_HYPOTHESIS_PROFILE=os.environ.get("ACCVAL_HYPOTHESIS_PROFILE", "ci"),
                               **{NO_SHRINK: "1", TESTS_FIRST: ",".join(CORE_FIRST[m.role])}, **threads_env(jobs))
        cmd = [sys.executable, "-m", "pytest", *plugin_args(env), *files, "-x", "-q", "-p", "no:cacheprovider",
               f"--junitxml={junit}", f"--{m.role}", f"mutant:{m.id}"]
        t0 = time.perf_counter()
        returncode, stdout, stderr = (children or Children()).run(cmd, env)
        seconds = time.perf_counter() - t0
        first = _first_failure(junit)
    if returncode == 1:
        return Outcome(mutant_id, suite, True, True, first, round(seconds, 1))
    if returncode == 0:
        return Outcome(mutant_id, suite, True, False, None, round(seconds, 1))
    tail = (stdout + stderr).strip().splitlines()[-1:] or ["no output"]
    raise RuntimeError(f"pytest could not run the {suite} suite against mutant {mutant_id} (exit {returncode}): {tail[0]}")


def _entry(mid: str, ours: Outcome, base: Outcome | None) -> dict:
    entry = {"id": mid, "role": CATALOG[mid].role, "defect": CATALOG[mid].defect, "seen": CATALOG[mid].seen,
             "ran": ours.ran, "killed": ours.killed, "killed_by": ours.killed_by, "seconds": ours.seconds,
             "note": ours.note}
    if base is not None:
        entry["baseline_pr"] = {"ran": base.ran, "killed": base.killed, "killed_by": base.killed_by, "seconds": base.seconds}
    return entry


def check_resumable(previous: dict, header: dict, suites) -> None:
    """``previous`` (a saved report) was made the way this run would make it, so its finished mutants
    stand for this run's: same device, torch, Hypothesis profile and suites; else a ValueError naming
    the difference."""
    if not isinstance(previous, dict) or previous.get("schema") != 1 or not isinstance(previous.get("mutants"), list):
        raise ValueError("--resume: expected a report written by accval mutants (schema 1 with a mutants list), "
                         f"got {type(previous).__name__} with keys {sorted(previous) if isinstance(previous, dict) else '-'}")
    for key in ("device", "torch", "hypothesis_profile"):
        if previous.get(key) != header[key]:
            raise ValueError(f"--resume: the saved report's {key} is {previous.get(key)!r}, this run's is "
                             f"{header[key]!r}; start a new report (another --json) instead")
    with_baseline = "baseline-pr" in suites
    for m in previous["mutants"]:
        if ("baseline_pr" in m) != with_baseline:
            raise ValueError(f"--resume: the saved report {'has' if 'baseline_pr' in m else 'lacks'} the pull "
                             f"request's baseline column, this run {'runs' if with_baseline else 'skips'} it; "
                             "resume with the same --no-baseline choice")


#: How the progress bar names a suite run of a mutant (the accval suite's by the mutant alone).
SUITE_LABELS = {"accval": "{id}", "baseline-pr": "{id} (PR 14254's test)"}


class Bar:
    """The progress bar of a mutant run: suite runs finished of all this run's (a resumed run starts at
    those its saved report had finished, not at 0%), and the mutants running now by id. Workers call
    :meth:`start` and :meth:`finish` from their threads; use it as a context manager around the run."""

    def __init__(self, total: int, done: int = 0, console=None):
        from rich.progress import Progress

        if not 0 <= done <= total:
            raise ValueError(f"Bar: expected 0 <= done <= total, got done={done}, total={total}")
        self._lock = threading.Lock()
        self._running: list[tuple[str, str]] = []
        self.progress = Progress(*Progress.get_default_columns(), console=console)
        self.task = self.progress.add_task(self.description(), total=total, completed=done)

    def description(self) -> str:
        """``mutants``, then ``: running`` and the id of each mutant whose suite is running."""
        if not self._running:
            return "mutants"
        return "mutants: running " + ", ".join(SUITE_LABELS[suite].format(id=mid) for mid, suite in self._running)

    def start(self, mid: str, suite: str) -> None:
        with self._lock:
            self._running.append((mid, suite))
            self.progress.update(self.task, description=self.description())

    def finish(self, mid: str, suite: str) -> None:
        with self._lock:
            self._running.remove((mid, suite))
            self.progress.update(self.task, advance=1, description=self.description())

    def __enter__(self) -> Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()


def run(only: list[str] | None = None, suites=("accval", "baseline-pr"), progress=True, jobs: int = 1,
        save: Callable[[dict], None] | None = None, previous: dict | None = None) -> dict:
    """The report of the suites against the mutants ``only`` (default: the catalog). ``save(report)``
    gets the report so far each time a mutant's last suite run ends (``"complete": false`` until
    the last). ``previous``: a saved report (:func:`check_resumable`) whose finished mutants are kept
    as they are (listed under ``"resumed"``) and not run again."""
    import torch

    ids = only or list(CATALOG)
    unknown = [i for i in ids if i not in CATALOG]
    if unknown:
        raise KeyError(f"unknown mutant(s) {unknown}; the catalog has: {', '.join(CATALOG)}")
    if jobs < 1:
        raise ValueError(f"jobs: expected >= 1, got {jobs}")
    gpu = torch.cuda.is_available()
    header = {"schema": 1, "device": torch.cuda.get_device_name() if gpu else "cpu (Triton interpreter)",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "hypothesis_profile": os.environ.get("ACCVAL_HYPOTHESIS_PROFILE", "ci")}
    if not gpu and all(CATALOG[i].gpu_only for i in ids):
        raise ValueError(f"--only {' '.join(ids)}: {'needs' if len(ids) == 1 else 'each needs'} a CUDA GPU; this "
                         "machine has none, so nothing would run")
    entries: dict[str, dict] = {}
    kept: list[dict] = []  # a resumed report's mutants outside this run's --only: kept as they were
    if previous is not None:
        check_resumable(previous, header, suites)
        entries = {m["id"]: m for m in previous["mutants"] if m["id"] in ids}
        kept = [m for m in previous["mutants"] if m["id"] not in ids]
    resumed = list(entries) + [m["id"] for m in kept]

    def report(complete: bool) -> dict:
        return {**header, "complete": complete, "resumed": resumed,
                "mutants": [entries[i] for i in ids if i in entries] + kept}

    from concurrent.futures import ThreadPoolExecutor, as_completed

    work = [(mid, s) for mid in ids if mid not in entries for s in suites]
    outcomes: dict[tuple[str, str], Outcome] = {}
    children = Children()
    # the bar counts this run's suite runs, those the resumed report finished included
    bar = Bar(total=len(ids) * len(suites), done=len(entries) * len(suites)) if progress else None

    def one(mid: str, suite: str) -> Outcome:
        if bar is None:
            return run_suite(suite, mid, gpu, jobs, children)
        bar.start(mid, suite)
        try:
            return run_suite(suite, mid, gpu, jobs, children)
        finally:
            bar.finish(mid, suite)

    # each (mutant, suite) is its own pytest process, so they can run side by side on spare cores
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        with bar if bar is not None else contextlib.nullcontext():
            futures = [pool.submit(one, mid, suite) for mid, suite in work]
            for fut in as_completed(futures):
                o = fut.result()
                outcomes[o.id, o.suite] = o
                if all((o.id, s) in outcomes for s in suites):
                    entries[o.id] = _entry(o.id, outcomes[o.id, "accval"], outcomes.get((o.id, "baseline-pr")))
                    if save is not None:
                        save(report(complete=False))
    except BaseException:  # an interrupt, or a suite run that could not run: no child outlives the run
        pool.shutdown(wait=False, cancel_futures=True)
        children.end_all()
        raise
    finally:
        pool.shutdown(wait=True)
    final = report(complete=True)
    if save is not None:
        save(final)
    return final


def all_killed(report: dict) -> bool:
    """True when every mutant that ran on this machine was killed by accval's suite."""
    return all(m["killed"] for m in report["mutants"] if m["ran"])


def to_markdown(report: dict) -> str:
    lines = [f"# accval mutants — {report['device']}", "",
             f"{report['date']} · torch {report['torch']} · Hypothesis profile `{report['hypothesis_profile']}`", ""]
    if not report.get("complete", True):
        lines += [f"**Incomplete:** the run stopped after {len(report['mutants'])} mutant(s); `accval mutants --resume` "
                  "with the same options runs the rest.", ""]
    if report.get("resumed"):
        lines += [f"Finished before the run was resumed: {', '.join(f'`{i}`' for i in report['resumed'])}.", ""]
    lines += ["| mutant | accval suite | first failing test | s | PR 14254's test |", "|---|---|---|---|---|"]
    for m in report["mutants"]:
        ours = "not run (needs GPU)" if not m["ran"] else ("**killed**" if m["killed"] else "SURVIVED")
        b = m.get("baseline_pr")
        base = "-" if b is None else ("not run" if not b["ran"] else ("killed" if b["killed"] else "survived"))
        lines.append(f"| `{m['id']}` | {ours} | `{m['killed_by'] or '-'}` | {m['seconds']} | {base} |")
    lines += ["", "Defects:", ""] + [f"- `{m['id']}`: {m['defect']} (seen: {m['seen']})" for m in report["mutants"]]
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a stop mid-write leaves the previous version)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write(report: dict, json_path: Path | None, md_path: Path | None) -> None:
    if json_path:
        _write_text(json_path, json.dumps(report, indent=1))
    if md_path:
        _write_text(md_path, to_markdown(report))


def check_report_path(json_path: Path, resume: bool) -> None:
    """``--json`` can take a report (before any mutant runs, so none is lost at the first save): not a
    directory, its folder creatable, and, unless resuming, no earlier run's report there to overwrite."""
    if json_path.is_dir():
        raise ValueError(f"--json: expected a file path, got the directory {json_path}")
    if json_path.exists() and not resume:
        raise ValueError(f"--json: {json_path} holds an earlier run's report; --resume continues it, or choose "
                         "another path")
    try:
        json_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--json: cannot make the folder of {json_path}: {e.strerror} ({e.filename})") from None
    if not os.access(json_path.parent, os.W_OK):
        raise ValueError(f"--json: cannot write into {json_path.parent}")


def load(json_path: Path) -> dict:
    """A saved report, for ``--resume``; a ValueError naming the file when it is missing or not JSON."""
    try:
        return json.loads(Path(json_path).read_text())
    except FileNotFoundError:
        raise ValueError(f"--resume: no report at {json_path} to resume (the --json of the run to continue)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--resume: {json_path} is not a readable report: {e}") from None
