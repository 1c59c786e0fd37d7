"""``accval gsm8k --ab`` and ``accval report`` end to end on the CPU (tiny limits)."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest

from accval.testing import skip_unless_the_engine_runs

pytest.importorskip("lm_eval")
skip_unless_the_engine_runs()

from accval.cli import main  # noqa: E402

from .test_task import DATA, needs_data  # noqa: E402

TINY = ["--model", "builtin", "--limit", "2", "--max-gen-toks", "4", "--batch-size", "2", "--quiet"]


def _ab(tmp_path, name, *extra):
    out = tmp_path / name
    return main(["gsm8k", "--ab", "--data-dir", str(DATA), "--out", str(out), *TINY, *extra]), out


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ab")
    return (*_ab(tmp, "dep8", "--mode", "dep8"), tmp)


@needs_data
def test_clean_ab_exits_0_with_a_complete_report(clean_run, capsys):
    rc, out, _ = clean_run
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["schema"] == "accval.gsm8k.ab/1" and rep["verdict"] == {"regression": False, "reasons": []}
    assert rep["task"]["questions"] == 2 and rep["mode"]["ranks"] == 8
    from accval.gsm8k import config

    assert rep["mode"]["processes"] == (config.auto_ranks("dep8", "cpu") or 1)  # --ranks auto, the default
    # on a CPU (--matmul auto = fp32) arm A's bf16 bmm runs as an fp32 bmm rounded to bf16, and says so
    assert rep["arms"]["A"]["site"]["ran"] == {"o_a_proj:bf16-fallback fp32-matmul": rep["arms"]["A"]["site"]["calls"]}
    assert set(rep["arms"]["B"]["site"]["ran"]) == {"producer:torch-reference", "consumer:emulated", "o_a_proj:fp8-chain"}
    for key in ("accval", "lm_eval", "torch", "transformers"):
        assert rep["versions"][key]
    assert rep["task"]["data"]["test"] and rep["model"]["weights_sha256"]
    assert (out / "report.png").stat().st_size > 0 and "Verdict" in (out / "report.md").read_text()
    assert main(["report", str(out)]) == 0
    assert "gsm8k 5-shot A/B, dep8" in capsys.readouterr().out


@needs_data
def test_resume_reuses_every_sample_and_an_existing_run_needs_resume(clean_run, capsys):
    _, out, tmp = clean_run
    before = json.loads((out / "report.json").read_text())
    assert "earlier invocations" not in (out / "report.md").read_text()
    assert main(["gsm8k", "--ab", "--data-dir", str(DATA), "--out", str(out), "--mode", "dep8", *TINY]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["gsm8k", "--ab", "--data-dir", str(DATA), "--out", str(out), "--mode", "dep8", "--resume", *TINY]) == 0
    after = json.loads((out / "report.json").read_text())
    assert after["arms"]["A"]["resumed_samples"] == after["arms"]["B"]["resumed_samples"] == 2
    # the elapsed time is every session's: the first's (as long as its report said, or longer: it ends after
    # writing it) and this one's
    each = after["elapsed_sessions_s"]
    assert len(each) == 2 and each[0] >= before["elapsed_s"] and after["elapsed_s"] == round(sum(each), 1), each
    assert after["paired"] == before["paired"] and after["agreement"] == before["agreement"]
    assert after["device"]["sessions"] == [after["device"]["name"]] * 2  # both invocations recorded
    assert f"- elapsed: {after['elapsed_s']} s over 2 sessions ({each[0]} s, {each[1]} s)" in (out / "report.md").read_text()
    loud = [x for x in TINY if x != "--quiet"]  # the plan line would come first: a refused resume says only why
    assert main(["gsm8k", "--ab", "--data-dir", str(DATA), "--out", str(out), "--mode", "tep8", "--resume", *loud]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "settings differ" in err[0] and "--mode 'dep8' in the run, 'tep8' now" in err[0], err


@needs_data
def test_a_plugged_producer_breaking_the_contract_is_a_regression(tmp_path, capsys):
    """The same defect in a plugged producer: its buffers cannot be trusted to be consumable, so the run
    ends at the first violation, exit 1 with the violation in one line (it was exit 2, an "error")."""
    rc, out = _ab(tmp_path, "plugged", "--mode", "dep8", "--producer", "accval.examples.torch_producer:broken_pad")
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.startswith("accval: regression: at the model's o_a_proj (M="), err
    assert "broken_pad" in err and "pad4(M)" in err and not (out / "report.json").exists()


@needs_data
def test_injected_scale_pad_btm_is_a_regression(tmp_path, clean_run):
    rc, out = _ab(tmp_path, "inject", "--mode", "dep8", "--inject", "scale-pad-btm")
    assert rc == 1
    rep = json.loads((out / "report.json").read_text())
    assert rep["verdict"]["regression"] and rep["arms"]["B"]["inject"] == "scale-pad-btm"
    assert any("contract" in r for r in rep["verdict"]["reasons"]), rep["verdict"]
    assert rep["arms"]["B"]["site"]["inject_changed_calls"] > 0  # the prompts pass M = 1024 at prefill
    assert main(["report", str(clean_run[1]), str(out)]) == 0
    assert main(["report", "--fail-on-regression", str(clean_run[1]), str(out)]) == 1


def test_the_sentinel_ab_catches_the_pull_requests_scale_pad(tmp_path):
    """The pull request's defect shows only past one prompt's tokens (its token blocks pad like pad4(M) below
    M = 1024, and a sentinel prompt has under 900): with each rank prefilling its prompts of a batch together,
    as an engine does, a DEP8 rank's M passes 1024 and the A/B reads a regression with contract violations.
    (With --prefill-tokens 1, one prompt per forward, the same run read "no regression", M at most 845.)"""
    out = tmp_path / "spb"
    assert main(["gsm8k", "--ab", "--mode", "dep8", "--limit", "16", "--batch-size", "16", "--inject", "scale-pad-btm",
                 "--out", str(out), "--quiet"]) == 1
    rep = json.loads((out / "report.json").read_text())
    site = rep["arms"]["B"]["site"]
    assert rep["settings"]["prefill_tokens"] == 8192 and site["m_max"] > 1024, site
    assert site["contract_violations"] > 0 and rep["verdict"]["regression"], rep["verdict"]


@needs_data
@pytest.mark.parametrize("args,message", [
    (["--data-dir", "/nonexistent"], "expected train.jsonl and test.jsonl"),
    (["--prefill-tokens", "0"], "--prefill-tokens: expected a whole number >= 1, got 0"),
    (["--backend", "triton"], "need a GPU"),
    (["--inject", "no-such-defect"], "catalog mutant id"),
    (["--limit", "1"], "at least 2 questions"),
    (["--mode", "dep4"], None),
    (["--matmul", "fp16"], None),
    (["--ranks", "two"], "expected auto or a number of processes"),
    (["--ranks", "3"], "expected a divisor of 8"),
])
def test_bad_arguments_exit_2(tmp_path, capsys, args, message):
    argv = ["gsm8k", "--ab", "--data-dir", str(DATA), "--out", str(tmp_path / "x"), *TINY, *args]
    assert main(argv) == 2
    if message:
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("cores,mode,device,world,want", [
    (1, "dep8", "cpu", None, None), (2, "dep8", "cpu", None, 2), (3, "dep8", "cpu", None, 2),
    (16, "dep8", "cpu", None, 8), (16, "tep8", "cpu", None, None), (16, "dep8", "cuda", None, None),
    (16, "dep8", "cpu", "4", None),
])
def test_auto_ranks_are_processes_per_core_under_dep_on_a_cpu(monkeypatch, cores, mode, device, world, want):
    """``--ranks auto`` (the default): DEP on a CPU gets one process per core, a divisor of 8; TEP (which
    exchanges partial sums in every layer), a GPU and torchrun's own group get one process (None)."""
    from accval.gsm8k import config

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    if world:
        monkeypatch.setenv("WORLD_SIZE", world)
    else:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert config.auto_ranks(mode, device) == want
    if device == "cpu" and not world:
        assert config.validate(config.Settings(mode=mode, model="builtin", device="cpu", ranks="auto")).ranks == want


def test_settings_reject_an_unknown_matmul():
    from accval.gsm8k import config

    with pytest.raises(ValueError, match=r"--matmul: expected auto or one of \('model', 'fp32'\), got 'fp16'"):
        config.validate(config.Settings(matmul="fp16", device="cpu"))


@needs_data
def test_checkpoints_that_are_not_deepseek_v4_exit_2(tmp_path, capsys):
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    base = ["gsm8k", "--ab", "--data-dir", str(DATA), *TINY]
    assert main([*base, "--out", str(tmp_path / "a"), "--model", str(tmp_path / "llama")]) == 2
    assert "expected a DeepSeek-V4 checkpoint" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--model", str(tmp_path / "empty")]) == 2
    assert "checkpoint directory with config.json" in capsys.readouterr().err


def test_gsm8k_without_ab_and_report_of_nothing_exit_2(tmp_path, capsys):
    assert main(["gsm8k"]) == 2
    assert main(["report", str(tmp_path)]) == 2
    assert "expected a report.json" in capsys.readouterr().err


@needs_data
@pytest.mark.parametrize("args,message", [
    pytest.param(["--seed", "-1"], "--seed: expected a whole number from 0 to 2**64 - 1 (torch's seed range), got -1",
                 id="seed-negative"),
    pytest.param(["--seed", str(2**64)], "--seed: expected a whole number from 0 to 2**64 - 1", id="seed-past-torch"),
    pytest.param(["--max-gen-toks", "100000"], "--max-gen-toks: expected 1 to 16383 (the model 'builtin' has 16384 "
                 "positions, shared by the prompt and its answer), got 100000", id="max-gen-toks-past-the-positions"),
    pytest.param(["--out", ""], "--out: expected a run directory, got an empty string ''", id="out-empty"),
    pytest.param(["--resume"], "does not exist, so there is no run to continue; check the path, or leave out --resume",
                 id="resume-a-missing-directory"),
    pytest.param(["--inject", ""], "--inject: expected a value, got an empty string ''", id="inject-empty"),
    pytest.param(["--model", "sentinel", "--seed", "3"], "--seed: only --model builtin has seeded (random) weights; "
                 "--model 'sentinel' loads its own, so the seed would be ignored", id="seed-with-trained-weights"),
])
def test_misuse_is_one_usage_error_naming_the_option(tmp_path, monkeypatch, capsys, args, message):
    """Each misuse exits 2 with one line naming the option, what was expected and what came, before any
    work: no run directory is made, neither the one named nor a default one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACCVAL_RUNS_DIR", str(tmp_path / "runs"))
    out = tmp_path / "x"
    assert main(["gsm8k", "--ab", "--data-dir", str(DATA), "--out", str(out), *TINY, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("accval: error: ") and message in err[0], (args, err)
    assert not out.exists() and not (tmp_path / "runs").exists() and not (tmp_path / "run.json").exists(), args


def test_seed_and_max_gen_toks_bounds_are_the_models():
    """The largest accepted values: torch's largest seed, and the model's positions less one (the sentinel's
    checkpoint has 4096; a prompt takes at least one of them)."""
    from accval.gsm8k import config, rundir

    config.check_seed(config.SEED_MAX)
    config.check_max_gen_toks(4095, "sentinel")
    with pytest.raises(ValueError, match=r"--max-gen-toks: expected 1 to 4095 \(the model 'sentinel' has 4096 positions"):
        config.check_max_gen_toks(4096, "sentinel")
    with pytest.raises(TypeError, match="--seed: expected a whole number, got bool True"):
        config.check_seed(True)
    assert rundir.out_dir(None, "dep8").name.endswith("-dep8")


@needs_data
def test_max_gen_toks_past_what_the_prompts_leave_is_a_usage_error(tmp_path, capsys):
    """A --max-gen-toks the model's positions allow but the prompts do not (builtin: 16384 positions): one
    line naming --max-gen-toks and the range these prompts leave, before any question is generated."""
    out = tmp_path / "run"
    argv = ["gsm8k", "--ab", "--data-dir", str(DATA), "--out", str(out), *TINY, "--num-fewshot", "0",
            "--ranks", "1", "--max-gen-toks", "16380"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "accval: error: --max-gen-toks: expected 1 to " in err[-1], err[-3:]
    assert "for these prompts (the model's 16384 positions less the longest prompt's" in err[-1], err[-1]
    assert not (out / "commits.jsonl").exists()


@needs_data
@pytest.mark.parametrize("ranks", ["1", "2"])
def test_a_damaged_run_store_is_one_line_naming_file_and_line(clean_run, tmp_path, capsys, ranks):
    """--resume of a run whose agreement.jsonl has a changed line before its last (doc_id true: it was read as
    question 1): exit 2, one line naming the file, the line and what to do; with real ranks the parent says
    it before any rank starts."""
    _, done, _ = clean_run
    run = tmp_path / "run"
    shutil.copytree(done, run, ignore=shutil.ignore_patterns(".lock"))
    path = run / "agreement.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) >= 2, lines
    row = json.loads(lines[0])
    lines[0] = json.dumps({**row, "doc_id": True}) + "\n"
    path.write_text("".join(lines))
    run_json = json.loads((run / "run.json").read_text())
    run_json["settings"]["ranks"] = int(ranks)  # the same run, resumed with these ranks
    (run / "run.json").write_text(json.dumps(run_json))
    argv = ["gsm8k", "--ab", "--data-dir", str(DATA), "--out", str(run), "--mode", "dep8", "--resume", *TINY,
            "--ranks", ranks]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0] == (f"accval: error: {path}: line 1 is not an agreement record (expected whole numbers doc_id >= 0, "
                      f"tokens >= 1, top1_agree from 0 to tokens and a number kl_sum >= 0, got "
                      f"{str({**row, 'doc_id': True})[:120]}); the run directory is damaged: start the run afresh in "
                      "another --out"), err[0]


@needs_data
@pytest.mark.skipif(shutil.which("git") is None, reason="no git here: lm-eval's lookup falls back without a word")
def test_outside_a_git_checkout_lm_eval_prints_no_git_error(tmp_path, monkeypatch, capfd):
    """lm-eval looks up the current directory's git commit after evaluating (``git describe``, its stderr
    inherited). Run from a directory that is no git checkout (GIT_CEILING_DIRECTORIES keeps git from
    looking above it), the A/B prints no "fatal: not a git repository"."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    argv = ["gsm8k", "--ab", "--data-dir", str(DATA), "--out", str(tmp_path / "run"), *TINY, "--num-fewshot", "0",
            "--ranks", "1"]
    assert main(argv) == 0
    err = capfd.readouterr().err
    assert "fatal:" not in err and "not a git repository" not in err, err[-2000:]


@needs_data
def test_quiet_prints_no_bar_of_any_library_in_any_process(tmp_path):
    """``--quiet`` with two rank processes writes nothing to stderr: no plan line and no progress bar of
    accval's, lm-eval's (building contexts) or transformers' (loading weights), in the parent or a rank."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    proc = subprocess.run([sys.executable, "-m", "accval.cli", "gsm8k", "--ab", "--mode", "dep8", "--ranks", "2",
                           "--data-dir", str(DATA), "--out", str(tmp_path / "run"), *TINY],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and "Verdict" in proc.stdout


@needs_data
def test_a_stop_during_the_last_batch_finishes_the_run_with_its_report(tmp_path, monkeypatch, capsys):
    """A stop waits for the batch in flight; when that batch is the last, every question is done: the run
    writes its report and exits with its verdict (it raised Interrupted instead, exit 143 with no report,
    and a --resume that redid nothing but the report)."""
    import signal

    from accval import stop
    from accval.gsm8k import lm

    add, commits = lm.CommitLog.add, []

    def add_then_stop_at_the_last(self, *args, **kwargs):
        add(self, *args, **kwargs)
        commits.append(1)
        if len(commits) == 2:  # the last of two one-question batches: as if SIGTERM came while it ran
            stop.request(signal.SIGTERM)

    monkeypatch.setattr(lm.CommitLog, "add", add_then_stop_at_the_last)
    rc, out = _ab(tmp_path, "late", "--mode", "dep8", "--ranks", "1", "--batch-size", "1")
    err = capsys.readouterr().err
    assert rc == 0 and len(commits) == 2, err
    assert json.loads((out / "report.json").read_text())["task"]["questions"] == 2
    assert "the stop (SIGTERM) came during the last batch: every question is done and the report is written" in err


def test_real_ranks_stopped_after_their_report_return_it(tmp_path, monkeypatch):
    """With real ranks the parent learns of a stop it forwarded only that the ranks ended: rank 0's report
    written in this session means the last batch had run, and the report is returned; no report means a
    stop at an earlier boundary, and the stop stands."""
    from accval import stop
    from accval.gsm8k import ab, config, rundir

    def ranks_that(write: bool):
        def spawn(world, fn, settings, out, *rest):
            if write:
                (Path(out) / "report.json").write_text('{"verdict": {"regression": false}}')
            stop.request()
            raise stop.Interrupted("stopped on request")
        return spawn

    settings = config.validate(config.Settings(mode="dep8", ranks=2, limit=2))
    for write in (True, False):
        out = tmp_path / f"wrote-{write}"
        monkeypatch.setattr(ab.ranks_mod, "spawn", ranks_that(write))
        stop.reset()
        with contextlib.ExitStack() as held:
            if write:
                assert ab._run_in_processes(settings, out, False, False, held, rundir.Session.start()) == {
                    "verdict": {"regression": False}}
            else:
                with pytest.raises(stop.Interrupted):
                    ab._run_in_processes(settings, out, False, False, held, rundir.Session.start())
    stop.reset()


@needs_data
def test_resume_continues_with_the_settings_the_run_began_with(tmp_path, capsys):
    """``accval gsm8k --ab --out DIR --resume`` continues a run whatever it began with: what the command
    line leaves out comes from run.json (it was refused: "limit 8 in the run, None now; batch_size 2 in the
    run, 32 now", after a plan line announcing all 1000 questions); what it gives must match the run's
    (checked holding the run's lock, so after the plan line)."""
    rc, out = _ab(tmp_path, "tep8", "--mode", "tep8", "--ranks", "1", "--seed", "3")  # random weights: either verdict
    assert rc in (0, 1)
    capsys.readouterr()
    assert main(["gsm8k", "--ab", "--out", str(out), "--resume", "--batch-size", "7"]) == 2
    err = capsys.readouterr().err
    assert "--batch-size 2 in the run, 7 now" in err, err
    assert main(["gsm8k", "--ab", "--out", str(out), "--resume"]) == rc
    err = capsys.readouterr().err
    assert err.startswith("accval gsm8k: 2 questions x 2 arms"), err
    rep = json.loads((out / "report.json").read_text())
    assert rep["mode"]["name"] == "tep8" and rep["settings"]["seed"] == 3 and rep["settings"]["data_dir"] == str(DATA)
    assert rep["arms"]["A"]["resumed_samples"] == 2


def test_an_injected_defect_the_run_never_exercises_is_said_to_be_unseen(tmp_path):
    """One prompt per forward keeps M under 1024, where scale-pad-btm changes nothing: the run read "no
    regression" and said nothing of it. Each call of arm B is compared with the clean chain's bits: the
    report says the defect changed none of the calls, so its verdict says nothing of the defect."""
    out = tmp_path / "unseen"  # the sentinel: prompts under 900 tokens
    rc = main(["gsm8k", "--ab", "--limit", "2", "--max-gen-toks", "4", "--batch-size", "2", "--prefill-tokens", "1",
               "--inject", "scale-pad-btm", "--ranks", "1", "--out", str(out), "--quiet"])
    rep = json.loads((out / "report.json").read_text())
    site = rep["arms"]["B"]["site"]
    assert rc == 0 and site["m_max"] < 1024 and site["inject_changed_calls"] == 0, site
    text = (out / "report.md").read_text()
    assert f"**The injected defect `scale-pad-btm` changed arm B's o_a_proj output at none of its {site['calls']} calls**" in text
    # what ran is still the mutant alone: the clean chain beside it records no provenance
    assert set(site["ran"].values()) == {site["calls"]}, site["ran"]
