"""Finite-sample control of the error among accepted exams (selective risk), by exact binomial tests.

The question: after accepting the exams whose uncertainty score is below a threshold ``t``, is the error rate
among accepted in-distribution exams, ``R(t) = P(wrong | score < t)``, at most a target ``alpha``? We only see a
calibration sample, so the answer is a test (Learn-then-Test, Angelopoulos et al. 2021; the binomial bound of
SGR, Geifman & El-Yaniv 2017):

- **One threshold.** Accept the ``k`` calibration exams with the lowest scores, i.e. ``t = s_(k+1)``, the
  ``(k+1)``-th smallest score (``+inf`` for ``k = n``). Given ``t``, the exams below it are an i.i.d. sample of
  exams with ``score < t`` (order statistics of an exchangeable sample), so their number of errors ``e`` is
  ``Binomial(m, R(t))`` with ``m = #{s_i < t}``. The exact p-value of "R(t) > alpha" is
  ``P(Binomial(m, alpha) <= e)``; it is <= ``d`` exactly when the Clopper-Pearson upper bound
  ``U(e, m, d)`` (the ``p`` with ``P(Binomial(m, p) <= e) = d``, i.e. ``Beta(1 - d; e + 1, m - e)``) is <= alpha.
- **Many thresholds.** ``levels`` coverage levels ``k_j = ceil(j n / levels)`` are fixed before looking at the
  data; each is tested at ``delta / (levels * families)`` (Bonferroni; ``families`` = number of candidate scores
  tested on the same exams). With probability >= ``1 - delta`` over the calibration draw, *every* certified
  (score, level) pair has ``R(t) <= alpha``, so any choice among them -- the largest coverage, the best score --
  keeps the promise. Fixed-sequence testing would skip the correction, but only for fixed thresholds; these
  thresholds are order statistics, where the per-level tests are valid one by one and Bonferroni needs nothing
  more.

Binomial tails are computed here (log-space sums of the pmf recurrence) so that the core needs no scipy; the tests
compare them with ``scipy.stats``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._inputs import ArrayLike, as_bool, as_score


def _check_probability(value: float, name: str, open_low: bool = True, open_high: bool = True) -> None:
    low_ok = value > 0 if open_low else value >= 0
    high_ok = value < 1 if open_high else value <= 1
    if not (isinstance(value, int | float) and math.isfinite(value) and low_ok and high_ok):
        interval = ("(" if open_low else "[") + "0, 1" + (")" if open_high else "]")
        raise ValueError(f"{name}: expected a number in {interval}, got {value!r}")


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(Binomial(n, p) <= k)``."""
    if n < 0:
        raise ValueError(f"n: expected a non-negative count, got {n}")
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    # log pmf(0) = n log(1 - p);  pmf(i + 1) / pmf(i) = (n - i) / (i + 1) * p / (1 - p); summed in log space
    i = np.arange(k, dtype=np.float64)
    steps = np.log(n - i) - np.log1p(i) + (math.log(p) - math.log1p(-p))
    log_pmf = n * math.log1p(-p) + np.concatenate([[0.0], np.cumsum(steps)])
    top = log_pmf.max()
    return min(1.0, math.exp(top + math.log(np.exp(log_pmf - top).sum())))


def _solve_decreasing(fn, target: float, low: float, high: float, iterations: int = 80) -> float:
    # bisection for fn(p) = target, fn non-increasing on [low, high]
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        if fn(mid) > target:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def binomial_upper_bound(errors: int, n: int, delta: float) -> float:
    """Clopper-Pearson upper bound: ``P(rate <= U) >= 1 - delta``; ``U = Beta(1 - delta; e + 1, n - e)``."""
    _check_probability(delta, "delta")
    if not 0 <= errors <= n:
        raise ValueError(f"errors: expected a count in [0, n={n}], got {errors}")
    if errors == n:
        return 1.0
    # U solves P(Binomial(n, U) <= e) = delta
    return _solve_decreasing(lambda p: binomial_cdf(errors, n, p), delta, errors / n, 1.0)


def binomial_lower_bound(successes: int, n: int, delta: float) -> float:
    """Clopper-Pearson lower bound: ``P(rate >= L) >= 1 - delta``; ``L = Beta(delta; k, n - k + 1)``."""
    if successes == 0:
        return 0.0
    return 1.0 - binomial_upper_bound(n - successes, n, delta)


def binomial_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a proportion at confidence ``level``; (nan, nan) when n = 0."""
    _check_probability(level, "level")
    if n == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    return binomial_lower_bound(successes, n, tail), binomial_upper_bound(successes, n, tail)


def risk_p_value(errors: int, accepted: int, target_risk: float) -> float:
    """Exact p-value of "the error rate among accepted exams exceeds target_risk": ``P(Bin(m, alpha) <= e)``."""
    return 1.0 if accepted == 0 else binomial_cdf(errors, accepted, target_risk)


@dataclass(frozen=True)
class RiskCertificate:
    """The operating point a calibration set supports: accept ``score < threshold``."""

    threshold: float  # accept exams with score < threshold; +inf accepts all, -inf none
    n: int  # calibration exams
    accepted: int  # calibration exams with score < threshold
    errors: int  # wrong answers among them
    upper_bound: float  # Clopper-Pearson bound on the accepted error at 1 - delta / n_tests
    certified: bool  # upper_bound <= target: the promise holds with probability >= 1 - delta
    n_tests: int  # levels x families: the Bonferroni count behind upper_bound

    @property
    def coverage(self) -> float:
        return self.accepted / self.n if self.n else 0.0

    @property
    def risk(self) -> float:
        return self.errors / self.accepted if self.accepted else 0.0


def coverage_levels(n: int, levels: int) -> list[int]:
    """Accepted counts ``k_j = ceil(j n / levels)``, ``j = 1..levels``, fixed before looking at any score."""
    if levels < 1:
        raise ValueError(f"levels: expected a positive integer, got {levels}")
    return sorted({max(1, math.ceil(j * n / levels)) for j in range(1, levels + 1)})


def level_points(score: ArrayLike, wrong: ArrayLike, levels: int) -> list[tuple[float, int, int]]:
    """``(threshold, accepted, errors)`` at every coverage level, threshold = the ``(k+1)``-th smallest score."""
    s = as_score(score)
    error = as_bool(wrong, "wrong", len(s))
    order = s.argsort(stable=True)
    s_sorted, e_sorted = s[order], error[order]
    points = []
    for k in coverage_levels(len(s), levels):
        threshold = math.inf if k >= len(s) else float(s_sorted[k])
        below = s_sorted < threshold  # ties with the threshold are not accepted
        points.append((threshold, int(below.sum()), int(e_sorted[below].sum())))
    return points


def certify_selective_risk(
    score: ArrayLike, wrong: ArrayLike, target_risk: float, delta: float, levels: int = 20, families: int = 1
) -> RiskCertificate:
    """The largest-coverage level whose accepted error is certified ``<= target_risk`` at ``1 - delta``.

    ``wrong``: 1 where the model's answer is wrong. ``families``: how many candidate scores are certified on the
    same exams (the Bonferroni factor beside ``levels``). When no level is certified, the certificate is the
    largest-coverage level whose *observed* error is <= target (``certified=False``: no guarantee), or refers
    every exam (threshold ``-inf``) when none is.
    """
    _check_probability(target_risk, "target_risk")
    _check_probability(delta, "delta")
    if families < 1:
        raise ValueError(f"families: expected a positive integer, got {families}")
    points = level_points(score, wrong, levels)
    n = len(as_score(score))
    n_tests = len(points) * families
    per_test = delta / n_tests
    best = None
    for threshold, accepted, errors in points:
        if accepted and risk_p_value(errors, accepted, target_risk) <= per_test:
            best = (threshold, accepted, errors)
    certified = best is not None
    if best is None:
        observed = [p for p in points if p[1] and p[2] <= target_risk * p[1]]
        best = observed[-1] if observed else (-math.inf, 0, 0)
    threshold, accepted, errors = best
    bound = binomial_upper_bound(errors, accepted, per_test) if accepted else 1.0
    return RiskCertificate(threshold, n, accepted, errors, bound, certified, n_tests)


def exams_needed(
    target_risk: float, delta: float, n_tests: int, risk: float = 0.0, coverage: float = 1.0, limit: int = 10**7
) -> int | None:
    """About how many calibration exams certify ``target_risk`` at ``1 - delta`` when a share ``coverage`` is
    accepted with error ``risk`` (0: the absolute minimum). None when ``risk >= target_risk`` or beyond ``limit``.
    """
    _check_probability(target_risk, "target_risk")
    _check_probability(delta, "delta")
    if not 0 <= risk < target_risk or not 0 < coverage <= 1:
        return None
    per_test = delta / n_tests

    def enough(n: int) -> bool:
        accepted = max(1, math.floor(coverage * n))
        return risk_p_value(math.floor(risk * accepted), accepted, target_risk) <= per_test

    high = 1
    while not enough(high):
        high *= 2
        if high > limit:
            return None
    low = high // 2
    # smallest n in (low, high] that is enough (the floor makes it slightly jagged: "about")
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high
