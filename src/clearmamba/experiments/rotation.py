"""Rotate images about their centre with ``affine_grid`` / ``grid_sample`` (no torchvision).

Used by the rotating-digit figure of the EDL paper: a "1" turned 0-180 degrees stops being a "1" somewhere
around 60 degrees, and an uncertainty-aware model should say so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def rotation_matrices(degrees: Tensor) -> Tensor:
    """Affine matrices ``[n, 2, 3]`` that turn an image counter-clockwise by ``degrees`` (on screen)."""
    theta = torch.deg2rad(degrees.to(torch.float32))
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(theta)
    # grid_sample maps output (x, y) to input R^-1 (x, y); y points down, so counter-clockwise on screen is
    # [[cos, -sin], [sin, cos]] in normalised (x, y) coordinates
    return torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], -2)


def rotate(images: Tensor, degrees: float | Sequence[float] | Tensor) -> Tensor:
    """Rotate ``images [b, c, h, w]`` by ``degrees`` (one angle, or one per image); outside is filled with 0."""
    if images.ndim != 4:
        raise ValueError(f"images must be [batch, channels, height, width], got {tuple(images.shape)}")
    angles = torch.as_tensor(degrees, dtype=torch.float32).flatten()
    if angles.numel() == 1:
        angles = angles.expand(images.shape[0])
    if angles.numel() != images.shape[0]:
        raise ValueError(f"got {angles.numel()} angles for {images.shape[0]} images")
    images = images.to(torch.float32) if not images.is_floating_point() else images
    grid = F.affine_grid(rotation_matrices(angles).to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotation_series(image: Tensor, max_degrees: float = 180.0, step: float = 10.0) -> tuple[Tensor, Tensor]:
    """One image ``[c, h, w]`` turned through 0, step, ..., max_degrees: ``(images [n, c, h, w], angles [n])``."""
    if image.ndim != 3:
        raise ValueError(f"image must be [channels, height, width], got {tuple(image.shape)}")
    count = math.floor(max_degrees / step + 1e-9) + 1
    angles = torch.arange(count, dtype=torch.float32) * step
    return rotate(image.unsqueeze(0).expand(count, *image.shape), angles), angles
