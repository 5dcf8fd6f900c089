"""The referral policy, decided in this one place: two questions, two scores, one rule with a guarantee.

1. **"Is this exam unlike my training data?"** The unfamiliar-input score (``-log density`` of the features when
   the model has a density gate, else K/S vacuity, else mutual information or energy) is read as a conformal
   p-value against the validation exams, ``p = (1 + #{u_i >= u}) / (n + 1)``; the exam is referred as
   *unfamiliar* when ``p <= 1 - id_pass_rate``. Under exchangeability at most ``1 - id_pass_rate`` of
   in-distribution exams are referred this way. It equals the threshold ``u > u_(n - c)`` with
   ``c = floor((1 - id_pass_rate)(n + 1)) - 1``.
2. **"Am I likely wrong?"** The mistake score is chosen on held-out validation folds
   (:mod:`~clearmamba.evaluation.mistake_score`), and its threshold is certified with exact binomial tests
   (:mod:`~clearmamba.evaluation.risk_control`) on the validation exams that pass the gate: with probability
   >= ``1 - delta`` over the calibration draw, the error among accepted in-distribution exams is <=
   ``target_risk``. Without ``combine`` the score is chosen on the same exams and every candidate is tested
   (Bonferroni over candidates x levels), so the choice cannot break the promise; with ``combine`` a share of
   the exams chooses the score (and fits the combination) and the rest certifies it.

An exam is referred if either fires, and the reason says which. A prediction whose top classes tie is never a
diagnosis: it is referred as uncertain whatever its score. Uncertain exams carry a split-conformal prediction
set (LAC scores on the same probabilities the rule sees, fitted on the validation exams referred as uncertain;
LAC rather than APS because temperature scaling before APS needlessly widens the sets, MAPIE issue 483).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from clearmamba.errors import UserError
from clearmamba.uncertainty import Prediction
from clearmamba.uncertainty.conformal import conformal_quantile, lac_scores, lac_sets

from ._inputs import ArrayLike, as_tensor
from .mistake_score import (
    COMBINATION,
    MISTAKE_CANDIDATES,
    CandidateResult,
    available_candidates,
    choose_mistake_score,
    mistake_score,
    select_exams,
)
from .naming import prediction_key, public_name, score_label
from .referral_rule import ReferralRule, ScoreReference
from .risk_control import certify_selective_risk, exams_needed, level_points

ACCEPT, REFER_UNFAMILIAR, REFER_UNCERTAIN = "accept", "refer: unfamiliar", "refer: uncertain"
UNFAMILIAR_CANDIDATES = ("neg_log_density", "vacuity", "mutual_info", "energy")
TIE_TOLERANCE = 1e-6  # top-two probability gap below which no class stands out


class GuaranteeUnavailableError(UserError):
    """A guarantee was demanded (``require_guarantee``, ``--delta``) and the validation exams cannot give it."""


class ReferralWarning(UserWarning):
    """The rule was fitted, but its promise is weaker than asked (too few validation exams)."""


# ---- fitting ------------------------------------------------------------------------------------------


def _labels(validation: Prediction, labels: ArrayLike | None) -> Tensor:
    y = validation.labels if labels is None else as_tensor(labels, "labels")
    if y is None:
        raise ValueError("labels: the validation prediction has no labels; pass labels=")
    y = y.long().view(-1)
    if len(y) != len(validation):
        raise ValueError(f"labels: expected {len(validation)} labels (one per validation exam), got {len(y)}")
    if bool((y < 0).any()) or bool((y >= validation.num_classes).any()):
        raise ValueError(f"labels: expected class indices in [0, {validation.num_classes}), got "
                         f"{int(y.min())}..{int(y.max())}")  # fmt: skip
    return y


def _unfamiliar_key(validation: Prediction, requested: str | None) -> str | None:
    if requested is None:
        return None
    have = validation.available_scores()
    if requested != "auto":
        key = prediction_key(requested)
        if key not in have:
            raise ValueError(f"unfamiliar_score: {requested!r} is not available for this prediction; "
                             f"available: {[public_name(k) for k in have]}")  # fmt: skip
        return key
    return next((k for k in UNFAMILIAR_CANDIDATES if k in have), None)


def unfamiliar_threshold(scores: Tensor, id_pass_rate: float) -> float:
    """``u_(n - c)``, ``c = floor((1 - id_pass_rate)(n + 1)) - 1``: refer above it. +inf when ``c < 0`` (too few)."""
    n = len(scores)
    c = math.floor((1 - id_pass_rate) * (n + 1) + 1e-9) - 1
    if c < 0:
        return math.inf
    return float(scores.double().sort().values[n - c - 1])


def _check_fit_arguments(target_risk: float, delta: float, id_pass_rate: float, set_alpha: float) -> None:
    for name, value in (("target_risk", target_risk), ("delta", delta), ("id_pass_rate", id_pass_rate),
                        ("set_alpha", set_alpha)):  # fmt: skip
        if not (isinstance(value, int | float) and 0 < value < 1):
            raise ValueError(f"{name}: expected a number in (0, 1), got {value!r}")


def _observed_points(points, n: int, target_risk: float) -> list[tuple[float, float]]:
    """(coverage, error) of every level whose observed error is below target."""
    return [(accepted / n, errors / accepted) for _, accepted, errors in points
            if accepted and errors < target_risk * accepted]  # fmt: skip


def fit_referral_rule(
    validation: Prediction,
    labels: ArrayLike | None = None,
    *,
    target_risk: float = 0.05,
    delta: float = 0.1,
    id_pass_rate: float = 0.99,
    unfamiliar_score: str | None = "auto",
    mistake_scores: Sequence[str] = MISTAKE_CANDIDATES,
    combine: bool = False,
    selection_fraction: float = 0.4,
    folds: int = 5,
    coverage_levels: int = 20,
    set_alpha: float = 0.1,
    require_guarantee: bool = False,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
) -> ReferralRule:
    """Fit the referral rule on labelled in-distribution validation predictions (see the module docstring).

    ``unfamiliar_score``: a score name, ``"auto"`` (the first of ``neg_log_density``, ``vacuity``,
    ``mutual_info``, ``energy`` the prediction has) or None (no gate). Warns (:class:`ReferralWarning`) when the
    exams cannot support ``target_risk`` at ``delta``; raises :class:`GuaranteeUnavailableError` instead when
    ``require_guarantee``.
    """
    _check_fit_arguments(target_risk, delta, id_pass_rate, set_alpha)
    if not 0 < selection_fraction < 1:
        raise ValueError(f"selection_fraction: expected a number in (0, 1), got {selection_fraction!r}")
    validation = validation.detach().to("cpu")
    y = _labels(validation, labels)
    n = len(validation)
    names = list(class_names) if class_names is not None else [f"class {k}" for k in range(validation.num_classes)]
    if len(names) != validation.num_classes:
        raise ValueError(f"class_names: expected {validation.num_classes} names, got {len(names)}")
    wrong = validation.predicted != y
    problems: list[str] = []

    # 1. the unfamiliar gate: conformal p-value of the validation exams' own scores
    gate_key = _unfamiliar_key(validation, unfamiliar_score)
    gate_threshold, gate_reference = None, None
    passing = gate_pass = torch.ones(n, dtype=torch.bool)
    if gate_key is not None:
        u = validation.score(gate_key).double()
        gate_threshold, gate_reference = unfamiliar_threshold(u, id_pass_rate), ScoreReference.of(u)
        if gate_threshold == math.inf:
            problems.append(f"an in-distribution pass rate of {100 * id_pass_rate:.3g}% needs at least "
                            f"{math.ceil(1 / (1 - id_pass_rate)) - 1} validation exams before any exam can be "
                            f"referred as unfamiliar, got {n}; the unfamiliar gate is off")  # fmt: skip
        passing = u < gate_threshold  # strictly below: the exams below an order statistic are exchangeable
        gate_pass = u <= gate_threshold  # what decide() lets through
    pool = torch.nonzero(passing).squeeze(1)

    # 2. the mistake score: chosen on held-out folds, certified by binomial tests
    candidates = available_candidates(validation, [prediction_key(m) for m in mistake_scores])
    if combine:
        order = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed + 1))]
        cut = int(round(selection_fraction * len(order)))
        select, certify = order[:cut], order[cut:]
        families = 1
    else:
        select = certify = pool
        families = len(candidates)
    choice = choose_mistake_score(select_exams(validation, select), wrong[select], candidates, folds, combine, seed)
    certify_prediction = select_exams(validation, certify)
    certify_score = mistake_score(certify_prediction, choice.chosen, choice.combination)
    certificate = certify_selective_risk(certify_score, wrong[certify], target_risk, delta, coverage_levels, families)
    # about how many validation exams would certify some level, at the error rates seen at the levels here
    points = level_points(certify_score, wrong[certify], coverage_levels)
    share = max(len(certify), 1) / n  # only the passing (and, with combine, certifying) share calibrates
    sizes = [exams_needed(target_risk, delta, coverage_levels * families, risk=risk, coverage=coverage)
             for coverage, risk in _observed_points(points, len(certify), target_risk)]  # fmt: skip
    sizes = [math.ceil(s / share) for s in sizes if s is not None]
    needed = min(sizes) if sizes else None
    if not certificate.certified:
        need = (f"about {needed} validation exams would at the error rate seen here" if needed
                else "no number of exams would: the model's error exceeds the target at every coverage level")
        message = (f"{n} validation exams cannot support 'at most {100 * target_risk:.3g}% wrong among accepted "
                   f"exams' with probability {100 * (1 - delta):.3g}%; {need}")  # fmt: skip
        if require_guarantee:
            raise GuaranteeUnavailableError(message + "; validate on more exams, raise the target, or fit without "
                                            "demanding a guarantee")  # fmt: skip
        fallback = ("Every exam will be referred" if certificate.threshold == -math.inf else
                    f"The rule uses the observed point instead (coverage {100 * certificate.coverage:.1f}%, error "
                    f"{100 * certificate.risk:.1f}% on validation), which is NOT guaranteed")  # fmt: skip
        problems.append(f"{message}. {fallback}")
    for problem in problems:
        warnings.warn(f"referral: {problem}", ReferralWarning, stacklevel=2)

    # 3. conformal prediction sets for uncertain exams
    all_scores = mistake_score(validation, choice.chosen, choice.combination)
    tied = _tied(validation.probs)
    uncertain = passing & ((all_scores >= certificate.threshold) | tied)
    set_on = "uncertain" if int(uncertain.sum()) >= math.ceil(2 / set_alpha) else "all"
    members = torch.nonzero(uncertain if set_on == "uncertain" else passing).squeeze(1)
    if len(members) == 0:
        members = torch.arange(n)
    true_scores = lac_scores(validation.probs[members].double()).gather(-1, y[members].view(-1, 1)).squeeze(-1)
    set_quantile = conformal_quantile(true_scores, set_alpha)

    accepted = gate_pass & ~((all_scores >= certificate.threshold) | tied)
    selection = tuple(CandidateResult(public_name(c.name), c.held_out_aurc, c.folds_won) for c in choice.candidates)
    return ReferralRule(
        class_names=tuple(str(c) for c in names),
        unfamiliar_score=None if gate_key is None else public_name(gate_key),
        unfamiliar_threshold=gate_threshold,
        id_pass_rate=float(id_pass_rate),
        unfamiliar_reference=gate_reference,
        mistake_score=public_name(choice.chosen),
        mistake_threshold=certificate.threshold,
        mistake_reference=ScoreReference.of(all_scores),
        combination=choice.combination,
        selection=selection,
        selection_folds=folds,
        target_risk=float(target_risk),
        delta=float(delta),
        validation_n=n,
        calibration_n=certificate.n,
        calibration_coverage=certificate.coverage,
        calibration_risk=certificate.risk,
        risk_upper_bound=certificate.upper_bound,
        n_tests=certificate.n_tests,
        guaranteed=certificate.certified,
        exams_needed=needed,
        validation_coverage=float(accepted.double().mean()),
        set_alpha=float(set_alpha),
        set_quantile=set_quantile,
        set_calibration=set_on,
        set_calibration_n=len(members),
    )


# ---- deciding -----------------------------------------------------------------------------------------


def _tied(probs: Tensor) -> Tensor:
    top2 = probs.double().topk(2, dim=-1).values
    return top2[:, 0] - top2[:, 1] <= TIE_TOLERANCE


@dataclass(frozen=True)
class ScoreReading:
    """One score of one exam against its threshold, with its readable forms."""

    name: str  # public name
    value: float
    threshold: float
    fires: bool
    percentile: float  # % of validation exams with a lower score
    p_value: float | None = None  # conformal p-value (unfamiliar score only)

    def to_dict(self) -> dict[str, Any]:
        out = {"value": self.value, "threshold": _plain(self.threshold), "fires": self.fires,
               "percentile": round(self.percentile, 2)}  # fmt: skip
        if self.p_value is not None:
            out["p_value"] = self.p_value
        return out


def _plain(x: float) -> float | str:
    return "inf" if x == math.inf else "-inf" if x == -math.inf else x


@dataclass(frozen=True)
class ExamDecision:
    exam: str
    decision: str  # accept / refer: unfamiliar / refer: uncertain
    reason: str
    diagnosis: str | None  # the class, only when the exam is accepted
    leading_class: str | None  # argmax p, None when the top classes tie
    confidence: float  # max_k p_k
    probabilities: dict[str, float]
    prediction_set: tuple[str, ...] | None  # for uncertain exams
    scores: tuple[ScoreReading, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"exam": self.exam, "decision": self.decision, "reason": self.reason, "diagnosis": self.diagnosis,
                "leading_class": self.leading_class, "confidence": self.confidence,
                "probabilities": self.probabilities,
                "prediction_set": None if self.prediction_set is None else list(self.prediction_set),
                "scores": {s.name: s.to_dict() for s in self.scores}}  # fmt: skip

    def flat(self) -> dict[str, Any]:
        """One flat row for a CSV: ``p_<class>``, and per score ``<name>``, ``<name>_threshold``,
        ``<name>_percentile`` (and ``<name>_p_value`` for the unfamiliar score); sets joined with " or "."""
        row: dict[str, Any] = {"exam": self.exam, "decision": self.decision, "reason": self.reason,
                               "diagnosis": self.diagnosis or "", "leading_class": self.leading_class or "",
                               "confidence": self.confidence}  # fmt: skip
        row.update({f"p_{c}": p for c, p in self.probabilities.items()})
        for s in self.scores:
            row.update({s.name: s.value, f"{s.name}_threshold": _plain(s.threshold),
                        f"{s.name}_percentile": round(s.percentile, 2)})  # fmt: skip
            if s.p_value is not None:
                row[f"{s.name}_p_value"] = s.p_value
        row["prediction_set"] = " or ".join(self.prediction_set) if self.prediction_set else ""
        return row


@dataclass(frozen=True)
class Decisions:
    """The rule applied to a batch of exams; ``exam(i)`` / ``exams()`` give the per-exam records."""

    rule: ReferralRule
    outcome: tuple[str, ...]
    ids: tuple[str, ...]
    probs: Tensor  # b k
    unfamiliar: Tensor | None  # b, the unfamiliar score
    mistake: Tensor  # b, the mistake score
    tied: Tensor  # b, bool
    sets: Tensor  # b k, bool: LAC prediction sets

    def __len__(self) -> int:
        return len(self.outcome)

    def _is(self, what: str) -> Tensor:
        return torch.tensor([o == what for o in self.outcome], dtype=torch.bool)

    @property
    def accepted(self) -> Tensor:
        return self._is(ACCEPT)

    @property
    def referred_unfamiliar(self) -> Tensor:
        return self._is(REFER_UNFAMILIAR)

    @property
    def referred_uncertain(self) -> Tensor:
        return self._is(REFER_UNCERTAIN)

    def readings(self, i: int) -> tuple[ScoreReading, ...]:
        rule, out = self.rule, []
        if self.unfamiliar is not None:
            value = self.unfamiliar[i : i + 1]
            out.append(ScoreReading(rule.unfamiliar_score, float(value), rule.unfamiliar_threshold,
                                    self.outcome[i] == REFER_UNFAMILIAR,
                                    100 * float(rule.unfamiliar_reference.share_below(value)),
                                    float(rule.unfamiliar_reference.p_value(value))))  # fmt: skip
        value = self.mistake[i : i + 1]
        out.append(ScoreReading(rule.mistake_score, float(value), rule.mistake_threshold,
                                bool(value[0] >= rule.mistake_threshold),
                                100 * float(rule.mistake_reference.share_below(value))))  # fmt: skip
        return tuple(out)

    def exam(self, i: int) -> ExamDecision:
        names, rule = self.rule.class_names, self.rule
        outcome = self.outcome[i]
        leading = None if bool(self.tied[i]) else names[int(self.probs[i].argmax())]
        readings = self.readings(i)
        in_set = tuple(names[k] for k in torch.nonzero(self.sets[i]).squeeze(1).tolist())
        if outcome == REFER_UNFAMILIAR:
            r = readings[0]
            n_ref = len(rule.unfamiliar_reference.values)
            share = f"all {n_ref}" if r.percentile >= 100 else f"{r.percentile:.1f}% of the {n_ref}"
            reason = (f"unlike the exams the model was validated on: {score_label(r.name)} {r.value:.4g} is above "
                      f"{r.threshold:.4g}; more unusual than {share} validation exams (p = {r.p_value:.3g} <= "
                      f"{1 - rule.id_pass_rate:.2g})")  # fmt: skip
        elif outcome == REFER_UNCERTAIN:
            r = readings[-1]
            if leading is None:
                reason = "no class stands out: the top probabilities tie"
            else:
                reason = (f"the diagnosis is uncertain: {score_label(r.name)} {r.value:.4g} is at least "
                          f"{r.threshold:.4g}; less sure than {r.percentile:.1f}% of the validation exams")  # fmt: skip
            reason += f"; possible classes: {' or '.join(in_set) if in_set else 'none stands out'}"
        else:
            reason = "familiar and sure enough: " + "; ".join(
                f"{score_label(r.name)} {r.value:.4g} below {r.threshold:.4g}" for r in readings
            )
        return ExamDecision(
            exam=self.ids[i],
            decision=outcome,
            reason=reason,
            diagnosis=leading if outcome == ACCEPT else None,
            leading_class=leading,
            confidence=float(self.probs[i].max()),
            probabilities={c: float(self.probs[i, k]) for k, c in enumerate(names)},
            prediction_set=in_set if outcome == REFER_UNCERTAIN else None,
            scores=readings,
        )

    def exams(self) -> list[ExamDecision]:
        return [self.exam(i) for i in range(len(self))]


def decide(prediction: Prediction, rule: ReferralRule) -> Decisions:
    """Apply ``rule`` to every exam of ``prediction``: accept, refer as unfamiliar, or refer as uncertain."""
    if not isinstance(rule, ReferralRule):
        raise TypeError(f"rule: expected a ReferralRule (ReferralRule.from_dict for a stored one), got "
                        f"{type(rule).__name__}")  # fmt: skip
    prediction = prediction.detach().to("cpu")
    if prediction.num_classes != rule.n_classes:
        raise ValueError(f"prediction has {prediction.num_classes} classes; the rule was fitted for "
                         f"{rule.n_classes} ({list(rule.class_names)})")  # fmt: skip
    have = prediction.available_scores()
    needed = [s for s in (rule.unfamiliar_score, rule.mistake_score) if s is not None and s != COMBINATION]
    needed += list(rule.combination.features) if rule.combination else []
    missing = [s for s in needed if prediction_key(s) not in have]
    if missing:
        raise ValueError(f"the rule needs the score(s) {missing}, which this prediction lacks (available: "
                         f"{[public_name(k) for k in have]}); was the model's post-hoc step attached?")  # fmt: skip
    unfamiliar = None
    refer_unfamiliar = torch.zeros(len(prediction), dtype=torch.bool)
    if rule.unfamiliar_score is not None:
        unfamiliar = prediction.score(prediction_key(rule.unfamiliar_score)).double()
        refer_unfamiliar = unfamiliar > rule.unfamiliar_threshold
    key = COMBINATION if rule.mistake_score == COMBINATION else prediction_key(rule.mistake_score)
    mistake = mistake_score(prediction, key, rule.combination)
    tied = _tied(prediction.probs)
    refer_uncertain = ~refer_unfamiliar & ((mistake >= rule.mistake_threshold) | tied)
    outcome = tuple(REFER_UNFAMILIAR if f else REFER_UNCERTAIN if u else ACCEPT
                    for f, u in zip(refer_unfamiliar.tolist(), refer_uncertain.tolist()))  # fmt: skip
    ids = tuple(str(i) for i in prediction.ids) if prediction.ids else tuple(str(i) for i in range(len(prediction)))
    sets = lac_sets(prediction.probs.double(), rule.set_quantile)
    return Decisions(rule, outcome, ids, prediction.probs.double(), unfamiliar, mistake, tied, sets)
