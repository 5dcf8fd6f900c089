"""SWAG (Maddox et al. 2019): a Gaussian over weights fitted to the SGD trajectory of the last epochs.

Collected over ``n`` snapshots theta_i (flattened parameters ``[P]``):

- SWA mean theta_bar = 1/n sum_i theta_i (the SWA solution, Izmailov et al. 2018, comes for free);
- diagonal variance sigma^2 = 1/n sum_i theta_i^2 - theta_bar^2;
- low-rank deviations D ``[K, P]``: the last K values of theta_i - theta_bar.

A weight sample is theta = theta_bar + sqrt(scale) * (sigma z1 / sqrt(2) + D^T z2 / sqrt(2 (K - 1)))
(diagonal only: theta_bar + sqrt(scale) sigma z1). Batch-norm statistics do not belong to the weights, so
they are recomputed for every sample on training data (:func:`refresh_batchnorm`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from clearmamba.uncertainty.outputs import as_prediction
from clearmamba.uncertainty.prediction import Prediction

_BATCHNORM = nn.modules.batchnorm._BatchNorm


def batch_input(batch):
    """The input tensor of a loader batch: a tensor, ``(x, ...)`` or a dict with ``image``/``x``/``input``."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("image", "x", "input", "inputs"):
            if key in batch:
                return batch[key]
    raise TypeError(f"cannot find the input tensor in a batch of type {type(batch).__name__}")


@torch.no_grad()
def refresh_batchnorm(model: nn.Module, loader: Iterable, device=None) -> None:
    """Recompute every batch-norm running mean/var as the plain average over ``loader`` (other layers in eval)."""
    norms = [m for m in model.modules() if isinstance(m, _BATCHNORM)]
    if not norms:
        return
    states = [(m, m.training, getattr(m, "momentum", None)) for m in model.modules()]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = exact mean over the batches
        m.train()
    try:
        for batch in loader:
            x = batch_input(batch)
            model(x.to(device) if device is not None else x)
    finally:
        for m, training, momentum in states:
            m.train(training)
            if isinstance(m, _BATCHNORM):
                m.momentum = momentum


class SWAG(nn.Module):
    """Wrap a classifier; call :meth:`collect` at the end of each collection epoch.

    Training-mode calls are transparent. Eval-mode calls return ``Prediction.from_members`` over the weight
    samples prepared by :meth:`prepare_samples` (drawn on the fly, without BN refresh, if none were).
    """

    def __init__(self, model: nn.Module, max_rank: int = 20, scale: float = 0.5, num_samples: int = 16) -> None:
        super().__init__()
        if max_rank < 0:
            raise ValueError(f"max_rank must be >= 0, got {max_rank}")
        self.model = model
        self.max_rank = max_rank
        self.scale = scale
        self.num_samples = num_samples
        size = sum(p.numel() for p in model.parameters())
        reference = next(model.parameters())
        self.register_buffer("mean", torch.zeros(size, dtype=reference.dtype))
        self.register_buffer("sq_mean", torch.zeros(size, dtype=reference.dtype))
        self.register_buffer("deviations", torch.zeros(max_rank, size, dtype=reference.dtype))
        self.register_buffer("num_collected", torch.zeros((), dtype=torch.long))
        self._samples: list[tuple[Tensor, dict[str, Tensor]]] = []

    # ---- collection --------------------------------------------------------------------------------
    @torch.no_grad()
    def collect(self) -> None:
        # running moments: m_{n+1} = (n m_n + theta) / (n + 1)
        theta = parameters_to_vector(self.model.parameters()).detach()
        n = int(self.num_collected)
        self.mean.mul_(n / (n + 1)).add_(theta / (n + 1))
        self.sq_mean.mul_(n / (n + 1)).add_(theta.square() / (n + 1))
        if self.max_rank:
            self.deviations[n % self.max_rank] = theta - self.mean
        self.num_collected += 1
        self._samples = []

    def variance(self) -> Tensor:
        # sigma^2 = E[theta^2] - E[theta]^2, clamped against rounding below zero
        return (self.sq_mean - self.mean.square()).clamp_min(0.0)

    def _check_collected(self) -> None:
        if int(self.num_collected) == 0:
            raise RuntimeError("SWAG has no snapshots yet: call collect() at the end of collection epochs")

    # ---- sampling ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_weights(self, low_rank: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """One flat weight vector ``[P]`` from the SWAG posterior."""
        self._check_collected()
        z1 = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        diagonal = self.variance().sqrt() * z1
        rank = min(int(self.num_collected), self.max_rank)
        if not low_rank or rank < 2:
            return self.mean + self.scale**0.5 * diagonal
        deviations = self.deviations[:rank]
        z2 = torch.randn(rank, generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        low = deviations.T @ z2 / (rank - 1) ** 0.5
        return self.mean + self.scale**0.5 * (diagonal + low) / 2**0.5

    def _bn_state(self) -> dict[str, Tensor]:
        return {
            k: v.clone()
            for k, v in self.model.state_dict().items()
            if k.rsplit(".", 1)[-1].startswith("running_") or k.endswith("num_batches_tracked")
        }

    @torch.no_grad()
    def prepare_samples(
        self, num_samples: int | None = None, loader: Iterable | None = None, low_rank: bool = True, seed: int = 0
    ) -> None:
        """Draw the weight samples used at inference, refreshing BN statistics on ``loader`` for each."""
        self._check_collected()
        has_bn = any(isinstance(m, _BATCHNORM) for m in self.model.modules())
        if has_bn and loader is None:
            warnings.warn("SWAG samples of a model with batch norm should refresh BN on training data", stacklevel=2)
        generator = torch.Generator(device=self.mean.device).manual_seed(seed)
        original = parameters_to_vector(self.model.parameters()).clone()
        original_bn = self._bn_state()
        self._samples = []
        for _ in range(num_samples or self.num_samples):
            weights = self.sample_weights(low_rank, generator)
            vector_to_parameters(weights, self.model.parameters())
            if has_bn and loader is not None:
                refresh_batchnorm(self.model, loader, device=self.mean.device)
            self._samples.append((weights, self._bn_state()))
        vector_to_parameters(original, self.model.parameters())
        self.model.load_state_dict(original_bn, strict=False)

    # ---- inference ---------------------------------------------------------------------------------
    def forward(self, x: Tensor):
        if self.training:
            return self.model(x)
        if not self._samples:
            self.prepare_samples()
        original = parameters_to_vector(self.model.parameters()).clone()
        original_bn = self._bn_state()
        predictions = []
        try:
            for weights, bn in self._samples:
                vector_to_parameters(weights, self.model.parameters())
                self.model.load_state_dict(bn, strict=False)
                predictions.append(as_prediction(self.model(x)))
        finally:
            vector_to_parameters(original, self.model.parameters())
            self.model.load_state_dict(original_bn, strict=False)
        extra = {k: torch.stack([p.extra[k] for p in predictions]).mean(0) for k in predictions[0].extra}
        return Prediction.from_members(torch.stack([p.probs for p in predictions]), extra=extra)

    @torch.no_grad()
    def swa_model(self, loader: Iterable | None = None) -> nn.Module:
        """A copy of the model with the SWA mean weights (BN refreshed on ``loader`` if given)."""
        self._check_collected()
        model = copy.deepcopy(self.model)
        vector_to_parameters(self.mean.clone(), model.parameters())
        if loader is not None:
            refresh_batchnorm(model, loader, device=self.mean.device)
        return model.eval()
