"""Hypothesis profiles shared by the root conftest and the pytest plugin.

``ACCVAL_HYPOTHESIS_PROFILE`` (or ``HYPOTHESIS_PROFILE``) picks one; by default the profile follows
where the kernels run: ``cpu`` on a machine without a GPU (Triton's interpreter: few, bounded examples,
large explicit cases skipped), ``gpu`` with one, ``ci`` when ``CI`` is set (derandomized, bounded).
``nightly`` is large, for the GPU box; ``smoke`` is a quick look at a plugged implementation.
``max_m`` bounds the token count Hypothesis draws under each profile: the CPU interpreter costs
~10 ms per token and head at BLOCK_TOKENS_M=1, the GPU nothing measurable. ``skip_slow_cpu``: cases
marked ``slow_cpu`` (explicit sizes that cost a minute in the interpreter) skip, saying so.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings

#: Set to "1" by ``accval mutants`` for its pytest children: no shrinking of failing examples.
NO_SHRINK = "ACCVAL_HYPOTHESIS_NO_SHRINK"

PROFILES = {
    "cpu": dict(max_examples=10, deadline=None, derandomize=True, print_blob=True, max_m=200, skip_slow_cpu=True),
    "gpu": dict(max_examples=60, deadline=None, max_m=4096),
    "ci": dict(max_examples=20, deadline=None, derandomize=True, print_blob=True, max_m=260, skip_slow_cpu=True),
    "nightly": dict(max_examples=400, deadline=None, max_m=9000),
    # a quick look at a plugged implementation (CI runs each example producer under it)
    "smoke": dict(max_examples=6, deadline=None, derandomize=True, print_blob=True, max_m=64, skip_slow_cpu=True),
}
#: PROFILES' keys that are accval's, not Hypothesis settings
_OWN_KEYS = ("max_m", "skip_slow_cpu")


def register_profiles() -> str:
    """Register all profiles and load the chosen one; returns its name."""
    for name, opts in PROFILES.items():
        opts = {k: v for k, v in opts.items() if k not in _OWN_KEYS}
        # parent: Hypothesis' own defaults, not whatever profile is loaded now (a no-shrink one, say).
        # function_scoped_fixture: the suite's function fixtures (accval_record, the implementations)
        # are meant to span a test's examples: the recorder sums them for the run's summary line.
        settings.register_profile(name, settings.get_profile("default"),
                                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                         HealthCheck.function_scoped_fixture], **opts)
    name = active_profile()
    if os.environ.get(NO_SHRINK) == "1":
        # a mutant run asks only whether some test fails: shrinking the failing example to a minimal
        # one, or running the remaining explicit examples after one failed, costs minutes in the
        # interpreter and changes no verdict
        settings.register_profile(f"{name}-no-shrink", settings.get_profile(name),
                                  phases=[Phase.explicit, Phase.reuse, Phase.generate], report_multiple_bugs=False)
        settings.load_profile(f"{name}-no-shrink")
    else:
        settings.load_profile(name)
    return name


def active_profile() -> str:
    name = os.environ.get("ACCVAL_HYPOTHESIS_PROFILE") or os.environ.get("HYPOTHESIS_PROFILE")
    if not name:
        import torch

        name = "ci" if os.environ.get("CI") else "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"ACCVAL_HYPOTHESIS_PROFILE: expected one of {sorted(PROFILES)}, got {name!r}")
    return name


def max_m() -> int:
    return PROFILES[active_profile()]["max_m"]


def skips_slow_cpu_cases(profile: str) -> bool:
    return bool(PROFILES[profile].get("skip_slow_cpu"))


def child_pytest_env(**overrides: str) -> dict[str, str]:
    """Environment for a pytest that accval starts itself (mutants, tool tests): the caller's
    ``PYTEST_ADDOPTS`` (e.g. CI's ``-n 2``) and xdist worker variables would change the child's
    behaviour and exit codes, so they are not passed on."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS" and not k.startswith("PYTEST_XDIST")}
    env.update(overrides)
    return env


def plugin_args(env: dict[str, str] | None = None) -> list[str]:
    """Arguments that give a pytest accval starts itself the ``accval`` plugin (``--producer``,
    ``--consumer``, the fixtures). pip installs it as a ``pytest11`` entry point, which pytest loads on
    its own; naming it again with ``-p`` would register it twice, which pytest refuses. A checkout
    used through ``PYTHONPATH`` (as on the lent GPU) has no entry point, and
    ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` turns entry points off: then ``-p`` is the only way in."""
    from importlib.metadata import entry_points

    env = os.environ if env is None else env
    installed = any(ep.value == "accval.pytest_plugin" for ep in entry_points(group="pytest11"))
    return [] if installed and not env.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") else ["-p", "accval.pytest_plugin"]


#: The environment variables a user sets to choose the thread count themselves; accval leaves it alone then.
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _shares(processes: int) -> bool:
    """Whether ``processes`` side-by-side processes split the cores (not when alone, nor when the
    user set a thread count)."""
    if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
        raise ValueError(f"processes: expected an int >= 1, got {processes!r}")
    return processes > 1 and not any(os.environ.get(v) for v in _THREAD_VARS)


def share_cores(processes: int) -> int | None:
    """Give this process its share of the cores when ``processes`` busy processes run side by side
    (pytest-xdist workers, ``accval mutants --jobs``): torch's default of one thread per core in every
    process oversubscribes the CPU, and its OpenMP threads then spin against each other (two sentinel
    A/Bs side by side on a 2-core machine: 269 s with 2 threads each, 48 s with 1).
    Returns the thread count set, or None when the user chose one (``OMP_NUM_THREADS``) or nothing is shared."""
    if not _shares(processes):
        return None
    import torch

    threads = max(1, torch.get_num_threads() // processes)
    torch.set_num_threads(threads)
    return threads


def threads_env(processes: int) -> dict[str, str]:
    """``OMP_NUM_THREADS`` for a child process that runs beside ``processes - 1`` others (empty when the
    user chose a thread count or nothing is shared)."""
    if not _shares(processes):
        return {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"OMP_NUM_THREADS": str(max(1, cores // processes))}


def gpu_memory_lock_path() -> Path:
    """The lock file of this process's GPU (its UUID; ``cpu`` without one), in the temporary directory
    every pytest process of this machine shares."""
    import torch

    key = "cpu"
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        key = str(getattr(torch.cuda.get_device_properties(index), "uuid", index))
    return Path(tempfile.gettempdir()) / f"accval-gpu-memory-{key}.lock"


@contextlib.contextmanager
def one_gpu_memory_test_at_a_time() -> Iterator[None]:
    """Held around a test marked ``gpu_memory`` (tens of GiB of one card): no other such test of any pytest
    process on this machine (the workers of ``-n N``, another run beside it: a plugged kernel's suite) runs
    on the card meanwhile, and the memory the test leaves in PyTorch's cache goes back to the card after it.
    Without both, a process held ~27 GiB during its large test and kept it cached after, and the tests of
    other processes ran out of memory (six suites side by side on one 140 GiB H200: 108 tests,
    ``reports/kernel/gpu-s37-NVIDIA_H200-2026-12-05/``)."""
    import gc

    import torch
    from filelock import FileLock

    with FileLock(str(gpu_memory_lock_path())):
        try:
            yield
        finally:
            gc.collect()  # tensors a failed test's traceback still held
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def skip_unless_the_engine_runs() -> None:
    """At the top of a test module that generates with the A/B engine: skip the module, saying why,
    where it cannot run (transformers without DeepSeek-V4, or older than the engine needs)."""
    import pytest

    pytest.importorskip("transformers.models.deepseek_v4")
    import transformers

    from accval.gsm8k.engine import check_transformers

    try:
        check_transformers(transformers.__version__)
    except RuntimeError as e:
        pytest.skip(str(e), allow_module_level=True)
