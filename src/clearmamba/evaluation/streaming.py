"""torchmetrics ``Metric`` versions for streaming over batches (and DDP: states sum or concatenate).

Each ``compute`` calls the functional metric of the same name on everything seen, so a streamed
result equals the one-shot result. Score metrics take any uncertainty score, higher = more uncertain.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from . import detection, selective
from ._inputs import ArrayLike, as_bool, as_score
from .classification import _bin_index, top_label


class ECE(Metric):
    """Equal-width top-label ECE (or MCE with ``norm="max"``) from per-bin sums: O(n_bins) memory."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, n_bins: int = 15, norm: str = "l1", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if norm not in ("l1", "max"):
            raise ValueError(f"norm: expected 'l1' (ECE) or 'max' (MCE), got {norm!r}")
        self.n_bins, self.norm = n_bins, norm
        for name in ("count", "confidence_sum", "correct_sum"):
            self.add_state(name, torch.zeros(n_bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, probs: ArrayLike, labels: ArrayLike) -> None:
        confidence, correct = top_label(probs, labels)
        index = _bin_index(confidence, self.n_bins).to(self.device)
        self.count.index_add_(0, index, torch.ones_like(confidence, device=self.device))
        self.confidence_sum.index_add_(0, index, confidence.to(self.device))
        self.correct_sum.index_add_(0, index, correct.double().to(self.device))

    def compute(self) -> Tensor:
        filled = self.count > 0
        gap = (self.correct_sum[filled] - self.confidence_sum[filled]).abs() / self.count[filled]
        if self.norm == "max":
            return gap.max()
        return (gap * self.count[filled]).sum() / self.count.sum()


class _ScoreFlagMetric(Metric):
    """Concatenates a per-sample score and a per-sample 0/1 flag across batches and processes."""

    is_differentiable = False
    full_state_update = False
    flag_name = "flag"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("score", [], dist_reduce_fx="cat")
        self.add_state("flag", [], dist_reduce_fx="cat")

    def update(self, score: ArrayLike, flag: ArrayLike) -> None:
        s = as_score(score)
        self.score.append(s.to(self.device))
        self.flag.append(as_bool(flag, self.flag_name, len(s)).to(self.device))

    def _all(self) -> tuple[Tensor, Tensor]:
        if not self.score:
            raise ValueError(f"{type(self).__name__}: compute() called before any update()")
        return dim_zero_cat(self.score).cpu(), dim_zero_cat(self.flag).cpu()


class AURC(_ScoreFlagMetric):
    """Streaming :func:`clearmamba.evaluation.aurc`; ``update(score, correct)``."""

    higher_is_better = False
    flag_name = "correct"

    def compute(self) -> Tensor:
        return torch.tensor(selective.aurc(*self._all()), dtype=torch.float64)


class RiskCoverage(_ScoreFlagMetric):
    """Streaming :func:`clearmamba.evaluation.risk_coverage_curve`; ``update(score, correct)``."""

    flag_name = "correct"

    def compute(self) -> dict[str, Tensor]:
        return selective.risk_coverage_curve(*self._all())


class MisclassificationDetection(_ScoreFlagMetric):
    """Streaming :func:`clearmamba.evaluation.misclassification_metrics`; ``update(score, correct)``."""

    higher_is_better = True
    flag_name = "correct"

    def compute(self) -> dict[str, Tensor]:
        result = detection.misclassification_metrics(*self._all())
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in result.items()}


class OODDetection(_ScoreFlagMetric):
    """Streaming :func:`clearmamba.evaluation.ood_metrics`; ``update(score, is_ood)``."""

    flag_name = "is_ood"

    def compute(self) -> dict[str, Tensor]:
        score, is_ood = self._all()
        result = detection.ood_metrics(score[~is_ood], score[is_ood])
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in result.items()}
