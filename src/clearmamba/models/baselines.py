"""Non-Mamba baselines behind the same HaC, temporal and uncertainty heads: MONAI ResNet-18 and DenseNet-121.

MONAI is an optional dependency (``clearmamba[train]``): it is imported only when one of these is built.

    create_model("clear_resnet18", num_classes=4, in_chans=1, head="softmax", temporal="mean")
"""

from __future__ import annotations

from torch import Tensor, nn

from .clear_mamba import OTHER_BACKBONES, ClearMamba, build_clear_model
from .registry import register_model


def _monai_nets():
    try:
        from monai.networks import nets
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the MONAI baselines need MONAI: pip install 'clearmamba[train]'") from error
    return nets


class MonaiResNet18(nn.Module):
    """MONAI 2-D ResNet-18 as a feature extractor: ``b c h w -> b 512 h/32 w/32``."""

    def __init__(self, num_classes: int = 2, in_chans: int = 1) -> None:
        super().__init__()
        self.net = _monai_nets().resnet18(spatial_dims=2, n_input_channels=in_chans, num_classes=num_classes)
        self.num_features = self.net.fc.in_features
        self.net.fc = nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        n = self.net
        x = n.maxpool(n.act(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))


class MonaiDenseNet121(nn.Module):
    """MONAI 2-D DenseNet-121 as a feature extractor: ``b c h w -> b 1024 h/32 w/32``."""

    def __init__(self, num_classes: int = 2, in_chans: int = 1) -> None:
        super().__init__()
        self.net = _monai_nets().DenseNet121(spatial_dims=2, in_channels=in_chans, out_channels=num_classes)
        self.num_features = self.net.class_layers.out.in_features
        self.relu = nn.ReLU()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.relu(self.net.features(x))


@register_model
def monai_resnet18(**kwargs) -> MonaiResNet18:
    return MonaiResNet18(**kwargs)


@register_model
def monai_densenet121(**kwargs) -> MonaiDenseNet121:
    return MonaiDenseNet121(**kwargs)


BASELINE_SIZES = {
    "clear_resnet18": {"backbone": "monai_resnet18"},
    "clear_densenet121": {"backbone": "monai_densenet121"},
}
OTHER_BACKBONES.update(BASELINE_SIZES)


@register_model
def clear_resnet18(**kwargs) -> ClearMamba:
    return build_clear_model("clear_resnet18", BASELINE_SIZES, **kwargs)


@register_model
def clear_densenet121(**kwargs) -> ClearMamba:
    return build_clear_model("clear_densenet121", BASELINE_SIZES, **kwargs)
