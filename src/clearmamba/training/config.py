"""The one training configuration: optimiser, schedule, batching, early stopping and devices.

What is *learned* (softmax or evidential, the KL weight, ensemble size) belongs to the uncertainty
:class:`~clearmamba.uncertainty.methods.Method`; what the architecture is belongs to the model's config. This
is how the weights get there. Every clearmamba job (the CLI, the demo, the experiments and
``benchmarks.methods``) trains through :func:`clearmamba.training.fit` with one of these; the experiments keep
their recipes as instances (``LABML_RECIPE``), not as code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

SCHEDULES = ("warmup_cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 20  # fractional: that share of the last epoch's steps (at least one step)
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05  # decoupled (AdamW); never on biases, norms or a model's no_weight_decay()
    decoupled_weight_decay: bool = True  # False: Adam with L2 in the gradient (labml's coupled variant)
    schedule: str = "warmup_cosine"  # per step: linear warm-up, then cosine decay to min_lr_ratio * lr
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    patience: int = 5  # epochs without a better validation NLL before stopping; 0 disables early stopping
    balanced_sampling: bool = False  # class-balanced draws with replacement, for long-tailed labels
    seed: int = 0
    amp: bool = True  # bfloat16 autocast, on CUDA only
    device: str = "auto"  # auto = cuda when available, else cpu

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs > 0,
            "batch_size": self.batch_size >= 1,
            "eval_batch_size": self.eval_batch_size >= 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup_epochs": self.warmup_epochs >= 0,
            "min_lr_ratio": 0 <= self.min_lr_ratio <= 1,
            "grad_clip": self.grad_clip >= 0,
            "patience": self.patience >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"TrainConfig.{bad[0]}: {getattr(self, bad[0])!r} is out of range")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule: expected one of {SCHEDULES}, got {self.schedule!r}")

    def with_(self, **changes) -> TrainConfig:
        return replace(self, **changes)


# labml's MNIST recipe (Sensoy et al.'s experiment): Adam(W) at a constant 1e-3, no clipping, no early stopping
LABML_RECIPE = TrainConfig(epochs=3, batch_size=128, lr=1e-3, weight_decay=5e-3, schedule="constant",
                           warmup_epochs=0.0, grad_clip=0.0, patience=0)  # fmt: skip
