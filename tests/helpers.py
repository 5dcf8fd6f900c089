"""Small helpers shared by tests of several folders."""

import torch
from torch import nn


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter drawn from N(0, 0.3^2): outputs that depend on every weight (zero-initialised layers
    would otherwise hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module
