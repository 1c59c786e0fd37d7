"""The DEP/TEP sharding rules of the ``o_a_proj`` site (:mod:`accval.site.sharding`): every row, group,
head and ``o_b_proj`` column belongs to exactly one logical rank, and every logical rank to exactly one
real process, for every process count the A/B accepts; a batch's prefill gives each rank forwards of its
own rows within the token budget."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accval.gsm8k.ranks import LOGICAL_RANKS
from accval.site import MODES, sharding

WORLDS = (1, 2, 4, 8)


@pytest.mark.parametrize("kind", ["dep", "tep"])
@pytest.mark.parametrize("world", WORLDS)
def test_every_logical_rank_has_one_process(kind, world):
    hosted = [sharding.hosted_ranks(kind, LOGICAL_RANKS, world, p) for p in range(world)]
    flat = sorted(r for h in hosted for r in h)
    assert flat == list(range(LOGICAL_RANKS)), f"kind={kind} world={world}: processes host {hosted}"
    assert all(len(h) == LOGICAL_RANKS // world for h in hosted), f"kind={kind} world={world}: {hosted}"
    if kind == "tep":  # a process's heads are one slice: its ranks are contiguous
        assert all(h == list(range(h[0], h[-1] + 1)) for h in hosted), f"world={world}: {hosted}"


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("n_rows", [1, 7, 8, 13])
def test_dep_rows_go_to_the_process_hosting_their_rank(world, n_rows):
    rows = [sharding.process_rows(n_rows, LOGICAL_RANKS, world, p) for p in range(world)]
    assert sorted(b for r in rows for b in r) == list(range(n_rows)), f"world={world} n_rows={n_rows}: {rows}"
    for p, mine in enumerate(rows):
        hosted = sharding.hosted_ranks("dep", LOGICAL_RANKS, world, p)
        ranks = sharding.row_ranks(mine, LOGICAL_RANKS)
        assert all(r in hosted for r in ranks), f"world={world} process {p}: rows {mine} have ranks {ranks}"
        assert mine == [b for b in range(n_rows) if b % world == p], f"world={world} process {p}: {mine}"


def test_row_ranks_cycle_over_the_ranks():
    assert sharding.row_ranks(10, 8) == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]
    assert sharding.row_ranks([3, 9, 16], 8) == [3, 1, 0]
    assert sharding.row_ranks(3, MODES["single"][1]) == [0, 0, 0]


@pytest.mark.parametrize("n_groups,hpg,lora", [(8, 2, 16), (16, 4, 32)])
def test_tep_slices_partition_groups_heads_and_columns(n_groups, hpg, lora):
    ranks = MODES["tep8"][1]
    for fn, total, args in ((sharding.tep_groups, n_groups, ()), (sharding.tep_heads, n_groups * hpg, (hpg,)),
                            (sharding.tep_lora_columns, n_groups * lora, (lora,))):
        covered = [i for r in range(ranks) for i in range(total)[fn(r, n_groups, ranks, *args)]]
        assert covered == list(range(total)), f"{fn.__name__} n_groups={n_groups}: ranks cover {covered}"


@pytest.mark.parametrize("args,match", [
    (("pp", 8, 2, 0), "kind: expected 'dep' or 'tep'"),
    (("dep", 8, 3, 0), "8 logical ranks do not split over 3 processes"),
    (("tep", 8, 2, 2), "rank: expected 0 <= rank < 2"),
])
def test_bad_hosting_requests_are_clear_errors(args, match):
    with pytest.raises(ValueError, match=match):
        sharding.hosted_ranks(*args)


def test_tep_needs_groups_that_split():
    with pytest.raises(ValueError, match="o_groups=12 do not split over 8 TEP ranks"):
        sharding.check_tep(12, 8, "tep8")


@given(rows=st.lists(st.tuples(st.integers(0, 1500), st.integers(0, 7)), max_size=40),
       budget=st.integers(1, 5000))
def test_prefill_gives_each_rank_its_rows_in_order_within_the_budget(rows, budget):
    """Every row with tokens is in exactly one forward; a forward holds one rank's rows; a rank's rows keep
    their order over its forwards; a forward holds at most ``budget`` tokens unless it holds one row; and
    it is full: the rank's next row would not have fit."""
    lengths, ranks = [n for n, _ in rows], [r for _, r in rows]
    steps = sharding.prefill_steps(lengths, ranks, budget)
    assert sorted(b for s in steps for b in s) == [b for b, n in enumerate(lengths) if n]
    for s in steps:
        assert s and len({ranks[b] for b in s}) == 1, f"a forward of several ranks' rows: {s}"
    for r in set(ranks):
        mine = [s for s in steps if ranks[s[0]] == r]
        assert [b for s in mine for b in s] == [b for b, n in enumerate(lengths) if n and ranks[b] == r]
        for s, nxt in zip(mine, mine[1:] + [None]):
            tokens = sum(lengths[b] for b in s)
            assert tokens <= budget or len(s) == 1, f"rank {r}: {tokens} tokens over the budget {budget} in {s}"
            if nxt is not None:
                assert tokens + lengths[nxt[0]] > budget, f"rank {r}: row {nxt[0]} fit in the forward before"


def test_prefill_examples():
    # DEP: ranks 3, 3, 5, 5, 6, 7 with 0, 39, 126, 127, 128, 299 tokens
    lengths, ranks = [0, 39, 126, 127, 128, 299], [3, 3, 5, 5, 6, 7]
    assert sharding.prefill_steps(lengths, ranks, 1) == [[1], [2], [4], [5], [3]]
    assert sharding.prefill_steps(lengths, ranks, 200) == [[1], [2], [4], [5], [3]]
    assert sharding.prefill_steps(lengths, ranks, 253) == [[1], [2, 3], [4], [5]]
    # TEP: one rank for every row
    assert sharding.prefill_steps(lengths, [0] * 6, 300) == [[1, 2, 3], [4], [5]]
    assert sharding.prefill_steps([], [], 1) == []


@pytest.mark.parametrize("args,match", [
    (([1], [0], 0), "expected a whole number of tokens >= 1, got 0"),
    (([1], [0], 2.5), "expected a whole number of tokens >= 1, got 2.5"),
    (([1], [0], True), "expected a whole number of tokens >= 1, got True"),
    (([1, 2], [0], 8), "2 row lengths but 1 row ranks"),
    (([-1], [0], 8), "row lengths must be >= 0"),
])
def test_bad_prefill_requests_are_clear_errors(args, match):
    with pytest.raises(ValueError, match=match):
        sharding.prefill_steps(*args)
