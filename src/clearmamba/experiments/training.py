"""A small training loop for the MNIST-scale experiments, with labml's evidential statistics.

The loss is called as ``loss(prediction, target, epoch=t)`` with ``t`` the fractional number of epochs
completed, so an :class:`~clearmamba.uncertainty.EvidentialLoss` with a ``PiecewiseLinear`` schedule anneals
its KL weight over samples seen, exactly like labml's ``RelativePiecewise``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from clearmamba.uncertainty import Prediction
from clearmamba.uncertainty.outputs import as_prediction

# MNIST pixel mean and standard deviation (labml / torchvision normalisation)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def to_tensor(images: np.ndarray) -> Tensor:
    """uint8 ``[n, 28, 28]`` -> normalised float ``[n, 1, 28, 28]``."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images [n, h, w], got {images.dtype} {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return x.sub_(MNIST_MEAN).div_(MNIST_STD).unsqueeze(1)


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 1.0
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 5e-3
    # labml's WeightDecay defaults to weight_decouple=True, i.e. AdamW; torch's Adam(weight_decay) is L2
    decoupled_weight_decay: bool = True
    seed: int = 0
    # labml's recipe: constant lr, no clipping. > 0: clearmamba.training's warm-up + cosine decay and clipping,
    # which evidential CLEAR-Mamba needs (at a constant 3e-3 it stays at chance on the built-in exams)
    warmup_epochs: float = 0.0
    grad_clip: float = 0.0


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    optimizer = torch.optim.AdamW if config.decoupled_weight_decay else torch.optim.Adam
    return optimizer(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig, step: int,
                   total_steps: int, steps_per_epoch: int) -> None:  # fmt: skip
    """One step with the config's lr schedule and gradient clipping (both off in labml's recipe)."""
    if config.warmup_epochs > 0:
        from clearmamba.training.loop import warmup_cosine

        factor = warmup_cosine(step, total_steps, round(config.warmup_epochs * steps_per_epoch), 0.01)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * factor
    if config.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()


class EvidenceStatistics:
    """labml's ``TrackStatistics``: accuracy, mean max p and mean K/S, split by right and wrong answers."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def _add(self, name: str, values: Tensor) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(values.sum())
        self.counts[name] = self.counts.get(name, 0) + values.numel()

    @torch.no_grad()
    def update(self, prediction: Prediction, target: Tensor) -> None:
        correct = prediction.predicted == target
        self._add("accuracy", correct.float())
        for tag, mask in (("right", correct), ("wrong", ~correct)):
            self._add(f"p_{tag}", prediction.confidence[mask])
            if prediction.evidence is not None:
                self._add(f"u_{tag}", prediction.score("vacuity")[mask])  # u = K / S

    def compute(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] if self.counts[k] else float("nan") for k in self.sums}


LossFn = Callable[..., Tensor]


def train(
    model: nn.Module,
    loss_fn: LossFn,
    images: Tensor,
    labels: Tensor,
    config: TrainConfig,
    on_step: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` (returning a Prediction or logits) for ``config.epochs``; per-epoch statistics.

    A fractional ``epochs`` trains on that fraction of an epoch's steps (at least one step).
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return train_on_tensors(model, loss_fn, (images,), labels, config, on_step)


def train_on_tensors(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: tuple[Tensor, ...],
    labels: Tensor,
    config: TrainConfig,
    on_step: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """:func:`train` for models taking several tensors (exams: frames, times, mask), batched alike."""
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = make_optimizer(model, config)
    n = len(labels)
    steps_per_epoch = max(1, -(-n // config.batch_size))
    total_steps = max(1, round(config.epochs * steps_per_epoch))
    history: list[dict[str, float]] = []
    stats, order, step = EvidenceStatistics(), torch.empty(0, dtype=torch.long), 0
    model.train()
    while step < total_steps:
        position = step % steps_per_epoch
        if position == 0:
            order = torch.randperm(n, generator=generator)
        batch = order[position * config.batch_size : (position + 1) * config.batch_size]
        prediction = as_prediction(model(*(x[batch] for x in inputs)))
        loss = loss_fn(prediction, labels[batch], epoch=step / steps_per_epoch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_step(model, optimizer, config, step, total_steps, steps_per_epoch)
        stats.update(prediction, labels[batch])
        step += 1
        if on_step is not None:
            on_step(1)
        if step % steps_per_epoch == 0 or step == total_steps:
            history.append({"epoch": step / steps_per_epoch, "loss": loss.item(), **stats.compute()})
            stats = EvidenceStatistics()
    model.eval()
    return history


@torch.no_grad()
def predict(model: Callable[[Tensor], object], images: Tensor, batch_size: int = 1000) -> Prediction:
    """Run ``model`` over ``images`` in batches (eval mode) and concatenate the predictions."""
    if isinstance(model, nn.Module):
        model.eval()
    parts = [as_prediction(model(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    return Prediction.cat(parts)
