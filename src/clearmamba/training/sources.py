"""Where training and evaluation data come from: ``builtin``, a MedMNIST-style ``.npz``, an image folder or a
manifest CSV. Every source becomes named :class:`~clearmamba.data.ExamSet` splits (``train``, ``val``,
``test``, ...), so the rest of the pipeline never branches on the source.

- ``builtin``: the simulated FFA/ICGA benchmark (held-out-device and named OOD sets included).
- ``file.npz``: ``train_images``, ``train_labels``, ``val_*``, ``test_*`` (MedMNIST layout); each image is a
  one-frame exam. Loaded with ``allow_pickle=False``.
- ``folder/``: ``folder/<class>/<image>`` (one-frame exams) or ``folder/<class>/<exam>/<frames...>``.
- ``manifest.csv``: columns ``path,label`` and optionally ``exam_id,frame_time,split,patient_id``; rows with
  the same ``exam_id`` are the frames of one exam, ordered by ``frame_time``.
Splits missing from a source are drawn from its exams (70/15/15, seeded), whole patients at a time.
Reading is done by :mod:`clearmamba.data`'s loaders, so training, evaluation and prediction read images alike.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
BUILTIN_SIZES = {"n_train": 480, "n_val": 160, "n_test": 240, "n_heldout": 160, "n_ood": 120}


def load_builtin(sizes: dict[str, int], size: int = 32, frames: int = 6, seed: int = 0, progress: bool = False,
                 classes: tuple[str, ...] | None = None):  # fmt: skip
    from clearmamba.data import SimulatorConfig, make_builtin_splits

    config = SimulatorConfig(size=size, frames=frames)
    if classes:
        config = SimulatorConfig(size=size, frames=frames, classes=tuple(classes))
    return make_builtin_splits(config, seed=seed, progress=progress, **sizes)


def read_image(path: str | Path, size: tuple[int, int] | None, in_chans: int | None) -> torch.Tensor:
    """One image file as float ``[c, h, w]`` in [0, 1], read exactly as the training loaders read it
    (``clearmamba.data.read_image``); a ``DataError`` naming the file if it cannot be read."""
    from clearmamba.data import read_image as read_array

    image = torch.from_numpy(read_array(path, channels=in_chans))
    if size is not None and tuple(image.shape[1:]) != tuple(size):
        # the same area resampling the loaders use, also for non-square checkpoints
        image = torch.nn.functional.interpolate(image[None], size=tuple(size), mode="area")[0]
    return image


def stack_exams(exams: list[list[torch.Tensor]], times: list[list[float]]):
    """Pad a list of exams (lists of ``[c, h, w]`` frames) to ``[n, t_max, c, h, w]`` + times + mask."""
    t_max = max(len(e) for e in exams)
    c, h, w = exams[0][0].shape
    frames = torch.zeros(len(exams), t_max, c, h, w)
    frame_times = torch.zeros(len(exams), t_max)
    mask = torch.zeros(len(exams), t_max, dtype=torch.bool)
    for i, (exam, exam_times) in enumerate(zip(exams, times)):
        frames[i, : len(exam)] = torch.stack(exam)
        frame_times[i, : len(exam)] = torch.tensor(exam_times, dtype=torch.float32)
        mask[i, : len(exam)] = True
    return frames, frame_times, mask


def load_npz(path: Path, seed: int = 0) -> dict:
    from clearmamba.data import DataError, load_medmnist_npz

    with np.load(path, allow_pickle=False) as data:
        present = [split for split in ("train", "val", "test") if f"{split}_images" in data.files]
        files = data.files
    if not present:
        raise DataError(f"{path}: expected arrays 'train_images'/'train_labels' (MedMNIST layout), found {files}")
    return complete_splits({split: load_medmnist_npz(path, split) for split in present}, seed)


def complete_splits(splits: dict, seed: int) -> dict:
    """Draw any missing val/test split from ``train`` (or everything from ``all``), whole patients at a time
    and stratified by class (``clearmamba.data.group_split``), so no patient lands in two splits."""
    from clearmamba.data import group_split

    if {"train", "val", "test"} <= set(splits):
        return splits
    pool_name = "train" if "train" in splits else "all"
    pool = splits.pop(pool_name)
    missing = [name for name in ("train", "val", "test") if name not in splits]
    fractions = {name: SPLIT_FRACTIONS[name] for name in missing}
    splits.update(group_split(pool, fractions, seed) if len(missing) > 1 else {missing[0]: pool})
    return splits


def load_folder(path: Path, size: int | None, in_chans: int | None, seed: int = 0) -> dict:
    from clearmamba.data import load_image_folder

    return complete_splits({"all": load_image_folder(path, channels=in_chans, size=size)}, seed)


def _manifest_split_column(path: Path) -> dict[str, str]:
    """exam id -> the ``split`` column's value; exam ids as ``clearmamba.data.load_manifest`` assigns them."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if "split" not in (c.strip() for c in reader.fieldnames or []):
            return {}
        rows = [({k.strip(): (v or "").strip() for k, v in row.items() if k}, line) for line, row in
                enumerate(reader, start=2)]  # fmt: skip
    return {(row.get("exam_id") or f"row{line}"): row.get("split") or "all" for row, line in rows}


def load_manifest(path: Path, size: int | None, in_chans: int | None, seed: int = 0) -> dict:
    from clearmamba.data import load_manifest as read_manifest

    exams = read_manifest(path, channels=in_chans, size=size)
    split_of = _manifest_split_column(path)
    names = [split_of.get(exam_id, "all") for exam_id in exams.exam_id]
    splits = {
        name: exams.subset([i for i, n in enumerate(names) if n == name], name=name) for name in dict.fromkeys(names)
    }
    return complete_splits(splits, seed)


def load_data(
    spec: str, frame_size: int | None = None, in_chans: int | None = None, seed: int = 0, builtin_sizes=None
) -> dict:
    """Named ExamSets from ``builtin``, a ``.npz``, a folder or a manifest ``.csv``."""
    if spec == "builtin":
        return load_builtin(builtin_sizes or BUILTIN_SIZES, size=frame_size or 32, seed=seed)
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"--data {spec}: no such file or folder (expected builtin, a .npz, a folder or a .csv)")
    if path.is_dir():
        return load_folder(path, frame_size, in_chans, seed)
    if path.suffix.lower() == ".npz":
        return load_npz(path, seed)
    if path.suffix.lower() == ".csv":
        return load_manifest(path, frame_size, in_chans, seed)
    raise ValueError(f"--data {spec}: unsupported file type {path.suffix!r} (expected .npz, .csv or a folder)")


def data_hash(exams) -> str:
    """SHA-256 over the frames, labels, times and masks of an ExamSet (recorded in checkpoints)."""
    digest = hashlib.sha256()
    for tensor in (exams.frames, exams.labels, exams.frame_times, exams.mask):
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def as_unknown(sets: dict, name: str):
    """All exams of ``sets`` as one OOD ExamSet with labels -1 (unknown)."""
    from clearmamba.data import UNKNOWN_LABEL, concat_examsets

    exams = concat_examsets(list(sets.values()), name=name)
    exams.labels = torch.full_like(exams.labels, UNKNOWN_LABEL)
    exams.true_labels = exams.labels.clone()
    return exams
