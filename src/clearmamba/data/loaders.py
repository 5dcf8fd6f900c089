"""Real data into ``ExamSet``: a CSV manifest (one row per frame or per exam) and an image-folder layout.

Every bad input raises ``DataError`` naming the file (and CSV line) and what was expected; with
``skip_bad=True`` the offending exam is left out with a warning and counted in ``ExamSet.info["skipped"]``.
Nothing is half-loaded: an error is raised before any ExamSet exists.
"""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clearmamba.data.examset import ExamSet

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")
MANIFEST_COLUMNS = ("path", "exam_id", "patient_id", "eye", "modality", "frame_time", "label")
REQUIRED_COLUMNS = ("path", "label")


class DataError(ValueError):
    """Bad input data; the message names the file/row and what was expected."""


def read_image(path: str | Path, channels: int | None = None, size: int | None = None) -> np.ndarray:
    """An image file as float32 ``[c, h, w]`` in [0, 1]. PNG/JPEG/TIFF/BMP via Pillow, DICOM via pydicom.

    ``channels`` 1 or 3 converts (None keeps 1 for grey, 3 for colour); ``size`` resizes to ``size x size``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected an image file")
    if path.suffix.lower() == ".dcm":
        array = _read_dicom(path)
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                img.load()
                if img.mode in ("I;16", "I;16B", "I", "F"):
                    array = np.asarray(img, dtype=np.float32)
                    array = array / max(float(array.max()), 1.0)
                else:
                    img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
                    array = np.asarray(img, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise DataError(f"{path}: unreadable image ({error}); expected PNG, JPEG, TIFF or BMP") from None
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    if channels == 1 and array.shape[0] == 3:
        array = array.mean(0, keepdims=True)
    elif channels == 3 and array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    if size is not None and array.shape[1:] != (size, size):
        t = torch.from_numpy(np.ascontiguousarray(array))[None]
        array = torch.nn.functional.interpolate(t, size=(size, size), mode="area")[0].numpy()
    return np.ascontiguousarray(array, dtype=np.float32)


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError:
        raise DataError(f"{path}: DICOM needs pydicom; install clearmamba[dicom]") from None
    try:
        pixels = pydicom.dcmread(path).pixel_array.astype(np.float32)
    except Exception as error:  # pydicom raises many types for broken files
        raise DataError(
            f"{path}: unreadable DICOM ({error}); expected a DICOM image with pixel data"
        ) from None
    pixels -= pixels.min()
    return pixels / max(float(pixels.max()), 1e-6)


@dataclass
class _Exam:
    exam_id: str
    patient_id: str
    eye: str
    modality: str
    device_id: str
    label: int
    frames: list[tuple[float, Path, str]] = field(default_factory=list)  # (time, path, where)


class _Problems:
    """Raise at once, or (skip_bad) warn, remember the exam to drop and count it."""

    def __init__(self, skip_bad: bool):
        self.skip_bad, self.bad_exams, self.messages = skip_bad, set(), []

    def report(self, message: str, exam_id: str | None = None) -> None:
        if not self.skip_bad:
            raise DataError(message)
        warnings.warn(f"skipping: {message}", stacklevel=3)
        self.messages.append(message)
        if exam_id is not None:
            self.bad_exams.add(exam_id)


def _parse_label(raw: str, class_names: tuple[str, ...] | None, where: str) -> int | str:
    raw = raw.strip()
    if class_names is None:
        return raw
    if raw in class_names:
        return class_names.index(raw)
    if raw.lstrip("-").isdigit() and 0 <= int(raw) < len(class_names):
        return int(raw)
    raise DataError(
        f"{where}: unknown label {raw!r}; expected one of {list(class_names)} or 0..{len(class_names) - 1}"
    )


def load_manifest(
    csv_path: str | Path,
    root: str | Path | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
    channels: int | None = None,
    size: int | None = None,
    skip_bad: bool = False,
) -> ExamSet:
    """Exams from a CSV manifest with columns ``path, exam_id, patient_id, eye, modality, frame_time, label``.

    Only ``path`` and ``label`` are required: without ``exam_id`` each row is its own exam. Rows of an
    exam are ordered by ``frame_time`` (seconds after injection; row order if absent). Relative paths are
    resolved against ``root`` (default: the CSV's folder). Labels are class names or indices into
    ``class_names``; without ``class_names`` the sorted distinct labels are the classes.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: manifest not found; expected a CSV file")
    root = Path(root) if root is not None else csv_path.parent
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DataError(
                f"{csv_path}: missing column(s) {missing}; expected a header with {list(REQUIRED_COLUMNS)} "
                f"and optionally {[c for c in MANIFEST_COLUMNS if c not in REQUIRED_COLUMNS]}, got {columns}"
            )
        rows = [
            ({k.strip(): (v or "").strip() for k, v in row.items() if k}, line)
            for line, row in enumerate(reader, start=2)
        ]
    if not rows:
        raise DataError(f"{csv_path}: no rows; expected at least one image")
    names = tuple(class_names) if class_names is not None else None
    if names is None:
        labels = {row["label"] for row, _ in rows if row["label"]}
        numeric = all(label.isdigit() for label in labels)
        names = tuple(sorted(labels, key=int if numeric else str))  # "2" before "10"
    problems = _Problems(skip_bad)
    exams: dict[str, _Exam] = {}
    seen_frames: set[tuple[str, str]] = set()
    for row, line in rows:
        where = f"{csv_path}:{line}"
        exam_id = row.get("exam_id") or f"row{line}"
        try:
            label = _parse_label(row["label"], names, where)
            if not row["path"]:
                raise DataError(f"{where}: empty path; expected an image path")
            time_raw = row.get("frame_time", "")
            try:
                order = float(len(exams[exam_id].frames)) if exam_id in exams else 0.0
                time = float(time_raw) if time_raw else order
            except ValueError:
                raise DataError(
                    f"{where}: frame_time {time_raw!r} is not a number; expected seconds"
                ) from None
        except DataError as error:
            problems.report(str(error), exam_id)
            continue
        path = Path(row["path"]) if Path(row["path"]).is_absolute() else root / row["path"]
        meta = (row.get("patient_id") or exam_id, row.get("eye", ""), row.get("modality", ""), label)
        exam = exams.get(exam_id)
        if exam is None:
            exams[exam_id] = exam = _Exam(exam_id, meta[0], meta[1], meta[2], row.get("device_id", ""), label)
        elif (exam.patient_id, exam.eye, exam.modality, exam.label) != meta:
            problems.report(
                f"{where}: duplicate exam id {exam_id!r} with different patient_id/eye/modality/label "
                f"{meta} vs {(exam.patient_id, exam.eye, exam.modality, exam.label)}; expected one exam "
                "per id (equal values on all its rows)",
                exam_id,
            )
            continue
        if (exam_id, str(path)) in seen_frames:
            problems.report(
                f"{where}: duplicate frame {row['path']!r} in exam {exam_id!r}; expected each once", exam_id
            )
            continue
        seen_frames.add((exam_id, str(path)))
        exam.frames.append((time, path, where))
    return _to_examset(
        list(exams.values()), names, channels, size, problems, name=csv_path.stem, source=str(csv_path)
    )


def load_image_folder(
    root: str | Path,
    class_names: tuple[str, ...] | list[str] | None = None,
    channels: int | None = None,
    size: int | None = None,
    skip_bad: bool = False,
) -> ExamSet:
    """Exams from ``root/<class>/<exam>/<frame>.png`` (frames in natural filename order) and single images
    ``root/<class>/<image>.png``. The exam folder (or image stem) is the exam and patient id."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; expected root/<class>/<exam>/<frame>.png")
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    names = tuple(class_names) if class_names is not None else tuple(found)
    problems = _Problems(skip_bad)
    unknown = [c for c in found if c not in names]
    for c in unknown:
        problems.report(f"{root / c}: unknown class folder {c!r}; expected one of {list(names)}")
    exams = []
    for label, name in enumerate(names):
        folder = root / name
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir(), key=_natural_key):
            if entry.is_dir():
                files = sorted(
                    (f for f in entry.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key
                )
                if not files:
                    problems.report(f"{entry}: exam folder without images; expected {IMAGE_SUFFIXES} files")
                    continue
                exam_id = f"{name}/{entry.name}"
            elif entry.suffix.lower() in IMAGE_SUFFIXES:
                files, exam_id = [entry], f"{name}/{entry.stem}"
            else:
                continue
            exam = _Exam(exam_id, exam_id, "", "", "", label)
            exam.frames = [(float(i), f, str(f)) for i, f in enumerate(files)]
            exams.append(exam)
    if not exams:
        raise DataError(
            f"{root}: no images found; expected root/<class>/<exam>/<frame>.png or root/<class>/<image>.png"
        )
    return _to_examset(exams, names, channels, size, problems, name=root.name, source=str(root))


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _to_examset(
    exams: list[_Exam], names, channels, size, problems: _Problems, name: str, source: str
) -> ExamSet:
    """Read every frame, check sizes agree, pad exams to the longest with a mask."""
    loaded, shape = [], None
    for exam in exams:
        if exam.exam_id in problems.bad_exams:
            continue
        frames, times = [], []
        try:
            for time, path, where in sorted(exam.frames, key=lambda f: f[0]):
                try:
                    image = read_image(path, channels=channels, size=size)
                except DataError as error:
                    if where == str(path):
                        raise
                    raise DataError(f"{where}: {error}") from None
                if shape is None:
                    shape = image.shape
                elif image.shape != shape:
                    raise DataError(
                        f"{where}: frame {path} has shape {image.shape} (c, h, w); expected {shape} like the "
                        "first image (pass size= to resize, channels= to convert)"
                    )
                frames.append(image)
                times.append(time)
        except DataError as error:
            problems.report(str(error), exam.exam_id)
            continue
        loaded.append((exam, frames, times))
    if not loaded:
        raise DataError(f"{source}: no usable exams ({len(problems.messages)} skipped)")
    t = max(len(f) for _, f, _ in loaded)
    n = len(loaded)
    frames = torch.zeros((n, t, *shape))
    frame_times = torch.zeros((n, t))
    mask = torch.zeros((n, t), dtype=torch.bool)
    for i, (_, exam_frames, times) in enumerate(loaded):
        k = len(exam_frames)
        frames[i, :k] = torch.from_numpy(np.stack(exam_frames))
        frame_times[i, :k] = torch.tensor(times)
        mask[i, :k] = True
    return ExamSet(
        frames=frames,
        labels=torch.tensor([e.label for e, _, _ in loaded], dtype=torch.int64),
        frame_times=frame_times,
        mask=mask,
        exam_id=[e.exam_id for e, _, _ in loaded],
        patient_id=[e.patient_id for e, _, _ in loaded],
        eye=[e.eye for e, _, _ in loaded],
        modality=[e.modality for e, _, _ in loaded],
        device_id=[e.device_id for e, _, _ in loaded],
        class_names=tuple(names),
        name=name,
        info={"source": source, "skipped": len(problems.messages), "problems": problems.messages},
    )
