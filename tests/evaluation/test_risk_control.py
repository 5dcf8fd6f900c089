"""The finite-sample bound: binomial tails against scipy and closed forms, the guarantee over many draws."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import beta, binom

from clearmamba.evaluation import threshold_for_risk
from clearmamba.evaluation.risk_control import (
    binomial_cdf,
    binomial_interval,
    binomial_upper_bound,
    certify_selective_risk,
    coverage_levels,
    exams_needed,
    risk_p_value,
)


@pytest.mark.parametrize("k, n, p", [(0, 1, 0.5), (3, 50, 0.05), (30, 1000, 0.05), (480, 1000, 0.5), (7, 7, 0.3),
                                     (12, 400, 0.01)])  # fmt: skip
def test_binomial_cdf_matches_scipy(k, n, p):
    assert binomial_cdf(k, n, p) == pytest.approx(binom.cdf(k, n, p), rel=1e-10, abs=1e-300)


@pytest.mark.parametrize("errors, n, delta", [(0, 45, 0.1), (3, 120, 0.005), (40, 1000, 0.01), (9, 10, 0.05)])
def test_upper_bound_is_the_clopper_pearson_beta_quantile(errors, n, delta):
    expected = beta.ppf(1 - delta, errors + 1, n - errors)
    assert binomial_upper_bound(errors, n, delta) == pytest.approx(expected, abs=1e-9)


def test_upper_bound_closed_form_with_no_errors():
    # P(Bin(n, U) <= 0) = (1 - U)^n = delta  =>  U = 1 - delta^(1/n)
    for n, delta in [(10, 0.1), (59, 0.05), (1000, 0.001)]:
        assert binomial_upper_bound(0, n, delta) == pytest.approx(1 - delta ** (1 / n), abs=1e-12)
    assert binomial_upper_bound(5, 5, 0.1) == 1.0


def test_two_sided_interval_and_p_value():
    low, high = binomial_interval(7, 20, 0.95)
    assert (low, high) == pytest.approx((beta.ppf(0.025, 7, 14), beta.ppf(0.975, 8, 13)), abs=1e-9)
    assert binomial_interval(0, 20)[0] == 0.0 and binomial_interval(20, 20)[1] == 1.0
    # the p-value is <= d exactly when the bound at 1 - d is <= the target
    for errors, accepted in [(2, 120), (10, 300), (0, 40)]:
        p = risk_p_value(errors, accepted, 0.05)
        assert (p <= 0.01) == (binomial_upper_bound(errors, accepted, 0.01) <= 0.05)
        assert p == pytest.approx(binom.cdf(errors, accepted, 0.05))


def test_exams_needed_closed_form_minimum():
    # no error at all: (1 - alpha)^n <= delta / m  =>  n >= log(delta / m) / log(1 - alpha)
    for target, delta, tests in [(0.05, 0.1, 1), (0.05, 0.1, 60), (0.02, 0.05, 20)]:
        expected = math.ceil(math.log(delta / tests) / math.log(1 - target))
        assert exams_needed(target, delta, tests) == expected
    assert exams_needed(0.05, 0.1, 20, risk=0.06) is None  # an error rate above the target: no size helps
    n = exams_needed(0.05, 0.1, 20, risk=0.02, coverage=0.8)
    accepted = math.floor(0.8 * n)
    assert binom.cdf(math.floor(0.02 * accepted), accepted, 0.05) <= 0.1 / 20


def test_certificate_by_hand():
    # 100 exams, scores 0..99; the 10 highest are wrong: accepting 90 has no error
    score = torch.arange(100.0)
    wrong = score >= 90
    cert = certify_selective_risk(score, wrong, target_risk=0.05, delta=0.1, levels=10)
    assert coverage_levels(100, 10) == list(range(10, 101, 10))
    assert (cert.accepted, cert.errors, cert.threshold) == (90, 0, 90.0)
    assert cert.certified and cert.n_tests == 10
    assert cert.upper_bound == pytest.approx(1 - (0.1 / 10) ** (1 / 90))
    # ties with the threshold are not accepted
    tied = certify_selective_risk(torch.tensor([0.0] * 60 + [1.0] * 40), torch.zeros(100, dtype=torch.bool), 0.05,
                                  0.1, levels=10)  # fmt: skip
    assert tied.accepted in (60, 100) and tied.threshold in (1.0, math.inf)


def test_certificate_without_enough_exams_falls_back_to_the_observed_point():
    score = torch.arange(20.0)
    wrong = torch.zeros(20, dtype=torch.bool)
    wrong[18:] = True
    cert = certify_selective_risk(score, wrong, 0.05, 0.1, levels=10)
    assert not cert.certified and cert.accepted == 18 and cert.errors == 0  # all 20: 2 wrong, 10 %
    everything_wrong = certify_selective_risk(score, torch.ones(20, dtype=torch.bool), 0.05, 0.1)
    assert everything_wrong.threshold == -math.inf and everything_wrong.accepted == 0


def _true_risk(threshold: float) -> float:
    # z ~ U(0, 1), P(wrong | z) = 0.3 z^3: R(t) = int_0^t 0.3 z^3 dz / t = 0.075 t^3
    return 0.075 * min(threshold, 1.0) ** 3


def test_guarantee_holds_in_at_least_one_minus_delta_of_draws():
    target, delta, draws, n = 0.05, 0.1, 300, 400
    violations, naive_violations, coverages = 0, 0, []
    generator = torch.Generator().manual_seed(0)
    for _ in range(draws):
        z = torch.rand(n, generator=generator, dtype=torch.float64)
        wrong = torch.rand(n, generator=generator, dtype=torch.float64) < 0.3 * z**3
        cert = certify_selective_risk(z, wrong, target, delta, levels=20)
        violations += _true_risk(cert.threshold) > target
        coverages.append(cert.coverage)
        # the plain empirical threshold (accept score <= t) promises the same and breaks it often
        naive_violations += _true_risk(threshold_for_risk(z, ~wrong, target)) > target
    # binomial noise of 300 draws at rate delta: sd 0.017
    assert violations / draws <= delta + 0.05
    assert naive_violations / draws > 0.3
    # and it is not trivially safe: the oracle coverage is 87.4 %, the certified one is still substantial
    assert 0.5 < float(np.mean(coverages)) < 0.874


def test_bad_arguments():
    with pytest.raises(ValueError, match="target_risk"):
        certify_selective_risk(torch.rand(10), torch.zeros(10), 1.5, 0.1)
    with pytest.raises(ValueError, match="delta"):
        binomial_upper_bound(0, 10, 0.0)
    with pytest.raises(ValueError, match="levels"):
        coverage_levels(10, 0)
