"""The report's sections as plain data for the Jinja2 templates: numbers formatted here, no HTML built here.

A table is ``{"title", "caption", "head": [...], "rows": [[cell, ...], ...]}``; a cell is
``{"text", "ci" (interval text or None), "best" (shaded), "left" (left-aligned)}``. The templates escape
every string (autoescape), so user text (model, set, class names, exam ids) needs nothing here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from clearmamba.report.metrics import CALIBRATION_BINS, score_label
from clearmamba.report.summary import comparable_models, labelled_entries


def pct(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def cell(text: Any, ci: Sequence[float | None] | None = None, fmt=None, best: bool = False, left: bool = False):
    interval = None
    if ci and fmt and ci[0] is not None and ci[1] is not None:
        interval = f"{fmt(ci[0])} to {fmt(ci[1])}"
    return {"text": str(text), "ci": interval, "best": best, "left": left, "sub": None, "warn": False, "why": False}


def grouping_note(metrics: Mapping) -> str:
    grouped = metrics.get("bootstrap_groups") or []
    if not grouped:
        return " of exams"
    return " of whole patients (" + ", ".join(f"'{g}'" for g in grouped) + "), of exams elsewhere"


def labelled_sets(metrics: Mapping) -> list[str]:
    names = dict.fromkeys(
        s for m in metrics["models"].values() for s, e in m["sets"].items() if e["role"] == "in-distribution"
    )
    return list(names)


# ---- headline cards ---------------------------------------------------------------------------------------


def wrong_cards(metrics: Mapping, main: str) -> list[dict[str, Any]]:
    """Per model: how sure it was when wrong *and* when right, so an unsure-of-everything model is not praised."""
    entries = labelled_entries(metrics, main)
    comparable = comparable_models(entries)
    cards = []
    for model, e in entries.items():
        if e.get("wrong_confidence_median") is None:
            continue
        note = None
        if model not in comparable:
            note = (f"Its accuracy ({pct(e['accuracy'])}) is clearly below the best model's, so a low confidence "
                    "on its mistakes says little: it is unsure of most answers.")  # fmt: skip
        cards.append({"model": model, "big": pct(e["wrong_confidence_median"]), "n_wrong": e["n_wrong"],
                      "right": pct(e.get("right_confidence_median")), "accuracy": pct(e["accuracy"]), "note": note})
    return cards


# ---- comparison tables ------------------------------------------------------------------------------------

# (key, column title, formatter, higher is better, shaded among comparable models only)
COLUMNS = [
    ("accuracy", "Accuracy ↑", pct, True, False),
    ("ece", "Calibration error (ECE) ↓", lambda v: pct(v, 1), False, True),
    ("wrong_confidence_median", "Sure when wrong (median) ↓", pct, False, True),
    ("aurc", "AURC ↓", lambda v: num(v, 3), False, True),
]


def comparison_table(metrics: Mapping, set_name: str) -> dict[str, Any] | None:
    rows = labelled_entries(metrics, set_name)
    if not rows:
        return None
    comparable = comparable_models(rows)
    best = {}
    for key, _, _, higher, among_comparable in COLUMNS:
        pool = [rows[m].get(key) for m in (comparable if among_comparable else rows)]
        pool = [v for v in pool if v is not None]
        if len(pool) > 1:
            best[key] = max(pool) if higher else min(pool)
    body = []
    for model, entry in rows.items():
        score = score_label(metrics["models"][model]["primary_score"])
        line = [cell(model, left=True) | {"sub": f"score: {score}"}]
        for key, _, fmt, _, among_comparable in COLUMNS:
            value = entry.get(key)
            shaded = key in best and value == best[key] and (not among_comparable or model in comparable)
            text = fmt(value)
            if key == "wrong_confidence_median":
                text += f" (right: {pct(entry.get('right_confidence_median'))})"
            line.append(cell(text, entry.get("ci95", {}).get(key), fmt, best=shaded))
        body.append(line)
    n = max(e["n"] for e in rows.values())
    left_out = [m for m in rows if m not in comparable]
    caption = None
    if left_out and len(rows) > 1:
        caption = (f"Not shaded as best outside accuracy: {', '.join(left_out)} (accuracy clearly below the best "
                   "model's; low confidence and a low AURC are cheap when most answers are unsure).")  # fmt: skip
    return {"title": f"'{set_name}' ({n} exams)", "caption": caption,
            "head": ["Model", *[c[1] for c in COLUMNS]], "rows": body}  # fmt: skip


def ood_tables(metrics: Mapping) -> list[dict[str, Any]]:
    """One table per in-distribution reference: OOD sets as rows, models as columns (it stays narrow)."""
    out = []
    for reference, oods in metrics["ood_sets"].items():
        models = [m for m, v in metrics["models"].items() if "ood_auroc" in v["sets"].get(reference, {})]
        if not models:
            continue
        body = []
        for o in oods:
            line = [cell(o, left=True)]
            values = {m: metrics["models"][m]["sets"][reference]["ood_auroc"].get(o) for m in models}
            top = max((v for v in values.values() if v is not None), default=None)
            for m in models:
                ci = metrics["models"][m]["sets"][reference].get("ci95", {}).get(f"ood_auroc/{o}")
                best = len(models) > 1 and values[m] is not None and values[m] == top
                line.append(cell(num(values[m]), ci, num, best=best))
            body.append(line)
        head = ["OOD set", *[f"{m} ({score_label(metrics['models'][m]['ood_score'])}) ↑" for m in models]]
        out.append({"title": f"Unfamiliar images against '{reference}': OOD AUROC", "caption": None,
                    "head": head, "rows": body})  # fmt: skip
    return out


def referral_table(metrics: Mapping, set_name: str) -> dict[str, Any]:
    fractions = metrics["referral_fractions"]
    body = []
    for model, e in labelled_entries(metrics, set_name).items():
        values = [pct(e["accuracy"], 1)] + [pct(e["accuracy_at_referral"].get(f"{round(100 * f)}"), 1)
                                             for f in fractions]  # fmt: skip
        body.append([cell(model, left=True), *[cell(v) for v in values]])
    head = ["Accuracy on the exams kept", "refer none", *[f"refer {round(100 * f)}%" for f in fractions]]
    return {"title": None, "caption": None, "head": head, "rows": body}


def per_class_tables(metrics: Mapping, set_name: str) -> list[dict[str, Any]]:
    out = []
    for model, e in labelled_entries(metrics, set_name).items():
        body = []
        for r in e["per_class"]:
            found = ("no exams of this class" if r["n"] == 0
                     else f"{pct(r['recall'])} ({round(r['recall'] * r['n'])} of {r['n']})")  # fmt: skip
            body.append([cell(r["class"], left=True), cell(r["n"]), cell(found), cell(pct(r["precision"])),
                         cell(num(r["mean_uncertainty"], 3))])  # fmt: skip
        score = score_label(metrics["models"][model]["primary_score"])
        out.append({"title": model, "caption": None, "rows": body,
                    "head": ["Class", "Exams", "Found (recall)", "Right when it said this class (precision)",
                             f"Mean uncertainty ({score})"]})  # fmt: skip
    return out


def score_table(metrics: Mapping) -> dict[str, Any] | None:
    body = []
    for model, m in metrics["models"].items():
        for set_name, e in m["sets"].items():
            if e["role"] != "in-distribution":
                continue
            better = (e.get("better_mistake_score") or {}).get("score")
            for score, values in e["by_score"].items():
                ood = "; ".join(f"{o}: {num(v)}" for o, v in values.get("ood_auroc", {}).items()) or "—"
                mark = " (primary)" if score == m["primary_score"] else ""
                mark += " (ranks mistakes better than the primary)" if score == better else ""
                body.append([cell(model, left=True), cell(set_name, left=True),
                             cell(score_label(score) + mark, left=True, best=score == better),
                             cell(num(values.get("aurc"), 3)), cell(num(values.get("misclassification_auroc"))),
                             cell(ood, left=True)])  # fmt: skip
    if not body:
        return None
    return {"title": None, "rows": body,
            "caption": ("The same predictions ranked by each uncertainty score the model offers. Lower AURC = its "
                        "least sure cases hold more of its errors; 'flags own mistakes' = AUROC of the score for "
                        "telling wrong from right answers; higher OOD AUROC = better at flagging unfamiliar images. "
                        "A shaded score ranks this set's mistakes better than the primary one."),
            "head": ["Model", "Set", "Score", "AURC ↓", "Flags own mistakes (AUROC) ↑", "OOD AUROC ↑"]}  # fmt: skip


def metadata_rows(metadata: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    rows = []
    for key, value in (metadata or {}).items():
        text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str, sort_keys=True)
        rows.append((str(key), text))
    return rows


GLOSSARY = [
    ("Confidence", "The model's top probability for an exam (max p). The only number called confidence."),
    ("Uncertainty score", "How unsure the model is about one exam; higher = less sure. Every score is named for "
     "what it computes: '1 - top probability', 'predictive entropy', 'mutual information', K/S (evidential "
     "vacuity: classes divided by total evidence), '-log density' of the exam's features."),
    ("Percentile / p-value", "A score read against the validation exams: 'more unusual than 99.6% of the 1000 "
     "validation exams'; the conformal p-value is the share of validation exams at least as unusual (+1)/(n+1)."),
    ("Referral rule", "Refer an exam when it is unfamiliar (its unfamiliar-input score is beyond what almost all "
     "in-distribution validation exams show) or when its diagnosis is uncertain (its mistake score is at or above a "
     "threshold certified so that, with the stated confidence, at most the target share of accepted exams is "
     "wrong)."),
    ("Calibration error (ECE)", f"How far, on average, the model's stated confidence is from how often it is right "
     f"({CALIBRATION_BINS} confidence bins). 0% = confidence can be taken at face value."),
    ("AURC", "Error rate on the exams the model keeps, averaged over every share of referrals. Lower = its mistakes "
     "sit among the exams it is unsure about, so referring those removes them."),
    ("AUROC", "Chance that a random unfamiliar image (or a wrong answer) gets a higher score than a random normal "
     "exam (or a right answer). 1.00 = always, 0.50 = coin toss."),
    ("95% interval", "Range of the value over bootstrap resamples of the exams (Clopper-Pearson for the shares of "
     "the operating point); wide intervals mean few exams."),
]
