"""Evaluation outputs shared by ``clearmamba evaluate`` and ``clearmamba demo``: the refer-to-a-doctor
threshold (fitted on validation for a target risk), ``metrics.json``, the per-sample CSV and the HTML report.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from clearmamba.atomic import atomic_write_text
from clearmamba.serialize import to_json
from clearmamba.uncertainty import Prediction

from .checkpoint import FILE_MODE, write_json
from .record import ReferralEntry


def primary_score(prediction: Prediction) -> str:
    """K/S (vacuity) for evidential models, 1 - max p (MSP) for softmax models."""
    return "vacuity" if prediction.evidence is not None else "msp"


def referral_rule(validation: Prediction, labels: torch.Tensor, target_risk: float = 0.05) -> ReferralEntry:
    """The largest-coverage threshold on the primary score whose accepted validation cases err <= target_risk."""
    from clearmamba.evaluation import coverage_at_risk, threshold_for_risk

    score_name = primary_score(validation)
    score = validation.score(score_name)
    correct = validation.predicted == labels
    return ReferralEntry(score_name, threshold_for_risk(score, correct, target_risk), target_risk,
                         coverage_at_risk(score, correct, target_risk), len(validation))


def refer_flags(prediction: Prediction, rule: ReferralEntry | None) -> torch.Tensor:
    """True where the case should go to a doctor (score above the validation threshold)."""
    if rule is None:
        return torch.zeros(len(prediction), dtype=torch.bool)
    return prediction.score(rule.score) > rule.threshold


def per_sample_rows(
    predictions: Mapping[str, Mapping[str, Prediction]],
    class_names: Sequence[str],
    rules: Mapping[str, ReferralEntry | None] | None = None,
) -> list[dict[str, Any]]:
    rows = []
    for model, per_set in predictions.items():
        for set_name, prediction in per_set.items():
            scores = prediction.scores()
            refer = refer_flags(prediction, (rules or {}).get(model))
            for i in range(len(prediction)):
                label = int(prediction.labels[i]) if prediction.labels is not None else -1
                row = {
                    "model": model,
                    "set": set_name,
                    "id": prediction.ids[i] if prediction.ids else str(i),
                    "label": class_names[label] if label >= 0 else "unknown",
                    "prediction": class_names[int(prediction.predicted[i])],
                }
                row.update({f"p_{c}": round(float(prediction.probs[i, k]), 6) for k, c in enumerate(class_names)})
                row.update({name: round(float(value[i]), 6) for name, value in scores.items()})
                row["refer"] = bool(refer[i])
                rows.append(row)
    return rows


def write_per_sample_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue(), FILE_MODE)


def class_pair_accuracy(prediction: Prediction, class_names: Sequence[str], pair: Sequence[str]) -> float | None:
    """Accuracy on exams whose true class is one of ``pair`` (e.g. leakage vs staining)."""
    if prediction.labels is None or any(c not in class_names for c in pair):
        return None
    ids = [class_names.index(c) for c in pair]
    keep = (prediction.labels == ids[0]) | (prediction.labels == ids[1])
    if not bool(keep.any()):
        return None
    return float((prediction.predicted[keep] == prediction.labels[keep]).float().mean())


def write_evaluation(
    out_dir: str | Path,
    predictions: Mapping[str, Mapping[str, Prediction]],
    class_names: Sequence[str],
    ood_sets: Mapping[str, Sequence[str]] | None = None,
    rules: Mapping[str, ReferralEntry | None] | None = None,
    gallery: Mapping[str, torch.Tensor] | None = None,
    title: str = "clearmamba trust report",
    n_boot: int = 200,
    extra: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``metrics.json``, ``predictions.csv`` and ``report.html`` into ``out_dir``; return the metrics."""
    from clearmamba.report import compute_report_metrics, headline_metrics, write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    class_names = [str(c) for c in class_names]
    full = compute_report_metrics(predictions, class_names=class_names, ood_sets=ood_sets, n_boot=n_boot)
    metrics = {"models": headline_metrics(full), "referral": to_json(dict(rules or {})), **(extra or {})}
    write_json(out / "metrics.json", json.loads(json.dumps(metrics, default=float)))
    write_json(out / "metrics_full.json", json.loads(json.dumps(full, default=float)))
    write_per_sample_csv(out / "predictions.csv", per_sample_rows(predictions, class_names, rules))
    write_report(
        out / "report.html",
        predictions,
        class_names=class_names,
        ood_sets=ood_sets,
        gallery=gallery,
        metrics=full,
        title=title,
        metadata=metadata,
    )
    return metrics


def gallery_frames(sets: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """exam id -> its real frames ``[t, c, h, w]`` for the report's gallery of uncertain exams."""
    frames = {}
    for exams in sets.values():
        for i, exam_id in enumerate(exams.exam_id):
            frames[exam_id] = exams.frames[i][exams.mask[i]]
    return frames
