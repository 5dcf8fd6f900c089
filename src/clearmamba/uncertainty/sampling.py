"""Uncertainty from samples of a predictive distribution: MC Dropout passes, ensemble members, SWAG draws.

Input: probabilities ``[m, b, k]`` (m samples/members). Decomposition (Depeweg et al. 2018):
total entropy H[E_m p] = expected entropy E_m H[p] (aleatoric) + mutual information (epistemic, BALD).
"""

from __future__ import annotations

import torch
from torch import Tensor

from clearmamba.uncertainty.dirichlet import categorical_entropy


def _check_members(probs: Tensor) -> None:
    if probs.ndim != 3:
        raise ValueError(f"probs must be [members, batch, classes], got shape {tuple(probs.shape)}")


def mean_probability(probs: Tensor) -> Tensor:
    # p = 1/M sum_m p_m, shape [b, k]
    return probs.mean(0)


def expected_entropy(probs: Tensor) -> Tensor:
    # E_m H[p_m], shape [b]
    return categorical_entropy(probs).mean(0)


def mutual_information(probs: Tensor) -> Tensor:
    # I = H[E_m p_m] - E_m H[p_m] >= 0
    return (categorical_entropy(mean_probability(probs)) - expected_entropy(probs)).clamp_min(0.0)


def variation_ratio(probs: Tensor) -> Tensor:
    # 1 - (votes for the modal class) / M
    votes = torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).sum(0)  # [b, k]
    return 1.0 - votes.max(-1).values.to(probs.dtype) / probs.shape[0]


def disagreement(probs: Tensor) -> Tensor:
    # fraction of members whose top class differs from the top class of the mean prediction
    consensus = mean_probability(probs).argmax(-1)  # [b]
    return (probs.argmax(-1) != consensus.unsqueeze(0)).to(probs.dtype).mean(0)


def sample_uncertainty(probs: Tensor) -> dict[str, Tensor]:
    """Per-sample uncertainty of member probabilities ``probs [m, b, k]``.

    Returns ``prob [b, k]`` (the mean) and ``[b]`` tensors ``total_entropy``, ``expected_entropy``,
    ``mutual_info``, ``variation_ratio`` and ``disagreement``.
    """
    _check_members(probs)
    mean = mean_probability(probs)
    total = categorical_entropy(mean)
    expected = expected_entropy(probs)
    return {
        "prob": mean,
        "total_entropy": total,
        "expected_entropy": expected,
        "mutual_info": (total - expected).clamp_min(0.0),
        "variation_ratio": variation_ratio(probs),
        "disagreement": disagreement(probs),
    }
