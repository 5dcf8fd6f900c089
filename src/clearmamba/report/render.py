"""The trust report page: one self-contained HTML file (inline CSS, figures as PNG data URIs).

Every piece of user text (model, set, class names, exam ids, metadata) goes through ``html.escape``;
the page loads nothing from anywhere. The file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from clearmamba.report import figures as fg
from clearmamba.report.metrics import compute_report_metrics, main_set, score_label, single_thread
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


GLOSSARY = """<h2 id="terms">Terms</h2><dl>
<dt><b>Uncertainty score</b></dt><dd>How unsure the model is about one exam; higher = less sure. For an evidential
(RaP) model K/S: the number of classes divided by the total evidence the model collected (1 = no evidence at all).
For a softmax model: 1 minus its top probability.</dd>
<dt><b>Calibration error (ECE)</b></dt><dd>How far, on average, the model's stated confidence is from how often it is
right (15 confidence bins). 0% = confidence can be taken at face value.</dd>
<dt><b>AURC</b></dt><dd>Error rate on the exams the model keeps, averaged over every share of referrals. Lower = its
mistakes sit among the exams it is unsure about, so referring those removes them.</dd>
<dt><b>AUROC</b></dt><dd>Chance that a random unfamiliar image (or a wrong answer) gets a higher uncertainty than a
random normal exam (or a right answer). 1.00 = always, 0.50 = coin toss.</dd>
<dt><b>95% interval</b></dt><dd>Range of the value over bootstrap resamples of the exams; wide intervals mean few
exams.</dd></dl>"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _pct(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _with_ci(value: float | None, ci: Sequence[float | None] | None, fmt) -> str:
    text = esc(fmt(value))
    if ci and ci[0] is not None and ci[1] is not None:
        text += f' <span class="ci">({esc(fmt(ci[0]))} to {esc(fmt(ci[1]))})</span>'
    return text


def _figure(uri: str, alt: str, caption: str) -> str:
    img = f'<img src="{esc(uri)}" alt="{esc(alt)}">'
    return f'<figure>{img}<figcaption class="caption">{esc(caption)}</figcaption></figure>'


# ---- sections -----------------------------------------------------------------------------------------


def _headline(metrics: Mapping, main: str) -> str:
    cards = []
    for model, m in metrics["models"].items():
        e = m["sets"].get(main, {})
        value = e.get("wrong_confidence_median")
        if value is None:
            continue
        cards.append(
            f'<div class="card"><div class="who">{esc(model)}</div><div class="big">{esc(_pct(value))}</div>'
            f"<div>Of the {esc(e['n_wrong'])} answers it got wrong on '{esc(main)}', it was typically "
            f"(median) {esc(_pct(value))} sure.</div></div>"
        )
    if not cards:
        return ""
    return (
        '<h2 id="wrong">How sure were the models when they were wrong?</h2><div class="cards">'
        + "".join(cards)
        + "</div>"
    )


# (key, column title, formatter, higher is better)
COLUMNS = [
    ("accuracy", "Accuracy ↑", _pct, True),
    ("ece", "Calibration error (ECE) ↓", lambda v: _pct(v, 1), False),
    ("wrong_confidence_median", "Sure when wrong (median) ↓", _pct, False),
    ("aurc", "AURC ↓", lambda v: _num(v, 3), False),
]


def _comparison_table(metrics: Mapping, set_name: str) -> str:
    rows = {
        m: v["sets"][set_name]
        for m, v in metrics["models"].items()
        if v["sets"].get(set_name, {}).get("role") == "in-distribution"
    }
    if not rows:
        return ""
    oods = metrics["ood_sets"].get(set_name, [])
    columns = list(COLUMNS) + [(f"ood_auroc/{o}", f"OOD AUROC '{o}' ↑", lambda v: _num(v, 2), True) for o in oods]

    def value(entry: dict, key: str):
        if key.startswith("ood_auroc/"):
            return entry.get("ood_auroc", {}).get(key.split("/", 1)[1])
        return entry.get(key)

    best = {}
    for key, _, _, higher in columns:
        values = [value(e, key) for e in rows.values() if value(e, key) is not None]
        if len(values) > 1:
            best[key] = max(values) if higher else min(values)
    head = "".join(f"<th>{esc(title)}</th>" for _, title, _, _ in columns)
    body = []
    for model, entry in rows.items():
        score = score_label(metrics["models"][model]["primary_score"])
        cells = [f'<td class="l">{esc(model)}<br><span class="ci">score: {esc(score)}</span></td>']
        for key, _, fmt, _ in columns:
            v = value(entry, key)
            cls = ' class="best"' if key in best and v == best[key] else ""
            cells.append(f"<td{cls}>{_with_ci(v, entry.get('ci95', {}).get(key), fmt)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    n = max(e["n"] for e in rows.values())
    return (
        f"<h3>'{esc(set_name)}' ({esc(n)} exams)</h3>"
        f'<table><tr><th class="l">Model</th>{head}</tr>{"".join(body)}</table>'
    )


def _referral_table(metrics: Mapping, set_name: str) -> str:
    fractions = metrics["referral_fractions"]
    head = "<th>refer none</th>" + "".join(f"<th>refer {round(100 * f)}%</th>" for f in fractions)
    body = []
    for model, m in metrics["models"].items():
        e = m["sets"].get(set_name)
        if not e or e["role"] != "in-distribution":
            continue
        cells = [_pct(e["accuracy"], 1)] + [
            _pct(e["accuracy_at_referral"].get(f"{round(100 * f)}"), 1) for f in fractions
        ]
        body.append(f'<tr><td class="l">{esc(model)}</td>' + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return f'<table><tr><th class="l">Accuracy on the exams kept</th>{head}</tr>{"".join(body)}</table>'


def _per_class_tables(metrics: Mapping, set_name: str) -> str:
    out = []
    for model, m in metrics["models"].items():
        e = m["sets"].get(set_name)
        if not e or e["role"] != "in-distribution":
            continue
        rows = []
        for r in e["per_class"]:
            if r["n"] == 0:
                found = "no exams of this class"
            else:
                found = f"{_pct(r['recall'])} ({round(r['recall'] * r['n'])} of {r['n']})"
            rows.append(
                f'<tr><td class="l">{esc(r["class"])}</td><td>{esc(r["n"])}</td><td>{esc(found)}</td>'
                f"<td>{esc(_pct(r['precision']))}</td><td>{esc(_num(r['mean_uncertainty'], 3))}</td></tr>"
            )
        out.append(
            f"<h3>{esc(model)}</h3><table><tr><th class='l'>Class</th><th>Exams</th><th>Found (recall)</th>"
            f"<th>Right when it said this class (precision)</th><th>Mean uncertainty "
            f"({esc(score_label(m['primary_score']))})</th></tr>{''.join(rows)}</table>"
        )
    return "".join(out)


def _score_table(metrics: Mapping) -> str:
    rows = []
    for model, m in metrics["models"].items():
        for set_name, e in m["sets"].items():
            if e["role"] != "in-distribution":
                continue
            for score, values in e["by_score"].items():
                ood = "; ".join(f"{o}: {_num(v)}" for o, v in values.get("ood_auroc", {}).items()) or "—"
                mark = " (primary)" if score == m["primary_score"] else ""
                rows.append(
                    f'<tr><td class="l">{esc(model)}</td><td class="l">{esc(set_name)}</td>'
                    f'<td class="l">{esc(score_label(score) + mark)}</td><td>{esc(_num(values.get("aurc"), 3))}</td>'
                    f'<td>{esc(_num(values.get("misclassification_auroc")))}</td><td class="l">{esc(ood)}</td></tr>'
                )
    if not rows:
        return ""
    return (
        '<h2 id="scores">Every uncertainty score, compared</h2><p class="caption">The same predictions ranked by '
        "each uncertainty score the model offers. Lower AURC = its least sure cases hold more of its errors; "
        "'flags own mistakes' = AUROC of the score for telling wrong from right answers; "
        "higher OOD AUROC = better at flagging unfamiliar images.</p>"
        '<table><tr><th class="l">Model</th><th class="l">Set</th><th class="l">Score</th><th>AURC ↓</th>'
        f'<th>Flags own mistakes (AUROC) ↑</th><th class="l">OOD AUROC ↑</th></tr>{"".join(rows)}</table>'
    )


def _metadata_table(metadata: Mapping[str, Any] | None) -> str:
    if not metadata:
        return ""
    rows = []
    for key, value in metadata.items():
        text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str, sort_keys=True)
        rows.append(f'<tr><td class="l">{esc(key)}</td><td class="l"><pre>{esc(text)}</pre></td></tr>')
    return f'<h2 id="run">How this report was made</h2><table>{"".join(rows)}</table>'


def _gallery(
    predictions: Mapping[str, Mapping[str, Prediction]],
    metrics: Mapping,
    gallery: Mapping[str, Tensor],
    ranking_model: str,
    class_names: Sequence[str],
    n_exams: int,
) -> str:
    oods = {o for v in metrics["ood_sets"].values() for o in v}
    score_name = metrics["models"][ranking_model]["primary_score"]
    candidates = []  # (score, set, index)
    for only_familiar in (True, False):
        for set_name, pred in predictions[ranking_model].items():
            if pred.ids is None or (only_familiar and set_name in oods):
                continue
            score = pred.score(score_name).double()
            candidates += [(score[i].item(), set_name, i) for i, x in enumerate(pred.ids) if str(x) in gallery]
        if candidates:
            break
    if not candidates:
        return ""
    candidates.sort(key=lambda c: -c[0])
    cards = []
    shown: set[str] = set()
    for _, set_name, i in candidates:
        exam_id = str(predictions[ranking_model][set_name].ids[i])
        if exam_id in shown:  # the same exam in two eval sets
            continue
        if len(shown) == n_exams:
            break
        shown.add(exam_id)
        labels = predictions[ranking_model][set_name].labels
        labelled = metrics["models"][ranking_model]["sets"][set_name]["role"] == "in-distribution"
        truth = class_names[int(labels[i])] if labelled else "unknown / not applicable"
        lines = []
        for model, per_set in predictions.items():
            pred = per_set.get(set_name)
            if pred is None or pred.ids is None:
                continue
            where = {str(x): j for j, x in enumerate(pred.ids)}.get(exam_id)
            if where is None:
                continue
            said = int(pred.predicted[where])
            mark = ""
            if labelled:
                mark = (
                    ' <span class="right">right</span>'
                    if said == int(labels[i])
                    else ' <span class="wrong">wrong</span>'
                )
            s = metrics["models"][model]["primary_score"]
            lines.append(
                f"<li><b>{esc(model)}</b>: said <b>{esc(class_names[said])}</b>, "
                f"{esc(_pct(pred.confidence[where].item()))} sure{mark}; uncertainty "
                f"{esc(_num(pred.score(s)[where].item(), 3))} ({esc(score_label(s))})</li>"
            )
        strip = fg.film_strip(gallery[exam_id])
        cards.append(
            f"<div class=\"exam\"><div><b>Exam {esc(exam_id)}</b> · set '{esc(set_name)}' · "
            f'true class: <b>{esc(truth)}</b></div><img src="{esc(strip)}" alt="frames of exam {esc(exam_id)}">'
            f"<ul>{''.join(lines)}</ul></div>"
        )
    return (
        f'<h2 id="gallery">The exams {esc(ranking_model)} was least sure about</h2><p class="caption">Ranked by '
        f"{esc(score_label(score_name))}. These are the cases it would send to a doctor first; each shows the "
        f'frames of the exam and what every model answered.</p><div class="gallery">{"".join(cards)}</div>'
    )


# ---- figures ------------------------------------------------------------------------------------------


def _labelled_sets(metrics: Mapping) -> list[str]:
    names = dict.fromkeys(
        s for m in metrics["models"].values() for s, e in m["sets"].items() if e["role"] == "in-distribution"
    )
    return list(names)


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
    for set_name in _labelled_sets(metrics):
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
        f"{esc(metrics['n_boot'])} bootstrap resamples</div>",
        "<div class='take'><h2 style='margin-top:8px;border:none'>Take-home messages</h2><ul>"
        + "".join(f"<li>{esc(m)}</li>" for m in messages)
        + "</ul></div>",
    ]
    if main is not None:
        parts += [_headline(metrics, main), figs.get("wrong", "")]
        parts.append(
            '<h2 id="compare">The models side by side</h2><p class="caption">Brackets: 95% bootstrap '
            "interval. Arrows say which direction is better; the best value of each column is shaded. "
            "AURC: average error rate over all referral levels (lower = mistakes are concentrated among "
            "the cases the model is unsure about).</p>"
        )
        parts += [_comparison_table(metrics, s) for s in _labelled_sets(metrics)]
        parts += [
            '<h2 id="referral">Refer to a doctor when unsure</h2>',
            figs.get("referral", ""),
            _referral_table(metrics, main),
        ]
    if "ood" in figs:
        parts += ['<h2 id="ood">Spotting images the model was not trained for</h2>', figs["ood"]]
    if "reliability" in figs:
        parts += ['<h2 id="calibration">Can its confidence be taken at face value?</h2>', figs["reliability"]]
    if "hist" in figs:
        parts += ['<h2 id="hist">Uncertainty on right vs wrong answers</h2>', figs["hist"]]
    if main is not None:
        parts += [f"<h2 id=\"classes\">Per class ('{esc(main)}')</h2>", _per_class_tables(metrics, main)]
    if gallery:
        ranking = gallery_model or next(iter(predictions))
        if ranking not in predictions:
            raise ValueError(f"gallery_model: {ranking!r} is not one of the models {list(predictions)}")
        parts.append(_gallery(predictions, metrics, gallery, ranking, class_names, n_gallery))
    parts += [_score_table(metrics), GLOSSARY, _metadata_table(metadata), "</body></html>"]
    return "\n".join(p for p in parts if p)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write the trust report for ``predictions[model][eval_set]`` to ``path`` (one HTML file) and return it.

    ``ood_sets``: ``{in-distribution set: [OOD sets]}``; by default sets named ``ood*`` are OOD and the
    first other set is their reference. ``primary_score``: per model the uncertainty score the figures
    use (default ``vacuity`` when the model has evidence, else ``msp``). ``gallery``: exam id -> frames
    ``[t, c, h, w]``; the ``n_gallery`` exams ``gallery_model`` (default: the first model) is least sure
    about are shown. ``metrics``: pass the result of :func:`compute_report_metrics` to avoid computing it twice.
    """
    predictions = {m: {s: p.detach().to("cpu") for s, p in per_set.items()} for m, per_set in predictions.items()}
    if metrics is None:
        metrics = compute_report_metrics(
            predictions, class_names=class_names, ood_sets=ood_sets, primary_score=primary_score, n_boot=n_boot
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
    _write_atomic(out, page)
    return out
