"""Temperature scaling (Guo et al. 2017), fitted on validation data by LBFGS on the NLL.

One temperature T > 0 (optimised as log T) rescales whatever the prediction carries:

- logits: p = softmax(z / T);
- evidence (evidential heads): e' = e / T, p = (e' + 1) / S', so the Dirichlet is flattened or sharpened;
- members (MC Dropout, ensembles, SWAG): each member's log-probabilities are divided by T, then averaged;
- probabilities only: p = softmax(log p / T).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor, nn

from clearmamba.uncertainty.outputs import as_prediction
from clearmamba.uncertainty.prediction import Prediction


def _tempered_log_softmax(probs: Tensor, temperature: Tensor) -> Tensor:
    # log softmax(log p / T)
    return (probs.clamp_min(torch.finfo(probs.dtype).tiny).log() / temperature).log_softmax(-1)


def scaled(prediction: Prediction, temperature: Tensor) -> Prediction:
    """The prediction at temperature ``T`` (differentiable in ``T``)."""
    p = prediction
    keep = {"labels": p.labels, "ids": p.ids, "extra": dict(p.extra)}
    if p.evidence is not None:
        logits = None if p.logits is None else p.logits / temperature
        return Prediction.from_evidence(p.evidence / temperature, logits=logits, **keep)
    if p.logits is not None:
        return Prediction.from_logits(p.logits / temperature, **keep)
    if p.members is not None:
        return Prediction.from_members(_tempered_log_softmax(p.members, temperature).exp(), **keep)
    return replace(p, probs=_tempered_log_softmax(p.probs, temperature).exp())


def negative_log_likelihood(probs: Tensor, labels: Tensor) -> Tensor:
    # mean -log p_y
    picked = probs.gather(-1, labels.long().view(-1, 1)).squeeze(-1)
    return -picked.clamp_min(torch.finfo(probs.dtype).tiny).log().mean()


def fit_by_nll(parameters: list[Tensor], probs_of: Callable[[], Tensor], labels: Tensor, max_iter: int = 200) -> None:
    """Fit post-hoc ``parameters`` by LBFGS on the NLL of ``probs_of()`` (temperature and evidence scaling)."""
    optimizer = torch.optim.LBFGS(parameters, lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = negative_log_likelihood(probs_of(), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)


class TemperatureScaler(nn.Module):
    """Fit with ``fit(prediction_or_logits, labels)`` on validation data, then call on new predictions."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.log_temperature = nn.Parameter(torch.tensor(float(temperature)).log())

    @property
    def temperature(self) -> float:
        return float(self.log_temperature.detach().exp())

    def fit(self, prediction, labels: Tensor, max_iter: int = 200) -> TemperatureScaler:
        prediction = as_prediction(prediction).detach()
        if labels.shape != (len(prediction),):
            raise ValueError(f"labels must be [{len(prediction)}], got {tuple(labels.shape)}")
        fit_by_nll([self.log_temperature], lambda: scaled(prediction, self.log_temperature.exp()).probs, labels,
                   max_iter)  # fmt: skip
        return self

    def forward(self, prediction) -> Prediction:
        with torch.no_grad():
            return scaled(as_prediction(prediction), self.log_temperature.exp())
