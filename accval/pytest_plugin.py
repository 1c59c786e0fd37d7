"""pytest plugin (entry point ``accval``): pick the implementations the kernel suite tests.

Options (also settable by environment variables):
  ``--producer NAME`` / ``ACCVAL_PRODUCER``  a registered producer or ``module:attr`` (default ``accval``)
  ``--consumer NAME`` / ``ACCVAL_CONSUMER``  a registered consumer or ``module:attr`` (default ``accval``)
Both are resolved and checked against the contract before any test runs; a plugged implementation
that cannot be called as required, or that declares nonsense, stops the session with a one-line
usage error. The run ends with one line per implementation: its declaration (recipe, exactness,
layouts, dims, output), its tests' outcomes, what was covered and what was skipped and why, how
often it differed from its recipe's mirror, and the chain's worst error against its bound.
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
    config.addinivalue_line("markers", "any_device: runs the producer under test on a device it may not declare "
                            "(the check that it raises there)")
    config.addinivalue_line("markers", "gpu_memory: holds tens of GiB of one GPU: runs while no other such test of any "
                            "pytest process on this machine does, and hands its cached memory back after")
    config.addinivalue_line("markers", "slow_cpu: large case that costs a minute in the CPU interpreter: skipped on a CPU under the "
                            "cpu, ci and smoke profiles, run everywhere else")
    try:
        profile = register_profiles()
    except ValueError as e:
        raise pytest.UsageError(f"accval: {e}") from None
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if os.environ.get("PYTEST_XDIST_WORKER") and workers:
        from .testing import share_cores

        share_cores(int(workers))  # -n N: N workers share the cores instead of each taking all of them
    from .implementations import CONSUMERS, PRODUCERS, PluginError

    named = {"producer": config.getoption("--producer") or os.environ.get("ACCVAL_PRODUCER"),
             "consumer": config.getoption("--consumer") or os.environ.get("ACCVAL_CONSUMER")}
    names = {role: name or "accval" for role, name in named.items()}
    #: the roles the run names an implementation for (none: accval's own kernels under test)
    config._accval_named = tuple(role for role, name in named.items() if name)
    try:
        config._accval_impls = {"producer": PRODUCERS.get(names["producer"]).under_test(),
                                "consumer": CONSUMERS.get(names["consumer"])}
    except (PluginError, KeyError, ValueError) as e:
        raise pytest.UsageError(f"accval: {e}") from None
    config._accval_profile = profile
    pytest_runtest_logreport.summary = _Summary()


def pytest_report_header(config):
    impls = getattr(config, "_accval_impls", None)
    if impls:
        import torch

        if torch.cuda.is_available():
            dev = torch.cuda.get_device_name()
        else:
            from accval.kernels import interpreter_casts

            dev = f"cpu (Triton interpreter; {interpreter_casts.describe()})"
        return [f"accval: producer={impls['producer'].name} ({impls['producer'].describe()}) "
                f"consumer={impls['consumer'].name} ({impls['consumer'].describe()}) "
                f"hypothesis-profile={config._accval_profile} device={dev}"]


def pytest_generate_tests(metafunc):
    """``chain_pair``: the (producer, consumer) pairs of one recipe the chain tests run
    (:func:`accval.implementations.chain_pairs`); ``scale_format``: each scale storage the consumer reads."""
    impls = getattr(metafunc.config, "_accval_impls", None)
    if impls is None:
        return
    if "chain_pair" in metafunc.fixturenames:
        from .implementations import chain_pairs

        pairs = chain_pairs(impls["producer"], impls["consumer"])
        metafunc.parametrize("chain_pair", pairs, ids=[f"{p.name}>{c.name}[{p.recipe.name}]" for p, c in pairs],
                             scope="session")
    if "scale_format" in metafunc.fixturenames:
        formats = impls["consumer"].scale_formats()
        metafunc.parametrize("scale_format", formats, ids=[f"scales-{f}" for f in formats], scope="session")


@pytest.fixture
def accval_record(request):
    """``record(kind, **data)``: a measurement for the run's summary lines (kept on the test report, so
    it reaches the summary from pytest-xdist workers too)."""
    def record(kind: str, **data):
        request.node.user_properties.append(("accval", {"kind": kind, **data}))
    return record


#: Which implementation's summary line a test counts toward, by the fixtures it uses.
_ROLE_FIXTURES = {"producer": ("producer", "chain_pair"), "consumer": ("consumer", "chain_pair")}


def _failure_line(report) -> str:
    """``test name: the first line of its error`` (the assertion or exception message; at most 240 characters)."""
    name = report.nodeid.rsplit("::", 1)[-1].split("[", 1)[0]
    message = getattr(getattr(report.longrepr, "reprcrash", None), "message", None) or str(report.longrepr)
    first = next((ln.strip() for ln in message.splitlines() if ln.strip()), "no message")
    first = first if len(first) <= 240 else first[:237] + "..."
    return f"{name}{' (setup/teardown)' if report.when != 'call' else ''}: {first}"


class _Summary:
    """Outcomes and measurements per implementation, gathered from test reports."""

    def __init__(self):
        import collections

        self.outcomes = {role: collections.Counter() for role in _ROLE_FIXTURES}
        self.skips = {role: collections.Counter() for role in _ROLE_FIXTURES}
        self.failures = {role: collections.Counter() for role in _ROLE_FIXTURES}
        #: failures of tests that judge both plugged sides at once (the chain): either side may be at fault
        self.shared = collections.Counter()
        self.cover = collections.defaultdict(set)
        self.mirror = {"codes": [0, 0], "scales": [0, 0], "scales_neither": [0, 0]}
        self.chain: dict[str, float] = {}

    def add(self, report):
        props = dict((k, v) for k, v in report.user_properties if k == "accval_roles")
        roles = props.get("accval_roles", ())
        outcome = None
        if report.when == "call":
            outcome = report.outcome
        elif report.outcome in ("skipped", "failed"):
            outcome = "error" if report.outcome == "failed" else "skipped"
        if outcome is None:
            return
        for role in roles:
            self.outcomes[role][outcome] += 1
            if outcome == "skipped" and isinstance(report.longrepr, tuple):
                self.skips[role][report.longrepr[2].removeprefix("Skipped: ")] += 1
            elif outcome in ("failed", "error"):
                self.failures[role][_failure_line(report)] += 1
                if len(roles) > 1:
                    self.shared[role] += 1
        if report.when != "call":
            return
        for key, data in report.user_properties:
            if key != "accval":
                continue
            if data["kind"] == "cover":
                for field in ("layout", "head_dim", "rope_dim"):
                    self.cover[field].add(data[field])
            elif data["kind"] == "mirror":
                for field in ("codes", "scales", "scales_neither"):
                    diff, total = data.get(field, (-1, 0))
                    if diff >= 0:
                        self.mirror[field][0] += diff
                        self.mirror[field][1] += total
            elif data["kind"] == "chain":
                self.chain[data["pair"]] = max(self.chain.get(data["pair"], 0.0), data["worst"])

    def lines(self, impls) -> list[str]:
        out = []
        for role in _ROLE_FIXTURES:
            impl = impls[role]
            c = self.outcomes[role]
            if not sum(c.values()):
                continue
            counts = ", ".join(f"{c[k]} {k}" for k in ("passed", "failed", "error", "skipped") if c[k] or k != "error")
            if self.shared[role]:
                counts += (f" ({self.shared[role]} of the failures in tests of both plugged sides together, which "
                           "either may cause: each side's own properties say which)")
            line = f"{role} {impl.name}: {impl.describe()}; {counts}"
            if role == "producer":
                cov = "; ".join(f"{f} {','.join(str(v) for v in sorted(self.cover[f]))}" for f in ("layout", "head_dim", "rope_dim")
                                if self.cover[f])
                if cov:
                    line += f"; covered {cov}"
                (cd, ct), (sd, st) = self.mirror["codes"], self.mirror["scales"]
                if ct:
                    line += (f"; vs the {impl.recipe.name} mirror: {cd} of {ct} codes ({100 * cd / ct:.3f}%), {sd} of {st} "
                             f"scales ({100 * sd / max(st, 1):.3f}%) differ")
                    nd, nt = self.mirror["scales_neither"]
                    if nt:  # a producer not claiming the mirror's bits: how many scales only the bf16 rounding explains
                        line += (f" ({nd} ({100 * nd / nt:.3f}%) also differ from the recipe's scales of the fp32 "
                                 "rotation, not rounded to the input dtype)")
            chain = {p: w for p, w in self.chain.items() if p.split("->")[role == "consumer"] == impl.name}
            if chain:
                line += "; chain worst |err|/bound " + ", ".join(f"{p} {w:.3g}" for p, w in sorted(chain.items()))
            out.append(line)
            # why it failed, one line per test and message (the first lines of Hypothesis' output bury it),
            # then every skip reason in full, most frequent first (-rs lists them per test location)
            out += [f"  failed {n}x: {why}" for why, n in self.failures[role].most_common()]
            out += [f"  skipped {n}x: {reason}" for reason, n in self.skips[role].most_common()]
        return out


def pytest_runtest_logreport(report):
    summary = getattr(pytest_runtest_logreport, "summary", None)
    if summary is not None:
        summary.add(report)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    impls = getattr(config, "_accval_impls", None)
    summary = getattr(pytest_runtest_logreport, "summary", None)
    if impls is None or summary is None or not any(sum(c.values()) for c in summary.outcomes.values()):
        return
    terminalreporter.section("accval implementations")
    for line in summary.lines(impls):
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def producer(request):
    """The producer under test (an :class:`accval.implementations.Producer`)."""
    return request.config._accval_impls["producer"]


@pytest.fixture(autouse=True)
def _producer_runs_here(request):
    """A test of the producer under test skips, saying so, where the suite's device is not one the producer
    declares (``accval_devices``), before Hypothesis draws anything; the test marked ``any_device`` checks
    that it raises there instead of falling back."""
    if "producer" not in request.fixturenames or request.node.get_closest_marker("any_device"):
        return
    producer, device = request.getfixturevalue("producer"), request.getfixturevalue("device")
    if device.type not in producer.devices:
        pytest.skip(f"{producer.name!r} runs on {producer.devices}, not {device.type} (test_provenance checks it raises)")


@pytest.fixture(autouse=True)
def _gpu_memory_held_alone(request):
    """A test marked ``gpu_memory`` runs holding :func:`accval.testing.one_gpu_memory_test_at_a_time`."""
    if request.node.get_closest_marker("gpu_memory") is None:
        yield
        return
    from .testing import one_gpu_memory_test_at_a_time

    with one_gpu_memory_test_at_a_time():
        yield


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

    impls = getattr(config, "_accval_impls", None)
    for item in items:
        roles = [role for role, names in _ROLE_FIXTURES.items() if any(n in item.fixturenames for n in names)]
        pair = getattr(getattr(item, "callspec", None), "params", {}).get("chain_pair")
        if pair is not None and impls is not None:  # a chain test counts for the side of the pair under test
            roles = [role for role, impl in zip(("producer", "consumer"), pair) if impl is impls[role]]
        named = getattr(config, "_accval_named", ())
        if len(named) == 1 and named[0] in roles:
            # one side plugged, accval's own on the other: a test of both (the chain) judges the plugged side
            # (accval's side meets its own properties in the same run), so its failures are not counted to accval
            roles = list(named)
        item.user_properties.append(("accval_roles", roles))
    first = [name for name in os.environ.get(TESTS_FIRST, "").split(",") if name]
    if first:
        rank = {name: i for i, name in enumerate(first)}
        items.sort(key=lambda item: rank.get(getattr(item, "originalname", None) or item.name, len(first)))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none (runs on the GPU box)")
    from .testing import skips_slow_cpu_cases

    profile = getattr(config, "_accval_profile", None)
    slow = pytest.mark.skip(reason=f"slow on a CPU (a minute or more: Triton kernels run in its interpreter, or several "
                                   f"processes start): skipped under the "
                                   f"{profile} profile on a CPU; the GPU and nightly runs take it (or "
                                   "ACCVAL_HYPOTHESIS_PROFILE=nightly here)")
    ci = profile is not None and skips_slow_cpu_cases(profile)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
        elif ci and "slow_cpu" in item.keywords:
            item.add_marker(slow)
