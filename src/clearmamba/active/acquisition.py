"""Acquisition scores for active learning (higher = more worth labelling).

Inputs are member probabilities ``[m, b, k]`` (MC Dropout samples, ensemble members, a committee) or, for a
deterministic model, ``[b, k]`` (treated as one member). Evidential vacuity takes Dirichlet ``alpha``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from clearmamba.uncertainty import sampling
from clearmamba.uncertainty.dirichlet import categorical_entropy, vacuity


def _members(probs: Tensor) -> Tensor:
    if probs.ndim == 2:
        return probs.unsqueeze(0)
    if probs.ndim != 3:
        raise ValueError(f"probs must be [batch, classes] or [members, batch, classes], got {tuple(probs.shape)}")
    return probs


def max_entropy(probs: Tensor) -> Tensor:
    # H[E_m p_m]
    return categorical_entropy(sampling.mean_probability(_members(probs)))


def bald(probs: Tensor) -> Tensor:
    # I[y; w] = H[E_m p_m] - E_m H[p_m]   (Houlsby et al. 2011)
    return sampling.mutual_information(_members(probs))


def variation_ratio(probs: Tensor) -> Tensor:
    # 1 - modal votes / M
    return sampling.variation_ratio(_members(probs))


def vote_entropy(probs: Tensor) -> Tensor:
    # H[v], v_k = (members voting k) / M   (query-by-committee, Dagan & Engelson 1995)
    members = _members(probs)
    votes = torch.nn.functional.one_hot(members.argmax(-1), members.shape[-1]).to(members.dtype).mean(0)
    return categorical_entropy(votes)


def mean_kl_to_consensus(probs: Tensor) -> Tensor:
    # 1/M sum_m KL(p_m || p_mean)   (query-by-committee, McCallum & Nigam 1998)
    members = _members(probs)
    tiny = torch.finfo(members.dtype).tiny
    consensus = sampling.mean_probability(members).unsqueeze(0)
    kl = (members * (members.clamp_min(tiny).log() - consensus.clamp_min(tiny).log())).sum(-1)
    return kl.mean(0)


def evidential_vacuity(alpha: Tensor) -> Tensor:
    # K / S
    return vacuity(alpha)


def random_scores(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    # the baseline: a uniform random ranking
    return torch.rand(_members(probs).shape[1], generator=generator)


ACQUISITIONS: dict[str, Callable[..., Tensor]] = {
    "entropy": max_entropy,
    "bald": bald,
    "variation_ratio": variation_ratio,
    "vote_entropy": vote_entropy,
    "mean_kl": mean_kl_to_consensus,
    "vacuity": evidential_vacuity,
    "random": random_scores,
}


def acquisition_scores(name: str, values: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Score a pool by acquisition ``name``; ``values`` is probs (or alpha for ``vacuity``)."""
    if name not in ACQUISITIONS:
        raise ValueError(f"unknown acquisition {name!r}; expected one of {sorted(ACQUISITIONS)}")
    if name == "random":
        return random_scores(values, generator)
    return ACQUISITIONS[name](values)


def select_top_k(scores: Tensor, k: int, exclude: Tensor | None = None) -> Tensor:
    """Indices of the ``k`` highest scores, never picking indices in ``exclude`` (already labelled)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    scores = scores.clone().float()
    if exclude is not None and exclude.numel():
        scores[exclude] = -torch.inf
    available = int(torch.isfinite(scores).sum())
    if k > available:
        raise ValueError(f"asked for {k} examples but only {available} unlabelled remain in the pool")
    return torch.topk(scores, k).indices
