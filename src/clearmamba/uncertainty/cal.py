"""CAL, counterfactual attention learning (Rao et al. 2021), for 2D ``[b c h w]`` and 3D ``[b c t h w]`` maps.

On a backbone's last feature map F ``[b, c, *s]``:

- M attention maps A = ReLU(BN(conv1x1(F))) ``[b, m, *s]`` (conv without bias, BN eps 1e-3);
- bilinear attention pooling f[b, m, c] = 1/N sum_s A[b, m, s] F[b, c, s], then the signed square root
  sign(f) sqrt(|f| + 1e-6) and L2 normalisation over the flattened M*C vector;
- logits = fc(100 f) with a bias-free ``Linear(M*C, classes)``;
- counterfactual: the same pooling with fake attention A' ~ U(0, 2) per element in training, A' = 1 at test;
  effect logits = logits - fc(100 f');
- loss = CE(logits)/3 + CE(effect logits) (weights configurable). At inference the raw logits predict.

The reference's centre loss and attention crop/drop augmentations are not included.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from clearmamba.uncertainty.prediction import Prediction

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


class CALOutput(NamedTuple):
    logits: Tensor  # [b, k]
    effect_logits: Tensor  # [b, k]
    embedding: Tensor  # [b, m*c], signed-sqrt + L2-normalised
    attention: Tensor  # [b, m, *s]

    @property
    def prediction(self) -> Prediction:
        return Prediction.from_logits(self.logits)


def bilinear_attention_pool(features: Tensor, attention: Tensor) -> Tensor:
    """``features [b, c, *s]``, ``attention [b, m, *s]`` -> normalised embedding ``[b, m*c]``."""
    feats = rearrange(features, "b c ... -> b c (...)")
    attn = rearrange(attention, "b m ... -> b m (...)")
    # f[b, m, c] = 1/N sum_n A[b, m, n] F[b, c, n]
    pooled = torch.einsum("bmn,bcn->bmc", attn, feats) / feats.shape[-1]
    pooled = rearrange(pooled, "b m c -> b (m c)")
    # sign(f) sqrt(|f| + eps), then L2 over the whole vector
    pooled = torch.sign(pooled) * torch.sqrt(pooled.abs() + 1e-6)
    return F.normalize(pooled, dim=-1)


class CounterfactualAttention(nn.Module):
    """CAL head on a feature map; ``spatial_dims`` 2 for ``[b c h w]``, 3 for ``[b c t h w]``."""

    def __init__(
        self, in_channels: int, num_classes: int, num_attentions: int = 32, spatial_dims: int = 2, scale: float = 100.0
    ) -> None:
        super().__init__()
        if spatial_dims not in _CONV:
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_dims = spatial_dims
        self.scale = scale
        self.attention = nn.Sequential(
            _CONV[spatial_dims](in_channels, num_attentions, kernel_size=1, bias=False),
            _NORM[spatial_dims](num_attentions, eps=1e-3),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(num_attentions * in_channels, num_classes, bias=False)

    def forward(self, features: Tensor) -> CALOutput:
        if features.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"CAL with spatial_dims={self.spatial_dims} needs features of {self.spatial_dims + 2} dims "
                f"[b, c, ...], got shape {tuple(features.shape)}"
            )
        attention = self.attention(features)
        embedding = bilinear_attention_pool(features, attention)
        logits = self.fc(self.scale * embedding)
        # counterfactual attention: random U(0, 2) while training, all ones at test
        fake = torch.empty_like(attention).uniform_(0, 2) if self.training else torch.ones_like(attention)
        counterfactual = self.fc(self.scale * bilinear_attention_pool(features, fake))
        return CALOutput(logits, logits - counterfactual, embedding, attention)


class CALClassifier(nn.Module):
    """Backbone (``forward_features -> [b, c, *s]``) + CAL head; eval calls return a ``Prediction``."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        in_channels: int | None = None,
        num_attentions: int = 32,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        if not hasattr(backbone, "forward_features"):
            raise ValueError(
                f"{type(backbone).__name__} has no forward_features returning a feature map; CAL needs one"
            )
        in_channels = in_channels or getattr(backbone, "num_features", None)
        if not in_channels:
            raise ValueError(f"pass in_channels: {type(backbone).__name__} has no num_features attribute")
        self.backbone = backbone
        self.head = CounterfactualAttention(in_channels, num_classes, num_attentions, spatial_dims)

    def forward(self, x: Tensor):
        output = self.head(self.backbone.forward_features(x))
        return output if self.training else output.prediction


class CALLoss(nn.Module):
    """raw_weight * CE(logits) + effect_weight * CE(effect logits), on a :class:`CALOutput`."""

    def __init__(self, raw_weight: float = 1.0 / 3.0, effect_weight: float = 1.0) -> None:
        super().__init__()
        self.raw_weight = raw_weight
        self.effect_weight = effect_weight

    def forward(self, output: CALOutput, target: Tensor, epoch: float | None = None) -> Tensor:
        if not isinstance(output, CALOutput):
            raise TypeError("CALLoss needs a CALOutput (the CAL classifier in train mode)")
        raw = F.cross_entropy(output.logits, target)
        return self.raw_weight * raw + self.effect_weight * F.cross_entropy(output.effect_logits, target)
