"""A run without --out writes outside the source tree: runs/gsm8k/ (git-ignored) or $ACCVAL_RUNS_DIR/gsm8k."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from accval import runs
from accval.gsm8k import rundir

REPO = Path(__file__).resolve().parents[3]


def test_default_run_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(runs.RUNS_DIR_ENV, raising=False)
    out = rundir.default_out("dep8")
    assert out.parts[:2] == ("runs", "gsm8k") and out.name.endswith("-dep8"), out
    monkeypatch.setenv(runs.RUNS_DIR_ENV, str(tmp_path))
    assert rundir.default_out("tep8").parent == tmp_path / "gsm8k"


def test_runs_directory_is_git_ignored():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    proc = subprocess.run(["git", "check-ignore", "-q", "runs/gsm8k/2026-01-01T000000-dep8/report.json"], cwd=REPO)
    assert proc.returncode == 0, "runs/ is not git-ignored: a run without --out would leave untracked files in the clone"
