"""Test runs made fast without weakening them: processes side by side share the cores (xdist workers, ``accval mutants --jobs``); mutant runs stop at the first failure."""

from __future__ import annotations

import os

import pytest
import torch

from accval import mutation
from accval.testing import share_cores, threads_env


@pytest.fixture
def torch_threads(monkeypatch):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_share_cores_divides_the_threads(torch_threads):
    torch.set_num_threads(4)
    assert share_cores(2) == 2 and torch.get_num_threads() == 2
    torch.set_num_threads(4)
    assert share_cores(8) == 1 and torch.get_num_threads() == 1  # never below one
    torch.set_num_threads(4)
    assert share_cores(1) is None and torch.get_num_threads() == 4  # alone: untouched


def test_a_thread_count_the_user_chose_is_kept(torch_threads, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    torch.set_num_threads(3)
    assert share_cores(2) is None and torch.get_num_threads() == 3
    assert threads_env(2) == {}


def test_child_processes_get_their_share(torch_threads, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    assert threads_env(2) == {"OMP_NUM_THREADS": "3"}
    assert threads_env(12) == {"OMP_NUM_THREADS": "1"}
    assert threads_env(1) == {}


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_process_counts_are_value_errors(bad):
    with pytest.raises(ValueError, match="processes: expected an int >= 1"):
        share_cores(bad)
    with pytest.raises(ValueError, match="processes: expected an int >= 1"):
        threads_env(bad)


def test_this_xdist_worker_took_its_share():
    """The plugin's pytest_configure: under ``-n N`` each worker runs on its share of the cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not os.environ.get("PYTEST_XDIST_WORKER") or workers < 2:
        pytest.skip("not an xdist worker with a sibling (CI runs the suite with -n 2)")
    if any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        pytest.skip("the user chose the thread count")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert torch.get_num_threads() <= max(1, cores // workers)


def test_mutant_children_get_their_share(monkeypatch):
    """``accval mutants --jobs 2`` starts its pytest children with OMP_NUM_THREADS set to their share."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    seen = {}

    def fake_run(self, cmd, env):
        seen["env"] = env
        return 1, "", ""

    monkeypatch.setattr(mutation.Children, "run", fake_run)
    monkeypatch.setattr(mutation, "_first_failure", lambda junit: "t")
    out = mutation.run_suite("accval", "silent-fallback", gpu=False, jobs=2)
    assert out.killed and seen["env"]["OMP_NUM_THREADS"] == "2"
    mutation.run_suite("accval", "silent-fallback", gpu=False, jobs=1)
    assert "OMP_NUM_THREADS" not in seen["env"]


def test_mutant_runs_stop_at_the_first_failing_example(monkeypatch):
    """``accval mutants`` children (ACCVAL_HYPOTHESIS_NO_SHRINK=1) neither shrink nor run the remaining
    explicit examples after one failed: a killed mutant is known at its first failure."""
    from hypothesis import Phase, settings

    from accval.testing import NO_SHRINK, register_profiles

    before = settings.default
    monkeypatch.setenv(NO_SHRINK, "1")
    try:
        name = register_profiles()
        assert settings.default.phases == (Phase.explicit, Phase.reuse, Phase.generate)
        assert settings.default.report_multiple_bugs is False
        assert settings.default.max_examples == settings.get_profile(name).max_examples
    finally:
        monkeypatch.delenv(NO_SHRINK)
        register_profiles()
    assert settings.default.report_multiple_bugs is True and Phase.shrink in settings.default.phases
    assert settings.default.max_examples == before.max_examples
