"""Take-home messages in plain words, written from the computed numbers (nothing here is hard-coded)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clearmamba.report.metrics import main_set


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _labelled(metrics: Mapping[str, Any], set_name: str) -> dict[str, dict]:
    """``{model: entry}`` for the models that have labelled results on ``set_name``."""
    out = {}
    for model, m in metrics["models"].items():
        entry = m["sets"].get(set_name)
        if entry is not None and entry["role"] == "in-distribution":
            out[model] = entry
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


def wrong_confidence_message(entries: Mapping[str, dict]) -> str | None:
    have = {m: e for m, e in entries.items() if e.get("wrong_confidence_median") is not None}
    if not have:
        return None
    if len(have) == 1:
        model, e = next(iter(have.items()))
        return f"When {model} was wrong, it was typically {pct(e['wrong_confidence_median'])} sure of its wrong answer."
    ordered = sorted(have, key=lambda m: have[m]["wrong_confidence_median"])
    low, high = ordered[0], ordered[-1]
    lo_v, hi_v = have[low]["wrong_confidence_median"], have[high]["wrong_confidence_median"]
    note = _noise_note(_separated(have[low], have[high], "wrong_confidence_median"))
    return (
        f"When it was wrong, {high} was typically {pct(hi_v)} sure of its wrong answer; {low} only {pct(lo_v)}. "
        f"A low confidence on mistakes is what lets a doctor see which answers to double-check.{note}"
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
        f"Referring the {key}% of exams the model is least sure about to a doctor changes accuracy on the "
        "remaining exams " + "; ".join(parts) + "."
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
    if len(entries) < 2:
        if not entries:
            return None
        model, e = next(iter(entries.items()))
        off = f"{100 * e['ece']:.1f}"
        return f"{model}'s stated confidence is off from its real hit rate by {off} percentage points on average (ECE)."
    ordered = sorted(entries, key=lambda m: entries[m]["ece"])
    best = ordered[0]
    others = "; ".join(f"{m}: {100 * entries[m]['ece']:.1f}" for m in ordered[1:])
    return (
        f"{best}'s stated confidence is closest to how often it is actually right: off by "
        f"{100 * entries[best]['ece']:.1f} percentage points on average (ECE; {others})."
    )


def shift_messages(metrics: Mapping[str, Any], main: str) -> list[str]:
    base = _labelled(metrics, main)
    messages = []
    others = [
        name
        for name in dict.fromkeys(s for m in metrics["models"].values() for s in m["sets"])
        if name != main and _labelled(metrics, name)
    ]
    for name in others:
        parts = []
        for model, e in _labelled(metrics, name).items():
            if model in base and base[model]["accuracy"] - e["accuracy"] > 0.02:
                parts.append(f"{model} from {pct(base[model]['accuracy'])} to {pct(e['accuracy'])}")
        if parts:
            messages.append(f"On '{name}' accuracy drops compared with '{main}': " + "; ".join(parts) + ".")
    return messages


def take_home_messages(metrics: Mapping[str, Any]) -> list[str]:
    """A handful of sentences a clinician can read in a minute, each backed by a table below."""
    main = main_set(metrics)
    messages: list[str | None] = []
    if main is not None:
        entries = _labelled(metrics, main)
        fractions = metrics["referral_fractions"]
        fraction = 0.1 if 0.1 in fractions else (fractions[len(fractions) // 2] if fractions else None)
        messages += [wrong_confidence_message(entries), accuracy_message(entries, main)]
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
