"""Read any classifier's output the same way: a clearmamba :class:`Prediction` or a plain logits tensor.

Every wrapper in the uncertainty family (MC Dropout, ensembles, SWAG, variational, heteroscedastic) calls
:func:`as_prediction` on what the wrapped model returns, so it works around a clearmamba model (whose head
returns a ``Prediction``) and around any ``nn.Module`` whose forward returns logits ``[b, k]``.
"""

from __future__ import annotations

from torch import Tensor

from clearmamba.uncertainty.prediction import Prediction


def as_prediction(output) -> Prediction:
    """``Prediction`` as is; a logits tensor ``[b, k]`` through softmax; objects with ``.prediction``."""
    if isinstance(output, Prediction):
        return output
    if isinstance(output, Tensor):
        if output.ndim != 2:
            raise ValueError(
                f"a model returning a tensor must return logits [batch, classes], got {tuple(output.shape)}"
            )
        return Prediction.from_logits(output)
    inner = getattr(output, "prediction", None)
    if isinstance(inner, Prediction):
        return inner
    raise TypeError(
        f"cannot read a prediction from a model output of type {type(output).__name__}; "
        "expected a Prediction or a logits tensor [batch, classes]"
    )


def output_probs(output) -> Tensor:
    """Predictive probabilities ``[b, k]`` of a model output."""
    return as_prediction(output).probs


def output_logits(output) -> Tensor:
    """Logits ``[b, k]`` of a model output (tensor outputs are logits); error when there are none."""
    if isinstance(output, Tensor):
        return as_prediction(output).logits
    prediction = as_prediction(output)
    if prediction.logits is None:
        raise ValueError("this model output carries no logits (only probabilities)")
    return prediction.logits
