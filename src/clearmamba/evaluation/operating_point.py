"""What a referral rule does on one evaluation set: coverage, error among accepted exams, referrals by reason.

``operating_point(decide(prediction, rule), labels)`` is the one computation of these numbers; the run record
and the report both call it, so the report's operating point is the record's. Intervals are two-sided
Clopper-Pearson at ``level``; with ``groups`` (a patient or eye id per exam) they come from a bootstrap over
whole groups instead, since exams of one patient are not independent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._inputs import ArrayLike, as_tensor
from .bootstrap import bootstrap_ci
from .referral import Decisions
from .risk_control import binomial_interval


@dataclass(frozen=True)
class Proportion:
    count: int
    n: int
    low: float  # interval at the operating point's level (NaN when n = 0)
    high: float

    @property
    def value(self) -> float:
        return self.count / self.n if self.n else float("nan")

    def to_dict(self) -> dict[str, Any]:
        finite = [None if np.isnan(x) else x for x in (self.value, self.low, self.high)]
        return {"count": self.count, "n": self.n, "value": finite[0], "interval": finite[1:]}


@dataclass(frozen=True)
class OperatingPoint:
    set_name: str
    n: int
    labelled: bool
    accepted: Proportion  # coverage: accepted / all exams
    referred_unfamiliar: Proportion
    referred_uncertain: Proportion
    accepted_error: Proportion | None  # wrong / accepted, for labelled sets
    level: float
    interval: str  # "clopper-pearson" or "patient bootstrap"

    def to_dict(self) -> dict[str, Any]:
        return {"set": self.set_name, "n": self.n, "labelled": self.labelled, "level": self.level,
                "interval": self.interval, "accepted": self.accepted.to_dict(),
                "referred_unfamiliar": self.referred_unfamiliar.to_dict(),
                "referred_uncertain": self.referred_uncertain.to_dict(),
                "accepted_error": None if self.accepted_error is None else self.accepted_error.to_dict()}  # fmt: skip


def _share(flags: torch.Tensor, level: float, groups: Sequence | None, seed: int) -> Proportion:
    count, n = int(flags.sum()), len(flags)
    if groups is None:
        low, high = binomial_interval(count, n, level)
    else:
        ci = bootstrap_ci(lambda f: f.double().mean().item(), flags, alpha=1 - level, groups=groups, seed=seed)
        low, high = ci.low, ci.high
    return Proportion(count, n, low, high)


def _accepted_error(accepted: torch.Tensor, wrong: torch.Tensor, level: float, groups: Sequence | None,
                    seed: int) -> Proportion:  # fmt: skip
    count, n = int((wrong & accepted).sum()), int(accepted.sum())
    if groups is None or n == 0:
        low, high = binomial_interval(count, n, level)
    else:
        def rate(a: torch.Tensor, w: torch.Tensor) -> float:
            return float(w[a].double().mean()) if bool(a.any()) else float("nan")

        ci = bootstrap_ci(rate, accepted, wrong, alpha=1 - level, groups=groups, seed=seed)
        low, high = ci.low, ci.high
    return Proportion(count, n, low, high)


def operating_point(
    decisions: Decisions,
    labels: ArrayLike | None = None,
    set_name: str = "",
    level: float = 0.95,
    groups: Sequence | None = None,
    seed: int = 0,
) -> OperatingPoint:
    """Coverage, accepted error (when ``labels`` are known: all >= 0) and referral shares of one set."""
    if groups is not None and len(groups) != len(decisions):
        raise ValueError(f"groups: expected one id per exam ({len(decisions)}), got {len(groups)}")
    labelled = False
    wrong = None
    if labels is not None:
        y = as_tensor(labels, "labels").long().view(-1)
        if len(y) != len(decisions):
            raise ValueError(f"labels: expected {len(decisions)} labels, got {len(y)}")
        labelled = bool((y >= 0).all())
        wrong = decisions.probs.argmax(-1) != y
    accepted = decisions.accepted
    return OperatingPoint(
        set_name=set_name,
        n=len(decisions),
        labelled=labelled,
        accepted=_share(accepted, level, groups, seed),
        referred_unfamiliar=_share(decisions.referred_unfamiliar, level, groups, seed),
        referred_uncertain=_share(decisions.referred_uncertain, level, groups, seed),
        accepted_error=_accepted_error(accepted, wrong, level, groups, seed) if labelled else None,
        level=level,
        interval="clopper-pearson" if groups is None else "patient bootstrap",
    )
