"""Which score answers "am I likely wrong?": chosen on validation folds among the model's own scores.

Candidates are ``1 - max p`` of the expected probabilities (``msp``), the predictive entropy and the mutual
information (when the model has evidence or members), and optionally a small logistic combination of their logs.
The first candidate is the default; another replaces it only if its AURC on held-out folds is lower on average
**and** on a majority of the folds, so a score that wins by chance on one split does not take over. The
combination is fitted on the other folds each time, so its held-out AURC is honest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from clearmamba.uncertainty import Prediction

from .selective import aurc

MISTAKE_CANDIDATES = ("msp", "entropy", "mutual_info")
COMBINATION = "logistic_mistake"
_FLOOR = 1e-12  # log features: scores of exactly 0 (saturated softmax) stay finite


@dataclass(frozen=True)
class LogisticCombination:
    """``w . z + b`` with ``z = (log max(s, 1e-12) - mean) / scale`` per feature score: a log-odds of a mistake."""

    features: tuple[str, ...]  # Prediction score keys
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float

    def score(self, prediction: Prediction) -> Tensor:
        z = (_log_features(prediction, self.features) - torch.tensor(self.mean, dtype=torch.float64)) / torch.tensor(
            self.scale, dtype=torch.float64
        )
        return z @ torch.tensor(self.weights, dtype=torch.float64) + self.bias

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": list(self.mean), "scale": list(self.scale),
                "weights": list(self.weights), "bias": self.bias}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "combination") -> LogisticCombination:
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
        expected = {"features", "mean", "scale", "weights", "bias"}
        if set(data) != expected:
            raise ValueError(f"{where}: expected the fields {sorted(expected)}, got {sorted(data)}")
        features = data["features"]
        if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
            raise ValueError(f"{where}.features: expected a non-empty list of score names, got {features!r}")
        numbers = {}
        for name in ("mean", "scale", "weights"):
            values = data[name]
            if not (isinstance(values, list) and len(values) == len(features)
                    and all(_finite_number(v) for v in values)):  # fmt: skip
                raise ValueError(f"{where}.{name}: expected {len(features)} finite numbers, got {values!r}")
            numbers[name] = tuple(float(v) for v in values)
        if any(v <= 0 for v in numbers["scale"]):
            raise ValueError(f"{where}.scale: expected positive numbers, got {list(numbers['scale'])}")
        if not _finite_number(data["bias"]):
            raise ValueError(f"{where}.bias: expected a finite number, got {data['bias']!r}")
        return cls(tuple(features), numbers["mean"], numbers["scale"], numbers["weights"], float(data["bias"]))


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _log_features(prediction: Prediction, keys: Sequence[str]) -> Tensor:
    # log max(s, 1e-12) per score, shape [b, f]
    return torch.stack([prediction.score(k).double().clamp_min(_FLOOR).log() for k in keys], -1)


def fit_logistic_combination(
    prediction: Prediction, wrong: Tensor, features: Sequence[str], c: float = 1.0
) -> LogisticCombination | None:
    """L2 logistic regression of ``wrong`` on the log scores: minimises ``c * sum log-loss + |w|^2 / 2`` (the
    objective of scikit-learn's ``LogisticRegression(C=c)``). None when ``wrong`` has a single class."""
    y = wrong.double()
    if y.sum() == 0 or y.sum() == len(y):
        return None
    x = _log_features(prediction, features)
    mean, scale = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-9)
    z = (x - mean) / scale
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        logit = z @ w + b
        loss = c * torch.nn.functional.binary_cross_entropy_with_logits(logit, y, reduction="sum") + 0.5 * (w @ w)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return LogisticCombination(tuple(features), tuple(mean.tolist()), tuple(scale.tolist()),
                               tuple(w.detach().tolist()), float(b.detach()))  # fmt: skip


@dataclass(frozen=True)
class CandidateResult:
    name: str  # Prediction score key, or "logistic_mistake"
    held_out_aurc: float  # mean over the folds (NaN when the folds could not be compared)
    folds_won: int  # folds whose held-out AURC beat the default candidate's


@dataclass(frozen=True)
class MistakeScoreChoice:
    chosen: str
    default: str
    folds: int
    candidates: tuple[CandidateResult, ...]
    combination: LogisticCombination | None  # fitted on every exam given, when it was chosen


def mistake_score(prediction: Prediction, name: str, combination: LogisticCombination | None = None) -> Tensor:
    """The mistake score ``[b]`` (higher = more likely wrong) of a candidate name."""
    if name == COMBINATION:
        if combination is None:
            raise ValueError("the logistic mistake score needs its fitted combination")
        return combination.score(prediction)
    return prediction.score(name).double()


def select_exams(prediction: Prediction, index: Tensor) -> Prediction:
    """The exams ``index`` of a prediction (scores only: labels and ids are left out)."""
    return Prediction(
        probs=prediction.probs[index],
        logits=None if prediction.logits is None else prediction.logits[index],
        evidence=None if prediction.evidence is None else prediction.evidence[index],
        members=None if prediction.members is None else prediction.members[:, index],
        extra={k: v[index] for k, v in prediction.extra.items()},
    )


def available_candidates(prediction: Prediction, candidates: Sequence[str]) -> list[str]:
    have = set(prediction.available_scores())
    names = [c for c in candidates if c in have]
    if not names:
        raise ValueError(f"mistake_scores: none of {list(candidates)} is available for this prediction; "
                         f"available: {sorted(have)}")  # fmt: skip
    return names


def choose_mistake_score(
    prediction: Prediction,
    wrong: Tensor,
    candidates: Sequence[str] = MISTAKE_CANDIDATES,
    folds: int = 5,
    combine: bool = False,
    seed: int = 0,
) -> MistakeScoreChoice:
    """The default candidate unless another wins on held-out folds (lower mean AURC and most folds won)."""
    names = available_candidates(prediction, candidates)
    if combine and len(names) > 1:
        names.append(COMBINATION)
    default, n = names[0], len(prediction)
    if folds < 2:
        raise ValueError(f"folds: expected at least 2, got {folds}")
    if n < 2 * folds or not bool(wrong.any()) or bool(wrong.all()) or len(names) == 1:
        results = tuple(CandidateResult(c, float("nan"), 0) for c in names)
        return MistakeScoreChoice(default, default, folds, results, None)
    fold_of = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) % folds
    held_out = {c: [] for c in names}
    for f in range(folds):
        test, train = torch.nonzero(fold_of == f).squeeze(1), torch.nonzero(fold_of != f).squeeze(1)
        part = select_exams(prediction, test)
        for c in names:
            combination = None
            if c == COMBINATION:
                fitted = fit_logistic_combination(select_exams(prediction, train), wrong[train], names[:-1])
                if fitted is None:  # this training split holds no mistake: fall back to the default's ranking
                    held_out[c].append(held_out[default][-1])
                    continue
                combination = fitted
            held_out[c].append(aurc(mistake_score(part, c, combination), ~wrong[test]))
    base = held_out[default]
    results = tuple(
        CandidateResult(c, float(sum(v) / folds), sum(x < y - 1e-12 for x, y in zip(v, base)) if c != default else 0)
        for c, v in held_out.items()
    )
    mean_of = {r.name: r.held_out_aurc for r in results}
    winners = [r for r in results
               if r.name != default and r.held_out_aurc < mean_of[default] and r.folds_won > folds / 2]
    chosen = min(winners, key=lambda r: r.held_out_aurc).name if winners else default
    combination = fit_logistic_combination(prediction, wrong, names[:-1]) if chosen == COMBINATION else None
    return MistakeScoreChoice(chosen, default, folds, results, combination)
