"""Bayes by backprop (Blundell et al. 2015): mean-field Gaussian weights trained on the ELBO.

Each weight has a posterior q(w) = N(mu, sigma^2) with sigma = softplus(rho), sampled by the
reparameterisation w = mu + sigma * eps, eps ~ N(0, 1), at every forward call (train and eval). The prior is
p(w) = N(0, sigma_p^2) and the KL term has the closed form

    KL(q || p) = sum log(sigma_p / sigma) + (sigma^2 + mu^2) / (2 sigma_p^2) - 1/2.

ELBO loss per batch: CE + kl_weight * KL / N with N the number of training samples. The posterior starts
at sigma = 0.05 (rho ~ -3, as in bayesian-torch); ``kl_weight < 1`` tempers the prior on small data sets.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clearmamba.uncertainty.outputs import as_prediction, output_logits
from clearmamba.uncertainty.prediction import Prediction


def _inverse_softplus(y: float) -> float:
    # rho = log(exp(sigma) - 1)
    return math.log(math.expm1(y))


def gaussian_kl(mu: Tensor, sigma: Tensor, prior_sigma: float) -> Tensor:
    # KL(N(mu, sigma^2) || N(0, sp^2)) = log(sp / sigma) + (sigma^2 + mu^2) / (2 sp^2) - 1/2, summed
    return (math.log(prior_sigma) - sigma.log() + (sigma.square() + mu.square()) / (2 * prior_sigma**2) - 0.5).sum()


class _Variational(nn.Module):
    """Shared parameters: ``weight_mu``/``weight_rho`` (and the bias pair) plus the prior scale."""

    def _init_variational(self, weight: Tensor, bias: Tensor | None, prior_sigma: float, init_sigma: float) -> None:
        if prior_sigma <= 0 or init_sigma <= 0:
            raise ValueError(f"prior_sigma and init_sigma must be > 0, got {prior_sigma}, {init_sigma}")
        self.prior_sigma = prior_sigma
        rho = _inverse_softplus(init_sigma)
        self.weight_mu = nn.Parameter(weight.detach().clone())
        self.weight_rho = nn.Parameter(torch.full_like(weight, rho))
        if bias is None:
            self.register_parameter("bias_mu", None)
            self.register_parameter("bias_rho", None)
        else:
            self.bias_mu = nn.Parameter(bias.detach().clone())
            self.bias_rho = nn.Parameter(torch.full_like(bias, rho))

    def sample_parameters(self) -> tuple[Tensor, Tensor | None]:
        # w = mu + softplus(rho) * eps
        weight = self.weight_mu + F.softplus(self.weight_rho) * torch.randn_like(self.weight_mu)
        if self.bias_mu is None:
            return weight, None
        return weight, self.bias_mu + F.softplus(self.bias_rho) * torch.randn_like(self.bias_mu)

    def kl(self) -> Tensor:
        total = gaussian_kl(self.weight_mu, F.softplus(self.weight_rho), self.prior_sigma)
        if self.bias_mu is not None:
            total = total + gaussian_kl(self.bias_mu, F.softplus(self.bias_rho), self.prior_sigma)
        return total


class BayesLinear(_Variational):
    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, prior_sigma: float = 1.0, init_sigma: float = 0.05
    ) -> None:
        super().__init__()
        reference = nn.Linear(in_features, out_features, bias=bias)
        self.in_features, self.out_features = in_features, out_features
        self._init_variational(reference.weight, reference.bias, prior_sigma, init_sigma)

    @classmethod
    def from_linear(cls, linear: nn.Linear, prior_sigma: float = 1.0, init_sigma: float = 0.05) -> BayesLinear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, prior_sigma, init_sigma)
        layer._init_variational(linear.weight, linear.bias, prior_sigma, init_sigma)
        return layer.to(linear.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, *self.sample_parameters())


class BayesConv(_Variational):
    """Variational 1D/2D/3D convolution built from an existing ``nn.ConvNd`` (its weights become the means)."""

    def __init__(self, conv: nn.modules.conv._ConvNd, prior_sigma: float = 1.0, init_sigma: float = 0.05) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv, nn.modules.conv._ConvTransposeNd):
            raise ValueError("BayesConv supports zero-padded forward convolutions only")
        self.conv_fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(conv.kernel_size)]
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self._init_variational(conv.weight, conv.bias, prior_sigma, init_sigma)

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.sample_parameters()
        return self.conv_fn(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def to_variational(
    model: nn.Module, scope: str = "head", prior_sigma: float = 1.0, init_sigma: float = 0.05
) -> nn.Module:
    """Replace layers by variational ones in place: ``head`` = the last ``nn.Linear``; ``all`` = every Linear/Conv.

    The deterministic weights become the posterior means, so a trained model can be converted and fine-tuned.
    """
    if scope not in ("head", "all"):
        raise ValueError(f"scope must be 'head' or 'all', got {scope!r}")
    kinds = (nn.Linear,) if scope == "head" else (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    names = [n for n, m in model.named_modules() if isinstance(m, kinds) and n]
    if scope == "head":
        names = names[-1:]
    if not names:
        raise ValueError(f"{type(model).__name__} has no layer to make variational (scope={scope!r})")
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, nn.Linear):
            replacement = BayesLinear.from_linear(module, prior_sigma, init_sigma)
        else:
            replacement = BayesConv(module, prior_sigma, init_sigma)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, replacement)
    return model


def kl_divergence(model: nn.Module) -> Tensor:
    """Sum of the KL terms of every variational layer in ``model``."""
    terms = [m.kl() for m in model.modules() if isinstance(m, _Variational)]
    if not terms:
        raise ValueError(f"{type(model).__name__} has no variational layer (use to_variational first)")
    return torch.stack(terms).sum()


class VariationalOutput(NamedTuple):
    """Training output of :class:`VariationalClassifier`: the model's output and the KL term."""

    output: object
    kl: Tensor

    @property
    def prediction(self) -> Prediction:
        return as_prediction(self.output)


class VariationalClassifier(nn.Module):
    """Training calls return ``VariationalOutput(output, kl)``; eval calls average ``num_samples`` weight draws."""

    def __init__(self, model: nn.Module, num_samples: int = 16) -> None:
        super().__init__()
        kl_divergence(model)  # fails early when nothing is variational
        self.model = model
        self.num_samples = num_samples

    def forward(self, x: Tensor):
        if self.training:
            return VariationalOutput(self.model(x), kl_divergence(self.model))
        predictions = [as_prediction(self.model(x)) for _ in range(self.num_samples)]
        extra = {k: torch.stack([p.extra[k] for p in predictions]).mean(0) for k in predictions[0].extra}
        return Prediction.from_members(torch.stack([p.probs for p in predictions]), extra=extra)


class ELBOLoss(nn.Module):
    """CE(logits, y) + kl_weight * KL / dataset_size, on a :class:`VariationalOutput`."""

    def __init__(self, dataset_size: int, kl_weight: float = 1.0) -> None:
        super().__init__()
        if dataset_size < 1:
            raise ValueError(f"dataset_size must be >= 1, got {dataset_size}")
        self.dataset_size = dataset_size
        self.kl_weight = kl_weight

    def forward(self, output: VariationalOutput, target: Tensor, epoch: float | None = None) -> Tensor:
        if not isinstance(output, VariationalOutput):
            raise TypeError("ELBOLoss needs the training output of VariationalClassifier (model in train mode)")
        data = F.cross_entropy(output_logits(output.output), target)
        return data + self.kl_weight * output.kl / self.dataset_size
