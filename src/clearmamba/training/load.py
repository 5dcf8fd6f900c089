"""``load_run``: the one way to get a trained model back, with its typed run record."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .checkpoint import CONFIG, WEIGHTS, CheckpointError, read_checkpoint
from .posthoc import attach_posthoc
from .record import RunRecord


def load_run(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, RunRecord]:
    """The model of a checkpoint (with RaP's post-hoc step attached) in eval mode, and its record."""
    from clearmamba.models import create_model

    record, weights, folder = read_checkpoint(path)
    try:
        model = create_model(record.model.arch, **record.model.options)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{folder / CONFIG}: record.model cannot be built ({error})") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0] if str(error) else "mismatch"
        raise CheckpointError(f"{folder / WEIGHTS}: weights do not fit record.model ({first})") from None
    if record.posthoc is not None:  # RaP's density gate + evidence scaling, fitted after training
        model = attach_posthoc(model, folder, record.posthoc)
    return model.to(device).eval(), record
