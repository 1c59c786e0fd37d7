"""The A/B's run store: a cut last line is repaired, redone work is counted once, one process at a time
uses a run directory, rank processes die with their parent, and Ctrl-C saves what finished, prints
the resume command and exits 130.

The unit tests are cheap (no model); the end-to-end interrupt test runs the CLI three times on the
built-in model (``slow_cpu``: about a minute on a 2-core CPU)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from accval.gsm8k import config, rundir
from accval.gsm8k.lm import (
    AgreementStore,
    CommitLog,
    RunStoreError,
    SampleStore,
    committed_digests,
    read_jsonl,
)

from .test_task import DATA, needs_data

REPO = Path(__file__).resolve().parents[3]


def _site(calls: int) -> dict:
    return {"calls": calls, "tokens": 10 * calls, "m_counts": {"7": calls}, "ran": {"o_a_proj:x": calls},
            "contract_violations": 0, "first_violation": None, "provenance_problems": []}


def test_a_cut_last_line_is_removed_and_the_next_record_starts_clean(tmp_path, capsys):
    """A write cut by a crash: the cut record is cut off the file (said on stderr), the next append
    makes a file every later reader parses."""
    path = tmp_path / "generations-A.jsonl"
    path.write_text(json.dumps({"key": "k1", "text": "one"}) + "\n" + '{"key": "k2", "te')
    store = SampleStore(path)
    assert store.done == {"k1": "one"}
    assert "removed a cut last line (17 bytes" in capsys.readouterr().err
    store.add("k2", "two")
    assert SampleStore(path).done == {"k1": "one", "k2": "two"}
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"key": "k1", "text": "one"}, {"key": "k2", "text": "two"}]


@pytest.mark.parametrize("tail", [
    pytest.param(b'{"doc_id": 3, "tokens": 5, "top1_agree": 5, "kl_sum": 0.1', id="cut-json"),
    pytest.param(b'{"doc_id": 3, "tokens": 5, "top1_agree": 5, "kl_sum": 0.1}', id="no-newline"),
    pytest.param(b"\x00\x00\x00\x00\n", id="zero-filled"),
    pytest.param(b'{"doc_id": 3, "tok\xc3', id="cut-utf8"),
])
def test_agreement_store_repairs_every_kind_of_cut_tail(tmp_path, tail):
    path = tmp_path / "agreement.jsonl"
    good = json.dumps({"doc_id": 1, "tokens": 4, "top1_agree": 4, "kl_sum": 0.0}) + "\n"
    path.write_bytes(good.encode() + tail)
    store = AgreementStore(path)
    assert store.done == {1: (4, 4, 0.0)}, tail
    assert path.read_text() == good, tail
    store.add(2, (3, 2, 0.5))
    assert AgreementStore(path).done == {1: (4, 4, 0.0), 2: (3, 2, 0.5)}


def test_a_bad_line_before_the_last_is_damage_not_a_crash(tmp_path):
    path = tmp_path / "generations-B.jsonl"
    path.write_text('{"key": "k1", "text": "one"}\nnot json\n{"key": "k2", "text": "two"}\n')
    with pytest.raises(RunStoreError, match=r"line 2 is not a generation record .* the run directory is damaged"):
        SampleStore(path)
    assert read_jsonl(tmp_path / "absent.jsonl", "x") == []


def test_only_committed_batches_count_and_are_done(tmp_path):
    """Generations on disk whose batch has no commit record (the run died between the two) are not
    done, and their site counts are not in the total: the redone batch is counted once."""
    path = tmp_path / "commits.jsonl"
    log = CommitLog(path)
    log.add(["k1", "k2"], [0, 1], {"A": _site(3), "B": _site(4)})
    log.add(["k3"], [2], {"A": _site(5), "B": _site(6)})
    with path.open("a") as f:
        f.write('{"keys": ["k4"], "doc_ids": [3], "si')  # the next batch's record, cut
    again = CommitLog(path)
    assert again.keys == {"k1", "k2", "k3"} and again.doc_ids == {0, 1, 2}
    assert again.site["A"].calls == 8 and again.site["B"].calls == 10 and again.site["B"].m_counts == {7: 10}
    again.add(["k4"], [3], {"A": _site(1), "B": _site(1)})  # the redone batch
    final = CommitLog(path)
    assert final.site["A"].calls == 9 and final.doc_ids == {0, 1, 2, 3}
    assert rundir.saved_questions(tmp_path) == 4


def test_an_endpoint_runs_saved_questions_are_those_both_servers_answered(tmp_path):
    """An endpoint run keeps its answers in lm-eval's request cache, one per arm (no commit records): the
    questions saved are those with both arms' answers cached."""
    from sqlitedict import SqliteDict

    assert rundir.saved_questions(tmp_path) == 0
    for arm, n in (("A", 5), ("B", 3)):
        with SqliteDict(str(tmp_path / f"cache-{arm}_rank0.db"), autocommit=True) as db:
            for i in range(n):
                db[f"request-{i}"] = f"answer {i}"
    assert rundir.saved_questions(tmp_path) == 3


def test_a_resumed_batch_that_was_not_committed_is_redone(tmp_path):
    """The paired pass treats a question as missing until its batch's commit record is on disk, even
    when both arms' generations and its agreement row are there."""
    from accval.gsm8k.lm import ArmLM, Partner
    from accval.site import Arm

    stores = {n: SampleStore(tmp_path / f"generations-{n}.jsonl") for n in "AB"}
    agreement, commits = AgreementStore(tmp_path / "agreement.jsonl"), CommitLog(tmp_path / "commits.jsonl")
    for n in "AB":
        stores[n].add_many([("k1", "x"), ("k2", "y")])
    agreement.add_many({1: (1, 1, 0.0), 2: (1, 1, 0.0)})
    commits.add(["k1"], [1], {"A": _site(1), "B": _site(1)})
    partner = Partner(Arm("B", "fp8-chain", "torch"), stores["B"], agreement, str, commits)
    lm = ArmLM.__new__(ArmLM)  # only the store logic: no engine
    lm.store, lm.partner = stores["A"], partner
    assert not lm._missing("k1", 1) and lm._missing("k2", 2)


def _settings(**kw) -> config.Settings:
    return config.Settings(model="builtin", device="cpu", data_dir=None, **kw)


def test_a_run_directory_takes_one_process_at_a_time(tmp_path):
    """A second user of a run directory (another --resume while the first runs) gets a clear error;
    once the first lets go, the directory can be resumed."""
    first = rundir.RunDir(tmp_path / "run", _settings(), resume=False)
    with pytest.raises(RuntimeError, match=rf"another accval process \(pid {os.getpid()}\) is using this run directory"):
        rundir.RunDir(tmp_path / "run", _settings(), resume=True)
    first.release()
    rundir.RunDir(tmp_path / "run", _settings(), resume=True).release()


@pytest.mark.parametrize("engine", [None, "prefill: one prompt at a time"])
def test_a_run_started_under_other_engine_rules_is_not_resumed(tmp_path, engine):
    """A run begun by an accval that batched generation otherwise (before ``rundir.ENGINE_RULES``: ended rows
    kept in the decode batch, every DEP rank's rows in one batch) mixed both into one report on resume."""
    run = tmp_path / "run"
    rundir.RunDir(run, _settings(), resume=False).release()
    meta = json.loads((run / "run.json").read_text())
    assert meta["engine"] == rundir.ENGINE_RULES
    if engine is None:  # an accval that recorded no rules recorded no prefill budget either
        del meta["engine"], meta["settings"]["prefill_tokens"]
    else:
        meta["engine"] = engine
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"started by an accval whose engine batched generation otherwise \("
                                         + (engine or "rules not recorded")):
        rundir.RunDir(run, _settings(), resume=True)


def test_results_without_their_run_record_are_not_reused(tmp_path):
    """Generations and commits with no run.json: the settings that made them are unknown, so a new run
    (it reused them, under other settings, and reported their verdict) is refused."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "generations-A.jsonl").write_text('{"key": "k", "text": "t"}\n')
    with pytest.raises(ValueError, match=r"holds results of an earlier run \(generations-A.jsonl\) but no run.json"):
        rundir.RunDir(run, _settings(inject="rope-sign"), resume=False)


def test_a_run_that_finished_nothing_starts_afresh_and_one_with_work_does_not(tmp_path, capsys):
    run = tmp_path / "run"
    rundir.RunDir(run, _settings(num_fewshot=100), resume=False).release()  # stopped at once: a prompt too long
    rundir.RunDir(run, _settings(), resume=False).release()
    assert "finished no question; starting it afresh" in capsys.readouterr().err
    assert json.loads((run / "run.json").read_text())["settings"]["num_fewshot"] == 5
    (run / "commits.jsonl").write_text("")
    with pytest.raises(ValueError, match="already holds a run; pass --resume"):
        rundir.RunDir(run, _settings(), resume=False)


def test_resume_with_another_process_count_names_the_option_that_continues(tmp_path):
    """--ranks auto is recorded as the processes it took: on a machine with other cores the resume is
    refused, saying which --ranks continues the run (it printed a dict of the settings)."""
    run = tmp_path / "run"
    rundir.RunDir(run, _settings(ranks=2), resume=False).release()
    with pytest.raises(ValueError, match=r"settings differ from the run in .*: --ranks 2 in the run, 4 now "
                                         r"\(--ranks 2 continues as the run began, as does leaving --ranks out"):
        rundir.RunDir(run, _settings(ranks=4), resume=True)


def test_resume_refuses_changed_data_and_a_damaged_run_record(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n')
    run = tmp_path / "run"
    settings = config.Settings(model="builtin", device="cpu", data_dir=str(data))
    rundir.RunDir(run, settings, resume=False).release()
    (data / "test.jsonl").write_text('{"question": "q", "answer": "#### 2"}\n')
    with pytest.raises(ValueError, match=rf"the data files in {data} changed since the run"):
        rundir.RunDir(run, settings, resume=True)
    (run / "run.json").write_text('{"schema": 1, "settings": ')
    with pytest.raises(ValueError, match=rf"{run / 'run.json'} is not readable JSON"):
        rundir.RunDir(run, settings, resume=True)
    (run / "run.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="is not an accval gsm8k run record"):
        rundir.RunDir(run, settings, resume=True)
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match=r"--out .*afile: expected a run directory, got a file"):
        rundir.RunDir(tmp_path / "afile", settings, resume=False)


@pytest.mark.slow_cpu
def test_the_lock_holds_across_processes_and_the_cli_exits_2(tmp_path):
    run = tmp_path / "run"
    holder = rundir.RunDir(run, _settings(), resume=False)
    try:
        proc = subprocess.run([sys.executable, "-c", "import sys; from accval.cli import main; sys.exit(main(sys.argv[1:]))",
                               "gsm8k", "--ab", "--model", "builtin", "--device", "cpu", "--out", str(run), "--resume",
                               "--data-dir", str(_tiny_data(tmp_path)), "--quiet"],
                              capture_output=True, text=True, timeout=300, env=_env(), check=False)
    finally:
        holder.release()
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "another accval process" in err[0], (proc.returncode, proc.stderr)


def _tiny_data(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    record = json.dumps({"question": "Tom has 2 apples and buys 3. How many?", "answer": "2 + 3 = 5\n#### 5"})
    (d / "test.jsonl").write_text(f"{record}\n{record}\n")  # what the data check asks: 2 questions,
    (d / "train.jsonl").write_text(f"{record}\n" * 5)  # and as many examples as the 5 shots
    return d


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.update(extra)
    return env


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(x) for x in (task / "children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow_cpu  # two rank processes import torch: ~25 s on a loaded 2-core CPU
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the rank processes")
def test_rank_processes_die_with_their_parent(tmp_path):
    """SIGKILL the process that spawned the ranks: the ranks end too (instead of running on)."""
    parent = subprocess.Popen([sys.executable, "-c",
                               "import time; from accval.gsm8k import ranks; ranks.spawn(2, time.sleep, 300)"],
                              env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, kids = time.time() + 120, []
        while time.time() < deadline and len(kids) < 2:
            time.sleep(0.5)
            kids = [k for k in _children(parent.pid) if "spawn_main" in Path(f"/proc/{k}/cmdline").read_text()]
        assert len(kids) == 2, f"rank processes not found under {parent.pid}: {_children(parent.pid)}"
        time.sleep(3.0)  # let them reach their own code (the request to die with the parent)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.2)
    alive = [k for k in kids if _alive(k)]
    for k in alive:
        os.kill(k, signal.SIGKILL)  # tidy up what the test found running
    assert not alive, f"rank processes {alive} still running 30 s after their parent was killed"


def wait_for_stop(ready_dir: str) -> None:
    """A rank's work in :func:`test_ctrl_c_reaches_the_rank_processes_as_a_stop_request`: say it runs,
    then wait for a stop request (the paired pass checks the same flag at each batch boundary). Its batches
    have begun (before them a stop ends a rank at once: nothing is in flight)."""
    from accval import stop

    stop.batches_begin()
    Path(ready_dir, f"rank{os.environ['RANK']}").write_text(str(os.getpid()))
    deadline = time.time() + 120
    while not stop.requested():
        if time.time() > deadline:
            raise TimeoutError("no stop request reached this rank")
        time.sleep(0.05)
    Path(ready_dir, f"stopped{os.environ['RANK']}").write_text("")


SPAWN_AND_REPORT = """
import sys
from accval import stop
from accval.gsm8k import ranks
from accval.suites.ab.test_run_store import wait_for_stop
with stop.signals_interrupt():
    try:
        ranks.spawn(2, wait_for_stop, sys.argv[1])
    except stop.Interrupted:
        print("interrupted")
        sys.exit(stop.exit_code())
"""


@pytest.mark.slow_cpu  # two rank processes import torch: ~25 s on a loaded 2-core CPU
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sigterm-to-the-group"])
def test_ctrl_c_reaches_the_rank_processes_as_a_stop_request(tmp_path, how):
    """Ctrl-C or SIGTERM at the parent (the ranks ignore SIGINT), or SIGTERM to every process as a
    scheduler sends it: every rank gets a stop request, finishes its work and exits cleanly; the
    parent then raises :class:`stop.Interrupted` (the CLI's exit 130, or 143 for SIGTERM)."""
    parent = subprocess.Popen([sys.executable, "-c", SPAWN_AND_REPORT, str(tmp_path)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not all((tmp_path / f"rank{r}").exists() for r in (0, 1)) and time.time() < deadline and parent.poll() is None:
        time.sleep(0.1)
    if how == "sigterm-to-the-group":
        os.killpg(parent.pid, signal.SIGTERM)
    else:
        parent.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGTERM)
    stdout, err = parent.communicate(timeout=120)
    code = 130 if how == "ctrl-c" else 143
    assert parent.returncode == code and stdout.strip() == "interrupted", (parent.returncode, stdout, err[-2000:])
    assert (tmp_path / "stopped0").exists() and (tmp_path / "stopped1").exists(), sorted(tmp_path.iterdir())
    assert "Traceback" not in err and "stopping after the batch in flight" in err, err[-2000:]


# The end-to-end interrupt: tiny prompts (0-shot) so each question takes about a second.
E2E = ["gsm8k", "--ab", "--model", "builtin", "--limit", "4", "--num-fewshot", "0", "--max-gen-toks", "4",
       "--batch-size", "1", "--ranks", "1"]


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from accval.cli import main; sys.exit(main(sys.argv[1:]))", *argv]


def _commits(run: Path) -> int:
    path = run / "commits.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


@needs_data
@pytest.mark.slow_cpu
def test_ctrl_c_saves_prints_the_resume_command_and_the_resumed_run_matches(tmp_path):
    """Ctrl-C after the first question: exit 130, no traceback, the printed command resumes; a cut
    record (as SIGKILL mid-write leaves) is repaired; the resumed run's statistics, agreement and site
    counters equal those of an uninterrupted run of the same settings."""
    ref = tmp_path / "ref"
    done = subprocess.run(_cli(*E2E, "--data-dir", str(DATA), "--out", str(ref), "--quiet"), env=_env(),
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli(*E2E, "--data-dir", str(DATA), "--out", str(run)), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while _commits(run) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    saved = _commits(run)
    said = "1 finished question is" if saved == 1 else f"{saved} finished questions are"
    assert 1 <= saved < 4 and f"{said} saved in {run}" in err, (saved, err[-1000:])
    resume = err.strip().splitlines()[-1].strip()
    assert resume.startswith("accval gsm8k") and resume.endswith("--resume"), err[-1000:]
    with (run / "generations-B.jsonl").open("a") as f:
        f.write('{"key": "cut by a cra')  # a write a SIGKILL cut
    argv = shlex.split(resume)[1:]
    assert argv == [*E2E, "--data-dir", str(DATA), "--out", str(run), "--resume"]
    again = subprocess.run(_cli(*argv, "--quiet"), env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "generations-B.jsonl: removed a cut last line" in again.stderr
    a, b = (json.loads((d / "report.json").read_text()) for d in (ref, run))
    assert b["arms"]["A"]["resumed_samples"] == saved
    # the interrupted session's time counts: the elapsed time is both sessions'
    each = b["elapsed_sessions_s"]
    assert len(each) == 2 and None not in each and b["elapsed_s"] == round(sum(each), 1), (b["elapsed_s"], each)
    assert a["paired"] == b["paired"] and a["agreement"] == b["agreement"]
    for arm in "AB":
        assert a["arms"][arm]["site"] == b["arms"][arm]["site"], (arm, a["arms"][arm]["site"], b["arms"][arm]["site"])


# A line before the last that parses as JSON but is not a record accval writes (edited by hand, pasted
# from another run). Each of these was read before as a record (a fraction or true as a doc_id, "abc" as
# three keys, a provenance string as three problems, negative counts) or ended in an AttributeError.
CHANGED_LINES = [
    pytest.param("generations-A.jsonl", '{"key": "k2", "text": 5}', id="generation-text-a-number"),
    pytest.param("generations-A.jsonl", '{"key": "", "text": "two"}', id="generation-key-empty"),
    pytest.param("agreement.jsonl", '{"doc_id": 1.5, "tokens": 5, "top1_agree": 5, "kl_sum": 0.1}', id="agreement-doc-id-a-fraction"),
    pytest.param("agreement.jsonl", '{"doc_id": true, "tokens": 5, "top1_agree": 5, "kl_sum": 0.1}', id="agreement-doc-id-true"),
    pytest.param("agreement.jsonl", '{"doc_id": 1, "tokens": "5", "top1_agree": 5, "kl_sum": 0.1}', id="agreement-tokens-a-string"),
    pytest.param("agreement.jsonl", '{"doc_id": 1, "tokens": 5, "top1_agree": 9, "kl_sum": 0.1}', id="agreement-more-agreeing-than-tokens"),
    pytest.param("agreement.jsonl", '{"doc_id": 1, "tokens": 5, "top1_agree": 5, "kl_sum": -0.1}', id="agreement-kl-negative"),
    pytest.param("commits.jsonl", '{"keys": "k2", "doc_ids": [1], "site": {}}', id="commit-keys-a-string"),
    pytest.param("commits.jsonl", '{"keys": ["k2"], "doc_ids": [true], "site": {}}', id="commit-doc-id-true"),
    pytest.param("commits.jsonl", '{"keys": ["k2"], "doc_ids": [1, 2], "site": {}}', id="commit-more-doc-ids-than-keys"),
    pytest.param("commits.jsonl", '{"keys": ["k2"], "doc_ids": [1], "site": []}', id="commit-site-a-list"),
    pytest.param("commits.jsonl", '{"keys": ["k2"], "doc_ids": [1], "site": {}}', id="commit-site-counts-gone"),
    pytest.param("commits.jsonl", json.dumps({"keys": ["k2"], "doc_ids": [1], "site": {"A": {**_site(1), "m_counts": [7]}}}),
                 id="commit-m-counts-a-list"),
    pytest.param("commits.jsonl", json.dumps({"keys": ["k2"], "doc_ids": [1], "site": {"A": {**_site(1), "calls": -100}}}),
                 id="commit-calls-negative"),
    pytest.param("commits.jsonl", json.dumps({"keys": ["k2"], "doc_ids": [1], "site": {"A": {**_site(1), "ran": "xy"}}}),
                 id="commit-ran-a-string"),
    pytest.param("commits.jsonl", json.dumps({"keys": ["k2"], "doc_ids": [1],
                                              "site": {"A": {**_site(1), "provenance_problems": "abc"}}}),
                 id="commit-provenance-a-string"),
]
STORES = {"generations-A.jsonl": SampleStore, "agreement.jsonl": AgreementStore, "commits.jsonl": CommitLog}


def _three_batches(run: Path) -> None:
    """A run store of three committed one-question batches (questions 0, 1, 2; keys k1, k2, k3)."""
    stores = {n: SampleStore(run / f"generations-{n}.jsonl") for n in "AB"}
    agreement, commits = AgreementStore(run / "agreement.jsonl"), CommitLog(run / "commits.jsonl")
    for doc_id, key in enumerate(("k1", "k2", "k3")):
        for n in "AB":
            stores[n].add(key, f"text {key}")
        agreement.add(doc_id, (4, 3, 0.25))
        commits.add([key], [doc_id], {"A": _site(1), "B": _site(1)}, committed_digests(stores, agreement, [key], [doc_id]))


@pytest.mark.parametrize("name,old,new", [("generations-B.jsonl", "text k2", "text k2 but #### 999"),
                                          ("agreement.jsonl", '"top1_agree": 3', '"top1_agree": 4')])
def test_a_line_edited_into_another_valid_record_is_refused(tmp_path, name, old, new):
    """A committed record changed into another valid one (an answer edited to read "#### 999", an
    agreement count raised) changed the resumed run's numbers without a word: each commit record now
    holds the sha256 of what it commits, per file, and the store names the commit line and the file."""
    from accval.gsm8k.lm import RunStore

    _three_batches(tmp_path)
    RunStore.open(tmp_path)  # as written: accepted
    path = tmp_path / name
    lines = path.read_text().splitlines(keepends=True)
    assert old in lines[1]
    lines[1] = lines[1].replace(old, new)
    path.write_text("".join(lines))
    with pytest.raises(RunStoreError, match=rf"commits.jsonl: line 2 commits records of questions \[1\] that {name} no "
                                            r"longer holds as committed \(a line edited since\?\); the run directory is damaged"):
        RunStore.open(tmp_path)


@pytest.mark.parametrize("name,bad", CHANGED_LINES)
def test_a_changed_line_before_the_last_is_named_and_never_counted(tmp_path, name, bad):
    """For every file of the run store, a line before the last that is not a record accval writes is
    one RunStoreError (a ValueError: the CLI's one-line error, exit 2) naming the file, the line and what
    to do; it is never read into the questions done or the site counts."""
    _three_batches(tmp_path)
    path = tmp_path / name
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = bad + "\n"
    path.write_text("".join(lines))
    with pytest.raises(RunStoreError) as e:
        STORES[name](path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: line 2 is not a") and "\n" not in msg, (name, bad, msg)
    assert msg.endswith("the run directory is damaged: start the run afresh in another --out"), (name, bad, msg)


@pytest.mark.parametrize("name,line,bad", [
    pytest.param("generations-B.jsonl", 2, '{"key": "k9", "text": "text k2"}', id="generation-key-changed"),
    pytest.param("agreement.jsonl", 3, '{"doc_id": 7, "tokens": 4, "top1_agree": 3, "kl_sum": 0.25}', id="agreement-doc-id-changed"),
])
def test_a_committed_question_without_its_records_is_damage_not_redone(tmp_path, name, line, bad):
    """A record changed into another valid one: the commit log names a question whose generation or
    agreement row is gone. The paired pass would redo that question and add its batch's site counts a
    second time; the run store is refused instead, naming the commit line."""
    from accval.gsm8k.lm import RunStore

    _three_batches(tmp_path)
    path = tmp_path / name
    lines = path.read_text().splitlines(keepends=True)
    lines[line - 1] = bad + "\n"
    path.write_text("".join(lines))
    with pytest.raises(RunStoreError, match=rf"commits.jsonl: line {line} commits .*{name} lacks.* another --out"):
        RunStore.open(tmp_path)
    intact = tmp_path / "intact"
    intact.mkdir()
    _three_batches(intact)
    assert RunStore.open(intact).commits.doc_ids == {0, 1, 2}  # the same store unchanged opens


@pytest.mark.parametrize("make", [
    pytest.param(lambda run: None, id="no-such-directory"),
    pytest.param(lambda run: run.mkdir(), id="an-empty-directory"),
    pytest.param(lambda run: (run.mkdir(), (run / rundir.LOCK).write_text("123")), id="only-a-lock-file"),
])
def test_resume_where_there_is_no_run_is_refused(tmp_path, make):
    """--resume promises that finished work is kept: a directory with no run in it (a mistyped path) is
    a usage error saying so, not a fresh run started silently; nothing is written there."""
    run = tmp_path / "run"
    make(run)
    existed = run.exists()
    with pytest.raises(ValueError, match=r"--resume: .*/run (does not exist|is empty), so there is no run to continue; "
                                         r"check the path, or leave out --resume"):
        rundir.RunDir(run, _settings(), resume=True)
    assert run.exists() == existed and not (run / "run.json").exists()


def test_each_session_records_its_time_and_the_report_sums_them(tmp_path):
    """Every invocation of a run directory records its own elapsed time in run.json (replaced as it goes,
    so an interrupted one keeps its last); the total is their sum."""
    run = tmp_path / "run"
    first = rundir.RunDir(run, _settings(), resume=False)
    s1 = rundir.Session("first", time.time() - 100.0, "2026-01-01T00:00:00+00:00")
    assert first.record_session("cpu", s1)[-1]["elapsed_s"] is None  # not known until recorded
    first.end_session(s1)
    first.release()
    second = rundir.RunDir(run, _settings(), resume=True)
    s2 = rundir.Session("second", time.time() - 20.0, "2026-01-02T00:00:00+00:00")
    second.record_session("cpu", s2)
    sessions = second.end_session(s2)
    second.release()
    total, each = rundir.elapsed_total(sessions)
    assert [s["id"] for s in sessions] == ["first", "second"]
    assert each == [pytest.approx(100.0, abs=1.0), pytest.approx(20.0, abs=1.0)] and total == round(sum(each), 1), sessions


def test_sessions_recorded_before_session_times_read_as_unknown(tmp_path):
    """A run directory begun before sessions recorded their time: its sessions read as unknown (None),
    the total sums the known ones, and the run resumes."""
    run = tmp_path / "run"
    rundir.RunDir(run, _settings(), resume=False).release()
    meta = json.loads((run / "run.json").read_text())
    meta["sessions"] = [{"started": "2026-01-01T00:00:00+00:00", "device": "cpu"}]  # the earlier format
    (run / "run.json").write_text(json.dumps(meta))
    again = rundir.RunDir(run, _settings(), resume=True)
    s = rundir.Session("now", time.time() - 5.0, "2026-01-02T00:00:00+00:00")
    again.record_session("cpu", s)
    total, each = rundir.elapsed_total(again.end_session(s))
    again.release()
    assert each == [None, pytest.approx(5.0, abs=1.0)] and total == each[1]


@needs_data
@pytest.mark.slow_cpu  # two rank processes import torch and load the model: ~40 s on a loaded 2-core CPU
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the rank processes are ended with SIGKILL")
def test_a_second_sigterm_with_real_ranks_leaves_nothing_behind(tmp_path):
    """SIGTERM twice to the parent of ``--ranks 2`` while the ranks generate (a scheduler's stop, then a
    second one): the ranks end at once (SIGKILL), the parent exits 143 without a traceback, and nothing
    is left behind: no resource tracker warning about leaked semaphores (a killed rank cannot unregister
    one), no rank scratch directory in TMPDIR; run.json has the session's time."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    run = tmp_path / "run"
    argv = ["gsm8k", "--ab", "--model", "builtin", "--limit", "8", "--num-fewshot", "0", "--max-gen-toks", "8",
            "--batch-size", "1", "--ranks", "2", "--data-dir", str(DATA), "--out", str(run)]
    proc = subprocess.Popen(_cli(*argv), env=_env(TMPDIR=str(tmp)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while _commits(run) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)  # the ranks are in the next batch: the second signal kills them mid-batch
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (proc.returncode, err[-3000:])
    assert "Traceback" not in err and "leaked semaphore" not in err, err[-3000:]
    left = sorted(p.name for p in tmp.iterdir() if p.name.startswith("accval-rank"))
    assert not left, f"rank scratch directories left in TMPDIR: {left}"
    session = json.loads((run / "run.json").read_text())["sessions"][-1]
    assert isinstance(session["elapsed_s"], float) and session["elapsed_s"] > 0, session
