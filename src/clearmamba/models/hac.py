"""HaC, hyper-adaptive conditioning: a feature map re-modulates itself from its own global summary.

    z = GAP(X)                                   # b c
    h = GELU(LN(W2 GELU(LN(W1 z))))              # the hypernetwork, Linear -> LayerNorm -> GELU twice
    gamma, beta, a~ = split(W3 h);  a = sigmoid(a~)
    out = X + a * ((1 + gamma) * X + beta - X)   # = X + a * (gamma * X + beta)

``W3`` starts at zero, so gamma = beta = 0 and HaC is exactly the identity at initialisation: a backbone
keeps its behaviour until training finds a useful conditioning. Works channels-first (``b c h w``) or
channels-last (``b h w c``, MedMamba's internal layout).

:class:`PublicHaC` is the other reading, that of the public CLEAR-Mamba training code (GitHub
ZJU4HealthCare/CLEAR-Mamba, ``MedMamba_AS.py``; re-implemented here from its description): per-sample
generated down/up projections of the early feature map, then an un-gated FiLM ``X * scale + shift`` of the
last map with LayerNorm'd parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import init_weights


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


# ---------------------------------------------------------------------------------- HaC as in the public code


class TokenMLP(nn.Module):
    """Per-token ``LN -> Linear -> SiLU -> Linear`` (what the public code calls SwiGLU), or with ``gated`` a
    true SwiGLU ``W3 (SiLU(W1 u) * W2 u)`` after the LayerNorm."""

    def __init__(self, dim: int, gated: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.gated = gated
        self.fc1 = nn.Linear(dim, 2 * dim if gated else dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, u: Tensor) -> Tensor:
        h = self.fc1(self.norm(u))
        if self.gated:
            value, gate = h.chunk(2, dim=-1)
            return self.fc2(nn.functional.silu(gate) * value)
        return self.fc2(nn.functional.silu(h))


def _generator(dim_in: int, dim_hidden: int, dim_out: int) -> nn.Sequential:
    # a parameter generator: Linear -> LayerNorm -> GELU -> Linear
    layers = [nn.Linear(dim_in, dim_hidden), nn.LayerNorm(dim_hidden), nn.GELU(), nn.Linear(dim_hidden, dim_out)]
    return nn.Sequential(*layers)


class DynamicProjection(nn.Module):
    """Per-sample generated down- and up-projections of a feature map (channels first, ``b c h w``):

        f = GELU(BN(Conv1x1(x)))                              b F h w
        W_d, b_d = split(G_d(GAP(f)))                         b R F, b R    generated for each sample
        u = f W_d^T + b_d,   v = TokenMLP(u)                  b (h w) R     R = F / reduction
        W_u, b_u = split(G_u(mean over tokens of v))          b F R, b F
        out = Conv1x1(v W_u^T + b_u) + f                      b F h w
    """

    def __init__(self, in_dim: int, feature_dim: int, reduction: int = 4, gated: bool = False) -> None:
        super().__init__()
        if reduction < 1 or feature_dim // reduction < 1:
            raise ValueError(f"DynamicProjection: need 1 <= reduction <= feature_dim, got {reduction}, {feature_dim}")
        self.feature_dim, self.reduced_dim = feature_dim, feature_dim // reduction
        f, r = self.feature_dim, self.reduced_dim
        self.embed = nn.Sequential(nn.Conv2d(in_dim, f, 1), nn.BatchNorm2d(f), nn.GELU())
        self.down_generator = _generator(f, f, r * f + r)
        self.token_mlp = TokenMLP(r, gated)
        self.up_generator = _generator(r, r, f * r + f)
        self.out_proj = nn.Conv2d(f, f, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        f, r = self.feature_dim, self.reduced_dim
        features = self.embed(x)
        tokens = features.flatten(2).transpose(1, 2)  # b (h w) F
        down = self.down_generator(features.mean(dim=(2, 3)))
        w_down, b_down = down[:, : r * f].view(b, r, f), down[:, r * f :]
        v = self.token_mlp(torch.baddbmm(b_down[:, None], tokens, w_down.transpose(1, 2)))  # b (h w) R
        up = self.up_generator(v.mean(dim=1))
        w_up, b_up = up[:, : f * r].view(b, f, r), up[:, f * r :]
        out = torch.baddbmm(b_up[:, None], v, w_up.transpose(1, 2))  # b (h w) F
        return self.out_proj(out.transpose(1, 2).reshape(b, f, h, w)) + features


class PublicHaC(nn.Module):
    """HaC as the public CLEAR-Mamba code builds it: a :class:`DynamicProjection` of the *early* feature map
    (after the patch embedding), resized to the last map, generates a per-position FiLM of the last map

        d = resize(DynamicProjection(E))                     b F H W
        scale, shift = split(LN(Linear(d)))                  b 2C H W -> b C H W each
        out = X * scale + shift

    The LayerNorm'd FiLM parameters are not centred on the identity (scale ~ N(0, 1) at initialisation),
    as in the public code. ``forward`` returns ``(out, d)``: the three-branch head reads GAP(d) too.
    """

    def __init__(
        self, early_dim: int, dim: int, feature_dim: int | None = None, reduction: int = 4, gated: bool = False
    ) -> None:
        super().__init__()
        self.dim = dim
        self.feature_dim = feature_dim or early_dim
        self.dynamic = DynamicProjection(early_dim, self.feature_dim, reduction, gated)
        self.to_film = nn.Sequential(nn.Linear(self.feature_dim, 2 * dim), nn.LayerNorm(2 * dim))
        self.apply(init_weights)  # the public code's init, which is MedMamba's

    def forward(self, early: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        if early.ndim != 4 or x.ndim != 4 or x.shape[1] != self.dim:
            raise ValueError(
                f"PublicHaC(dim={self.dim}) expects early [b, c, h, w] and last [b, {self.dim}, H, W] feature maps, "
                f"got {tuple(early.shape)} and {tuple(x.shape)}"
            )
        dynamic = self.dynamic(early)
        if dynamic.shape[-2:] != x.shape[-2:]:
            dynamic = nn.functional.interpolate(dynamic, size=x.shape[-2:], mode="bilinear", align_corners=False)
        scale, shift = self.to_film(dynamic.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).chunk(2, dim=1)
        return x * scale + shift, dynamic
