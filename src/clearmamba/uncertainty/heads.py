"""Classification heads that return a :class:`Prediction`, so downstream code never branches on the head.

RaP (CLEAR-Mamba's evidential head): linear -> evidence activation -> Dirichlet outputs. The public code's
fused three-branch variants (:class:`FusedRaPHead`, :class:`FusedSoftmaxHead`) are built directly by the model
that knows its branches; ``create_head`` builds the single-branch heads.
"""

from __future__ import annotations

import torch
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


class BranchFusion(nn.Module):
    """The public CLEAR-Mamba head's fusion: the feature vector is the concatenation of branches (e.g. the
    dynamic HaC features, max- and average-pooled backbone features); each branch is projected by
    ``Linear -> ReLU -> Linear`` to ``proj_dim`` and the projections are averaged."""

    def __init__(self, branch_dims: tuple[int, ...], proj_dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        if not branch_dims or min(branch_dims) < 1 or proj_dim < 1:
            raise ValueError(f"BranchFusion: expected positive branch dims and proj_dim, got {branch_dims}, {proj_dim}")
        self.branch_dims = tuple(int(d) for d in branch_dims)
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Linear(d, proj_dim), nn.ReLU(), nn.Linear(proj_dim, proj_dim)) for d in self.branch_dims
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, features: Tensor) -> Tensor:
        if features.shape[-1] != sum(self.branch_dims):
            raise ValueError(
                f"BranchFusion: features have {features.shape[-1]} channels, expected branches {self.branch_dims}"
            )
        # r = (1 / n) sum_i psi_i(phi_i(R_i))
        branches = features.split(self.branch_dims, dim=-1)
        fused = torch.stack([p(r) for p, r in zip(self.projections, branches)]).mean(0)
        return self.dropout(fused)


class FusedRaPHead(nn.Module):
    """The public code's evidential head: :class:`BranchFusion`, then ``Linear -> evidence activation``."""

    kind = "evidential"

    def __init__(
        self,
        branch_dims: tuple[int, ...],
        num_classes: int,
        proj_dim: int = 128,
        evidence: str = "softplus",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.evidence_name = evidence
        self.evidence_fn = get_evidence_fn(evidence)
        self.fusion = BranchFusion(branch_dims, proj_dim, dropout)
        self.fc = nn.Linear(proj_dim, num_classes)

    def forward(self, features: Tensor) -> Prediction:
        logits = self.fc(self.fusion(features))
        return Prediction.from_evidence(self.evidence_fn(logits), logits=logits)


class FusedSoftmaxHead(nn.Module):
    """The public code's head in its logits mode: :class:`BranchFusion`, then a linear classifier."""

    kind = "softmax"

    def __init__(self, branch_dims: tuple[int, ...], num_classes: int, proj_dim: int = 128, dropout: float = 0.0):
        super().__init__()
        self.fusion = BranchFusion(branch_dims, proj_dim, dropout)
        self.fc = nn.Linear(proj_dim, num_classes)

    def forward(self, features: Tensor) -> Prediction:
        return Prediction.from_logits(self.fc(self.fusion(features)))


HEADS = {"softmax": SoftmaxHead, "evidential": RaPHead}


def create_head(kind: str, in_features: int, num_classes: int, **kwargs) -> nn.Module:
    """Build a head by name: ``softmax`` or ``evidential`` (RaP)."""
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; expected one of {sorted(HEADS)}")
    return HEADS[kind](in_features, num_classes, **kwargs)
