"""The gsm8k A/B's run directory: what it holds, who may use it, and whether a run may continue in it.

A run directory holds everything a run has done, written as it happens, so a crash loses nothing
and ``resume=True`` continues: ``run.json`` (the settings; a resume must match them),
``generations-A.jsonl`` / ``generations-B.jsonl`` and ``agreement.jsonl`` (teacher-forced agreement
per question), a line per question as each batch finishes, and ``commits.jsonl`` (a line per finished
batch with its site counts, written last: a question is done once its batch is there), then ``samples-A.jsonl`` /
``samples-B.jsonl`` (lm-eval's scored samples), ``report.json``, ``report.md`` and ``report.png``.

:class:`RunDir` holds a run directory's lock and its ``run.json``, with every invocation of it
(:class:`Session`) and the time each worked; :func:`check_out` and :func:`check_resumable` say whether
a directory can be used as asked, :func:`out_dir` where ``--out`` puts a run, and
:func:`saved_questions` how many questions a run directory holds finished.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

from accval import runs

from . import task as task_mod
from .config import Settings

SCHEMA = "accval.gsm8k.ab/1"
#: How the engine batches generation, recorded in run.json: a run resumes only under the same rules (its
#: finished questions would otherwise mix two batchings). Change it with any change of these rules.
ENGINE_RULES = "prefill: a rank's prompts together; decode: each DEP rank's rows apart, ended rows out of M"
_MISSING = object()  # a setting the run record lacks (recorded by an older accval)
COMMITS = "commits.jsonl"  # accval.gsm8k.lm.CommitLog: the finished batches and their site counts

LOCK = ".lock"
#: the files a run writes as it works; any of them means finished (or cut) work is there
WORK_FILES = ("commits.jsonl", "agreement.jsonl", "report.json")


def _work_files(path: Path) -> list[str]:
    if not path.is_dir():
        return []
    return [p.name for p in path.iterdir() if p.name in WORK_FILES or p.name.startswith(("generations-", "samples-"))]


def recorded_settings(out: Path) -> dict:
    """The settings the run in ``out`` began with (its run.json), for ``--resume`` to continue it with what
    its command line leaves out; {} where there is no run (:func:`check_out` says so)."""
    run_json = Path(out) / "run.json"
    if not run_json.is_file():
        return {}
    try:
        settings = RunDir._meta(run_json)["settings"]
    except ValueError:  # read without the run's lock: RunDir says what is wrong, holding it
        return {}
    fields = {f.name for f in dataclasses.fields(Settings)}
    return {k: v for k, v in settings.items() if k in fields}


def check_resumable(meta: dict, fingerprint: dict, path: Path) -> None:
    """A run record ``meta`` (run.json) that settings ``fingerprint`` (``dataclasses.asdict``) may continue:
    the same engine rules, then the same settings (each one that differs named as its option)."""
    old = meta["settings"]
    if meta.get("engine") != ENGINE_RULES:
        raise ValueError(f"--resume: the run in {path} was started by an accval whose engine batched "
                         f"generation otherwise ({meta.get('engine') or 'rules not recorded'}; now: "
                         f"{ENGINE_RULES}); finished questions would mix both: choose another --out")
    if old != fingerprint:
        def option(k: str) -> str:
            return "--" + k.replace("_", "-")

        diff = [f"{option(k)} {old[k]!r} in the run, {v!r} now" if k in old
                else f"{option(k)} not recorded in the run, {v!r} now"
                for k, v in fingerprint.items() if old.get(k, _MISSING) != v]
        diff += [f"{option(k)} {old[k]!r} in the run, no such setting now" for k in old if k not in fingerprint]
        hint = ""
        if old.get("ranks") != fingerprint.get("ranks") and isinstance(old.get("ranks"), int):
            hint = f" (--ranks {old['ranks']} continues as the run began, as does leaving --ranks out)"
        raise ValueError(f"--resume: settings differ from the run in {path}: {'; '.join(diff)}{hint}")


def check_resume_early(out: Path, settings: Settings) -> None:
    """:func:`check_resumable` before anything is said of the run (the CLI's plan line), where it can be
    decided now: while no process holds the run's lock, holding it for the read. A held lock or an unreadable
    run.json is left to :class:`RunDir`, which says so (and compares again, holding the lock for the run)."""
    import fcntl

    out = Path(out)
    run_json = out / "run.json"
    if not run_json.is_file():
        return
    try:
        with (out / LOCK).open("a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released as the file closes
            try:
                meta = RunDir._meta(run_json)
            except ValueError:
                return
            check_resumable(meta, dataclasses.asdict(settings), out)
    except (BlockingIOError, PermissionError):
        return


def check_out(out: Path, resume: bool) -> None:
    """The run directory ``out`` can be used as asked, before anything is written (what
    :class:`RunDir` checks first; the CLI can call it before its plan line): a directory or nothing
    there; without ``resume``, no finished work to overwrite; with it, a run to continue. A path with
    no run (a typo, a directory a job never started) is refused with ``resume``: it promises that
    finished work is kept, so a fresh run is never started silently in its place."""
    out = Path(out)
    run_json = out / "run.json"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: expected a run directory, got a file")
    work = _work_files(out)
    if run_json.exists() and not resume and work:
        raise ValueError(f"--out {out} already holds a run; pass --resume to continue it or choose another --out")
    if work and not run_json.exists():
        raise ValueError(f"--out {out} holds results of an earlier run ({', '.join(sorted(work))}) but no "
                         "run.json, so the settings that made them are unknown; choose another --out or remove them")
    if resume and not run_json.exists():
        if out.exists() and any(p.name != LOCK for p in out.iterdir()):
            raise ValueError(f"--resume: {out} has no run.json; it is not an accval gsm8k run directory")
        state = "is empty" if out.exists() else "does not exist"
        raise ValueError(f"--resume: {out} {state}, so there is no run to continue; check the path, or leave out "
                         "--resume to start a new run there")


class RunDir:
    """A run directory. One process at a time uses it: the object holds an exclusive ``flock`` on
    ``.lock`` (released when the process ends, however it ends); ``lock=False`` is for the rank
    processes whose parent holds it."""

    def __init__(self, path: Path, settings: Settings, resume: bool, lock: bool = True):
        self.path = Path(path)
        self._lock = None
        fingerprint = dataclasses.asdict(settings)
        data = task_mod.data_sha256(Path(settings.data_dir)) if settings.data_dir else None
        run_json = self.path / "run.json"
        check_out(self.path, resume)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(f"run directory {self.path}: cannot create it ({e.strerror or e}); choose another with --out"
                          ) from None
        if lock:
            self._take_lock()  # before reading run.json: whoever holds the lock may be writing it
        if run_json.exists() and not resume:  # a run stopped before it finished a question: nothing to keep
            print(f"accval: --out {self.path} holds a run that finished no question; starting it afresh",
                  file=sys.stderr)
            run_json.unlink()
        if run_json.exists():
            meta = self._meta(run_json)
            try:
                check_resumable(meta, fingerprint, self.path)
            except ValueError:
                self.release()
                raise
            if meta.get("data_sha256", data) != data:
                self.release()
                raise ValueError(f"--resume: the data files in {settings.data_dir} changed since the run in {self.path} "
                                 f"began (sha256 {meta['data_sha256']} then, {data} now); finished questions would mix "
                                 "both: choose another --out")
        if not run_json.exists():
            try:
                run_json.write_text(json.dumps({"schema": SCHEMA, "settings": fingerprint, "engine": ENGINE_RULES,
                                                "data_sha256": data,
                                                "started": _dt.datetime.now(_dt.timezone.utc).isoformat()}, indent=2))
            except OSError as e:
                self.release()
                raise OSError(f"run directory {self.path}: cannot write run.json ({e.strerror or e}); choose another "
                              "with --out") from None


    @staticmethod
    def _meta(run_json: Path) -> dict:
        try:
            meta = json.loads(run_json.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"--resume: {run_json} is not readable JSON ({e}); the run directory is damaged") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("settings"), dict):
            raise ValueError(f"--resume: {run_json} is not an accval gsm8k run record (expected an object with "
                             f"'settings', got {type(meta).__name__})")
        return meta

    def _take_lock(self) -> None:
        import fcntl

        f = (self.path / LOCK).open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise RuntimeError(f"--out {self.path}: another accval process (pid {holder}) is using this run directory; "
                               "wait for it to finish or stop it, then --resume") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lock = f

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None

    def file(self, name: str) -> Path:
        return self.path / name

    def _write_meta(self, meta: dict) -> None:
        """Replace run.json in one step (a kill mid-write leaves the old one, never half a file)."""
        run_json = self.path / "run.json"
        tmp = run_json.with_name(f".run.json.{os.getpid()}")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, run_json)

    def record_session(self, device: str, session: "Session") -> list[dict]:
        """Append this invocation (its id, start and device) to run.json; return every session so far.
        A run resumed on another card says so in its report instead of naming only the last one. Its
        ``elapsed_s`` is None (not known) until :meth:`end_session` records it."""
        meta = self._meta(self.path / "run.json")
        meta.setdefault("sessions", []).append({"id": session.id, "started": session.started, "device": device,
                                                "elapsed_s": None})
        self._write_meta(meta)
        return meta["sessions"]

    def end_session(self, session: "Session") -> list[dict]:
        """Record how long ``session`` has run so far in its run.json entry (called as each batch is
        committed, before the report and when the invocation ends, however it ends); return every
        session. A session killed outright (SIGKILL) keeps the time of its last commit."""
        meta = self._meta(self.path / "run.json")
        for entry in meta.get("sessions", []):
            if isinstance(entry, dict) and entry.get("id") == session.id:
                entry["elapsed_s"] = session.elapsed()
                self._write_meta(meta)
                break
        return meta.get("sessions", [])

    def end_session_at_exit(self, session: "Session") -> None:
        """:meth:`end_session` as an invocation ends: a run.json that cannot be written then is said on
        stderr, and does not replace the error (or the stop) that is ending the invocation."""
        try:
            self.end_session(session)
        except (OSError, ValueError) as e:
            print(f"accval: this session's time is not recorded in {self.path / 'run.json'} ({e})", file=sys.stderr)


@dataclasses.dataclass(frozen=True)
class Session:
    """One invocation of a run directory: its id in run.json's ``sessions`` and when it started. With
    ``--ranks N`` the parent's session is the ranks' too (its time includes starting them)."""

    id: str
    t0: float  # time.time() at the start
    started: str  # the same instant, ISO 8601 UTC

    @classmethod
    def start(cls) -> "Session":
        import uuid

        t0 = time.time()
        return cls(uuid.uuid4().hex[:12], t0, _dt.datetime.fromtimestamp(t0, _dt.timezone.utc).isoformat())

    def elapsed(self) -> float:
        return round(time.time() - self.t0, 1)


def elapsed_total(sessions: list[dict]) -> tuple[float, list[float | None]]:
    """The time every session of a run worked, summed, and each session's (None: not recorded, as for
    sessions of runs begun before accval recorded them, or one killed before its first commit)."""
    each = []
    for entry in sessions:
        x = entry.get("elapsed_s") if isinstance(entry, dict) else None
        each.append(float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None)
    return round(sum(x for x in each if x is not None), 1), each


#: Where runs go without --out: ``runs/gsm8k/`` under the current directory (git-ignored in accval's
#: clone), or ``$ACCVAL_RUNS_DIR/gsm8k``. Committed reports are copied to reports/ by hand.
def default_out(mode: str) -> Path:
    """A new run directory: ``<runs dir>/gsm8k/<timestamp>-<mode>``."""
    return runs.new_path("gsm8k", f"-{mode}")


def out_dir(out: str | Path | None, mode: str) -> Path:
    """``--out`` as a path: a new default run directory when it is not given (None); an empty or blank
    string is a usage error (as a path it is the current directory, and it must not quietly become the
    default either)."""
    if out is None:
        return default_out(mode)
    if isinstance(out, str) and not out.strip():
        raise ValueError(f"--out: expected a run directory, got an empty string {out!r}")
    if not isinstance(out, (str, Path)):
        raise TypeError(f"--out: expected a path, got {type(out).__name__}")
    return Path(out)


def saved_questions(out: Path) -> int:
    """How many questions a run directory holds finished: both arms and their agreement (the commit
    records), or for an endpoint run the questions both servers' answers are cached for (lm-eval's
    request cache per arm, ``cache-A_rank0.db`` and ``cache-B_rank0.db``; arm B's pass follows arm A's)."""
    from .lm import CommitLog

    path = Path(out) / COMMITS
    if path.exists():
        return len(CommitLog(path).doc_ids)
    caches = [Path(out) / f"cache-{arm}_rank0.db" for arm in ("A", "B")]
    if not all(c.exists() for c in caches):
        return 0
    from sqlitedict import SqliteDict  # lm-eval's request cache

    counts = []
    for c in caches:
        with SqliteDict(str(c), flag="r") as db:
            counts.append(len(db))
    return min(counts)
