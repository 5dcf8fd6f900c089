"""Where exams come from, and how they are divided: ``builtin``, a MedMNIST-style ``.npz``, an image folder or a
manifest CSV (docs/data.md).

- ``builtin``: the simulated FFA/ICGA benchmark (held-out-device and named OOD sets included).
- ``file.npz``: ``train_images``, ``train_labels``, ``val_*``, ``test_*`` (MedMNIST layout); each image is a
  one-frame exam. Loaded with ``allow_pickle=False``.
- ``folder/``: ``folder/<class>/<image>`` (one-frame exams) or ``folder/<class>/<exam>/<frames...>``.
- ``manifest.csv``: columns ``path,label`` and optionally ``exam_id,frame_time,split,patient_id,...``.

:func:`open_source` reads a source whole, as it names its own sets; :func:`training_splits` then draws the
splits the source does not name from its exams (70/15/15, seeded, whole patients at a time) and returns the
:class:`SplitRule` it used, which the run record keeps so that evaluation can score the same test exams.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clearmamba.data.examset import UNKNOWN_LABEL, ExamSet, concat_examsets
from clearmamba.data.loaders import SPLIT_NAMES, DataError, ReadOptions, load_image_folder, load_manifest

SPLIT_FRACTIONS = (0.7, 0.15, 0.15)  # train, val, test
POOL = "all"  # the exams of a source that name no split


@dataclass(frozen=True)
class BuiltinData:
    """The simulated benchmark: sizes of each set, frame size and count, classes and seed."""

    n_train: int = 480
    n_val: int = 160
    n_test: int = 240
    n_heldout: int = 160
    n_ood: int = 120
    n_calibration: int = 0  # a set like val for the referral rule (0: the rule is fitted on val)
    size: int = 32
    frames: int = 6
    classes: tuple[str, ...] | None = None  # None: every simulated class
    seed: int = 0
    # "devices": training exams through the simulator's cameras A-D; "ideal": through data.IDEAL_CAMERA, for
    # camera augmentation to see each exam through exactly one family camera
    train_camera: str = "devices"

    def __post_init__(self) -> None:
        if self.train_camera not in ("devices", "ideal"):
            raise ValueError(f"BuiltinData.train_camera: expected 'devices' or 'ideal', got {self.train_camera!r}")


@dataclass(frozen=True)
class SplitRule:
    """How a source's exams became train/val/test: the splits the source named itself, the splits drawn from
    its other exams (``group_by`` kept whole, stratified by class), with which seed and fractions."""

    given: tuple[str, ...]
    drawn: tuple[str, ...]
    seed: int
    fractions: tuple[float, float, float] = SPLIT_FRACTIONS
    group_by: str = "patient_id"


@dataclass
class Source:
    """Every exam of one data source, in the sets it names (``train``/``val``/``test``, ``all`` for exams that
    name none; the built-in benchmark adds ``test_heldout_device`` and ``ood_*``)."""

    spec: str  # as the user typed it: "builtin" or a path
    sets: dict[str, ExamSet]
    sha256: str  # content hash of every exam, label and class name the source holds
    frame_times: str  # "seconds" (given by the source) or "frame order" (numbered 0, 1, 2, ...)

    @property
    def class_names(self) -> tuple[str, ...]:
        return next(iter(self.sets.values())).class_names

    def exams(self, names: tuple[str, ...] = SPLIT_NAMES + (POOL,)) -> ExamSet:
        """The named sets as one ExamSet (by default every labelled exam: train, val, test and unsplit)."""
        present = [self.sets[n] for n in names if n in self.sets]
        if not present:
            raise DataError(f"{self.spec}: holds none of the sets {list(names)}; it has {sorted(self.sets)}")
        return present[0] if len(present) == 1 else concat_examsets(present, name=self.spec)


def examset_sha256(*sets: ExamSet) -> str:
    """SHA-256 over the frames, labels, times, masks, exam ids and class names of ExamSets."""
    digest = hashlib.sha256()
    for exams in sets:
        digest.update("\n".join(exams.class_names).encode() + b"\0" + "\n".join(exams.exam_id).encode() + b"\0")
        for tensor in (exams.frames, exams.labels, exams.frame_times, exams.mask):
            digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_builtin(spec: BuiltinData, progress: bool = False) -> dict[str, ExamSet]:
    from clearmamba.data import SimulatorConfig, make_builtin_splits

    config = SimulatorConfig(size=spec.size, frames=spec.frames)
    if spec.classes:
        config = SimulatorConfig(size=spec.size, frames=spec.frames, classes=tuple(spec.classes))
    sizes = {k: getattr(spec, k) for k in ("n_train", "n_val", "n_test", "n_heldout", "n_ood", "n_calibration")}
    sets = make_builtin_splits(config, seed=spec.seed, progress=progress, **sizes)
    if spec.train_camera == "ideal":
        from clearmamba.data.builtin import simulate_camera_exams
        from clearmamba.data.camera_family import IDEAL_CAMERA

        # the same training exams (make_builtin_splits' seed, prefix and templates) through the ideal camera
        sets["train"] = simulate_camera_exams(spec.n_train, IDEAL_CAMERA, config, spec.seed * 100 + 1,
                                              f"train{spec.seed}", "train", anatomy_seed=spec.seed)  # fmt: skip
    return sets


def _split_by_column(exams: ExamSet) -> dict[str, ExamSet]:
    names = [s or POOL for s in exams.info.get("split", [""] * len(exams))]
    return {n: exams.subset([i for i, m in enumerate(names) if m == n], name=n) for n in dict.fromkeys(names)}


def _load_npz(path: Path, class_names: tuple[str, ...] | None) -> dict[str, ExamSet]:
    from clearmamba.data.mnist import load_medmnist_npz

    try:
        with np.load(path, allow_pickle=False) as data:
            files = data.files
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: unreadable .npz ({error}); expected a MedMNIST-style .npz") from None
    present = [split for split in SPLIT_NAMES if f"{split}_images" in files]
    if not present:
        raise DataError(f"{path}: expected arrays 'train_images'/'train_labels' (MedMNIST layout), found {files}")
    return {split: load_medmnist_npz(path, split, class_names=class_names) for split in present}


def open_source(spec: str, read: ReadOptions | None = None, class_names: tuple[str, ...] | None = None,
                builtin: BuiltinData | None = None, skip_bad: bool = False) -> Source:  # fmt: skip
    """Read a whole data source. ``class_names`` declares the classes labels must belong to (a checkpoint's, or
    ``--classes``); without it the source's own are used. ``read`` sets frame size, channels and limits."""
    read = read or ReadOptions()
    if spec == "builtin":
        builtin = builtin or BuiltinData()
        sets = load_builtin(builtin)
        return Source(spec, sets, examset_sha256(*sets.values()), "seconds")
    path = Path(spec)
    if not path.exists():
        raise DataError(f"--data {spec}: no such file or folder; expected builtin, a .npz, an image folder or a "
                        "manifest .csv")
    if path.is_dir():
        sets = {POOL: load_image_folder(path, class_names, read, skip_bad)}
        times = "frame order"
    elif path.suffix.lower() == ".npz":
        sets = _load_npz(path, class_names)
        times = "frame order"  # one frame per exam: there is nothing to order
    elif path.suffix.lower() == ".csv":
        exams = load_manifest(path, class_names=class_names, read=read, skip_bad=skip_bad)
        sets = _split_by_column(exams)
        times = "seconds" if exams.info["frame_times_given"] else "frame order"
    else:
        raise DataError(f"--data {spec}: unsupported file type {path.suffix!r}; expected a .npz, a .csv or a folder")
    return Source(spec, sets, examset_sha256(*sets.values()), times)


def training_splits(source: Source, seed: int = 0) -> tuple[dict[str, ExamSet], SplitRule]:
    """``train``/``val``/``test`` (and the built-in benchmark's extra sets): the splits the source names, plus
    the missing ones drawn from its unsplit exams (or from ``train`` when nothing is unsplit)."""
    from clearmamba.data.splits import group_split

    sets = dict(source.sets)
    given = tuple(n for n in SPLIT_NAMES if n in sets)
    missing = [n for n in SPLIT_NAMES if n not in sets]
    if POOL in sets:
        pool = sets.pop(POOL)
    elif missing and "train" in sets:
        pool = sets.pop("train")
        given = tuple(n for n in given if n != "train")
        missing = [n for n in SPLIT_NAMES if n not in sets]
    else:
        pool = None
    if pool is not None and missing:
        fractions = dict(zip(SPLIT_NAMES, SPLIT_FRACTIONS, strict=True))
        drawn = group_split(pool, {n: fractions[n] for n in missing}, seed) if len(missing) > 1 else {missing[0]: pool}
        sets.update({n: s.subset(range(len(s)), name=n) for n, s in drawn.items()})
    elif pool is not None:
        raise DataError(f"{source.spec}: {len(pool)} exam(s) name no split while train, val and test are all named; "
                        "expected every exam to name its split, or none")
    if "train" not in sets or len(sets["train"]) == 0:
        raise DataError(f"{source.spec}: no training exams (the source names only {sorted(source.sets)}); expected "
                        "a train split, or exams without a split to draw it from")
    for name in ("val",):
        if name not in sets or len(sets[name]) == 0:
            raise DataError(f"{source.spec}: no validation exams after splitting; expected a val split or more exams "
                            f"(have {len(sets['train'])} for training)")
    rule = SplitRule(given=given, drawn=tuple(missing), seed=seed)
    return sets, rule


def open_unlabelled(spec: str, read: ReadOptions | None = None) -> Source:
    """A set whose labels do not matter (an OOD set): like :func:`open_source`, and a plain folder of images is
    read as one-frame exams."""
    path = Path(spec)
    if path.is_dir():
        exams = load_image_folder(path, read=read or ReadOptions(), flat=True)
        return Source(spec, {POOL: exams}, examset_sha256(exams), "frame order")
    return open_source(spec, read)


def describe(source: Source, sets: dict[str, ExamSet], rule: SplitRule) -> str:
    """One line: the split sizes and where they come from."""
    sizes = ", ".join(f"{name} {len(s)}" for name, s in sets.items() if name in SPLIT_NAMES)
    extra = [name for name in sets if name not in SPLIT_NAMES]
    origin = []
    if rule.given:
        origin.append(f"{'/'.join(rule.given)} named by the source")
    if rule.drawn:
        shares = "/".join(f"{round(100 * f)}" for f in rule.fractions)
        origin.append(f"{'/'.join(rule.drawn)} drawn from its other exams ({shares} %, by patient, seed {rule.seed})")
    more = f"; also {', '.join(extra)}" if extra else ""
    return (f"data {source.spec}: {sizes} exams ({'; '.join(origin)}){more}; classes {', '.join(source.class_names)}; "
            f"frame times: {source.frame_times}")


def as_unknown(source: Source, name: str) -> ExamSet:
    """All exams of ``source`` as one OOD ExamSet with labels -1 (unknown)."""
    exams = concat_examsets(list(source.sets.values()), name=name)
    exams.labels = torch.full_like(exams.labels, UNKNOWN_LABEL)
    exams.true_labels = exams.labels.clone()
    return exams
