"""One call from named ExamSets to a trained, validated checkpoint with its refer-to-a-doctor rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoint import CONFIG, load_model, resolve_checkpoint, write_json
from .evaluate import referral_rule
from .loop import TrainConfig, Trainer, predict
from .sources import data_hash


def build_checkpoint_config(train_set, arch: str, model_kwargs: dict, data_spec: str) -> dict[str, Any]:
    _, t, c, h, w = train_set.frames.shape
    return {
        "arch": arch,
        "model_kwargs": model_kwargs,
        "classes": list(train_set.class_names),
        "preprocessing": {"frame_size": [h, w], "in_chans": c, "max_frames": t, "value_range": [0.0, 1.0]},
        "data": data_spec,
        "data_hash": data_hash(train_set),
        "n_train": len(train_set),
    }


def train_model(
    sets: dict,
    out: str | Path,
    arch: str = "clear_mamba_tiny",
    model_options: dict | None = None,
    cfg: TrainConfig | None = None,
    target_risk: float = 0.05,
    resume: bool = False,
    data_spec: str = "builtin",
) -> tuple[torch.nn.Module, dict]:
    """Train on ``sets["train"]``, early-stop on ``sets["val"]``, fit RaP's post-hoc step (evidential heads,
    ``cfg.posthoc``) and store the validation referral threshold."""
    import clearmamba.models.baselines  # noqa: F401  (registers the clear_* models)
    from clearmamba.models import create_model

    cfg = cfg or TrainConfig()
    train_set, val_set = sets["train"], sets["val"]
    in_chans = train_set.frames.shape[2]
    model_kwargs = {"num_classes": train_set.num_classes, "in_chans": in_chans, **(model_options or {})}
    torch.manual_seed(cfg.seed)
    model = create_model(arch, **model_kwargs)
    config = build_checkpoint_config(train_set, arch, model_kwargs, data_spec)
    Trainer(model, cfg, out, config).fit(train_set, val_set, resume=resume)
    model, config = load_model(out)
    if cfg.posthoc and getattr(getattr(model, "cfg", None), "head", None) == "evidential":
        from .posthoc import fit_posthoc, save_posthoc

        model, record = fit_posthoc(model, train_set, val_set, cfg.eval_batch_size)
        config["posthoc"] = save_posthoc(resolve_checkpoint(out), model, record)
    config["referral"] = referral_rule(predict(model, val_set, cfg.eval_batch_size), target_risk)
    write_json(resolve_checkpoint(out) / CONFIG, config)
    return model, config
