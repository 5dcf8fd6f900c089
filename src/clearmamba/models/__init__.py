"""Backbones: MedMamba in pure PyTorch and the selective scan behind it.

    from clearmamba.models import create_model, list_models, selective_scan
    model = create_model("medmamba_tiny", num_classes=2, in_chans=1)
    feats = model.forward_features(x)        # b num_features h w (last stage)
    logits = model.forward_head(feats)

Other model files register factories with ``@register_model`` (from ``.registry``) and are
imported here so their names appear in ``list_models()``.
"""

from . import scan_compiled as _scan_compiled  # noqa: F401  (registers impl "compiled")
from . import scan_cuda as _scan_cuda  # noqa: F401  (registers impl "cuda")
from . import scan_eager as _scan_eager  # noqa: F401  (registers impl "eager")
from . import scan_fused as _scan_fused  # noqa: F401  (registers impl "fused"; auto picks it on CPU)
from .layers import DropPath, PatchEmbed2D, PatchMerging2D, channel_shuffle
from .medmamba import MedMamba, MedMambaConfig, SSConvSSM
from .registry import create_model, is_model, list_models, register_model
from .selective_scan import (
    register_scan_impl,
    resolve_impl,
    scan_impls,
    selective_scan,
    selective_scan_reference,
)
from .ss2d import SS2D, cross_merge, cross_scan

__all__ = [
    "SS2D",
    "DropPath",
    "MedMamba",
    "MedMambaConfig",
    "PatchEmbed2D",
    "PatchMerging2D",
    "SSConvSSM",
    "channel_shuffle",
    "create_model",
    "cross_merge",
    "cross_scan",
    "is_model",
    "list_models",
    "register_model",
    "register_scan_impl",
    "resolve_impl",
    "scan_impls",
    "selective_scan",
    "selective_scan_reference",
]
