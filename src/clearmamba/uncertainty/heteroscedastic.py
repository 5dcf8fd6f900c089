"""Heteroscedastic classification (Kendall & Gal 2017): Gaussian noise on the logits, learned per input.

The head predicts logit means mu ``[b, k]`` and log-variances s = log sigma^2 ``[b, k]``. With T noise draws
x_t = mu + sigma * eps_t the predictive is p = 1/T sum_t softmax(x_t), and the loss is its negative log
likelihood, -log p_y = -logsumexp_t log_softmax(x_t)_y + log T. The aleatoric score is the predicted variance
(mean over classes of sigma^2). Wrapped in :class:`MCDropout`, one model gives both parts: the dropout
samples carry the epistemic part (mutual information), ``extra["aleatoric_variance"]`` the aleatoric one.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from clearmamba.uncertainty.prediction import Prediction


class HeteroscedasticOutput(NamedTuple):
    """Training output: logit means and log-variances, both ``[b, k]``."""

    mean: Tensor
    log_variance: Tensor

    @property
    def prediction(self) -> Prediction:
        return Prediction.from_logits(self.mean)


def noisy_log_probs(mean: Tensor, log_variance: Tensor, num_samples: int) -> Tensor:
    # log softmax(mu + sigma * eps_t), shape [t, b, k]
    eps = torch.randn((num_samples, *mean.shape), dtype=mean.dtype, device=mean.device)
    return (mean + (0.5 * log_variance).exp() * eps).log_softmax(-1)


def heteroscedastic_nll(mean: Tensor, log_variance: Tensor, target: Tensor, num_samples: int = 32) -> Tensor:
    """Batch-mean -log (1/T sum_t softmax(mu + sigma eps_t)_y)."""
    log_probs = noisy_log_probs(mean, log_variance, num_samples)  # [t, b, k]
    index = target.view(1, -1, 1).expand(num_samples, -1, 1)
    target_log_probs = log_probs.gather(-1, index).squeeze(-1)  # [t, b]
    return (math.log(num_samples) - torch.logsumexp(target_log_probs, 0)).mean()


def heteroscedastic_prediction(mean: Tensor, log_variance: Tensor, num_samples: int = 64) -> Prediction:
    probs = noisy_log_probs(mean, log_variance, num_samples).exp().mean(0)
    return Prediction(probs=probs, logits=mean, extra={"aleatoric_variance": log_variance.exp().mean(-1)})


class HeteroscedasticLinear(nn.Module):
    """Linear layer returning the logit means; the log-variances of the last call are kept on the module.

    Drop-in for a model's final ``nn.Linear``, so surrounding code (pooling, a head returning a
    ``Prediction``) keeps working; :class:`HeteroscedasticClassifier` reads ``last_log_variance``.
    """

    def __init__(self, in_features: int, out_features: int, init_log_variance: float = -4.0) -> None:
        super().__init__()
        self.mean = nn.Linear(in_features, out_features)
        self.log_variance = nn.Linear(in_features, out_features)
        nn.init.zeros_(self.log_variance.weight)
        nn.init.constant_(self.log_variance.bias, init_log_variance)
        self.last_log_variance: Tensor | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> HeteroscedasticLinear:
        layer = cls(linear.in_features, linear.out_features).to(linear.weight.device)
        layer.mean.load_state_dict(linear.state_dict())
        return layer

    def forward(self, x: Tensor) -> Tensor:
        self.last_log_variance = self.log_variance(x)
        return self.mean(x)


class HeteroscedasticClassifier(nn.Module):
    """Make a classifier heteroscedastic by swapping its last ``nn.Linear`` (in place) for the two-output layer.

    Training calls return :class:`HeteroscedasticOutput`; eval calls a ``Prediction`` with MC-integrated
    probabilities and ``extra["aleatoric_variance"]``.
    """

    def __init__(self, model: nn.Module, num_samples: int = 64) -> None:
        super().__init__()
        linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name]
        if not linears:
            raise ValueError(f"{type(model).__name__} has no nn.Linear classifier layer to make heteroscedastic")
        name = linears[-1]
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        self.layer = HeteroscedasticLinear.from_linear(getattr(parent, child))
        setattr(parent, child, self.layer)
        self.model = model
        self.num_samples = num_samples

    def forward(self, x: Tensor):
        output = self.model(x)
        mean = output if isinstance(output, Tensor) else output.logits
        if mean is None or self.layer.last_log_variance is None:
            raise RuntimeError("the heteroscedastic layer did not run or the model output has no logits")
        log_variance, self.layer.last_log_variance = self.layer.last_log_variance, None
        if self.training:
            return HeteroscedasticOutput(mean, log_variance)
        return heteroscedastic_prediction(mean, log_variance, self.num_samples)


class HeteroscedasticLoss(nn.Module):
    """MC-integrated softmax NLL on a :class:`HeteroscedasticOutput`, same call signature as the other losses."""

    def __init__(self, num_samples: int = 32) -> None:
        super().__init__()
        self.num_samples = num_samples

    def forward(self, output: HeteroscedasticOutput, target: Tensor, epoch: float | None = None) -> Tensor:
        if not isinstance(output, HeteroscedasticOutput):
            raise TypeError("HeteroscedasticLoss needs a HeteroscedasticOutput (the classifier in train mode)")
        return heteroscedastic_nll(output.mean, output.log_variance, target, self.num_samples)


__all__ = [
    "HeteroscedasticClassifier",
    "HeteroscedasticLinear",
    "HeteroscedasticLoss",
    "HeteroscedasticOutput",
    "heteroscedastic_nll",
    "heteroscedastic_prediction",
]
