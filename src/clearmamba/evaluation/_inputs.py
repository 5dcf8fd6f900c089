"""Input checks shared by every metric: tensors or numpy arrays in, float64/bool tensors out.

Errors name the argument and say what was expected, so a caller passing logits for probabilities
or a score of the wrong length learns it at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray | Sequence[float]


def as_tensor(x: Any, name: str) -> Tensor:
    """Any array-like -> CPU tensor (no copy for tensors already on CPU)."""
    if isinstance(x, Tensor):
        return x.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name}: expected a tensor or numpy array, got {type(x).__name__}") from error


def as_score(x: Any, name: str = "score") -> Tensor:
    """A per-sample uncertainty score: 1-D, finite, float64 (higher = more uncertain)."""
    score = as_tensor(x, name)
    if score.ndim != 1:
        score = score.squeeze()
    if score.ndim != 1:
        raise ValueError(f"{name}: expected one score per sample (shape [b]), got shape {tuple(score.shape)}")
    if score.numel() == 0:
        raise ValueError(f"{name}: expected at least one sample, got an empty array")
    if score.dtype == torch.bool:
        score = score.to(torch.float64)
    score = score.to(torch.float64)
    if not torch.isfinite(score).all():
        bad = int((~torch.isfinite(score)).sum())
        raise ValueError(f"{name}: expected finite values, found {bad} NaN/inf entries")
    return score


def as_bool(x: Any, name: str, length: int | None = None) -> Tensor:
    """A per-sample 0/1 indicator (e.g. ``correct``) -> 1-D bool tensor."""
    flag = as_tensor(x, name)
    if flag.ndim != 1:
        flag = flag.squeeze()
    if flag.ndim != 1:
        raise ValueError(f"{name}: expected one 0/1 value per sample (shape [b]), got {tuple(flag.shape)}")
    if flag.dtype != torch.bool:
        if not ((flag == 0) | (flag == 1)).all():
            raise ValueError(f"{name}: expected booleans or 0/1 values, found other values")
        flag = flag != 0
    if length is not None and flag.numel() != length:
        raise ValueError(f"{name}: expected {length} entries (one per score), got {flag.numel()}")
    return flag


def as_probs_labels(probs: Any, labels: Any, atol: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Class probabilities ``[b, k]`` (rows sum to 1) and integer labels ``[b]`` in ``[0, k)``."""
    p = as_tensor(probs, "probs")
    y = as_tensor(labels, "labels")
    if p.ndim != 2:
        raise ValueError(f"probs: expected shape [batch, classes], got {tuple(p.shape)}")
    if not p.is_floating_point():
        raise ValueError(f"probs: expected floating point probabilities, got dtype {p.dtype}")
    if p.dtype in (torch.float16, torch.bfloat16):
        p = p.float()
    if not torch.isfinite(p).all():
        raise ValueError("probs: expected finite values, found NaN/inf")
    row_sums = p.sum(-1)
    if (p.min() < -atol) or (p.max() > 1 + atol) or not torch.allclose(
        row_sums, torch.ones_like(row_sums), atol=atol
    ):
        raise ValueError(
            "probs: expected probabilities in [0, 1] with rows summing to 1 "
            f"(row sums range {row_sums.min().item():.4g}..{row_sums.max().item():.4g}); "
            "pass softmax(logits) or alpha / alpha.sum(-1), not logits"
        )
    if y.ndim != 1:
        y = y.squeeze()
    if y.ndim != 1 or y.numel() != p.shape[0]:
        raise ValueError(f"labels: expected {p.shape[0]} integer labels (shape [b]), got {tuple(y.shape)}")
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise ValueError("labels: expected integer class indices, got fractional values")
    y = y.long()
    if y.numel() and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(
            f"labels: expected class indices in [0, {p.shape[1]}), got range {int(y.min())}..{int(y.max())}"
        )
    return p, y


def same_length(*named: tuple[str, Tensor]) -> int:
    """All arrays describe the same samples."""
    lengths = {name: t.shape[0] for name, t in named}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"expected one entry per sample in each argument, got lengths {lengths}")
    return next(iter(lengths.values()))
