"""``accval mutants``' progress bar: a resumed run starts at what its saved report finished (it restarted at
0%), and the bar names the mutants running now (it never named one)."""

from __future__ import annotations

import io
import os

import pytest
import torch
from rich.console import Console

from accval import mutation

IDS = ["silent-fallback", "consumer-scale-stride-m", "scale-pad-btm"]


def test_the_bar_starts_at_the_finished_count_and_names_the_running_mutants():
    out = io.StringIO()
    bar = mutation.Bar(total=6, done=2, console=Console(file=out, force_terminal=True, width=140))
    task = bar.progress.tasks[0]
    assert (task.completed, task.total, task.description) == (2, 6, "mutants"), task
    with bar:
        bar.start("scale-pad-btm", "accval")
        bar.start("rope-sign", "baseline-pr")
        assert task.description == "mutants: running scale-pad-btm, rope-sign (PR 14254's test)", task.description
        bar.progress.refresh()
        bar.finish("scale-pad-btm", "accval")
        assert (task.completed, task.description) == (3, "mutants: running rope-sign (PR 14254's test)"), task
    drawn = out.getvalue()
    assert "33%" in drawn and "mutants: running scale-pad-btm, rope-sign" in drawn, drawn[-500:]
    with pytest.raises(ValueError, match="expected 0 <= done <= total, got done=7, total=6"):
        mutation.Bar(total=6, done=7)


def test_a_resumed_run_counts_its_finished_mutants_and_names_each_as_it_runs(monkeypatch):
    """--resume of a report that finished the first of three mutants: the bar opens at 1 of 3 suite runs,
    names each remaining mutant while its suite runs, and ends at 3 of 3."""
    seen = []

    class Recording(mutation.Bar):
        def start(self, mid, suite):
            super().start(mid, suite)
            task = self.progress.tasks[0]
            seen.append((task.completed, task.total, task.description))

    def fake_run_suite(suite, mid, gpu, jobs=1, children=None):
        return mutation.Outcome(mid, suite, True, True, "t", 0.1)

    bars = []
    monkeypatch.setattr(mutation, "Bar", lambda *a, **k: bars.append(Recording(*a, **k)) or bars[-1])
    monkeypatch.setattr(mutation, "run_suite", fake_run_suite)
    gpu = torch.cuda.is_available()
    previous = {"schema": 1, "device": torch.cuda.get_device_name() if gpu else "cpu (Triton interpreter)",
                "torch": torch.__version__, "hypothesis_profile": os.environ.get("ACCVAL_HYPOTHESIS_PROFILE", "ci"),
                "mutants": [mutation._entry(IDS[0], fake_run_suite("accval", IDS[0], gpu), None)]}
    report = mutation.run(only=IDS, suites=("accval",), progress=True, previous=previous)
    assert report["resumed"] == IDS[:1] and [m["id"] for m in report["mutants"]] == IDS
    assert seen == [(1, 3, f"mutants: running {IDS[1]}"), (2, 3, f"mutants: running {IDS[2]}")], seen
    task = bars[0].progress.tasks[0]
    assert (task.completed, task.description) == (3, "mutants"), task
