"""Stopping an A/B on request (Ctrl-C) without losing finished work.

The first Ctrl-C asks the run to stop at the next batch boundary: the batch in flight finishes, its
generations, agreement rows and site counts are saved (:class:`accval.gsm8k.lm.CommitLog`), and the
run raises :class:`Interrupted`. A second Ctrl-C stops at once; the batch in flight is then redone
by ``--resume``. Real ranks: the processes ignore SIGINT and take the request from their parent as
SIGUSR1 (:func:`accval.gsm8k.ranks.spawn`); rank 0's view decides for all, so every process leaves
the same batch boundary.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

_requested = threading.Event()

HINT = ("accval: stopping after the batch in flight (its finished questions are saved); Ctrl-C again to stop "
        "now (that batch is then redone by --resume)")


class Interrupted(KeyboardInterrupt):
    """The run stopped on request after saving every finished batch."""


def request() -> None:
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def reset() -> None:
    _requested.clear()


def _on_sigint(signum, frame):
    if _requested.is_set():
        raise KeyboardInterrupt
    _requested.set()
    print(HINT, file=sys.stderr, flush=True)


@contextlib.contextmanager
def on_ctrl_c():
    """While inside: the first SIGINT requests a stop at the next batch boundary, the second raises
    KeyboardInterrupt. Outside the main thread (signals cannot be caught there) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reset()
    old = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def rank_handlers() -> None:
    """In a spawned rank process: Ctrl-C at the terminal reaches the whole process group; the parent
    decides and forwards a stop request as SIGUSR1."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, lambda signum, frame: request())
