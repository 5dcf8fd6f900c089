import itertools
import math

import numpy as np
import pytest
import torch

from clearmamba import evaluation as ev


def geifman_aurc(score, correct):
    """Reference without ties: mean over k of the error rate of the k lowest scores."""
    order = np.argsort(score, kind="stable")
    errors = 1 - np.asarray(correct, float)[order]
    return np.mean(np.cumsum(errors) / np.arange(1, len(errors) + 1))


def test_aurc_without_ties_matches_reference():
    rng = np.random.default_rng(0)
    score = rng.random(500)
    correct = rng.random(500) > score * 0.8
    assert ev.aurc(score, correct) == pytest.approx(geifman_aurc(score, correct), abs=1e-12)


def test_aurc_with_ties_is_the_mean_over_every_tie_order():
    score = np.array([0.1, 0.1, 0.1, 0.5, 0.5, 0.9, 0.2])
    correct = np.array([1, 0, 1, 0, 1, 0, 1], bool)
    # enumerate every permutation, keep those listing scores in ascending order (all tie-breaks)
    values = [
        geifman_aurc(np.arange(7), correct[list(p)])
        for p in itertools.permutations(range(7))
        if np.all(np.diff(score[list(p)]) >= 0)
    ]
    assert len(values) == 3 * 2 * 2 * 1 * 1
    assert ev.aurc(score, correct) == pytest.approx(np.mean(values), abs=1e-12)
    # no input order changes the answer
    shuffled = np.random.default_rng(1).permutation(7)
    assert ev.aurc(score[shuffled], correct[shuffled]) == pytest.approx(ev.aurc(score, correct), abs=1e-15)


def test_constant_score_gives_the_error_rate():
    correct = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    assert ev.aurc(torch.full((8,), 0.3), correct) == pytest.approx(2 / 8)
    curve = ev.risk_coverage_curve(torch.full((8,), 0.3), correct)
    assert curve["coverage"].tolist() == [1.0] and curve["risk"].tolist() == [0.25]


def test_perfect_score_reaches_the_optimum():
    # 4 samples, one error ranked last: risks 0, 0, 0, 1/4
    correct = torch.tensor([True, False, True, True])
    assert ev.aurc((~correct).double(), correct) == pytest.approx(1 / 16)
    assert ev.optimal_aurc(correct) == pytest.approx(1 / 16)
    assert ev.excess_aurc((~correct).double(), correct) == pytest.approx(0.0, abs=1e-15)


def test_optimal_aurc_approaches_the_continuous_formula():
    # Geifman et al.: AURC* ~ r + (1 - r) ln(1 - r) for error rate r
    n, r = 20000, 0.2
    correct = torch.arange(n) >= int(r * n)
    assert ev.optimal_aurc(correct) == pytest.approx(r + (1 - r) * math.log(1 - r), abs=1e-3)


def test_risk_coverage_curve_by_hand():
    curve = ev.risk_coverage_curve([0.1, 0.1, 0.5, 0.9], [1, 0, 1, 0])
    np.testing.assert_allclose(curve["coverage"].numpy(), [0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve["risk"].numpy(), [0.5, 1 / 3, 0.5])
    np.testing.assert_allclose(curve["threshold"].numpy(), [0.1, 0.5, 0.9])


# scores 0..9, wrong answers at scores 5 and 9
SCORE = torch.arange(10.0)
CORRECT = torch.tensor([s not in (5, 9) for s in range(10)])


def test_accuracy_at_referral_by_hand():
    result = ev.accuracy_at_referral(SCORE, CORRECT, fractions=(0.0, 0.05, 0.1, 0.2, 0.3, 1.0))
    # 5 % of 10 rounds half up to 1 referred
    assert result[0.0] == pytest.approx(0.8)
    assert result[0.05] == pytest.approx(8 / 9) and result[0.1] == pytest.approx(8 / 9)
    assert result[0.2] == pytest.approx(7 / 8) and result[0.3] == pytest.approx(6 / 7)
    assert math.isnan(result[1.0])


def test_accuracy_at_referral_with_a_tie_at_the_cut():
    # referring 1 of the 2 tied most uncertain samples (one right, one wrong) keeps half an error on average
    result = ev.accuracy_at_referral([0.0, 0.0, 1.0, 1.0], [True, True, True, False], fractions=(0.25,))
    assert result[0.25] == pytest.approx(1 - 0.5 / 3)


@pytest.mark.parametrize(
    ("target", "coverage", "threshold"),
    [(0.0, 0.5, 4.0), (0.1, 0.5, 4.0), (0.125, 0.9, 8.0), (0.2, 1.0, 9.0)],
)
def test_coverage_and_threshold_at_risk_by_hand(target, coverage, threshold):
    assert ev.coverage_at_risk(SCORE, CORRECT, target) == pytest.approx(coverage)
    assert ev.threshold_for_risk(SCORE, CORRECT, target) == threshold


def test_unreachable_risk_refers_everything():
    wrong = torch.zeros(5, dtype=torch.bool)
    assert ev.coverage_at_risk(torch.rand(5), wrong, 0.5) == 0.0
    assert ev.threshold_for_risk(torch.rand(5), wrong, 0.5) == float("-inf")


def test_threshold_applied_to_the_data_meets_the_target():
    rng = np.random.default_rng(3)
    score = np.round(rng.random(1000), 2)
    correct = rng.random(1000) > score * 0.6
    threshold = ev.threshold_for_risk(score, correct, 0.1)
    accepted = score <= threshold
    assert (~correct[accepted]).mean() <= 0.1
    assert accepted.mean() == pytest.approx(ev.coverage_at_risk(score, correct, 0.1))
    # accepting one more distinct score level would break the target
    next_level = score[score > threshold].min()
    assert (~correct[score <= next_level]).mean() > 0.1 or accepted.mean() < 1


def test_bad_target_risk():
    with pytest.raises(ValueError, match="target_risk"):
        ev.coverage_at_risk(SCORE, CORRECT, 1.5)
