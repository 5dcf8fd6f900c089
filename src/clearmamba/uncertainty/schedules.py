"""Annealing schedules for the evidential KL regulariser.

Each schedule is a small callable ``schedule(epoch) -> factor`` where ``epoch`` is the (fractional) number
of epochs completed, e.g. ``step / steps_per_epoch``. The KL weight used at that point is
``lambda_t = kl_weight * schedule(epoch)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Constant:
    """Always ``value`` (no annealing)."""

    value: float = 1.0

    def __call__(self, epoch: float) -> float:
        return self.value


@dataclass(frozen=True)
class EpochLinear:
    """min(1, t / T) with t the number of *completed* epochs (Sensoy et al. 2018, T = 10)."""

    anneal_epochs: float = 10.0

    def __post_init__(self) -> None:
        if self.anneal_epochs <= 0:
            raise ValueError(f"anneal_epochs must be > 0, got {self.anneal_epochs}")

    def __call__(self, epoch: float) -> float:
        # min(1, floor(t) / T): the factor changes once per epoch
        return min(1.0, math.floor(epoch) / self.anneal_epochs)


@dataclass(frozen=True)
class StepContinuous:
    """min(1, t / T) evaluated at every step (the official EDL notebook's annealing)."""

    anneal_epochs: float = 10.0

    def __post_init__(self) -> None:
        if self.anneal_epochs <= 0:
            raise ValueError(f"anneal_epochs must be > 0, got {self.anneal_epochs}")

    def __call__(self, epoch: float) -> float:
        # min(1, t / T) with fractional t
        return min(1.0, max(0.0, epoch) / self.anneal_epochs)


@dataclass(frozen=True)
class PiecewiseLinear:
    """Linear interpolation through ``points`` = [(fraction of training, value), ...].

    labml's EDL experiment uses ((0, 0), (0.2, 0.01), (1, 1)) over the whole run; values are held constant
    outside the first and last point.
    """

    points: tuple[tuple[float, float], ...] = ((0.0, 0.0), (0.2, 0.01), (1.0, 1.0))
    total_epochs: float = 1.0

    def __post_init__(self) -> None:
        xs = [x for x, _ in self.points]
        if len(xs) < 2 or any(b <= a for a, b in zip(xs, xs[1:])):
            raise ValueError(f"points need >= 2 strictly increasing fractions, got {self.points}")
        if self.total_epochs <= 0:
            raise ValueError(f"total_epochs must be > 0, got {self.total_epochs}")

    def __call__(self, epoch: float) -> float:
        fraction = epoch / self.total_epochs
        (x0, y0), (xn, yn) = self.points[0], self.points[-1]
        if fraction <= x0:
            return y0
        if fraction >= xn:
            return yn
        for (xa, ya), (xb, yb) in zip(self.points, self.points[1:]):
            if xa <= fraction <= xb:
                # y = ya + (yb - ya) (f - xa) / (xb - xa)
                return ya + (yb - ya) * (fraction - xa) / (xb - xa)
        raise AssertionError("unreachable: fraction lies inside the points")


def make_schedule(name: str, **kwargs) -> Constant | EpochLinear | StepContinuous | PiecewiseLinear:
    """Build a schedule by name: constant, epoch_linear, step_continuous, piecewise."""
    table = {
        "constant": Constant,
        "epoch_linear": EpochLinear,
        "step_continuous": StepContinuous,
        "piecewise": PiecewiseLinear,
    }
    if name not in table:
        raise ValueError(f"unknown annealing schedule {name!r}; expected one of {sorted(table)}")
    return table[name](**kwargs)
