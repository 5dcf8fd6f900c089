"""How sure the model is when it is wrong: the CLEAR-Mamba headline (0.870 softmax vs 0.274 RaP)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._inputs import ArrayLike
from .classification import top_label


def _median(x: Tensor) -> float:
    # numpy's median (mean of the two middle values); torch.median would return the lower one
    return float("nan") if x.numel() == 0 else torch.quantile(x, 0.5).item()


def wrong_answer_confidence(probs: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Median top-label confidence of wrong and of right answers, with their counts.

    Returns ``wrong_median``, ``right_median`` (NaN when there is no such answer), ``n_wrong``, ``n_right``.
    """
    confidence, correct = top_label(probs, labels)
    return {
        "wrong_median": _median(confidence[~correct]),
        "right_median": _median(confidence[correct]),
        "n_wrong": int((~correct).sum()),
        "n_right": int(correct.sum()),
    }
