"""The DEP/TEP sharding rules of the ``o_a_proj`` site (:mod:`accval.site.sharding`): every row, group,
head and ``o_b_proj`` column belongs to exactly one logical rank, and every logical rank to exactly one
real process, for every process count the A/B accepts."""

from __future__ import annotations

import pytest

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
