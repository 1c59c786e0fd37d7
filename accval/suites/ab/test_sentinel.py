"""The sentinel's generator, task data, training sequences and shipped checkpoint."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accval.sentinel import data, problems

ANNOTATION = re.compile(r"<<([0-9+\-*/]+)=(-?\d+)>>(-?\d+)")


@settings(max_examples=300, deadline=None)
@given(split=st.sampled_from(["train", "test"]), seed=st.integers(0, 3), index=st.integers(0, 10**6))
def test_every_problem_is_gsm8k_shaped_and_right(split, seed, index):
    p = problems.make(split, seed, index)
    lines = p.answer.split("\n")
    assert lines[-1] == f"#### {p.value}"
    steps = [ANNOTATION.search(line) for line in lines[:-1]]
    assert len(steps) >= 2 and all(steps), p.answer
    for m in steps:
        expr, inside, after = m.groups()
        assert int(inside) == int(after) == eval(expr, {"__builtins__": {}}), m.group(0)  # noqa: S307
        assert 0 <= int(after) < problems.LIMIT
    assert int(steps[-1].group(3)) == p.value
    assert p.question.endswith("?") and "\n" not in p.question


def test_same_arguments_same_problem_and_splits_are_disjoint():
    assert problems.make("test", 0, 7) == problems.make("test", 0, 7)
    assert problems.make("test", 0, 7) != problems.make("train", 0, 7)
    train, test = problems.splits(3000, 500)
    assert not {p.question for p in train} & {p.question for p in test}
    assert len({p.question for p in test}) == 500
    assert {p.template for p in test} == set(problems.TEMPLATES)
    pool = data.training_pool(3000)
    assert not {p.question for p in pool} & {p.question for p in data.problems.splits(10, data.N_TEST)[1]}
    assert not {p.question for p in pool} & {p.question for p in train[:data.N_FEWSHOT_POOL]}


def test_bad_split_or_count_is_a_value_error():
    with pytest.raises(ValueError, match="split: expected 'train' or 'test'"):
        problems.make("validation", 0, 0)
    with pytest.raises(ValueError, match="n_test: expected a positive int"):
        problems.splits(10, 0)
    with pytest.raises(ValueError, match="n: expected a positive int"):
        data.training_pool(-5)


def test_written_splits_are_what_gsm8k_task_reads(tmp_path):
    from accval.gsm8k import task

    out = data.write_splits(tmp_path, n_test=20, n_train=30)
    rows = [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and set(rows[0]) == {"question", "answer"}
    assert task.data_files(out)  # the --data-dir contract
    first = (out / "train.jsonl").read_bytes()
    data.write_splits(tmp_path, n_test=20, n_train=30)
    assert (out / "train.jsonl").read_bytes() == first  # deterministic, rewritten identically


def test_training_sequence_is_the_tokenized_few_shot_text(tmp_path):
    """The training stream equals tokenizing lm-eval's few-shot text (so training sees exactly the
    tokens the evaluation prompt is made of), and the loss mask hides only the questions' text."""
    tok = data.build_tokenizer(tmp_path)
    pool = data.training_pool(60)
    enc = data.encode_examples(tok, pool)
    for i in range(0, 60, 6):
        ex = pool[i:i + 6]
        ids, mask = data.sequence(tok, ex, enc)
        text = "\n\n".join(data.example_text(p.question, p.answer) for p in ex) + "\n\nQuestion:"
        full = tok(text, add_special_tokens=False)["input_ids"]
        assert ids[0] == tok.bos_token_id and ids[1:] == full[:len(ids) - 1]
        assert len(mask) == len(ids)
        masked = tok.decode([t for t, m in zip(ids, mask) if not m][1:]).replace(" ", "")
        questions = "".join(p.question for p in ex).replace(" ", "")
        rest = iter(questions)
        assert all(c in rest for c in masked), "a masked token is not question text"
        # a question's first token carries the space after "Question:" and stays in the loss
        assert len(masked) >= len(questions) - 3 * len(ex)
    digits = tok("12345", add_special_tokens=False)["input_ids"]
    assert len(digits) == 5, "every digit is its own token"


def test_shipped_sentinel_answers_held_out_questions():
    """The checkpoint in the package is a trained model: greedy arm-A answers to held-out questions in
    the evaluation's own 5-shot format are mostly right (a random or corrupted checkpoint gets 0)."""
    import torch

    from accval.gsm8k.engine import Engine
    from accval.model import builtin
    from accval.site import Arm

    loaded = builtin.load("sentinel")
    assert loaded.model_id == "sentinel" and "trained" in loaded.description
    train, test = problems.splits(data.N_FEWSHOT_POOL, data.N_TEST)
    shots = "\n\n".join(data.example_text(p.question, p.answer) for p in train[:5]) + "\n\n"
    ctx = [shots + f"Question: {p.question}\nAnswer:" for p in test[:6]]
    engine = Engine(loaded, "dep8", "cpu", matmul="fp32")
    with torch.inference_mode():
        outs = engine.generate(Arm("A", "bf16-fallback"), ctx, ["Question:"], 128)
    right = sum(f"#### {p.value}" in o for p, o in zip(test[:6], outs))
    assert right >= 4, outs


def test_the_sentinel_takes_its_own_problems_and_refuses_other_data(tmp_path):
    """On gsm8k itself the sentinel scored 0 in both arms and a clean chain read as a regression (KL 0.007 over
    a ceiling of 5e-4): its problems are the only data its verdict holds for. Its own data passed as
    --data-dir (a copy anywhere) is the same run; any other is a usage error."""
    import shutil

    from accval.gsm8k import config

    own = data.write_splits()
    assert config.validate(config.Settings(model="sentinel", ranks=None)).data_dir == str(own)
    copy = tmp_path / "copy"
    shutil.copytree(own, copy)
    assert config.validate(config.Settings(model="sentinel", data_dir=str(copy), ranks=None)).data_dir == str(copy)
    (copy / "test.jsonl").write_text((copy / "test.jsonl").read_text().replace("?", "??", 1))
    with pytest.raises(ValueError, match=r"--model sentinel answers only its own problems .* pass it with --model builtin"):
        config.validate(config.Settings(model="sentinel", data_dir=str(copy), ranks=None))
    assert config.validate(config.Settings(model="builtin", data_dir=str(copy), ranks=None)).data_dir == str(copy)
