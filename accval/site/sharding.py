"""The DEP/TEP sharding rules of the ``o_a_proj`` site, in one place.

The A/B emulates the engines' sharding at this site with ``ranks`` logical ranks (8 for DEP8/TEP8):

* **DEP**: every rank holds all ``o_a_proj`` groups and its own requests; batch row ``b`` is a request
  of logical rank ``b % ranks`` (:func:`row_rank`), so every rank sees its own M.
* **TEP**: every rank holds ``G / ranks`` contiguous groups (:func:`tep_groups`), their attention heads
  (:func:`tep_heads`) and the matching columns of ``o_b_proj`` (:func:`tep_lora_columns`) for all tokens;
  the ranks' ``o_b_proj`` partial products are summed in rank order (:mod:`accval.site.exchange`).

With ``world`` real processes (``world`` divides ``ranks``), process ``p`` hosts logical ranks
(:func:`hosted_ranks`): ``p, p + world, ...`` under DEP, so it generates the rows ``b % world == p``
(:func:`process_rows`); the contiguous block ``p * ranks/world ... (p + 1) * ranks/world - 1`` under TEP,
so its heads are one contiguous slice.

Prefill (:func:`prefill_steps`): an engine's scheduler puts a rank's waiting requests into one forward
up to a token budget, so a DEP rank's M at prefill is the sum of its requests' prompt tokens, not one
prompt's (the pull request's scale-pad defect showed at M = 1500, past any one gsm8k prompt).
"""

from __future__ import annotations

#: ``--mode`` -> (sharding kind, logical ranks)
MODES = {"dep8": ("dep", 8), "tep8": ("tep", 8), "single": ("dep", 1)}

#: The default of :func:`prefill_steps`'s budget, the most prompt tokens one logical rank prefills in one
#: forward: a batch of 32 gsm8k 5-shot prompts gives each DEP8 rank 4 of them in one forward; under TEP,
#: where every rank sees every token, a forward holds about 9.
PREFILL_TOKENS = 8192


def row_rank(b: int, ranks: int) -> int:
    """DEP: the logical rank whose request batch row ``b`` is."""
    return b % ranks


def row_ranks(rows, ranks: int) -> list[int]:
    """DEP: :func:`row_rank` of each of ``rows`` (batch row indices, or a row count)."""
    rows = range(rows) if isinstance(rows, int) else rows
    return [row_rank(b, ranks) for b in rows]


def hosted_ranks(kind: str, ranks: int, world: int, rank: int) -> list[int]:
    """The logical ranks process ``rank`` of ``world`` hosts (see the module docstring)."""
    if kind not in ("dep", "tep"):
        raise ValueError(f"kind: expected 'dep' or 'tep', got {kind!r}")
    if world < 1 or ranks % world:
        raise ValueError(f"{ranks} logical ranks do not split over {world} processes")
    if not 0 <= rank < world:
        raise ValueError(f"rank: expected 0 <= rank < {world}, got {rank}")
    per = ranks // world
    if kind == "tep":
        return list(range(rank * per, (rank + 1) * per))
    return list(range(rank, ranks, world))


def process_rows(n_rows: int, ranks: int, world: int, rank: int) -> list[int]:
    """DEP over real processes: the batch rows (of ``n_rows``) process ``rank`` generates, those whose
    logical rank (:func:`row_rank`) it hosts."""
    mine = set(hosted_ranks("dep", ranks, world, rank))
    return [b for b in range(n_rows) if row_rank(b, ranks) in mine]


def check_tep(n_groups: int, ranks: int, mode: str) -> None:
    """ValueError unless the ``o_a_proj`` groups split evenly over the TEP ranks."""
    if n_groups % ranks:
        raise ValueError(f"mode {mode}: o_groups={n_groups} do not split over {ranks} TEP ranks")


def tep_groups(r: int, n_groups: int, ranks: int) -> slice:
    """TEP: the ``o_a_proj`` groups of logical rank ``r``."""
    per = n_groups // ranks
    return slice(r * per, (r + 1) * per)


def tep_heads(r: int, n_groups: int, ranks: int, heads_per_group: int) -> slice:
    """TEP: the attention heads of logical rank ``r`` (those of its groups)."""
    g = tep_groups(r, n_groups, ranks)
    return slice(g.start * heads_per_group, g.stop * heads_per_group)


def tep_lora_columns(r: int, n_groups: int, ranks: int, lora_rank: int) -> slice:
    """TEP: the input columns of ``o_b_proj`` that read logical rank ``r``'s groups."""
    g = tep_groups(r, n_groups, ranks)
    return slice(g.start * lora_rank, g.stop * lora_rank)


def check_prefill_budget(budget: int, what: str = "prefill budget") -> None:
    """ValueError naming ``what`` unless ``budget`` is a whole number of tokens >= 1."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"{what}: expected a whole number of tokens >= 1, got {budget!r}")


def prefill_steps(lengths: list[int], row_ranks: list[int], budget: int) -> list[list[int]]:
    """The forwards of one batch's prefill, each a list of batch rows of one logical rank.

    ``lengths[b]``: the tokens row ``b`` prefills (0: none, the row is in no forward); ``row_ranks[b]``:
    the logical rank whose request it is (under TEP every rank sees every token: give every row one
    rank). Each rank takes its rows in batch order and fills a forward with them while its tokens stay
    within ``budget`` (a row longer than ``budget`` is prefilled alone), so a rank's M in a forward is its
    rows' tokens, and the forward holds the same rows whichever process hosts the rank. Forwards come
    in rounds, ranks in ascending order within one. ``budget`` 1: one prompt per forward."""
    check_prefill_budget(budget)
    if len(lengths) != len(row_ranks):
        raise ValueError(f"prefill: {len(lengths)} row lengths but {len(row_ranks)} row ranks")
    if any(n < 0 for n in lengths):
        raise ValueError(f"prefill: row lengths must be >= 0, got {lengths}")
    groups: dict[int, list[list[int]]] = {}
    held: dict[int, int] = {}
    for b, (n, r) in enumerate(zip(lengths, row_ranks)):
        if n == 0:
            continue
        mine = groups.setdefault(r, [])
        if not mine or held[r] + n > budget:
            mine.append([])
            held[r] = 0
        mine[-1].append(b)
        held[r] += n
    rounds = max((len(g) for g in groups.values()), default=0)
    return [groups[r][j] for j in range(rounds) for r in sorted(groups) if j < len(groups[r])]
