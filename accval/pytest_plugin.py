"""pytest plugin (entry point ``accval``): pick the implementations the kernel suite tests.

Options (also settable by environment variables):
  ``--producer NAME`` / ``ACCVAL_PRODUCER``  a registered producer or ``module:attr`` (default ``accval``)
  ``--consumer NAME`` / ``ACCVAL_CONSUMER``  a registered consumer or ``module:attr`` (default ``accval``)
Both are resolved and checked against the contract before any test runs; a plugged implementation
that cannot be called as required stops the session with a one-line usage error.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("accval", "accval implementations under test")
    group.addoption("--producer", default=None, help="producer under test: registered name or module:attr (env ACCVAL_PRODUCER)")
    group.addoption("--consumer", default=None, help="consumer under test: registered name or module:attr (env ACCVAL_CONSUMER)")


def pytest_configure(config):
    from .testing import register_profiles

    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped on CPU machines, with the reason)")
    config.addinivalue_line("markers", "slow_cpu: large case that costs a minute in the CPU interpreter: skipped on a CPU under the ci "
                            "profile, run everywhere else")
    profile = register_profiles()
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if os.environ.get("PYTEST_XDIST_WORKER") and workers:
        from .testing import share_cores

        share_cores(int(workers))  # -n N: N workers share the cores instead of each taking all of them
    from .implementations import CONSUMERS, PRODUCERS, PluginError

    names = {
        "producer": config.getoption("--producer") or os.environ.get("ACCVAL_PRODUCER") or "accval",
        "consumer": config.getoption("--consumer") or os.environ.get("ACCVAL_CONSUMER") or "accval",
    }
    try:
        config._accval_impls = {"producer": PRODUCERS.get(names["producer"]), "consumer": CONSUMERS.get(names["consumer"])}
    except (PluginError, KeyError, ValueError) as e:
        raise pytest.UsageError(f"accval: {e}") from None
    config._accval_profile = profile


def pytest_report_header(config):
    impls = getattr(config, "_accval_impls", None)
    if impls:
        import torch

        dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (Triton interpreter)"
        return [f"accval: producer={impls['producer'].name} consumer={impls['consumer'].name} "
                f"hypothesis-profile={config._accval_profile} device={dev}"]


@pytest.fixture(scope="session")
def producer(request):
    """The producer under test (an :class:`accval.implementations.Producer`)."""
    return request.config._accval_impls["producer"]


@pytest.fixture(scope="session")
def consumer(request):
    """The consumer under test (an :class:`accval.implementations.Consumer`)."""
    return request.config._accval_impls["consumer"]


@pytest.fixture(scope="session")
def device():
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


#: Comma-separated test function names to run before all others (stable order otherwise); set by
#: ``accval mutants`` so that each mutant meets the suite's core properties first.
TESTS_FIRST = "ACCVAL_TESTS_FIRST"


def pytest_collection_modifyitems(config, items):
    import torch

    first = [name for name in os.environ.get(TESTS_FIRST, "").split(",") if name]
    if first:
        rank = {name: i for i, name in enumerate(first)}
        items.sort(key=lambda item: rank.get(getattr(item, "originalname", None) or item.name, len(first)))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none (runs on the GPU box)")
    slow = pytest.mark.skip(reason="large case in the CPU interpreter: skipped under the ci profile on a CPU; the "
                                   "GPU and nightly runs take it (or ACCVAL_HYPOTHESIS_PROFILE=dev here)")
    ci = getattr(config, "_accval_profile", None) == "ci"
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
        elif ci and "slow_cpu" in item.keywords:
            item.add_marker(slow)
