"""MedMamba (Yue & Li 2024): SS-Conv-SSM blocks over a 4-stage hierarchy, in pure PyTorch.

Faithful to the public ``MedMamba.py`` (same maths, initialisation and state-dict names), with
three differences: it runs on CPU (the scan is ``clearmamba.models.selective_scan``), any input
size works (odd sizes are zero-padded instead of cropped or crashing), and ``forward_features``
returns the last feature map ``b c h w`` for attention/CAM-style heads. MedMamba has no final
norm after the last stage (its ``self.norm`` is commented out), so neither does this.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from .layers import DropPath, PatchEmbed2D, PatchMerging2D, channel_shuffle, init_weights
from .registry import register_model
from .ss2d import SS2D

STEMS = ("patch", "conv")


@dataclass(frozen=True)
class MedMambaConfig:
    depths: tuple[int, ...] = (2, 2, 4, 2)
    dims: tuple[int, ...] = (96, 192, 384, 768)
    d_state: int = 16
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000
    drop_rate: float = 0.0  # dropout before the head
    drop_path_rate: float = 0.1
    scan_impl: str = "auto"
    # "patch": MedMamba's p x p patchify; "conv": conv-BN-ReLU-maxpool layers that downsample as much, which
    # small backbones on small images need to see lesions a few pixels wide (see ConvStem)
    stem: str = "patch"
    stem_chans: int = 32

    def __post_init__(self):
        if len(self.depths) != len(self.dims):
            raise ValueError(f"MedMambaConfig: depths {self.depths} and dims {self.dims} differ in length")
        if any(d % 2 for d in self.dims):
            raise ValueError(f"MedMambaConfig: dims must be even (blocks split channels), got {self.dims}")
        for i in range(1, len(self.dims)):
            if self.dims[i] != 2 * self.dims[i - 1]:
                raise ValueError(f"MedMambaConfig: dims must double per stage, got {self.dims}")
        if self.stem not in STEMS:
            raise ValueError(f"MedMambaConfig.stem: expected one of {STEMS}, got {self.stem!r}")
        if self.stem == "conv" and self.patch_size & (self.patch_size - 1):
            raise ValueError(f"MedMambaConfig: stem='conv' downsamples by 2 per layer; patch_size must be a power of "
                             f"two, got {self.patch_size}")
        if self.in_chans < 1 or self.num_classes < 1:
            raise ValueError(
                f"MedMambaConfig: in_chans, num_classes must be >= 1, got {self.in_chans}, {self.num_classes}"
            )


class ConvStem(nn.Sequential):
    """(Conv3x3-BN-ReLU-MaxPool2) x log2(patch_size): the same downsampling as the p x p patchify, learned.

    A linear patchify squeezes a lesion of 2-3 pixels into a thin token, and at the CPU sizes (16-32 channels,
    32-64 px frames) MedMamba then memorises the training set: validation at chance on the built-in data with
    either patchify or convolutions before it. Max-pooling keeps a small bright spot's response however the
    patch grid falls, and the same backbone behind this stem generalises (0.87 against 0.45 validation
    accuracy, docs/design/why-the-demo-learns.md). "Early convolutions help transformers see better" (Xiao et al. 2021)
    reports the same for ViTs.
    """

    def __init__(self, in_chans: int, chans: int, patch_size: int):
        layers = []
        for _ in range(patch_size.bit_length() - 1):
            layers += [nn.Conv2d(in_chans, chans, 3, padding=1, bias=False), nn.BatchNorm2d(chans),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]  # fmt: skip
            in_chans = chans
        super().__init__(*layers)


class ConvBranch(nn.Sequential):
    """BN-Conv3x3-BN-ReLU-Conv3x3-BN-ReLU-Conv1x1-ReLU on ``b c h w`` (indices match MedMamba's)."""

    def __init__(self, dim: int):
        super().__init__(
            nn.BatchNorm2d(dim),
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 1),
            nn.ReLU(inplace=True),
        )


class SSConvSSM(nn.Module):
    """Split channels: left half -> conv branch, right half -> LN -> SS2D -> DropPath;
    concat, shuffle the two halves together, add the input. Channels-last in and out."""

    def __init__(self, dim: int, drop_path: float = 0.0, d_state: int = 16, scan_impl: str = "auto"):
        super().__init__()
        half = dim // 2
        self.ln_1 = nn.LayerNorm(half)
        self.self_attention = SS2D(half, d_state=d_state, scan_impl=scan_impl)
        self.drop_path = DropPath(drop_path)
        self.conv33conv33conv11 = ConvBranch(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = x.chunk(2, dim=-1)
        ssm = self.drop_path(self.self_attention(self.ln_1(right)))
        conv = self.conv33conv33conv11(left.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1)
        return channel_shuffle(torch.cat([conv, ssm], dim=-1), groups=2) + x


class VSSLayer(nn.Module):
    def __init__(self, dim, depth, drop_paths, d_state, scan_impl, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(SSConvSSM(dim, drop_paths[i], d_state, scan_impl) for i in range(depth))
        self.downsample = PatchMerging2D(dim) if downsample else None

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class MedMamba(nn.Module):
    def __init__(self, cfg: MedMambaConfig):
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.num_features = cfg.dims[-1]
        if cfg.stem == "conv":  # the stem downsamples; the embedding is then a per-pixel linear map + LayerNorm
            self.stem = ConvStem(cfg.in_chans, cfg.stem_chans, cfg.patch_size)
            self.patch_embed = PatchEmbed2D(1, cfg.stem_chans, cfg.dims[0])
        else:
            self.stem = nn.Identity()
            self.patch_embed = PatchEmbed2D(cfg.patch_size, cfg.in_chans, cfg.dims[0])
        total = sum(cfg.depths)  # drop-path rates rise linearly from 0 to drop_path_rate over all blocks
        rates = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        self.layers = nn.ModuleList(
            VSSLayer(
                dim,
                depth,
                rates[start : start + depth],
                cfg.d_state,
                cfg.scan_impl,
                downsample=i < len(cfg.dims) - 1,
            )
            for i, (dim, depth, start) in enumerate(zip(cfg.dims, cfg.depths, starts))
        )
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(self.num_features, cfg.num_classes)
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """b in_chans H W -> last feature map b num_features ceil(H/32) ceil(W/32)."""
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(
                f"MedMamba: expected input [b, {self.cfg.in_chans}, h, w], got {tuple(x.shape)}"
            )
        x = self.patch_embed(self.stem(x))
        for layer in self.layers:
            x = layer(x)
        return x.permute(0, 3, 1, 2)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool + linear; ``pre_logits`` returns the pooled vector."""
        pooled = self.head_drop(features.mean(dim=(2, 3)))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def set_scan_impl(self, impl: str) -> None:
        """Switch every SS2D in the model to selective-scan implementation ``impl``."""
        for m in self.modules():
            if isinstance(m, SS2D):
                m.scan_impl = impl

    def no_weight_decay(self) -> set[str]:
        return {n for n, p in self.named_parameters() if getattr(p, "_no_weight_decay", False)}


SIZES: dict[str, MedMambaConfig] = {
    # CPU sizes for tests and the demo (64x64 inputs, batches of ~128 images)
    "medmamba_nano": MedMambaConfig(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), d_state=8),
    "medmamba_tiny": MedMambaConfig(depths=(1, 1, 2, 1), dims=(24, 48, 96, 192), d_state=8),
    # the public code's sizes
    "medmamba_t": MedMambaConfig(depths=(2, 2, 4, 2), dims=(96, 192, 384, 768)),
    "medmamba_s": MedMambaConfig(depths=(2, 2, 8, 2), dims=(96, 192, 384, 768)),
    "medmamba_b": MedMambaConfig(depths=(2, 2, 12, 2), dims=(128, 256, 512, 1024)),
}


def _build(name: str, **kwargs) -> MedMamba:
    fields = MedMambaConfig.__dataclass_fields__
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; expected some of {sorted(fields)}")
    for key in ("depths", "dims"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    return MedMamba(replace(SIZES[name], **kwargs))


@register_model
def medmamba_nano(**kwargs) -> MedMamba:
    return _build("medmamba_nano", **kwargs)


@register_model
def medmamba_tiny(**kwargs) -> MedMamba:
    return _build("medmamba_tiny", **kwargs)


@register_model
def medmamba_t(**kwargs) -> MedMamba:
    return _build("medmamba_t", **kwargs)


@register_model
def medmamba_s(**kwargs) -> MedMamba:
    return _build("medmamba_s", **kwargs)


@register_model
def medmamba_b(**kwargs) -> MedMamba:
    return _build("medmamba_b", **kwargs)
