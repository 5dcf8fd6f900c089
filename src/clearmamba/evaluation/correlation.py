"""Rank correlation between an uncertainty score and a per-sample loss (0/1 error, NLL, Brier).

A good score is positively correlated with the loss: the more uncertain, the more wrong.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._inputs import ArrayLike, as_score, same_length


def average_ranks(x: Tensor) -> Tensor:
    """Ranks ``1..n`` with tied values sharing the mean of their ranks (scipy's ``rankdata``)."""
    order = x.argsort(stable=True)
    sorted_x = x[order]
    run_id = torch.cat([torch.zeros(1, dtype=torch.long), (sorted_x[1:] != sorted_x[:-1]).long()]).cumsum(0)
    n_runs = int(run_id[-1]) + 1
    ones = torch.ones(len(x), dtype=torch.float64)
    run_size = torch.zeros(n_runs, dtype=torch.float64).index_add_(0, run_id, ones)
    run_end = run_size.cumsum(0)
    # a run covering ranks a..b gets (a + b) / 2
    run_rank = run_end - (run_size - 1) / 2
    ranks = torch.empty(len(x), dtype=torch.float64)
    ranks[order] = run_rank[run_id]
    return ranks


def spearman(score: ArrayLike, error: ArrayLike) -> float:
    """Spearman's rho of ``score`` with ``error`` (bool or float); NaN if either is constant."""
    s, e = as_score(score), as_score(error, "error")
    same_length(("score", s), ("error", e))
    # rho = Pearson correlation of the average ranks
    rs, re = average_ranks(s), average_ranks(e)
    rs, re = rs - rs.mean(), re - re.mean()
    denominator = (rs.square().sum() * re.square().sum()).sqrt()
    if denominator == 0:
        return float("nan")
    return ((rs * re).sum() / denominator).item()
