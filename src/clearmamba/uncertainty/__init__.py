"""Uncertainty: the evidential (RaP) core, the prediction container and named uncertainty scores.

Convention: every uncertainty score is oriented so that a higher score means more uncertain.
"""

from clearmamba.uncertainty.dirichlet import dirichlet_uncertainty
from clearmamba.uncertainty.edl_losses import (
    EvidentialLoss,
    SoftmaxCrossEntropy,
    edl_kl,
    edl_loss,
    kl_to_uniform_dirichlet,
)
from clearmamba.uncertainty.evidence import get_evidence_fn
from clearmamba.uncertainty.heads import RaPHead, SoftmaxHead, create_head
from clearmamba.uncertainty.prediction import SCORES, Prediction
from clearmamba.uncertainty.sampling import sample_uncertainty
from clearmamba.uncertainty.schedules import (
    Constant,
    EpochLinear,
    PiecewiseLinear,
    StepContinuous,
    make_schedule,
)

__all__ = [
    "SCORES",
    "Constant",
    "EpochLinear",
    "EvidentialLoss",
    "PiecewiseLinear",
    "Prediction",
    "RaPHead",
    "SoftmaxCrossEntropy",
    "SoftmaxHead",
    "StepContinuous",
    "create_head",
    "dirichlet_uncertainty",
    "edl_kl",
    "edl_loss",
    "get_evidence_fn",
    "kl_to_uniform_dirichlet",
    "make_schedule",
    "sample_uncertainty",
]
