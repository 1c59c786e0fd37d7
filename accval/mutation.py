"""``accval mutants``: run the kernel suite against every catalog mutant, and the pull request's
baseline test beside it, and report which defects each kills.

A mutant is *killed* when the suite run against it has a failing test; the first failing test and
the seconds until the run stopped are recorded. GPU-only mutants are reported as not run on a
machine without a GPU, never as killed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
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
#: then fake vs real, the buffer contract and the chain against the math reference; a consumer states
#: what ran, then meets the chain and the consumer properties.
CORE_FIRST = {
    "producer": ("test_producer_matches_mirror_reference", "test_fake_matches_real", "test_layout_contract",
                 "test_chain_matches_math_reference", "test_nonfinite_values_stay_in_their_blocks"),
    "consumer": ("test_consumer_records_what_ran_or_raises", "test_chain_matches_math_reference",
                 "test_consumer_matches_math_reference", "test_consumer_writes_any_strided_out", "test_fake_matches_real"),
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


def run_suite(suite: str, mutant_id: str, gpu: bool, jobs: int = 1) -> Outcome:
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
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - t0
        first = _first_failure(junit)
    if proc.returncode == 1:
        return Outcome(mutant_id, suite, True, True, first, round(seconds, 1))
    if proc.returncode == 0:
        return Outcome(mutant_id, suite, True, False, None, round(seconds, 1))
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
    raise RuntimeError(f"pytest could not run the {suite} suite against mutant {mutant_id} (exit {proc.returncode}): {tail[0]}")


def run(only: list[str] | None = None, suites=("accval", "baseline-pr"), progress=True, jobs: int = 1) -> dict:
    import torch

    ids = only or list(CATALOG)
    unknown = [i for i in ids if i not in CATALOG]
    if unknown:
        raise KeyError(f"unknown mutant(s) {unknown}; the catalog has: {', '.join(CATALOG)}")
    gpu = torch.cuda.is_available()
    outcomes: list[Outcome] = []
    from rich.progress import track

    if jobs < 1:
        raise ValueError(f"jobs: expected >= 1, got {jobs}")
    work = [(i, s) for i in ids for s in suites]
    # each (mutant, suite) is its own pytest process, so they can run side by side on spare cores
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_suite, suite, mid, gpu, jobs) for mid, suite in work]
        for fut in (track(futures, description="mutants") if progress else futures):
            outcomes.append(fut.result())
    mutants = []
    for mid in ids:
        ours = next(o for o in outcomes if o.id == mid and o.suite == "accval")
        base = next((o for o in outcomes if o.id == mid and o.suite == "baseline-pr"), None)
        entry = {"id": mid, "role": CATALOG[mid].role, "defect": CATALOG[mid].defect, "seen": CATALOG[mid].seen,
                 "ran": ours.ran, "killed": ours.killed, "killed_by": ours.killed_by, "seconds": ours.seconds,
                 "note": ours.note}
        if base is not None:
            entry["baseline_pr"] = {"ran": base.ran, "killed": base.killed, "killed_by": base.killed_by, "seconds": base.seconds}
        mutants.append(entry)
    device = torch.cuda.get_device_name() if gpu else "cpu (Triton interpreter)"
    return {"schema": 1, "device": device, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "hypothesis_profile": os.environ.get("ACCVAL_HYPOTHESIS_PROFILE", "ci"), "mutants": mutants}


def all_killed(report: dict) -> bool:
    """True when every mutant that ran on this machine was killed by accval's suite."""
    return all(m["killed"] for m in report["mutants"] if m["ran"])


def to_markdown(report: dict) -> str:
    lines = [f"# accval mutants — {report['device']}", "",
             f"{report['date']} · torch {report['torch']} · Hypothesis profile `{report['hypothesis_profile']}`", "",
             "| mutant | accval suite | first failing test | s | PR 14254's test |", "|---|---|---|---|---|"]
    for m in report["mutants"]:
        ours = "not run (needs GPU)" if not m["ran"] else ("**killed**" if m["killed"] else "SURVIVED")
        b = m.get("baseline_pr")
        base = "-" if b is None else ("not run" if not b["ran"] else ("killed" if b["killed"] else "survived"))
        lines.append(f"| `{m['id']}` | {ours} | `{m['killed_by'] or '-'}` | {m['seconds']} | {base} |")
    lines += ["", "Defects:", ""] + [f"- `{m['id']}`: {m['defect']} (seen: {m['seen']})" for m in report["mutants"]]
    return "\n".join(lines) + "\n"


def write(report: dict, json_path: Path | None, md_path: Path | None) -> None:
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1))
    if md_path:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(to_markdown(report))
