"""The one naming convention for confidence and uncertainty in every output (predict, CSV, report, run record).

- ``confidence`` is ``max_k p_k`` of the predictive (expected) probabilities: higher = surer. It is the only
  number called confidence, and it is never stored as ``1 - confidence`` under another name.
- ``probabilities`` are the ``p_k``; ``leading_class`` is ``argmax_k p_k`` (none when the top classes tie).
- Every other number about uncertainty is a **score**, named for what it computes and oriented so that
  **higher = more uncertain** (or more unusual). Inside :class:`~clearmamba.uncertainty.Prediction` a few scores
  carry short keys; outputs use the public names below, so ``msp`` (a key meaning ``1 - max p``) never appears
  where a person could read it as "maximum softmax probability".
- Readable forms of a score, relative to the validation exams the rule was fitted on:
  ``<score>`` ``percentile`` = share (in %) of validation exams with a lower score, and for the unfamiliar-input
  score the conformal ``p_value`` = (1 + #validation exams scoring at least as high) / (n + 1).
"""

from __future__ import annotations

# Prediction key -> (public name, plain words for a person)
_SCORES: dict[str, tuple[str, str]] = {
    "msp": ("one_minus_max_prob", "1 - top probability"),
    "entropy": ("entropy", "predictive entropy"),
    "expected_entropy": ("expected_entropy", "expected entropy (aleatoric)"),
    "mutual_info": ("mutual_information", "mutual information (epistemic)"),
    "vacuity": ("vacuity", "K/S (evidential vacuity)"),
    "max_logit": ("neg_max_logit", "negative max logit"),
    "energy": ("energy", "energy (-logsumexp of the logits)"),
    "variation_ratio": ("variation_ratio", "variation ratio"),
    "disagreement": ("disagreement", "member disagreement"),
    "neg_log_density": ("neg_log_density", "-log density of the exam's features"),
    "logistic_mistake": ("logistic_mistake", "logistic combination of the scores"),
}
_BY_PUBLIC = {public: key for key, (public, _) in _SCORES.items()}

CONFIDENCE = "confidence"
PROBABILITIES = "probabilities"


def public_name(key: str) -> str:
    """The output name of a Prediction score key (``msp`` -> ``one_minus_max_prob``); unknown keys unchanged."""
    return _SCORES.get(key, (key, key))[0]


def prediction_key(name: str) -> str:
    """The Prediction score key of a public name (``one_minus_max_prob`` -> ``msp``); keys pass unchanged."""
    return _BY_PUBLIC.get(name, name)


def score_label(name: str) -> str:
    """Plain words for a score given by public name or Prediction key."""
    return _SCORES.get(prediction_key(name), (name, name))[1]
