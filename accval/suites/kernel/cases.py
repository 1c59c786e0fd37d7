"""Case generators for the kernel suite, kept apart from the checks (DeepGEMM's tests/generators.py).

A :class:`ProducerCase` is a full, valid producer call; :func:`producer_cases` is the Hypothesis
strategy that builds only valid ones (no filtering), and :func:`make_inputs` turns a case into tensors.
"""

from __future__ import annotations

import dataclasses

import torch
from hypothesis import strategies as st

from accval.testing import max_m

#: The original pull request's sizes, and the awkward ones around every dispatch threshold.
ORIGINAL_PR_SIZES = (3, 64, 257, 512, 1024, 2048, 8192)
AWKWARD_SIZES = (1, 2, 5, 1023, 1025, 1500, 2047, 2049, 4095, 4097, 8191)
#: Token block sizes of the dispatch table (1 = straight kernel, others = loop kernel).
BLOCK_SIZES = (1, 2, 4, 8, 16, 32)
#: Above this many tokens an explicit case costs ~10-40 s in the CPU interpreter and exercises no code
#: path a smaller awkward size does not (int32 overflow needs M > 32768: test_gpu_large.py).
CPU_LARGE_M = 2049


def explicit_sizes(sizes=ORIGINAL_PR_SIZES + AWKWARD_SIZES) -> list:
    """``sizes`` as pytest params, those above :data:`CPU_LARGE_M` marked ``slow_cpu``."""
    import pytest

    return [pytest.param(m, id=f"M{m}", marks=pytest.mark.slow_cpu if m > CPU_LARGE_M else ()) for m in sizes]


@dataclasses.dataclass(frozen=True)
class ProducerCase:
    m: int
    n_groups: int = 2
    heads_per_group: int = 1
    head_dim: int = 128
    rope_dim: int = 64
    is_neox: bool = True
    dtype: torch.dtype = torch.bfloat16
    positions_dtype: torch.dtype = torch.int64
    cache_3d: bool = False
    token_pad: int = 0  # extra elements between tokens in o (strided o)
    head_pad: int = 0  # extra elements between heads in o
    block_tokens_m: int | None = None
    magnitude: float = 4.0
    zero_blocks: bool = False
    seed: int = 0

    @property
    def nope_dim(self) -> int:
        return self.head_dim - self.rope_dim

    @property
    def heads(self) -> int:
        return self.n_groups * self.heads_per_group

    def args(self, o, positions, cache):
        return (o, positions, cache, self.n_groups, self.heads_per_group, self.nope_dim, self.rope_dim)


MAX_POS = 4096


def fit(producer, case: ProducerCase) -> ProducerCase:
    """``case`` moved inside ``producer``'s declaration (layouts, head dims, rope dims): a field the
    producer does not declare is replaced by a declared value picked by the case's seed, so every
    drawn M, shape and stride still runs. Cases the suite cannot move (a test about one layout) skip
    through :meth:`accval.implementations.Producer.uncovered` instead."""
    if producer.uncovered(head_dim=case.head_dim, rope_dim=case.rope_dim, is_neox=case.is_neox) is None:
        return case
    pick = lambda options: options[case.seed % len(options)]  # noqa: E731
    head_dim = case.head_dim if case.head_dim in producer.head_dims else pick(sorted(producer.head_dims))
    rope_dim = case.rope_dim if case.rope_dim in producer.rope_dims else pick(sorted(producer.rope_dims))
    layout = "neox" if case.is_neox else "gptj"
    is_neox = case.is_neox if layout in producer.rope_layouts else producer.rope_layouts[0] == "neox"
    return dataclasses.replace(case, head_dim=head_dim, rope_dim=rope_dim, is_neox=is_neox)


def make_inputs(case: ProducerCase, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``o`` (possibly strided), positions and a real cos/sin cache for ``case``."""
    gen = torch.Generator().manual_seed(case.seed)
    base = torch.randn(case.m, case.heads, case.head_dim + case.head_pad, generator=gen) * case.magnitude
    if case.zero_blocks and case.m:
        base[::3, ::2, :128] = 0.0  # some all-zero quant blocks: scale 0, codes 0
    storage = torch.zeros(case.m, case.heads * (case.head_dim + case.head_pad) + case.token_pad)
    storage[:, : case.heads * (case.head_dim + case.head_pad)] = base.reshape(case.m, -1)
    o = storage.to(case.dtype).to(device)
    o = o.as_strided((case.m, case.heads, case.head_dim), (o.stride(0), case.head_dim + case.head_pad, 1))
    positions = torch.randint(0, MAX_POS, (case.m,), generator=gen).to(case.positions_dtype).to(device)
    half = case.rope_dim // 2
    inv_freq = 1.0 / (10000 ** (torch.arange(half, dtype=torch.float64) / half))
    angles = torch.arange(MAX_POS, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cache = torch.cat([angles.cos(), angles.sin()], dim=-1).float()
    if case.cache_3d:
        cache = cache.reshape(MAX_POS, 2, half)
    return o, positions, cache.to(device)


@st.composite
def producer_cases(draw, *, max_tokens: int | None = None) -> ProducerCase:
    """Any valid producer call: M from 1 to the profile's bound, every layout and branch."""
    bound = max_tokens or max_m()
    head_dim = draw(st.sampled_from((128, 256, 384, 512)))
    rope_dim = draw(st.sampled_from((2, 16, 32, 64, 64, 96, 128)))
    # bias toward M that are not multiples of any block size, and toward small and boundary values
    m = draw(st.one_of(st.integers(1, bound), st.integers(1, 9), st.sampled_from([b * k + r for b in (4, 8, 16, 32)
                                                                                  for k in (1, 3) for r in (-1, 1)])))
    heads_budget = max(1, 4096 // (m * head_dim // 128 + 1))  # keep interpreter work per example bounded
    n_groups = draw(st.integers(1, min(3, heads_budget)))
    hpg = draw(st.integers(1, max(1, min(3, heads_budget // n_groups))))
    return ProducerCase(
        m=m, n_groups=n_groups, heads_per_group=hpg, head_dim=head_dim, rope_dim=rope_dim,
        is_neox=draw(st.booleans()),
        dtype=draw(st.sampled_from((torch.bfloat16, torch.bfloat16, torch.float16, torch.float32))),
        positions_dtype=draw(st.sampled_from((torch.int32, torch.int64))),
        cache_3d=draw(st.booleans()),
        token_pad=draw(st.sampled_from((0, 0, 8, 130))),
        head_pad=draw(st.sampled_from((0, 0, 16))),
        block_tokens_m=draw(st.sampled_from((None,) + BLOCK_SIZES)),
        magnitude=draw(st.sampled_from((1e-3, 1.0, 4.0, 300.0))),
        zero_blocks=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def random_weight(n_groups: int, n: int, k: int, seed: int, device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n_groups, n, k, generator=gen) * 0.05).to(device)
