"""Threshold-free detection quality of an uncertainty score: misclassification and OOD detection.

The ROC / precision-recall curves are computed here in float64 rather than with torchmetrics'
binary AUROC: torchmetrics applies a sigmoid to any score outside ``[0, 1]``, and in float32 large
scores such as energies or negated max-logits (20 vs 30) both saturate to 1.0 and become ties, which
silently changes the AUROC. Ties in the score itself are handled like scikit-learn: one ROC point
per distinct score value.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ._inputs import ArrayLike, as_bool, as_score


def _binary_curve(score: Tensor, positive: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Cumulative true/false positives flagging ``score >= t``, for each distinct ``t`` descending."""
    order = score.argsort(descending=True, stable=True)
    score, positive = score[order], positive[order].double()
    # the last index of each run of equal scores is where a threshold can sit
    last_of_run = torch.nonzero(score[1:] != score[:-1]).squeeze(1)
    ends = torch.cat([last_of_run, torch.tensor([score.numel() - 1])])
    true_pos = positive.cumsum(0)[ends]
    false_pos = (ends + 1).double() - true_pos
    return true_pos, false_pos, score[ends]


def roc_curve_points(score: ArrayLike, positive: ArrayLike) -> dict[str, Tensor]:
    """ROC curve of flagging ``score >= threshold`` as positive: ``fpr``, ``tpr``, ``threshold``.

    Starts at ``(0, 0)`` with threshold ``+inf`` and keeps every distinct score (no point dropping),
    i.e. scikit-learn's ``roc_curve(..., drop_intermediate=False)``.
    """
    s = as_score(score)
    pos = as_bool(positive, "positive", len(s))
    if pos.all() or not pos.any():
        raise ValueError("positive: a ROC curve needs both positive and negative samples")
    true_pos, false_pos, threshold = _binary_curve(s, pos)
    zero = torch.zeros(1, dtype=torch.float64)
    return {
        "fpr": torch.cat([zero, false_pos / false_pos[-1]]),
        "tpr": torch.cat([zero, true_pos / true_pos[-1]]),
        "threshold": torch.cat([torch.tensor([float("inf")], dtype=torch.float64), threshold]),
    }


def auroc(score: ArrayLike, positive: ArrayLike) -> float:
    """Area under the ROC curve (trapezoids); NaN when only one class is present."""
    s = as_score(score)
    pos = as_bool(positive, "positive", len(s))
    if pos.all() or not pos.any():
        return float("nan")
    curve = roc_curve_points(s, pos)
    return torch.trapezoid(curve["tpr"], curve["fpr"]).item()


def average_precision(score: ArrayLike, positive: ArrayLike) -> float:
    """Area under the precision-recall curve as a step sum (scikit-learn's ``average_precision_score``)."""
    s = as_score(score)
    pos = as_bool(positive, "positive", len(s))
    if not pos.any():
        return float("nan")
    true_pos, false_pos, _ = _binary_curve(s, pos)
    # AP = sum_n (R_n - R_{n-1}) P_n
    precision = true_pos / (true_pos + false_pos)
    recall = true_pos / true_pos[-1]
    recall_step = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return (recall_step * precision).sum().item()


def fpr_at_tpr(score: ArrayLike, positive: ArrayLike, tpr_level: float = 0.95) -> float:
    """False-positive rate at the strictest threshold that catches at least ``tpr_level`` of positives."""
    if not 0 < tpr_level <= 1:
        raise ValueError(f"tpr_level: expected a value in (0, 1], got {tpr_level}")
    s = as_score(score)
    pos = as_bool(positive, "positive", len(s))
    if pos.all() or not pos.any():
        return float("nan")
    curve = roc_curve_points(s, pos)
    # the ROC is monotone, so the first point reaching the level has the lowest FPR among those that do
    reached = torch.nonzero(curve["tpr"] >= tpr_level - 1e-12)[0, 0]
    return curve["fpr"][reached].item()


def misclassification_metrics(score: ArrayLike, correct: ArrayLike) -> dict[str, float]:
    """How well the score flags the model's own mistakes; an error is the positive class.

    Returns ``auroc`` and ``aupr`` (average precision with errors positive); NaN when the model
    makes no error or no correct prediction.
    """
    s = as_score(score)
    error = ~as_bool(correct, "correct", len(s))
    return {"auroc": auroc(s, error), "aupr": average_precision(s, error)}


def ood_metrics(score_in: ArrayLike, score_out: ArrayLike) -> dict[str, float]:
    """Separation of an out-of-distribution set from the in-distribution set by the score.

    OOD is the positive class for ``auroc``, ``aupr_out`` and ``fpr95`` (flag when score is high).
    ``fpr95`` is the fraction of in-distribution samples flagged at the strictest threshold that still
    catches 95 % of the OOD samples (OpenOOD v1.5 / torch-uncertainty convention, not the older
    "95 % TPR on in-distribution" one). ``aupr_in`` treats in-distribution as positive, ranked by the
    negated score.
    """
    s_in, s_out = as_score(score_in, "score_in"), as_score(score_out, "score_out")
    score = torch.cat([s_in, s_out])
    is_ood = torch.cat([torch.zeros(len(s_in), dtype=torch.bool), torch.ones(len(s_out), dtype=torch.bool)])
    return {
        "auroc": auroc(score, is_ood),
        "aupr_in": average_precision(-score, ~is_ood),
        "aupr_out": average_precision(score, is_ood),
        "fpr95": fpr_at_tpr(score, is_ood, 0.95),
    }


def ood_metrics_by_set(
    score_in: ArrayLike, scores_out: Mapping[str, ArrayLike]
) -> dict[str, dict[str, float]]:
    """:func:`ood_metrics` of one in-distribution set against each named OOD set (near / far, per device)."""
    s_in = as_score(score_in, "score_in")
    return {name: ood_metrics(s_in, as_score(s, f"scores_out[{name!r}]")) for name, s in scores_out.items()}
