"""One call for the headline numbers of a trust report or the CLI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from . import classification as cls
from ._inputs import ArrayLike, as_score
from .confidence import wrong_answer_confidence
from .correlation import spearman
from .detection import misclassification_metrics
from .selective import accuracy_at_referral, aurc


def summarize(
    probs: ArrayLike,
    labels: ArrayLike,
    scores: Mapping[str, ArrayLike],
    n_bins: int = 15,
    referral_fractions: Sequence[float] = (0.05, 0.1, 0.2, 0.3),
) -> dict[str, float]:
    """Flat ``{name: value}`` of accuracy, calibration and, per uncertainty score, its trust metrics.

    Per score ``name`` (higher = more uncertain): ``aurc/name``, ``misclassification_auroc/name``,
    ``misclassification_aupr/name``, ``spearman_error/name`` (vs 0/1 error), ``spearman_nll/name``
    (vs per-sample NLL) and ``accuracy_at_referral_<pct>/name``.
    """
    confidence, correct = cls.top_label(probs, labels)
    per_sample_nll = cls.per_sample_nll(probs, labels)
    confidence_medians = wrong_answer_confidence(probs, labels)
    result = {
        "n_samples": float(len(correct)),
        "accuracy": cls.accuracy(probs, labels),
        "macro_f1": cls.macro_f1(probs, labels),
        "ece": cls.ece(probs, labels, n_bins),
        "mce": cls.mce(probs, labels, n_bins),
        "adaptive_ece": cls.adaptive_ece(probs, labels, n_bins),
        "nll": per_sample_nll.mean().item(),
        "brier": cls.brier(probs, labels),
        "wrong_confidence_median": confidence_medians["wrong_median"],
        "right_confidence_median": confidence_medians["right_median"],
    }
    for name, raw_score in scores.items():
        score = as_score(raw_score, f"scores[{name!r}]")
        if len(score) != len(correct):
            raise ValueError(
                f"scores[{name!r}]: expected {len(correct)} values (one per sample), got {len(score)}"
            )
        detection = misclassification_metrics(score, correct)
        result[f"aurc/{name}"] = aurc(score, correct)
        result[f"misclassification_auroc/{name}"] = detection["auroc"]
        result[f"misclassification_aupr/{name}"] = detection["aupr"]
        result[f"spearman_error/{name}"] = spearman(score, ~correct)
        result[f"spearman_nll/{name}"] = spearman(score, per_sample_nll)
        for fraction, value in accuracy_at_referral(score, correct, referral_fractions).items():
            result[f"accuracy_at_referral_{round(100 * fraction)}/{name}"] = value
    return result
