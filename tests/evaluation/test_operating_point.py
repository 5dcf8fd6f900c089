"""The operating point of a rule on one set: counts by hand, Clopper-Pearson intervals from scipy."""

import numpy as np
import pytest
from scipy.stats import beta

from clearmamba.evaluation import bootstrap_ci, decide, fit_referral_rule, operating_point
from clearmamba.evaluation.redraws import synthetic_predictions


def _clopper_pearson(k, n, level=0.95):
    tail = (1 - level) / 2
    low = 0.0 if k == 0 else beta.ppf(tail, k, n - k + 1)
    high = 1.0 if k == n else beta.ppf(1 - tail, k + 1, n - k)
    return low, high


def test_operating_point_counts_and_intervals():
    rule = fit_referral_rule(synthetic_predictions(1000, seed=0))
    test = synthetic_predictions(700, seed=9)
    decisions = decide(test, rule)
    point = operating_point(decisions, test.labels, "test")
    outcome = np.array(decisions.outcome)
    accepted = outcome == "accept"
    wrong = test.probs.argmax(-1).numpy() != test.labels.numpy()
    assert point.accepted.count == accepted.sum() and point.n == 700 and point.labelled
    assert point.referred_unfamiliar.count == (outcome == "refer: unfamiliar").sum()
    assert point.referred_uncertain.count == (outcome == "refer: uncertain").sum()
    assert point.accepted_error.count == (wrong & accepted).sum() and point.accepted_error.n == accepted.sum()
    assert (point.accepted.low, point.accepted.high) == pytest.approx(_clopper_pearson(accepted.sum(), 700), abs=1e-9)
    e = point.accepted_error
    assert (e.low, e.high) == pytest.approx(_clopper_pearson(e.count, e.n), abs=1e-9)
    assert point.to_dict()["accepted"]["value"] == pytest.approx(accepted.mean())
    # an OOD set: no labels, no accepted error
    far = operating_point(decide(synthetic_predictions(300, seed=3, shift=6.0), rule), None, "ood")
    assert far.accepted_error is None and far.referred_unfamiliar.value > 0.95


def test_patient_groups_give_a_cluster_bootstrap_interval():
    rule = fit_referral_rule(synthetic_predictions(1000, seed=0))
    test = synthetic_predictions(400, seed=4)
    patients = [f"p{i // 4}" for i in range(400)]
    decisions = decide(test, rule)
    point = operating_point(decisions, test.labels, "test", groups=patients)
    expected = bootstrap_ci(lambda f: f.double().mean().item(), decisions.accepted, alpha=0.05, groups=patients)
    assert (point.accepted.low, point.accepted.high) == pytest.approx((expected.low, expected.high))
    assert point.interval == "patient bootstrap"
    with pytest.raises(ValueError, match="groups: expected one id per exam"):
        operating_point(decisions, test.labels, groups=patients[:3])
