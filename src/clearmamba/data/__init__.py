"""Data for clearmamba: the built-in angiography simulator, the ``ExamSet`` format and real-data loaders.

Names are imported lazily so that ``import clearmamba.data`` stays cheap (no scikit-image/scipy/PIL).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ExamSet": "examset",
    "collate_exams": "examset",
    "concat_examsets": "examset",
    "UNKNOWN_LABEL": "examset",
    "CLASS_NAMES": "angiography",
    "DeviceProfile": "angiography",
    "SimulatorConfig": "angiography",
    "simulate_exams": "angiography",
    "simulate_unseen_disease": "angiography",
    "make_builtin_splits": "builtin",
    "non_angiography_exams": "builtin",
    "corrupted_exams": "builtin",
    "write_preview": "preview",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"clearmamba.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'clearmamba.data' has no attribute {name!r}")
