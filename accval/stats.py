"""Statistics of an A/B on the same questions: pure functions, no I/O, no model.

Per arm: accuracy and lm-eval's standard error ``sqrt(p(1-p)/(n-1))`` (its ``mean_stderr``).
Paired, question by question (``d_i = b_i - a_i`` in {-1, 0, 1}):

* delta ``mean(b) - mean(a)`` with the paired standard error ``sd(d)/sqrt(n)`` and a normal 95%
  interval, clipped to [-1, 1] (:func:`clip_difference`: a difference of two accuracies lies there, and
  the normal interval passes the ends when few questions are nearly all discordant one way). Pairing removes the between-question variance that two independent stderrs would count
  twice, which is why it can resolve far smaller deltas.
* McNemar's exact test: under "no difference", each discordant question (one arm right, the other
  wrong) is a fair coin; the two-sided binomial p-value of the split.
* the minimum detectable effect at ``alpha`` (two-sided) and ``power``: ``(z_{1-a/2} + z_power) * se``,
  once with the paired se observed here and once for two independent arms at arm A's accuracy
  (what this n could detect without pairing).

Agreement: top-1 next-token agreement and KL(A||B) from teacher-forced logits (:func:`token_agreement`).
:func:`verdict` turns these into a regression decision with the named thresholds below.
"""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist
from typing import Sequence

#: Two-sided significance level of the delta test.
ALPHA = 0.05
#: Power for the minimum detectable effect.
POWER = 0.8
#: Regression when teacher-forced top-1 agreement of B with A falls under this floor. Calibrated on the
#: built-in model (random weights, nearly flat next-token distributions, so argmax flips on ties):
#: clean FP8 chain 0.914-0.919 (CPU, dep8/tep8, 8 questions) and 0.933 (H100, dep8, 1319 questions);
#: the mildest numerically visible mutant, scale-pad-btm, 0.832 (CPU, dep8). A model with real
#: weights agrees far more; calibrate again (clean and mutant runs) before judging another model.
TOP1_AGREEMENT_FLOOR = 0.88
#: Regression when the mean per-token KL(A||B) in nats exceeds this ceiling. Same runs: clean
#: 1.2e-4 to 1.6e-4; scale-pad-btm 1.05e-3, consumer-scale-stride-m 3.2e-3, fp8-m-padded 0.023,
#: rope-sign/rope-layout 0.053. 5e-4 is 3x the worst clean run and half the mildest mutant.
KL_CEILING = 5e-4

_Z = NormalDist()


def _check_outcomes(name: str, xs: Sequence[object]) -> list[int]:
    out = []
    for i, x in enumerate(xs):
        if isinstance(x, bool) or x in (0, 1, 0.0, 1.0):
            out.append(int(x))
        else:
            raise ValueError(f"{name}[{i}]: expected 0/1 or a bool, got {x!r}")
    return out


@dataclasses.dataclass(frozen=True)
class ArmStats:
    n: int
    correct: int
    accuracy: float
    stderr: float


def arm_stats(outcomes: Sequence[object]) -> ArmStats:
    """Accuracy and lm-eval's stderr ``sqrt(p(1-p)/(n-1))`` (nan for n < 2)."""
    xs = _check_outcomes("outcomes", outcomes)
    n = len(xs)
    if n == 0:
        raise ValueError("outcomes: expected at least one question, got none")
    k = sum(xs)
    p = k / n
    se = math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else float("nan")
    return ArmStats(n=n, correct=k, accuracy=p, stderr=se)


@dataclasses.dataclass(frozen=True)
class PairedStats:
    n: int
    delta: float  # accuracy B - accuracy A
    se: float  # paired standard error of delta
    ci95: tuple[float, float]
    b_only: int  # questions B got right and A wrong
    a_only: int  # questions A got right and B wrong
    mcnemar_p: float
    mde_paired: float
    mde_independent: float
    significant: bool


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none)."""
    if a_only < 0 or b_only < 0:
        raise ValueError(f"discordant counts: expected non-negative, got a_only={a_only}, b_only={b_only}")
    n = a_only + b_only
    if n == 0:
        return 1.0
    from scipy.stats import binomtest  # here: reading a report (accval report, results) needs no scipy

    return float(binomtest(min(a_only, b_only), n, 0.5, alternative="two-sided").pvalue)


def mde(se: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable effect for a two-sided test at ``alpha`` with ``power``, given a standard error."""
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power: expected in (0, 1), got alpha={alpha}, power={power}")
    return (_Z.inv_cdf(1 - alpha / 2) + _Z.inv_cdf(power)) * se


#: Where a difference of two accuracies (fractions) can lie.
DIFFERENCE_RANGE = (-1.0, 1.0)


def clip_difference(interval: Sequence[float]) -> tuple[float, float]:
    """An interval of an accuracy difference, clipped to :data:`DIFFERENCE_RANGE`. The normal interval of
    8 questions with 7 A-only and none B-only, -0.875 +- 1.96 * 0.125, is [-1.12, -0.63]: 112 points
    below zero, a drop no two accuracies can show."""
    if len(interval) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in interval):
        raise ValueError(f"interval: expected two numbers (low, high), got {interval!r}")
    lo, hi = (float(x) for x in interval)
    if not lo <= hi:  # NaN fails too
        raise ValueError(f"interval: expected low <= high, got ({lo}, {hi})")
    bottom, top = DIFFERENCE_RANGE
    return min(max(lo, bottom), top), min(max(hi, bottom), top)


def paired_stats(a: Sequence[object], b: Sequence[object], alpha: float = ALPHA, power: float = POWER) -> PairedStats:
    """Paired comparison of two arms' 0/1 outcomes on the same questions, in the same order."""
    xa, xb = _check_outcomes("a", a), _check_outcomes("b", b)
    if len(xa) != len(xb):
        raise ValueError(f"a and b: expected outcomes for the same questions, got {len(xa)} and {len(xb)}")
    n = len(xa)
    if n < 2:
        raise ValueError(f"a and b: expected at least 2 paired questions, got {n}")
    d = [y - x for x, y in zip(xa, xb)]
    mean_d = sum(d) / n
    sd = math.sqrt(sum((v - mean_d) ** 2 for v in d) / (n - 1))
    se = sd / math.sqrt(n)
    z = _Z.inv_cdf(1 - alpha / 2)
    b_only = sum(1 for v in d if v > 0)
    a_only = sum(1 for v in d if v < 0)
    p_mc = mcnemar_exact(a_only, b_only)
    pa = sum(xa) / n
    return PairedStats(
        n=n, delta=mean_d, se=se, ci95=clip_difference((mean_d - z * se, mean_d + z * se)), b_only=b_only, a_only=a_only,
        mcnemar_p=p_mc, mde_paired=mde(se, alpha, power),
        mde_independent=mde(math.sqrt(2 * pa * (1 - pa) / n), alpha, power),
        significant=p_mc < alpha,
    )


@dataclasses.dataclass(frozen=True)
class Agreement:
    tokens: int
    top1: float | None  # fraction of teacher-forced positions where argmax A == argmax B (None: no logits)
    kl: float | None  # mean KL(A || B) per token, nats (None: no logits, e.g. endpoint arms)
    identical_generations: float  # fraction of questions with byte-identical generations


def combine_agreement(per_question: Sequence[tuple[int, int, float]], generations_a: Sequence[str],
                      generations_b: Sequence[str]) -> Agreement:
    """Pool per-question ``(tokens, top1_agreeing, kl_sum)`` token-weighted; compare generations."""
    if len(generations_a) != len(generations_b):
        raise ValueError(f"generations: expected the same questions, got {len(generations_a)} and {len(generations_b)}")
    tokens = sum(t for t, _, _ in per_question)
    if tokens <= 0:
        raise ValueError("per_question: expected at least one teacher-forced token, got none")
    agree = sum(a for _, a, _ in per_question)
    kl = sum(k for _, _, k in per_question)
    same = sum(1 for x, y in zip(generations_a, generations_b) if x == y)
    return Agreement(tokens=tokens, top1=agree / tokens, kl=kl / tokens,
                     identical_generations=same / len(generations_a) if generations_a else float("nan"))


def token_agreement(logits_a, logits_b) -> tuple[int, int, float]:
    """``(tokens, top1_agreeing, sum of KL(A||B))`` over positions ``[T, V]`` of two logit tensors."""
    import torch

    if logits_a.shape != logits_b.shape or logits_a.dim() != 2:
        raise ValueError(f"logits: expected two [T, V] tensors of one shape, got {tuple(logits_a.shape)} and "
                         f"{tuple(logits_b.shape)}")
    la = torch.log_softmax(logits_a.double(), dim=-1)
    lb = torch.log_softmax(logits_b.double(), dim=-1)
    kl = (la.exp() * (la - lb)).sum(dim=-1).clamp_min(0)
    agree = (logits_a.argmax(dim=-1) == logits_b.argmax(dim=-1)).sum().item()
    return logits_a.shape[0], int(agree), float(kl.sum().item())


@dataclasses.dataclass(frozen=True)
class Verdict:
    regression: bool
    reasons: tuple[str, ...]


def verdict(paired: dict[str, PairedStats], agreement: Agreement, *, provenance_problems: Sequence[str] = (),
            contract_violations: int = 0, alpha: float = ALPHA, top1_floor: float = TOP1_AGREEMENT_FLOOR,
            kl_ceiling: float = KL_CEILING) -> Verdict:
    """Regression when any filter's delta is significantly negative, agreement falls under its
    floor (or KL over its ceiling), arm B did not run what was asked, or the producer broke the
    buffer contract at the site."""
    reasons = []
    for name, p in paired.items():
        if p.delta < 0 and p.mcnemar_p < alpha:
            reasons.append(f"{name}: delta {p.delta * 100:+.2f} pts is significant (McNemar p={p.mcnemar_p:.3g} < {alpha})")
    if agreement.top1 is not None and agreement.top1 < top1_floor:
        reasons.append(f"teacher-forced top-1 agreement {agreement.top1:.4f} < floor {top1_floor}")
    if agreement.kl is not None and agreement.kl > kl_ceiling:
        reasons.append(f"mean KL(A||B) {agreement.kl:.4g} nats > ceiling {kl_ceiling}")
    reasons.extend(f"provenance: {p}" for p in provenance_problems)
    if contract_violations:
        reasons.append(f"producer/consumer contract violated at {contract_violations} o_a_proj calls")
    return Verdict(regression=bool(reasons), reasons=tuple(reasons))
