"""The numbers a trust report shows, as one JSON-ready dict (``compute_report_metrics``).

Input: ``predictions[model][eval_set] -> Prediction``. Eval sets play one of two roles:

- **in-distribution** sets (with labels): accuracy, calibration, confidence of wrong answers,
  selective prediction (AURC, accuracy after referring the most uncertain cases), per-class table;
- **OOD** sets (labels ignored): how well the model's uncertainty separates them from their
  in-distribution reference set (OOD is the positive class: a high score should flag it).

``ood_sets`` maps an in-distribution set to its OOD sets, ``{"test": ["ood_noise", "ood_fundus"]}``.
Left as ``None``, every set whose name starts with "ood" is OOD and the first other set is the
reference. Every metric is computed with ``clearmamba.evaluation``; undefined values (a metric on
an empty group) are ``None`` so the dict dumps to strict JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from clearmamba import evaluation as ev
from clearmamba.evaluation.naming import score_label
from clearmamba.report.roles import main_set, ood_names, resolve_ood_sets, resolve_primary_score, set_names
from clearmamba.uncertainty import Prediction

__all__ = ["CALIBRATION_BINS", "compute_report_metrics", "headline_metrics", "main_set", "score_label",
           "single_thread"]

REFERRAL_FRACTIONS = (0.05, 0.1, 0.2, 0.3)
# one number of bins for ECE, the reliability diagrams and their caption
CALIBRATION_BINS = 15


@contextmanager
def single_thread():
    """Run thousands of tiny tensor ops on one thread: the bootstrap is ~20x slower when each op is
    handed to a thread pool on a busy 2-core machine (measured). Restores the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _finite(x: Any) -> float | None:
    """float, or None for NaN/inf (strict JSON has no NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _interval(result: ev.BootstrapResult) -> list[float | None]:
    return [_finite(result.low), _finite(result.high)]


# ---- per set ----------------------------------------------------------------------------------------


def _arrays(pred: Prediction, where: str) -> tuple[Tensor, Tensor]:
    probs = pred.probs.detach().cpu().double()
    labels = pred.labels.detach().cpu().long()
    k = probs.shape[1]
    if labels.numel() and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(
            f"{where}.labels: expected class indices in [0, {k}), got range {int(labels.min())}..{int(labels.max())}"
        )
    return probs, labels


def _per_class(probs: Tensor, labels: Tensor, score: Tensor, class_names: Sequence[str]) -> list[dict]:
    predicted = probs.argmax(-1)
    rows = []
    for c, name in enumerate(class_names):
        is_c, said_c = labels == c, predicted == c
        n, n_said = int(is_c.sum()), int(said_c.sum())
        hits = int((is_c & said_c).sum())
        rows.append(
            {
                "class": name,
                "n": n,
                "n_predicted": n_said,
                # recall = TP / (TP + FN), precision = TP / (TP + FP); None when the denominator is 0
                "recall": hits / n if n else None,
                "precision": hits / n_said if n_said else None,
                "mean_uncertainty": _finite(score[is_c].mean()) if n else None,
            }
        )
    return rows


def labelled_metrics(
    pred: Prediction,
    score_name: str,
    class_names: Sequence[str],
    *,
    n_boot: int,
    seed: int = 0,
    fractions: Sequence[float] = REFERRAL_FRACTIONS,
    where: str = "prediction",
    groups: Sequence | None = None,
) -> dict[str, Any]:
    """Accuracy, calibration, wrong-answer confidence and selective prediction of one labelled set.

    ``groups`` (one patient or eye id per exam) makes the bootstrap resample whole groups.
    """
    probs, labels = _arrays(pred, where)
    score = pred.score(score_name).detach().cpu().double()
    confidence, correct = ev.top_label(probs, labels)
    medians = ev.wrong_answer_confidence(probs, labels)
    detection = ev.misclassification_metrics(score, correct)

    def wrong_median(conf: Tensor, ok: Tensor) -> float:
        # the same median as ev.wrong_answer_confidence (numpy's), on a resample of (confidence, correct)
        wrong = conf[~ok]
        return float("nan") if wrong.numel() == 0 else torch.quantile(wrong, 0.5).item()

    boot = {"n_boot": max(n_boot, 1), "seed": seed, "groups": groups}
    entry: dict[str, Any] = {
        "n": len(labels),
        "accuracy": ev.accuracy(probs, labels),
        "ece": ev.ece(probs, labels, n_bins=CALIBRATION_BINS),
        "wrong_confidence_median": _finite(medians["wrong_median"]),
        "right_confidence_median": _finite(medians["right_median"]),
        "n_wrong": medians["n_wrong"],
        "aurc": ev.aurc(score, correct),
        "misclassification_auroc": _finite(detection["auroc"]),
        "macro_f1": ev.macro_f1(probs, labels),
        "brier": ev.brier(probs, labels),
        "nll": ev.nll(probs, labels),
        "mean_uncertainty": score.mean().item(),
        "accuracy_at_referral": {
            f"{round(100 * f)}": _finite(v) for f, v in ev.accuracy_at_referral(score, correct, fractions).items()
        },
        "per_class": _per_class(probs, labels, score, class_names),
    }
    if n_boot > 0:
        entry["ci95"] = {
            "accuracy": _interval(ev.bootstrap_ci(lambda ok: ok.double().mean().item(), correct, **boot)),
            "ece": _interval(ev.bootstrap_ci(_ece, probs, labels, **boot)),
            "wrong_confidence_median": _interval(ev.bootstrap_ci(wrong_median, confidence, correct, **boot)),
            "aurc": _interval(ev.bootstrap_ci(ev.aurc, score, correct, **boot)),
        }
    return entry


def _ece(probs: Tensor, labels: Tensor) -> float:
    return ev.ece(probs, labels, n_bins=CALIBRATION_BINS)


def better_mistake_score(
    pred: Prediction, primary: str, by_score: Mapping[str, Mapping[str, Any]], n_boot: int, seed: int = 0,
    groups: Sequence | None = None,
) -> dict[str, Any] | None:
    """The score with the lowest AURC when it beats the primary one, with a paired bootstrap interval of
    ``AURC(other) - AURC(primary)`` (the same resamples for both, so the interval is of the difference)."""
    others = {s: v for s, v in by_score.items() if s != primary and v.get("aurc") is not None}
    if not others or by_score.get(primary, {}).get("aurc") is None:
        return None
    best = min(others, key=lambda s: others[s]["aurc"])
    if others[best]["aurc"] >= by_score[primary]["aurc"]:
        return None
    out: dict[str, Any] = {
        "score": best,
        "aurc": others[best]["aurc"],
        "primary_aurc": by_score[primary]["aurc"],
        "misclassification_auroc": others[best].get("misclassification_auroc"),
        "primary_misclassification_auroc": by_score[primary].get("misclassification_auroc"),
    }
    if n_boot > 0:
        _, correct = ev.top_label(pred.probs, pred.labels)
        other_score, primary_score = pred.score(best).double(), pred.score(primary).double()

        def difference(a: Tensor, b: Tensor, ok: Tensor) -> float:
            return ev.aurc(a, ok) - ev.aurc(b, ok)

        ci = ev.bootstrap_ci(difference, other_score, primary_score, correct, n_boot=n_boot, seed=seed, groups=groups)
        out["difference_ci95"] = _interval(ci)
    return out


def _ood_arrays(score_in: Tensor, score_out: Tensor) -> tuple[Tensor, Tensor]:
    score = torch.cat([score_in, score_out]).double()
    is_ood = torch.cat([torch.zeros(len(score_in), dtype=torch.bool), torch.ones(len(score_out), dtype=torch.bool)])
    return score, is_ood


def ood_auroc_with_ci(
    score_in: Tensor,
    score_out: Tensor,
    n_boot: int,
    seed: int = 0,
    groups_in: Sequence | None = None,
    groups_out: Sequence | None = None,
) -> dict[str, Any]:
    """``ev.ood_metrics`` plus a bootstrap interval of the AUROC (whole groups when both sets have them)."""
    detail = ev.ood_metrics(score_in, score_out)
    out = {k: _finite(v) for k, v in detail.items()}
    if n_boot > 0:
        score, is_ood = _ood_arrays(score_in, score_out)
        groups = None
        if groups_in is not None and groups_out is not None:
            # prefixed so that an id shared by the two sets still names two different groups
            groups = [f"in:{g}" for g in groups_in] + [f"out:{g}" for g in groups_out]
        out["auroc_ci95"] = _interval(ev.bootstrap_ci(ev.auroc, score, is_ood, n_boot=n_boot, seed=seed, groups=groups))
    return out


# ---- the whole report -------------------------------------------------------------------------------


def _unlabelled(pred: Prediction, where: str) -> bool:
    """No labels, or only negative ones (``-1`` = unknown, as the built-in OOD sets carry)."""
    if pred.labels is None:
        return True
    unknown = pred.labels < 0
    if bool(unknown.all()):
        return True
    if bool(unknown.any()):
        raise ValueError(
            f"{where}.labels: {int(unknown.sum())} of {len(unknown)} labels are negative (unknown); expected "
            "all known class indices, or all unknown for an unlabelled / OOD set"
        )
    return False


def _check_inputs(predictions: Mapping[str, Mapping[str, Prediction]], class_names: Sequence[str]) -> None:
    if not predictions:
        raise ValueError("predictions: expected {model: {eval_set: Prediction}}, got an empty dict")
    for model, per_set in predictions.items():
        for name, pred in per_set.items():
            if not isinstance(pred, Prediction):
                raise TypeError(
                    f"predictions[{model!r}][{name!r}]: expected a clearmamba Prediction, got {type(pred).__name__}"
                )
            if pred.num_classes != len(class_names):
                raise ValueError(
                    f"predictions[{model!r}][{name!r}]: probs have {pred.num_classes} classes but class_names "
                    f"has {len(class_names)} ({list(class_names)})"
                )
            if len(pred) == 0:
                raise ValueError(f"predictions[{model!r}][{name!r}]: expected at least one sample, got none")


def compute_report_metrics(
    predictions: Mapping[str, Mapping[str, Prediction]],
    *,
    class_names: Sequence[str],
    ood_sets: Mapping[str, Sequence[str]] | None = None,
    primary_score: Mapping[str, str] | None = None,
    n_boot: int = 200,
    seed: int = 0,
    referral_fractions: Sequence[float] = REFERRAL_FRACTIONS,
    groups: Mapping[str, Sequence] | None = None,
    ood_score: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Every number of the trust report, JSON-ready.

    ``groups``: ``{eval_set: patient (or eye) id of each exam}``; the bootstrap of those sets then
    resamples whole patients, since exams of one patient are not independent.

    Layout: ``result["models"][model]["sets"][eval_set]`` holds ``n``, ``role`` and, for labelled
    in-distribution sets, ``accuracy``, ``ece`` (15 bins), ``wrong_confidence_median``, ``aurc`` (of
    the model's primary score), ``accuracy_at_referral`` (``{"10": acc, ...}``), ``per_class`` and
    ``ci95`` (percentile bootstrap, ``n_boot`` resamples). ``ood_auroc`` is ``{ood_set: auroc}`` on
    the reference set and on each OOD set (its own name). ``by_score`` repeats AURC and OOD AUROC
    for every available uncertainty score of that model, without intervals; ``better_mistake_score`` names
    the score that ranks the set's mistakes better (lower AURC) than the primary one, when there is one.
    ``ood_score``: per model the score that flags unfamiliar images (default: the primary score), e.g. the
    referral rule's unfamiliar-input score.
    """
    with single_thread():
        return _compute(
            predictions,
            [str(c) for c in class_names],
            ood_sets,
            primary_score,
            n_boot,
            seed,
            referral_fractions,
            _check_groups(predictions, groups),
            ood_score,
        )


def _check_groups(predictions: Mapping[str, Mapping[str, Prediction]], groups: Mapping | None) -> dict[str, list]:
    groups = dict(groups or {})
    names = set_names(predictions)
    for name, ids in groups.items():
        if name not in names:
            raise ValueError(f"groups: eval set {name!r} is not in the predictions (known: {names})")
        ids = groups[name] = [str(g) for g in ids]
        for model, per_set in predictions.items():
            if name in per_set and len(per_set[name]) != len(ids):
                raise ValueError(
                    f"groups[{name!r}]: expected one group id per exam ({len(per_set[name])} for model "
                    f"{model!r}), got {len(ids)}"
                )
    return groups


def _compute(
    predictions, class_names, ood_sets, primary_score, n_boot, seed, referral_fractions, groups, ood_score
) -> dict[str, Any]:
    _check_inputs(predictions, class_names)
    resolved = resolve_ood_sets(predictions, ood_sets)
    oods = ood_names(resolved)
    primary = resolve_primary_score(predictions, primary_score)
    flagging = resolve_primary_score(predictions, {**primary, **(ood_score or {})}) if ood_score else primary
    reference_of = {o: ref for ref, names in resolved.items() for o in names}

    models: dict[str, Any] = {}
    for model, per_set in predictions.items():
        score_name = primary[model]
        sets: dict[str, Any] = {}
        for name, pred in per_set.items():
            where = f"predictions[{model!r}][{name!r}]"
            if name in oods:
                entry = {"n": len(pred), "role": "ood", "ood_reference": reference_of[name]}
                entry["mean_uncertainty"] = pred.score(score_name).double().mean().item()
            elif _unlabelled(pred, where):
                entry = {"n": len(pred), "role": "unlabelled"}
                entry["mean_uncertainty"] = pred.score(score_name).double().mean().item()
            else:
                entry = {"role": "in-distribution"}
                entry.update(
                    labelled_metrics(
                        pred,
                        score_name,
                        class_names,
                        n_boot=n_boot,
                        seed=seed,
                        fractions=referral_fractions,
                        where=where,
                        groups=groups.get(name),
                    )
                )
            entry["by_score"] = {s: {} for s in pred.available_scores()}
            if entry["role"] == "in-distribution":
                _, correct = ev.top_label(pred.probs, pred.labels)
                for s in entry["by_score"]:
                    entry["by_score"][s]["aurc"] = ev.aurc(pred.score(s), correct)
                    detection = ev.misclassification_metrics(pred.score(s), correct)
                    entry["by_score"][s]["misclassification_auroc"] = _finite(detection["auroc"])
                entry["better_mistake_score"] = better_mistake_score(
                    pred, score_name, entry["by_score"], n_boot, seed, groups.get(name)
                )
            sets[name] = entry

        # OOD detection: the reference set's scores against each OOD set's
        for reference, names in resolved.items():
            names = [o for o in names if o in per_set]
            if reference not in per_set or not names:
                continue
            ref_entry = sets[reference]
            ref_entry.setdefault("ood_auroc", {})
            ref_entry.setdefault("ood_detail", {})
            ref_entry.setdefault("ci95", {})
            for o in names:
                detail = ood_auroc_with_ci(
                    per_set[reference].score(flagging[model]),
                    per_set[o].score(flagging[model]),
                    n_boot,
                    seed,
                    groups.get(reference),
                    groups.get(o),
                )
                ref_entry["ood_auroc"][o] = detail["auroc"]
                ref_entry["ood_detail"][o] = detail
                if "auroc_ci95" in detail:
                    ref_entry["ci95"][f"ood_auroc/{o}"] = detail["auroc_ci95"]
                sets[o]["ood_auroc"] = {o: detail["auroc"]}
                common = set(ref_entry["by_score"]) & set(sets[o]["by_score"])
                for s in common:
                    value = _finite(ev.ood_metrics(per_set[reference].score(s), per_set[o].score(s))["auroc"])
                    ref_entry["by_score"][s].setdefault("ood_auroc", {})[o] = value
                    sets[o]["by_score"][s]["ood_auroc"] = {o: value}
        models[model] = {"primary_score": score_name, "ood_score": flagging[model], "sets": sets}

    return {
        "class_names": class_names,
        "ood_sets": resolved,
        "n_boot": n_boot,
        "bootstrap_groups": sorted(groups),
        "referral_fractions": list(referral_fractions),
        "models": models,
    }


HEADLINE_KEYS = ("n", "accuracy", "ece", "wrong_confidence_median", "aurc", "ood_auroc")


def headline_metrics(metrics: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model: {eval_set: {n, accuracy, ece, wrong_confidence_median, aurc, ood_auroc}}}`` for a metrics.json.

    Keys a set does not have (accuracy of an unlabelled OOD set, ``ood_auroc`` without OOD sets) are left out.
    """
    return {
        model: {
            name: {k: entry[k] for k in HEADLINE_KEYS if k in entry} | {"primary_score": m["primary_score"]}
            for name, entry in m["sets"].items()
        }
        for model, m in metrics["models"].items()
    }
