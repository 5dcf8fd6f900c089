"""Preprocessing and augmentation of one exam ``frames [t, c, h, w]`` in plain torch.

The same geometric transform is applied to every frame of an exam (frames are registered to each other).
Dataset items are dicts with a ``"frames"`` key, so MONAI dictionary transforms (``keys="frames"``) work too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


def fov_mask(frames: torch.Tensor, threshold: float = 0.04) -> torch.Tensor:
    """``[h, w]`` bool field of view: pixels brighter than ``threshold`` in some frame, cleaned by a 3x3
    majority vote (fills isolated dark pixels inside, drops isolated noise outside, keeps the border)."""
    lit = (frames.amax(dim=(0, 1)) > threshold).float()[None, None]  # [1, 1, h, w]
    return F.avg_pool2d(lit, 3, stride=1, padding=1, count_include_pad=False)[0, 0] > 0.5


def normalise_intensity(
    frames: torch.Tensor, mask: torch.Tensor | None = None, low: float = 0.01, high: float = 0.99
) -> torch.Tensor:
    """Rescale so that the ``low``/``high`` quantiles inside the FOV map to 0/1 (one scale per exam)."""
    mask = fov_mask(frames) if mask is None else mask
    inside = frames[..., mask] if mask.any() else frames.reshape(-1)
    lo, hi = torch.quantile(inside.float().reshape(-1)[:1_000_000], torch.tensor([low, high]))
    return ((frames - lo) / (hi - lo).clamp(min=1e-6)).clamp(0, 1) * mask


def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """``[t, c, h, w] -> [t, c, size, size]`` (area when shrinking, bilinear when growing)."""
    mode = "area" if frames.shape[-1] >= size else "bilinear"
    return F.interpolate(frames, size=(size, size), mode=mode)


@dataclass
class ExamAugment:
    """Random flip, rotation, scale, brightness, contrast and gamma, identical for all frames of an exam."""

    flip: bool = True
    max_degrees: float = 15.0
    scale: float = 0.1
    brightness: float = 0.1
    contrast: float = 0.15
    gamma: float = 0.2

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        def uniform(a: float) -> float:
            return float((torch.rand((), generator=generator) * 2 - 1) * a)

        angle = math.radians(uniform(self.max_degrees))
        zoom = 1 + uniform(self.scale)
        sign = -1.0 if self.flip and torch.rand((), generator=generator) < 0.5 else 1.0
        theta = torch.tensor(
            [
                [sign * math.cos(angle) / zoom, -math.sin(angle) / zoom, 0.0],
                [sign * math.sin(angle) / zoom, math.cos(angle) / zoom, 0.0],
            ]
        )
        grid = F.affine_grid(
            theta[None].expand(frames.shape[0], -1, -1), list(frames.shape), align_corners=False
        )
        out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = (out * (1 + uniform(self.contrast)) + uniform(self.brightness)).clamp(0, 1)
        return out ** math.exp(uniform(self.gamma))


class TransformedExams(Dataset):
    """Wrap a Dataset of exam dicts and apply ``transform(frames)`` to each item's frames; padded frames
    (``mask`` False) stay zero."""

    def __init__(self, exams: Dataset, transform: Callable[[torch.Tensor], torch.Tensor]):
        self.exams, self.transform = exams, transform

    def __len__(self) -> int:
        return len(self.exams)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.exams[i])
        frames = self.transform(item["frames"])
        item["frames"] = frames * item["mask"][:, None, None, None]
        return item
