"""Does the referral promise hold when the calibration exams are drawn again? The re-draw experiment.

``referral_redraws(validation, test, ood)`` pools the labelled validation and test exams of one model, draws a
calibration set of the validation size at random ``n_draws`` times, fits the rule on it
(:func:`~clearmamba.evaluation.referral.fit_referral_rule`) and applies it to the remaining exams and to every
OOD set. The promise holds in a draw when the error among accepted held-out exams is <= the target; the goal is
>= ``1 - delta`` of the draws. Run it on a trained checkpoint's predictions; ``python -m
clearmamba.evaluation.redraws`` runs it on :func:`synthetic_predictions` (not a measurement of any model).

Synthetic exams: a difficulty ``z ~ U(0, 1)`` sets the chance of a wrong answer, ``eta(z) = 0.3 z^3``, and the
model's top probability, ``max p = 1 - 0.999 (1 - 1/k) z``; so ``1 - max p`` ranks mistakes perfectly in
expectation and the true error among exams accepted below difficulty ``t`` is
``R(t) = int_0^t eta / t = 0.075 t^3`` (``R <= 5 %`` up to coverage 87.4 %). ``-log density`` is N(0, 1) in
distribution and shifted in each OOD set.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from clearmamba.uncertainty import Prediction

from .mistake_score import mistake_score, select_exams
from .naming import prediction_key
from .referral import decide, fit_referral_rule
from .selective import threshold_for_risk

SYNTHETIC_OOD_SHIFTS = {"ood_near": 2.5, "ood_far": 6.0}


def synthetic_error_rate(t: float) -> float:
    """True error among synthetic exams with difficulty below ``t``: ``0.075 min(t, 1)^3``."""
    return 0.075 * min(max(t, 0.0), 1.0) ** 3


def synthetic_predictions(n: int, k: int = 4, seed: int = 0, shift: float | None = None) -> Prediction:
    """``n`` synthetic exams (see the module docstring); ``shift`` moves ``-log density`` (an OOD set)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(n, generator=g, dtype=torch.float64)
    top = 1 - 0.999 * (1 - 1 / k) * z
    predicted = torch.randint(0, k, (n,), generator=g)
    probs = ((1 - top) / (k - 1))[:, None].repeat(1, k)
    probs[torch.arange(n), predicted] = top
    wrong = torch.rand(n, generator=g, dtype=torch.float64) < 0.3 * z**3
    other = (predicted + torch.randint(1, k, (n,), generator=g)) % k
    labels = torch.where(wrong, other, predicted)
    density = torch.randn(n, generator=g, dtype=torch.float64) + (shift or 0.0)
    return Prediction(probs=probs, labels=labels if shift is None else torch.full((n,), -1),
                      ids=[f"{'ood' if shift else 'id'}-{seed}-{i}" for i in range(n)],
                      extra={"neg_log_density": density})  # fmt: skip


@dataclass(frozen=True)
class RedrawOutcome:
    draw: int
    guaranteed: bool
    mistake_score: str
    mistake_threshold: float
    calibration_coverage: float
    test_coverage: float  # share of held-out in-distribution exams accepted
    test_accepted_error: float  # error among them (NaN when none is accepted)
    test_accepted: int
    ood_accepted: dict[str, float]  # share of each OOD set accepted
    # the old rule for comparison: the empirical largest-coverage threshold on validation (no guarantee)
    empirical_test_coverage: float = float("nan")
    empirical_test_accepted_error: float = float("nan")


@dataclass(frozen=True)
class RedrawResult:
    target_risk: float
    delta: float
    calibration_size: int
    test_size: int
    ood_sizes: dict[str, int]
    draws: tuple[RedrawOutcome, ...]
    seconds: float

    @property
    def held(self) -> float:
        """Share of draws whose accepted held-out error is <= the target (a draw accepting nothing holds)."""
        ok = [not (d.test_accepted_error > self.target_risk) for d in self.draws]
        return sum(ok) / len(ok)

    @property
    def empirical_held(self) -> float:
        """The same share for the empirical threshold (NaN when it was not computed)."""
        if all(math.isnan(d.empirical_test_coverage) for d in self.draws):
            return float("nan")
        ok = [not (d.empirical_test_accepted_error > self.target_risk) for d in self.draws]
        return sum(ok) / len(ok)

    def summary(self) -> dict[str, Any]:
        coverage = [d.test_coverage for d in self.draws]
        errors = [d.test_accepted_error for d in self.draws if not math.isnan(d.test_accepted_error)]
        return {
            "draws": len(self.draws),
            "held": self.held,
            "goal_held": 1 - self.delta,
            "guaranteed_draws": sum(d.guaranteed for d in self.draws),
            "test_coverage_mean": sum(coverage) / len(coverage),
            "test_coverage_min": min(coverage),
            "test_accepted_error_mean": sum(errors) / len(errors) if errors else float("nan"),
            "test_accepted_error_max": max(errors) if errors else float("nan"),
            "ood_accepted_mean": {o: sum(d.ood_accepted[o] for d in self.draws) / len(self.draws)
                                  for o in self.ood_sizes},  # fmt: skip
            "ood_accepted_max": {o: max(d.ood_accepted[o] for d in self.draws) for o in self.ood_sizes},
            "empirical_held": self.empirical_held,
            "empirical_test_coverage_mean": sum(d.empirical_test_coverage for d in self.draws) / len(self.draws),
            "seconds": self.seconds,
        }

    def table(self) -> str:
        """A markdown table: one row per draw, then the summary."""
        oods = list(self.ood_sizes)
        head = ["draw", "guaranteed", "mistake score", "test coverage", "accepted error",
                *[f"{o} accepted" for o in oods]]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for d in self.draws:
            cells = [str(d.draw), "yes" if d.guaranteed else "no", d.mistake_score, f"{100 * d.test_coverage:.1f} %",
                     f"{100 * d.test_accepted_error:.2f} %", *[f"{100 * d.ood_accepted[o]:.1f} %" for o in oods]]
            lines.append("| " + " | ".join(cells) + " |")  # fmt: skip
        s = self.summary()
        lines.append("")
        lines.append(f"Accepted held-out error <= {100 * self.target_risk:.3g} % in {100 * s['held']:.0f} % of "
                     f"{s['draws']} draws (goal >= {100 * s['goal_held']:.0f} %); mean test coverage "
                     f"{100 * s['test_coverage_mean']:.1f} % (min {100 * s['test_coverage_min']:.1f} %); "
                     f"calibration {self.calibration_size} exams, held-out test {self.test_size}; "
                     f"{s['seconds']:.1f} s.")  # fmt: skip
        if not math.isnan(s["empirical_held"]):
            lines.append(f"The empirical threshold (largest validation coverage with error <= target, no "
                         f"guarantee) held in {100 * s['empirical_held']:.0f} % of the draws at mean test coverage "
                         f"{100 * s['empirical_test_coverage_mean']:.1f} %.")  # fmt: skip
        return "\n".join(lines)


def referral_redraws(
    validation: Prediction,
    test: Prediction,
    ood: Mapping[str, Prediction] | None = None,
    *,
    n_draws: int = 20,
    calibration_size: int | None = None,
    seed: int = 0,
    compare_empirical: bool = False,
    **fit_options: Any,
) -> RedrawResult:
    """Re-draw the calibration set ``n_draws`` times from validation + test (labelled, in distribution).

    ``calibration_size``: exams per calibration draw (default: the validation size); the rest is held out.
    ``fit_options`` go to :func:`fit_referral_rule` (``target_risk``, ``delta``, ``id_pass_rate``, ...).
    ``compare_empirical``: also apply the empirical threshold of the same mistake score (the largest validation
    coverage whose observed error is <= target, what clearmamba did before), to show what the guarantee buys.
    """
    started = time.perf_counter()
    pooled = Prediction.cat([validation.detach().to("cpu"), test.detach().to("cpu")])
    if pooled.labels is None or bool((pooled.labels < 0).any()):
        raise ValueError("validation and test: expected labelled in-distribution predictions (labels >= 0)")
    n_cal = len(validation) if calibration_size is None else calibration_size
    if not 0 < n_cal < len(pooled):
        raise ValueError(f"calibration_size: expected 1..{len(pooled) - 1} exams, got {n_cal}")
    ood = dict(ood or {})
    target = fit_options.get("target_risk", 0.05)
    delta = fit_options.get("delta", 0.1)
    outcomes = []
    for draw in range(n_draws):
        order = torch.randperm(len(pooled), generator=torch.Generator().manual_seed(seed + draw))
        cal, held = order[:n_cal], order[n_cal:]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a draw without guarantee is recorded, not shouted
            rule = fit_referral_rule(select_exams(pooled, cal), pooled.labels[cal], seed=seed + draw, **fit_options)
        held_prediction = select_exams(pooled, held)
        accepted = decide(held_prediction, rule).accepted
        wrong = held_prediction.predicted != pooled.labels[held]
        n_accepted = int(accepted.sum())
        empirical = {}
        if compare_empirical:
            key = prediction_key(rule.mistake_score)
            cal_prediction = select_exams(pooled, cal)
            cal_wrong = cal_prediction.predicted != pooled.labels[cal]
            threshold = threshold_for_risk(mistake_score(cal_prediction, key, rule.combination), ~cal_wrong, target)
            kept = mistake_score(held_prediction, key, rule.combination) <= threshold
            empirical = {"empirical_test_coverage": float(kept.double().mean()),
                         "empirical_test_accepted_error": float(wrong[kept].double().mean()) if bool(kept.any())
                         else float("nan")}  # fmt: skip
        outcomes.append(RedrawOutcome(
            draw=draw, guaranteed=rule.guaranteed, mistake_score=rule.mistake_score,
            mistake_threshold=rule.mistake_threshold,
            calibration_coverage=rule.calibration_coverage, test_coverage=n_accepted / len(held),
            test_accepted_error=float(wrong[accepted].double().mean()) if n_accepted else float("nan"),
            test_accepted=n_accepted,
            ood_accepted={o: float(decide(p, rule).accepted.double().mean()) for o, p in ood.items()},
            **empirical,
        ))  # fmt: skip
    return RedrawResult(target, delta, n_cal, len(pooled) - n_cal, {o: len(p) for o, p in ood.items()},
                        tuple(outcomes), time.perf_counter() - started)  # fmt: skip


def _synthetic_sets(n_val: int, n_test: int, n_ood: int, seed: int) -> tuple[Prediction, Prediction, dict]:
    validation = synthetic_predictions(n_val, seed=seed)
    test = synthetic_predictions(n_test, seed=seed + 1)
    ood = {name: synthetic_predictions(n_ood, seed=seed + 2 + i, shift=s)
           for i, (name, s) in enumerate(SYNTHETIC_OOD_SHIFTS.items())}  # fmt: skip
    return validation, test, ood


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m clearmamba.evaluation.redraws [n_val n_test n_draws]``: the synthetic re-draw table."""
    argv = list(sys.argv[1:] if argv is None else argv)
    n_val = int(argv[0]) if argv else 1000
    n_test = int(argv[1]) if len(argv) > 1 else 1000
    n_draws = int(argv[2]) if len(argv) > 2 else 20
    validation, test, ood = _synthetic_sets(n_val, n_test, 500, seed=0)
    result = referral_redraws(validation, test, ood, n_draws=n_draws, compare_empirical=True)
    print(result.table())
    # the synthetic model's true error among accepted exams is known in closed form (1 - max p rules only)
    true = [true_accepted_error(d.mistake_threshold) for d in result.draws if d.mistake_score == "one_minus_max_prob"]
    held = sum(e <= result.target_risk for e in true)
    print(f"True accepted error (closed form) <= {100 * result.target_risk:.3g} % in {held} of {len(true)} draws "
          f"(mean {100 * sum(true) / max(len(true), 1):.2f} %).")


def true_accepted_error(rule_threshold: float, k: int = 4) -> float:
    """The synthetic model's true error among accepted exams for a threshold on ``1 - max p``."""
    return synthetic_error_rate(rule_threshold / (0.999 * (1 - 1 / k)))


if __name__ == "__main__":
    main()
