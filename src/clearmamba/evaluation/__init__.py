"""Trust metrics: calibration, misclassification and OOD detection, selective prediction, correlation.

Convention (one for the whole project): **a higher uncertainty score means more uncertain**. Pass
``1 - max p`` for softmax confidence, entropy, mutual information, vacuity ``K / S``, energy, ...;
never a confidence. Every score-based metric takes any such score, as a tensor or a numpy array,
one value per sample.

Plain functions are for one-shot use; the ``torchmetrics.Metric`` classes (``ECE``, ``AURC``,
``RiskCoverage``, ``MisclassificationDetection``, ``OODDetection``) stream over batches and
synchronise across processes.
"""

from .bootstrap import BootstrapResult, bootstrap_ci
from .classification import (
    accuracy,
    adaptive_ece,
    brier,
    ece,
    macro_f1,
    mce,
    nll,
    per_class_recall,
    per_sample_nll,
    reliability_bins,
    top_label,
)
from .confidence import wrong_answer_confidence
from .correlation import average_ranks, spearman
from .detection import (
    auroc,
    average_precision,
    fpr_at_tpr,
    misclassification_metrics,
    ood_metrics,
    ood_metrics_by_set,
    roc_curve_points,
)
from .selective import (
    accuracy_at_referral,
    aurc,
    coverage_at_risk,
    excess_aurc,
    expected_selective_risk,
    optimal_aurc,
    risk_coverage_curve,
    threshold_for_risk,
)
from .streaming import AURC, ECE, MisclassificationDetection, OODDetection, RiskCoverage
from .summary import summarize

__all__ = [
    "AURC",
    "ECE",
    "BootstrapResult",
    "MisclassificationDetection",
    "OODDetection",
    "RiskCoverage",
    "accuracy",
    "accuracy_at_referral",
    "adaptive_ece",
    "aurc",
    "auroc",
    "average_precision",
    "average_ranks",
    "bootstrap_ci",
    "brier",
    "coverage_at_risk",
    "ece",
    "excess_aurc",
    "expected_selective_risk",
    "fpr_at_tpr",
    "macro_f1",
    "mce",
    "misclassification_metrics",
    "nll",
    "ood_metrics",
    "ood_metrics_by_set",
    "optimal_aurc",
    "per_class_recall",
    "per_sample_nll",
    "reliability_bins",
    "risk_coverage_curve",
    "roc_curve_points",
    "spearman",
    "summarize",
    "threshold_for_risk",
    "top_label",
    "wrong_answer_confidence",
]
