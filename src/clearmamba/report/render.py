"""The trust report page: one self-contained HTML file (inline CSS, figures as PNG data URIs), rendered from
Jinja2 templates (``clearmamba/report/templates``) with autoescape on, so every piece of user text (model, set,
class names, exam ids, metadata) is escaped. The page loads nothing from anywhere. The file is written to a
temporary name and renamed into place.

It leads with each checkpoint's own operating point (from its :class:`~clearmamba.evaluation.ReferralRule`,
never re-decided here) and the exams to refer with their reasons, then the comparisons.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from clearmamba.atomic import atomic_write_text
from clearmamba.errors import require
from clearmamba.evaluation import OperatingPoint, ReferralRule
from clearmamba.evaluation.mistake_score import COMBINATION
from clearmamba.evaluation.naming import prediction_key
from clearmamba.report import figures as fg
from clearmamba.report import referral_view as rv
from clearmamba.report import view
from clearmamba.report.metrics import CALIBRATION_BINS, compute_report_metrics, main_set, score_label, single_thread
from clearmamba.report.provenance import Provenance
from clearmamba.report.summary import take_home_messages
from clearmamba.uncertainty import Prediction


def _environment():
    jinja2 = require("jinja2", "the trust report")
    return jinja2.Environment(
        loader=jinja2.PackageLoader("clearmamba.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _figure(uri: str, alt: str, caption: str) -> dict[str, str]:
    return {"uri": uri, "alt": alt, "caption": caption}


def _figures(predictions: Mapping[str, Mapping[str, Prediction]], metrics: Mapping, main: str | None) -> dict:
    models = metrics["models"]
    out: dict[str, Any] = {"wrong": None, "referral": None, "hist": None, "reliability": None, "ood": None}
    if main is not None:
        have = [(m, predictions[m][main]) for m in predictions
                if models[m]["sets"].get(main, {}).get("role") == "in-distribution"]  # fmt: skip
        wrong = [(m, p.confidence[p.predicted != p.labels]) for m, p in have]
        out["wrong"] = _figure(
            fg.wrong_confidence_figure(wrong), "confidence of wrong answers",
            f"Every dot is an exam of '{main}' the model got wrong, placed at how sure the model was. Dots far to "
            "the right are confident mistakes, the dangerous kind.",
        )
        curves = [(m, p.score(models[m]["primary_score"]), p.predicted == p.labels) for m, p in have]
        out["referral"] = _figure(
            fg.referral_figure(curves, f"Refer the least sure exams of '{main}' to a doctor",
                               metrics["referral_fractions"]),
            "accuracy after referral",
            "Read from left to right: as the model hands more of the exams it is least sure about (by its primary "
            "score) to a doctor, its accuracy on the exams it keeps should rise. Dots mark the operating points of "
            "the table below.",
        )  # fmt: skip
        hist = [(m, score_label(models[m]["primary_score"]), p.score(models[m]["primary_score"]),
                 p.predicted == p.labels) for m, p in have]  # fmt: skip
        out["hist"] = _figure(
            fg.right_wrong_histogram_figure(hist), "uncertainty on right and wrong answers",
            f"How uncertain each model was on the exams of '{main}' it got right (blue) and wrong (orange-red). The "
            "further apart the two humps, the better uncertainty warns of a mistake.",
        )
    panels = []
    labelled = view.labelled_sets(metrics)
    n_models = sum(any(e["role"] == "in-distribution" for e in models[m]["sets"].values()) for m in predictions)
    for set_name in labelled:
        for m in predictions:
            entry = models[m]["sets"].get(set_name, {})
            if entry.get("role") == "in-distribution":
                p = predictions[m][set_name]
                panels.append((f"{m}\n'{set_name}', ECE {100 * entry['ece']:.1f}%", p.probs, p.labels))
    if panels:
        out["reliability"] = _figure(
            fg.reliability_figure(panels, n_bins=CALIBRATION_BINS, cols=n_models if n_models > 1 else 3),
            "reliability diagrams",
            f"Each bar collects the answers given with about the same confidence ({CALIBRATION_BINS} bins, the same "
            "bins as the ECE) and shows how often they were right; small numbers are how many answers each bar "
            "holds (pale bars: fewer than 5, mostly chance). Bars on the dashed 'honest' line mean the model's "
            "confidence can be taken at face value; bars below it mean it claims more than it delivers.",
        )
    ood_panels = []
    for reference, oods in metrics["ood_sets"].items():
        for o in oods:
            lines = []
            for m in predictions:
                if reference in predictions[m] and o in predictions[m]:
                    s = models[m]["ood_score"]
                    auroc = models[m]["sets"][reference].get("ood_auroc", {}).get(o)
                    lines.append((m, predictions[m][reference].score(s), predictions[m][o].score(s), auroc))
            if lines:
                ood_panels.append((f"'{o}' vs '{reference}'", lines))
    if ood_panels:
        out["ood"] = _figure(
            fg.ood_roc_figure(ood_panels), "OOD ROC curves",
            "Can the model tell that an image is unlike anything it was trained on? Each curve flags the most "
            "unusual images first (by the model's unfamiliar-input score): up = more unfamiliar images caught, "
            "right = more normal exams flagged by mistake. AUROC 1.00 is perfect, 0.50 a coin toss.",
        )
    return out


def _provenance_line(provenance: Provenance | None) -> str:
    if provenance is None:
        return "Provenance not given (version, seed, split and hashes are unknown for this page)"
    rows = dict(provenance.rows())
    return (f"Generated {rows['created utc']} · clearmamba {rows['clearmamba version']} · checkpoint "
            f"{rows['checkpoint sha256']} · data {rows['data sha256']} · seed {rows['seed']} · split "
            f"{rows['split']}")  # fmt: skip


def render_report(
    predictions: Mapping[str, Mapping[str, Prediction]],
    metrics: Mapping[str, Any],
    *,
    class_names: Sequence[str],
    gallery: Mapping[str, Any] | None = None,
    gallery_model: str | None = None,
    n_gallery: int = 8,
    title: str = "Trust report",
    metadata: Mapping[str, Any] | None = None,
    rules: Mapping[str, ReferralRule] | None = None,
    provenance: Provenance | None = None,
    operating: Mapping[str, Mapping[str, OperatingPoint]] | None = None,
    groups: Mapping[str, Sequence] | None = None,
    referrals_per_set: int = 8,
    extra_sections: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The report page. ``extra_sections``: ``{anchor, heading, intro, tables}`` blocks shown after the referral
    table (e.g. the demo's held-out cameras), each table ``{title, caption, head, rows}`` of ``view.cell``s."""
    rules = rv.check_rules(predictions, rules)
    main = main_set(metrics)
    decisions = rv.all_decisions(predictions, rules)
    points = dict(operating or {}) or rv.operating_points(predictions, decisions, metrics, groups)
    sections = rv.operating_sections(rules, points, metrics)
    ood = {o for v in metrics["ood_sets"].values() for o in v}
    set_list = ", ".join(f"'{s}'" + (" (OOD)" if s in ood else "")
                         for s in dict.fromkeys(s for m in metrics["models"].values() for s in m["sets"]))  # fmt: skip
    ranking = gallery_model or next(iter(predictions))
    if ranking not in predictions:
        raise ValueError(f"gallery_model: {ranking!r} is not one of the models {list(predictions)}")
    page = {
        "title": title,
        "provenance_line": _provenance_line(provenance),
        "models": list(predictions),
        "set_list": set_list,
        "n_boot": metrics["n_boot"],
        "grouping_note": view.grouping_note(metrics),
        "main": main,
        "operating": sections,
        "referrals": rv.referral_lists(decisions, metrics, referrals_per_set),
        "messages": take_home_messages(metrics, sections),
        "wrong_cards": view.wrong_cards(metrics, main) if main else [],
        "figures": _figures(predictions, metrics, main),
        "comparison": [t for t in (view.comparison_table(metrics, s) for s in view.labelled_sets(metrics)) if t],
        "ood_tables": view.ood_tables(metrics),
        "referral_table": view.referral_table(metrics, main) if main else None,
        "per_class": view.per_class_tables(metrics, main) if main else [],
        "gallery": rv.gallery_groups(predictions, metrics, gallery, ranking, class_names, n_gallery,
                                     decisions.get(ranking)) if gallery else [],  # fmt: skip
        "score_table": view.score_table(metrics),
        "glossary": view.GLOSSARY,
        "provenance": (provenance or Provenance()).rows() if provenance else [("provenance", "not given")],
        "metadata": view.metadata_rows(metadata),
        "extra_sections": list(extra_sections),
    }
    return _environment().get_template("report.html.j2").render(page=page)


def _with_rule_scores(predictions, rules) -> dict[str, dict[str, Prediction]]:
    """A rule's logistic mistake score joins each prediction's scores, so tables and figures can use it."""
    out = {}
    for model, per_set in predictions.items():
        rule = (rules or {}).get(model)
        if rule is None or rule.combination is None:
            out[model] = dict(per_set)
            continue
        out[model] = {s: Prediction(**{**p.__dict__, "extra": {**p.extra, COMBINATION: rule.combination.score(p)}})
                      for s, p in per_set.items()}  # fmt: skip
    return out


def rule_metrics(
    predictions: Mapping[str, Mapping[str, Prediction]],
    *,
    class_names: Sequence[str],
    rules: Mapping[str, ReferralRule] | None = None,
    ood_sets: Mapping[str, Sequence[str]] | None = None,
    primary_score: Mapping[str, str] | None = None,
    n_boot: int = 200,
    groups: Mapping[str, Sequence] | None = None,
) -> dict[str, Any]:
    """:func:`compute_report_metrics` with each model's own rule deciding its scores: the rule's mistake score
    is the primary one and its unfamiliar-input score the one scored on OOD sets (what the page shows)."""
    rules = rv.check_rules(predictions, rules)
    predictions = _with_rule_scores({m: {s: p.detach().to("cpu") for s, p in per_set.items()}
                                     for m, per_set in predictions.items()}, rules)  # fmt: skip
    primary = {m: prediction_key(r.mistake_score) for m, r in rules.items()} | dict(primary_score or {})
    flagging = {m: prediction_key(r.unfamiliar_score) for m, r in rules.items() if r.unfamiliar_score}
    return compute_report_metrics(predictions, class_names=class_names, ood_sets=ood_sets, primary_score=primary,
                                  n_boot=n_boot, groups=groups, ood_score=flagging)  # fmt: skip


def write_report(
    path: str | os.PathLike,
    predictions: Mapping[str, Mapping[str, Prediction]],
    *,
    class_names: Sequence[str],
    ood_sets: Mapping[str, Sequence[str]] | None = None,
    primary_score: Mapping[str, str] | None = None,
    gallery: Mapping[str, Tensor | rv.GalleryExam | tuple] | None = None,
    gallery_model: str | None = None,
    n_gallery: int = 8,
    title: str = "Trust report",
    metadata: Mapping[str, Any] | None = None,
    n_boot: int = 200,
    groups: Mapping[str, Sequence] | None = None,
    metrics: Mapping[str, Any] | None = None,
    rules: Mapping[str, ReferralRule] | None = None,
    provenance: Provenance | None = None,
    operating: Mapping[str, Mapping[str, OperatingPoint]] | None = None,
    referrals_per_set: int = 8,
    extra_sections: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write the trust report for ``predictions[model][eval_set]`` to ``path`` (one HTML file) and return it.

    ``rules``: ``{model: ReferralRule}``, each checkpoint's own rule; the page then leads with its operating point
    (coverage, accepted error with intervals, the guarantee, OOD rejection per set) and the exams to refer, and
    the rule's scores become the model's primary (mistake) and OOD scores unless ``primary_score`` says
    otherwise. ``operating``: ``{model: {set: OperatingPoint}}`` already computed (e.g. read from the run
    record) to show instead of computing them. ``provenance``: version, seed, split, hashes.

    ``ood_sets``: ``{in-distribution set: [OOD sets]}``; by default sets named ``ood*`` are OOD and the first
    other set is their reference. ``primary_score``: per model the score the figures use (default: the rule's
    mistake score, else ``vacuity`` with evidence, else ``msp``). ``gallery``: exam id -> frames ``[t, c, h, w]``,
    or ``(frames, times in seconds)`` or a :class:`~clearmamba.report.referral_view.GalleryExam`.
    ``groups``: ``{eval_set: patient id per exam}`` for intervals over patients. ``metrics``: the result of
    :func:`compute_report_metrics`, to avoid computing it twice.
    """
    if gallery_model is not None and gallery_model not in predictions:
        raise ValueError(f"gallery_model: {gallery_model!r} is not one of the models {list(predictions)}")
    rules = rv.check_rules(predictions, rules)
    predictions = {m: {s: p.detach().to("cpu") for s, p in per_set.items()} for m, per_set in predictions.items()}
    predictions = _with_rule_scores(predictions, rules)
    if metrics is None:
        metrics = rule_metrics(predictions, class_names=class_names, rules=rules, ood_sets=ood_sets,
                               primary_score=primary_score, n_boot=n_boot, groups=groups)  # fmt: skip
    with single_thread():
        page = render_report(
            predictions, metrics, class_names=[str(c) for c in class_names], gallery=gallery,
            gallery_model=gallery_model, n_gallery=n_gallery, title=title, metadata=metadata, rules=rules,
            provenance=provenance, operating=operating, groups=groups, referrals_per_set=referrals_per_set,
            extra_sections=extra_sections,
        )  # fmt: skip
    out = Path(path)
    atomic_write_text(out, page, mode=0o644)  # a report is meant to be shared
    return out
