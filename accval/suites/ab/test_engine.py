"""The engine's generation: each rank's rows prefilled together, one left-padded batch cache,
teacher-forced logits.

Properties, on the built-in model (sliding window 128) with contexts shorter and longer than the
window, so the batch cache holds rows that fill it and rows padded inside it:

* every generated token is the greedy choice of one plain forward over the row's whole sequence
  (context + the tokens before it), up to summation-order ties;
* the teacher-forced logits over a continuation are that forward's logits at the same positions;
* each rank's prefill forwards hold its rows up to the token budget, so its M there is the sum of their
  tokens but the last (one row's at budget 1), and decode steps count only real tokens;
* decoding, a rank's M is its rows whose answer has not ended.

The first two hold at every budget: one row per forward (no padding) and all rows in one left-padded
forward.
"""

from __future__ import annotations

import pytest
import torch

from accval.testing import skip_unless_the_engine_runs

skip_unless_the_engine_runs()

from accval.gsm8k.engine import PREFILL_TOKENS, Engine  # noqa: E402
from accval.model import builtin  # noqa: E402
from accval.site import Arm, sharding  # noqa: E402

A = Arm("A", "bf16-fallback")
B = Arm("B", "fp8-chain", "torch")
TEXT = ("Question: Janet has 3 apples and buys 17 more. How many does she have?\n"
        "Answer: 3 + 17 = <<3+17=20>>20\n#### 20\n\n") * 8
#: token counts of the contexts: one token, inside the window, at its edges, and past it
LENGTHS = (1, 40, 127, 128, 129, 300)
NEW = 12
#: one prompt per rank and forward; and every rank's rows in one forward
BUDGETS = (1, PREFILL_TOKENS)
#: a token may differ from the plain forward's argmax only where that forward's top logits are this
#: close: the two computations differ in summation order (chunked attention, other M per rank),
#: which moves bf16 logits by a few ulps
TIE = 0.05


@pytest.fixture(scope="module")
def engine():
    return Engine(builtin.build_builtin(seed=0), "dep8", "cpu", matmul="fp32")


@pytest.fixture(params=BUDGETS, ids=[f"prefill{b}" for b in BUDGETS])
def budget(request, engine):
    """The engine's prefill budget for one test."""
    before = engine.prefill_tokens
    engine.prefill_tokens = request.param
    yield request.param
    engine.prefill_tokens = before


@pytest.fixture(scope="module")
def contexts(engine):
    ids = engine.tok.encode(TEXT, add_special_tokens=False)
    out = []
    for n in LENGTHS:  # the engine adds BOS: n - 1 text tokens
        text = engine.tok.decode(ids[:n - 1])
        while len(engine.encode(text)) > n:  # a decode/encode round trip may merge tokens differently
            text = text[:-1]
        out.append(text)
    assert sorted({len(engine.encode(c)) for c in out})[-1] > 128 > sorted({len(engine.encode(c)) for c in out})[1]
    return out


@torch.no_grad()
def _plain_logits(engine, arm, tokens: list[int], rank: int) -> torch.Tensor:
    """One row's logits from a single forward over its whole sequence, no cache, on DEP rank ``rank``."""
    engine.site.set_arm(arm)
    engine.site.set_row_ranks([rank])
    try:
        return engine.model(input_ids=torch.tensor([tokens]), use_cache=False).logits[0].float()
    finally:
        engine.site.set_row_ranks(None)


@pytest.mark.parametrize("arm", [A, B], ids=["A", "B"])
def test_every_generated_token_is_greedy_under_one_forward_of_the_whole_row(engine, contexts, arm, budget):
    out, width, _ = engine.generate_tokens(arm, contexts, [], NEW)
    exact = total = 0
    for b, ctx in enumerate(contexts):
        enc = engine.encode(ctx)
        new = out[b, width:].tolist()
        logits = _plain_logits(engine, arm, enc + new, b % 8)
        for k, tok in enumerate(new):
            row = logits[len(enc) - 1 + k]
            total += 1
            exact += int(row.argmax()) == tok
            assert float(row.max() - row[tok]) <= TIE, (
                f"row {b} ({len(enc)} context tokens), new token {k}: {tok} is {float(row.max() - row[tok]):.3f} "
                f"below the greedy choice {int(row.argmax())} of one forward over the whole row")
    assert exact >= 0.95 * total, f"only {exact}/{total} generated tokens are the plain forward's argmax"


def test_teacher_forced_logits_are_one_forwards_logits(engine, contexts, budget):
    conts = [" 3 + 17 = <<3+17=20>>20\n#### 20"] * len(contexts)
    texts, forced = engine.generate(B, contexts, ["Question:"], 2, continuations=conts)
    assert len(texts) == len(forced) == len(contexts)
    compared = 0
    for b, (ctx, cont) in enumerate(zip(contexts, conts)):
        enc, cenc = engine.encode(ctx), engine.encode(cont, bos=False)
        want = _plain_logits(engine, B, enc + cenc, b % 8)[len(enc) - 1: len(enc) - 1 + len(cenc)]
        assert forced[b].shape == want.shape == (len(cenc), engine.model.config.vocab_size)
        torch.testing.assert_close(forced[b], want, atol=TIE, rtol=0.02)
        # the argmax must agree wherever the plain forward's choice is clear; a random-weight model's
        # logits nearly tie at many positions, and summation order picks among ties (torch 2.11's CPU
        # kernels agreed at under 95% of all positions)
        top2 = want.topk(2, dim=-1).values
        clear = top2[:, 0] - top2[:, 1] > 2 * TIE
        agree = forced[b].argmax(-1) == want.argmax(-1)
        assert agree[clear].all(), f"row {b}: the argmax differs at a clear choice, positions {(~agree & clear).nonzero()}"
        compared += int(clear.sum())
    # not vacuous: every row has a few such positions (row 1 had 2 under torch 2.11 on the H200 box CPU)
    assert compared >= len(contexts), f"only {compared} positions with a clear choice over {len(contexts)} rows"


@pytest.mark.parametrize("budget,want", [
    (1, [39, 126, 127, 128, 299]),  # each rank's rows one at a time
    (200, [39, 126, 127, 128, 299]),  # rank 5's two rows do not fit together; rank 7's row is alone
    (300, [39, 253, 128, 299]),  # rank 5 prefills 126 + 127 tokens in one forward
], indirect=["budget"])
def test_each_ranks_prefill_m_is_its_rows_tokens_within_the_budget(engine, contexts, budget, want):
    """Rows on ranks 3, 3, 5, 5, 6, 7 of 1, 40, 127, 128, 129, 300 tokens: each rank's prefill calls
    have M = the tokens but the last of the rows it prefills together; decode counts real tokens."""
    engine.site.stats.pop("B", None)
    engine.generate(B, contexts, [], 3, row_ranks=[3, 3, 5, 5, 6, 7])
    m = engine.site.stats["B"].m_counts
    layers = engine.model.config.num_hidden_layers
    lens = [len(engine.encode(c)) for c in contexts]
    assert lens == list(LENGTHS)
    # decode: 3 steps, each on ranks 3, 5 (two rows each) and 6, 7 (one row each) in every layer
    decode = {2: 3 * 2 * layers, 1: 3 * 2 * layers}
    prefill = {n: c - decode.get(n, 0) for n, c in m.items() if c - decode.get(n, 0)}
    assert prefill == {n: layers * want.count(n) for n in want}
    assert engine.site.stats["B"].tokens == layers * (sum(n - 1 for n in lens) + 3 * len(lens))


@pytest.fixture(scope="module")
def tep_engine():
    return Engine(builtin.build_builtin(seed=0), "tep8", "cpu", matmul="fp32")


@pytest.mark.parametrize("mode", ["dep8", "tep8"])
def test_decode_m_is_each_ranks_rows_still_running(engine, tep_engine, contexts, mode):
    """Rows (DEP8: on ranks 3, 3, 3, 5, 5, 6) end at different steps (a stop string that some rows' answers
    complete): at each decoding forward a rank's M is its rows whose answer has not ended (TEP8: every rank's
    M is all such rows), as an engine drops finished requests from its batch; the rows still running decode
    as they did with no stop."""
    engine = engine if mode == "dep8" else tep_engine
    ranks, steps = ([3, 3, 3, 5, 5, 6] if mode == "dep8" else [0] * len(contexts)), 10
    free, width, _ = engine.generate_tokens(B, contexts, [], steps, row_ranks=ranks if mode == "dep8" else None)
    texts = engine.tok.batch_decode(free[:, width:], skip_special_tokens=True)
    # a stop string some answers complete and others never: two letters or digits
    pairs = [t[i:i + 2] for t in texts for i in range(len(t) - 1) if t[i:i + 2].isascii() and t[i:i + 2].isalnum()]
    stop = next(p for p in pairs if 0 < sum(p in t for t in texts) < len(texts))
    calls, decoding = [], []  # the site's M at each call inside model.generate (after the prefill)
    call, generate = engine.site._call, engine.model.generate

    def record(stats, o, *args):
        if decoding:
            calls.append(o.shape[0])
        return call(stats, o, *args)

    def decode(*args, **kwargs):
        decoding.append(1)
        try:
            return generate(*args, **kwargs)
        finally:
            decoding.clear()

    engine.site._call, engine.model.generate = record, decode
    try:
        out, width, _ = engine.generate_tokens(B, contexts, [stop], steps, row_ranks=ranks if mode == "dep8" else None)
    finally:
        engine.site._call = call
        del engine.model.generate
    new = out[:, width:]
    pad = engine.tok.pad_token_id
    # the step each row ended: generate pads a row from the step after its end
    ended = [next((k for k in range(new.shape[1]) if bool((new[b, k:] == pad).all())), new.shape[1])
             for b in range(len(contexts))]
    assert 0 < sum(t < new.shape[1] for t in ended) < len(contexts), (stop, texts, ended)
    layers = engine.model.config.num_hidden_layers
    want = []
    for step in range(1, new.shape[1] + 1):  # the forward that makes new token `step`
        running = [sum(1 for b, r in enumerate(ranks) if r == rank and ended[b] >= step) for rank in sorted(set(ranks))]
        want += [m for m in running if m] * layers * (engine.site.ranks if mode == "tep8" else 1)
    assert sorted(calls) == sorted(want), (ended, sorted(calls)[:20], sorted(want)[:20])
    for b, t in enumerate(ended):  # rows still running are decoded as without the stop string
        assert new[b, :t].tolist() == free[b, width:width + t].tolist(), f"row {b}"


def test_each_dep_rank_decodes_its_own_rows_in_a_batch_of_their_own(engine, contexts, tmp_path):
    """A DEP rank decodes its own requests: the A/B generates each logical rank's rows in a ``generate`` of
    their own, padded to the whole batch's width, so a row's tokens follow from its rank's rows alone,
    whichever process hosts the rank. With one batch of every rank's rows a CPU's matmuls took another path
    (fewer than 4 rows in a process's batch), and ``--ranks 4`` moved a sentinel answer that ``--ranks 1``
    and ``2`` gave."""
    from accval.gsm8k.lm import ArmLM, SampleStore

    lm = ArmLM(engine, B, SampleStore(tmp_path / "samples.jsonl"), progress=False)
    calls, generate = [], engine.generate

    def record(arm, batch, until, max_toks, **kwargs):
        calls.append((kwargs.get("row_ranks"), kwargs.get("pad_to"), len(batch)))
        return generate(arm, batch, until, max_toks, **kwargs)

    engine.generate = record
    try:
        texts = lm._generate(B, contexts * 2, [], 2)
    finally:
        del engine.generate
    assert len(texts) == 2 * len(contexts)
    width = max(len(engine.encode(c)) for c in contexts)
    assert sorted(ranks[0] for ranks, _, _ in calls) == sorted(set(sharding.row_ranks(2 * len(contexts), 8)))
    assert all(len(set(ranks)) == 1 and len(ranks) == n and pad == width for ranks, pad, n in calls), calls


def test_every_row_is_reported_done_once(engine, contexts):
    """``on_row_done`` (the A/B's progress) is called once per row, whether it stops early or runs to the end."""
    done = []
    engine.generate(A, contexts, ["Question:"], 4, on_row_done=lambda: done.append(1))
    assert len(done) == len(contexts)


def test_bad_generation_arguments_are_value_errors(engine, contexts):
    with pytest.raises(ValueError, match="continuations: expected 6"):
        engine.generate(A, contexts, [], 2, continuations=["x"])
    with pytest.raises(ValueError, match="row_ranks: expected 6"):
        engine.generate(A, contexts, [], 2, row_ranks=[0])
    with pytest.raises(ValueError, match="max_gen_toks"):
        engine.generate(A, contexts, [], 0)

