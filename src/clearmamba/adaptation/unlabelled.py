"""What test-time adaptation may see of a new camera's exams: frames, frame times and masks, no labels.

:class:`UnlabelledExams` has no field for labels (or for ids or devices), and :meth:`from_examset` copies
only the three tensors a model reads, so adaptation code cannot reach a label even by mistake.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class UnlabelledExams:
    """``frames [n, t, c, h, w]``, ``frame_times [n, t]``, ``mask [n, t]`` (True for a real frame)."""

    frames: Tensor
    frame_times: Tensor
    mask: Tensor

    def __post_init__(self) -> None:
        if self.frames.ndim != 5:
            raise ValueError(f"UnlabelledExams.frames: expected [n, t, c, h, w], got {tuple(self.frames.shape)}")
        n, t = self.frames.shape[:2]
        for key in ("frame_times", "mask"):
            shape = tuple(getattr(self, key).shape)
            if shape != (n, t):
                raise ValueError(f"UnlabelledExams.{key}: expected shape {(n, t)}, got {shape}")
        if n == 0:
            raise ValueError("UnlabelledExams: expected at least one exam")

    @classmethod
    def from_examset(cls, exams) -> UnlabelledExams:
        """The frames, times and masks of an ExamSet (or anything with those three attributes), copied."""
        return cls(exams.frames.clone(), exams.frame_times.clone(), exams.mask.clone().bool())

    def __len__(self) -> int:
        return self.frames.shape[0]

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """``(frames, frame_times, mask)`` batches; shuffled when a ``generator`` is given."""
        if batch_size < 1:
            raise ValueError(f"UnlabelledExams.batches: batch_size must be >= 1, got {batch_size}")
        order = torch.randperm(len(self), generator=generator) if generator is not None else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            index = order[start : start + batch_size]
            yield self.frames[index], self.frame_times[index], self.mask[index]
