"""LeNet as in the EDL paper and labml's experiment, with a softmax or an evidential (RaP) head.

conv 20@5x5 -> max-pool 2 -> conv 50@5x5 -> max-pool 2 -> fc 500 -> dropout 0.5 -> fc 10.
The head (dropout + last linear) is a clearmamba head, so the model returns a :class:`Prediction` and
MC Dropout can sample the head alone (``forward_features`` / ``forward_head``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from clearmamba.uncertainty import Prediction, create_head


@dataclass(frozen=True)
class LeNetConfig:
    num_classes: int = 10
    in_channels: int = 1
    conv_channels: tuple[int, int] = (20, 50)
    hidden: int = 500
    dropout: float = 0.5
    head: str = "softmax"  # or "evidential"
    evidence: str = "softplus"  # evidential head only: softplus, relu or exp
    prior_weight: float = 1.0  # evidential head only: R-EDL's lambda


class LeNet(nn.Module):
    def __init__(self, config: LeNetConfig = LeNetConfig()) -> None:
        super().__init__()
        self.config = config
        c1, c2 = config.conv_channels
        self.features = nn.Sequential(
            nn.Conv2d(config.in_channels, c1, 5),  # b 1 28 28 -> b c1 24 24
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> b c1 12 12
            nn.Conv2d(c1, c2, 5),  # -> b c2 8 8
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> b c2 4 4
            nn.Flatten(),
            nn.Linear(c2 * 16, config.hidden),
            nn.ReLU(),
        )
        evidential = {"evidence": config.evidence, "prior_weight": config.prior_weight}
        kwargs = evidential if config.head == "evidential" else {}
        self.head = create_head(config.head, config.hidden, config.num_classes, dropout=config.dropout, **kwargs)

    @property
    def prediction_kind(self) -> str:
        return self.config.head

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)  # b 1 28 28 -> b hidden

    def forward_head(self, features: Tensor) -> Prediction:
        return self.head(features)

    def forward(self, x: Tensor) -> Prediction:
        return self.forward_head(self.forward_features(x))


def lenet(head: str = "softmax", evidence: str = "softplus", **kwargs) -> LeNet:
    """LeNet with a ``softmax`` or ``evidential`` head."""
    return LeNet(LeNetConfig(head=head, evidence=evidence, **kwargs))
