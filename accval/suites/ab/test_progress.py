"""The A/B tells you how far it is: one bar counting answers (questions x arms) as each answer ends,
and one ETA line once the first batch is done; ``--quiet`` shows neither."""

from __future__ import annotations

import re

import pytest
import torch

from accval.testing import skip_unless_the_engine_runs

pytest.importorskip("lm_eval")
skip_unless_the_engine_runs()

from accval.gsm8k.engine import EndedRows  # noqa: E402
from accval.gsm8k.lm import Progress  # noqa: E402
from accval.model.builtin import load_tokenizer  # noqa: E402

from .test_task import DATA, needs_data  # noqa: E402


def _ids(tok, *rows: str) -> torch.Tensor:
    enc = [tok.encode(r, add_special_tokens=False) for r in rows]
    width = max(map(len, enc))
    return torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in enc])


def test_each_row_is_done_once_at_the_step_that_ends_it_and_the_rest_at_the_finish():
    """A row ends at the step its end-of-text token or a stop string completes (transformers' own rules),
    is done once however many steps follow, and rows still running are done at the finish."""
    tok = load_tokenizer()
    done = []
    rows = EndedRows(3, tok.eos_token_id, ["Question:"], tok, 0, on_done=lambda: done.append(1))
    eos = torch.tensor([[tok.eos_token_id]] * 3)
    rows.step(_ids(tok, "so 4", "so 4", "so 4"), None)
    assert not done and rows.done.tolist() == [False] * 3
    rows.step(torch.cat([_ids(tok, "so 4", "so 4", "so 4"), eos[:, :1] * torch.tensor([[1], [0], [0]])], 1), None)
    assert rows.done.tolist() == [True, False, False] and len(done) == 1
    rows.step(_ids(tok, "so 4", "so 4\n\nQuestion:", "so 4 and"), None)
    assert rows.done.tolist() == [True, True, False] and len(done) == 2 and rows.ended_at == [2, 3, None]
    rows.finish()
    assert len(done) == 3


def test_a_stop_string_counts_in_the_new_tokens_only():
    """A stop string that straddles the prompt's end ends nothing (lm-eval and OpenAI-style servers match
    stop strings in the generated text; transformers' own rule on the whole sequence ended such an answer
    after its first tokens); the same string inside the new tokens ends the row."""
    tok = load_tokenizer()
    prompt = tok.encode("Question: 2+2?\nAnswer:", add_special_tokens=False)
    rows = EndedRows(2, tok.eos_token_id, ["r: O", "Olivia saves"], tok, len(prompt))
    rows.step(torch.tensor([prompt + tok.encode(" O", add_special_tokens=False)] * 2), None)  # "...Answer: O"
    assert rows.done.tolist() == [False, False]
    new = [tok.encode(" Olivia", add_special_tokens=False), tok.encode(" Olivia saves", add_special_tokens=False)]
    width = max(map(len, new))
    ids = [prompt + [tok.pad_token_id] * (width - len(n)) + n for n in new]
    rows.step(torch.tensor(ids), None)
    assert rows.done.tolist() == [False, True]


def test_a_row_generate_went_on_decoding_is_an_error():
    """A row accval left out of M must be one generate padded from the next step; otherwise decoding it from a
    zeroed projection would be silent."""
    tok = load_tokenizer()
    rows = EndedRows(2, tok.eos_token_id, [], tok, 0)
    rows.step(torch.tensor([[5, tok.eos_token_id], [5, 6]]), None)
    pad = tok.pad_token_id
    rows.check(torch.tensor([[tok.eos_token_id, pad, pad], [6, 7, 8]]), pad)
    with pytest.raises(RuntimeError, match="row 0: accval recorded it ended at step 1"):
        rows.check(torch.tensor([[tok.eos_token_id, 9, pad], [6, 7, 8]]), pad)


class _Clock:
    def __init__(self, *times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


def test_rank_0_scales_its_rows_to_the_batch_and_says_the_eta_once(capsys):
    """With real DEP ranks, rank 0's finished rows count for the whole batch (rows / its rows each), never
    past it; the gathered batch counts exactly; the first commit with questions left says the ETA from
    the pace so far (20 s for 2 of 6 questions: 40 s left), later commits say nothing more."""
    p = Progress(6, 2, "arm A+B (x and y)", show=True, scaled_over=2, clock=_Clock(0.0, 20.0, 40.0, 60.0))
    p.begin(2, 1)  # arm A's batch of 2 rows, 1 of them here
    p.row_done()
    assert p.bar.n == 2
    p.row_done()  # more of its rows than it has: never past the batch
    assert p.bar.n == 2
    p.end()
    p.begin(2, 0)  # arm B: none of the rows here; the gathered batch counts
    p.end()
    assert p.bar.n == 4
    p.questions_done(2)
    p.questions_done(4)
    p.questions_done(6)
    assert p.bar.n == 12
    p.close()
    # without the cursor moves tqdm adds where another bar is open in the process (an earlier test's, under xdist)
    err = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", capsys.readouterr().err)
    etas = [line for line in re.split(r"[\r\n]", err) if "ETA" in line]
    assert etas == ["accval gsm8k: ETA ~0m 40s for 6 questions x 2 arms (from the pace of this session's first 2, whose "
                    "prompts are the longest)"], err
    assert "[rank 0's rows, scaled to 2 processes]" in err and "/12 [" in err


def test_quiet_progress_says_nothing(capsys):
    p = Progress(6, 2, "arm A+B", show=False, clock=_Clock(0.0, 1.0))
    p.begin(2, 2)
    p.row_done()
    p.end()
    p.questions_done(1)
    p.close()
    assert capsys.readouterr().err == ""


@needs_data
def test_the_ab_says_its_eta_once_and_counts_questions_times_arms(tmp_path, capsys, caplog):
    """``accval gsm8k --ab`` without --quiet, on the built-in model: one ETA line naming the questions and
    both arms, one bar whose total is questions x 2 arms and that ends full, and lm-eval's num_fewshot
    warning at most once (the run changes it, from 5 to 0)."""
    from accval.cli import main

    argv = ["gsm8k", "--ab", "--data-dir", str(DATA), "--out", str(tmp_path / "run"), "--model", "builtin",
            "--limit", "2", "--batch-size", "1", "--max-gen-toks", "1", "--num-fewshot", "0", "--ranks", "1"]
    with caplog.at_level("WARNING", logger="lm_eval.evaluator"):
        assert main(argv) == 0
    err = capsys.readouterr().err
    lines = re.split(r"[\r\n]", err)
    etas = [line for line in lines if "ETA ~" in line]
    assert len(etas) == 1 and "for 2 questions x 2 arms" in etas[0], etas
    totals = {m.group(1) for line in lines if line.startswith("arm A+B")
              for m in [re.search(r"\d+/(\d+) \[", line)] if m}
    assert totals == {"4"}, totals
    assert any(line.startswith("arm A+B") and "4/4 [" in line for line in lines), err
    assert not any(line.startswith("arm B ") for line in lines), "arm B's scoring pass, with nothing to run, draws no bar"
    warned = [r.getMessage() for r in caplog.records if "num_fewshot" in r.getMessage()]
    assert len(warned) <= 1, warned


def test_quiet_ab_in_one_process_prints_nothing_but_the_report(tmp_path, capsys):
    """``--quiet`` with the run in this process (``--ranks 1``, a GPU's default): no bar of transformers'
    weight loading or of lm-eval's either. tqdm had read ``TQDM_DISABLE`` at import, before the option
    took effect, so their bars came through; with rank processes they did not."""
    from accval.cli import main

    argv = ["gsm8k", "--ab", "--out", str(tmp_path / "run"), "--model", "sentinel", "--limit", "2", "--batch-size", "1",
            "--max-gen-toks", "8", "--num-fewshot", "1", "--ranks", "1", "--quiet"]
    assert main(argv) in (0, 1)
    got = capsys.readouterr()
    assert got.err == "", got.err[-2000:]
    assert got.out.splitlines()[-1] == f"report: {tmp_path / 'run'}/report.md"
