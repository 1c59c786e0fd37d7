"""Which implementation actually ran.

Every launcher in :mod:`kernels` calls :func:`record` with the op name and the implementation that
executed (backend, execution mode, dispatch branch). Callers that need to prove what ran (the test
suite, the A/B harness, the benchmarks) wrap their calls in :func:`capture`::

    with kernels.provenance.capture() as ran:
        fp8, scale = kernels.inv_rope_fp8_quant(...)
    assert ran[-1].impl == "triton"

This is how accval avoids the "silent fallback" defect: a backend that benchmarked against itself is
visible because the record says which code executed, not which code was requested.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections import Counter
from typing import Iterator

_local = threading.local()
#: Process-wide counts of (op, impl) since import; cheap enough to keep always on.
COUNTS: Counter[tuple[str, str]] = Counter()


@dataclasses.dataclass(frozen=True)
class Run:
    """One executed call: ``op`` (e.g. "producer"), ``impl`` (e.g. "triton"), and details."""

    op: str
    impl: str
    mode: str  # "gpu", "triton-interpreter", "torch-cpu", "torch-cuda"
    details: tuple[tuple[str, object], ...] = ()

    def detail(self, key: str, default: object = None) -> object:
        return dict(self.details).get(key, default)


def record(op: str, impl: str, mode: str, **details: object) -> Run:
    return emit(Run(op=op, impl=impl, mode=mode, details=tuple(sorted(details.items()))))


def emit(run: Run) -> Run:
    """Record an already built :class:`Run` (launchers build one per configuration and reuse it)."""
    if getattr(_local, "unrecorded", False):
        return run
    COUNTS[(run.op, run.impl)] += 1
    for sink in getattr(_local, "sinks", ()):
        sink.append(run)
    return run


@contextlib.contextmanager
def unrecorded() -> Iterator[None]:
    """Calls inside record nothing (in this thread): a comparison run beside the call under test (the A/B's
    clean chain beside an injected defect) is not what ran for it."""
    before = getattr(_local, "unrecorded", False)
    _local.unrecorded = True
    try:
        yield
    finally:
        _local.unrecorded = before


@contextlib.contextmanager
def capture() -> Iterator[list[Run]]:
    """Collect every :class:`Run` recorded in this thread inside the ``with`` block."""
    sinks = getattr(_local, "sinks", None)
    if sinks is None:
        sinks = _local.sinks = []
    runs: list[Run] = []
    sinks.append(runs)
    try:
        yield runs
    finally:
        sinks.remove(runs)
