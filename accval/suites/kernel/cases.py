"""Case generators for the kernel suite, kept apart from the checks (DeepGEMM's tests/generators.py).

A :class:`ProducerCase` is a full, valid producer call; :func:`producer_cases` is the Hypothesis
strategy that builds only valid ones (no filtering), and :func:`make_inputs` turns a case into tensors.
"""

from __future__ import annotations

import dataclasses

import torch
from hypothesis import strategies as st

from accval.kernels.constants import FP8_DTYPE, cdiv, pad4
from accval.kernels.recipes import pack_ue8m0
from accval.testing import max_m

#: The original pull request's sizes, and the awkward ones around every dispatch threshold.
ORIGINAL_PR_SIZES = (3, 64, 257, 512, 1024, 2048, 8192)
AWKWARD_SIZES = (1, 2, 5, 1023, 1025, 1500, 2047, 2049, 4095, 4097, 8191)
#: Token block sizes of the dispatch table (1 = straight kernel, others = loop kernel).
BLOCK_SIZES = (1, 2, 4, 8, 16, 32)
#: Above this many tokens an explicit case costs ~10-40 s in the CPU interpreter and exercises no code
#: path a smaller awkward size does not (int32 overflow needs M > 32768: test_gpu_large.py).
CPU_LARGE_M = 2049


#: Explicit sizes a CPU runs for the producer: all up to CPU_LARGE_M but 1023, which dispatches to the
#: straight kernel (one program per token and head: ~60 s in the interpreter) and takes no code path
#: M=3 (straight, M % 4 == 3) does not; the GPU runs take it, beside the 1024 threshold.
PRODUCER_CPU_SIZES = tuple(m for m in ORIGINAL_PR_SIZES + AWKWARD_SIZES if m <= CPU_LARGE_M and m != 1023)
#: Explicit sizes a CPU runs for the whole chain: the consumer's only M-dependent rule is pad4(M)
#: scale rows, so M % 4 = 1, 2, 3, 0, M = 1, M = 1500 (the DEP8 size of the shipped defect) and 1025 and
#: 2047 (past 1024, where kernels dispatch to their large-M paths, with M % 4 != 0: a consumer reading the
#: scale rows M apart on that path alone passed every other size a CPU ran); the producer's own explicit
#: test covers every size, and the GPU runs take them all through the chain.
CHAIN_CPU_SIZES = (1, 2, 3, 5, 64, 257, 1025, 1500, 2047)


def explicit_sizes(sizes=ORIGINAL_PR_SIZES + AWKWARD_SIZES, cpu_sizes=PRODUCER_CPU_SIZES) -> list:
    """``sizes`` as pytest params, those not in ``cpu_sizes`` marked ``slow_cpu`` (skipped in the CPU
    interpreter under the cpu, ci and smoke profiles, saying so)."""
    import pytest

    return [pytest.param(m, id=f"M{m}", marks=pytest.mark.slow_cpu if m not in cpu_sizes else ()) for m in sizes]


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


def explicit_case(m: int, is_neox: bool) -> "ProducerCase":
    """The case of an explicit size ``m``: two groups, and where ``m % 4 != 0`` (scale rows padded to pad4(M))
    two heads per group, so that K = 256 holds two k-blocks and a scale row stride other than pad4(M) shows
    along the k-block axis as well as between the groups (with one head, K = 128, a producer laying its scale
    rows M apart inside a group passed every size)."""
    return ProducerCase(m=m, n_groups=2, heads_per_group=1 if m % 4 == 0 else 2, is_neox=is_neox, seed=m)


MAX_POS = 4096


def fit(producer, case: ProducerCase) -> ProducerCase:
    """``case`` moved inside ``producer``'s declaration (layouts, dtypes, head dims, rope dims): a field the
    producer does not declare is replaced by a declared value picked by the case's seed, so every
    drawn M, shape and stride still runs. Cases the suite cannot move (a test about one layout) skip
    through :meth:`accval.implementations.Producer.uncovered` instead."""
    if producer.uncovered(head_dim=case.head_dim, rope_dim=case.rope_dim, is_neox=case.is_neox, dtype=case.dtype) is None:
        return case
    pick = lambda options: options[case.seed % len(options)]  # noqa: E731
    head_dim = case.head_dim if case.head_dim in producer.head_dims else pick(sorted(producer.head_dims))
    rope_dim = case.rope_dim if case.rope_dim in producer.rope_dims else pick(sorted(producer.rope_dims))
    layout = "neox" if case.is_neox else "gptj"
    is_neox = case.is_neox if layout in producer.rope_layouts else producer.rope_layouts[0] == "neox"
    name = str(case.dtype).removeprefix("torch.")
    dtype = case.dtype if name in producer.dtypes else getattr(torch, pick(producer.dtypes))
    return dataclasses.replace(case, head_dim=head_dim, rope_dim=rope_dim, is_neox=is_neox, dtype=dtype)


#: Elements of ``o`` past which a CUDA case's ``o`` is drawn on the GPU, a chunk of tokens at a time, into storage of
#: its own dtype (the DSv4-Pro M = 65536 cases hold 2**32: drawn on the CPU they took two fp32 copies, 34 GB).
DEVICE_DRAWN_ELEMENTS = 2**28


def make_inputs(case: ProducerCase, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``o`` (possibly strided), positions and a real cos/sin cache for ``case``."""
    gen = torch.Generator().manual_seed(case.seed)
    device = torch.device(device)
    row = case.heads * (case.head_dim + case.head_pad)
    if device.type == "cuda" and case.m * row > DEVICE_DRAWN_ELEMENTS:
        storage = torch.zeros(case.m, row + case.token_pad, dtype=case.dtype, device=device)
        dev_gen = torch.Generator(device).manual_seed(case.seed)
        chunk = max(1, DEVICE_DRAWN_ELEMENTS // 4 // row)
        for t in range(0, case.m, chunk):
            rows = min(chunk, case.m - t)
            base = torch.randn(rows, case.heads, case.head_dim + case.head_pad, generator=dev_gen, device=device)
            storage[t:t + rows, :row] = (base * case.magnitude).reshape(rows, -1)
    else:
        base = torch.randn(case.m, case.heads, case.head_dim + case.head_pad, generator=gen) * case.magnitude
        storage = torch.zeros(case.m, row + case.token_pad)
        storage[:, :row] = base.reshape(case.m, -1)
        storage = storage.to(case.dtype).to(device)
    o = storage.as_strided((case.m, case.heads, case.head_dim), (storage.stride(0), case.head_dim + case.head_pad, 1))
    if case.zero_blocks and case.m:
        o[::3, ::2, :128] = 0.0  # some all-zero quant blocks: scale 0, codes 0
    positions, cache = positions_and_cache(case, gen, device)
    return o, positions, cache


#: Exponents ``k`` of the scales ``2**k`` whose block absmax ``448 * 2**k`` the boundary cases place, per input
#: dtype: ordinary sizes, and scales past 2**60 or under 2**-60 (where an exact kernel's division folds).
BOUNDARY_EXPONENTS = {torch.float16: (-14, -9, -1, 0, 1, 7), torch.bfloat16: (-80, -40, -9, -1, 0, 1, 6, 60, 100),
                      torch.float32: (-80, -40, -9, -1, 0, 1, 6, 60, 100)}
#: Least boundary value per input dtype, as a multiple of its smallest normal: the rope slice is drawn
#: at 1/64 of the least value placed, and its rotation must stay clear of subnormals (fp16's rope slice
#: runs into them in the ordinary cases as well).
_BOUNDARY_FLOOR = {torch.float16: 2.0**8, torch.bfloat16: 2.0**40, torch.float32: 2.0**40}


def _bit_neighbours(x: float, dtype: torch.dtype, steps) -> list[float]:
    """The values ``j`` representable steps above (``j > 0``) or below ``x > 0`` in ``dtype``."""
    ints = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}[dtype]
    bits = torch.tensor([x], dtype=dtype).view(ints)
    return [float((bits + j).view(dtype)) for j in steps]


def boundary_absmaxes(dtype: torch.dtype, eps: float) -> list[float]:
    """Block absmaxes at the edges of every recipe's scale rule, each exactly representable in ``dtype``:
    ``448 * 2**k`` (where the fp32 scale is a power of two and UE8M0 rounding changes its mind) and the
    three values either side of it, the recipe's amax floor ``eps`` and its neighbours, and the dtype's
    largest value. An fp32 absmax one ulp above ``448 * 2**k`` gives a quotient one ulp above ``2**k``,
    which ``exp2(ceil(log2(x)))`` in fp32 rounds down for ``|k| >= 2`` (sglang #29954); a bf16 absmax cannot
    land that close, so these cases matter most in fp32."""
    fi = torch.finfo(dtype)
    bases = [448.0 * 2.0**k for k in BOUNDARY_EXPONENTS[dtype]]
    values = [v for b in bases for v in _bit_neighbours(b, dtype, range(-3, 4))]
    if eps > 0 and float(torch.tensor(eps, dtype=dtype)) > 0:
        values += _bit_neighbours(float(torch.tensor(eps, dtype=dtype)), dtype, range(-2, 3))
    values += _bit_neighbours(fi.max, dtype, range(-2, 1))
    floor = fi.smallest_normal * _BOUNDARY_FLOOR[dtype]
    return sorted({v for v in values if floor <= v <= fi.max})


def place_boundary_absmaxes(o: torch.Tensor, case: "ProducerCase", values: list[float], seed: int) -> int:
    """Overwrite ``o`` (``[M, heads, head_dim]``, any strides) so that every 128-block holding a nope element has
    absmax exactly one of ``values`` (shuffled, cycled), at one nope element of random sign; the block's other
    nope elements lie in ``[v/8, v/2]`` in magnitude and the rope slice in ``[r/4, r]`` with ``r`` the least
    value placed over 64, so its rotation stays below every block's absmax. Returns the blocks placed."""
    gen = torch.Generator().manual_seed(seed)
    m, heads, d = o.shape
    blocks = d // 128
    col = torch.arange(d)
    nope_in_block = [int(((col // 128 == b) & (col < case.nope_dim)).sum()) for b in range(blocks)]
    targets = torch.tensor(values, dtype=torch.float64)[torch.randperm(len(values), generator=gen)]
    n_placed = m * heads * sum(1 for n in nope_in_block if n)
    if not n_placed:
        return 0
    chosen = targets.repeat(-(-n_placed // len(values)))[:n_placed]
    mag = torch.rand(m, heads, d, generator=gen, dtype=torch.float64) * 0.75 + 0.25
    sign = torch.where(torch.rand(m, heads, d, generator=gen) < 0.5, -1.0, 1.0).double()
    new = torch.empty(m, heads, d, dtype=torch.float64)
    new[:, :, case.nope_dim:] = mag[:, :, case.nope_dim:] * float(chosen.min()) / 64
    i = 0
    for b in range(blocks):
        lo, hi = b * 128, min((b + 1) * 128, case.nope_dim)
        if hi <= lo:
            continue
        v = chosen[i * m * heads:(i + 1) * m * heads].view(m, heads, 1)
        i += 1
        new[:, :, lo:hi] = mag[:, :, lo:hi] * v / 2
        at = lo + torch.randint(0, hi - lo, (m, heads, 1), generator=gen)
        new.scatter_(2, at, v)
    o.copy_((new * sign).to(o.dtype))
    return n_placed


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
        token_pad=draw(st.sampled_from((0, 0, 8, 130, 1))),  # odd: rows off a pair (GPT-J splits them)
        head_pad=draw(st.sampled_from((0, 0, 16, 1))),
        block_tokens_m=draw(st.sampled_from((None,) + BLOCK_SIZES)),
        magnitude=draw(st.sampled_from((1e-3, 1.0, 4.0, 300.0))),
        zero_blocks=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def tma_m(device, g: int = 4, n: int = 256, k: int = 128) -> int:
    """The least M (from 256, doubling) whose consumer grid the dispatch reads with TMA on ``device``
    (the rule counts tiles per SM, so it depends on the device)."""
    import accval.kernels as kernels

    m = 256
    while not kernels.consumer_config(m, n, k, g, torch.device(device)).tma and m < 1 << 16:
        m *= 2
    return m


def random_weight(n_groups: int, n: int, k: int, seed: int, device) -> torch.Tensor:
    """Random ``[G, N, K]`` weights whose 128x128 blocks differ in magnitude by up to 2**6, as a trained
    layer's blocks do: a consumer that reads one block's scale for another misses by far."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n_groups, n, k, generator=gen) * 0.05
    mag = torch.exp2(torch.randint(-3, 4, (n_groups, cdiv(n, 128), cdiv(k, 128)), generator=gen).float())
    return (w * mag.repeat_interleave(128, 1)[:, :n].repeat_interleave(128, 2)[:, :, :k]).to(device)


# ---------------------------------------------------------------------------------------------------
# Positions and cos/sin caches, up to DeepSeek-V4's context of 2**20 tokens.

#: DeepSeek-V4 serves contexts up to this many tokens: positions run to LONG_CONTEXT - 1.
LONG_CONTEXT = 2**20


def rope_inv_freq(rope_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Plain RoPE frequencies ``base ** (-2i / rope_dim)``, float64."""
    half = rope_dim // 2
    return 1.0 / (base ** (torch.arange(half, dtype=torch.float64) / half))


@dataclasses.dataclass(frozen=True)
class YarnScaling:
    """YaRN context extension (Peng et al. 2023) as DeepSeek-V3/V4 configure it: frequencies below
    ``beta_slow`` rotations over the original context are interpolated by ``factor``, those above
    ``beta_fast`` kept, a linear ramp between; cos and sin are multiplied by ``0.1 ln(factor) + 1``.
    The defaults stretch a 65536-token original context by 16 to 2**20 tokens."""

    factor: float = 16.0
    original_max_pos: int = LONG_CONTEXT // 16
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    base: float = 10000.0

    def _dim_for(self, rotations: float, rope_dim: int) -> float:
        """The frequency index whose wavelength fits ``rotations`` times into the original context."""
        import math

        return rope_dim * math.log(self.original_max_pos / (rotations * 2 * math.pi)) / (2 * math.log(self.base))

    def inv_freq(self, rope_dim: int) -> torch.Tensor:
        half = rope_dim // 2
        extrapolated = rope_inv_freq(rope_dim, self.base)
        interpolated = extrapolated / self.factor
        low = max(0.0, float(int(self._dim_for(self.beta_fast, rope_dim))))
        high = min(half - 1.0, float(-int(-self._dim_for(self.beta_slow, rope_dim))))
        ramp = ((torch.arange(half, dtype=torch.float64) - low) / max(high - low, 1e-3)).clamp(0, 1)
        keep = 1.0 - ramp  # 1: keep the original frequency (high frequencies), 0: interpolate
        return interpolated * (1 - keep) + extrapolated * keep

    def mscale(self) -> float:
        import math

        return 0.1 * math.log(self.factor) + 1.0 if self.factor > 1 else 1.0


def cos_sin_cache(max_pos: int, rope_dim: int, *, yarn: YarnScaling | None = None, cache_3d: bool = False) -> torch.Tensor:
    """fp32 ``[max_pos, rope_dim]`` (cos half, then sin half) or ``[max_pos, 2, rope_dim/2]``, on the CPU.

    Every row is built: the kernel indexes the cache by position, so a cache of only the rows a test
    draws would not be the tensor a model passes."""
    cache = cos_sin_rows(torch.arange(max_pos), rope_dim, yarn)
    return cache.reshape(max_pos, 2, rope_dim // 2) if cache_3d else cache


def cos_sin_rows(positions: torch.Tensor, rope_dim: int, yarn: "YarnScaling | None" = None) -> torch.Tensor:
    """The cache rows of ``positions``: fp32 ``[len, rope_dim]``, cos half then sin half (angles in float64)."""
    inv_freq = rope_inv_freq(rope_dim) if yarn is None else yarn.inv_freq(rope_dim)
    mscale = 1.0 if yarn is None else yarn.mscale()
    angles = positions.double()[:, None] * inv_freq[None, :]
    return torch.cat([angles.cos() * mscale, angles.sin() * mscale], dim=-1).float()


_LONG_CACHES: dict[int, torch.Tensor] = {}
#: rope dims of the long-context cases: the cache of 2**20 rows is 8 MB at 2 and 32 MB at 8, built once
#: per process in ~0.4 s and ~1.6 s (float64 angles, 2-core EPYC); 16 would take 64 MB and ~3.2 s.
LONG_CONTEXT_ROPE_DIMS = (2, 8)


def long_context_cache(rope_dim: int, cache_3d: bool) -> torch.Tensor:
    """The YaRN cache for all :data:`LONG_CONTEXT` positions, built once per process (the 3-D layout is a
    view of the same rows)."""
    if rope_dim not in LONG_CONTEXT_ROPE_DIMS:
        raise ValueError(f"rope_dim: expected one of {LONG_CONTEXT_ROPE_DIMS} for a {LONG_CONTEXT}-row cache on the CPU, "
                         f"got {rope_dim}")
    if rope_dim not in _LONG_CACHES:
        _LONG_CACHES[rope_dim] = cos_sin_cache(LONG_CONTEXT, rope_dim, yarn=YarnScaling())
    cache = _LONG_CACHES[rope_dim]
    return cache.view(LONG_CONTEXT, 2, rope_dim // 2) if cache_3d else cache


@dataclasses.dataclass(frozen=True)
class LongContextCase(ProducerCase):
    """A producer call at DeepSeek-V4's context length: positions up to 2**20 - 1 into a YaRN cache of
    all 2**20 rows, ``positions`` possibly a strided view (``positions_stride`` elements apart)."""

    rope_dim: int = 8
    positions_stride: int = 1
    near_end: bool = True  # draw positions from the last 2**17 (above every 16-bit value), else anywhere


def positions_and_cache(case: ProducerCase, gen: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions (drawn with ``gen``) and the cos/sin cache of ``case``.

    A :class:`ProducerCase` gets positions below :data:`MAX_POS` and a plain RoPE cache; a
    :class:`LongContextCase` positions below 2**20 (biased to the top, past every 16-bit value) into the
    shared YaRN cache, as a view ``positions_stride`` apart whose skipped elements are valid positions
    too (a kernel that ignores the stride reads wrong rows, never outside the cache)."""
    if not isinstance(case, LongContextCase):
        positions = torch.randint(0, MAX_POS, (case.m,), generator=gen).to(case.positions_dtype).to(device)
        return positions, cos_sin_cache(MAX_POS, case.rope_dim, cache_3d=case.cache_3d).to(device)
    lo = LONG_CONTEXT - 2**17 if case.near_end else 0
    flat = torch.randint(lo, LONG_CONTEXT, (max(case.m, 1) * case.positions_stride,), generator=gen)
    if case.m:
        flat[0] = LONG_CONTEXT - 1  # the last row of the cache
    positions = flat.to(case.positions_dtype).to(device)[:: case.positions_stride][: case.m]
    if case.rope_dim in LONG_CONTEXT_ROPE_DIMS:
        return positions, long_context_cache(case.rope_dim, case.cache_3d).to(device)
    return positions, _rows_filled_cache(flat, case.rope_dim, case.cache_3d).to(device)


def _rows_filled_cache(rows: torch.Tensor, rope_dim: int, cache_3d: bool) -> torch.Tensor:
    """The YaRN cache's shape, all :data:`LONG_CONTEXT` rows, with only ``rows`` filled (zeros elsewhere, which a
    kernel reading another row rotates by): a producer declaring a rope dim past :data:`LONG_CONTEXT_ROPE_DIMS`
    meets long positions without building 2**20 rows of it (64: 256 MB, ~13 s)."""
    rows = rows.unique()
    cache = torch.zeros(LONG_CONTEXT, rope_dim)
    cache[rows] = cos_sin_rows(rows, rope_dim, YarnScaling())
    return cache.view(LONG_CONTEXT, 2, rope_dim // 2) if cache_3d else cache


@st.composite
def long_context_cases(draw) -> LongContextCase:
    """Producer calls with positions up to 2**20 - 1 (int32 and int64, contiguous or strided) into a
    YaRN-scaled cache of 2**20 rows (:data:`LONG_CONTEXT_ROPE_DIMS` keep it at 8-32 MB)."""
    rope_dim = draw(st.sampled_from(LONG_CONTEXT_ROPE_DIMS))
    return LongContextCase(
        m=draw(st.integers(1, 12)), n_groups=draw(st.integers(1, 2)), heads_per_group=draw(st.integers(1, 2)),
        head_dim=128, rope_dim=rope_dim, is_neox=draw(st.booleans()),
        dtype=draw(st.sampled_from((torch.bfloat16, torch.float16, torch.float32))),
        positions_dtype=draw(st.sampled_from((torch.int32, torch.int64))), cache_3d=draw(st.booleans()),
        positions_stride=draw(st.sampled_from((1, 1, 2, 3))), near_end=draw(st.booleans()),
        block_tokens_m=draw(st.sampled_from((None, 1, 4, 16))), seed=draw(st.integers(0, 2**31 - 1)),
    )


def one_rounding_operands(qs: torch.Tensor, k: int = 256, n: int = 128, device="cpu") -> tuple[tuple, torch.Tensor]:
    """Consumer operands (one group, row r per ``qs[r]``, ``k`` >= 256) whose sum rounds differently once
    and twice: block 0 puts -1 in the accumulator; block 1's product is q * fl32(1/q) (a_scale 1/q, dot
    q, exact), whose sum with -1 is a few low bits of q * fl32(1/q): exact with one rounding (a fused
    multiply-add), 0 or an fp32 ulp with a multiply and then an add. The other blocks hold zeros.
    Returns ``((a, a_scale, b, b_scale), exact)``: ``exact`` the one-rounding result per row, fp32
    (exactly: a few bits near 2**-25)."""
    m = len(qs)
    recip = (1.0 / qs.double()).float()
    a = torch.zeros(1, m, k)
    a[0, :, 0] = -1.0
    a[0, :, 128] = qs
    a_scale = torch.zeros(1, k // 128, pad4(m))
    a_scale[0, :, :m] = 1.0
    a_scale[0, 1, :m] = recip
    b = torch.zeros(1, n, k)
    b[0, :, 0] = b[0, :, 128] = 1.0
    args = tuple(t.to(device) for t in (a.to(FP8_DTYPE), a_scale, b.to(FP8_DTYPE), torch.ones(1, n // 128, k // 128)))
    return args, (qs.double() * recip.double() - 1.0).float()


#: k-blocks of the accumulation property: DSv4-Pro's K (hpg 16 x 512) = 8192
SUM_BLOCKS = 64


def stored_scales(values: torch.Tensor, scale_format: str, m: int) -> torch.Tensor:
    """Activation scales ``values`` (fp32 ``[G, KB, pad4(M)]``; powers of two for ``fp32-pow2`` and
    ``ue8m0-packed``) in a consumer's storage ``scale_format``, the padding rows ``m..`` garbage a consumer must
    never read: NaN in fp32, all-ones bytes in packed UE8M0 words."""
    if scale_format in ("fp32", "fp32-pow2"):
        values[:, :, m:] = float("nan")
        return values
    packed = pack_ue8m0(values)
    packed[:, :, m:] = -1
    return packed


def same_sign_inputs(g: int, m: int, n: int, scale_format: str, seed: int):
    """Consumer inputs whose products all share one sign, at K = 128 * SUM_BLOCKS: codes 16 to 448, weight
    scales 0.75 to 1.25, activation scales 0.75 to 1.25 (fp32) or 0.5 and 1 (powers of two: fp32-pow2, or
    packed UE8M0 words). Padding rows of the activation scales hold garbage (:func:`stored_scales`)."""
    k = 128 * SUM_BLOCKS
    gen = torch.Generator().manual_seed(seed)
    a = (torch.rand(g, m, k, generator=gen) * 432 + 16).to(FP8_DTYPE)
    b = (torch.rand(g, n, k, generator=gen) * 432 + 16).to(FP8_DTYPE)
    b_scale = torch.rand(g, n // 128, SUM_BLOCKS, generator=gen) * 0.5 + 0.75
    if scale_format == "fp32":
        s = torch.rand(g, SUM_BLOCKS, pad4(m), generator=gen) * 0.5 + 0.75
    else:
        s = torch.exp2(-torch.randint(0, 2, (g, SUM_BLOCKS, pad4(m)), generator=gen).float())
    return a, stored_scales(s, scale_format, m), b, b_scale
