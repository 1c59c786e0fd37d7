"""Real ranks for the A/B: a torch.distributed process group (gloo on CPU, NCCL on GPUs).

The A/B's sharding has ``LOGICAL_RANKS`` (8) ranks, as DEP8/TEP8 have. With ``N`` real processes
(``N`` divides 8), process ``p`` hosts some of the logical ranks by the rules of
:mod:`accval.site.sharding` (DEP: every N-th rank, and so the requests of those ranks' batch rows;
TEP: a contiguous block of ranks, and so their ``o_a_proj`` groups and attention heads). Every
process runs the same lm-eval call in lockstep; rank 0's prompts are authoritative (broadcast to
all), rank 0 gathers the per-sample results and alone writes the run directory and the report.

Launch with ``accval gsm8k --ranks N`` (spawns N processes) or under ``torchrun --nproc-per-node N``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback

import torch
import torch.distributed as dist

from accval import stop

LOGICAL_RANKS = 8
TIMEOUT = datetime.timedelta(minutes=30)


@dataclasses.dataclass(frozen=True)
class Group:
    rank: int
    world: int
    backend: str

    @property
    def root(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj):
        box = [obj if self.root else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj) -> list:
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def all_gather_tensor(self, t: torch.Tensor) -> list[torch.Tensor]:
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t.contiguous())
        return out

    def barrier(self) -> None:
        dist.barrier()


def check_world(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1 or LOGICAL_RANKS % n:
        raise ValueError(f"--ranks: expected a divisor of {LOGICAL_RANKS} (1, 2, 4 or 8 processes hosting the "
                         f"{LOGICAL_RANKS} DEP/TEP ranks), got {n!r}")


def current() -> Group | None:
    """The process group this process belongs to, or None when the A/B runs in one process."""
    if not dist.is_available() or not dist.is_initialized():
        return None
    return Group(dist.get_rank(), dist.get_world_size(), dist.get_backend())


def init_from_env(device: str) -> Group | None:
    """Join the group torchrun (or :func:`spawn`) described in the environment; None without one."""
    if dist.is_initialized():
        return current()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    check_world(world)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=TIMEOUT)
    return current()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` (the process that spawned it) dies, however it dies: on
    Linux the kernel sends SIGKILL (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread polls
    ``os.getppid()`` every second. A rank left running would hold its cores (and its GPU) for nothing."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        def watch():
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="accval-parent-watch").start()
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def thread_only_tqdm_lock() -> None:
    """Give tqdm a thread lock instead of its default, which adds a multiprocessing RLock: in a spawned
    process that is a new named semaphore (shared with no other process, so it guards nothing there)
    registered with the parent's resource tracker. A rank ended by SIGKILL (a second Ctrl-C or SIGTERM,
    :func:`spawn`) cannot unregister it, and the tracker then warns "There appear to be N leaked
    semaphore objects" as the parent exits. Every progress bar of a rank (accval's, lm-eval's) takes
    tqdm's global lock, so this is set before any is made."""
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def _remade(e: BaseException) -> type | None:
    """The class of ``e`` when it is a ValueError or TypeError the parent can raise again from its message
    (bad input, or accval's ContractViolation, found where the work runs): the CLI's exit code and
    one-line message then do not depend on which process found it. None for anything else (a defect)."""
    if not isinstance(e, (ValueError, TypeError)):
        return None
    try:
        return type(e) if str(type(e)(str(e))) == str(e) else None
    except Exception:  # a class that is not made from one message
        return None


def _child(index: int, world: int, port: int, parent_pid: int, fn, args, errors):
    die_with_parent(parent_pid)
    stop.rank_handlers()
    thread_only_tqdm_lock()
    os.environ.update({"RANK": str(index), "LOCAL_RANK": str(index), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    try:
        fn(*args)
    except BaseException as e:
        tb = traceback.format_exc()
        try:
            errors.put((index, tb, _remade(e), str(e)))
        except Exception:  # a class that does not pickle
            errors.put((index, tb, None, str(e)))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def sigint_ignored_in_children():
    """While inside, processes started here begin with SIGINT ignored (a disposition exec keeps, and Python
    then installs no KeyboardInterrupt handler): a Ctrl-C at the terminal reaches the whole process group,
    and a rank still importing its modules, before :func:`accval.stop.rank_handlers`, printed a traceback.
    The parent decides for its ranks (:func:`spawn`); a Ctrl-C in the moment the processes start is lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _traceback_file(index: int, tb: str) -> str:
    fd, path = tempfile.mkstemp(prefix=f"accval-rank{index}-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(tb)
    return path


@contextlib.contextmanager
def _quiet_termination():
    """While inside: no "Terminating process N via signal SIGTERM" warning from torch's process context
    as it ends the other ranks after one failed or was killed; :func:`spawn`'s own one-line error (or
    the stop message) says what happened."""
    log = logging.getLogger("torch.multiprocessing.spawn")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def spawn(world: int, fn, *args) -> None:
    """Run ``fn(*args)`` in ``world`` fresh processes forming one group. A rank that fails or dies makes
    this raise a one-line RuntimeError naming it (the others are stopped; the failing rank's traceback
    goes to a file the message names). The processes die with this one (:func:`die_with_parent`).
    Ctrl-C or SIGTERM here asks them to stop at the next batch boundary (SIGUSR1, :mod:`accval.stop`)
    and then raises :class:`stop.Interrupted`; a second one ends them at once (SIGKILL)."""
    import torch.multiprocessing as mp

    check_world(world)
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    with sigint_ignored_in_children():
        procs = mp.start_processes(_child, args=(world, _free_port(), os.getpid(), fn, args, errors), nprocs=world,
                                   join=False, start_method="spawn")
    stop.reset()

    def tell_ranks(sig: int) -> None:
        for p in procs.processes:
            if p.is_alive():
                os.kill(p.pid, sig)

    def first(signum: int) -> None:
        stop.ask_for_boundary(signum)
        tell_ranks(signal.SIGUSR1)

    with stop.handling(stop.escalating(first, lambda signum: tell_ranks(signal.SIGKILL))), _quiet_termination():
        try:
            while not procs.join():
                pass
        except mp.ProcessExitedException as e:
            if stop.requested():
                raise stop.Interrupted(f"stopped on request (rank {e.error_index} ended by signal)") from None
            raise RuntimeError(f"rank {e.error_index} of {world} died (exit code {e.exit_code}); the other ranks were "
                               "stopped. Finished samples are in the run directory: --resume continues the run") from None
        except mp.ProcessRaisedException as e:
            if stop.requested():  # a rank still starting up when the signal reached it (before its handlers)
                raise stop.Interrupted(f"stopped on request (rank {e.error_index} stopped while starting)") from None
            first = None
            while not errors.empty():
                error = errors.get()
                first = first or error
            index, tb, remade, message = first if first else (e.error_index, str(e), None, "")
            tb_file = _traceback_file(index, tb)
            if remade is not None:  # bad input found where the work runs: the same error, as if raised here
                raise remade(f"{message} (rank {index} of {world}; traceback: {tb_file})") from None
            last = tb.strip().splitlines()[-1]
            raise RuntimeError(f"rank {index} of {world} failed: {last} (traceback: {tb_file})") from None
    if stop.requested():
        raise stop.Interrupted("stopped on request")
