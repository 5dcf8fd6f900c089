"""``ExamSet``: the one in-memory format every clearmamba data source produces.

An exam is a short sequence of frames (``t c h w``) with the time of each frame (seconds after dye injection)
and a mask saying which frames are real; a single still image is an exam of one frame. The simulator and all
real-data loaders return an ``ExamSet`` so that training code never branches on where data came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

# Per-exam string metadata carried by every ExamSet (lists of length n).
META_FIELDS = ("exam_id", "patient_id", "eye", "modality", "device_id")

# Label of an exam whose class is not one of ``class_names`` (out-of-distribution sets).
UNKNOWN_LABEL = -1


@dataclass
class ExamSet(Dataset):
    """Exams as tensors plus per-exam metadata.

    frames: float32 ``[n, t, c, h, w]`` in [0, 1]; padded frames are zero.
    frame_times: float32 ``[n, t]``, seconds after injection (0 for stills and padding).
    mask: bool ``[n, t]``, True for a real frame.
    labels: int64 ``[n]``, index into ``class_names`` or ``UNKNOWN_LABEL`` (-1) for OOD exams.
    true_labels: labels before any simulated label noise (equal to ``labels`` for real data).
    """

    frames: torch.Tensor
    labels: torch.Tensor
    frame_times: torch.Tensor
    mask: torch.Tensor
    exam_id: list[str]
    patient_id: list[str]
    eye: list[str]
    modality: list[str]
    device_id: list[str]
    class_names: tuple[str, ...]
    true_labels: torch.Tensor | None = None
    name: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.frames.shape[0]
        if self.frames.ndim != 5:
            raise ValueError(
                f"ExamSet.frames: expected shape [n, t, c, h, w], got {tuple(self.frames.shape)}"
            )
        t = self.frames.shape[1]
        for key, shape in (("labels", (n,)), ("frame_times", (n, t)), ("mask", (n, t))):
            got = tuple(getattr(self, key).shape)
            if got != shape:
                raise ValueError(f"ExamSet.{key}: expected shape {shape}, got {got}")
        for key in META_FIELDS:
            if len(getattr(self, key)) != n:
                raise ValueError(f"ExamSet.{key}: expected {n} entries, got {len(getattr(self, key))}")
        if self.true_labels is None:
            self.true_labels = self.labels.clone()

    def __len__(self) -> int:
        return self.frames.shape[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "frames": self.frames[i],
            "frame_times": self.frame_times[i],
            "mask": self.mask[i],
            "label": int(self.labels[i]),
            "true_label": int(self.true_labels[i]),
            **{key: getattr(self, key)[i] for key in META_FIELDS},
            "index": i,
        }

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor, name: str | None = None) -> ExamSet:
        """A new ExamSet holding the exams at ``indices`` (in that order)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        pick = idx.tolist()
        return ExamSet(
            frames=self.frames[idx],
            labels=self.labels[idx],
            frame_times=self.frame_times[idx],
            mask=self.mask[idx],
            **{key: [getattr(self, key)[j] for j in pick] for key in META_FIELDS},
            class_names=self.class_names,
            true_labels=self.true_labels[idx],
            name=self.name if name is None else name,
            # per-exam lists in info (e.g. the OOD "kind") follow the selection
            info={
                k: [v[j] for j in pick] if isinstance(v, list) and len(v) == len(self) else v
                for k, v in self.info.items()
            },
        )

    def class_counts(self) -> list[int]:
        known = self.labels[self.labels >= 0]
        return torch.bincount(known, minlength=self.num_classes).tolist()

    def __repr__(self) -> str:
        n, t, c, h, w = self.frames.shape
        return f"ExamSet(name={self.name!r}, n={n}, frames={t}x{c}x{h}x{w}, classes={self.num_classes})"


def pad_to_length(x: torch.Tensor, t: int) -> torch.Tensor:
    """Zero-pad dimension 1 (time) of ``x [n, t0, ...]`` to ``t`` frames."""
    extra = t - x.shape[1]
    if extra < 0:
        raise ValueError(f"pad_to_length: {x.shape[1]} frames do not fit in {t}")
    return x if extra == 0 else torch.cat([x, x.new_zeros((x.shape[0], extra, *x.shape[2:]))], dim=1)


def pad_exams(
    exams: Sequence[torch.Tensor],
    times: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor] | None = None,
    length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The one padding rule: exams ``[t_i, c, h, w]`` with times ``[t_i]`` -> frames ``[n, t, c, h, w]``, times
    ``[n, t]`` and mask ``[n, t]`` (True for a real frame); padded frames and times are zero.

    ``t`` is ``length`` or the longest exam. ``masks`` (``[t_i]`` each) mark frames of an already padded exam;
    without them every given frame is real. Every exam must share ``c h w`` (the error names the first that
    does not)."""
    if not exams:
        raise ValueError("pad_exams: expected at least one exam")
    t = max(len(x) for x in exams) if length is None else length
    c, h, w = exams[0].shape[1:]
    frames = torch.zeros((len(exams), t, c, h, w), dtype=torch.float32)
    frame_times = torch.zeros((len(exams), t), dtype=torch.float32)
    mask = torch.zeros((len(exams), t), dtype=torch.bool)
    for i, (x, x_times) in enumerate(zip(exams, times, strict=True)):
        if tuple(x.shape[1:]) != (c, h, w):
            raise ValueError(f"pad_exams: exam {i} has frames {tuple(x.shape[1:])}, expected {(c, h, w)} like exam 0")
        k = len(x)
        frames[i, :k] = x
        frame_times[i, :k] = torch.as_tensor(x_times, dtype=torch.float32)
        mask[i, :k] = True if masks is None else masks[i].bool()
    return frames, frame_times, mask


def concat_examsets(sets: Sequence[ExamSet], name: str = "") -> ExamSet:
    """Concatenate ExamSets with the same frame size and class names; shorter exams are padded."""
    if not sets:
        raise ValueError("concat_examsets: expected at least one ExamSet")
    shapes = {tuple(s.frames.shape[2:]) for s in sets}
    if len(shapes) != 1:
        raise ValueError(f"concat_examsets: frame shapes differ {sorted(shapes)}; expected one [c, h, w]")
    t = max(s.frames.shape[1] for s in sets)
    return ExamSet(
        frames=torch.cat([pad_to_length(s.frames, t) for s in sets]),
        labels=torch.cat([s.labels for s in sets]),
        frame_times=torch.cat([pad_to_length(s.frame_times, t) for s in sets]),
        mask=torch.cat([pad_to_length(s.mask, t) for s in sets]),
        **{key: [v for s in sets for v in getattr(s, key)] for key in META_FIELDS},
        class_names=sets[0].class_names,
        true_labels=torch.cat([s.true_labels for s in sets]),
        name=name,
    )


def collate_exams(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch Dataset items of different frame counts with :func:`pad_exams`.

    Returns ``frames [b, t_max, c, h, w]``, ``frame_times [b, t_max]``, ``mask [b, t_max]``, ``label [b]``,
    ``true_label [b]``, ``index [b]`` and the string metadata as lists.
    """
    if not items:
        raise ValueError("collate_exams: got an empty batch")
    frames, times, mask = pad_exams([item["frames"] for item in items], [item["frame_times"] for item in items],
                                    [item["mask"] for item in items])  # fmt: skip
    batch: dict[str, Any] = {
        "frames": frames,
        "frame_times": times,
        "mask": mask,
        "label": torch.tensor([item["label"] for item in items], dtype=torch.int64),
        "true_label": torch.tensor(
            [item.get("true_label", item["label"]) for item in items], dtype=torch.int64
        ),
        "index": torch.tensor([item.get("index", -1) for item in items], dtype=torch.int64),
    }
    for key in META_FIELDS:
        batch[key] = [item.get(key, "") for item in items]
    return batch
