"""``accval gsm8k --ab`` and ``accval report`` end to end on the CPU (tiny limits)."""

from __future__ import annotations

import json

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
    from accval.gsm8k import ab

    assert rep["mode"]["processes"] == (ab.auto_ranks("dep8", "cpu") or 1)  # --ranks auto, the default
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
    assert after["paired"] == before["paired"] and after["agreement"] == before["agreement"]
    assert after["device"]["sessions"] == [after["device"]["name"]] * 2  # both invocations recorded
    assert "earlier invocations had finished 2 questions of arm A, 2 questions of arm B" in (out / "report.md").read_text()
    assert main(["gsm8k", "--ab", "--data-dir", str(DATA), "--out", str(out), "--mode", "tep8", "--resume", *TINY]) == 2
    assert "settings differ" in capsys.readouterr().err


@needs_data
def test_injected_scale_pad_btm_is_a_regression(tmp_path, clean_run):
    rc, out = _ab(tmp_path, "inject", "--mode", "dep8", "--inject", "scale-pad-btm")
    assert rc == 1
    rep = json.loads((out / "report.json").read_text())
    assert rep["verdict"]["regression"] and rep["arms"]["B"]["inject"] == "scale-pad-btm"
    assert any("contract" in r for r in rep["verdict"]["reasons"]), rep["verdict"]
    assert main(["report", str(clean_run[1]), str(out)]) == 0
    assert main(["report", "--fail-on-regression", str(clean_run[1]), str(out)]) == 1


@needs_data
@pytest.mark.parametrize("args,message", [
    (["--data-dir", "/nonexistent"], "expected train.jsonl and test.jsonl"),
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
    from accval.gsm8k import ab

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    if world:
        monkeypatch.setenv("WORLD_SIZE", world)
    else:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert ab.auto_ranks(mode, device) == want
    if device == "cpu" and not world:
        assert ab.validate(ab.Settings(mode=mode, model="builtin", device="cpu", ranks="auto")).ranks == want


def test_settings_reject_an_unknown_matmul():
    from accval.gsm8k import ab

    with pytest.raises(ValueError, match=r"--matmul: expected auto or one of \('model', 'fp32'\), got 'fp16'"):
        ab.validate(ab.Settings(matmul="fp16", device="cpu"))


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
