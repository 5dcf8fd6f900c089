"""Patient-level (group) splits stratified by class: no patient appears in two splits."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from clearmamba.data.examset import ExamSet

DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def group_split_indices(
    labels: Sequence[int], groups: Sequence[str], fractions: dict[str, float] | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Exam indices per split. Whole groups (patients) are assigned greedily, rarest class first, each to the
    split furthest below its target share of that group's main class, so every class is spread like
    ``fractions`` while no group is cut."""
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    total = sum(fractions.values())
    if total <= 0 or any(f < 0 for f in fractions.values()):
        raise ValueError(f"group_split_indices: fractions {fractions}; expected shares >= 0 with sum > 0")
    share = {k: v / total for k, v in fractions.items()}
    labels, groups = np.asarray(labels), np.asarray(groups)
    if len(labels) != len(groups):
        raise ValueError(f"group_split_indices: {len(labels)} labels, {len(groups)} groups; expected equal")
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups.tolist()):
        members[g].append(i)
    main_class = {g: Counter(labels[idx].tolist()).most_common(1)[0][0] for g, idx in members.items()}
    class_size = Counter(labels.tolist())
    rng = np.random.default_rng(seed)
    order = list(members)
    rng.shuffle(order)
    order.sort(key=lambda g: class_size[main_class[g]])  # stable: rare classes first, random within a class
    have: dict[str, Counter] = {k: Counter() for k in share}
    size: Counter = Counter()
    out: dict[str, list[int]] = {k: [] for k in share}
    for g in order:
        c, n = main_class[g], len(members[g])
        seen = sum(have[k][c] for k in share) + n
        grown = sum(size.values()) + n

        def deficit(k: str, c=c, seen=seen, grown=grown) -> tuple[float, float]:
            # how far split k falls below its share of class c, then of all exams, after adding this group
            return share[k] * seen - have[k][c], share[k] * grown - size[k]

        pick = max(share, key=deficit)
        have[pick][c] += n
        size[pick] += n
        out[pick].extend(members[g])
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in out.items()}


def group_split(
    exams: ExamSet, fractions: dict[str, float] | None = None, seed: int = 0
) -> dict[str, ExamSet]:
    """Split an ExamSet by ``patient_id``, stratified by label (see ``group_split_indices``)."""
    parts = group_split_indices(exams.labels.tolist(), exams.patient_id, fractions, seed)
    return {name: exams.subset(idx, name=name) for name, idx in parts.items()}
