"""Test-time adaptation to a new camera from its unlabelled exams.

Two methods, composable, configured by one :class:`AdaptationConfig`:

* **Normalisation statistics** (AdaBN, Li et al. 2016; with a source prior, Schneider et al. 2020): every
  BatchNorm layer (e.g. those of the conv stem) gets the mean and variance of its inputs on the new exams,
  mixed with the source statistics, ``mu = prior mu_source + (1 - prior) mu_target`` (the same for var).
* **Entropy minimisation** (TENT, Wang et al. 2021): the affine parameters of the normalisation layers, and
  nothing else, take ``entropy_steps`` passes of Adam on the mean entropy H(p) = -sum_k p_k log p_k of the
  predicted probabilities (for an evidential head p = alpha / S), BatchNorm using each batch's statistics.

:func:`adapt` works on a copy unless ``inplace=True`` and takes :class:`UnlabelledExams` only: labels never
reach it.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from clearmamba.adaptation.unlabelled import UnlabelledExams
from clearmamba.serialize import fields_from_json

NORM_KINDS = {"batch": nn.modules.batchnorm._BatchNorm, "layer": nn.LayerNorm, "group": nn.GroupNorm}


@dataclass(frozen=True)
class AdaptationConfig:
    """What to adapt. The default re-estimates every BatchNorm's statistics and runs no entropy steps."""

    norm_statistics: bool = True
    statistics_prior: float = 0.0  # weight of the source statistics
    statistics_scope: str = ""  # only BatchNorm layers whose name starts with this ("" = all)
    entropy_steps: int = 0  # passes over the exams; 0 = no entropy minimisation
    lr: float = 1e-3
    norm_kinds: tuple[str, ...] = ("batch",)  # whose affine parameters entropy minimisation trains
    batch_statistics: bool = True  # BatchNorm normalises with the batch's statistics while adapting
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm_kinds", tuple(self.norm_kinds))
        if not 0 <= self.statistics_prior <= 1:
            raise ValueError(f"AdaptationConfig.statistics_prior: expected [0, 1], got {self.statistics_prior}")
        if self.entropy_steps < 0 or self.lr <= 0 or self.batch_size < 1:
            raise ValueError(
                f"AdaptationConfig: need entropy_steps >= 0, lr > 0, batch_size >= 1; got {self.entropy_steps}, "
                f"{self.lr}, {self.batch_size}"
            )
        unknown = sorted(set(self.norm_kinds) - set(NORM_KINDS))
        if unknown or not self.norm_kinds:
            raise ValueError(
                f"AdaptationConfig.norm_kinds: expected some of {sorted(NORM_KINDS)}, got {self.norm_kinds}"
            )

    def to_dict(self) -> dict:
        return {**asdict(self), "norm_kinds": list(self.norm_kinds)}

    @classmethod
    def from_dict(cls, record: dict, where: str = "adaptation") -> AdaptationConfig:
        return fields_from_json(cls, record, where, noun="adaptation ")


@dataclass
class AdaptationResult:
    model: nn.Module
    config: AdaptationConfig
    batchnorm_layers: int = 0  # layers whose statistics were re-estimated
    adapted_parameters: int = 0  # scalars trained by entropy minimisation
    entropy: list[float] = field(default_factory=list)  # mean entropy of each entropy-minimisation batch


def batchnorm_layers(model: nn.Module, scope: str = "") -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers whose qualified name starts with ``scope``, by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, NORM_KINDS["batch"]) and n.startswith(scope)}


def norm_statistics(model: nn.Module, scope: str = "") -> dict[str, tuple[Tensor, Tensor]]:
    """A copy of the running (mean, var) of each BatchNorm layer in ``scope``."""
    return {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in batchnorm_layers(model, scope).items()}


def _forward(model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]):
    device = next(model.parameters()).device
    frames, times, mask = (x.to(device) for x in batch)
    return model(frames, times, mask)


@torch.no_grad()
def reestimate_norm_statistics(
    model: nn.Module,
    exams: UnlabelledExams,
    prior: float = 0.0,
    scope: str = "",
    batch_size: int = 16,
    source: dict[str, tuple[Tensor, Tensor]] | None = None,
) -> int:
    """Replace the running statistics of the BatchNorm layers in ``scope`` by their inputs' on ``exams``
    (the average of per-batch statistics, as ``torch.optim.swa_utils.update_bn``), mixed with ``prior`` x
    the ``source`` statistics (default: the layers' current ones). In place; returns the number of layers.
    The model is left in eval mode."""
    layers = batchnorm_layers(model, scope)
    if not layers:
        return 0
    source = norm_statistics(model, scope) if source is None else source
    momenta = {n: m.momentum for n, m in layers.items()}
    model.eval()
    for m in layers.values():
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
        m.train()
    try:
        for batch in exams.batches(batch_size):
            _forward(model, batch)
    finally:
        for n, m in layers.items():
            m.momentum = momenta[n]
        model.eval()
    for n, m in layers.items():
        # mu = prior mu_s + (1 - prior) mu_t, and the same for the variance
        mean, var = source[n]
        m.running_mean.mul_(1 - prior).add_(prior * mean)
        m.running_var.mul_(1 - prior).add_(prior * var)
    return len(layers)


def norm_affine_parameters(model: nn.Module, kinds: tuple[str, ...]) -> list[nn.Parameter]:
    types = tuple(NORM_KINDS[k] for k in kinds)
    return [p for m in model.modules() if isinstance(m, types) for p in (m.weight, m.bias) if p is not None]


def mean_entropy(probs: Tensor) -> Tensor:
    # H(p) = -sum_k p_k log p_k, averaged over the batch
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()


def minimise_entropy(model: nn.Module, exams: UnlabelledExams, config: AdaptationConfig) -> tuple[int, list[float]]:
    """TENT on the normalisation layers' affine parameters, in place. Returns (scalars trained, entropies)."""
    params = norm_affine_parameters(model, config.norm_kinds)
    if not params:
        raise ValueError(f"entropy minimisation: the model has no {config.norm_kinds} normalisation layer to adapt")
    trainable = {id(p): p.requires_grad for p in model.parameters()}
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    layers = list(batchnorm_layers(model).values())
    momenta = [m.momentum for m in layers]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    entropies = []
    try:
        model.eval()
        if config.batch_statistics:
            for m in layers:
                m.train()
                m.momentum = 0.0  # normalise with the batch's statistics, keep the running ones as they are
        for _ in range(config.entropy_steps):
            for batch in exams.batches(config.batch_size, generator):
                loss = mean_entropy(_forward(model, batch).probs)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                entropies.append(float(loss.detach()))
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        for p in model.parameters():
            p.requires_grad_(trainable[id(p)])
        model.eval()
    return sum(p.numel() for p in params), entropies


def adapt(
    model: nn.Module, exams: UnlabelledExams, config: AdaptationConfig | None = None, inplace: bool = False
) -> AdaptationResult:
    """Adapt ``model`` to the camera of ``exams`` (unlabelled): statistics, then entropy minimisation, then
    statistics again (the trained affine parameters move the inputs of later BatchNorm layers)."""
    if not isinstance(exams, UnlabelledExams):
        raise TypeError(
            f"adapt: expected UnlabelledExams (frames, times, masks; no labels), got {type(exams).__name__}; "
            "use UnlabelledExams.from_examset(exams)"
        )
    config = config or AdaptationConfig()
    target = model if inplace else copy.deepcopy(model)
    result = AdaptationResult(target, config)
    source = norm_statistics(target, config.statistics_scope)

    def statistics() -> int:
        return reestimate_norm_statistics(
            target, exams, config.statistics_prior, config.statistics_scope, config.batch_size, source
        )

    if config.norm_statistics:
        result.batchnorm_layers = statistics()
    if config.entropy_steps > 0:
        result.adapted_parameters, result.entropy = minimise_entropy(target, exams, config)
        if config.norm_statistics:
            statistics()
    target.eval()
    return result
