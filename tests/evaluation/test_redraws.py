"""The whole rule (gate + score choice + certification) keeps its promise over calibration draws, and the
re-draw experiment reports what happened in each draw."""

import math
import warnings

import pytest
import torch

from clearmamba.evaluation.redraws import (
    referral_redraws,
    synthetic_error_rate,
    synthetic_predictions,
    true_accepted_error,
)
from clearmamba.evaluation.referral import ReferralWarning, decide, fit_referral_rule


def test_synthetic_error_rate_is_what_the_generator_draws():
    exams = synthetic_predictions(200000, seed=11)
    wrong = exams.predicted != exams.labels
    z = exams.score("msp") / (0.999 * 0.75)
    for t in (0.3, 0.7, 1.0):
        assert float(wrong[z < t].double().mean()) == pytest.approx(synthetic_error_rate(t), abs=0.003)


def test_the_fitted_rule_keeps_its_promise_in_at_least_one_minus_delta_of_draws():
    delta, target, draws, violations = 0.1, 0.05, 60, 0
    for draw in range(draws):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ReferralWarning)
            rule = fit_referral_rule(synthetic_predictions(500, seed=1000 + draw), target_risk=target, delta=delta)
        # the gate's score is independent of difficulty here, so the accepted error is R(threshold) exactly
        if rule.mistake_score == "one_minus_max_prob":
            violations += true_accepted_error(rule.mistake_threshold) > target
    # 60 draws at rate 0.1: sd 0.039
    assert violations / draws <= delta + 0.08


def test_redraws_report_each_draw():
    validation = synthetic_predictions(400, seed=0)
    test = synthetic_predictions(400, seed=1)
    ood = {"ood_far": synthetic_predictions(100, seed=2, shift=6.0)}
    result = referral_redraws(validation, test, ood, n_draws=3, target_risk=0.1)
    assert result.calibration_size == 400 and result.test_size == 400 and len(result.draws) == 3
    assert result.ood_sizes == {"ood_far": 100}
    for d in result.draws:
        assert 0 <= d.test_coverage <= 1 and d.ood_accepted["ood_far"] < 0.05
        assert math.isnan(d.test_accepted_error) or 0 <= d.test_accepted_error <= 1
    # the first draw, again by hand
    pooled = torch.cat([validation.labels, test.labels])
    order = torch.randperm(800, generator=torch.Generator().manual_seed(0))
    held = order[400:]
    from clearmamba.evaluation.mistake_score import select_exams
    from clearmamba.uncertainty import Prediction

    both = Prediction.cat([validation, test])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReferralWarning)
        rule = fit_referral_rule(select_exams(both, order[:400]), pooled[order[:400]], seed=0, target_risk=0.1)
    accepted = decide(select_exams(both, held), rule).accepted
    assert result.draws[0].test_coverage == pytest.approx(float(accepted.double().mean()))
    held_out = sum(not (d.test_accepted_error > 0.1) for d in result.draws) / 3
    assert result.held == pytest.approx(held_out)
    table = result.table()
    assert table.count("\n| ") == 3 and "ood_far accepted" in table and "of 3 draws" in table
    with pytest.raises(ValueError, match="calibration_size"):
        referral_redraws(validation, test, n_draws=1, calibration_size=800)
