"""Classification quality and calibration from class probabilities ``probs [b, k]`` and ``labels [b]``.

Accuracy, macro F1 and per-class recall come from torchmetrics. Calibration is top-label: the
confidence of a sample is its largest probability, and it is "right" when the argmax is the label.

Equal-width bins are left-closed ``[lo, hi)`` like torchmetrics, except that the last bin is closed
``[14/15, 1]``: torchmetrics puts a confidence of exactly 1.0 (common for saturated float32 softmax)
into a 16th bin of its own, we keep exactly ``n_bins`` bins. On any data without a confidence of
exactly 1.0 the two agree.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_f1_score,
    multiclass_recall,
)

from ._inputs import ArrayLike, as_probs_labels


def top_label(probs: ArrayLike, labels: ArrayLike) -> tuple[Tensor, Tensor]:
    """Top-label confidence ``max_k p_k`` (float64) and correctness ``argmax p == y`` (bool), both ``[b]``."""
    p, y = as_probs_labels(probs, labels)
    confidence, prediction = p.max(-1)
    return confidence.double(), prediction == y


def accuracy(probs: ArrayLike, labels: ArrayLike) -> float:
    p, y = as_probs_labels(probs, labels)
    return multiclass_accuracy(p, y, num_classes=p.shape[1], average="micro").item()


def macro_f1(probs: ArrayLike, labels: ArrayLike) -> float:
    # classes absent from both labels and predictions are left out of the mean (torchmetrics, like sklearn)
    p, y = as_probs_labels(probs, labels)
    return multiclass_f1_score(p, y, num_classes=p.shape[1], average="macro").item()


def per_class_recall(probs: ArrayLike, labels: ArrayLike) -> Tensor:
    """Recall (sensitivity) of each class, ``[k]``; NaN for a class without samples (torchmetrics says 0)."""
    p, y = as_probs_labels(probs, labels)
    recall = multiclass_recall(p, y, num_classes=p.shape[1], average="none")
    present = torch.bincount(y, minlength=p.shape[1]) > 0
    return torch.where(present, recall, torch.full_like(recall, float("nan")))


def _bin_index(confidence: Tensor, n_bins: int) -> Tensor:
    # bin i holds lo_i <= c < hi_i; c == 1.0 joins the last bin
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence, edges, right=True) - 1
    return index.clamp(0, n_bins - 1)


def _equal_mass_index(confidence: Tensor, n_bins: int) -> Tensor:
    # sort by confidence, cut into n_bins runs whose sizes differ by at most one; tied confidences
    # all join the bin of the first of them, so the input order can never change the result
    b = confidence.numel()
    order = confidence.argsort(stable=True)
    sorted_conf = confidence[order]
    rank_bin = torch.div(torch.arange(b) * n_bins, b, rounding_mode="floor")
    new_value = torch.cat([torch.tensor([True]), sorted_conf[1:] != sorted_conf[:-1]])
    run_start = torch.cummax(torch.where(new_value, torch.arange(b), 0), 0).values
    index = torch.empty(b, dtype=torch.long)
    index[order] = rank_bin[run_start]
    return index


def reliability_bins(
    probs: ArrayLike, labels: ArrayLike, n_bins: int = 15, equal_mass: bool = False
) -> dict[str, Tensor]:
    """Per-bin mean confidence, accuracy and count (the data of a reliability diagram).

    Returns ``lower``, ``upper`` (bin edges; for equal-mass bins the min/max confidence inside),
    ``confidence``, ``accuracy`` (NaN for empty bins) and ``count``, each ``[n_bins]``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins: expected a positive integer, got {n_bins}")
    confidence, correct = top_label(probs, labels)
    index = _equal_mass_index(confidence, n_bins) if equal_mass else _bin_index(confidence, n_bins)
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, torch.ones_like(confidence))
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, confidence)
    acc_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, correct.double())
    if equal_mass:
        lower = torch.full((n_bins,), float("nan"), dtype=torch.float64)
        upper = lower.clone()
        lower.scatter_reduce_(0, index, confidence, reduce="amin", include_self=False)
        upper.scatter_reduce_(0, index, confidence, reduce="amax", include_self=False)
    else:
        edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
        lower, upper = edges[:-1], edges[1:]
    return {
        "lower": lower,
        "upper": upper,
        "confidence": conf_sum / count,
        "accuracy": acc_sum / count,
        "count": count.long(),
    }


def _calibration_gaps(bins: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    filled = bins["count"] > 0
    gap = (bins["accuracy"][filled] - bins["confidence"][filled]).abs()
    weight = bins["count"][filled].double() / bins["count"].sum()
    return gap, weight


def ece(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """Expected calibration error, equal-width top-label bins."""
    # ECE = sum_bins (n_bin / n) |acc_bin - conf_bin|
    gap, weight = _calibration_gaps(reliability_bins(probs, labels, n_bins))
    return (gap * weight).sum().item()


def mce(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """Maximum calibration error over non-empty equal-width bins."""
    # MCE = max_bins |acc_bin - conf_bin|
    gap, _ = _calibration_gaps(reliability_bins(probs, labels, n_bins))
    return gap.max().item()


def adaptive_ece(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """ECE over equal-mass bins (Nixon et al. 2019): ``b / n_bins`` samples each (+-1), ties kept together."""
    gap, weight = _calibration_gaps(reliability_bins(probs, labels, n_bins, equal_mass=True))
    return (gap * weight).sum().item()


def brier(probs: ArrayLike, labels: ArrayLike) -> float:
    """Multi-class Brier score, summed over classes (range 0..2), averaged over samples."""
    p, y = as_probs_labels(probs, labels)
    # Brier = mean_b sum_k (p_bk - 1[y_b = k])^2
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).to(torch.float64)
    return ((p.double() - onehot) ** 2).sum(-1).mean().item()


def nll(probs: ArrayLike, labels: ArrayLike, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class; ``p_y`` is clamped at ``eps`` so it stays finite."""
    return per_sample_nll(probs, labels, eps).mean().item()


def per_sample_nll(probs: ArrayLike, labels: ArrayLike, eps: float = 1e-12) -> Tensor:
    """``-log p_y`` per sample, ``[b]`` (for rank correlation of uncertainty with NLL)."""
    p, y = as_probs_labels(probs, labels)
    # NLL_b = -log max(p_{b, y_b}, eps)
    p_true = p.double().gather(1, y[:, None]).squeeze(1)
    return -p_true.clamp_min(eps).log()
