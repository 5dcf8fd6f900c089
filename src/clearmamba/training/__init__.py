"""Training and inference: the one loop (:func:`fit`), the one batching :func:`predict`, checkpoints bound to a
typed run record (:func:`load_run`), and the training job behind the CLI and the demo (:func:`train_run`)."""

import clearmamba.models.baselines  # noqa: F401  (registers the clear_* models)
from clearmamba.training.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from clearmamba.training.config import LABML_RECIPE, TrainConfig
from clearmamba.training.data import TensorSet, as_tensor_set, epoch_indices
from clearmamba.training.distributed import DistributedContext
from clearmamba.training.fit import (
    Callback,
    EarlyStopping,
    EpochLog,
    EvidenceStatistics,
    FitResult,
    FitState,
    StepProgress,
    fit,
)
from clearmamba.training.load import load_run
from clearmamba.training.optim import build_optimizer, no_weight_decay_names, warmup_cosine
from clearmamba.training.predict import predict
from clearmamba.training.record import RunRecord
from clearmamba.training.run import RunConfig, train_run

__all__ = [
    "LABML_RECIPE",
    "Callback",
    "CheckpointError",
    "DistributedContext",
    "EarlyStopping",
    "EpochLog",
    "EvidenceStatistics",
    "FitResult",
    "FitState",
    "RunConfig",
    "RunRecord",
    "StepProgress",
    "TensorSet",
    "TrainConfig",
    "as_tensor_set",
    "build_optimizer",
    "epoch_indices",
    "fit",
    "load_run",
    "no_weight_decay_names",
    "predict",
    "read_checkpoint",
    "save_checkpoint",
    "train_run",
    "warmup_cosine",
]
