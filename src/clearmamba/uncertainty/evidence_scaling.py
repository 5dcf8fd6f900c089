"""Post-hoc evidence scaling: the evidential counterpart of temperature scaling, fitted on validation data.

Two positive scalars, optimised as logs by LBFGS on the NLL of E[p] (as :class:`TemperatureScaler`):
a temperature T on the logits **before** the evidence activation and a scale c on the evidence after it,

    e' = c * r * act(z / T),   r = sum_k e_k / sum_k act(z_k)   (per sample)

where r carries whatever the model multiplied its activation by (1 for RaP, 1 / lambda for R-EDL's prior
weight, the density factor of :class:`DensityAwareEvidence`). Temperature scaling on evidence alone
(``TemperatureScaler``) can only stretch all evidence by one factor; T also changes how evidence is shared
between classes, which is what moves the evidence of the non-predicted classes off zero.
Without logits only c is fitted.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clearmamba.uncertainty.calibration import fit_by_nll
from clearmamba.uncertainty.evidence import get_evidence_fn
from clearmamba.uncertainty.outputs import as_prediction
from clearmamba.uncertainty.prediction import Prediction

LOG_LIMIT = 20.0  # |log T|, |log c| <= 20


def scaled_evidence(
    prediction: Prediction, temperature: Tensor, scale: Tensor, evidence: str = "softplus"
) -> Prediction:
    """The prediction with e' = c r act(z / T) (differentiable in T and c)."""
    p = prediction
    if p.evidence is None:
        raise ValueError("evidence scaling needs an evidential prediction (evidence is None)")
    keep = {"labels": p.labels, "ids": p.ids, "extra": dict(p.extra)}
    if p.logits is None:
        return Prediction.from_evidence(p.evidence * scale, **keep)
    activation = get_evidence_fn(evidence)
    tiny = torch.finfo(p.evidence.dtype).tiny
    # r: the model's own per-sample factor between its evidence and act(z)
    ratio = p.evidence.sum(-1, keepdim=True) / activation(p.logits).sum(-1, keepdim=True).clamp_min(tiny)
    return Prediction.from_evidence(scale * ratio * activation(p.logits / temperature), logits=p.logits / temperature,
                                    **keep)


class EvidenceScaler(nn.Module):
    """Fit ``fit(prediction, labels)`` on validation data, then call on new evidential predictions.

    ``evidence`` names the head's activation (softplus, relu, exp); ``fit_temperature=False`` fits c alone.
    """

    def __init__(self, evidence: str = "softplus", fit_temperature: bool = True) -> None:
        super().__init__()
        get_evidence_fn(evidence)
        self.evidence = evidence
        self.fit_temperature = fit_temperature
        self.log_temperature = nn.Parameter(torch.zeros(()), requires_grad=fit_temperature)
        self.log_scale = nn.Parameter(torch.zeros(()))

    @property
    def temperature(self) -> float:
        return float(self.log_temperature.detach().clamp(-LOG_LIMIT, LOG_LIMIT).exp())

    @property
    def scale(self) -> float:
        return float(self.log_scale.detach().clamp(-LOG_LIMIT, LOG_LIMIT).exp())

    def _scaled(self, prediction: Prediction) -> Prediction:
        # the clamp keeps LBFGS's line search finite: without a prior, NLL can keep rewarding ever more evidence
        temperature = self.log_temperature.clamp(-LOG_LIMIT, LOG_LIMIT).exp()
        scale = self.log_scale.clamp(-LOG_LIMIT, LOG_LIMIT).exp()
        return scaled_evidence(prediction, temperature, scale, self.evidence)

    def fit(self, prediction, labels: Tensor, max_iter: int = 200) -> EvidenceScaler:
        prediction = as_prediction(prediction).detach()
        if prediction.evidence is None:
            raise ValueError("EvidenceScaler.fit: the prediction has no evidence (use TemperatureScaler)")
        if labels.shape != (len(prediction),):
            raise ValueError(f"labels must be [{len(prediction)}], got {tuple(labels.shape)}")
        parameters = [self.log_scale] + ([self.log_temperature] if self.fit_temperature else [])
        fit_by_nll(parameters, lambda: self._scaled(prediction).probs, labels, max_iter)
        return self

    def forward(self, prediction) -> Prediction:
        with torch.no_grad():
            return self._scaled(as_prediction(prediction))


class ScaledModel(nn.Module):
    """A model followed by a post-hoc step (``EvidenceScaler``, ``TemperatureScaler``): still one pass."""

    def __init__(self, model: nn.Module, scaler: nn.Module) -> None:
        super().__init__()
        self.model, self.scaler = model, scaler

    def forward(self, *args, **kwargs) -> Prediction:
        return self.scaler(as_prediction(self.model(*args, **kwargs)))
