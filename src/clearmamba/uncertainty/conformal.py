"""Split-conformal prediction sets (Vovk et al. 2005; Romano et al. 2020 for APS).

On a calibration set of n labelled samples, compute non-conformity scores s_i of the true class and
q_hat = the ceil((n + 1)(1 - alpha)) / n empirical quantile (the ``higher`` order statistic). The set
C(x) = {k : s(x, k) <= q_hat} then covers the true label with probability >= 1 - alpha on exchangeable data.

- ``lac`` (least ambiguous set-valued classifier): s(x, k) = 1 - p_k.
- ``aps`` (adaptive prediction sets): s(x, k) = sum of the probabilities ranked at or above k; with
  ``randomized=True`` the k-th term is multiplied by u ~ U(0, 1), which makes coverage close to exact.

Fit on the probabilities the model will really output (after any temperature or evidence scaling), since the
guarantee needs calibration and test scores from the same map. Order matters for the set sizes: temperature
scaling before APS-type scores needlessly widens the sets (Xi et al. 2024, arXiv 2402.05806; MAPIE issue 483),
LAC is little affected, which is why the referral rule (``clearmamba.evaluation.referral``) uses LAC.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from clearmamba.uncertainty.outputs import as_prediction

SCORES = ("lac", "aps")


def lac_scores(probs: Tensor) -> Tensor:
    # s(x, k) = 1 - p_k, shape [b, k]
    return 1.0 - probs


def aps_scores(probs: Tensor, u: Tensor | None = None) -> Tensor:
    # s(x, k) = sum_{j ranked before k} p_j + u * p_k  (u = 1: not randomized), shape [b, k]
    sorted_probs, order = probs.sort(-1, descending=True)
    before = sorted_probs.cumsum(-1) - sorted_probs
    weight = torch.ones_like(probs[:, :1]) if u is None else u.view(-1, 1)
    sorted_scores = before + weight * sorted_probs
    return torch.empty_like(probs).scatter_(-1, order, sorted_scores)


def lac_sets(probs: Tensor, quantile: float) -> Tensor:
    """LAC prediction sets ``[b, k]`` (bool) for a fitted ``quantile``: the classes with 1 - p_k <= q_hat."""
    return lac_scores(probs) <= quantile


def conformal_quantile(scores: Tensor, alpha: float) -> float:
    # q_hat = s_(ceil((n + 1)(1 - alpha))), the ceil((n+1)(1-alpha))-th smallest; +inf when that exceeds n
    n = scores.numel()
    rank = math.ceil((n + 1) * (1 - alpha))
    if rank > n:
        return math.inf
    return float(scores.flatten().sort().values[rank - 1])


class SplitConformal:
    """``fit(probs_or_prediction, labels)`` on calibration data, then ``predict_sets`` -> bool ``[b, k]``."""

    def __init__(self, alpha: float = 0.1, score: str = "lac", randomized: bool = False, seed: int = 0) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if score not in SCORES:
            raise ValueError(f"unknown conformal score {score!r}; expected one of {SCORES}")
        self.alpha = alpha
        self.score = score
        self.randomized = randomized
        self.generator = torch.Generator().manual_seed(seed)
        self.quantile: float | None = None

    def _scores(self, probs: Tensor) -> Tensor:
        if self.score == "lac":
            return lac_scores(probs)
        u = torch.rand(probs.shape[0], generator=self.generator).to(probs) if self.randomized else None
        return aps_scores(probs, u)

    def fit(self, probs, labels: Tensor) -> SplitConformal:
        probs = _probs(probs)
        if labels.shape != (probs.shape[0],):
            raise ValueError(f"labels must be [{probs.shape[0]}], got {tuple(labels.shape)}")
        true_scores = self._scores(probs).gather(-1, labels.long().view(-1, 1)).squeeze(-1)
        self.quantile = conformal_quantile(true_scores, self.alpha)
        return self

    def predict_sets(self, probs) -> Tensor:
        if self.quantile is None:
            raise RuntimeError("call fit() on calibration data before predict_sets()")
        return self._scores(_probs(probs)) <= self.quantile


def _probs(probs) -> Tensor:
    # a tensor must already be probabilities [b, k]; logits go through a Prediction
    if not isinstance(probs, Tensor):
        return as_prediction(probs).probs
    if probs.ndim != 2:
        raise ValueError(f"probs must be [batch, classes], got shape {tuple(probs.shape)}")
    if bool((probs < 0).any()) or not torch.allclose(probs.sum(-1), torch.ones_like(probs[:, 0]), atol=1e-4):
        raise ValueError("conformal sets need probabilities (rows >= 0 summing to 1); pass a Prediction for logits")
    return probs


def coverage(sets: Tensor, labels: Tensor) -> float:
    """Fraction of samples whose set contains the true label."""
    return float(sets.gather(-1, labels.long().view(-1, 1)).float().mean())


def mean_set_size(sets: Tensor) -> float:
    return float(sets.float().sum(-1).mean())
