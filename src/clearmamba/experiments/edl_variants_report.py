"""Markdown tables of the EDL-variants study (``results.json`` -> ``table.md`` / docs/edl-variants.md)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from clearmamba.atomic import atomic_write_text

TITLES = {
    "softmax": "softmax",
    "softmax_ts": "softmax + temperature scaling",
    "ensemble": "deep ensemble",
    "edl_annealed": "EDL, KL annealed to 1",
    "edl_fixed": "EDL, KL 0.005 fixed",
    "edl_fixed_keep": "EDL, KL 0.005 fixed, target kept",
    "redl": "R-EDL",
    "iedl": "I-EDL",
}
SET_TITLES = {"fashion": "Fashion", "animal": "Animal", "letters": "Letters"}


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def title(name: str, kl_weight: float = 0.005) -> str:
    base, *steps = name.split("+")
    label = TITLES.get(base, base).replace("KL 0.005", f"KL {kl_weight:g}")
    return " + ".join([label, *steps])


def markdown_table(payload: dict) -> str:
    results, goal = payload["results"], payload["goal"]
    kl = payload.get("config", {}).get("kl_weight", 0.005)
    sets = list(next(iter(results.values()))["ood"])
    head = ["method", "score", "accuracy", "ECE", "NLL", "median conf. wrong / right",
            "wrong median, sharpest calibration", "misclass. AUROC",
            "AURC (e-3)", *[f"OOD AUROC / FPR95 {SET_TITLES.get(s, s)}" for s in sets],
            "Spearman(score, MSP)", "cost vs softmax", "goals met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        g = goal["methods"][name]
        cells = [title(name, kl), r["score"], f"{100 * r['accuracy']:.2f} %", _fmt(r["ece"]), _fmt(r["nll"]),
                 f"{_fmt(r['wrong_confidence_median'], 2)} / {_fmt(r['right_confidence_median'])}",
                 _fmt(r.get("oracle_wrong_confidence_median"), 2),
                 _fmt(r["misclassification_auroc"]), _fmt(1000 * r["aurc"], 2)]
        cells += [f"{_fmt(r['ood'][s]['auroc'])} / {_fmt(r['ood'][s]['fpr95'], 2)}" for s in sets]
        cells += [_fmt(r["spearman_with_msp"], 4), f"{r['cost_vs_softmax']:.1f}x", f"{g['passed']}/6"]
        lines.append("| " + " | ".join(cells) + " |")
    bar = " / ".join(_fmt(v) for v in goal["ensemble_ood_bar"].values())
    lines += ["", f"Goals (6): softmax accuracy (-0.1 point), ECE <= 0.02, wrong median <= 0.35, right median >= "
              f"0.95, OOD AUROC >= the ensemble's best ({bar}) on every set, one pass. \"Sharpest calibration\": "
              "the wrong-answer median after isotonic regression of correctness on the method's confidence, fitted "
              "on the test set itself (an oracle): the lowest a calibrated confidence with this ranking can go.", ""]
    lines += ["Spearman rank correlation of every score with MSP on the test set (1 = same ranking), and OOD AUROC "
              "under entropy:", ""]
    scores = ["vacuity", "mutual_info", "entropy", "expected_entropy", "neg_log_density"]
    head = ["method", *[f"rho({s}, msp)" for s in scores], *[f"entropy AUROC {SET_TITLES.get(s, s)}" for s in sets]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        rho = r.get("spearman_vs_msp", {})
        entropy = r.get("ood_entropy", r["ood"])
        cells = [title(name, kl), *[_fmt(rho.get(s), 4) for s in scores], *[_fmt(entropy[s]["auroc"]) for s in sets]]
        lines.append("| " + " | ".join(cells) + " |")
    if all("rule" in r for r in results.values()):
        lines += ["", rule_table(results, kl)]
    return "\n".join(lines) + "\n"


def rule_table(results: dict, kl: float) -> str:
    """The referral rule's two scores per method: the mistake score it chose on validation folds, with 95 %
    bootstrap intervals of its misclassification AUROC and AURC, and its unfamiliar-input score's OOD AUROC."""
    sets = list(next(iter(results.values()))["ood"])
    head = ["method", "rule's mistake score", "misclass. AUROC [95 % CI]", "AURC e-3 [95 % CI]",
            "unfamiliar score", *[f"OOD AUROC {SET_TITLES.get(s, s)}" for s in sets]]
    lines = ["The referral rule's scores (evaluation.referral, fitted on the validation hold-out):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        rule = r["rule"]
        low, high = rule["misclassification_auroc_ci"]
        a_low, a_high = rule["aurc_ci"]
        ood = rule.get("ood_auroc", {})
        cells = [title(name, kl), rule["mistake_score"], f"{_fmt(rule['misclassification_auroc'])} "
                 f"[{_fmt(low)}-{_fmt(high)}]", f"{_fmt(1000 * rule['aurc'], 2)} [{_fmt(1000 * a_low, 2)}-"
                 f"{_fmt(1000 * a_high, 2)}]", str(rule["unfamiliar_score"]), *[_fmt(ood.get(s)) for s in sets]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_doc_section(doc: str | os.PathLike, section: str, text: str) -> None:
    """Replace what lies between ``<!-- edl-variants:<section> start -->`` and ``... end -->`` in ``doc``."""
    path = Path(doc)
    start, end = f"<!-- edl-variants:{section} start -->", f"<!-- edl-variants:{section} end -->"
    content = path.read_text()
    if start not in content or end not in content or content.index(start) > content.index(end):
        raise ValueError(f"{path}: expected the markers {start!r} ... {end!r} around section {section!r}")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(path, f"{head}{start}\n{text.rstrip()}\n{end}{tail}")
