"""HaC, hyper-adaptive conditioning: a feature map re-modulates itself from its own global summary.

    z = GAP(X)                                   # b c
    h = GELU(LN(W2 GELU(LN(W1 z))))              # the hypernetwork, Linear -> LayerNorm -> GELU twice
    gamma, beta, a~ = split(W3 h);  a = sigmoid(a~)
    out = X + a * ((1 + gamma) * X + beta - X)   # = X + a * (gamma * X + beta)

``W3`` starts at zero, so gamma = beta = 0 and HaC is exactly the identity at initialisation: a backbone
keeps its behaviour until training finds a useful conditioning. Works channels-first (``b c h w``) or
channels-last (``b h w c``, MedMamba's internal layout).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class HaC(nn.Module):
    def __init__(self, dim: int, hidden: int | None = None, channels_last: bool = False) -> None:
        super().__init__()
        hidden = hidden or max(16, dim // 4)
        self.dim = dim
        self.channels_last = channels_last
        self.hyper = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
        )
        self.to_film = nn.Linear(hidden, 3 * dim)
        nn.init.zeros_(self.to_film.weight)
        nn.init.zeros_(self.to_film.bias)

    def conditioning(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """gamma, beta, gate, each ``[b, c]``, from the global average of ``x``."""
        spatial = (1, 2) if self.channels_last else (2, 3)
        z = x.mean(dim=spatial)
        gamma, beta, gate = self.to_film(self.hyper(z)).chunk(3, dim=-1)
        return gamma, beta, torch.sigmoid(gate)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"HaC expects a 4-D feature map, got shape {tuple(x.shape)}")
        channel_axis = 3 if self.channels_last else 1
        if x.shape[channel_axis] != self.dim:
            raise ValueError(f"HaC(dim={self.dim}) got {x.shape[channel_axis]} channels (shape {tuple(x.shape)})")
        gamma, beta, gate = self.conditioning(x)
        shape = (x.shape[0], 1, 1, self.dim) if self.channels_last else (x.shape[0], self.dim, 1, 1)
        gamma, beta, gate = gamma.view(shape), beta.view(shape), gate.view(shape)
        # out = X + a ((1 + gamma) X + beta - X)
        return x + gate * (gamma * x + beta)
