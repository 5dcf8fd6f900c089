"""Selective prediction: accept the most certain samples, refer the rest (e.g. to a doctor).

A sample is accepted when ``score <= threshold`` (higher score = more uncertain). Coverage is the
accepted fraction, selective risk the error rate among accepted samples.

Ties. A threshold cannot split samples with equal scores, so the *operating points* returned by
:func:`risk_coverage_curve` and used by :func:`coverage_at_risk` / :func:`threshold_for_risk` sit
only at the end of each run of equal scores. Quantities defined at every coverage ``k / n``
(:func:`aurc`, :func:`accuracy_at_referral`) use the expected risk when ties are broken uniformly
at random: a constant score then gets AURC equal to the overall error rate, and no ordering of the
input can change a result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._inputs import ArrayLike, as_bool, as_score


def _sorted_runs(score: ArrayLike, correct: ArrayLike) -> tuple[Tensor, Tensor, Tensor]:
    """Scores ascending, errors in that order (float64) and the run id of each position."""
    s = as_score(score)
    error = (~as_bool(correct, "correct", len(s))).double()
    order = s.argsort(stable=True)
    s, error = s[order], error[order]
    run_id = torch.cat([torch.zeros(1, dtype=torch.long), (s[1:] != s[:-1]).long()]).cumsum(0)
    return s, error, run_id


def expected_selective_risk(score: ArrayLike, correct: ArrayLike) -> Tensor:
    """Selective risk when accepting the ``k`` most certain samples, for every ``k = 1..n``, ``[n]``.

    Within a run of tied scores the errors are spread evenly (their expectation under random order).
    """
    s, error, run_id = _sorted_runs(score, correct)
    n = len(s)
    position = torch.arange(1, n + 1, dtype=torch.float64)
    n_runs = int(run_id[-1]) + 1
    ones = torch.ones(n, dtype=torch.float64)
    run_size = torch.zeros(n_runs, dtype=torch.float64).index_add_(0, run_id, ones)
    run_errors = torch.zeros(n_runs, dtype=torch.float64).index_add_(0, run_id, error)
    accepted_before = run_size.cumsum(0) - run_size
    errors_before = run_errors.cumsum(0) - run_errors
    taken_in_run = position - accepted_before[run_id]
    # E[errors among first k] = E_before + e_run * j / n_run, with j samples of the run taken
    expected_errors = errors_before[run_id] + run_errors[run_id] * taken_in_run / run_size[run_id]
    return expected_errors / position


def risk_coverage_curve(score: ArrayLike, correct: ArrayLike) -> dict[str, Tensor]:
    """Achievable operating points, coverage ascending: ``coverage``, ``risk``, ``threshold``.

    A point is reached by accepting ``score <= threshold``; there is one point per distinct score.
    """
    s, error, run_id = _sorted_runs(score, correct)
    n = len(s)
    ends = torch.nonzero(torch.cat([run_id[1:] != run_id[:-1], torch.tensor([True])])).squeeze(1)
    accepted = (ends + 1).double()
    return {"coverage": accepted / n, "risk": error.cumsum(0)[ends] / accepted, "threshold": s[ends]}


def aurc(score: ArrayLike, correct: ArrayLike) -> float:
    """Area under the risk-coverage curve (Geifman et al. 2019); lower is better."""
    # AURC = (1/n) sum_{k=1..n} risk(k most certain accepted)
    return expected_selective_risk(score, correct).mean().item()


def optimal_aurc(correct: ArrayLike) -> float:
    """The AURC of a perfect score (every error ranked after every correct answer)."""
    ok = as_bool(correct, "correct")
    n, n_correct = ok.numel(), int(ok.sum())
    k = torch.arange(1, n + 1, dtype=torch.float64)
    # risk(k) = max(0, k - n_correct) / k
    return ((k - n_correct).clamp_min(0) / k).mean().item()


def excess_aurc(score: ArrayLike, correct: ArrayLike) -> float:
    """E-AURC = AURC - optimal AURC: the part of AURC the score could still remove."""
    return aurc(score, correct) - optimal_aurc(correct)


def accuracy_at_referral(
    score: ArrayLike, correct: ArrayLike, fractions: Sequence[float] = (0.05, 0.1, 0.2, 0.3)
) -> dict[float, float]:
    """Accuracy on the samples kept after referring the most uncertain ``fraction`` of them.

    ``round(fraction * n)`` samples are referred (half rounds up); NaN when nothing is kept.
    """
    risk = expected_selective_risk(score, correct)
    n = len(risk)
    result = {}
    for fraction in fractions:
        if not 0 <= fraction <= 1:
            raise ValueError(f"fractions: expected values in [0, 1], got {fraction}")
        kept = n - math.floor(fraction * n + 0.5)
        result[fraction] = float("nan") if kept == 0 else 1.0 - risk[kept - 1].item()
    return result


def _best_point(score: ArrayLike, correct: ArrayLike, target_risk: float) -> int | None:
    if not 0 <= target_risk <= 1:
        raise ValueError(f"target_risk: expected a value in [0, 1], got {target_risk}")
    curve = risk_coverage_curve(score, correct)
    allowed = torch.nonzero(curve["risk"] <= target_risk + 1e-12).squeeze(1)
    return None if allowed.numel() == 0 else int(allowed[-1])


def coverage_at_risk(score: ArrayLike, correct: ArrayLike, target_risk: float) -> float:
    """Largest achievable coverage whose selective risk is at most ``target_risk`` (0.0 if none)."""
    best = _best_point(score, correct, target_risk)
    return 0.0 if best is None else risk_coverage_curve(score, correct)["coverage"][best].item()


def threshold_for_risk(score: ArrayLike, correct: ArrayLike, target_risk: float) -> float:
    """Threshold, fitted on validation data, that reaches ``target_risk`` at the largest coverage.

    At prediction time accept ``score <= threshold`` and refer the rest. ``-inf`` (refer every case)
    when no threshold reaches the target on this data.
    """
    best = _best_point(score, correct, target_risk)
    return float("-inf") if best is None else risk_coverage_curve(score, correct)["threshold"][best].item()
