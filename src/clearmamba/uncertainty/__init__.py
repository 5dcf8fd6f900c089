"""Uncertainty: the evidential (RaP) core, the prediction container and named uncertainty scores.

Convention: every uncertainty score is oriented so that a higher score means more uncertain.
"""

from clearmamba.uncertainty.cal import CALClassifier, CALLoss, CALOutput, CounterfactualAttention
from clearmamba.uncertainty.calibration import TemperatureScaler
from clearmamba.uncertainty.conformal import SplitConformal, coverage, mean_set_size
from clearmamba.uncertainty.density import ClassConditionalGaussian, DensityAwareEvidence, fit_density_gate
from clearmamba.uncertainty.dirichlet import dirichlet_uncertainty
from clearmamba.uncertainty.edl_losses import (
    EvidentialLoss,
    SoftmaxCrossEntropy,
    edl_kl,
    edl_loss,
    kl_to_uniform_dirichlet,
)
from clearmamba.uncertainty.edl_variants import (
    FisherEvidentialLoss,
    RelaxedEvidentialLoss,
    create_evidential_loss,
)
from clearmamba.uncertainty.ensemble import DeepEnsemble, train_members
from clearmamba.uncertainty.evidence import get_evidence_fn
from clearmamba.uncertainty.evidence_scaling import EvidenceScaler, ScaledModel
from clearmamba.uncertainty.heads import RaPHead, SoftmaxHead, create_head
from clearmamba.uncertainty.heteroscedastic import (
    HeteroscedasticClassifier,
    HeteroscedasticLinear,
    HeteroscedasticLoss,
    HeteroscedasticOutput,
)
from clearmamba.uncertainty.mc_dropout import MCDropout, add_head_dropout
from clearmamba.uncertainty.methods import METHODS, Method, PredictionAdapter, create_method
from clearmamba.uncertainty.outputs import as_prediction
from clearmamba.uncertainty.prediction import SCORES, Prediction
from clearmamba.uncertainty.sampling import sample_uncertainty
from clearmamba.uncertainty.schedules import (
    Constant,
    EpochLinear,
    PiecewiseLinear,
    StepContinuous,
    make_schedule,
)
from clearmamba.uncertainty.swag import SWAG, refresh_batchnorm
from clearmamba.uncertainty.variational import (
    BayesConv,
    BayesLinear,
    ELBOLoss,
    VariationalClassifier,
    VariationalOutput,
    kl_divergence,
    to_variational,
)

__all__ = [
    "ClassConditionalGaussian",
    "DensityAwareEvidence",
    "EvidenceScaler",
    "FisherEvidentialLoss",
    "RelaxedEvidentialLoss",
    "ScaledModel",
    "create_evidential_loss",
    "fit_density_gate",
    "CALClassifier",
    "CALLoss",
    "CALOutput",
    "CounterfactualAttention",
    "TemperatureScaler",
    "SplitConformal",
    "coverage",
    "mean_set_size",
    "DeepEnsemble",
    "train_members",
    "HeteroscedasticClassifier",
    "HeteroscedasticLinear",
    "HeteroscedasticLoss",
    "HeteroscedasticOutput",
    "MCDropout",
    "add_head_dropout",
    "METHODS",
    "Method",
    "PredictionAdapter",
    "create_method",
    "as_prediction",
    "SWAG",
    "refresh_batchnorm",
    "BayesConv",
    "BayesLinear",
    "ELBOLoss",
    "VariationalClassifier",
    "VariationalOutput",
    "kl_divergence",
    "to_variational",
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
