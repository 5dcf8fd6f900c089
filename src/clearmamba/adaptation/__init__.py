"""Test-time adaptation on unlabelled exams of a new camera: BatchNorm statistics and TENT-style entropy
minimisation (:mod:`clearmamba.adaptation.tta`), fed only frames, times and masks (:class:`UnlabelledExams`)."""

from clearmamba.adaptation.tta import (
    AdaptationConfig,
    AdaptationResult,
    adapt,
    mean_entropy,
    minimise_entropy,
    norm_affine_parameters,
    reestimate_norm_statistics,
)
from clearmamba.adaptation.unlabelled import UnlabelledExams

__all__ = [
    "AdaptationConfig",
    "AdaptationResult",
    "UnlabelledExams",
    "adapt",
    "mean_entropy",
    "minimise_entropy",
    "norm_affine_parameters",
    "reestimate_norm_statistics",
]
