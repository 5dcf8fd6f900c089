"""The sections of the trust report page as HTML strings: tables, headline cards, gallery, glossary.

Every piece of user text goes through :func:`esc` (``html.escape``); numbers are formatted here.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from clearmamba.report import figures as fg
from clearmamba.report.metrics import score_label
from clearmamba.uncertainty import Prediction

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


def grouping_note(metrics: Mapping) -> str:
    grouped = metrics.get("bootstrap_groups") or []
    if not grouped:
        return " of exams"
    return " of whole patients (" + ", ".join(f"'{g}'" for g in grouped) + "), of exams elsewhere"


def pct(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def with_ci(value: float | None, ci: Sequence[float | None] | None, fmt) -> str:
    text = esc(fmt(value))
    if ci and ci[0] is not None and ci[1] is not None:
        text += f' <span class="ci">({esc(fmt(ci[0]))} to {esc(fmt(ci[1]))})</span>'
    return text


# ---- sections -----------------------------------------------------------------------------------------


def headline(metrics: Mapping, main: str) -> str:
    cards = []
    for model, m in metrics["models"].items():
        e = m["sets"].get(main, {})
        value = e.get("wrong_confidence_median")
        if value is None:
            continue
        cards.append(
            f'<div class="card"><div class="who">{esc(model)}</div><div class="big">{esc(pct(value))}</div>'
            f"<div>Of the {esc(e['n_wrong'])} answers it got wrong on '{esc(main)}', it was typically "
            f"(median) {esc(pct(value))} sure.</div></div>"
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
    ("accuracy", "Accuracy ↑", pct, True),
    ("ece", "Calibration error (ECE) ↓", lambda v: pct(v, 1), False),
    ("wrong_confidence_median", "Sure when wrong (median) ↓", pct, False),
    ("aurc", "AURC ↓", lambda v: num(v, 3), False),
]


def comparison_table(metrics: Mapping, set_name: str) -> str:
    rows = {
        m: v["sets"][set_name]
        for m, v in metrics["models"].items()
        if v["sets"].get(set_name, {}).get("role") == "in-distribution"
    }
    if not rows:
        return ""
    oods = metrics["ood_sets"].get(set_name, [])
    columns = list(COLUMNS) + [(f"ood_auroc/{o}", f"OOD AUROC '{o}' ↑", lambda v: num(v, 2), True) for o in oods]

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
            cells.append(f"<td{cls}>{with_ci(v, entry.get('ci95', {}).get(key), fmt)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    n = max(e["n"] for e in rows.values())
    return (
        f"<h3>'{esc(set_name)}' ({esc(n)} exams)</h3>"
        f'<table><tr><th class="l">Model</th>{head}</tr>{"".join(body)}</table>'
    )


def referral_table(metrics: Mapping, set_name: str) -> str:
    fractions = metrics["referral_fractions"]
    head = "<th>refer none</th>" + "".join(f"<th>refer {round(100 * f)}%</th>" for f in fractions)
    body = []
    for model, m in metrics["models"].items():
        e = m["sets"].get(set_name)
        if not e or e["role"] != "in-distribution":
            continue
        cells = [pct(e["accuracy"], 1)] + [
            pct(e["accuracy_at_referral"].get(f"{round(100 * f)}"), 1) for f in fractions
        ]
        body.append(f'<tr><td class="l">{esc(model)}</td>' + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return f'<table><tr><th class="l">Accuracy on the exams kept</th>{head}</tr>{"".join(body)}</table>'


def per_class_tables(metrics: Mapping, set_name: str) -> str:
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
                found = f"{pct(r['recall'])} ({round(r['recall'] * r['n'])} of {r['n']})"
            rows.append(
                f'<tr><td class="l">{esc(r["class"])}</td><td>{esc(r["n"])}</td><td>{esc(found)}</td>'
                f"<td>{esc(pct(r['precision']))}</td><td>{esc(num(r['mean_uncertainty'], 3))}</td></tr>"
            )
        out.append(
            f"<h3>{esc(model)}</h3><table><tr><th class='l'>Class</th><th>Exams</th><th>Found (recall)</th>"
            f"<th>Right when it said this class (precision)</th><th>Mean uncertainty "
            f"({esc(score_label(m['primary_score']))})</th></tr>{''.join(rows)}</table>"
        )
    return "".join(out)


def score_table(metrics: Mapping) -> str:
    rows = []
    for model, m in metrics["models"].items():
        for set_name, e in m["sets"].items():
            if e["role"] != "in-distribution":
                continue
            for score, values in e["by_score"].items():
                ood = "; ".join(f"{o}: {num(v)}" for o, v in values.get("ood_auroc", {}).items()) or "—"
                mark = " (primary)" if score == m["primary_score"] else ""
                rows.append(
                    f'<tr><td class="l">{esc(model)}</td><td class="l">{esc(set_name)}</td>'
                    f'<td class="l">{esc(score_label(score) + mark)}</td><td>{esc(num(values.get("aurc"), 3))}</td>'
                    f'<td>{esc(num(values.get("misclassification_auroc")))}</td><td class="l">{esc(ood)}</td></tr>'
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


def metadata_table(metadata: Mapping[str, Any] | None) -> str:
    if not metadata:
        return ""
    rows = []
    for key, value in metadata.items():
        text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str, sort_keys=True)
        rows.append(f'<tr><td class="l">{esc(key)}</td><td class="l"><pre>{esc(text)}</pre></td></tr>')
    return f'<h2 id="run">How this report was made</h2><table>{"".join(rows)}</table>'


def gallery_section(
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
                f"{esc(pct(pred.confidence[where].item()))} sure{mark}; uncertainty "
                f"{esc(num(pred.score(s)[where].item(), 3))} ({esc(score_label(s))})</li>"
            )
        try:
            strip = fg.film_strip(gallery[exam_id])
        except (ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"gallery[{exam_id!r}]: {error}") from error
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


def labelled_sets(metrics: Mapping) -> list[str]:
    names = dict.fromkeys(
        s for m in metrics["models"].values() for s, e in m["sets"].items() if e["role"] == "in-distribution"
    )
    return list(names)
