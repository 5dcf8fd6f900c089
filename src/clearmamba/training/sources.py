"""Where training and evaluation data come from: ``builtin``, a MedMNIST-style ``.npz``, an image folder or a
manifest CSV. Every source becomes named :class:`~clearmamba.data.ExamSet` splits (``train``, ``val``,
``test``, ...), so the rest of the pipeline never branches on the source.

- ``builtin``: the simulated FFA/ICGA benchmark (held-out-device and named OOD sets included).
- ``file.npz``: ``train_images``, ``train_labels``, ``val_*``, ``test_*`` (MedMNIST layout); each image is a
  one-frame exam. Loaded with ``allow_pickle=False``.
- ``folder/``: ``folder/<class>/<image>`` (one-frame exams) or ``folder/<class>/<exam>/<frames...>``.
- ``manifest.csv``: columns ``path,label`` and optionally ``exam_id,frame_time,split,patient_id``; rows with
  the same ``exam_id`` are the frames of one exam, ordered by ``frame_time``.
Splits missing from a source are drawn from its exams (70/15/15, seeded).
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


BUILTIN_SIZES = {"n_train": 480, "n_val": 160, "n_test": 240, "n_heldout": 160, "n_ood": 120}


def load_builtin(sizes: dict[str, int], size: int = 32, frames: int = 6, seed: int = 0, progress: bool = False,
                 classes: tuple[str, ...] | None = None):  # fmt: skip
    from clearmamba.data import SimulatorConfig, make_builtin_splits

    config = SimulatorConfig(size=size, frames=frames)
    if classes:
        config = SimulatorConfig(size=size, frames=frames, classes=tuple(classes))
    return make_builtin_splits(config, seed=seed, progress=progress, **sizes)


def read_image(path: str | Path, size: tuple[int, int] | None, in_chans: int | None) -> torch.Tensor:
    """One image file as float ``[c, h, w]`` in [0, 1]; a clear error naming the file if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            mode = "RGB" if in_chans == 3 or (in_chans is None and image.mode in ("RGB", "RGBA")) else "L"
            image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.BILINEAR)
            array = np.asarray(image, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ValueError(f"{path}: cannot read this image ({error})") from error
    tensor = torch.from_numpy(array)
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def exam_set(frames, labels, times, mask, ids, class_names, name, patients=None):
    from clearmamba.data import ExamSet

    n = len(ids)
    return ExamSet(
        frames=frames, labels=torch.as_tensor(labels, dtype=torch.int64), frame_times=times, mask=mask,
        exam_id=list(ids), patient_id=list(patients or ids), eye=[""] * n, modality=[""] * n, device_id=[""] * n,
        class_names=tuple(class_names), name=name,
    )  # fmt: skip


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


def random_splits(n: int, seed: int, fractions=(0.7, 0.15, 0.15)) -> dict[str, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}


def load_npz(path: Path, seed: int = 0) -> dict:
    data = np.load(path, allow_pickle=False)
    splits = {}
    class_names = None
    for split in ("train", "val", "test"):
        if f"{split}_images" not in data:
            continue
        images = data[f"{split}_images"].astype(np.float32)
        if f"{split}_labels" not in data:
            raise ValueError(f"{path}: field '{split}_labels' is missing (needed beside '{split}_images')")
        labels = data[f"{split}_labels"].reshape(-1).astype(np.int64)
        if images.max() > 1.5:
            images = images / 255.0
        frames = torch.from_numpy(images)
        frames = frames[:, None] if frames.ndim == 3 else frames.permute(0, 3, 1, 2)  # n c h w
        n = len(labels)
        if class_names is None:
            class_names = [str(k) for k in range(int(labels.max()) + 1)]
        ids = [f"{split}-{i:06d}" for i in range(n)]
        splits[split] = exam_set(
            frames[:, None], labels, torch.zeros(n, 1), torch.ones(n, 1, dtype=torch.bool), ids, class_names, split
        )
    if not splits:
        raise ValueError(f"{path}: expected arrays 'train_images'/'train_labels' (MedMNIST layout), found {data.files}")
    return complete_splits(splits, seed)


def complete_splits(splits: dict, seed: int) -> dict:
    """Draw any missing val/test split from ``train`` (or everything from ``all``)."""
    if {"train", "val", "test"} <= set(splits):
        return splits
    pool_name = "train" if "train" in splits else "all"
    pool = splits.pop(pool_name)
    parts = random_splits(len(pool), seed)
    for name in ("train", "val", "test"):
        if name not in splits:
            splits[name] = pool.subset(parts[name], name=name)
    return splits


def load_folder(path: Path, size, in_chans, seed: int = 0) -> dict:
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{path}: expected one sub-folder per class (folder/<class>/<image or exam folder>)")
    exams, times, labels, ids = [], [], [], []
    for label, name in enumerate(classes):
        for entry in sorted((path / name).iterdir()):
            files = sorted(entry.iterdir()) if entry.is_dir() else [entry]
            files = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                continue
            frames = [read_image(f, size, in_chans) for f in files]
            size = size or tuple(frames[0].shape[1:])
            in_chans = in_chans or frames[0].shape[0]
            exams.append(frames)
            times.append([float(i) for i in range(len(frames))])
            labels.append(label)
            ids.append(f"{name}/{entry.stem}")
    frames, frame_times, mask = stack_exams(exams, times)
    return complete_splits({"all": exam_set(frames, labels, frame_times, mask, ids, classes, "all")}, seed)


def load_manifest(path: Path, size, in_chans, seed: int = 0) -> dict:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a header with columns 'path' and 'label'")
    classes = sorted({r["label"] for r in rows})
    groups: dict[str, list[dict]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[row.get("exam_id") or f"row{i}"].append(row)
    by_split: dict[str, list] = defaultdict(list)
    for exam_id, group in groups.items():
        group.sort(key=lambda r: float(r.get("frame_time") or 0))
        frames = [read_image((path.parent / r["path"]).resolve(), size, in_chans) for r in group]
        size = size or tuple(frames[0].shape[1:])
        in_chans = in_chans or frames[0].shape[0]
        split = group[0].get("split") or "all"
        times = [float(r.get("frame_time") or 0) for r in group]
        by_split[split].append((frames, times, classes.index(group[0]["label"]), exam_id, group[0].get("patient_id")))
    splits = {}
    for split, items in by_split.items():
        frames, frame_times, mask = stack_exams([i[0] for i in items], [i[1] for i in items])
        patients = [i[4] or i[3] for i in items]
        splits[split] = exam_set(
            frames, [i[2] for i in items], frame_times, mask, [i[3] for i in items], classes, split, patients
        )
    return complete_splits(splits, seed)


def load_data(
    spec: str, frame_size: int | None = None, in_chans: int | None = None, seed: int = 0, builtin_sizes=None
) -> dict:
    """Named ExamSets from ``builtin``, a ``.npz``, a folder or a manifest ``.csv``."""
    if spec == "builtin":
        return load_builtin(builtin_sizes or BUILTIN_SIZES, size=frame_size or 32, seed=seed)
    size = None if frame_size is None else (frame_size, frame_size)
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"--data {spec}: no such file or folder (expected builtin, a .npz, a folder or a .csv)")
    if path.is_dir():
        return load_folder(path, size, in_chans, seed)
    if path.suffix.lower() == ".npz":
        return load_npz(path, seed)
    if path.suffix.lower() == ".csv":
        return load_manifest(path, size, in_chans, seed)
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
