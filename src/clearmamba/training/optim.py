"""The optimiser and its learning-rate schedule, one rule for every model.

Weight decay skips biases and normalisation weights (every parameter with one dimension) and whatever a model
lists in its ``no_weight_decay()`` (timm's convention; MedMamba and the temporal Mamba list their state matrix
``A_log`` and skip ``D``) or marks with ``_no_weight_decay``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full names of the parameters that any module of ``model`` exempts from weight decay."""
    names = {n for n, p in model.named_parameters() if getattr(p, "_no_weight_decay", False)}
    for prefix, module in model.named_modules():
        listed = getattr(module, "no_weight_decay", None)
        if callable(listed):
            names |= {f"{prefix}.{n}" if prefix else n for n in listed()}
    return names


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    skip = no_weight_decay_names(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (or Adam with coupled L2 when ``cfg.decoupled_weight_decay`` is False) over :func:`parameter_groups`."""
    optimizer = torch.optim.AdamW if cfg.decoupled_weight_decay else torch.optim.Adam
    return optimizer(parameter_groups(model, cfg.weight_decay), lr=cfg.lr)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    # linear warm-up to 1, then min + (1 - min) (1 + cos(pi progress)) / 2
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def lr_factor(cfg: TrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The multiple of ``cfg.lr`` used at ``step``."""
    if cfg.schedule == "constant":
        return 1.0
    return warmup_cosine(step, total_steps, round(cfg.warmup_epochs * steps_per_epoch), cfg.min_lr_ratio)
