"""The training job behind ``clearmamba train`` and ``clearmamba demo``: data source -> splits -> :func:`fit` ->
RaP's post-hoc step -> the referral rule -> one checkpoint folder with its typed run record.

A run folder holds ``checkpoint/`` (written once, whole, at the end), ``last/`` (the resumable state after the
latest epoch, written whole every epoch) and ``metrics.csv`` (one row per epoch, fixed columns). ``--resume``
continues from ``last/`` only when the configuration and the training data are those of the run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clearmamba.atomic import atomic_write_text
from clearmamba.data.camera_family import CameraAugment
from clearmamba.data.examset import ExamSet
from clearmamba.data.invariant import Preprocessing as IntensitySteps
from clearmamba.data.loaders import ReadOptions
from clearmamba.data.sources import BuiltinData, Source, examset_sha256, open_source, training_splits
from clearmamba.errors import UserError
from clearmamba.serialize import to_json

from . import checkpoint as ckpt
from .config import TrainConfig
from .distributed import DistributedContext
from .evaluate import fit_rule
from .fit import HISTORY_COLUMNS, Callback, EarlyStopping, EpochLog, FitState, ResumePoint, callback_keys, fit
from .predict import predict
from .record import DataSpec, MethodSpec, ModelSpec, Outcome, Preprocessing, RunRecord, Versions

RESUME_HINT = "start afresh with --overwrite, or resume with the run's own options"
# record fields -> the flag a user changes them with
FLAGS = {
    "train.epochs": "--epochs", "train.batch_size": "--batch-size", "train.lr": "--lr", "train.seed": "--seed",
    "train.balanced_sampling": "--balanced", "preprocessing.frame_size": "--frame-size",
    "preprocessing.in_chans": "--channels", "model.arch": "--model", "model.options.head": "--head",
    "model.options.temporal": "--temporal", "model.options.hac": "--hac", "model.options.evidence": "--evidence",
    "method.options.kl_weight": "--kl-weight", "data.train_sha256": "--data", "data.source": "--data",
}  # fmt: skip


class RunFolderError(UserError):
    """A run folder that cannot be used as asked (exists, nothing to resume, different configuration)."""


@dataclass(frozen=True)
class RunConfig:
    """What one training run is asked to do."""

    data: str  # builtin, a .npz, an image folder or a manifest .csv
    arch: str = "clear_mamba_tiny"
    model_options: dict[str, Any] = field(default_factory=dict)  # create_model options (head, temporal, hac, ...)
    method: MethodSpec = MethodSpec("evidential", {})
    train: TrainConfig = TrainConfig()
    read: ReadOptions = ReadOptions()
    builtin: BuiltinData = BuiltinData()
    classes: tuple[str, ...] | None = None  # declared class names (labels must belong to them)
    # acquisition-invariant steps for every exam (data.invariant.INVARIANT: field of view, gain and gamma removed)
    intensity: IntensitySteps = IntensitySteps()
    # random cameras from a training family during training (with builtin data, train_camera="ideal" first)
    camera_augment: CameraAugment | None = None
    target_risk: float = 0.05  # allowed error among accepted exams
    delta: float = 0.1  # the promise holds with probability >= 1 - delta over the calibration exams
    require_guarantee: bool = False  # refuse (instead of warn) when the exams cannot support the target
    posthoc: bool = True  # RaP's density gate + evidence scaling (evidential heads)


def prepare_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to write into an existing run unless told how; clean what an interrupted run left."""
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite: choose one (continue the run, or replace it)")
    if resume:
        if not ckpt.recover(out / "last").is_dir():
            raise RunFolderError(f"--resume: {out} holds no resumable run (no {out / 'last'}); train without "
                                 "--resume to start one")
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunFolderError(f"--out {out}: already exists and is not empty; pass --overwrite to replace that run, "
                                 "--resume to continue it, or choose another --out")
        import shutil

        for sub in ("checkpoint", "last", "metrics.csv"):
            target = out / sub
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    ckpt.clean_stale(out)


class CameraBatches:
    """fit's ``augment``: each exam of a training batch through its own random camera (all its frames alike),
    then the run's intensity steps, so augmentation happens before what the model will see at prediction."""

    def __init__(self, augment: CameraAugment | None, intensity: IntensitySteps) -> None:
        self.augment, self.intensity = augment, intensity

    def __call__(self, inputs: tuple[torch.Tensor, ...], generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        frames, times, mask = inputs
        out = []
        for i in range(len(frames)):
            x = frames[i] if self.augment is None else self.augment(frames[i], generator) * mask[i][:, None, None, None]
            out.append(self.intensity(x, mask[i]))
        return torch.stack(out), times, mask


def preprocess_sets(sets: dict[str, ExamSet], intensity: IntensitySteps, skip: tuple[str, ...] = ()) -> dict:
    """Every set through the intensity steps (the same ones evaluate and predict apply from the record)."""
    if not intensity.steps:
        return sets
    return {name: s if name in skip else intensity.apply_examset(s) for name, s in sets.items()}


def preprocessing_of(train_set: ExamSet, frame_times: str) -> Preprocessing:
    _, t, c, h, w = train_set.frames.shape
    typical = []
    for position in range(t):
        real = train_set.mask[:, position]
        if real.any():
            typical.append(float(statistics.median(train_set.frame_times[real, position].tolist())))
    return Preprocessing(frame_size=(h, w), in_chans=c, max_frames=t, frame_time_source=frame_times,
                         typical_frame_times=tuple(round(v, 3) for v in typical))  # fmt: skip


def fingerprint(record: RunRecord) -> dict[str, Any]:
    """What must be equal for ``--resume`` to continue a run."""
    parts = {"model": record.model, "method": record.method, "train": record.train,
             "preprocessing": record.preprocessing, "augmentation": record.augmentation,
             "data.train_sha256": record.data.train_sha256}  # fmt: skip
    return _flatten(to_json(parts))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: value}


def refuse_changed(stored: dict[str, Any], now: dict[str, Any], run: Path) -> None:
    changed = sorted(k for k in stored.keys() | now.keys() if stored.get(k) != now.get(k))
    if not changed:
        return
    shown = []
    for key in changed[:4]:
        flag = FLAGS.get(key, key)
        if key.startswith("data."):
            shown.append(f"{flag}: the training data differ from the run's")
        else:
            shown.append(f"{flag}: {stored.get(key)!r} in the run, {now.get(key)!r} now")
    raise RunFolderError(f"--resume {run}: the run was trained with other settings ({'; '.join(shown)}); "
                         f"{RESUME_HINT}")


class RunState(Callback):
    """After every epoch: the resumable state in ``last/`` (written whole) and ``metrics.csv``."""

    def __init__(self, out: Path, fingerprint: dict[str, Any]) -> None:
        self.out, self.fingerprint = out, fingerprint
        self.is_main = DistributedContext.from_environment().rank == 0

    def on_epoch_end(self, state: FitState, row: dict[str, float]) -> None:
        if not self.is_main:
            return
        optimizer_tensors, optimizer_meta = ckpt.optimizer_tensors(state.optimizer)
        values, tensors = {}, dict(optimizer_tensors)
        for key, callback in zip(callback_keys(state.callbacks), state.callbacks):
            v, t = callback.state_dict()
            values[key] = v
            tensors.update({f"callback.{key}.{k}": x for k, x in t.items()})
        weights = ckpt.tensors_to_bytes(ckpt.unwrap(state.model).state_dict())
        others = ckpt.tensors_to_bytes(tensors)
        progress = {"epoch": state.epoch + 1, "step": state.step, "history": state.history, "callbacks": values,
                    "optimizer": optimizer_meta, "fingerprint": self.fingerprint,
                    "sha256": {ckpt.WEIGHTS: ckpt.sha256_bytes(weights), ckpt.OPTIMIZER: ckpt.sha256_bytes(others)}}
        state_json = json.dumps(progress, indent=1, allow_nan=True).encode()
        ckpt.write_folder(self.out / "last", {ckpt.WEIGHTS: weights, ckpt.OPTIMIZER: others, ckpt.STATE: state_json})
        write_metrics_csv(self.out / "metrics.csv", state.history)


class FiniteLoss(Callback):
    """Stop at the first NaN or infinite loss, before anything is saved from it."""

    def __init__(self, data: str) -> None:
        self.data = data

    def on_batch_end(self, state, output, target, loss) -> None:
        if not torch.isfinite(loss.detach()).all():
            raise UserError(f"--data {self.data}: training diverged at epoch {state.epoch + 1}, step {state.step} (the "
                            "loss is NaN or infinite); check the data for extreme values, or lower --lr")


def read_resume_point(out: Path, fingerprint_now: dict[str, Any]) -> ResumePoint:
    folder = ckpt.recover(out / "last")
    try:
        progress = json.loads((folder / ckpt.STATE).read_text(encoding="utf-8"))
        digests = progress["sha256"]
    except (OSError, ValueError, KeyError) as error:
        raise RunFolderError(f"--resume: {folder / ckpt.STATE} is unreadable ({error}); {RESUME_HINT}") from None
    refuse_changed(progress.get("fingerprint", {}), fingerprint_now, out)
    weights = ckpt.load_tensors(folder / ckpt.WEIGHTS, digests[ckpt.WEIGHTS])
    others = ckpt.load_tensors(folder / ckpt.OPTIMIZER, digests[ckpt.OPTIMIZER])
    optimizer = ckpt.optimizer_state_dict({k: v for k, v in others.items() if k.startswith("state.")},
                                          progress["optimizer"])  # fmt: skip
    callbacks = {}
    for key, values in progress["callbacks"].items():
        prefix = f"callback.{key}."
        callbacks[key] = (values, {k.removeprefix(prefix): v for k, v in others.items() if k.startswith(prefix)})
    return ResumePoint(weights, optimizer, progress["epoch"], progress["step"], progress["history"], callbacks)


def write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    """One row per epoch; the columns are ``HISTORY_COLUMNS`` then any extra ones sorted, whatever the history's
    key order (a resumed run's rows read back from JSON)."""
    extra = sorted({k for row in history for k in row} - set(HISTORY_COLUMNS))
    columns = [c for c in HISTORY_COLUMNS if any(c in row for row in history)] + extra
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue(), ckpt.FILE_MODE)


def open_training_data(cfg: RunConfig) -> tuple[Source, dict[str, ExamSet], Any]:
    source = open_source(cfg.data, cfg.read, cfg.classes, cfg.builtin)
    sets, rule = training_splits(source, cfg.train.seed)
    return source, sets, rule


def build_record(cfg: RunConfig, source: Source, sets: dict[str, ExamSet], rule) -> RunRecord:
    train_set = sets["train"]
    options = {"num_classes": train_set.num_classes, "in_chans": int(train_set.frames.shape[2]), **cfg.model_options}
    data = DataSpec(source=source.spec, source_sha256=source.sha256, train_sha256=examset_sha256(train_set),
                    split=rule, n_train=len(train_set), n_val=len(sets["val"]),
                    test_exam_ids=tuple(sets["test"].exam_id) if "test" in sets else (),
                    builtin=cfg.builtin if source.spec == "builtin" else None,
                    n_calibration=len(sets["calibration"]) if "calibration" in sets else 0)  # fmt: skip
    outcome = Outcome(0, None, False, math.nan, math.nan, 0.0)
    preprocessing = replace(preprocessing_of(train_set, source.frame_times), intensity=cfg.intensity)
    return RunRecord(classes=tuple(train_set.class_names), model=ModelSpec(cfg.arch, options),
                     preprocessing=preprocessing, method=cfg.method, train=cfg.train, data=data, outcome=outcome,
                     versions=Versions.current(), augmentation=cfg.camera_augment)  # fmt: skip


def train_run(cfg: RunConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
              log: Callable[[str], None] = print, live: bool = False,
              data: tuple[Source, dict[str, ExamSet], Any] | None = None, name: str = "",
              prepared: bool = False) -> tuple[nn.Module, RunRecord]:  # fmt: skip
    """Train, fit the post-hoc step and the referral rule, write ``<out>/checkpoint``; (model, record).

    ``data``: the opened source, its splits and split rule (else read from ``cfg.data``); ``prepared``: the
    caller already ran :func:`prepare_out` (so the folder was checked before the data were read)."""
    from clearmamba.models import create_model
    from clearmamba.uncertainty import create_method

    out = Path(out)
    if not prepared:
        prepare_out(out, resume, overwrite)
    source, sets, rule = data or open_training_data(cfg)
    record = build_record(cfg, source, sets, rule)
    method = create_method(cfg.method.name, **cfg.method.options)
    resume_point = read_resume_point(out, fingerprint(record)) if resume else None
    if resume_point is not None:
        log(f"{name + ': ' if name else ''}resuming after epoch {resume_point.epoch} from {out / 'last'}")
    callbacks = [EarlyStopping(cfg.train.patience), FiniteLoss(cfg.data), EpochLog(name, log, live),
                 RunState(out, fingerprint(record))]  # fmt: skip
    raw_train = sets["train"]
    sets = preprocess_sets(sets, cfg.intensity)
    # with camera augmentation the raw training frames go through a camera, then the intensity steps, per batch
    augment = CameraBatches(cfg.camera_augment, cfg.intensity) if cfg.camera_augment is not None else None
    result = fit(method, lambda: create_model(cfg.arch, **record.model.options),
                 raw_train if augment is not None else sets["train"], cfg.train, val=sets["val"],
                 callbacks=callbacks, resume=resume_point, augment=augment)  # fmt: skip
    model = result.model
    history = result.history[0]
    extra: dict[str, bytes] = {}
    posthoc = None
    if cfg.posthoc and method.head == "evidential":
        from .posthoc import POSTHOC_FILE, fit_posthoc

        evidence = str(record.model.options.get("evidence", "softplus"))
        model, posthoc, data_bytes = fit_posthoc(model, sets["train"], sets["val"], evidence,
                                                 cfg.train.eval_batch_size)  # fmt: skip
        extra[POSTHOC_FILE] = data_bytes
    # the rule is fitted on exams training never chose by: a calibration set when the source has one (the
    # demo's), else the validation exams; the post-hoc model's own scores (its density) are the ones ruled on
    calibration = sets["calibration"] if "calibration" in sets else sets["val"]
    rule = fit_rule(predict(model, calibration, cfg.train.eval_batch_size), calibration.labels, record.classes,
                    cfg.target_risk, cfg.delta, cfg.require_guarantee, log)  # fmt: skip
    best = history[(result.best_epoch or len(history)) - 1] if history else {}
    outcome = Outcome(epochs_run=len(history), best_epoch=result.best_epoch, stopped_early=result.stopped_early,
                      val_nll=float(best.get("val_nll", math.nan)), val_acc=float(best.get("val_acc", math.nan)),
                      seconds=round(result.seconds, 1))  # fmt: skip
    record = replace(record, outcome=outcome, posthoc=posthoc, referral=rule)
    if DistributedContext.from_environment().rank == 0:
        inner = result.members[0] if len(result.members) == 1 else result.model
        ckpt.save_checkpoint(out / "checkpoint", inner, record, extra)
    return model.eval(), record
