"""Stopping on request: SIGTERM (what Slurm, Kubernetes and CI runners send) is as orderly as Ctrl-C,
and a stopped ``accval mutants`` leaves no pytest process behind and resumes.

``accval mutants`` stopped by SIGTERM used to die at once: its pytest child ran on (on a GPU runner,
holding the GPU) and the mutants it had finished were lost. An A/B stopped by SIGTERM died without
saving its batch in flight or saying how to resume."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from accval import mutation, stop
from accval.cli import main


def _send(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.5)  # the handler runs in the main thread at its next bytecode; it must have run by now


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_each_stop_signal_interrupts_and_sets_the_exit_code(signum, code):
    with pytest.raises(KeyboardInterrupt), stop.signals_interrupt():
        _send(signum)
    assert stop.exit_code() == code and stop.signal_name() == signal.Signals(signum).name
    assert signal.getsignal(signal.SIGTERM) is not stop._raise, "the handlers outlived the block"


def test_the_first_stop_signal_asks_for_the_batch_boundary_and_the_second_stops_now(capsys):
    with stop.at_batch_boundary():
        stop.batches_begin()
        _send(signal.SIGTERM)
        assert stop.requested() and "stopping after the batch in flight" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            _send(signal.SIGINT)
    assert stop.exit_code() == 143, "the signal that asked first decides the exit code"



def test_a_stop_before_the_first_batch_stops_at_once(capsys):
    """While the prompts are built (minutes for many few-shot examples) no batch is in flight: the first
    signal stops at once instead of waiting for a batch that has not begun (a scheduler's one SIGTERM was
    ignored for 9 minutes)."""
    with pytest.raises(KeyboardInterrupt), stop.at_batch_boundary():
        _send(signal.SIGTERM)
    assert stop.requested() and stop.exit_code() == 143
    assert "stopping after" not in capsys.readouterr().err


def test_a_stop_before_the_run_directory_exists_says_nothing_is_saved(tmp_path, capsys):
    """An A/B stopped before its run directory was made (loading the model, say) has nothing to resume: it
    says so instead of printing a resume command that ``--resume`` would refuse (no run there)."""
    import argparse

    from accval.cli import _interrupted

    with pytest.raises(KeyboardInterrupt), stop.signals_interrupt():
        _send(signal.SIGTERM)
    out = tmp_path / "never-made"
    assert _interrupted(["gsm8k", "--ab", "--out", str(out)], argparse.Namespace(run_dir=out)) == 143
    err = capsys.readouterr().err
    assert err.strip() == f"accval: interrupted (SIGTERM) before the run directory {out} was made; nothing is saved"

def test_ending_a_mutant_runs_children_ends_them_and_starts_no_more():
    children = mutation.Children()
    got = {}
    worker = threading.Thread(target=lambda: got.setdefault("rc", children.run(["sleep", "60"], dict(os.environ))[0]))
    worker.start()
    deadline = time.time() + 10
    while not children._procs and time.time() < deadline:
        time.sleep(0.05)
    t0 = time.time()
    children.end_all(grace_s=5.0)
    worker.join(timeout=10)
    assert got.get("rc") == -signal.SIGTERM and time.time() - t0 < 5, got
    with pytest.raises(RuntimeError, match="stopping"):
        children.run(["true"], dict(os.environ))


def _pytest_children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        p, pp, args = line.split(None, 2)
        if int(pp) in (pid, 1) and "-m pytest" in args and "mutant:" in args:
            found.append(int(p))
    return found


IDS = ["silent-fallback", "consumer-scale-stride-m", "scale-pad-btm"]


def test_sigterm_ends_accval_mutants_with_its_children_and_the_run_resumes(tmp_path):
    """SIGTERM after the first mutant is saved: exit 143, no pytest process left running, the saved
    report incomplete with the finished mutant, and the printed command resumes, keeping it and
    running only the rest."""
    report = tmp_path / "m.json"
    argv = ["mutants", "--only", *IDS, "--no-baseline", "--quiet", "--json", str(report)]
    cli = [sys.executable, "-c", "import sys; from accval.cli import main; sys.exit(main(sys.argv[1:]))"]
    proc = subprocess.Popen([*cli, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not report.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before a mutant was saved"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, (proc.returncode, err[-2000:])
    time.sleep(0.5)
    assert not _pytest_children(proc.pid), "a pytest child of the stopped run is still running"
    saved = json.loads(report.read_text())
    done = [m["id"] for m in saved["mutants"]]
    assert saved["complete"] is False and 1 <= len(done) < len(IDS), saved
    assert f"{len(done)} finished mutant(s) are saved in {report}" in err, err[-1000:]
    resume = err.strip().splitlines()[-1].strip()
    assert shlex.split(resume)[1:] == [*argv, "--resume"], resume
    assert main([*argv, "--resume"]) == 0
    final = json.loads(report.read_text())
    assert final["complete"] is True and final["resumed"] == done
    assert [m["id"] for m in final["mutants"]] == IDS and all(m["killed"] for m in final["mutants"])
    assert final["mutants"][:len(done)] == saved["mutants"], "a finished mutant was run again"


def test_resume_refuses_a_report_made_otherwise(tmp_path, capsys):
    report = tmp_path / "m.json"
    assert main(["mutants", "--only", "silent-fallback", "--no-baseline", "--quiet", "--resume"]) == 2
    assert "--resume needs --json" in capsys.readouterr().err
    assert main(["mutants", "--only", "silent-fallback", "--no-baseline", "--quiet", "--json", str(report), "--resume"]) == 2
    assert f"no report at {report}" in capsys.readouterr().err
    report.write_text(json.dumps({"schema": 1, "device": "no such card", "torch": "2.11.0", "hypothesis_profile": "ci",
                                  "mutants": []}))
    assert main(["mutants", "--only", "silent-fallback", "--no-baseline", "--quiet", "--json", str(report), "--resume"]) == 2
    assert "device is 'no such card'" in capsys.readouterr().err
    report.write_text("{not json")
    assert main(["mutants", "--only", "silent-fallback", "--no-baseline", "--quiet", "--json", str(report), "--resume"]) == 2
    assert "is not a readable report" in capsys.readouterr().err


def test_a_resume_with_other_mutants_keeps_the_earlier_ones_and_paths_are_checked_first(tmp_path, capsys):
    """--resume with another --only runs those and keeps the report's other mutants (they were dropped);
    --json over an earlier report without --resume, or at a directory, is refused before any mutant runs;
    --only of GPU-only mutants on a CPU says nothing would run (it exited 0)."""
    report = tmp_path / "m.json"
    first = ["mutants", "--only", "silent-fallback", "--no-baseline", "--quiet", "--json", str(report)]
    assert main(first) == 0
    assert main(first) == 2 and "holds an earlier run's report; --resume continues it" in capsys.readouterr().err
    assert main(["mutants", "--only", "consumer-scale-stride-m", "--no-baseline", "--quiet", "--json", str(report),
                 "--resume"]) == 0
    final = json.loads(report.read_text())
    assert [m["id"] for m in final["mutants"]] == ["consumer-scale-stride-m", "silent-fallback"], final["mutants"]
    assert main(["mutants", "--only", "silent-fallback", "--json", str(tmp_path)]) == 2
    assert "--json: expected a file path, got the directory" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["mutants", "--only", "int32-index", "--json", str(tmp_path / "g.json")]) == 2
        assert "needs a CUDA GPU; this machine has none, so nothing would run" in capsys.readouterr().err


def test_a_stop_mid_write_leaves_the_previous_report(tmp_path, monkeypatch):
    """The report is replaced whole: a write that fails part way leaves the last complete version."""
    path = tmp_path / "m.json"
    mutation.write({"schema": 1, "mutants": [{"id": "a"}]}, path, None)

    real = Path.write_text

    def cut(self, text, *args, **kwargs):
        real(self, text[:10])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", cut)
    with pytest.raises(KeyboardInterrupt):
        mutation.write({"schema": 1, "mutants": [{"id": "a"}, {"id": "b"}]}, path, None)
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"schema": 1, "mutants": [{"id": "a"}]}


def test_the_results_page_marks_an_incomplete_mutant_run(tmp_path):
    from accval import results

    reports = tmp_path / "reports"
    (reports / "mutants").mkdir(parents=True)
    entry = {"id": "scale-pad-btm", "role": "producer", "ran": True, "killed": True, "killed_by": "t", "seconds": 1.0}
    for name, complete in (("stopped", False), ("whole", True)):
        (reports / "mutants" / f"{name}.json").write_text(json.dumps(
            {"schema": 1, "device": "cpu", "date": "d", "complete": complete, "mutants": [entry]}))
    text = results.render(reports, tmp_path / "docs" / "results.md")
    assert text.count("Incomplete: the run stopped after 1 mutant(s).") == 1
    assert text.index("Incomplete") < text.index("whole.json"), "the mark is not under the stopped run"
