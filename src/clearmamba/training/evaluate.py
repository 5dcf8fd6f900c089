"""Evaluation outputs shared by ``clearmamba evaluate`` and ``clearmamba demo``: ``metrics.json``, the per-exam
CSV and the HTML report, all read through each checkpoint's own referral rule (never decided again here).

The rule itself is fitted once, at training (:func:`fit_rule`, the one call of
:func:`clearmamba.evaluation.fit_referral_rule`), and stored in the run record.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from clearmamba.atomic import atomic_write_text
from clearmamba.evaluation import ReferralRule, decide, fit_referral_rule, operating_point
from clearmamba.uncertainty import Prediction

from .checkpoint import FILE_MODE, write_json


def fit_rule(validation: Prediction, labels: torch.Tensor, class_names: Sequence[str], target_risk: float,
             delta: float, require_guarantee: bool, log: Callable[[str], None] = print) -> ReferralRule:  # fmt: skip
    """The referral rule of a trained model, from its predictions on held-out validation (or calibration) exams;
    a warning that the exams cannot support the target is passed on to ``log``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rule = fit_referral_rule(validation, labels, target_risk=target_risk, delta=delta,
                                 require_guarantee=require_guarantee, class_names=tuple(class_names))  # fmt: skip
    for warning in caught:
        log(f"warning: {warning.message}")
    return rule


def per_sample_rows(
    predictions: Mapping[str, Mapping[str, Prediction]],
    class_names: Sequence[str],
    rules: Mapping[str, ReferralRule | None] | None = None,
) -> list[dict[str, Any]]:
    """One row per model, set and exam: the label, then the rule's decision with its reason and readable scores."""
    rows = []
    for model, per_set in predictions.items():
        rule = (rules or {}).get(model)
        for set_name, prediction in per_set.items():
            decided = decide(prediction, rule).exams() if rule is not None else None
            for i in range(len(prediction)):
                label = int(prediction.labels[i]) if prediction.labels is not None else -1
                row = {"model": model, "set": set_name, "id": prediction.ids[i] if prediction.ids else str(i),
                       "label": class_names[label] if label >= 0 else "unknown",
                       "prediction": class_names[int(prediction.predicted[i])]}  # fmt: skip
                if decided is not None:
                    row.update({k: v for k, v in decided[i].flat().items() if k != "exam"})
                else:
                    row.update({f"p_{c}": float(prediction.probs[i, k]) for k, c in enumerate(class_names)})
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


SUMMARY_FIELDS = ("unfamiliar_score", "unfamiliar_threshold", "id_pass_rate", "mistake_score", "mistake_threshold",
                  "target_risk", "delta", "guaranteed", "risk_upper_bound", "validation_n", "calibration_n",
                  "calibration_coverage", "validation_coverage", "exams_needed")  # fmt: skip


def rule_summary(rule: ReferralRule) -> dict[str, Any]:
    """The rule's thresholds and promise, without its stored validation scores (those stay in the record)."""
    return {name: getattr(rule, name) for name in SUMMARY_FIELDS} | {"in_words": rule.describe()}


def operating_points(predictions: Mapping[str, Mapping[str, Prediction]],
                     rules: Mapping[str, ReferralRule | None]) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per model and set: the rule's coverage, error among accepted exams and referrals by reason."""
    out = {}
    for model, per_set in predictions.items():
        rule = rules.get(model)
        if rule is None:
            continue
        out[model] = {name: operating_point(decide(p, rule), p.labels, name) for name, p in per_set.items()}
    return out


def write_evaluation(
    out_dir: str | Path,
    predictions: Mapping[str, Mapping[str, Prediction]],
    class_names: Sequence[str],
    ood_sets: Mapping[str, Sequence[str]] | None = None,
    rules: Mapping[str, ReferralRule | None] | None = None,
    gallery: Mapping[str, Any] | None = None,
    title: str = "clearmamba trust report",
    n_boot: int = 200,
    extra: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    provenance: Any = None,
    extra_sections: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Write ``metrics.json``, ``predictions.csv`` and ``report.html`` into ``out_dir``; return the metrics."""
    from clearmamba.report import headline_metrics, rule_metrics, write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    class_names = [str(c) for c in class_names]
    rules = {m: r for m, r in (rules or {}).items() if r is not None}
    full = rule_metrics(predictions, class_names=class_names, rules=rules, ood_sets=ood_sets, n_boot=n_boot)
    operating = operating_points(predictions, rules)
    metrics = {"models": headline_metrics(full),
               "referral": {m: {"rule": rule_summary(r),
                                "operating_point": {s: o.to_dict() for s, o in operating.get(m, {}).items()}}
                            for m, r in rules.items()},
               **(extra or {})}  # fmt: skip
    write_json(out / "metrics.json", json.loads(json.dumps(metrics, default=float)))
    write_json(out / "metrics_full.json", json.loads(json.dumps(full, default=float)))
    write_per_sample_csv(out / "predictions.csv", per_sample_rows(predictions, class_names, rules))
    write_report(out / "report.html", predictions, class_names=class_names, ood_sets=ood_sets, gallery=gallery,
                 metrics=full, title=title, metadata=metadata, rules=rules, provenance=provenance,
                 operating=operating, extra_sections=extra_sections)  # fmt: skip
    return metrics


def provenance_of(runs: Mapping[str, tuple[Any, Path]], command: str):
    """The report's provenance from run records and their folders: version, seed, split, data and checkpoint
    hashes (one checkpoint row per model when there are several)."""
    from clearmamba.report import Provenance

    from .checkpoint import read_config, resolve_checkpoint

    records = {name: record for name, (record, _) in runs.items()}
    first = next(iter(records.values()))
    rule = first.data.split
    split = (f"given by the source: {', '.join(rule.given) or 'none'}; drawn: {', '.join(rule.drawn) or 'none'} "
             f"(seed {rule.seed}, by {rule.group_by})")  # fmt: skip
    hashes = {name: read_config(resolve_checkpoint(folder))["weights"]["sha256"] for name, (_, folder) in runs.items()}
    single = len(hashes) == 1
    return Provenance(seed=first.train.seed, split=split, data=first.data.source, command=command,
                      data_sha256=first.data.source_sha256, torch_version=first.versions.torch,
                      checkpoint_sha256=next(iter(hashes.values())) if single else None,
                      extra=() if single else tuple((f"checkpoint {n}", f"{h[:16]}… (SHA-256)")
                                                    for n, h in hashes.items()))  # fmt: skip


def gallery_frames(sets: Mapping[str, Any]) -> dict[str, Any]:
    """exam id -> its real frames and their times, for the report's gallery of referred exams."""
    from clearmamba.report import GalleryExam

    frames = {}
    for exams in sets.values():
        for i, exam_id in enumerate(exams.exam_id):
            real = exams.mask[i]
            frames[exam_id] = GalleryExam(exams.frames[i][real], exams.frame_times[i][real].tolist())
    return frames
