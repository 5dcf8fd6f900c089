"""Checkpoints: weights in safetensors plus a JSON config; never pickle.

A checkpoint is a folder holding ``model.safetensors`` and ``model.json``. The JSON names the architecture
and its keyword arguments, the classes, the preprocessing, the library versions, a hash of the training data
and the SHA-256 of the weights file; loading recomputes that hash and refuses a file that does not match.
A training run also keeps ``last/`` (the same two files plus ``optimizer.safetensors`` and ``state.json``) to
resume from. Every file is written to a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clearmamba.atomic import atomic_write_bytes, atomic_write_text

FORMAT = "clearmamba-checkpoint/1"
WEIGHTS = "model.safetensors"
CONFIG = "model.json"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"
# files torch.save / pickle produce: refused by name and by content
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


class CheckpointError(ValueError):
    """A checkpoint that is missing, tampered with, or not in clearmamba's safe format."""


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def versions() -> dict[str, str]:
    from clearmamba import __version__

    return {"clearmamba": __version__, "torch": torch.__version__, "python": platform.python_version()}


# ---- tensors <-> safetensors bytes -------------------------------------------------------------------
def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    # safetensors refuses shared or strided storage: store independent contiguous copies
    return save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, metadata=metadata)


def refuse_pickle(path: Path) -> None:
    """Raise if ``path`` looks like a pickle / torch.save file (by suffix or by its first bytes)."""
    message = (
        f"{path}: refusing to load a pickle/torch.save checkpoint (loading it could run arbitrary code); "
        f"clearmamba reads only {WEIGHTS} + {CONFIG} written by clearmamba"
    )
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(message)
    with open(path, "rb") as handle:
        head = handle.read(8)
    # pickle protocol 2+ starts with 0x80; torch.save's zip archives with "PK"
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise CheckpointError(message)


def load_tensors(path: str | Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    refuse_pickle(path)
    data = path.read_bytes()
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise CheckpointError(
            f"{path}: SHA-256 does not match the hash recorded in its JSON config; the file was modified or "
            "corrupted after it was written. Refusing to load it."
        )
    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint config not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error


# ---- model checkpoints -------------------------------------------------------------------------------
def save_checkpoint(folder: str | Path, model: nn.Module, config: dict[str, Any]) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/model.json`` (config + hashes + versions)."""
    folder = Path(folder)
    state = {k: v for k, v in unwrap(model).state_dict().items()}
    data = tensors_to_bytes(state, metadata={"format": FORMAT})
    atomic_write_bytes(folder / WEIGHTS, data)
    record = {**config, "format": FORMAT, "weights_file": WEIGHTS, "weights_sha256": sha256_bytes(data)}
    record.setdefault("versions", versions())
    write_json(folder / CONFIG, record)
    return folder


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder, a checkpoint folder or its JSON/weights file -> the checkpoint folder."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".json":
            refuse_pickle(path)
        return path.parent
    if (path / CONFIG).is_file():
        return path
    if (path / "checkpoint" / CONFIG).is_file():
        return path / "checkpoint"
    pickles = [p.name for p in path.glob("*") if p.suffix.lower() in PICKLE_SUFFIXES] if path.is_dir() else []
    if pickles:
        raise CheckpointError(f"{path / pickles[0]}: refusing to load a pickle/torch.save checkpoint")
    raise CheckpointError(f"{path}: no clearmamba checkpoint ({CONFIG} + {WEIGHTS}) found there")


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Verified weights and config of a checkpoint (raises :class:`CheckpointError`)."""
    folder = resolve_checkpoint(path)
    config = read_json(folder / CONFIG)
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{folder / CONFIG}: field 'format' is {config.get('format')!r}, expected {FORMAT!r}")
    if "weights_sha256" not in config:
        raise CheckpointError(f"{folder / CONFIG}: field 'weights_sha256' is missing")
    weights = load_tensors(folder / config.get("weights_file", WEIGHTS), config["weights_sha256"])
    return weights, config


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model named in the checkpoint JSON and load its verified weights."""
    import clearmamba.models.baselines  # noqa: F401  (registers the clear_* names)
    from clearmamba.models import create_model

    weights, config = read_checkpoint(path)
    if "arch" not in config:
        raise CheckpointError(f"{resolve_checkpoint(path) / CONFIG}: field 'arch' is missing")
    model = create_model(config["arch"], **config.get("model_kwargs", {}))
    model.load_state_dict(weights, strict=True)
    if config.get("posthoc"):  # RaP's density gate + evidence scaling, fitted after training
        from .posthoc import attach_posthoc

        model = attach_posthoc(model, resolve_checkpoint(path), config["posthoc"])
    return model.to(map_location).eval(), config


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


# ---- training state (optimizer, RNG, progress) ---------------------------------------------------------
def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (safetensors) and the JSON-able rest."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state_dict(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("state."):
            continue
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_state(
    folder: str | Path, model: nn.Module, config: dict, optimizer: torch.optim.Optimizer, progress: dict
) -> None:
    """Write a complete resumable state to ``folder`` by filling ``folder.new`` and swapping it in."""
    folder = Path(folder)
    fresh = folder.with_name(folder.name + ".new")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(fresh, ignore_errors=True)
    save_checkpoint(fresh, model, config)
    tensors, meta = optimizer_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    data = tensors_to_bytes(tensors)
    atomic_write_bytes(fresh / OPTIMIZER, data)
    write_json(fresh / STATE, {**progress, "optimizer": meta, "optimizer_sha256": sha256_bytes(data)})
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(fresh, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_training_state(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict, dict]:
    """(model weights, model config, optimizer state_dict, progress) from a ``last/`` folder."""
    folder = Path(folder)
    if not (folder / STATE).is_file() and folder.with_name(folder.name + ".old").is_dir():
        folder = folder.with_name(folder.name + ".old")  # crashed between the two renames
    weights, config = read_checkpoint(folder)
    progress = read_json(folder / STATE)
    tensors = load_tensors(folder / OPTIMIZER, progress.get("optimizer_sha256"))
    rng = tensors.pop("rng.torch", None)
    if rng is not None:
        progress["rng_torch"] = rng
    return weights, config, optimizer_state_dict(tensors, progress.pop("optimizer")), progress
