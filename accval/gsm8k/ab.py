"""The gsm8k A/B: both arms on the same questions through lm-eval, paired statistics, verdict, report.

The A/B's settings and their checks are in :mod:`.config`; the run directory, which holds everything
a run has done so that a crash loses nothing and ``resume=True`` continues, in :mod:`.rundir`.

The arms run in one paired pass (:func:`_evaluate_arms`): lm-eval's pass for arm A hands over the
prompts, and each batch runs arm A, then arm B, on them. Each prompt is prefilled once per arm; the
gold answer is teacher-forced from a copy of that prefill's cache, so the agreement costs no second
prefill. lm-eval's pass for arm B then scores arm B's stored generations.

:func:`run` reads in four steps: :func:`~.config.validate` the settings, :func:`_setup` (process group, run
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
import shutil
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from accval import report as report_mod
from accval import stats, stop
from accval.model import builtin
from accval.site import MODES, Arm, SiteStats

from . import ranks as ranks_mod
from . import task as task_mod
from .config import Settings, arms_for, served_models, validate
from .rundir import SCHEMA, RunDir, Session, elapsed_total, out_dir

FILTERS = ("strict-match", "flexible-extract")


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
        served = served_models(settings, must_answer=False)  # a server gone since: the report still comes
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
