"""The referral part of the report: each checkpoint's own operating point, the exams to refer, and the gallery.

Everything comes from the model's :class:`~clearmamba.evaluation.ReferralRule` through
:func:`~clearmamba.evaluation.decide` and :func:`~clearmamba.evaluation.operating_point`; nothing here
re-decides a threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from clearmamba.evaluation import (
    REFER_UNCERTAIN,
    REFER_UNFAMILIAR,
    Decisions,
    OperatingPoint,
    ReferralRule,
    decide,
    operating_point,
)
from clearmamba.evaluation.naming import score_label
from clearmamba.report import figures as fg
from clearmamba.report.view import cell, pct
from clearmamba.uncertainty import Prediction


@dataclass(frozen=True)
class GalleryExam:
    """Frames ``[t, c, h, w]`` of one exam and, when known, each frame's time after injection in seconds."""

    frames: Tensor
    times: Sequence[float] | None = None


def as_gallery_exam(exam_id: str, value: Any) -> GalleryExam:
    if isinstance(value, GalleryExam):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return GalleryExam(value[0], None if value[1] is None else [float(t) for t in value[1]])
    return GalleryExam(value)


def check_rules(predictions: Mapping[str, Mapping[str, Prediction]], rules: Mapping[str, Any] | None) -> dict:
    rules = dict(rules or {})
    for model, rule in rules.items():
        if model not in predictions:
            raise ValueError(f"rules: {model!r} is not one of the models {list(predictions)}")
        if not isinstance(rule, ReferralRule):
            raise TypeError(f"rules[{model!r}]: expected a ReferralRule (ReferralRule.from_dict for a stored one), "
                            f"got {type(rule).__name__}")  # fmt: skip
    return rules


def all_decisions(predictions, rules) -> dict[str, dict[str, Decisions]]:
    return {m: {s: decide(p, rule) for s, p in predictions[m].items()} for m, rule in rules.items()}


def operating_points(
    predictions: Mapping[str, Mapping[str, Prediction]],
    decisions: Mapping[str, Mapping[str, Decisions]],
    metrics: Mapping[str, Any],
    groups: Mapping[str, Sequence] | None = None,
) -> dict[str, dict[str, OperatingPoint]]:
    """``{model: {set: OperatingPoint}}`` of every model with a rule, labelled sets with their accepted error."""
    out: dict[str, dict[str, OperatingPoint]] = {}
    for model, per_set in decisions.items():
        out[model] = {}
        for name, d in per_set.items():
            role = metrics["models"][model]["sets"][name]["role"]
            labels = predictions[model][name].labels if role == "in-distribution" else None
            out[model][name] = operating_point(d, labels, name, groups=(groups or {}).get(name))
    return out


def _share(p, digits: int = 1) -> dict[str, Any]:
    return cell(pct(p.value, digits) + f" ({p.count} of {p.n})", [p.low, p.high], lambda v: pct(v, digits))


def operating_sections(
    rules: Mapping[str, ReferralRule],
    points: Mapping[str, Mapping[str, OperatingPoint]],
    metrics: Mapping[str, Any],
) -> list[dict[str, Any]]:
    sections = []
    for model, rule in rules.items():
        promise = (f"Of the exams it accepts, at most {pct(rule.target_risk, 1)} are wrong, with probability at "
                   f"least {pct(1 - rule.delta)} over the draw of its {rule.validation_n} validation exams")
        if rule.guaranteed:
            status = (f"Guaranteed: certified bound {pct(rule.risk_upper_bound, 2)} on the {rule.calibration_n} "
                      "validation exams that pass the unfamiliar gate (exchangeable exams assumed).")  # fmt: skip
        else:
            need = f" About {rule.exams_needed} validation exams would." if rule.exams_needed else ""
            status = (f"NOT guaranteed: {rule.validation_n} validation exams cannot certify it; the threshold is the "
                      f"observed point (coverage {pct(rule.calibration_coverage, 1)}, error "
                      f"{pct(rule.calibration_risk, 1)} on validation).{need}")  # fmt: skip
        rows, messages = [], []
        for name, p in points[model].items():
            role = metrics["models"][model]["sets"][name]["role"]
            error = _share(p.accepted_error) if p.accepted_error is not None else cell("unknown (no labels)")
            broken = p.accepted_error is not None and p.accepted_error.n and p.accepted_error.low > rule.target_risk
            if broken:
                error["best"] = False
                error["warn"] = True
            rows.append([cell(name, left=True) | {"sub": role}, cell(p.n), _share(p.accepted), error,
                         _share(p.referred_unfamiliar), _share(p.referred_uncertain)])  # fmt: skip
            if p.accepted_error is not None and p.accepted_error.n:
                verdict = ("above the promise: the interval lies above the target, so these exams are not like the "
                           "validation exams" if broken else "within the promise" if p.accepted_error.value
                           <= rule.target_risk else "above the target, but within the noise of its interval")
                messages.append(
                    f"{model} accepted {pct(p.accepted.value)} of the {p.n} exams of '{name}'; "
                    f"{pct(p.accepted_error.value, 1)} of those were wrong ({pct(p.accepted_error.low, 1)} to "
                    f"{pct(p.accepted_error.high, 1)}), {verdict} of at most {pct(rule.target_risk, 1)}."
                )
            elif role == "ood":
                messages.append(f"{model} accepted {pct(p.accepted.value, 1)} of '{name}' (unfamiliar images; "
                                f"{pct(p.referred_unfamiliar.value, 1)} referred as unfamiliar).")  # fmt: skip
        thresholds = []
        if rule.unfamiliar_score is not None:
            thresholds.append(("unfamiliar input", score_label(rule.unfamiliar_score),
                               f"refer above {rule.unfamiliar_threshold:.4g}",
                               f"{pct(rule.id_pass_rate, 1)} of in-distribution exams should pass (conformal "
                               f"p-value > {1 - rule.id_pass_rate:.3g})"))  # fmt: skip
        thresholds.append(("uncertain diagnosis", score_label(rule.mistake_score),
                           "never refers" if rule.mistake_threshold == math.inf else
                           f"refer at or above {rule.mistake_threshold:.4g}",
                           f"target {pct(rule.target_risk, 1)} wrong among accepted, delta {rule.delta:g}, "
                           f"{rule.n_tests} tests"))  # fmt: skip
        sections.append({"model": model, "promise": promise, "status": status, "guaranteed": rule.guaranteed,
                         "rows": rows, "thresholds": thresholds, "messages": messages, "describe": rule.describe(),
                         "head": ["Set", "Exams", "Accepted (coverage)", "Wrong among accepted",
                                  "Referred: unfamiliar", "Referred: uncertain"]})  # fmt: skip
    return sections


def _order(d: Decisions) -> list[int]:
    """Referred exams: unfamiliar ones first (most unusual first), then uncertain ones (least sure first)."""
    unfamiliar = [i for i, o in enumerate(d.outcome) if o == REFER_UNFAMILIAR]
    uncertain = [i for i, o in enumerate(d.outcome) if o == REFER_UNCERTAIN]
    unfamiliar.sort(key=lambda i: -float(d.unfamiliar[i]))
    uncertain.sort(key=lambda i: (-int(d.tied[i]), -float(d.mistake[i])))
    return unfamiliar + uncertain


def referral_lists(
    decisions: Mapping[str, Mapping[str, Decisions]], metrics: Mapping[str, Any], per_set: int = 8
) -> list[dict[str, Any]]:
    """Per model and set: the referred exams with their reasons (at most ``per_set`` shown, the count of the rest).

    OOD sets are summed up in a line (the operating point table has their shares); listing their exams one by one
    would bury the queue a doctor actually works through."""
    out = []
    for model, sets in decisions.items():
        blocks = []
        for name, d in sets.items():
            order = _order(d)
            role = metrics["models"][model]["sets"][name]["role"]
            if role == "ood":
                unfamiliar = sum(o == REFER_UNFAMILIAR for o in d.outcome)
                blocks.append({"set": name, "role": role, "referred": len(order), "n": len(d), "rows": [],
                               "more": 0, "head": [], "summary": f"{unfamiliar} as unfamiliar, "
                               f"{len(order) - unfamiliar} as uncertain"})  # fmt: skip
                continue
            rows = []
            for i in order[:per_set]:
                e = d.exam(i)
                rows.append([cell(e.exam, left=True), cell(e.decision.removeprefix("refer: "), left=True),
                             cell(e.reason, left=True) | {"why": True},
                             cell(e.leading_class or "none (tie)", left=True),
                             cell(" or ".join(e.prediction_set) if e.prediction_set else "—", left=True),
                             cell(pct(e.confidence))])  # fmt: skip
            blocks.append({"set": name, "role": role, "referred": len(order), "n": len(d), "rows": rows,
                           "more": max(0, len(order) - per_set), "summary": None,
                           "head": ["Exam", "Refer as", "Why", "Leading class",
                                    f"Possible classes ({pct(1 - d.rule.set_alpha)} set)", "Confidence"]})  # fmt: skip
        out.append({"model": model, "sets": blocks})
    return out


# ---- gallery ----------------------------------------------------------------------------------------------


def _card(exam_id, set_name, truth, lines, exam: GalleryExam) -> dict[str, Any]:
    try:
        strip = fg.film_strip(exam.frames, exam.times)
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"gallery[{exam_id!r}]: {error}") from error
    return {"exam": exam_id, "set": set_name, "truth": truth, "strip": strip, "lines": lines,
            "timed": exam.times is not None}  # fmt: skip


def _model_lines(predictions, metrics, set_name, exam_id, class_names, labelled, label) -> list[dict[str, Any]]:
    lines = []
    for model, per_set in predictions.items():
        pred = per_set.get(set_name)
        if pred is None or pred.ids is None:
            continue
        where = {str(x): j for j, x in enumerate(pred.ids)}.get(exam_id)
        if where is None:
            continue
        said = int(pred.predicted[where])
        verdict = None if not labelled else ("right" if said == label else "wrong")
        s = metrics["models"][model]["primary_score"]
        lines.append({"model": model, "said": class_names[said], "sure": pct(pred.confidence[where].item()),
                      "verdict": verdict, "score": f"{pred.score(s)[where].item():.3g}",
                      "score_label": score_label(s)})  # fmt: skip
    return lines


def gallery_groups(
    predictions: Mapping[str, Mapping[str, Prediction]],
    metrics: Mapping[str, Any],
    gallery: Mapping[str, Any],
    ranking_model: str,
    class_names: Sequence[str],
    n_exams: int,
    decisions: Mapping[str, Decisions] | None,
) -> list[dict[str, Any]]:
    """Groups of gallery cards, each with a heading that says how its exams were chosen.

    With a rule: the referred exams, as "referred as uncertain" (least sure first) and "referred as unfamiliar"
    (most unusual first). Without: the exams with the highest primary score, headed by that score's name, so a
    K/S ranking never sits under a "least sure" heading beside 100 %-sure answers.
    """
    oods = {o for v in metrics["ood_sets"].values() for o in v}
    rank_sets = [s for s in predictions[ranking_model] if s not in oods] or list(predictions[ranking_model])
    shown: set[str] = set()

    def cards_for(candidates, limit: int) -> list[dict[str, Any]]:
        cards = []
        for set_name, i in candidates:
            pred = predictions[ranking_model][set_name]
            exam_id = str(pred.ids[i])
            if exam_id in shown or exam_id not in gallery or len(cards) >= limit:
                continue
            shown.add(exam_id)
            labelled = metrics["models"][ranking_model]["sets"][set_name]["role"] == "in-distribution"
            label = int(pred.labels[i]) if labelled else None
            truth = class_names[label] if labelled else "unknown / not applicable"
            lines = _model_lines(predictions, metrics, set_name, exam_id, class_names, labelled, label)
            cards.append(_card(exam_id, set_name, truth, lines, as_gallery_exam(exam_id, gallery[exam_id])))
        return cards

    with_ids = [s for s in rank_sets if predictions[ranking_model][s].ids is not None]
    if decisions is not None:
        groups = []
        limit = -(-n_exams // 2)  # half the cards for each reason
        for outcome, heading, caption in (
            (REFER_UNCERTAIN, f"Referred as uncertain: the exams {ranking_model} was least sure about",
             "Least sure first: the exams where its mistake score was highest, or its top classes tied."),
            (REFER_UNFAMILIAR, f"Referred as unfamiliar: the exams most unlike {ranking_model}'s validation exams",
             "Most unusual first. These may be answered with high confidence; the rule refers them because the "
             "model has not seen exams like them, not because it says it is unsure."),
        ):
            candidates = [(s, i) for s in with_ids for i in _order(decisions[s]) if decisions[s].outcome[i] == outcome]
            cards = cards_for(candidates, limit)
            if cards:
                groups.append({"heading": heading, "caption": caption, "cards": cards})
        return groups
    score_name = metrics["models"][ranking_model]["primary_score"]
    ranked = []
    for s in with_ids:
        score = predictions[ranking_model][s].score(score_name).double()
        ranked += [(float(score[i]), s, i) for i in range(len(score))]
    ranked.sort(key=lambda c: -c[0])
    cards = cards_for([(s, i) for _, s, i in ranked], n_exams)
    if not cards:
        return []
    sure_word = "least sure" if score_name in ("msp", "entropy") else f"highest {score_label(score_name)}"
    return [{"heading": f"The exams {ranking_model} ranks {sure_word}", "cards": cards,
             "caption": f"Ranked by {score_label(score_name)} (no referral rule was given). Each card shows the "
                        "frames of the exam, with their times when recorded, and what every model answered."}]
