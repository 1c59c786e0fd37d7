"""The gsm8k A/B: both arms on the same questions through lm-eval, paired statistics, verdict, report.

A run directory holds everything a run has done, written as it happens, so a crash loses nothing
and ``resume=True`` continues: ``run.json`` (the settings; a resume must match them),
``generations-A.jsonl`` / ``generations-B.jsonl`` and ``agreement.jsonl`` (teacher-forced agreement
per question), a line per question as each batch finishes, and ``commits.jsonl`` (a line per finished
batch with its site counts, written last: a question is done once its batch is there), then ``samples-A.jsonl`` /
``samples-B.jsonl`` (lm-eval's scored samples), ``report.json``, ``report.md`` and ``report.png``.

The arms run in one paired pass (:func:`_evaluate_arms`): lm-eval's pass for arm A hands over the
prompts, and each batch runs arm A, then arm B, on them. Each prompt is prefilled once per arm; the
gold answer is teacher-forced from a copy of that prefill's cache, so the agreement costs no second
prefill. lm-eval's pass for arm B then scores arm B's stored generations.

:func:`run` reads in four steps: :func:`validate` the settings, :func:`_setup` (process group, run
directory, task config), :func:`_evaluate` (the endpoints or the paired pass), :func:`build_report`
(the statistics and verdict over what was evaluated), then the report is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlsplit

import torch

from accval import report as report_mod
from accval import runs, stats, stop
from accval.model import builtin
from accval.site import MATMUL, MODES, Arm, SiteStats, sharding
from accval.site.arms import UnknownBackend
from accval.site.sharding import PREFILL_TOKENS

from . import ranks as ranks_mod
from . import task as task_mod

SCHEMA = "accval.gsm8k.ab/1"
#: How the engine batches generation, recorded in run.json: a run resumes only under the same rules (its
#: finished questions would otherwise mix two batchings). Change it with any change of these rules.
ENGINE_RULES = "prefill: a rank's prompts together; decode: each DEP rank's rows apart, ended rows out of M"
FILTERS = ("strict-match", "flexible-extract")
CLI_MODES = ("dep8", "tep8")
SENTINEL = "sentinel"
_MISSING = object()  # a setting the run record lacks (recorded by an older accval)
COMMITS = "commits.jsonl"  # accval.gsm8k.lm.CommitLog: the finished batches and their site counts


@dataclasses.dataclass(frozen=True)
class Settings:
    mode: str = "dep8"
    model: str = builtin.BUILTIN
    data_dir: str | None = None
    limit: int | None = None
    num_fewshot: int = 5
    batch_size: int = 32  # questions generated together
    max_gen_toks: int = 256
    device: str = "auto"
    seed: int = 0
    backend: str = "auto"
    inject: str | None = None
    producer: str | None = None  # arm B's producer / consumer: registered names or module:attr (None: the backend's)
    consumer: str | None = None
    endpoint_a: str | None = None  # OpenAI-compatible completions servers as the arms
    endpoint_b: str | None = None
    ranks: int | str | None = None  # real processes hosting the 8 DEP/TEP ranks (None: emulated in one process;
    # "auto": :func:`auto_ranks`)
    matmul: str = "auto"  # accval.site.MATMUL; auto: fp32 on a CPU, the model's own on a GPU
    prefill_tokens: int | None = None  # most prompt tokens a rank prefills in one forward (None: PREFILL_TOKENS)

    def resolved(self) -> "Settings":
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        backend = self.backend
        if backend == "auto":
            backend = "triton" if device.startswith("cuda") else "torch"
        matmul = self.matmul
        if matmul == "auto":
            matmul = "model" if device.startswith("cuda") else "fp32"
        prefill = PREFILL_TOKENS if self.prefill_tokens is None else self.prefill_tokens
        return dataclasses.replace(self, device=device, backend=backend, matmul=matmul, prefill_tokens=prefill)


def auto_ranks(mode: str, device: str) -> int | None:
    """``--ranks auto``: on a CPU under DEP, one process per core (the largest divisor of 8 not above
    the cores this process may use), else None (one process). DEP ranks exchange nothing while they
    generate, so their processes share the cores; on the 2-core EPYC 64 sentinel questions took 92 s
    in 2 processes against 129 s in one. TEP ranks exchange partial sums in every layer: 83 s in 2
    processes against 73 s in one (32 questions). On a GPU more processes would share one card."""
    if device.startswith("cuda") or MODES[mode][0] != "dep" or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None  # under torchrun the group torchrun made decides
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    n = max(d for d in (1, 2, 4, 8) if d <= cores)
    return n if n > 1 else None


DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(device: str) -> None:
    """``--device``: auto, cpu, cuda or cuda:N with N a device this machine has."""
    if not isinstance(device, str) or not DEVICE_RE.fullmatch(device):
        raise ValueError(f"--device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {device}: no CUDA device is available here")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                               f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")


def check_checkpoint_dir(model: str) -> None:
    """``--model DIR``: a directory whose config.json names a DeepSeek-V4 model, checked before any model
    code or rank process starts (loading it checks the rest)."""
    cfg_path = Path(model) / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"--model: expected 'sentinel', 'builtin' or a checkpoint directory with config.json, "
                         f"got {model!r}" + (" (no such directory)" if not Path(model).is_dir() else ""))
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--model: {cfg_path} is not readable JSON ({e})") from None
    model_type = cfg.get("model_type") if isinstance(cfg, dict) else None
    if model_type != "deepseek_v4":
        raise ValueError(f"--model: expected a DeepSeek-V4 checkpoint (model_type 'deepseek_v4'), got model_type "
                         f"{model_type!r} in {cfg_path}")


#: ``--seed``: the range ``torch.manual_seed`` takes without remapping (it maps a negative seed n to
#: 2**64 + n, so -1 would silently be the seed 2**64 - 1)
SEED_MAX = 2**64 - 1


def check_seed(seed) -> None:
    """``--seed``: a whole number from 0 to :data:`SEED_MAX`."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"--seed: expected a whole number, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"--seed: expected a whole number from 0 to 2**64 - 1 (torch's seed range), got {seed}")


def model_positions(model: str) -> int | None:
    """The positions (``max_position_embeddings``) of ``--model``, from its config alone, as the engine
    reads them once the model is loaded; None when the config cannot be read here (loading the model
    then says why)."""
    if model == builtin.BUILTIN:
        cfg = builtin.builtin_config()
    else:
        from transformers import AutoConfig

        path = model
        if model == SENTINEL:
            from accval.sentinel.model import CHECKPOINT_DIR

            path = str(CHECKPOINT_DIR)
        try:
            cfg = AutoConfig.from_pretrained(path)
        except Exception:  # noqa: BLE001  (any failure here is reported, with its file, when the model loads)
            return None
    return getattr(cfg, "max_position_embeddings", None)


def check_max_gen_toks(n: int, model: str | None) -> None:
    """``--max-gen-toks``: at least 1, and room for at least a one-token prompt in the positions of
    ``model`` (prompt and answer share them; None: the model is a server's, which bounds it itself).
    The prompts' real lengths narrow this once lm-eval has built them
    (:meth:`accval.gsm8k.lm.ArmLM.generate_until`)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"--max-gen-toks: expected a whole number, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"--max-gen-toks: expected at least 1, got {n}")
    positions = model_positions(model) if model is not None else None
    if positions and n > positions - 1:
        raise ValueError(f"--max-gen-toks: expected 1 to {positions - 1} (the model {model!r} has {positions} "
                         f"positions, shared by the prompt and its answer), got {n}")


def _check_not_blank(s: Settings) -> None:
    """An option given as an empty string is a usage error, not the option left out (``--inject ''``
    would otherwise run no defect, ``--data-dir ''`` the current directory)."""
    for flag, value in (("--model", s.model), ("--data-dir", s.data_dir), ("--device", s.device),
                        ("--backend", s.backend), ("--inject", s.inject), ("--producer", s.producer),
                        ("--consumer", s.consumer), ("--endpoint-a", s.endpoint_a), ("--endpoint-b", s.endpoint_b)):
        if isinstance(value, str) and not value.strip():
            raise ValueError(f"{flag}: expected a value, got an empty string {value!r}")


def validate(s: Settings) -> Settings:
    if s.mode not in MODES:
        raise ValueError(f"--mode: expected one of {CLI_MODES}, got {s.mode!r}")
    _check_not_blank(s)
    check_device(s.device)
    check_seed(s.seed)
    if s.endpoint_a is None and s.model not in (builtin.BUILTIN, SENTINEL):
        check_checkpoint_dir(s.model)
    if s.limit is not None and s.limit < 2:
        raise ValueError(f"--limit: expected at least 2 questions (paired statistics need 2), got {s.limit}")
    if s.num_fewshot < 0:
        raise ValueError(f"--num-fewshot: expected >= 0, got {s.num_fewshot}")
    if s.prefill_tokens is not None:
        sharding.check_prefill_budget(s.prefill_tokens, "--prefill-tokens")
    if s.batch_size < 1 or s.max_gen_toks < 1:
        raise ValueError(f"--batch-size and --max-gen-toks: expected >= 1, got {s.batch_size} and {s.max_gen_toks}")
    check_max_gen_toks(s.max_gen_toks, s.model if s.endpoint_a is None else None)
    if s.data_dir is not None:
        task_mod.data_files(Path(s.data_dir))
    if s.model == SENTINEL:
        s = _sentinel_data(s)
    if s.ranks == "auto":
        device = s.resolved().device if s.endpoint_a is None else "endpoints"
        s = dataclasses.replace(s, ranks=None if s.endpoint_a is not None else auto_ranks(s.mode, device))
    if s.ranks is not None:
        ranks_mod.check_world(s.ranks)
    if (s.endpoint_a is None) != (s.endpoint_b is None):
        raise ValueError("--endpoint-a and --endpoint-b: expected both or neither")
    if s.endpoint_a is not None:
        for flag, url in (("--endpoint-a", s.endpoint_a), ("--endpoint-b", s.endpoint_b)):
            if not url.startswith(("http://", "https://")) or not urlsplit(url).hostname or any(c.isspace() for c in url):
                raise ValueError(f"{flag}: expected an http(s) URL with a host, got {url!r}")
            try:
                urlsplit(url).port  # noqa: B018 (raises on a port outside 0..65535 or not a number)
            except ValueError:
                raise ValueError(f"{flag}: expected a port from 0 to 65535 in the URL, got {url!r}") from None
        if s.ranks is not None:
            raise ValueError("--ranks with --endpoint-a/-b: the servers run their own ranks")
        if (s.inject or s.producer or s.consumer or s.model != builtin.BUILTIN or s.backend != "auto"
                or s.matmul != "auto"):
            raise ValueError("with --endpoint-a/-b the servers choose the model, backend and any injected defect; "
                             "pass those to the servers (e.g. accval serve --inject ID)")
        if s.prefill_tokens is not None:
            raise ValueError("--prefill-tokens with --endpoint-a/-b: the servers schedule their own prefill")
        served = served_models(s)
        if None not in served.values() and len(set(served.values())) > 1:
            raise ValueError(f"--endpoint-a serves model {served['A']!r} and --endpoint-b {served['B']!r} (GET /v1/models): "
                             "an A/B compares two paths of one model")
        if set(served.values()) == {SENTINEL}:  # accval serve's default: the sentinel's problems, as in-process
            s = _sentinel_data(s, who="the servers' model, sentinel,")
        return _data_checked(s)
    s = s.resolved()
    if s.matmul not in MATMUL:
        raise ValueError(f"--matmul: expected auto or one of {MATMUL}, got {s.matmul!r}")
    try:
        arms = arms_for(s)  # the arm validates the backend
    except UnknownBackend as e:
        raise ValueError(f"--backend: expected auto or one of {e.choices}, got {e.got!r}") from None
    if s.backend != "torch" and not s.device.startswith("cuda"):
        raise RuntimeError(f"--backend {s.backend}: the Triton kernels need a GPU at model speed; this run is on "
                           f"{s.device} (use --backend torch, the kernels' arithmetic in torch, or run on a GPU)")
    if s.inject:
        from accval import mutants

        role, _ = mutants.for_chain(s.inject, s.backend)
        if getattr(s, role) is not None:
            raise ValueError(f"--inject {s.inject} replaces the {role} in arm B, and --{role} {getattr(s, role)} too: "
                             f"pass one of them")
    prod, cons = arms["B"].implementations()  # unknown names, recipes that do not pair: usage errors
    for role, impl in (("producer", prod), ("consumer", cons)):
        if impl is not None and s.device.split(":")[0] not in impl.devices:
            raise ValueError(f"--{role} {impl.name} runs on {', '.join(impl.devices)}, not on {s.device}")
    return _data_checked(s)


def _sentinel_data(s: Settings, who: str = "--model sentinel") -> Settings:
    """The sentinel answers its own problems (:mod:`accval.sentinel`): no ``--data-dir`` means those, and
    another data set is refused. On gsm8k itself it scores 0 in both arms and its next-token distributions
    are noise the verdict's thresholds were not made for: a clean chain read as a regression (KL 0.007)."""
    from accval.sentinel import data as sentinel_data

    own = sentinel_data.write_splits()
    if s.data_dir is None:
        return dataclasses.replace(s, data_dir=str(own))
    digests = [{k: v for k, v in task_mod.data_sha256(Path(d)).items() if k != "source"} for d in (s.data_dir, own)]
    if digests[0] != digests[1]:
        raise ValueError(f"--data-dir {s.data_dir}: {who} answers only its own problems ({own}); on other "
                         "data its answers are noise and the verdict's thresholds do not hold (a clean chain reads as a "
                         "regression): drop --data-dir, or pass it with --model builtin or a checkpoint")
    return s


def _data_checked(s: Settings) -> Settings:
    """The data files' records checked last (reading them is the slowest check)."""
    if s.data_dir is not None:
        task_mod.check_data(Path(s.data_dir), s.limit, s.num_fewshot)
    return s


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("accval", "lm_eval", "torch", "triton", "transformers", "datasets"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    out["python"] = platform.python_version()
    return out


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} torch threads)"


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


def arms_for(settings: Settings) -> dict[str, Arm]:
    return {"A": Arm("A", "bf16-fallback"),
            "B": Arm("B", "fp8-chain", settings.backend, settings.inject, settings.producer, settings.consumer)}


def _plugged(arm: Arm) -> dict | None:
    """What the report records of an arm's plugged implementations: names, recipes, declarations."""
    if arm.path != "fp8-chain" or not (arm.producer or arm.consumer):
        return None
    prod, cons = arm.implementations()
    return {"producer": None if prod is None else {"name": prod.name, "recipe": prod.recipe.name, "exact": prod.exact,
                                                   "declared": prod.describe(), "expected_impl": prod.expected_impl},
            "consumer": None if cons is None else {"name": cons.name, "recipes": list(cons.recipes),
                                                   "expected_impl": cons.expected_impl}}


def _simple_evaluate(**kwargs) -> dict:
    """``lm_eval.simple_evaluate(**kwargs)`` without the "fatal: not a git repository" line it prints
    outside a git checkout.

    After evaluating, lm-eval records the git commit of the current directory (``results["git_hash"]``,
    which accval does not read) by running ``git describe --always`` with stderr inherited, so outside
    a checkout git's error reaches the terminal; lm-eval offers neither an argument nor an environment
    variable to skip it, and git none to silence it (EleutherAI/lm-evaluation-harness#1691). For the
    call, this swaps the one name ``lm_eval.evaluator.get_git_commit_hash`` for lm-eval's own fallback,
    ``lm_eval.loggers.utils.get_commit_from_path(cwd)``, which reads ``.git`` without running git (the
    commit when run from a checkout's top directory, else None) and prints nothing."""
    import lm_eval
    import lm_eval.evaluator
    from lm_eval.loggers.utils import get_commit_from_path

    with contextlib.ExitStack() as patched:
        if hasattr(lm_eval.evaluator, "get_git_commit_hash"):  # an lm-eval without it has nothing to silence
            from unittest import mock

            patched.enter_context(mock.patch.object(lm_eval.evaluator, "get_git_commit_hash",
                                                    lambda: get_commit_from_path(os.getcwd())))
        return lm_eval.simple_evaluate(**kwargs)


def served_model(url: str, timeout: float = 10.0) -> str | None:
    """The model an OpenAI-compatible server says it serves (``GET /v1/models``, the first id), or None when
    it does not say (unreachable, or no such route: the run's own requests then meet lm-eval's retries)."""
    import urllib.error
    import urllib.request

    url = url.rstrip("/")
    models = url[: -len("/completions")] + "/models" if url.endswith("/completions") else url + "/v1/models"
    try:
        with urllib.request.urlopen(models, timeout=timeout) as r:
            return str(json.loads(r.read())["data"][0]["id"])
    except (OSError, ValueError, KeyError, IndexError, TypeError, urllib.error.URLError):
        return None


def served_models(s: Settings) -> dict[str, str | None]:
    """Each endpoint arm's model (:func:`served_model`)."""
    return {"A": served_model(s.endpoint_a), "B": served_model(s.endpoint_b)}


def _completions_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/completions") else url + "/v1/completions"


def _evaluate_endpoint(name: str, url: str, settings: Settings, task_cfg: dict, run: RunDir):
    """One arm through lm-eval's own ``local-completions`` client (retries with backoff; its request
    cache in the run directory makes a half-finished run resume)."""
    import lm_eval.models  # noqa: F401  (registers lm-eval's own models, local-completions among them)

    args = {"base_url": _completions_url(url), "model": "accval", "tokenizer_backend": None,
            "tokenized_requests": False, "num_concurrent": 1, "max_retries": 5, "timeout": 600,
            "max_gen_toks": settings.max_gen_toks, "batch_size": 1}
    res = _simple_evaluate(model="local-completions", model_args=args, tasks=[task_cfg],
                           num_fewshot=settings.num_fewshot, limit=settings.limit, log_samples=True,
                           bootstrap_iters=0, task_manager=task_mod.task_manager(), use_cache=str(run.file(f"cache-{name}")))
    return res, _write_samples(res, run, name)


def _write_samples(res: dict, run: RunDir, arm_name: str) -> dict[int, dict[str, dict]]:
    """Keep lm-eval's scored samples of one arm in the run directory; return them by document."""
    samples = res["samples"][task_mod.TASK]
    with run.file(f"samples-{arm_name}.jsonl").open("w") as f:
        for s in samples:
            f.write(json.dumps(s, default=str) + "\n")
    return _samples_by_doc(samples)


def _samples_by_doc(samples: list[dict]) -> dict[int, dict[str, dict]]:
    """lm-eval logs one sample per (document, filter); regroup as doc -> filter -> sample."""
    out: dict[int, dict[str, dict]] = {}
    for s in samples:
        out.setdefault(int(s["doc_id"]), {})[s["filter"]] = s
    return out


def _target_renderer(task_cfg: dict):
    """The gold answer of a document as lm-eval's task renders it (``doc_to_target``)."""
    from lm_eval.utils import apply_template

    template = task_cfg.get("doc_to_target")
    if not isinstance(template, str):
        raise RuntimeError(f"task {task_mod.TASK}: doc_to_target expected a template string, got {template!r}")
    return lambda doc: str(apply_template(template, doc))


def _evaluate_arms(engine, arms: dict[str, Arm], settings: Settings, task_cfg: dict, run: RunDir, progress: bool,
                   on_commit=None):
    """Both arms through lm-eval: arm A's pass runs arm B and the agreement on each batch too (each
    prompt is prefilled once per arm); arm B's pass then scores the generations it finds in its store.
    ``on_commit()`` is called after each batch's commit record is written."""
    from .lm import ArmLM, Partner, RunStore, take_site_counts

    store = RunStore.open(run.path, tuple(arms))
    stores, agreement, commits = store.generations, store.agreement, store.commits
    take_site_counts(engine, list(arms))  # counting starts here; each batch's counts go with its commit record
    partner = Partner(arms["B"], stores["B"], agreement, _target_renderer(task_cfg), commits, on_commit)
    results, docs, resumed, site_stats = {}, {}, {}, {}
    group = engine.group
    for name, arm in arms.items():
        lm = ArmLM(engine, arm, stores[name], settings.batch_size, settings.max_gen_toks, progress,
                   partner=partner if name == "A" else None)
        res = _simple_evaluate(model=lm, tasks=[task_cfg], num_fewshot=settings.num_fewshot,
                               limit=settings.limit, log_samples=True, bootstrap_iters=0,
                               task_manager=task_mod.task_manager())
        if name == "B" and lm.generated:
            raise RuntimeError(f"arm B's lm-eval pass asked for {lm.generated} prompts arm A's pass did not run "
                               "(lm-eval built other prompts the second time)")
        results[name] = res
        if name == "A":  # questions the paired pass found done (both arms and their agreement)
            resumed = {"A": lm.resumed, "B": lm.resumed}
        site_stats[name] = commits.site.get(name, SiteStats())
        if group is not None:  # lm-eval scores on LOCAL_RANK 0 only; every process needs the scored samples
            docs[name] = group.broadcast(_write_samples(res, run, name) if group.root else None)
        else:
            docs[name] = _write_samples(res, run, name)
    return results, docs, resumed, site_stats, agreement


def _agreement_rows(engine, agreement, docs: dict[int, dict[str, dict]]) -> list[tuple[int, int, float]]:
    """Each question's agreement row, checked against lm-eval's own record of its gold answer."""
    rows = []
    for doc_id in sorted(docs):
        row = agreement.done.get(doc_id)
        if row is None:
            raise RuntimeError(f"question {doc_id}: no agreement row in agreement.jsonl (the run directory is "
                               "inconsistent; start it afresh)")
        sample = next(iter(docs[doc_id].values()))
        want = len(engine.encode(" " + sample["target"], bos=False))
        if row[0] != want:
            raise RuntimeError(f"question {doc_id}: agreement over {row[0]} tokens, lm-eval's target has {want}")
        rows.append(row)
    return rows


def _questions_from(data_dir: Path | None) -> str:
    from accval.sentinel import data as sentinel_data
    from accval.sentinel import problems

    if data_dir is not None and Path(data_dir).resolve() == sentinel_data.default_dir().resolve():
        return (f"accval's sentinel problems (synthetic, in gsm8k's format; generator v{problems.GENERATOR_VERSION}), "
                "not gsm8k's questions")
    return "gsm8k"


class _NumFewshotOnce(logging.Filter):
    """lm-eval warns "Overwriting default num_fewshot of gsm8k from 5 to 5" at every ``simple_evaluate``
    (twice per run, in every process); say a real change once, in one process (``speak``: the one
    that reports), and nothing when the value is the same."""

    MESSAGE = "Overwriting default num_fewshot of %s from %s to %s"

    def __init__(self, speak: bool = True):
        super().__init__()
        self.seen: set = set()
        self.speak = speak

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.MESSAGE or not isinstance(record.args, tuple) or len(record.args) != 3:
            return True
        _task, old, new = record.args
        if not self.speak or str(old) == str(new) or record.args in self.seen:
            return False
        self.seen.add(record.args)
        return True


def _quiet_num_fewshot_warning(speak: bool = True) -> None:
    """Install :class:`_NumFewshotOnce` on lm-eval's evaluator log (once); ``speak=False`` in the
    processes whose rank 0 says it."""
    log = logging.getLogger("lm_eval.evaluator")
    for f in log.filters:
        if isinstance(f, _NumFewshotOnce):
            f.speak = speak
            return
    log.addFilter(_NumFewshotOnce(speak))


def threads_per_rank(ranks: int) -> int:
    """The torch threads each of ``ranks`` CPU processes takes: the cores shared out."""
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise ValueError(f"ranks: expected a whole number of processes >= 1, got {ranks!r}")
    return max(1, (os.cpu_count() or 1) // ranks)


def _rank_main(settings: Settings, out: str, progress: bool, session: Session, scratch: str) -> None:
    """One spawned process of ``run(settings)`` over real ranks: the parent's ``session``; a rank other
    than 0 works in a directory under ``scratch``, which the parent removes however the rank ends."""
    if not settings.device.startswith("cuda"):  # N processes share the cores
        torch.set_num_threads(threads_per_rank(settings.ranks))
    ranks_mod.init_from_env(settings.device)
    try:
        run(settings, Path(out), resume=True, progress=progress, _lock=False, _session=session, _scratch=Path(scratch))
    except stop.Interrupted:
        pass  # every finished batch is saved; the parent reports the stop


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


def _process_group(settings: Settings) -> ranks_mod.Group | None:
    """The process group this run belongs to: the one already made (a spawned rank), the one torchrun
    describes in the environment, or None (one process, or a parent about to spawn its ranks)."""
    group = ranks_mod.current()
    if group is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        group = ranks_mod.init_from_env(settings.device)  # launched by torchrun
    return group


def _run_in_processes(settings: Settings, out: Path, resume: bool, progress: bool, held: contextlib.ExitStack,
                      session: Session) -> dict:
    """``--ranks N``: N fresh processes run the A/B together (:func:`_rank_main`); this one holds the run
    directory's lock meanwhile, records the session's time at the end (rank 0 records the session and
    its time at each commit), removes the other ranks' scratch directories however they end, and returns
    the report rank 0 wrote."""
    # settings, resume, lock and run store errors here, before any process starts; the lock is held while they run
    run_dir = RunDir(out, settings, resume)
    held.callback(run_dir.release)
    from .lm import RunStore

    RunStore.open(run_dir.path, tuple(arms_for(settings)))
    held.callback(run_dir.end_session_at_exit, session)
    scratch = tempfile.mkdtemp(prefix="accval-ranks-")
    held.callback(shutil.rmtree, scratch, ignore_errors=True)
    before = _stamp(out / "report.json")
    try:
        ranks_mod.spawn(settings.ranks, _rank_main, settings, str(out), progress, session, scratch)
    except stop.Interrupted:
        if _stamp(out / "report.json") in (before, None):  # rank 0 stopped before its report
            raise
    report = json.loads((out / "report.json").read_text())
    _say_if_stop_came_late()
    return report


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells one write of ``path`` from another: inode, modification time (ns) and size."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _say_if_stop_came_late() -> None:
    """A stop asked for during the last batch waited for it, and then there was nothing left to stop."""
    if stop.requested():
        print(f"accval: the stop ({stop.signal_name()}) came during the last batch: every question is done and the "
              "report is written", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a process of the run works with, resolved before any model loads."""

    settings: Settings  # validated and resolved
    group: ranks_mod.Group | None  # None: one process
    run_dir: RunDir  # rank 0's is the run directory; the other ranks' a scratch directory
    task_cfg: dict  # lm-eval's task config, built once by rank 0
    endpoints: dict[str, str] | None  # arm -> completions URL, or None: the arms run here
    device_name: str
    sessions: list[dict]  # every invocation of this run directory (rank 0 only)
    session: Session  # this invocation

    @property
    def data_dir(self) -> Path | None:
        return Path(self.settings.data_dir) if self.settings.data_dir else None

    @property
    def writes_report(self) -> bool:
        """One process writes the run directory and the report: the only one, or rank 0."""
        return self.group is None or self.group.root


def _setup(settings: Settings, out: Path, resume: bool, group: ranks_mod.Group | None, held: contextlib.ExitStack,
           session: Session, lock: bool = True, scratch_root: Path | None = None) -> Setup:
    """Check the process group against ``--ranks``, open the run directory (rank 0: ``out``, holding its
    lock until ``held`` closes, and record ``session`` in it; other ranks: a scratch directory, under
    ``scratch_root`` when given) and build the task config (rank 0 builds it, the others receive it)."""
    if group is not None and settings.ranks not in (None, group.world):
        raise ValueError(f"--ranks {settings.ranks}: this process group has {group.world} processes")
    if group is not None and not group.root:
        group.barrier()  # rank 0 has checked and made the run directory
        scratch = Path(tempfile.mkdtemp(prefix=f"accval-rank{group.rank}-", dir=scratch_root))
        held.callback(shutil.rmtree, scratch, ignore_errors=True)  # however the run ends (a kill -9 aside)
        run_dir = RunDir(scratch, settings, False)
        held.callback(run_dir.release)
    else:
        run_dir = RunDir(out, settings, resume, lock=lock)
        held.callback(run_dir.release)
        if group is not None:
            group.barrier()
    endpoints = {"A": settings.endpoint_a, "B": settings.endpoint_b} if settings.endpoint_a else None
    device_name = "endpoints (the servers' devices)" if endpoints else _device_name(settings.device)
    sessions = []
    if group is None or group.root:
        sessions = run_dir.record_session(device_name, session)
        held.callback(run_dir.end_session_at_exit, session)  # however this invocation ends
    data_dir = Path(settings.data_dir) if settings.data_dir else None
    if group is not None and not group.root:  # rank 0 builds the task config once, centrally
        task_mod.use_config_only_manager()
        task_cfg = group.broadcast(None)
        if data_dir is not None:
            task_mod.offline()
    else:
        task_cfg = task_mod.config(data_dir)
        if group is not None:
            group.broadcast(task_cfg)
    return Setup(settings, group, run_dir, task_cfg, endpoints, device_name, sessions, session)


@dataclasses.dataclass
class Evaluated:
    """What both arms did on the same questions."""

    results: dict[str, dict]  # arm -> lm-eval's result
    docs: dict[str, dict[int, dict[str, dict]]]  # arm -> question -> filter -> lm-eval's scored sample
    resumed: dict[str, int | None]  # arm -> questions found done in the run directory (None: endpoints)
    site: dict[str, SiteStats] | None  # arm -> the o_a_proj site's counts (None: endpoints)
    agreement_rows: list[tuple[int, int, float]] | None  # per question, teacher-forced (None: endpoints)
    arms: dict[str, Arm] | None  # None: endpoints
    loaded: builtin.LoadedModel | None  # None: endpoints

    @property
    def doc_ids(self) -> list[int]:
        return sorted(self.docs["A"])


def _evaluate(setup: Setup, progress: bool) -> Evaluated:
    """Both arms on the same questions: through the endpoints, or in this process group (one paired
    pass; Ctrl-C in a single process stops at the next batch boundary)."""
    settings, group = setup.settings, setup.group
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    _quiet_num_fewshot_warning(speak=setup.writes_report)
    if setup.endpoints:
        results, docs = {}, {}
        for name, url in setup.endpoints.items():
            results[name], docs[name] = _evaluate_endpoint(name, url, settings, setup.task_cfg, setup.run_dir)
        _check_same_questions(docs)
        return Evaluated(results, docs, {name: None for name in setup.endpoints}, None, None, None, None)

    from .engine import Engine

    loaded = builtin.load(settings.model, settings.seed, settings.device)
    engine = Engine(loaded, settings.mode, settings.device, group, settings.matmul, settings.prefill_tokens)
    arms = arms_for(settings)
    with stop.at_batch_boundary() if group is None else contextlib.nullcontext():
        results, docs, resumed, site, agreement = _evaluate_arms(
            engine, arms, settings, setup.task_cfg, setup.run_dir, progress,
            on_commit=(lambda: setup.run_dir.end_session(setup.session)) if setup.writes_report else None)
    _check_same_questions(docs)
    # rank 0's run directory has every row (the other ranks' scratch directories lack resumed ones)
    rows = _agreement_rows(engine, agreement, docs["A"]) if setup.writes_report else None
    return Evaluated(results, docs, resumed, site, rows, arms, loaded)


def _check_same_questions(docs: dict[str, dict]) -> None:
    if sorted(docs["A"]) != sorted(docs["B"]):
        raise RuntimeError("the two arms were scored on different questions; the run directory is inconsistent")


def build_report(setup: Setup, ev: Evaluated, *, sessions: list[dict], created: str, command: list[str],
                 versions: dict[str, str]) -> dict:
    """The report of an evaluated A/B: per-arm metrics, paired statistics, agreement and verdict, with
    what produced them. ``sessions``: every invocation of the run directory with the time each worked
    (run.json's); ``elapsed_s`` is their sum, ``elapsed_sessions_s`` each one's (None: not recorded)."""
    settings, group, endpoints, docs = setup.settings, setup.group, setup.endpoints, ev.docs
    doc_ids = ev.doc_ids
    per_arm, paired = {}, {}
    names = ("A", "B")
    for f in FILTERS:
        outcomes = {n: [float(docs[n][d][f]["exact_match"]) for d in doc_ids] for n in names}
        paired[f] = stats.paired_stats(outcomes["A"], outcomes["B"])
        for n in names:
            per_arm.setdefault(n, {})[f] = dataclasses.asdict(stats.arm_stats(outcomes[n]))
    gens = {n: [docs[n][d][FILTERS[0]]["resps"][0][0] for d in doc_ids] for n in names}
    if endpoints:  # no logits through a completions endpoint: agreement is identical generations only
        same = sum(1 for x, y in zip(gens["A"], gens["B"]) if x == y) / len(doc_ids)
        agreement = stats.Agreement(tokens=0, top1=None, kl=None, identical_generations=same)
        verdict = stats.verdict(paired, agreement)
        arm_info = {n: {"path": "endpoint", "implementation": f"endpoint {endpoints[n]}", "backend": None, "inject": None,
                        "site": None, "metrics": per_arm[n], "resumed_samples": None} for n in names}
        served = served_models(settings)
        said = ("" if None in served.values() else f", model {served['A']!r} on both (GET /v1/models)")
        model = {"id": served["A"] if said else "endpoints", "weights_sha256": "",
                 "description": f"served at {endpoints['A']} and {endpoints['B']}{said}", "random_weights": False}
    else:
        site = ev.site
        agreement = stats.combine_agreement(ev.agreement_rows, gens["A"], gens["B"])
        verdict = stats.verdict(paired, agreement,
                                provenance_problems=site["B"].provenance_problems + site["A"].provenance_problems,
                                contract_violations=site["B"].contract_violations)
        arm_info = {n: {"path": a.path, "implementation": a.describe(), "backend": a.backend, "inject": a.inject,
                        "plugged": _plugged(a), "site": site[n].to_json(), "metrics": per_arm[n],
                        "resumed_samples": ev.resumed[n]}
                    for n, a in ev.arms.items()}
        model = {"id": ev.loaded.model_id, "weights_sha256": ev.loaded.weights_sha256,
                 "description": ev.loaded.description, "random_weights": settings.model == builtin.BUILTIN}
    kind, ranks = MODES[settings.mode]
    data_dir = setup.data_dir
    elapsed_s, elapsed_each = elapsed_total(sessions)
    return {
        "schema": SCHEMA,
        "created": created,
        "command": command,
        "versions": versions,
        "device": {"name": setup.device_name, "type": "remote" if endpoints else settings.device,
                   "sessions": [x["device"] for x in sessions]},
        "settings": dataclasses.asdict(settings),
        "task": {"name": task_mod.TASK, "questions_from": _questions_from(data_dir), "num_fewshot": settings.num_fewshot,
                 "config_sha256": task_mod.config_sha256(setup.task_cfg), "data": task_mod.data_sha256(data_dir),
                 "questions": len(doc_ids), "limit": settings.limit, "max_gen_toks": settings.max_gen_toks,
                 "lm_eval_task_version": ev.results["A"]["versions"].get(task_mod.TASK)},
        "model": model,
        "mode": {"name": settings.mode, "sharding": kind, "ranks": ranks,
                 "processes": group.world if group is not None else 1,
                 "process_backend": group.backend if group is not None else None,
                 "execution": ("as the servers run it" if endpoints else
                               f"{ranks} ranks in {group.world} processes (torch.distributed, {group.backend})"
                               if group is not None else
                               f"{ranks} ranks emulated in one process at the o_a_proj site"),
                 "decode": None if endpoints else report_mod.DECODE},
        "arms": arm_info,
        "paired": {f: dataclasses.asdict(p) for f, p in paired.items()},
        "agreement": dataclasses.asdict(agreement),
        "thresholds": {"alpha": stats.ALPHA, "power": stats.POWER, "top1_agreement_floor": stats.TOP1_AGREEMENT_FLOOR,
                       "kl_ceiling": stats.KL_CEILING},
        "verdict": {"regression": verdict.regression, "reasons": list(verdict.reasons)},
        "elapsed_s": elapsed_s,
        "elapsed_sessions_s": elapsed_each,
        "out": str(setup.run_dir.path),
    }


def run(settings: Settings, out: str | Path | None = None, resume: bool = False, progress: bool = True,
        _lock: bool = True, _session: Session | None = None, _scratch: Path | None = None) -> dict:
    """Run the A/B and write its report; returns the report dict.

    ``settings.ranks = N`` spawns N processes (torch.distributed) that run it together; under
    ``torchrun`` this process joins the group torchrun made. Rank 0 writes the run directory.
    ``_lock``, ``_session`` and ``_scratch`` are for those spawned processes (:func:`_rank_main`)."""
    session = _session or Session.start()
    with contextlib.ExitStack() as held:  # the run directory's lock, released however this returns
        settings = validate(settings)
        out = out_dir(out, settings.mode)
        group = _process_group(settings)
        if group is None and settings.ranks and settings.ranks > 1:
            return _run_in_processes(settings, out, resume, progress, held, session)
        setup = _setup(settings, out, resume, group, held, session, lock=_lock, scratch_root=_scratch)
        evaluated = _evaluate(setup, progress)
        if evaluated.arms is not None and not setup.writes_report:  # rank 0 writes the one report
            shutil.rmtree(setup.run_dir.path, ignore_errors=True)
            return {"rank": group.rank}
        report = build_report(setup, evaluated, sessions=setup.run_dir.end_session(session),
                              created=_dt.datetime.now(_dt.timezone.utc).isoformat(), command=sys.argv,
                              versions=_versions())
        report_mod.write(report, setup.run_dir.path)
        if group is None:
            _say_if_stop_came_late()
        return report
