"""Take-home messages in plain words, written from the computed numbers (nothing here is hard-coded).

Comparisons of confidence (how sure when wrong, calibration) are made only among *comparable* models: those
whose accuracy interval reaches the best model's. A model that is unsure of everything is also unsure when
wrong; that is no merit, and it is said so instead of being praised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from clearmamba.report.metrics import main_set, score_label


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def labelled_entries(metrics: Mapping[str, Any], set_name: str) -> dict[str, dict]:
    """``{model: entry}`` for the models that have labelled results on ``set_name``."""
    out = {}
    for model, m in metrics["models"].items():
        entry = m["sets"].get(set_name)
        if entry is not None and entry["role"] == "in-distribution":
            out[model] = entry
    return out


def comparable_models(entries: Mapping[str, dict], margin: float = 0.02) -> list[str]:
    """Models whose accuracy is not clearly below the best one's: their 95% accuracy interval reaches the best
    model's interval (or, without intervals, within ``margin`` of its accuracy)."""
    if not entries:
        return []
    best = max(entries, key=lambda m: entries[m]["accuracy"])
    best_low = (entries[best].get("ci95", {}).get("accuracy") or [None])[0]
    out = []
    for model, e in entries.items():
        high = (e.get("ci95", {}).get("accuracy") or [None, None])[1]
        if best_low is not None and high is not None:
            keep = high >= best_low
        else:
            keep = e["accuracy"] >= entries[best]["accuracy"] - margin
        if keep:
            out.append(model)
    return out


def _separated(low_entry: dict, high_entry: dict, key: str) -> bool | None:
    """True when the 95 % interval of the lower value ends below the start of the higher one's."""
    try:
        return low_entry["ci95"][key][1] < high_entry["ci95"][key][0]
    except (KeyError, TypeError, IndexError):
        return None


def _noise_note(separated: bool | None) -> str:
    if separated is None:
        return ""
    if separated:
        return " The 95% intervals do not overlap."
    return " The 95% intervals overlap, so this difference may be chance."


def _left_out_note(entries: Mapping[str, dict], comparable: Sequence[str]) -> str:
    left_out = [m for m in entries if m not in comparable]
    if not left_out:
        return ""
    parts = ", ".join(f"{m} ({pct(entries[m]['accuracy'])} accurate)" for m in left_out)
    return (f" Left out of this comparison: {parts}; its accuracy is clearly below the best model's, and a model "
            "that is unsure of most answers is also unsure when wrong.")  # fmt: skip


def wrong_confidence_message(entries: Mapping[str, dict]) -> str | None:
    have = {m: e for m, e in entries.items() if e.get("wrong_confidence_median") is not None}
    if not have:
        return None
    comparable = comparable_models(have)
    if len(have) == 1:
        model, e = next(iter(have.items()))
        return (f"When {model} was wrong, it was typically {pct(e['wrong_confidence_median'])} sure of its wrong "
                f"answer (and {pct(e.get('right_confidence_median'))} sure of its right ones).")  # fmt: skip
    pool = {m: have[m] for m in comparable}
    note = _left_out_note(have, comparable)
    if len(pool) == 1:
        model, e = next(iter(pool.items()))
        return (f"When {model} was wrong, it was typically {pct(e['wrong_confidence_median'])} sure of its wrong "
                f"answer (and {pct(e.get('right_confidence_median'))} of its right ones).{note}")  # fmt: skip
    ordered = sorted(pool, key=lambda m: pool[m]["wrong_confidence_median"])
    low, high = ordered[0], ordered[-1]
    lo_v, hi_v = pool[low]["wrong_confidence_median"], pool[high]["wrong_confidence_median"]
    separated = _noise_note(_separated(pool[low], pool[high], "wrong_confidence_median"))
    return (
        f"When it was wrong, {high} was typically {pct(hi_v)} sure of its wrong answer; {low} only {pct(lo_v)} "
        f"(and {pct(pool[low].get('right_confidence_median'))} of its right ones). A low confidence on mistakes "
        f"is what lets a doctor see which answers to double-check.{separated}{note}"
    )


def accuracy_message(entries: Mapping[str, dict], set_name: str) -> str | None:
    if not entries:
        return None
    parts = [f"{pct(e['accuracy'])} for {m}" for m, e in entries.items()]
    n = max(e["n"] for e in entries.values())
    return f"On '{set_name}' ({n} exams) accuracy was " + ", ".join(parts) + "."


def referral_message(entries: Mapping[str, dict], fraction: float) -> str | None:
    key = f"{round(100 * fraction)}"
    parts = []
    for model, e in entries.items():
        after = e["accuracy_at_referral"].get(key)
        if after is not None:
            parts.append(f"from {pct(e['accuracy'])} to {pct(after)} for {model}")
    if not parts:
        return None
    return (
        f"Referring the {key}% of exams the model is least sure about (by its primary score) to a doctor changes "
        "accuracy on the remaining exams " + "; ".join(parts) + "."
    )


def ood_messages(metrics: Mapping[str, Any]) -> list[str]:
    messages = []
    for reference, oods in metrics["ood_sets"].items():
        for ood in oods:
            values = {
                model: m["sets"][reference]["ood_auroc"].get(ood)
                for model, m in metrics["models"].items()
                if reference in m["sets"] and "ood_auroc" in m["sets"][reference]
            }
            values = {m: v for m, v in values.items() if v is not None}
            if not values:
                continue
            ordered = sorted(values, key=values.get, reverse=True)
            parts = [
                f"{ordered[0]}'s uncertainty ranks such an image above a normal exam in "
                f"{round(100 * values[ordered[0]])} of 100 pairs (AUROC {values[ordered[0]]:.2f})"
            ]
            parts += [f"{m}: {round(100 * values[m])} of 100" for m in ordered[1:]]
            text = f"Unfamiliar images ('{ood}' vs '{reference}'): " + "; ".join(parts) + "."
            weak = [m for m in ordered if values[m] < 0.6]
            if weak:
                text += (
                    " " + ", ".join(weak) + (" is" if len(weak) == 1 else " are") + " close to a coin toss (50 of 100)."
                )
            messages.append(text)
    return messages


def calibration_message(entries: Mapping[str, dict]) -> str | None:
    if not entries:
        return None
    comparable = comparable_models(entries)
    pool = {m: entries[m] for m in comparable}
    if len(pool) < 2:
        model, e = next(iter(pool.items()))
        off = f"{100 * e['ece']:.1f}"
        return (f"{model}'s stated confidence is off from its real hit rate by {off} percentage points on average "
                f"(ECE).{_left_out_note(entries, comparable) if len(entries) > 1 else ''}")  # fmt: skip
    ordered = sorted(pool, key=lambda m: pool[m]["ece"])
    best = ordered[0]
    others = "; ".join(f"{m}: {100 * pool[m]['ece']:.1f}" for m in ordered[1:])
    note = _left_out_note(entries, comparable)
    return (
        f"{best}'s stated confidence is closest to how often it is actually right: off by "
        f"{100 * pool[best]['ece']:.1f} percentage points on average (ECE; {others}).{note}"
    )


def better_score_messages(metrics: Mapping[str, Any], main: str) -> list[str]:
    """Say so when another score ranks a model's mistakes better than the score the report (or rule) uses."""
    out = []
    for model, e in labelled_entries(metrics, main).items():
        better = e.get("better_mistake_score")
        if not better:
            continue
        primary = metrics["models"][model]["primary_score"]
        ci = better.get("difference_ci95") or [None, None]
        sure = ci[1] is not None and ci[1] < 0
        if not sure and better["aurc"] > 0.9 * better["primary_aurc"]:
            continue  # a small difference the resamples do not confirm: not worth a headline
        auroc = ""
        if better.get("misclassification_auroc") is not None and better.get("primary_misclassification_auroc"):
            auroc = (f", mistake AUROC {better['misclassification_auroc']:.2f} vs "
                     f"{better['primary_misclassification_auroc']:.2f}")  # fmt: skip
        tail = " (the 95% interval of the difference excludes 0)" if sure else " (the difference may be chance)"
        out.append(f"On '{main}', {score_label(better['score'])} ranks {model}'s mistakes better than "
                   f"{score_label(primary)}, the score used here: AURC {better['aurc']:.3f} vs "
                   f"{better['primary_aurc']:.3f}{auroc}{tail}.")  # fmt: skip
    return out


def shift_messages(metrics: Mapping[str, Any], main: str) -> list[str]:
    base = labelled_entries(metrics, main)
    messages = []
    others = [
        name
        for name in dict.fromkeys(s for m in metrics["models"].values() for s in m["sets"])
        if name != main and labelled_entries(metrics, name)
    ]
    for name in others:
        parts = []
        for model, e in labelled_entries(metrics, name).items():
            if model in base and base[model]["accuracy"] - e["accuracy"] > 0.02:
                parts.append(f"{model} from {pct(base[model]['accuracy'])} to {pct(e['accuracy'])}")
        if parts:
            messages.append(f"On '{name}' accuracy drops compared with '{main}': " + "; ".join(parts) + ".")
    return messages


def take_home_messages(metrics: Mapping[str, Any], operating: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """A handful of sentences a clinician can read in a minute, each backed by a table below.

    ``operating``: the operating-point sections (``referral_view.operating_sections``); their sentences lead.
    """
    main = main_set(metrics)
    messages: list[str | None] = [m for section in operating for m in section.get("messages", [])]
    if main is not None:
        entries = labelled_entries(metrics, main)
        fractions = metrics["referral_fractions"]
        fraction = 0.1 if 0.1 in fractions else (fractions[len(fractions) // 2] if fractions else None)
        messages += [accuracy_message(entries, main), wrong_confidence_message(entries)]
        messages += better_score_messages(metrics, main)
        if fraction is not None:
            messages.append(referral_message(entries, fraction))
        messages.append(calibration_message(entries))
    messages += ood_messages(metrics)
    if main is not None:
        messages += shift_messages(metrics, main)
    smallest = min((e["n"] for m in metrics["models"].values() for e in m["sets"].values()), default=0)
    if 0 < smallest < 100:
        messages.append(f"Some evaluation sets are small (the smallest has {smallest} exams): read the 95% intervals.")
    return [m for m in messages if m]
