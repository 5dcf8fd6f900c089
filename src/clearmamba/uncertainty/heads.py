"""Classification heads that return a :class:`Prediction`, so downstream code never branches on the head.

RaP (CLEAR-Mamba's evidential head): linear -> evidence activation -> Dirichlet outputs.
"""

from __future__ import annotations

from torch import Tensor, nn

from clearmamba.uncertainty.evidence import get_evidence_fn
from clearmamba.uncertainty.prediction import Prediction


class SoftmaxHead(nn.Module):
    """Linear classifier whose logits are read through softmax."""

    kind = "softmax"

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: Tensor) -> Prediction:
        return Prediction.from_logits(self.fc(self.dropout(features)))


class RaPHead(nn.Module):
    """Evidential head: e = activation(W f + b) >= 0, alpha = e + 1, p = alpha / S, vacuity K / S.

    ``prior_weight`` lambda (R-EDL) returns the evidence in units of the prior weight, e / lambda, so that
    alpha = e / lambda + 1 gives R-EDL's p = (e + lambda) / (sum e + K lambda); 1 is plain EDL.
    """

    kind = "evidential"

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        evidence: str = "softplus",
        dropout: float = 0.0,
        prior_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if prior_weight <= 0:
            raise ValueError(f"prior_weight must be > 0, got {prior_weight}")
        self.prior_weight = prior_weight
        self.evidence_name = evidence
        self.evidence_fn = get_evidence_fn(evidence)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: Tensor) -> Prediction:
        logits = self.fc(self.dropout(features))
        evidence = self.evidence_fn(logits)
        if self.prior_weight != 1.0:
            evidence = evidence / self.prior_weight
        return Prediction.from_evidence(evidence, logits=logits)


HEADS = {"softmax": SoftmaxHead, "evidential": RaPHead}


def create_head(kind: str, in_features: int, num_classes: int, **kwargs) -> nn.Module:
    """Build a head by name: ``softmax`` or ``evidential`` (RaP)."""
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; expected one of {sorted(HEADS)}")
    return HEADS[kind](in_features, num_classes, **kwargs)
