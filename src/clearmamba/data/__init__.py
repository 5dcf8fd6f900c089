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
    "make_camera_sets": "builtin",
    "simulate_camera_exams": "builtin",
    "Camera": "cameras",
    "CameraFamily": "camera_family",
    "CameraAugment": "camera_family",
    "CameraAugmentedExams": "camera_family",
    "TRAINING_FAMILY": "camera_family",
    "HELDOUT_CAMERAS": "camera_family",
    "non_angiography_exams": "builtin",
    "corrupted_exams": "builtin",
    "write_preview": "preview",
    "DataError": "loaders",
    "read_image": "loaders",
    "load_manifest": "loaders",
    "load_image_folder": "loaders",
    "read_idx": "mnist",
    "load_idx": "mnist",
    "load_medmnist_npz": "mnist",
    "load_fashion_mnist": "mnist",
    "load_animal_mnist": "mnist",
    "load_mnist": "mnist",
    "images_to_examset": "mnist",
    "group_split": "splits",
    "group_split_indices": "splits",
    "Preprocessing": "invariant",
    "PreprocessedExams": "invariant",
    "ExamAugment": "preprocess",
    "TransformedExams": "preprocess",
    "fov_mask": "preprocess",
    "normalise_intensity": "preprocess",
    "resize_frames": "preprocess",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"clearmamba.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'clearmamba.data' has no attribute {name!r}")
