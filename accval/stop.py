"""Stopping on request (Ctrl-C or SIGTERM) without losing finished work, and without leaving work behind.

Every ``accval`` command runs under :func:`signals_interrupt`: SIGINT and SIGTERM both raise
KeyboardInterrupt, and the CLI exits ``128 + signal`` (130 for Ctrl-C, 143 for SIGTERM, the shell's
convention) after saying what is saved. Schedulers (Slurm, Kubernetes, CI runners cancelling a job)
stop a job with SIGTERM, so it must be as orderly as a Ctrl-C.

An A/B stops at a batch boundary (:func:`at_batch_boundary`): the first signal asks the run to stop
there (before its first batch has begun, while prompts are built, there is nothing to finish: it stops at
once, :func:`batches_begin`); the batch in flight finishes, its generations, agreement rows and site counts are saved
(:class:`accval.gsm8k.lm.CommitLog`), and the run raises :class:`Interrupted`. A second signal stops at
once; the batch in flight is then redone by ``--resume``. Real ranks: the processes ignore SIGINT (the
terminal sends it to them all), take SIGTERM (a scheduler sends it to them all) as a stop request, and
take their parent's request as SIGUSR1 (:func:`accval.gsm8k.ranks.spawn`); rank 0's view decides for
all, so every process leaves at the same batch boundary.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requested = threading.Event()
_first_signal: list[int] = []
_batches = threading.Event()

HINT = ("accval: stopping after the batch in flight, or now if none has begun (finished questions are saved); "
        "Ctrl-C (or SIGTERM) again to stop now (a batch in flight is then redone by --resume)")


class Interrupted(KeyboardInterrupt):
    """The run stopped on request after saving every finished batch."""


def _record(signum: int) -> None:
    if not _first_signal:
        _first_signal.append(signum)


def request(signum: int = signal.SIGINT) -> None:
    _record(signum)
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def reset() -> None:
    _requested.clear()
    _first_signal.clear()
    _batches.clear()


def batches_begin() -> None:
    """The A/B's first batch is about to begin: from here a stop waits for the batch boundary."""
    _batches.set()


def signal_name() -> str:
    """The signal that asked first ("SIGINT" when none did: a KeyboardInterrupt raised otherwise)."""
    return signal.Signals(_first_signal[0] if _first_signal else signal.SIGINT).name


def exit_code() -> int:
    """The exit status of a stopped command: 128 + the signal that asked first (130 when none did)."""
    return 128 + (_first_signal[0] if _first_signal else signal.SIGINT)


@contextlib.contextmanager
def handling(handler):
    """``handler`` for SIGINT and SIGTERM while inside (nothing outside the main thread, where signals
    cannot be caught)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _raise(signum, frame):
    _record(signum)
    raise KeyboardInterrupt


def signals_interrupt():
    """While inside: SIGINT and SIGTERM raise KeyboardInterrupt, the first one recorded for
    :func:`exit_code`."""
    reset()
    return handling(_raise)


def escalating(first: Callable[[int], None], then: Callable[[int], None]):
    """A signal handler for a stop asked twice: the first signal calls ``first(signum)`` (stop in order),
    every later one ``then(signum)`` (stop now)."""
    asked = []

    def handler(signum, frame):
        asked.append(signum)
        (first if len(asked) == 1 else then)(signum)

    return handler


def ask_for_boundary(signum: int) -> None:
    """The first stop signal of an A/B: request the stop and say what happens."""
    request(signum)
    print(HINT, file=sys.stderr, flush=True)


def _now_if_no_batch(signum: int) -> None:
    """Before the first batch (:func:`batches_begin`) nothing is in flight: a stop request stops at once."""
    if not _batches.is_set():
        request(signum)
        _raise(signum, None)


def _first_stop(signum: int) -> None:
    """The first stop signal where the batches run: at once before the first batch, else at its boundary."""
    _now_if_no_batch(signum)
    ask_for_boundary(signum)


def at_batch_boundary():
    """While inside: the first SIGINT or SIGTERM requests a stop at the next batch boundary (or raises
    KeyboardInterrupt before :func:`batches_begin`), the second raises KeyboardInterrupt."""
    reset()
    return handling(escalating(_first_stop, lambda signum: _raise(signum, None)))


def rank_handlers() -> None:
    """In a spawned rank process: Ctrl-C at the terminal reaches the whole process group and the parent
    decides (it forwards a stop request as SIGUSR1); SIGTERM, as a scheduler sends to every process,
    is a stop request too. The parent ends a rank at once with SIGKILL."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: _rank_stop(signum))
    signal.signal(signal.SIGUSR1, lambda signum, frame: _rank_stop(signum))


def _rank_stop(signum: int) -> None:
    """A rank's stop request (its parent says what happens): at once before the first batch, else at its
    boundary."""
    _now_if_no_batch(signum)
    request(signum)
