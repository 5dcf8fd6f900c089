"""Tiny models shared by the uncertainty-family tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyConvNet(nn.Module):
    """A conv trunk with batch norm (``forward_features -> [b c h w]``) and a pooled linear head."""

    def __init__(self, in_chans: int = 1, num_classes: int = 3, width: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_features = width
        self.trunk = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(width, num_classes)

    def forward_features(self, x):
        return self.trunk(x)

    def forward_head(self, features):
        return self.fc(self.dropout(features.mean((-2, -1))))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


class FunctionalDropoutNet(nn.Module):
    """Dropout only through ``F.dropout`` inside ``forward``: invisible to module-based MC Dropout."""

    def __init__(self, in_features: int = 6, num_classes: int = 3, p: float = 0.5) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, 32)
        self.out = nn.Linear(32, num_classes)
        self.p = p

    def forward(self, x):
        return self.out(F.dropout(torch.relu(self.hidden(x)), self.p, self.training))


def blobs(n: int = 96, num_classes: int = 3, size: int = 8, seed: int = 0):
    """Images whose class sets the brightness of one quadrant: easy, so a few epochs learn it."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    images = 0.3 * torch.randn(n, 1, size, size, generator=generator)
    half = size // 2
    for k in range(num_classes):
        rows, cols = divmod(k, 2)
        images[labels == k, :, rows * half : (rows + 1) * half, cols * half : (cols + 1) * half] += 1.0
    return images, labels
