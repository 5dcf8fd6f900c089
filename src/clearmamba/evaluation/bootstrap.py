"""Percentile bootstrap confidence intervals for any metric, resampling whole patients or eyes.

Images of the same patient are not independent; resampling images would make intervals too narrow.
With ``groups`` given, each bootstrap replicate draws group ids with replacement and keeps every
sample of each drawn group (the cluster bootstrap).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch


class BootstrapResult(NamedTuple):
    estimate: float
    low: float
    high: float
    n_valid: int  # replicates with a finite metric (e.g. AUROC is NaN when a resample has one class)


def _take(array: Any, index: np.ndarray) -> Any:
    if isinstance(array, torch.Tensor):
        return array[torch.from_numpy(index).to(array.device)]
    return np.asarray(array)[index]


def _length(array: Any) -> int:
    return array.shape[0] if hasattr(array, "shape") else len(array)


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: Any,
    n_boot: int = 1000,
    alpha: float = 0.05,
    groups: Any = None,
    seed: int = 0,
) -> BootstrapResult:
    """Estimate ``metric_fn(*arrays)`` and its ``1 - alpha`` percentile interval.

    ``arrays`` (tensors or numpy arrays) are indexed together along their first axis. ``groups``
    (one id per sample: patient or eye) makes each replicate resample whole groups.
    """
    if not arrays:
        raise ValueError("arrays: expected at least one array to resample")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a value in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot: expected a positive integer, got {n_boot}")
    n = _length(arrays[0])
    lengths = [_length(a) for a in arrays]
    if any(length != n for length in lengths):
        raise ValueError(f"arrays: expected one entry per sample in each array, got lengths {lengths}")
    estimate = float(metric_fn(*arrays))
    rng = np.random.default_rng(seed)

    if groups is None:
        members = [np.array([i]) for i in range(n)]
    else:
        # ids may be strings ("P017-OD"), so stay in numpy
        group_ids = groups.cpu().numpy() if isinstance(groups, torch.Tensor) else np.asarray(groups)
        if group_ids.shape[0] != n:
            raise ValueError(f"groups: expected {n} group ids (one per sample), got {group_ids.shape[0]}")
        _, inverse = np.unique(group_ids, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        cuts = np.flatnonzero(np.diff(inverse[order])) + 1
        members = np.split(order, cuts)

    sizes = np.array([len(m) for m in members])
    flat = np.concatenate(members)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    replicates = np.empty(n_boot)
    for b in range(n_boot):
        drawn = rng.integers(0, len(members), size=len(members))
        # indices of every sample in every drawn group, in one vectorised gather
        drawn_sizes = sizes[drawn]
        offsets = np.arange(drawn_sizes.sum()) - np.repeat(np.cumsum(drawn_sizes) - drawn_sizes, drawn_sizes)
        index = flat[np.repeat(starts[drawn], drawn_sizes) + offsets]
        replicates[b] = float(metric_fn(*(_take(a, index) for a in arrays)))

    valid = replicates[np.isfinite(replicates)]
    if valid.size == 0:
        return BootstrapResult(estimate, float("nan"), float("nan"), 0)
    low, high = np.quantile(valid, [alpha / 2, 1 - alpha / 2])
    return BootstrapResult(estimate, float(low), float(high), int(valid.size))
