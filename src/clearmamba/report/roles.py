"""Who is who in a report: which eval sets are OOD and against which reference, which score each
model is judged by, which set the headline is about.

``ood_sets`` maps an in-distribution set to its OOD sets, ``{"test": ["ood_noise", "ood_fundus"]}``.
Left as ``None``, every set whose name starts with "ood" is OOD and the first other set is the
reference. The primary score is ``vacuity`` (K/S) when a model has evidence, else ``msp``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from clearmamba.uncertainty import Prediction


def set_names(predictions: Mapping[str, Mapping[str, Prediction]]) -> list[str]:
    """Every eval set name across models, in first-seen order."""
    names: dict[str, None] = {}
    for per_set in predictions.values():
        names.update(dict.fromkeys(per_set))
    return list(names)


def resolve_ood_sets(
    predictions: Mapping[str, Mapping[str, Prediction]], ood_sets: Mapping[str, Sequence[str]] | None
) -> dict[str, list[str]]:
    """``{in-distribution set: [its OOD sets]}``, checked against the sets that exist."""
    names = set_names(predictions)
    if ood_sets is None:
        ood = [n for n in names if n.lower().startswith("ood")]
        reference = [n for n in names if n not in ood]
        if not ood:
            return {}
        if not reference:
            raise ValueError(
                f"ood_sets: every eval set looks OOD ({ood}); name an in-distribution reference, "
                "e.g. ood_sets={'test': [...]}"
            )
        return {reference[0]: ood}
    resolved: dict[str, list[str]] = {}
    for reference, oods in ood_sets.items():
        if isinstance(oods, str):
            raise ValueError(f"ood_sets[{reference!r}]: expected a list of OOD set names, got the string {oods!r}")
        for name in [reference, *oods]:
            if name not in names:
                raise ValueError(f"ood_sets: eval set {name!r} is not in the predictions (known: {names})")
        if reference in {o for v in ood_sets.values() for o in v}:
            raise ValueError(f"ood_sets: {reference!r} is used both as in-distribution reference and as OOD")
        resolved[reference] = list(oods)
    return resolved


def ood_names(resolved: Mapping[str, Sequence[str]]) -> set[str]:
    return {o for oods in resolved.values() for o in oods}


def resolve_primary_score(
    predictions: Mapping[str, Mapping[str, Prediction]], primary_score: Mapping[str, str] | None
) -> dict[str, str]:
    """Per model: the given score, else ``vacuity`` when every set has evidence, else ``msp``."""
    primary_score = dict(primary_score or {})
    unknown = set(primary_score) - set(predictions)
    if unknown:
        raise ValueError(f"primary_score: unknown model(s) {sorted(unknown)}; models are {list(predictions)}")
    resolved = {}
    for model, per_set in predictions.items():
        if not per_set:
            raise ValueError(f"predictions[{model!r}]: expected at least one eval set, got none")
        available = set.intersection(*(set(p.available_scores()) for p in per_set.values()))
        name = primary_score.get(model) or ("vacuity" if "vacuity" in available else "msp")
        if name not in available:
            raise ValueError(
                f"primary_score[{model!r}] = {name!r} is not available for every eval set of this model; "
                f"available: {sorted(available)}"
            )
        resolved[model] = name
    return resolved


def main_set(metrics: Mapping[str, Any]) -> str | None:
    """The set the headline is about: the first OOD reference with labels, else the first labelled set."""
    labelled = [
        name
        for m in metrics["models"].values()
        for name, entry in m["sets"].items()
        if entry["role"] == "in-distribution"
    ]
    for reference in metrics["ood_sets"]:
        if reference in labelled:
            return reference
    return labelled[0] if labelled else None
