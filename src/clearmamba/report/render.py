"""The trust report page: one self-contained HTML file (inline CSS, figures as PNG data URIs).

Every piece of user text (model, set, class names, exam ids, metadata) goes through ``html.escape``;
the page loads nothing from anywhere. The file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from clearmamba.atomic import atomic_write_text
from clearmamba.report import figures as fg
from clearmamba.report.metrics import compute_report_metrics, main_set, score_label, single_thread
from clearmamba.report.sections import (
    GLOSSARY,
    comparison_table,
    esc,
    gallery_section,
    grouping_note,
    headline,
    labelled_sets,
    metadata_table,
    per_class_tables,
    referral_table,
    score_table,
)
from clearmamba.report.summary import take_home_messages
from clearmamba.uncertainty import Prediction

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;font-size:18px;line-height:1.5;
 color:#1a1a1a;max-width:1200px;margin:0 auto;padding:24px 32px;background:#fff}
h1{font-size:32px;margin-bottom:4px} h2{font-size:26px;margin-top:48px;border-bottom:2px solid #ddd}
h3{font-size:21px} .sub{color:#555;font-size:16px}
.take{background:#f3f7fb;border-left:6px solid #0072B2;padding:12px 24px;margin:20px 0}
.take li{margin:8px 0}
.cards{display:flex;flex-wrap:wrap;gap:20px;margin:20px 0}
.card{flex:1 1 260px;border:1px solid #ccc;border-radius:10px;padding:16px 20px}
.card .big{font-size:56px;font-weight:700;line-height:1.1}
.card .who{font-size:19px;font-weight:700}
.caption{font-size:17px;color:#333;max-width:900px}
figure{margin:16px 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
table{border-collapse:collapse;margin:12px 0;font-size:17px}
th,td{border:1px solid #ccc;padding:6px 10px;text-align:right;vertical-align:top}
th{background:#f2f2f2} td.l,th.l{text-align:left} td.best{font-weight:700;background:#eaf4ea}
.ci{color:#666;font-size:14px;white-space:nowrap}
.gallery .exam{border:1px solid #ddd;border-radius:8px;padding:10px 14px;margin:14px 0}
.wrong{color:#D55E00;font-weight:700} .right{color:#0072B2;font-weight:700}
pre{white-space:pre-wrap;font-size:14px;margin:0}
"""


def _figure(uri: str, alt: str, caption: str) -> str:
    img = f'<img src="{esc(uri)}" alt="{esc(alt)}">'
    return f'<figure>{img}<figcaption class="caption">{esc(caption)}</figcaption></figure>'


# ---- figures ------------------------------------------------------------------------------------------


def _figures_html(
    predictions: Mapping[str, Mapping[str, Prediction]], metrics: Mapping, main: str | None
) -> dict[str, str]:
    models = metrics["models"]
    out: dict[str, str] = {}
    if main is not None:
        have = [
            (m, predictions[m][main])
            for m in predictions
            if models[m]["sets"].get(main, {}).get("role") == "in-distribution"
        ]
        wrong = [(m, p.confidence[p.predicted != p.labels]) for m, p in have]
        out["wrong"] = _figure(
            fg.wrong_confidence_figure(wrong),
            "confidence of wrong answers",
            f"Every dot is an exam of '{main}' the model got wrong, placed at how sure the model was. "
            "Dots far to the right are confident mistakes, the dangerous kind.",
        )
        curves = [(m, p.score(models[m]["primary_score"]), p.predicted == p.labels) for m, p in have]
        out["referral"] = _figure(
            fg.referral_figure(
                curves, f"Refer the least sure exams of '{main}' to a doctor", metrics["referral_fractions"]
            ),
            "accuracy after referral",
            "Read from left to right: as the model hands more of the exams it is least sure about to a doctor, "
            "its accuracy on the exams it keeps should rise. A curve that rises steeply means the model knows "
            "when it does not know. Dots mark the operating points of the table below.",
        )
        hist = [
            (m, score_label(models[m]["primary_score"]), p.score(models[m]["primary_score"]), p.predicted == p.labels)
            for m, p in have
        ]
        out["hist"] = _figure(
            fg.right_wrong_histogram_figure(hist),
            "uncertainty on right and wrong answers",
            f"How uncertain each model was on the exams of '{main}' it got right (blue) and wrong (orange-red). "
            "The further apart the two humps, the better uncertainty warns of a mistake.",
        )
    panels = []
    n_models = sum(any(e["role"] == "in-distribution" for e in models[m]["sets"].values()) for m in predictions)
    for set_name in labelled_sets(metrics):
        for m in predictions:
            entry = models[m]["sets"].get(set_name, {})
            if entry.get("role") == "in-distribution":
                p = predictions[m][set_name]
                panels.append((f"{m}\n'{set_name}', ECE {100 * entry['ece']:.1f}%", p.probs, p.labels))
    if panels:
        out["reliability"] = _figure(
            fg.reliability_figure(panels, cols=n_models if n_models > 1 else 3),
            "reliability diagrams",
            "Each bar collects the answers given with about the same confidence (10 bins) and shows how often "
            "they were right; small numbers are how many answers each bar holds (pale bars: fewer than 5, "
            "mostly chance). Bars on the dashed 'honest' line mean the "
            "model's confidence can be taken at face value; bars below it mean it claims more than it delivers.",
        )
    ood_panels = []
    for reference, oods in metrics["ood_sets"].items():
        for o in oods:
            lines = []
            for m in predictions:
                if reference in predictions[m] and o in predictions[m]:
                    s = models[m]["primary_score"]
                    auroc = models[m]["sets"][reference].get("ood_auroc", {}).get(o)
                    lines.append((m, predictions[m][reference].score(s), predictions[m][o].score(s), auroc))
            if lines:
                ood_panels.append((f"'{o}' vs '{reference}'", lines))
    if ood_panels:
        out["ood"] = _figure(
            fg.ood_roc_figure(ood_panels),
            "OOD ROC curves",
            "Can the model tell that an image is unlike anything it was trained on? Each curve flags the most "
            "uncertain images first: up = more unfamiliar images caught, right = more normal exams flagged by "
            "mistake. AUROC 1.00 is perfect, 0.50 a coin toss.",
        )
    return out


# ---- the page -----------------------------------------------------------------------------------------


def render_report(
    predictions: Mapping[str, Mapping[str, Prediction]],
    metrics: Mapping[str, Any],
    *,
    class_names: Sequence[str],
    gallery: Mapping[str, Tensor] | None = None,
    gallery_model: str | None = None,
    n_gallery: int = 8,
    title: str = "Trust report",
    metadata: Mapping[str, Any] | None = None,
) -> str:
    main = main_set(metrics)
    figs = _figures_html(predictions, metrics, main)
    messages = take_home_messages(metrics)
    set_list = ", ".join(
        f"'{s}'" + (" (OOD)" if any(s in v for v in metrics["ood_sets"].values()) else "")
        for s in dict.fromkeys(s for m in metrics["models"].values() for s in m["sets"])
    )
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<div class='sub'>Generated {esc(dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC'))} · models: "
        f"{esc(', '.join(predictions))} · evaluation sets: {esc(set_list)} · 95% intervals from "
        f"{esc(metrics['n_boot'])} bootstrap resamples{esc(grouping_note(metrics))}</div>",
        "<div class='take'><h2 style='margin-top:8px;border:none'>Take-home messages</h2><ul>"
        + "".join(f"<li>{esc(m)}</li>" for m in messages)
        + "</ul></div>",
    ]
    if main is not None:
        parts += [headline(metrics, main), figs.get("wrong", "")]
        parts.append(
            '<h2 id="compare">The models side by side</h2><p class="caption">Brackets: 95% bootstrap '
            "interval. Arrows say which direction is better; the best value of each column is shaded. "
            "AURC: average error rate over all referral levels (lower = mistakes are concentrated among "
            "the cases the model is unsure about).</p>"
        )
        parts += [comparison_table(metrics, s) for s in labelled_sets(metrics)]
        parts += [
            '<h2 id="referral">Refer to a doctor when unsure</h2>',
            figs.get("referral", ""),
            referral_table(metrics, main),
        ]
    if "ood" in figs:
        parts += ['<h2 id="ood">Spotting images the model was not trained for</h2>', figs["ood"]]
    if "reliability" in figs:
        parts += ['<h2 id="calibration">Can its confidence be taken at face value?</h2>', figs["reliability"]]
    if "hist" in figs:
        parts += ['<h2 id="hist">Uncertainty on right vs wrong answers</h2>', figs["hist"]]
    if main is not None:
        parts += [f"<h2 id=\"classes\">Per class ('{esc(main)}')</h2>", per_class_tables(metrics, main)]
    if gallery:
        ranking = gallery_model or next(iter(predictions))
        if ranking not in predictions:
            raise ValueError(f"gallery_model: {ranking!r} is not one of the models {list(predictions)}")
        parts.append(gallery_section(predictions, metrics, gallery, ranking, class_names, n_gallery))
    parts += [score_table(metrics), GLOSSARY, metadata_table(metadata), "</body></html>"]
    return "\n".join(p for p in parts if p)


def write_report(
    path: str | os.PathLike,
    predictions: Mapping[str, Mapping[str, Prediction]],
    *,
    class_names: Sequence[str],
    ood_sets: Mapping[str, Sequence[str]] | None = None,
    primary_score: Mapping[str, str] | None = None,
    gallery: Mapping[str, Tensor] | None = None,
    gallery_model: str | None = None,
    n_gallery: int = 8,
    title: str = "Trust report",
    metadata: Mapping[str, Any] | None = None,
    n_boot: int = 200,
    groups: Mapping[str, Sequence] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write the trust report for ``predictions[model][eval_set]`` to ``path`` (one HTML file) and return it.

    ``ood_sets``: ``{in-distribution set: [OOD sets]}``; by default sets named ``ood*`` are OOD and the
    first other set is their reference. ``primary_score``: per model the uncertainty score the figures
    use (default ``vacuity`` when the model has evidence, else ``msp``). ``gallery``: exam id -> frames
    ``[t, c, h, w]``; the ``n_gallery`` exams ``gallery_model`` (default: the first model) is least sure
    about are shown. ``groups``: ``{eval_set: patient id per exam}`` for a bootstrap over patients.
    ``metrics``: pass the result of :func:`compute_report_metrics` to avoid computing it twice.
    """
    if gallery_model is not None and gallery_model not in predictions:
        raise ValueError(f"gallery_model: {gallery_model!r} is not one of the models {list(predictions)}")
    predictions = {m: {s: p.detach().to("cpu") for s, p in per_set.items()} for m, per_set in predictions.items()}
    if metrics is None:
        metrics = compute_report_metrics(
            predictions,
            class_names=class_names,
            ood_sets=ood_sets,
            primary_score=primary_score,
            n_boot=n_boot,
            groups=groups,
        )
    with single_thread():
        page = render_report(
            predictions,
            metrics,
            class_names=[str(c) for c in class_names],
            gallery=gallery,
            gallery_model=gallery_model,
            n_gallery=n_gallery,
            title=title,
            metadata=metadata,
        )
    out = Path(path)
    atomic_write_text(out, page, mode=0o644)  # a report is meant to be shared
    return out
