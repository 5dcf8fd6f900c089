"""Predict exams read from image files or exam folders, with the checkpoint's preprocessing and referral rule.

Frames are read by the one exam reader (:func:`clearmamba.data.loaders.read_exam`: natural frame order, the
checkpoint's frame size and channels). Frame times, in seconds after injection, come from ``--frame-times``;
without them a model trained on real times is given its training exams' typical time at each frame position,
and the result says so, while a model trained on frame order alone gets 0, 1, 2, ... as in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from clearmamba.data.examset import pad_exams
from clearmamba.data.loaders import DataError, ReadOptions, read_exam
from clearmamba.evaluation import ExamDecision, decide

from .record import RunRecord


@dataclass
class ExamResult:
    """What a doctor needs about one exam: the rule's decision and why, with the frames it was read from."""

    exam: str
    frames: int
    frame_times: list[float]
    decision: ExamDecision
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"exam": self.exam, "frames": self.frames, "frame_times": self.frame_times,
                **{k: v for k, v in self.decision.to_dict().items() if k != "exam"}, "notes": self.notes}


def frame_times_for(record: RunRecord, n_frames: int, given: Sequence[float] | None, exam: Path) -> tuple[list[float],
                                                                                                          list[str]]:
    """The times an exam of ``n_frames`` is predicted with, and a note when they were assumed."""
    prep = record.preprocessing
    if given is not None:
        if len(given) != n_frames:
            raise DataError(f"{exam}: {n_frames} frame(s) but --frame-times gives {len(given)}; expected one time "
                            "(seconds after injection) per frame")
        return list(given), []
    longer = n_frames > prep.max_frames
    notes = [f"{n_frames} frames, more than the {prep.max_frames} of any training exam"] if longer else []
    if prep.frame_time_source == "frame order":
        return [float(i) for i in range(n_frames)], notes
    if longer or len(prep.typical_frame_times) < n_frames:
        raise DataError(f"{exam}: {n_frames} frames, more than the training exams had ({prep.max_frames}), so no "
                        "typical times are known; give them with --frame-times (seconds after injection)")
    times = list(prep.typical_frame_times[:n_frames])
    shown = ", ".join(f"{t:g}" for t in times)
    return times, [f"no --frame-times given: assumed the training exams' typical times {shown} s"]


@torch.no_grad()
def predict_files(model: nn.Module, record: RunRecord, paths: Sequence[Path],
                  frame_times: Sequence[float] | None = None,
                  max_pixels: int = ReadOptions.max_pixels) -> tuple[list[ExamResult], list[str]]:  # fmt: skip
    """One result per readable exam; an unreadable exam is named in the error list and the others go on."""
    read = ReadOptions(channels=record.preprocessing.in_chans, size=record.preprocessing.frame_size,
                       max_pixels=max_pixels)  # fmt: skip
    results, errors = [], []
    model.eval()
    for path in map(Path, paths):
        try:
            frames, _ = read_exam(path, read)
            times, notes = frame_times_for(record, len(frames), frame_times, path)
        except DataError as error:
            errors.append(str(error))
            continue
        frames = record.preprocessing.intensity(frames)  # the record's acquisition-invariant steps (or none)
        x, t, mask = pad_exams([frames], [torch.tensor(times)])
        prediction = model(x, t, mask)
        prediction.ids = [str(path)]
        results.append(ExamResult(str(path), len(frames), times, decide(prediction, record.referral).exam(0), notes))
    return results, errors
