"""Every usage or environment error of the ``accval`` command is one line on stderr and exit 2 (1 means
"regression" only), found before any model loads or rank starts; ``accval report`` refuses files that
are not complete reports the same way. Cheap: nothing here loads a model."""

from __future__ import annotations

import dataclasses
import json
import shlex

import pytest

from accval import cli

EXIT_USAGE = 2


@pytest.fixture
def data_dir(tmp_path):
    """Train/test files that exist (the checks under test come before anything reads them)."""
    d = tmp_path / "data"
    d.mkdir()
    for split in ("train", "test"):
        (d / f"{split}.jsonl").write_text("")
    return d


# (arguments after ``accval``, a phrase the one-line error must contain). ``{data}`` and ``{out}``
# are filled in per test.
GSM8K = ["gsm8k", "--ab", "--model", "builtin", "--data-dir", "{data}", "--out", "{out}", "--quiet"]
BAD_FLAGS = [
    pytest.param([], "COMMAND", id="no-command"),
    pytest.param(["nonsense"], "invalid choice", id="unknown-command"),
    pytest.param(["--bogus"], "COMMAND", id="unknown-global-option"),
    pytest.param(["gsm8k"], "pass --ab", id="gsm8k-without-ab"),
    pytest.param(["gsm8k", "--ab", "--resume"], "--resume needs --out", id="resume-without-out"),
    pytest.param([*GSM8K, "--device", "bogus"], "--device: expected auto, cpu, cuda or cuda:N, got 'bogus'", id="device-bogus"),
    pytest.param([*GSM8K, "--device", "cuda:x"], "--device: expected", id="device-cuda-x"),
    pytest.param([*GSM8K, "--device", "CPU"], "--device: expected", id="device-upper"),
    pytest.param([*GSM8K, "--device", "cuda:99"], "cuda:99", id="device-absent-gpu"),
    pytest.param([*GSM8K, "--model", "/nonexistent"], "(no such directory)", id="model-nonexistent"),
    pytest.param([*GSM8K, "--model", "{data}"], "checkpoint directory with config.json", id="model-dir-without-config"),
    pytest.param([*GSM8K, "--mode", "dep4"], "invalid choice", id="mode-dep4"),
    pytest.param([*GSM8K, "--matmul", "fp16"], "invalid choice", id="matmul-fp16"),
    pytest.param([*GSM8K, "--limit", "1"], "at least 2 questions", id="limit-1"),
    pytest.param([*GSM8K, "--limit", "-5"], "at least 2 questions", id="limit-negative"),
    pytest.param([*GSM8K, "--limit", "ten"], "invalid int value", id="limit-text"),
    pytest.param([*GSM8K, "--num-fewshot", "-1"], "--num-fewshot: expected >= 0", id="fewshot-negative"),
    pytest.param([*GSM8K, "--batch-size", "0"], "--batch-size: expected at least 1 question, got 0", id="batch-0"),
    pytest.param([*GSM8K, "--max-gen-toks", "0"], "--max-gen-toks: expected at least 1, got 0", id="gen-toks-0"),
    pytest.param([*GSM8K, "--seed", "1.5"], "invalid int value", id="seed-float"),
    pytest.param([*GSM8K, "--ranks", "two"], "expected auto or a number of processes", id="ranks-text"),
    pytest.param([*GSM8K, "--ranks", "3"], "expected a divisor of 8", id="ranks-3"),
    pytest.param([*GSM8K, "--ranks", "0"], "expected a divisor of 8", id="ranks-0"),
    pytest.param([*GSM8K, "--device", "cpu", "--backend", "triton"], "need a GPU", id="backend-triton-on-cpu"),
    pytest.param([*GSM8K, "--backend", "bogus"], "--backend: expected auto or one of", id="backend-bogus"),
    pytest.param([*GSM8K, "--inject", "no-such-defect"], "catalog mutant id", id="inject-unknown"),
    pytest.param([*GSM8K, "--data-dir", "/nonexistent"], "expected train.jsonl and test.jsonl", id="data-dir-missing"),
    pytest.param([*GSM8K, "--data-dir", "{data}/test.jsonl"], "--data-dir: expected a directory holding train.jsonl and "
                 "test.jsonl, got the file", id="data-dir-a-file"),
    pytest.param([*GSM8K, "--producer", "nosuch_module_x:fn"], "--producer nosuch_module_x:fn: cannot import module",
                 id="producer-unimportable"),
    pytest.param([*GSM8K, "--consumer", "nosuch"], "--consumer nosuch: unknown consumer 'nosuch'", id="consumer-unknown"),
    pytest.param(["gsm8k", "--ab", "--data-dir", "{data}", "--out", "{out}"], "--model sentinel answers only its own "
                 "problems", id="sentinel-on-other-data"),
    pytest.param([*GSM8K, "--endpoint-a", "http://127.0.0.1:1"], "expected both or neither", id="one-endpoint"),
    pytest.param(["gsm8k", "--ab", "--out", "{out}", "--endpoint-a", "ftp://x", "--endpoint-b", "http://y"],
                 "expected an http(s) URL", id="endpoint-not-http"),
    pytest.param(["gsm8k", "--ab", "--out", "{out}", "--endpoint-a", "http://", "--endpoint-b", "http://y"],
                 "--endpoint-a: expected an http(s) URL with a host, got 'http://'", id="endpoint-no-host"),
    pytest.param(["gsm8k", "--ab", "--out", "{out}", "--endpoint-a", "http://127.0.0.1:99999", "--endpoint-b", "http://y"],
                 "--endpoint-a: expected a port from 0 to 65535 in the URL, got 'http://127.0.0.1:99999'",
                 id="endpoint-port-too-big"),
    pytest.param(["gsm8k", "--ab", "--out", "{out}", "--endpoint-a", "http://x", "--endpoint-b", "http://127.0.0.1:1 x"],
                 "--endpoint-b: expected an http(s) URL with a host, got 'http://127.0.0.1:1 x'", id="endpoint-space"),
    pytest.param(["serve", "--arm", "a", "--port", "-1"], "expected a TCP port 0..65535", id="port-negative"),
    pytest.param(["serve", "--arm", "a", "--port", "70000"], "expected a TCP port 0..65535", id="port-too-big"),
    pytest.param(["serve", "--arm", "a", "--port", "http"], "expected a TCP port", id="port-text"),
    pytest.param(["serve", "--arm", "c"], "invalid choice", id="serve-arm-c"),
    pytest.param(["serve"], "--arm", id="serve-no-arm"),
    pytest.param(["serve", "--arm", "a", "--max-requests", "0"], "expected a whole number >= 1", id="max-requests-0"),
    pytest.param(["serve", "--arm", "a", "--idle-timeout", "-1"], "expected a number of seconds > 0", id="idle-negative"),
    pytest.param(["serve", "--arm", "a", "--idle-timeout", "nan"], "expected a number of seconds > 0", id="idle-nan"),
    pytest.param(["serve", "--arm", "a", "--device", "bogus"], "--device: expected", id="serve-device-bogus"),
    pytest.param(["bench", "--m", "abc"], "expected comma-separated token counts >= 1, got 'abc'", id="bench-m-text"),
    pytest.param(["bench", "--m", "0,64"], "expected comma-separated token counts >= 1", id="bench-m-0"),
    pytest.param(["bench", "--m", ","], "expected comma-separated token counts >= 1", id="bench-m-empty"),
    pytest.param(["bench", "--shapes", "dep4"], "subset of dep8,tep8", id="bench-shape"),
    pytest.param(["bench", "--ops", "prod"], "subset of producer,consumer,chain", id="bench-op"),
    pytest.param(["mutants", "--jobs", "0"], "expected a whole number >= 1", id="mutants-jobs-0"),
    pytest.param(["mutants", "--jobs", "x"], "expected a whole number >= 1", id="mutants-jobs-text"),
    pytest.param(["report"], "paths", id="report-no-path"),
    pytest.param(["serve", "--arm", "A", "--inject", "scale-pad-btm"], "--inject: apply to the FP8 chain, which --arm b",
                 id="serve-arm-a-inject"),
    pytest.param(["serve", "--arm", "a", "--producer", "x:y", "--backend", "torch"],
                 "--backend, --producer: apply to the FP8 chain", id="serve-arm-a-producer"),
    pytest.param(["gsm8k", "--ab", "--model", "builtin", "--out", "{out}", "--data-dir", "{data}", "--inject", "scale-pad-btm", "--producer",
                  "accval.examples.torch_producer:inv_rope_fp8_quant"],
                 "--inject scale-pad-btm replaces the producer in arm B, and --producer", id="inject-and-producer"),
    pytest.param(["gsm8k", "--ab", "--out", "{out}", "--producer", ".rel:f"], "with an absolute module name",
                 id="producer-relative"),
]


GOOD = {"question": "Tom has 2 apples and buys 3. How many?", "answer": "2 + 3 = 5\n#### 5"}
# (test.jsonl's lines, a phrase of the error): records gsm8k's task would have read without a word, the
# missing field rendered as "None", a number answer as the target, a broken line as a datasets traceback
BAD_DATA = [
    pytest.param([GOOD, {"question": "q?"}], "line 2: expected a non-empty string 'answer', got nothing", id="no-answer"),
    pytest.param([GOOD, {"question": "q?", "answer": 18}], "line 2: expected a non-empty string 'answer', got int 18",
                 id="answer-number"),
    pytest.param([{"answer": "#### 1"}, GOOD], "line 1: expected a non-empty string 'question', got nothing", id="no-question"),
    pytest.param([GOOD, {"question": "q?", "answer": "5"}], "line 2: expected the answer to end with '#### <final answer>'",
                 id="answer-without-hashes"),
    pytest.param([GOOD, '{"question": "q?", "ans'], "line 2: expected a JSON object per line, got invalid JSON",
                 id="cut-line"),
    pytest.param([GOOD, [1, 2]], "line 2: expected a JSON object, got list", id="not-an-object"),
    pytest.param([GOOD], "has 1 question(s); the paired statistics need at least 2", id="one-question"),
    pytest.param([], "has 0 question(s)", id="empty"),
]


@pytest.mark.parametrize("lines,message", BAD_DATA)
def test_gsm8k_data_that_its_task_would_misread_is_refused_naming_the_line(lines, message, tmp_path, capsys):
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.jsonl").write_text("\n".join(json.dumps(GOOD) for _ in range(5)) + "\n")
    (d / "test.jsonl").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in lines))
    out = tmp_path / "run"
    rc = cli.main(["gsm8k", "--ab", "--model", "builtin", "--data-dir", str(d), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == EXIT_USAGE and len(err) == 1 and message in err[0] and str(d / "test.jsonl") in err[0], (rc, err)
    assert not out.exists()


@pytest.mark.parametrize("train", [0, 2])
def test_fewer_training_examples_than_the_shots_are_refused_before_the_model_loads(train, tmp_path, capsys):
    """--num-fewshot 5 samples 5 examples from train.jsonl: 2 failed after the model loaded ("Sample larger
    than population"), none with a rank's StopIteration; both left a run directory behind."""
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.jsonl").write_text("".join(json.dumps(GOOD) + "\n" for _ in range(train)))
    (d / "test.jsonl").write_text("".join(json.dumps(GOOD) + "\n" for _ in range(3)))
    out = tmp_path / "run"
    rc = cli.main(["gsm8k", "--ab", "--model", "builtin", "--data-dir", str(d), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == EXIT_USAGE and err == [f"accval: error: --data-dir: {d / 'train.jsonl'} has {train} example(s); "
                                        "--num-fewshot 5 takes 5 from it"], err
    assert not out.exists()
    if train:  # as many shots as there are examples: it runs (the built-in random model's verdict is its own)
        assert cli.main(["gsm8k", "--ab", "--model", "builtin", "--data-dir", str(d), "--out", str(out), "--quiet",
                         "--num-fewshot", str(train), "--limit", "2", "--max-gen-toks", "2", "--ranks", "1"]) in (0, 1)


def test_a_binary_data_file_is_refused(tmp_path, capsys):
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.jsonl").write_text(json.dumps(GOOD) + "\n")
    (d / "test.jsonl").write_bytes(bytes(range(256)) * 4)
    rc = cli.main(["gsm8k", "--ab", "--model", "builtin", "--data-dir", str(d), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE and "expected a JSON object per line" in err and "Traceback" not in err, err


@pytest.mark.parametrize("argv,message", BAD_FLAGS)
def test_bad_flags_are_one_line_and_exit_2(argv, message, tmp_path, data_dir, capsys):
    """Each bad command line: exit 2, stderr exactly one line naming what was expected, nothing made
    on disk (no stray run directory), nothing on stdout."""
    out = tmp_path / "run"
    argv = [a.format(data=data_dir, out=out) for a in argv]
    rc = cli.main(argv)
    got = capsys.readouterr()
    lines = got.err.strip().splitlines()
    assert rc == EXIT_USAGE, f"{argv=} {rc=} {got.err=}"
    assert len(lines) == 1 and message.format(data=data_dir) in lines[0], f"{argv=} {lines=}"
    assert "Traceback" not in got.err and got.out == "", f"{argv=} {got=}"
    assert not out.exists(), f"{argv=}: a run directory was made for a command that failed its checks"


def test_a_checkpoint_dir_of_another_model_is_refused_before_any_rank(tmp_path, data_dir, capsys):
    ckpt = tmp_path / "llama"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "llama"}))
    out = tmp_path / "run"
    rc = cli.main(["gsm8k", "--ab", "--model", str(ckpt), "--data-dir", str(data_dir), "--out", str(out), "--ranks", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == EXIT_USAGE and len(err) == 1 and "model_type 'llama'" in err[0], (rc, err)
    assert not out.exists()


def _report(tmp_path, name: str, content) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def _good_report() -> dict:
    """The smallest report :func:`accval.report.to_markdown` and ``compare`` print."""
    metrics = {"accuracy": 0.5, "stderr": 0.1}
    paired = {"delta": 0.0, "se": 0.0, "ci95": [0.0, 0.0], "b_only": 0, "a_only": 0, "mcnemar_p": 1.0,
              "mde_paired": 0.0, "mde_independent": 0.1}
    arm = {"implementation": "x", "site": None, "metrics": {"strict-match": metrics, "flexible-extract": metrics}}
    return {"schema": "accval.gsm8k.ab/1", "created": "2026-01-01T00:00:00", "versions": {}, "settings": {},
            "device": {"name": "cpu"},
            "task": {"num_fewshot": 5, "questions": 2, "limit": 2, "config_sha256": "0" * 64, "max_gen_toks": 4,
                     "data": {"source": "json"}},
            "model": {"id": "m", "description": "d", "weights_sha256": "0" * 64},
            "mode": {"name": "dep8", "execution": "e", "sharding": "dep", "ranks": 8},
            "arms": {"A": arm, "B": arm}, "paired": {"strict-match": paired, "flexible-extract": paired},
            "agreement": {"top1": None, "kl": None, "identical_generations": 1.0, "tokens": 0},
            "thresholds": {"top1_agreement_floor": 0.9, "kl_ceiling": 0.001},
            "verdict": {"regression": False, "reasons": []}, "elapsed_s": 1.0}


def _without(path: str) -> dict:
    rep = _good_report()
    *parents, last = path.split(".")
    node = rep
    for key in parents:
        node = node[key]
    del node[last]
    return rep


def _with(path: str, value) -> dict:
    rep = _good_report()
    *parents, last = path.split(".")
    node = rep
    for key in parents:
        node = node[key]
    node[last] = value
    return rep


BAD_REPORTS = [
    pytest.param([1, 2], "holds a JSON list", id="json-list"),
    pytest.param('"just a string"', "holds a JSON str", id="json-string"),
    pytest.param("null", "holds a JSON NoneType", id="json-null"),
    pytest.param(b"\x7fELF\x02\x01\x01\x00\xff\xfe", "is not a text file", id="binary"),
    pytest.param("{not json", "is not JSON", id="not-json"),
    pytest.param("", "is not JSON", id="empty"),
    pytest.param({"schema": "other/1"}, "has schema 'other/1'", id="other-schema"),
    pytest.param({"schema": "accval.gsm8k.ab/1"}, "created is missing; versions is missing", id="schema-only"),
    pytest.param(_without("task"), "task is missing", id="no-task"),
    pytest.param(_without("verdict.regression"), "verdict.regression is missing", id="no-verdict-regression"),
    pytest.param(_without("arms.B"), "arms.B is missing", id="no-arm-b"),
    pytest.param(_with("task", "x"), "task: expected an object, got str", id="task-string"),
    pytest.param(_with("verdict.regression", "no"), "verdict.regression: expected bool, got str", id="regression-string"),
    pytest.param(_with("task.questions", True), "task.questions: expected int, got bool", id="questions-bool"),
    pytest.param(_with("paired.strict-match.ci95", [0.0]), "ci95: expected two numbers", id="ci-one-number"),
    pytest.param(_with("paired.strict-match.ci95", [0.1, -0.1]), "ci95: expected [low, high] with low <= high",
                 id="ci-reversed"),
    pytest.param(_with("paired.strict-match.ci95", [float("nan"), 0.1]), "ci95: expected [low, high] with low <= high",
                 id="ci-nan"),
    pytest.param(_with("arms.A.metrics.strict-match.accuracy", "50%"), "accuracy: expected int/float, got str",
                 id="accuracy-string"),
    pytest.param(_with("arms.A.site", {"calls": 1}), "arms.A.site.m_min is missing", id="site-incomplete"),
    pytest.param(_with("created", 20260101), "created: expected str, got int", id="created-int"),
    pytest.param(_with("arms.A.metrics.strict-match.accuracy", 7.5),
                 "arms.A.metrics.strict-match.accuracy: expected a number in [0, 1], got 7.5", id="accuracy-7.5"),
    pytest.param(_with("agreement.top1", float("nan")), "agreement.top1: expected a number in [0, 1], got nan",
                 id="top1-nan"),
    pytest.param(_with("verdict.reasons", [1, 2]), "verdict.reasons: expected a list of text, got [1, 2]",
                 id="reasons-numbers"),
]


@pytest.mark.parametrize("content,message", BAD_REPORTS)
def test_bad_report_files_are_one_line_and_exit_2(content, message, tmp_path, capsys):
    path = _report(tmp_path, "report.json", content)
    for argv in (["report", path], ["report", "--fail-on-regression", path, path]):
        rc = cli.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == EXIT_USAGE and len(err) == 1 and message in err[0], f"{argv=} {rc=} {err=}"


def test_the_minimal_report_prints_and_compares(tmp_path, capsys):
    """The report the bad cases start from is itself accepted (so each bad case fails for its reason)."""
    path = _report(tmp_path, "report.json", _good_report())
    assert cli.main(["report", path]) == 0
    assert cli.main(["report", path, path]) == 0
    assert "no regression" in capsys.readouterr().out


def test_a_paired_mde_without_discordant_questions_reads_na(tmp_path, capsys):
    """No discordant question: the paired variance is estimated as 0, and so was the MDE ("0.00", a run
    that would see any difference); it reads "n/a" until one question differs."""
    rep = _good_report()
    assert cli.main(["report", _report(tmp_path, "report.json", rep)]) == 0
    assert "| 0 / 0 | 1 | n/a / 10.00 |" in capsys.readouterr().out
    rep["paired"]["strict-match"].update(b_only=1, mde_paired=0.05)
    assert cli.main(["report", _report(tmp_path, "discordant.json", rep)]) == 0
    assert "| 1 / 0 | 1 | 5.00 / 10.00 |" in capsys.readouterr().out
    # arm A right (or wrong) on every question: its variance, and the independent MDE, are estimated as 0
    rep["paired"]["strict-match"].update(b_only=0, mde_paired=0.0, mde_independent=0.0)
    assert cli.main(["report", _report(tmp_path, "all-right.json", rep)]) == 0
    assert "| 0 / 0 | 1 | n/a / n/a |" in capsys.readouterr().out


def test_a_paired_interval_past_the_range_of_a_difference_prints_clipped(tmp_path, capsys):
    """A report written before the interval was clipped (7 of 8 questions A-only: [-1.12, -0.63]) prints
    [-100.00, -63.00] points, not -112 (no two accuracies differ by more than 100)."""
    rep = _good_report()
    rep["paired"]["strict-match"].update(delta=-0.875, se=0.125, ci95=[-1.12, -0.63], a_only=7)
    assert cli.main(["report", _report(tmp_path, "report.json", rep)]) == 0
    out = capsys.readouterr().out
    assert "| -87.50 | 12.50 | [-100.00, -63.00] |" in out and "-112" not in out, out


def test_help_shows_defaults_examples_and_the_required_ab(capsys):
    """``--help`` of every command: a description with examples; defaults shown; --ab said to be
    required; --limit's total right for both question sets."""
    for command in ("mutants", "bench", "gsm8k", "serve", "report"):
        assert cli.main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "examples:" in text and f"accval {command}" in text.split("examples:")[1], command
    assert cli.main(["gsm8k", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "required: run both arms" in text
    assert "(default: 256)" in text and "(default: dep8)" in text and "(default: 32)" in text
    assert "1000 for the sentinel's problems, 1319 for gsm8k" in text
    assert cli.main(["serve", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 8000)" in text and "(default: 600.0)" in text


def test_every_option_has_help():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        for action in p._actions:
            assert action.help, f"accval {name} {action.option_strings or action.dest}: no help text"


@pytest.mark.parametrize("argv,want", [
    (["gsm8k", "--ab", "--limit", "64"], "accval gsm8k --ab --limit 64 --out runs/x --resume"),
    (["gsm8k", "--ab", "--out", "runs/x"], "accval gsm8k --ab --out runs/x --resume"),
    (["gsm8k", "--ab", "--out=runs/x", "--resume"], "accval gsm8k --ab --out=runs/x --resume"),
    (["gsm8k", "--ab", "--data-dir", "my data"], "accval gsm8k --ab --data-dir 'my data' --out runs/x --resume"),
])
def test_resume_command_repeats_the_options_with_out_and_resume(argv, want):
    from pathlib import Path

    assert cli.resume_command(argv, Path("runs/x")) == want
    assert shlex.split(want)[1:3] == ["gsm8k", "--ab"]


def test_the_ab_says_what_it_will_run_first(tmp_path):
    """The A/B's first line: questions x arms, mode, processes, device, model, prefill budget and run
    directory (the question count read from the data, capped by --limit)."""
    from accval.gsm8k import config

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("")
    (data / "test.jsonl").write_text("{}\n" * 7)
    s = config.Settings(mode="tep8", model="builtin", data_dir=str(data), device="cpu", backend="torch", matmul="fp32",
                    ranks=2)
    assert cli._plan(s, tmp_path / "run") == (
        "accval gsm8k: 7 questions x 2 arms (A bf16-fallback, B fp8-chain[torch]); 8 TEP ranks in 2 process(es), "
        f"cpu, model builtin, matmul fp32, prefill up to 8192 tokens per rank; run directory {tmp_path / 'run'}")
    assert "prefill up to 1 tokens" not in cli._plan(dataclasses.replace(s, prefill_tokens=1), tmp_path)
    assert "prefill one prompt at a time per rank" in cli._plan(dataclasses.replace(s, prefill_tokens=1), tmp_path)
    assert cli._plan(config.Settings(data_dir=str(data), limit=3, ranks=None), tmp_path).startswith("accval gsm8k: 3 questions")
    # a --limit past the data is said, not quietly lowered
    assert cli._plan(config.Settings(data_dir=str(data), limit=5000, ranks=None), tmp_path).startswith(
        "accval gsm8k: 7 (all of them; --limit 5000 asked for more) questions")


def test_the_top_level_help_says_where_to_start_and_a_commands_error_points_at_its_help(capsys):
    """An unknown option of a command said "see accval --help", whose text does not list it; there was no
    --version and no first command to run."""
    assert cli.main(["gsm8k", "--ab", "--bogus"]) == EXIT_USAGE
    assert capsys.readouterr().err.strip() == ("accval gsm8k: error: unrecognized arguments: --bogus "
                                               "(see accval gsm8k --help)")
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("accval ")
    assert cli.main(["--help"]) == 0
    assert "start here: accval gsm8k --ab --limit 50" in " ".join(capsys.readouterr().out.split())


def test_lm_evals_num_fewshot_warning_is_said_once_and_never_for_no_change(caplog):
    """lm-eval warns at each ``simple_evaluate`` (two per run, in each process) even when the value
    does not change; the A/B keeps one warning per real change, none for "from 5 to 5", and none in the
    processes whose rank 0 says it."""
    import logging

    from accval.gsm8k import ab

    ab._quiet_num_fewshot_warning()
    ab._quiet_num_fewshot_warning()  # idempotent: one filter
    log = logging.getLogger("lm_eval.evaluator")
    msg = "Overwriting default num_fewshot of %s from %s to %s"
    with caplog.at_level(logging.WARNING, logger="lm_eval.evaluator"):
        for args in (("gsm8k", 5, 5), ("gsm8k", 5, 5), ("gsm8k", 5, 3), ("gsm8k", 5, 3), ("gsm8k", 5, 8)):
            log.warning(msg, *args)
        log.warning("something else")
    got = [r.getMessage() for r in caplog.records if r.name == "lm_eval.evaluator"]
    assert got == ["Overwriting default num_fewshot of gsm8k from 5 to 3",
                   "Overwriting default num_fewshot of gsm8k from 5 to 8", "something else"], got
    caplog.clear()
    ab._quiet_num_fewshot_warning(speak=False)  # a rank other than 0: rank 0 says it
    try:
        with caplog.at_level(logging.WARNING, logger="lm_eval.evaluator"):
            log.warning(msg, "gsm8k", 5, 2)
    finally:
        ab._quiet_num_fewshot_warning()
    assert not [r for r in caplog.records if r.name == "lm_eval.evaluator"]


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_and_keeps_the_exit_code(where, capsys):
    """``--debug`` before or after the command: the traceback, then the same one line and exit 2 (a bare
    re-raise exited 1, which reads as "regression")."""
    argv = ["gsm8k", "--ab", "--device", "tpu"]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().splitlines()[-1].startswith("accval: error: --device")


def test_a_run_directory_that_cannot_be_made_is_named_without_blaming_the_network(tmp_path, monkeypatch, capsys):
    """ACCVAL_RUNS_DIR naming a file: the error named "--out", which was not given, and every OSError got
    "(no network? --data-dir ...)" appended, the sentinel's own data read from disk too."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ACCVAL_RUNS_DIR", str(blocker))
    rc = cli.main(["gsm8k", "--ab", "--limit", "2", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == EXIT_USAGE and len(err) == 1, (rc, err)
    assert err[0].startswith(f"accval: error: run directory {blocker}/gsm8k/") and "choose another with --out" in err[0]
    assert "no network" not in err[0] and "--out " + str(blocker) not in err[0], err


def test_report_of_a_run_without_one_says_how_to_continue_it(tmp_path, capsys):
    """``accval report DIR`` on a run stopped before its report: one line saying so and the command that
    continues it (it said only "expected a report.json or a run directory holding one")."""
    run = tmp_path / "stopped run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    assert cli.main(["report", str(run)]) == EXIT_USAGE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "has no report yet" in lines[0], lines
    assert lines[0].endswith(f"accval gsm8k --ab --out '{run}' --resume"), lines
