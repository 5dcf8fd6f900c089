"""Dirichlet quantities from the concentration alpha ``[b, k]`` (alpha = evidence + 1).

S = sum_k alpha_k is the Dirichlet strength; the predictive mean is p = alpha / S and the vacuity
(uncertainty mass) is u = K / S. The entropy split follows Malinin & Gales (2018):
total H[p] = expected entropy E_Dir[H(p)] (aleatoric) + mutual information (epistemic).
"""

from __future__ import annotations

import torch
from torch import Tensor


def strength(alpha: Tensor) -> Tensor:
    # S = sum_k alpha_k, shape [b]
    return alpha.sum(-1)


def expected_probability(alpha: Tensor) -> Tensor:
    # p_k = alpha_k / S
    return alpha / strength(alpha).unsqueeze(-1)


def vacuity(alpha: Tensor) -> Tensor:
    # u = K / S; 1 when there is no evidence, -> 0 as evidence grows
    return alpha.shape[-1] / strength(alpha)


def categorical_entropy(probs: Tensor) -> Tensor:
    # H[p] = -sum_k p_k log p_k, with 0 log 0 = 0
    return -(probs * torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))).sum(-1)


def dirichlet_expected_entropy(alpha: Tensor) -> Tensor:
    # E_Dir[H(p)] = -sum_k p_k (digamma(alpha_k + 1) - digamma(S + 1))
    total = strength(alpha).unsqueeze(-1)
    probs = alpha / total
    return -(probs * (torch.digamma(alpha + 1) - torch.digamma(total + 1))).sum(-1)


def dirichlet_uncertainty(alpha: Tensor) -> dict[str, Tensor]:
    """Per-sample uncertainty of Dirichlet outputs ``alpha [b, k]``.

    Returns ``prob [b, k]`` and ``[b]`` tensors ``total_entropy``, ``expected_entropy`` (aleatoric),
    ``mutual_info`` (epistemic), ``vacuity`` (K/S) and ``strength`` (S).
    """
    if alpha.ndim != 2:
        raise ValueError(f"alpha must be [batch, classes], got shape {tuple(alpha.shape)}")
    if bool((alpha <= 0).any()):
        raise ValueError("alpha must be > 0 (alpha = evidence + 1 with evidence >= 0)")
    probs = expected_probability(alpha)
    total = categorical_entropy(probs)
    expected = dirichlet_expected_entropy(alpha)
    return {
        "prob": probs,
        "total_entropy": total,
        "expected_entropy": expected,
        # rounding can make H[p] - E[H] a hair negative for sharp Dirichlets
        "mutual_info": (total - expected).clamp_min(0.0),
        "vacuity": vacuity(alpha),
        "strength": strength(alpha),
    }
