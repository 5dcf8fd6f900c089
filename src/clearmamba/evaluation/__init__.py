"""Trust metrics: calibration, misclassification and OOD detection, selective prediction, correlation.

Convention (one for the whole project): **a higher uncertainty score means more uncertain**. Pass
``1 - max p`` for softmax confidence, entropy, mutual information, vacuity ``K / S``, energy, ...;
never a confidence. Every score-based metric takes any such score, as a tensor or a numpy array,
one value per sample.

Plain functions are for one-shot use; the ``torchmetrics.Metric`` classes (``ECE``, ``AURC``,
``RiskCoverage``, ``MisclassificationDetection``, ``OODDetection``) stream over batches and
synchronise across processes.

Referral (:mod:`~clearmamba.evaluation.referral`, the one place that decides the policy): ``fit_referral_rule``
on validation predictions gives a :class:`ReferralRule` (an unfamiliar-input gate and a mistake threshold
certified with a finite-sample bound); ``decide(prediction, rule)`` accepts or refers each exam with its reason.
Output names follow :mod:`~clearmamba.evaluation.naming`.
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
from .naming import public_name, score_label
from .operating_point import OperatingPoint, Proportion, operating_point
from .referral import (
    ACCEPT,
    REFER_UNCERTAIN,
    REFER_UNFAMILIAR,
    Decisions,
    ExamDecision,
    GuaranteeUnavailableError,
    ReferralWarning,
    decide,
    fit_referral_rule,
)
from .referral_rule import ReferralRule, ReferralRuleError, ScoreReference
from .risk_control import RiskCertificate, binomial_interval, binomial_upper_bound, certify_selective_risk
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
    "ACCEPT",
    "REFER_UNCERTAIN",
    "REFER_UNFAMILIAR",
    "Decisions",
    "ExamDecision",
    "GuaranteeUnavailableError",
    "OperatingPoint",
    "Proportion",
    "RedrawResult",
    "ReferralRule",
    "ReferralRuleError",
    "ReferralWarning",
    "RiskCertificate",
    "ScoreReference",
    "binomial_interval",
    "binomial_upper_bound",
    "certify_selective_risk",
    "decide",
    "fit_referral_rule",
    "operating_point",
    "public_name",
    "referral_redraws",
    "score_label",
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


def __getattr__(name: str):
    # the re-draw experiment loads on first use, so `python -m clearmamba.evaluation.redraws` runs it cleanly
    if name in ("referral_redraws", "RedrawResult"):
        from . import redraws

        return getattr(redraws, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
