"""The one exam reader: image files, exam folders, CSV manifests and image-folder layouts into ``ExamSet``.

Training, evaluation and prediction all read through here, so a frame is decoded, checked, resized and ordered
the same way wherever it comes from:

- suffixes ``IMAGE_SUFFIXES`` (DICOM included), frames of an exam folder in natural name order (``frame2``
  before ``frame10``);
- every image is checked at the door (:class:`ReadOptions`): a pixel limit before decoding, a minimum side, and
  no NaN/Inf values;
- padding is :func:`clearmamba.data.examset.pad_exams`.

Every bad input raises ``DataError`` naming the file (and CSV line) and what was expected; with
``skip_bad=True`` the offending exam is left out with a warning and counted in ``ExamSet.info["skipped"]``.
Nothing is half-loaded: an error is raised before any ExamSet exists.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clearmamba.data.examset import ExamSet, pad_exams
from clearmamba.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")
MANIFEST_COLUMNS = ("path", "exam_id", "patient_id", "eye", "modality", "device_id", "frame_time", "split", "label")
REQUIRED_COLUMNS = ("path", "label")
# MedMNIST-style sources call their splits this; a manifest's ``split`` column uses the same words
SPLIT_NAMES = ("train", "val", "test")


class DataError(UserError, ValueError):
    """Bad input data; the message names the file/row and what was expected."""


@dataclass(frozen=True)
class ReadOptions:
    """How every frame is read. ``size`` is ``(h, w)`` (None keeps the file's size); ``channels`` 1 or 3
    converts (None keeps 1 for grey, 3 for colour)."""

    channels: int | None = None
    size: tuple[int, int] | None = None
    max_pixels: int = 100_000_000  # refuse decompression bombs before decoding (CLI: --max-pixels)
    min_side: int = 8  # smaller frames cannot show a lesion; refusing beats upsampling noise into a diagnosis
    encoding: str = "utf-8"  # of CSV manifests (CLI: --encoding)

    def __post_init__(self) -> None:
        if self.channels not in (None, 1, 3):
            raise DataError(f"channels: expected 1 or 3, got {self.channels}")
        if self.size is not None:
            size = (self.size, self.size) if isinstance(self.size, int) else tuple(int(s) for s in self.size)
            if len(size) != 2 or min(size) < self.min_side:
                raise DataError(f"frame size: expected (height, width) of at least {self.min_side} px, got {self.size}")
            object.__setattr__(self, "size", size)
        if self.max_pixels < 1:
            raise DataError(f"--max-pixels: expected a positive number of pixels, got {self.max_pixels}")


def read_image(path: str | Path, read: ReadOptions | None = None) -> np.ndarray:
    """An image file as float32 ``[c, h, w]`` in [0, 1]. PNG/JPEG/TIFF/BMP via Pillow, DICOM via pydicom."""
    read = read or ReadOptions()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected an image file")
    array = _read_dicom(path, read) if path.suffix.lower() == ".dcm" else _read_pillow(path, read)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise DataError(f"{path}: {bad} pixel value(s) are NaN or infinite; expected finite intensities")
    h, w = array.shape[:2]
    if min(h, w) < read.min_side:
        raise DataError(f"{path}: image is {w}x{h} pixels; expected at least {read.min_side}x{read.min_side}")
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    if read.channels == 1 and array.shape[0] == 3:
        array = array.mean(0, keepdims=True)
    elif read.channels == 3 and array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    if read.size is not None and tuple(array.shape[1:]) != read.size:
        t = torch.from_numpy(np.ascontiguousarray(array))[None]
        array = torch.nn.functional.interpolate(t, size=read.size, mode="area")[0].numpy()
    return np.ascontiguousarray(array, dtype=np.float32)


def _pixel_limit_error(path: Path, w: int, h: int, limit: int) -> DataError:
    return DataError(f"{path}: {w}x{h} pixels ({w * h / 1e6:.0f} megapixels) is over the limit of "
                     f"{limit / 1e6:g} megapixels; expected a smaller image, or raise the limit with --max-pixels")


def _read_pillow(path: Path, read: ReadOptions) -> np.ndarray:
    from clearmamba.errors import require

    Image = require("PIL.Image", "reading image files")
    pillow_limit = Image.MAX_IMAGE_PIXELS
    try:
        # our limit (checked on the header, before any decoding) replaces Pillow's, so the message can name it
        Image.MAX_IMAGE_PIXELS = None
        with Image.open(path) as img:
            w, h = img.size
            if w * h > read.max_pixels:
                raise _pixel_limit_error(path, w, h, read.max_pixels)
            img.load()
            if img.mode in ("I;16", "I;16B", "I", "F"):
                array = np.asarray(img, dtype=np.float32)
                array = array / max(float(np.nanmax(array)) if array.size else 1.0, 1.0)
            else:
                img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
                array = np.asarray(img, dtype=np.float32) / 255.0
    except DataError:
        raise
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: unreadable image ({error}); expected PNG, JPEG, TIFF, BMP or DICOM") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
    return array


def _read_dicom(path: Path, read: ReadOptions) -> np.ndarray:
    try:
        import pydicom
    except ImportError:
        raise DataError(f'{path}: DICOM needs pydicom; run: pip install "clearmamba[dicom]"') from None
    try:
        dataset = pydicom.dcmread(path)
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        if rows * columns > read.max_pixels:
            raise _pixel_limit_error(path, columns, rows, read.max_pixels)
        pixels = dataset.pixel_array.astype(np.float32)
    except DataError:
        raise
    except Exception as error:  # pydicom raises many types for broken files
        raise DataError(f"{path}: unreadable DICOM ({error}); expected a DICOM image with pixel data") from None
    if not np.isfinite(pixels).all():
        return pixels  # read_image names the bad values
    pixels -= pixels.min()
    return pixels / max(float(pixels.max()), 1e-6)


def natural_key(path: Path) -> list:
    """Sort key putting ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def exam_frame_files(folder: Path) -> list[Path]:
    """The frames of an exam folder: image files in natural name order."""
    return sorted((f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)


def read_exam(path: str | Path, read: ReadOptions, frame_times: list[float] | None = None) -> tuple[torch.Tensor,
                                                                                                    torch.Tensor]:
    """One exam from an image file (one frame) or an exam folder: frames ``[t, c, h, w]`` and times ``[t]``.

    ``frame_times`` (seconds after injection, one per frame) must match the number of frames; without them the
    frames are numbered 0, 1, 2, ... (the caller records that no times were given)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; expected an image file or an exam folder of frames")
    files = exam_frame_files(path) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: folder holds no image; expected frames with suffixes {', '.join(IMAGE_SUFFIXES)}")
    frames = [torch.from_numpy(read_image(f, read)) for f in files]
    shapes = {tuple(f.shape) for f in frames}
    if len(shapes) > 1:
        raise DataError(f"{path}: frames of different shapes {sorted(shapes)}; expected one size (use --frame-size)")
    if frame_times is not None and len(frame_times) != len(frames):
        raise DataError(f"{path}: {len(frames)} frame(s) but --frame-times gives {len(frame_times)}; expected one "
                        "time per frame")
    times = torch.tensor(frame_times if frame_times is not None else [float(i) for i in range(len(frames))])
    return torch.stack(frames), times


@dataclass
class _Exam:
    exam_id: str
    patient_id: str
    eye: str
    modality: str
    device_id: str
    label: int
    split: str = ""
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


def _parse_label(raw: str, class_names: tuple[str, ...], where: str) -> int:
    raw = raw.strip()
    if raw in class_names:
        return class_names.index(raw)
    if raw.lstrip("-").isdigit() and 0 <= int(raw) < len(class_names):
        return int(raw)
    raise DataError(f"{where}: unknown label {raw!r}; expected one of {list(class_names)} "
                    f"(or an index 0..{len(class_names) - 1})")


def read_csv_rows(csv_path: Path, encoding: str = "utf-8") -> tuple[list[str], list[tuple[dict[str, str], int]]]:
    """Header and ``(row, line number)`` pairs of a CSV file, decoded with ``encoding``; a file that does not
    decode names the line where it fails."""
    data = csv_path.read_bytes()
    if b"\x00" in data[:4096]:
        raise DataError(f"{csv_path}: holds NUL bytes, so it is not a text CSV; expected a manifest CSV file")
    try:
        text = data.decode("utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding)
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(f"{csv_path}:{line}: not valid {encoding} text (byte {data[error.start]:#04x}); re-save the "
                        "file as UTF-8, or name its encoding with --encoding (for example --encoding latin-1)"
                        ) from None
    except LookupError:
        raise DataError(f"--encoding {encoding}: unknown text encoding; expected e.g. utf-8 or latin-1") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    rows = [({k.strip(): (v or "").strip() for k, v in row.items() if k}, line)
            for line, row in enumerate(reader, start=2)]  # fmt: skip
    return columns, rows


def manifest_classes(rows: list[tuple[dict[str, str], int]]) -> tuple[str, ...]:
    """The classes a manifest declares when none are given: its sorted distinct labels ("2" before "10")."""
    labels = {row["label"] for row, _ in rows if row.get("label")}
    numeric = all(label.isdigit() for label in labels)
    return tuple(sorted(labels, key=int if numeric else str))


def load_manifest(
    csv_path: str | Path,
    root: str | Path | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
    read: ReadOptions | None = None,
    skip_bad: bool = False,
) -> ExamSet:
    """Exams from a CSV manifest with columns ``path, exam_id, patient_id, eye, modality, device_id, frame_time,
    split, label`` (docs/data.md).

    Only ``path`` and ``label`` are required: without ``exam_id`` each row is its own exam. Rows of an exam are
    ordered by ``frame_time`` (seconds after injection; row order if absent). Relative paths are resolved against
    ``root`` (default: the CSV's folder). Labels are class names or indices into ``class_names``; without
    ``class_names`` the sorted distinct labels are the classes. ``split`` (train/val/test) lands in
    ``info["split"]``, one entry per exam; ``info["frame_times_given"]`` says whether any row had a time.
    """
    read = read or ReadOptions()
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: manifest not found; expected a CSV file")
    root = Path(root) if root is not None else csv_path.parent
    columns, rows = read_csv_rows(csv_path, read.encoding)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"{csv_path}: missing column(s) {missing}; expected a header with {list(REQUIRED_COLUMNS)} "
            f"and optionally {[c for c in MANIFEST_COLUMNS if c not in REQUIRED_COLUMNS]}, got {columns}"
        )
    if not rows:
        raise DataError(f"{csv_path}: no rows; expected at least one image")
    names = tuple(class_names) if class_names is not None else manifest_classes(rows)
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
            split = row.get("split", "").lower()
            if split and split not in SPLIT_NAMES:
                raise DataError(f"{where}: split {row['split']!r}; expected one of {list(SPLIT_NAMES)} or empty")
            time_raw = row.get("frame_time", "")
            try:
                order = float(len(exams[exam_id].frames)) if exam_id in exams else 0.0
                time = float(time_raw) if time_raw else order
            except ValueError:
                raise DataError(f"{where}: frame_time {time_raw!r} is not a number; expected seconds") from None
        except DataError as error:
            problems.report(str(error), exam_id)
            continue
        path = Path(row["path"]) if Path(row["path"]).is_absolute() else root / row["path"]
        meta = (row.get("patient_id") or exam_id, row.get("eye", ""), row.get("modality", ""), label, split)
        exam = exams.get(exam_id)
        if exam is None:
            exams[exam_id] = exam = _Exam(exam_id, meta[0], meta[1], meta[2], row.get("device_id", ""), label, split)
        elif (exam.patient_id, exam.eye, exam.modality, exam.label, exam.split) != meta:
            problems.report(
                f"{where}: duplicate exam id {exam_id!r} with different patient_id/eye/modality/label/split "
                f"{meta} vs {(exam.patient_id, exam.eye, exam.modality, exam.label, exam.split)}; expected one "
                "exam per id (equal values on all its rows)",
                exam_id,
            )
            continue
        if (exam_id, str(path)) in seen_frames:
            problems.report(f"{where}: duplicate frame {row['path']!r} in exam {exam_id!r}; expected each once",
                            exam_id)  # fmt: skip
            continue
        seen_frames.add((exam_id, str(path)))
        exam.frames.append((time, path, where))
    times_given = any(row.get("frame_time") for row, _ in rows)
    return _to_examset(list(exams.values()), names, read, problems, name=csv_path.stem, source=str(csv_path),
                       times_given=times_given)  # fmt: skip


def load_image_folder(
    root: str | Path,
    class_names: tuple[str, ...] | list[str] | None = None,
    read: ReadOptions | None = None,
    skip_bad: bool = False,
    flat: bool = False,
) -> ExamSet:
    """Exams from ``root/<class>/<exam>/<frame>.png`` (frames in natural filename order) and single images
    ``root/<class>/<image>.png``. The exam folder (or image stem) is the exam and patient id. Folders hold no
    frame times: frames are numbered 0, 1, 2, ... and ``info["frame_times_given"]`` is False.

    ``flat=True`` (unlabelled sets, e.g. OOD): a folder of images without class folders is read too, each image
    an exam of one class named after the folder."""
    read = read or ReadOptions()
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; expected root/<class>/<exam>/<frame>.png")
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not found and flat:
        files = sorted((p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                       key=natural_key)  # fmt: skip
        exams = [_Exam(f.stem, f.stem, "", "", "", 0, frames=[(0.0, f, str(f))]) for f in files]
        if exams:
            return _to_examset(exams, (root.name,), read, _Problems(skip_bad), name=root.name, source=str(root),
                               times_given=False)  # fmt: skip
    if not found:
        images = [p.name for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        hint = f" (it holds {len(images)} image(s) directly: put them in one folder per class)" if images else ""
        raise DataError(f"{root}: no class folders{hint}; expected root/<class>/<image>.png or "
                        "root/<class>/<exam>/<frame>.png")
    names = tuple(class_names) if class_names is not None else tuple(found)
    problems = _Problems(skip_bad)
    for c in found:
        if c not in names:
            problems.report(f"{root / c}: unknown class folder {c!r}; expected one of {list(names)}")
    exams = []
    for label, name in enumerate(names):
        folder = root / name
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir(), key=natural_key):
            if entry.is_dir():
                files = exam_frame_files(entry)
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
    return _to_examset(exams, names, read, problems, name=root.name, source=str(root), times_given=False)


def _to_examset(exams: list[_Exam], names, read: ReadOptions, problems: _Problems, name: str, source: str,
                times_given: bool) -> ExamSet:  # fmt: skip
    """Read every frame, check sizes agree, pad exams to the longest with a mask."""
    loaded, shape = [], None
    for exam in exams:
        if exam.exam_id in problems.bad_exams:
            continue
        frames, times = [], []
        try:
            for time, path, where in sorted(exam.frames, key=lambda f: f[0]):
                try:
                    image = read_image(path, read)
                except DataError as error:
                    if where == str(path):
                        raise
                    raise DataError(f"{where}: {error}") from None
                if shape is None:
                    shape = image.shape
                elif image.shape != shape:
                    raise DataError(
                        f"{where}: frame {path} has shape {image.shape} (c, h, w); expected {shape} like the "
                        "first image (give --frame-size to resize every frame)"
                    )
                frames.append(torch.from_numpy(image))
                times.append(time)
        except DataError as error:
            problems.report(str(error), exam.exam_id)
            continue
        loaded.append((exam, torch.stack(frames), torch.tensor(times)))
    if not loaded:
        raise DataError(f"{source}: no usable exams ({len(problems.messages)} skipped)")
    frames, frame_times, mask = pad_exams([f for _, f, _ in loaded], [t for _, _, t in loaded])
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
        info={"source": source, "skipped": len(problems.messages), "problems": problems.messages,
              "split": [e.split for e, _, _ in loaded], "frame_times_given": times_given},  # fmt: skip
    )
