"""accval.stats against values computed by hand (and lm-eval's own stderr)."""

from __future__ import annotations

import math

import pytest
import torch

from accval import stats


def test_arm_stats_hand_computed():
    s = stats.arm_stats([1, 1, 0, 0])
    assert (s.n, s.correct, s.accuracy) == (4, 2, 0.5)
    assert s.stderr == pytest.approx(math.sqrt(0.25 / 3), rel=1e-12)  # 0.288675...


def test_arm_stats_equals_lm_eval_mean_stderr():
    lm_metrics = pytest.importorskip("lm_eval.api.metrics")
    xs = [1, 0, 0, 1, 1, 1, 0, 1, 0, 0, 0, 1, 1]
    assert stats.arm_stats(xs).stderr == pytest.approx(lm_metrics.mean_stderr(xs), rel=1e-12)


def test_paired_stats_hand_computed():
    a = [1, 1, 1, 0, 0, 0, 1, 0]
    b = [1, 0, 1, 1, 1, 0, 1, 0]
    p = stats.paired_stats(a, b)
    # d = [0,-1,0,1,1,0,0,0]: mean 1/8; sum of squared deviations 2.875; sd = sqrt(2.875/7)
    assert p.delta == pytest.approx(0.125)
    assert p.se == pytest.approx(math.sqrt(2.875 / 7) / math.sqrt(8), rel=1e-12)  # 0.226582
    assert (p.b_only, p.a_only) == (2, 1)
    assert p.mcnemar_p == pytest.approx(1.0)  # 2 * P(X <= 1 | n=3) = 2 * 4/8, capped at 1
    assert p.ci95[0] == pytest.approx(0.125 - 1.959964 * p.se, rel=1e-6)
    assert p.mde_paired == pytest.approx((1.959964 + 0.841621) * p.se, rel=1e-6)
    assert p.mde_independent == pytest.approx((1.959964 + 0.841621) * math.sqrt(2 * 0.5 * 0.5 / 8), rel=1e-6)
    assert not p.significant


@pytest.mark.parametrize("a, b, expected", [
    pytest.param([1] * 7 + [0], [0] * 8, (-1.0, -0.875 + 1.959964 * 0.125), id="7-a-only-of-8"),
    pytest.param([0] * 8, [1] * 7 + [0], (0.875 - 1.959964 * 0.125, 1.0), id="7-b-only-of-8"),
    pytest.param([1] * 8, [0] * 8, (-1.0, -1.0), id="all-a-only"),
])
def test_paired_interval_lies_within_the_range_of_an_accuracy_difference(a, b, expected):
    """The paired 95% interval is clipped to [-1, 1]: 7 of 8 questions A-only gives d = -1 seven times,
    delta -0.875, se sqrt(0.875 / 7) / sqrt(8) = 0.125, and the normal interval [-1.12, -0.63] (printed
    as "[-112.00, -63.00]" points by ``accval gsm8k --ab --inject rope-sign --limit 8``)."""
    p = stats.paired_stats(a, b)
    assert p.ci95 == pytest.approx(expected, rel=1e-6), f"{a=} {b=} {p.ci95=}"
    assert p.delta == pytest.approx(sum(b) / 8 - sum(a) / 8)


def test_clip_difference_keeps_intervals_inside_and_refuses_non_intervals():
    assert stats.clip_difference((-0.3, 0.2)) == (-0.3, 0.2)
    assert stats.clip_difference([-1.5, 1.25]) == (-1.0, 1.0)
    for bad in ((0.2, -0.3), (0.1,), (float("nan"), 0.0), ("a", 0.1)):
        with pytest.raises(ValueError, match="interval: expected"):
            stats.clip_difference(bad)


@pytest.mark.parametrize("a_only,b_only,expected", [(0, 6, 2 / 64), (1, 9, 22 / 1024), (9, 1, 22 / 1024), (0, 0, 1.0),
                                                    (3, 3, 1.0)])
def test_mcnemar_exact_hand_computed(a_only, b_only, expected):
    assert stats.mcnemar_exact(a_only, b_only) == pytest.approx(expected, rel=1e-12)


def test_identical_arms_have_zero_delta_and_no_significance():
    xs = [1, 0, 1, 1, 0]
    p = stats.paired_stats(xs, xs)
    assert (p.delta, p.se, p.mcnemar_p, p.significant) == (0.0, 0.0, 1.0, False)


def test_mde_hand_computed():
    assert stats.mde(0.1) == pytest.approx(0.28015853, rel=1e-6)


def test_token_agreement_hand_computed():
    la = torch.tensor([[0.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    lb = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]], dtype=torch.float64)
    tokens, agree, kl = stats.token_agreement(la, lb)
    kl_row0 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # 0.143841
    pa = torch.softmax(torch.tensor([2.0, 1.0], dtype=torch.float64), 0)
    pb = torch.softmax(torch.tensor([1.0, 2.0], dtype=torch.float64), 0)
    kl_row1 = float((pa * (pa / pb).log()).sum())
    assert (tokens, agree) == (2, 1)
    assert kl == pytest.approx(kl_row0 + kl_row1, rel=1e-12)


def test_verdict_reasons():
    clean = stats.paired_stats([1, 0] * 20, [1, 0] * 20)
    drop = stats.paired_stats([1] * 30, [0] * 10 + [1] * 20)
    good = stats.Agreement(tokens=100, top1=0.99, kl=0.0001, identical_generations=0.5)
    bad = stats.Agreement(tokens=100, top1=0.5, kl=0.8, identical_generations=0.0)
    assert stats.verdict({"strict": clean}, good) == stats.Verdict(False, ())
    v = stats.verdict({"strict": drop}, good)
    assert v.regression and "significant" in v.reasons[0]
    v = stats.verdict({"strict": clean}, bad)
    assert v.regression and len(v.reasons) == 2
    assert stats.verdict({"strict": clean}, good, provenance_problems=["arm B consumer ran 'triton'"]).regression
    assert stats.verdict({"strict": clean}, good, contract_violations=3).regression
    # a significant *gain* is not a regression
    assert not stats.verdict({"strict": stats.paired_stats([0] * 30, [1] * 30)}, good).regression


@pytest.mark.parametrize("bad", [[1, 2], [0.5], ["1"], [None]])
def test_bad_outcomes_are_value_errors(bad):
    with pytest.raises(ValueError, match="expected 0/1"):
        stats.arm_stats(bad)


def test_unpaired_lengths_are_value_errors():
    with pytest.raises(ValueError, match="same questions"):
        stats.paired_stats([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="at least one"):
        stats.arm_stats([])


def test_report_names_every_device_of_a_run_resumed_across_machines():
    from accval.report import _device

    assert _device({"name": "NVIDIA H100", "type": "cuda"}) == "NVIDIA H100"  # reports from before sessions
    assert _device({"name": "NVIDIA H100", "type": "cuda", "sessions": ["NVIDIA H100", "NVIDIA H100"]}) == "NVIDIA H100"
    text = _device({"name": "NVIDIA H100", "type": "cuda", "sessions": ["NVIDIA H200", "NVIDIA H100"]})
    assert text == "NVIDIA H100 (resumed: its 2 sessions ran on NVIDIA H200, then NVIDIA H100)"
