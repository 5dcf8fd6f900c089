"""A checkpoint on cameras it has never seen: per camera, accuracy, ECE, its own referral rule's coverage and
accepted error (Clopper-Pearson 95 % intervals), and how well its unfamiliar-input score tells that camera's exams
from the in-distribution test exams (AUROC). Optionally after re-estimating BatchNorm statistics on each
camera's unlabelled exams (``adaptation``: frames, times and masks only, never labels).

Used by ``clearmamba demo`` (its held-out-camera section) and the camera-shift study.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from clearmamba.data.examset import ExamSet

from .predict import predict
from .record import RunRecord

EVALUATIONS = ("plain", "+bn")  # as trained; after BatchNorm re-estimation on the camera's own exams


def proportion(count: int, n: int) -> dict[str, Any]:
    """``count / n`` with its Clopper-Pearson 95 % interval."""
    from clearmamba.evaluation.risk_control import binomial_interval

    low, high = binomial_interval(count, n) if n else (math.nan, math.nan)
    return {"value": count / n if n else math.nan, "low": low, "high": high, "count": count, "n": n}


def score_set(model: nn.Module, record: RunRecord, exams: ExamSet, test_scores: torch.Tensor | None = None,
              batch_size: int = 64) -> dict[str, Any]:  # fmt: skip
    """Accuracy, ECE, the rule's coverage and accepted error, and (given ``test_scores``) shift-detection AUROC;
    ``unfamiliar_scores`` holds the rule's unfamiliar-input score of every exam."""
    from clearmamba.evaluation import decide, ece, ood_metrics
    from clearmamba.evaluation.naming import prediction_key

    prediction = predict(model, exams, batch_size)
    correct = prediction.predicted == exams.labels
    accepted = decide(prediction, record.referral).accepted
    out = {"accuracy": proportion(int(correct.sum()), len(correct)),
           "ece": float(ece(prediction.probs, exams.labels)),
           "coverage": proportion(int(accepted.sum()), len(accepted)),
           "accepted_error": proportion(int((~correct & accepted).sum()), int(accepted.sum()))}  # fmt: skip
    out["unfamiliar_scores"] = prediction.score(prediction_key(record.referral.unfamiliar_score or "vacuity"))
    if test_scores is not None:
        out["shift_auroc"] = float(ood_metrics(test_scores, out["unfamiliar_scores"])["auroc"])
    return out


def score_cameras(model: nn.Module, record: RunRecord, test: ExamSet, cameras: Mapping[str, ExamSet],
                  evaluations: tuple[str, ...] = EVALUATIONS) -> dict[str, dict[str, Any]]:  # fmt: skip
    """``{evaluation: {"test" | camera: scores}}``; every set first goes through the record's intensity steps."""
    from clearmamba.adaptation import AdaptationConfig, UnlabelledExams, adapt

    intensity = record.preprocessing.intensity
    prepared = {"test": test, **cameras}
    if intensity.steps:
        prepared = {name: intensity.apply_examset(s) for name, s in prepared.items()}
    result: dict[str, dict[str, Any]] = {}
    for evaluation in evaluations:
        base = score_set(model, record, prepared["test"])
        per_set = {"test": base}
        for name, exams in prepared.items():
            if name == "test":
                continue
            scored = model
            if evaluation == "+bn":  # the camera's unlabelled exams: frames, times and masks only
                scored = adapt(model, UnlabelledExams.from_examset(exams), AdaptationConfig()).model
            per_set[name.removeprefix("camera_")] = score_set(scored, record, exams, base["unfamiliar_scores"])
        for entry in per_set.values():
            entry.pop("unfamiliar_scores")
        result[evaluation] = per_set
    return result


def summarize(per_set: Mapping[str, Any], target_risk: float) -> dict[str, Any]:
    """Mean and worst camera accuracy, and on how many cameras the accepted error stays <= 2x the target."""
    cameras = {k: v for k, v in per_set.items() if k != "test"}
    accuracy = [v["accuracy"]["value"] for v in cameras.values()]
    errors = {k: v["accepted_error"]["value"] for k, v in cameras.items()}
    worst = min(cameras, key=lambda k: cameras[k]["accuracy"]["value"])
    return {"test_accuracy": per_set["test"]["accuracy"]["value"],
            "mean_camera_accuracy": sum(accuracy) / len(accuracy), "worst_camera": worst,
            "worst_camera_accuracy": cameras[worst]["accuracy"]["value"],
            "cameras_within_2x_target": sum(not (e > 2 * target_risk) for e in errors.values()),
            "max_accepted_error": max((e for e in errors.values() if not math.isnan(e)), default=math.nan),
            "n_cameras": len(cameras)}  # fmt: skip
