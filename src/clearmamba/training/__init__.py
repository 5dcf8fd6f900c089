"""Training and inference for CLEAR-Mamba and its baselines: the loop, checkpoints, distributed helpers."""

import clearmamba.models.baselines  # noqa: F401  (registers the clear_* models)
from clearmamba.training.checkpoint import (
    CheckpointError,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from clearmamba.training.distributed import DistributedContext
from clearmamba.training.loop import FitResult, TrainConfig, Trainer, epoch_indices, predict, warmup_cosine

__all__ = [
    "CheckpointError",
    "DistributedContext",
    "FitResult",
    "TrainConfig",
    "Trainer",
    "epoch_indices",
    "load_model",
    "predict",
    "read_checkpoint",
    "save_checkpoint",
    "warmup_cosine",
]
