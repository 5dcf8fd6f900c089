"""The run record: everything a trained checkpoint needs to be used and trusted, as typed dataclasses.

One writer (``training.run``) and one reader (:func:`clearmamba.training.checkpoint.load_run`); every other
part of clearmamba reads attributes of a :class:`RunRecord`, never keys of a dict. It travels as ``model.json``
beside ``model.safetensors``, bound to the weights by its canonical hash (``training.checkpoint``).

- :class:`Preprocessing` travels with the model like timm's ``PretrainedCfg``: frame size, channels, frame
  count, value range, and where frame times came from (seconds after injection, or only the frame order).
- :class:`DataSpec`: the training source, its hash, the split rule and the test exams, so ``evaluate`` can score
  exactly the held-out exams of the training source.
- the model (architecture and options), the uncertainty method, the training config, what training achieved,
  the referral rule, RaP's post-hoc entry and the library versions.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from typing import Any

import torch

from clearmamba.data.camera_family import CameraAugment
from clearmamba.data.invariant import Preprocessing as IntensitySteps
from clearmamba.data.sources import BuiltinData, SplitRule
from clearmamba.evaluation.referral_rule import ReferralRule
from clearmamba.serialize import to_json
from clearmamba.training.config import TrainConfig

FORMAT = "clearmamba-run/2"
FRAME_TIME_SOURCES = ("seconds", "frame order")


@dataclass(frozen=True)
class Preprocessing:
    """How an input must look before it reaches the model."""

    frame_size: tuple[int, int]  # (height, width) every frame is resized to
    in_chans: int
    max_frames: int  # longest exam seen in training
    value_range: tuple[float, float] = (0.0, 1.0)
    frame_time_unit: str = "s"  # seconds after dye injection
    # "seconds": the training source gave times; "frame order": it did not, frames were numbered 0, 1, 2, ...
    frame_time_source: str = "seconds"
    # median training time at each frame position: what predict assumes, and says so, when given no times
    typical_frame_times: tuple[float, ...] = ()
    # acquisition-invariant steps applied to every exam after reading (data.invariant; empty = none)
    intensity: IntensitySteps = IntensitySteps()

    def __post_init__(self) -> None:
        if self.frame_time_source not in FRAME_TIME_SOURCES:
            raise ValueError(f"frame_time_source: expected one of {FRAME_TIME_SOURCES}, got {self.frame_time_source!r}")
        if len(self.frame_size) != 2 or min(self.frame_size) < 1:
            raise ValueError(f"frame_size: expected (height, width), got {self.frame_size}")


@dataclass(frozen=True)
class ModelSpec:
    arch: str  # a registered name for clearmamba.models.create_model
    options: dict[str, Any]  # its keyword arguments, checked by the model's own config dataclass


@dataclass(frozen=True)
class MethodSpec:
    name: str  # clearmamba.uncertainty.create_method name
    options: dict[str, Any]


@dataclass(frozen=True)
class DataSpec:
    source: str  # as given to --data
    source_sha256: str  # every exam of the source (evaluate compares it to decide what "the training source" is)
    train_sha256: str  # the training split (resume compares it)
    split: SplitRule
    n_train: int
    n_val: int
    test_exam_ids: tuple[str, ...]
    n_calibration: int = 0  # exams the referral rule was fitted on, when not the validation exams
    builtin: BuiltinData | None = None  # the simulator settings, when the source is "builtin"


@dataclass(frozen=True)
class PosthocEntry:
    """RaP's density gate + evidence scaling, fitted after training, stored in ``file`` with its SHA-256."""

    kind: str
    file: str
    sha256: str
    evidence: str
    sharpness: float
    details: dict[str, Any] = field(default_factory=dict)  # fit diagnostics, for people (no code reads them)


@dataclass(frozen=True)
class Outcome:
    epochs_run: int
    best_epoch: int | None
    stopped_early: bool
    val_nll: float
    val_acc: float
    seconds: float


@dataclass(frozen=True)
class Versions:
    clearmamba: str
    torch: str
    python: str

    @classmethod
    def current(cls) -> Versions:
        from clearmamba import __version__

        return cls(__version__, torch.__version__, platform.python_version())


@dataclass(frozen=True)
class RunRecord:
    classes: tuple[str, ...]
    model: ModelSpec
    preprocessing: Preprocessing
    method: MethodSpec
    train: TrainConfig
    data: DataSpec
    outcome: Outcome
    versions: Versions
    referral: ReferralRule | None = None  # the one referral policy (evaluation.referral), fitted at training
    posthoc: PosthocEntry | None = None
    augmentation: CameraAugment | None = None  # random training-family cameras, one per exam and step
    format: str = FORMAT

    def __post_init__(self) -> None:
        if self.format != FORMAT:
            raise ValueError(f"format: expected {FORMAT!r}, got {self.format!r}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes: expected at least two distinct names, got {list(self.classes)}")
        outputs = self.model.options.get("num_classes")
        if outputs is not None and outputs != len(self.classes):
            raise ValueError(f"classes: {len(self.classes)} names for a model with {outputs} outputs "
                             "(model.options.num_classes); expected one name per output")


def canonical_json(obj: Any) -> str:
    """One spelling per value (sorted keys, no spaces), so a hash changes exactly when the content does."""
    return json.dumps(to_json(obj), sort_keys=True, separators=(",", ":"), allow_nan=True)


def record_sha256(record: RunRecord) -> str:
    return hashlib.sha256(canonical_json(record).encode()).hexdigest()
