"""CLEAR-Mamba: a shared 2-D MedMamba encodes every frame of an exam, HaC conditions its features, a temporal
Mamba reads the frame sequence with its times and padding mask, and an evidential (RaP) or softmax head
returns a :class:`~clearmamba.uncertainty.Prediction`.

    model = create_model("clear_mamba_tiny", num_classes=4, in_chans=1, head="evidential", temporal="mamba")
    prediction = model(frames, frame_times, mask)     # frames b t c h w (or b c h w), times/mask b t
    prediction.score("vacuity")                      # K / S, higher = more uncertain

Sizes: ``tiny`` trains on 2 CPU cores in minutes (MedMamba-nano backbone with a conv stem, 32-64 px frames);
``t``, ``s``, ``b`` use the published MedMamba-T/S/B backbones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from clearmamba.uncertainty import Prediction, create_head
from clearmamba.uncertainty.heads import FusedRaPHead, FusedSoftmaxHead

from .hac import HaC, PublicHaC
from .registry import create_model, register_model
from .temporal import create_temporal, last_real_index

HEAD_KINDS = ("evidential", "softmax")
HAC_STAGES = ("last", "all")
# film_gate: clearmamba's HaC (identity at init); public: the public CLEAR-Mamba code's (see hac.PublicHaC)
HAC_VARIANTS = ("film_gate", "public")
# none: one average-pooled vector; three_branch: the public code's fused head over [GAP(HaC features) if
# hac_variant="public"], GMP and GAP of the last map (see uncertainty.heads.FusedRaPHead)
HEAD_FUSIONS = ("none", "three_branch")


@dataclass(frozen=True)
class ClearMambaConfig:
    backbone: str = "medmamba_nano"
    num_classes: int = 2
    in_chans: int = 1
    head: str = "evidential"
    evidence: str = "softplus"
    temporal: str = "mamba"
    temporal_d_state: int = 8
    hac: bool = True
    hac_stages: str = "last"
    hac_variant: str = "film_gate"
    hac_reduction: int = 4  # public HaC: reduced dim R = feature dim / reduction
    hac_feature_dim: int | None = None  # public HaC: feature dim F (default: the backbone's first stage width)
    hac_gated: bool = False  # public HaC: a true SwiGLU instead of the public code's LN-Linear-SiLU-Linear
    head_fusion: str = "none"
    head_proj_dim: int = 128  # three_branch: width of each branch's projection
    drop_rate: float = 0.0
    prior_weight: float = 1.0  # R-EDL's lambda: the evidential head returns evidence in units of it
    backbone_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.head not in HEAD_KINDS:
            raise ValueError(f"ClearMambaConfig.head: expected one of {HEAD_KINDS}, got {self.head!r}")
        if self.hac_stages not in HAC_STAGES:
            raise ValueError(f"ClearMambaConfig.hac_stages: expected one of {HAC_STAGES}, got {self.hac_stages!r}")
        if self.hac_variant not in HAC_VARIANTS:
            raise ValueError(f"ClearMambaConfig.hac_variant: expected one of {HAC_VARIANTS}, got {self.hac_variant!r}")
        if self.head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"ClearMambaConfig.head_fusion: expected one of {HEAD_FUSIONS}, got {self.head_fusion!r}")
        if self.hac and self.hac_variant == "public" and self.hac_stages != "last":
            raise ValueError("ClearMambaConfig: hac_variant='public' conditions the last map; use hac_stages='last'")
        if self.hac_reduction < 1 or self.head_proj_dim < 1 or (self.hac_feature_dim or 1) < 1:
            raise ValueError(
                f"ClearMambaConfig: need hac_reduction, head_proj_dim and hac_feature_dim >= 1, got "
                f"{self.hac_reduction}, {self.head_proj_dim}, {self.hac_feature_dim}"
            )
        if self.num_classes < 2 or self.in_chans < 1:
            raise ValueError(
                f"ClearMambaConfig: need num_classes >= 2 and in_chans >= 1, got {self.num_classes}, {self.in_chans}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


class FrameEncoder(nn.Module):
    """2-D backbone + HaC + pooling: ``n c h w -> n d``.

    ``hac_stages="last"`` conditions the last feature map; ``"all"`` (MedMamba backbones only) conditions the
    output of every stage, inside the backbone's channels-last stage loop. ``hac_variant="public"`` (MedMamba
    only) conditions the last map from the early one (:class:`~clearmamba.models.hac.PublicHaC`). With
    ``head_fusion="three_branch"`` the output is the concatenation of the branches ``branch_dims``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        hac: bool,
        hac_stages: str,
        hac_variant: str = "film_gate",
        hac_reduction: int = 4,
        hac_feature_dim: int | None = None,
        hac_gated: bool = False,
        head_fusion: str = "none",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        width = backbone.num_features
        self.hac_stages = hac_stages if hac else "none"
        self.stage_hac = nn.ModuleList()
        self.last_hac = None
        self.public_hac = None
        is_medmamba = hasattr(backbone, "layers") and hasattr(backbone, "patch_embed")
        if hac and hac_variant == "public":
            if not is_medmamba:
                raise ValueError(f"hac_variant='public' needs a MedMamba backbone, got {type(backbone).__name__}")
            self.hac_stages = "public"
            self.public_hac = PublicHaC(backbone.cfg.dims[0], width, hac_feature_dim, hac_reduction, hac_gated)
        elif hac and hac_stages == "all":
            if not is_medmamba:
                raise ValueError(f"hac_stages='all' needs a MedMamba backbone, got {type(backbone).__name__}")
            dims = list(backbone.cfg.dims)
            # stage i ends with patch merging (dims double) except the last
            out_dims = [dims[min(i + 1, len(dims) - 1)] for i in range(len(dims))]
            self.stage_hac = nn.ModuleList(HaC(d, channels_last=True) for d in out_dims)
        elif hac:
            self.last_hac = HaC(width)
        self.head_fusion = head_fusion
        if head_fusion == "three_branch":
            dynamic = (self.public_hac.feature_dim,) if self.public_hac is not None else ()
            self.branch_dims: tuple[int, ...] = (*dynamic, width, width)
        else:
            self.branch_dims = (width,)
        self.num_features = sum(self.branch_dims)

    def maps(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The conditioned last feature map ``b C H W`` and, for the public HaC, its dynamic features."""
        if self.hac_stages == "public":
            early = self.backbone.patch_embed(self.backbone.stem(x))  # b h w c
            h = early
            for layer in self.backbone.layers:
                h = layer(h)
            return self.public_hac(early.permute(0, 3, 1, 2), h.permute(0, 3, 1, 2))
        return self.feature_map(x), None

    def feature_map(self, x: Tensor) -> Tensor:
        if self.hac_stages == "public":
            return self.maps(x)[0]
        if self.hac_stages != "all":
            features = self.backbone.forward_features(x)
            return features if self.last_hac is None else self.last_hac(features)
        h = self.backbone.patch_embed(self.backbone.stem(x))  # b h w c
        for layer, hac in zip(self.backbone.layers, self.stage_hac):
            h = hac(layer(h))
        return h.permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        features, dynamic = self.maps(x)
        if self.head_fusion == "none":
            return features.mean(dim=(2, 3))
        # [GAP(dynamic)], GMP(X), GAP(X): the public code's dynamic, local and global branches
        branches = [features.amax(dim=(2, 3)), features.mean(dim=(2, 3))]
        if dynamic is not None:
            branches.insert(0, dynamic.mean(dim=(2, 3)))
        return torch.cat(branches, dim=-1)


class ClearMamba(nn.Module):
    def __init__(self, cfg: ClearMambaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        backbone = create_model(cfg.backbone, num_classes=cfg.num_classes, in_chans=cfg.in_chans, **cfg.backbone_kwargs)
        self.encoder = FrameEncoder(
            backbone, cfg.hac, cfg.hac_stages, cfg.hac_variant, cfg.hac_reduction, cfg.hac_feature_dim,
            cfg.hac_gated, cfg.head_fusion,
        )  # fmt: skip
        self.num_features = self.encoder.num_features
        self.temporal = create_temporal(cfg.temporal, self.num_features, cfg.temporal_d_state)
        evidence = {"evidence": cfg.evidence} if cfg.head == "evidential" else {}
        if cfg.head_fusion == "three_branch":
            if cfg.prior_weight != 1.0:
                raise ValueError("ClearMambaConfig.prior_weight: R-EDL's prior weight needs head_fusion='none'")
            fused = FusedRaPHead if cfg.head == "evidential" else FusedSoftmaxHead
            self.head = fused(
                self.encoder.branch_dims, cfg.num_classes, proj_dim=cfg.head_proj_dim, dropout=cfg.drop_rate, **evidence
            )
        else:
            if cfg.head == "evidential":
                evidence["prior_weight"] = cfg.prior_weight
            self.head = create_head(cfg.head, self.num_features, cfg.num_classes, dropout=cfg.drop_rate, **evidence)
        # the backbone's own classifier is never used: the uncertainty head replaces it
        if hasattr(backbone, "head") and isinstance(backbone.head, nn.Module):
            backbone.head = nn.Identity()

    @property
    def prediction_kind(self) -> str:
        """What ``forward`` returns: ``evidential`` or ``softmax`` predictions (the uncertainty methods read it)."""
        return self.cfg.head

    @staticmethod
    def as_exam(x: Tensor, frame_times: Tensor | None, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Accept ``b c h w`` (single images) or ``b t c h w``; fill missing times (0) and mask (all real)."""
        if x.ndim == 4:
            x = x.unsqueeze(1)
        if x.ndim != 5:
            raise ValueError(f"CLEAR-Mamba expects frames [b, t, c, h, w] or images [b, c, h, w], got {tuple(x.shape)}")
        b, t = x.shape[:2]
        if frame_times is None:
            frame_times = x.new_zeros((b, t))
        if mask is None:
            mask = torch.ones((b, t), dtype=torch.bool, device=x.device)
        if frame_times.shape != (b, t) or mask.shape != (b, t):
            raise ValueError(
                f"frame_times {tuple(frame_times.shape)} and mask {tuple(mask.shape)} must both be [b={b}, t={t}]"
            )
        mask = mask.bool()
        if not bool(mask.any(1).all()):
            empty = (~mask.any(1)).nonzero().flatten().tolist()
            raise ValueError(f"exam(s) at batch position {empty} have no real frame (mask all False)")
        return x, frame_times.to(x.dtype), mask

    def forward_features(self, x: Tensor, frame_times: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """Exam vectors ``b d``."""
        x, frame_times, mask = self.as_exam(x, frame_times, mask)
        b, t = mask.shape
        if self.cfg.temporal == "last":
            # single-frame model: only the last real frame is encoded
            last = last_real_index(mask)
            rows = torch.arange(b, device=x.device)
            return self.encoder(x[rows, last])
        # only real frames go through the backbone: padding costs nothing and cannot leak in (e.g. via BN)
        # out of place (no tokens[mask] = ...), so that torch.func.vmap can batch whole models into an ensemble
        if bool(mask.all()):
            tokens = self.encoder(x.flatten(0, 1)).unflatten(0, (b, t))
        else:
            encoded = self.encoder(x[mask])
            tokens = encoded.new_zeros((b, t, self.num_features)).masked_scatter(mask.unsqueeze(-1), encoded)
        return self.temporal(tokens, frame_times, mask)

    def forward(self, x: Tensor, frame_times: Tensor | None = None, mask: Tensor | None = None) -> Prediction:
        return self.head(self.forward_features(x, frame_times, mask))


SIZES: dict[str, dict] = {
    # the conv stem is what lets a backbone this small see lesions a few pixels wide (see medmamba.ConvStem)
    "clear_mamba_tiny": {"backbone": "medmamba_nano", "backbone_kwargs": {"stem": "conv"}},
    "clear_mamba_t": {"backbone": "medmamba_t"},
    "clear_mamba_s": {"backbone": "medmamba_s"},
    "clear_mamba_b": {"backbone": "medmamba_b"},
}


# CLEAR-Mamba heads on other backbones (models.baselines adds the MONAI ones), so check_options knows them
OTHER_BACKBONES: dict[str, dict] = {}


def build_clear_model(name: str, sizes: dict[str, dict], **kwargs) -> ClearMamba:
    fields = ClearMambaConfig.__dataclass_fields__
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; expected some of {sorted(fields)}")
    # backbone options given by the caller override the size's one by one, not as a whole
    backbone_kwargs = {**sizes[name].get("backbone_kwargs", {}), **kwargs.pop("backbone_kwargs", {})}
    return ClearMamba(ClearMambaConfig(**{**sizes[name], **kwargs, "backbone_kwargs": backbone_kwargs}))


def check_options(name: str, options: dict) -> None:
    """Raise ``ValueError`` naming the field when ``options`` do not fit model ``name``, without building it."""
    sizes = {**SIZES, **OTHER_BACKBONES}
    if name not in sizes:
        raise ValueError(f"unknown CLEAR-Mamba model {name!r}; expected one of {sorted(sizes)}")
    fields = ClearMambaConfig.__dataclass_fields__
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; expected some of {sorted(fields)}")
    ClearMambaConfig(**{**sizes[name], "num_classes": 2, "in_chans": 1, **options})


@register_model
def clear_mamba_tiny(**kwargs) -> ClearMamba:
    return build_clear_model("clear_mamba_tiny", SIZES, **kwargs)


@register_model
def clear_mamba_t(**kwargs) -> ClearMamba:
    return build_clear_model("clear_mamba_t", SIZES, **kwargs)


@register_model
def clear_mamba_s(**kwargs) -> ClearMamba:
    return build_clear_model("clear_mamba_s", SIZES, **kwargs)


@register_model
def clear_mamba_b(**kwargs) -> ClearMamba:
    return build_clear_model("clear_mamba_b", SIZES, **kwargs)
