"""What the training loop and the batching ``predict`` read: model inputs as tensors, batched alike.

An exam set gives ``(frames, frame_times, mask)``; a set of images gives ``(images,)``. The model is called as
``model(*inputs)`` either way, so the loop never branches on the kind of data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from clearmamba.data.examset import ExamSet


@dataclass
class TensorSet:
    """Model inputs ``inputs`` (each ``[n, ...]``) with their labels ``[n]`` and optional ids."""

    inputs: tuple[Tensor, ...]
    labels: Tensor
    ids: list[str] | None = None
    labelled: bool = True  # False: ``labels`` are placeholders (predictions then carry none)

    def __post_init__(self) -> None:
        n = len(self.labels)
        bad = [tuple(x.shape) for x in self.inputs if len(x) != n]
        if bad:
            raise ValueError(f"TensorSet: {n} labels but inputs of shapes {bad}; expected {n} rows each")

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def unlabelled(cls, inputs: Tensor | tuple[Tensor, ...]) -> TensorSet:
        inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
        return cls(inputs, torch.full((len(inputs[0]),), -1, dtype=torch.long), labelled=False)

    def take(self, index: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
        return tuple(x[index] for x in self.inputs), self.labels[index]


def as_tensor_set(data) -> TensorSet:
    """An ExamSet, a TensorSet, a ``(inputs, labels)`` pair or a plain input tensor, as a TensorSet."""
    if isinstance(data, TensorSet):
        return data
    if isinstance(data, ExamSet):
        return TensorSet((data.frames, data.frame_times, data.mask), data.labels, list(data.exam_id))
    if isinstance(data, Tensor):
        return TensorSet.unlabelled(data)
    if isinstance(data, tuple) and len(data) == 2:
        inputs, labels = data
        inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
        return TensorSet(inputs, torch.as_tensor(labels).long())
    raise TypeError(f"cannot train or predict on {type(data).__name__}; expected an ExamSet, a TensorSet, "
                    "(inputs, labels) or a tensor")


def epoch_indices(
    labels: Tensor, epoch: int, seed: int, balanced: bool, rank: int = 0, world_size: int = 1
) -> Tensor:
    """This rank's sample order for ``epoch``: a permutation seeded by ``(seed, epoch)`` (so a resumed run draws
    the same order), or class-balanced draws with replacement."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    n = len(labels)
    if balanced:
        counts = torch.bincount(labels, minlength=int(labels.max()) + 1).clamp_min(1).double()
        # P(i) proportional to 1 / n_{y_i}: every class is drawn equally often in expectation
        order = torch.multinomial(1.0 / counts[labels], n, replacement=True, generator=generator)
    else:
        order = torch.randperm(n, generator=generator)
    per_rank = math.ceil(n / world_size)
    order = torch.cat([order, order[: per_rank * world_size - n]])
    return order[rank::world_size]
