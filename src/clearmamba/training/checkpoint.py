"""Checkpoints: safetensors weights bound to a typed run record; never pickle, never half written.

A checkpoint folder holds ``model.json``, ``model.safetensors`` and, for RaP, ``posthoc.safetensors``::

    model.json = {"format": ..., "record": <RunRecord>, "record_sha256": H(record),
                  "weights": {"file": "model.safetensors", "sha256": H(weights file)}}

and the safetensors header metadata of the weights repeats ``record_sha256``. Loading recomputes every hash and
refuses a mismatch with one line, so an edited class list, threshold, post-hoc hash or file name is caught, and
so is a weights file from another run. This guards against corruption and careless edits; someone who rewrites
both files consistently is not stopped (sign the folder with your own key if that matters). Every file a record
names must be a plain name inside the folder, with its hash.

A folder is written whole: into a temporary sibling, flushed, then swapped in by rename, so a crash leaves the
previous checkpoint loadable. :func:`clean_stale` removes temporary leftovers on start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clearmamba.atomic import atomic_write_bytes, atomic_write_text
from clearmamba.errors import UserError
from clearmamba.serialize import ConfigError, from_json, to_json

from .record import FORMAT, RunRecord, record_sha256

WEIGHTS = "model.safetensors"
CONFIG = "model.json"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"
FILE_MODE = 0o644  # outputs a team shares, like any other result file
TMP_MARK = ".tmp-"
# files torch.save / pickle produce: refused by name and by content
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, edited, corrupted or not in clearmamba's safe format."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_json(path: str | Path, obj: Any, mode: int = FILE_MODE) -> None:
    atomic_write_text(path, json.dumps(to_json(obj), indent=2) + "\n", mode)


# ---- tensors <-> safetensors bytes -------------------------------------------------------------------
def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    # safetensors refuses shared or strided storage: store independent contiguous copies
    return save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, metadata=metadata)


def refuse_pickle(path: Path) -> None:
    """Raise if ``path`` looks like a pickle / torch.save file (by suffix or by its first bytes)."""
    message = (f"{path}: refusing to load a pickle/torch.save file (loading it could run arbitrary code); "
               f"clearmamba reads only {CONFIG} + {WEIGHTS} written by clearmamba")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(message)
    with open(path, "rb") as handle:
        head = handle.read(8)
    # pickle protocol 2+ starts with 0x80; torch.save's zip archives with "PK"
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise CheckpointError(message)


def plain_name(folder: Path, name: str, field: str) -> Path:
    """``folder / name`` for a plain file name; anything that could point elsewhere is refused."""
    if not name or name != Path(name).name or name in (".", "..") or "\\" in name:
        raise CheckpointError(f"{folder / CONFIG}: field {field} is {name!r}; expected a plain file name inside "
                              f"{folder}")
    return folder / name


def read_tensors(path: Path, expected_sha256: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata of a safetensors file whose SHA-256 must be ``expected_sha256``."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load

    if not path.is_file():
        raise CheckpointError(f"{path}: file not found; the checkpoint is incomplete")
    refuse_pickle(path)
    data = path.read_bytes()
    if sha256_bytes(data) != expected_sha256:
        raise CheckpointError(f"{path}: SHA-256 differs from the one in {CONFIG}; the file was changed or corrupted "
                              "after it was written. Refusing it.")
    try:
        tensors = load(data)
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, ValueError, RuntimeError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    return tensors, metadata


def load_tensors(path: str | Path, expected_sha256: str) -> dict[str, torch.Tensor]:
    return read_tensors(Path(path), expected_sha256)[0]


# ---- whole folders -----------------------------------------------------------------------------------------
def write_folder(folder: str | Path, files: dict[str, bytes], mode: int = FILE_MODE) -> Path:
    """Write ``files`` (name -> bytes) as the complete content of ``folder``: a temporary sibling first, then
    the old folder is moved aside, the new one renamed in, and the old one removed."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    fresh = folder.with_name(f".{folder.name}{TMP_MARK}{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old{TMP_MARK}{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    os.chmod(fresh, 0o755)
    for name, data in files.items():
        atomic_write_bytes(fresh / name, data, mode)
    _fsync_dir(fresh)
    if folder.exists():
        os.replace(folder, old)
    os.replace(fresh, folder)
    _fsync_dir(folder.parent)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover(folder: Path) -> Path:
    """``folder``, or the previous version a crash left moved aside between two renames."""
    if folder.is_dir():
        return folder
    moved = sorted(folder.parent.glob(f".{folder.name}.old{TMP_MARK}*"))
    return moved[-1] if moved else folder


def clean_stale(run_dir: Path) -> list[Path]:
    """Remove what an interrupted write left in ``run_dir`` (temporary folders and files); keep a moved-aside
    folder whose real one is missing (it is the last good version) by renaming it back."""
    removed = []
    if not run_dir.is_dir():
        return removed
    for path in sorted(run_dir.iterdir()):
        if TMP_MARK not in path.name and not path.name.endswith(".tmp"):
            continue
        if ".old" + TMP_MARK in path.name:
            real = run_dir / path.name[1:].split(".old" + TMP_MARK)[0]
            if not real.exists():
                os.replace(path, real)
                continue
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        removed.append(path)
    for sub in ("checkpoint", "last"):
        if (run_dir / sub).is_dir():
            for path in (run_dir / sub).glob(".*.tmp"):
                path.unlink()
                removed.append(path)
    return removed


# ---- run checkpoints ---------------------------------------------------------------------------------------
def checkpoint_files(record: RunRecord, weights: dict[str, torch.Tensor],
                     extra: dict[str, bytes] | None = None) -> dict[str, bytes]:  # fmt: skip
    """The files of a checkpoint folder: the weights stamped with the record's hash, the record, ``extra``."""
    digest = record_sha256(record)
    data = tensors_to_bytes(weights, metadata={"format": FORMAT, "record_sha256": digest})
    config = {"format": FORMAT, "record": to_json(record), "record_sha256": digest,
              "weights": {"file": WEIGHTS, "sha256": sha256_bytes(data)}}  # fmt: skip
    text = json.dumps(config, indent=2, allow_nan=True) + "\n"
    return {WEIGHTS: data, CONFIG: text.encode(), **(extra or {})}


def save_checkpoint(folder: str | Path, model: nn.Module, record: RunRecord,
                    extra: dict[str, bytes] | None = None) -> Path:  # fmt: skip
    """Write a complete checkpoint folder for ``model`` and ``record`` (``extra``: more files, e.g. post-hoc)."""
    return write_folder(folder, checkpoint_files(record, unwrap(model).state_dict(), extra))


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder, a checkpoint folder or its ``model.json`` -> the checkpoint folder."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"--checkpoint {path}: no such file or folder; expected a run folder (as written by "
                              "clearmamba train --out) or its checkpoint/ folder")
    if path.is_file():
        if path.suffix != ".json":
            refuse_pickle(path)
            raise CheckpointError(f"--checkpoint {path}: expected a run folder or its {CONFIG}, not a weights file")
        return path.parent
    for folder in (path, recover(path / "checkpoint")):
        if (folder / CONFIG).is_file():
            return folder
    pickles = [p.name for p in path.glob("*") if p.suffix.lower() in PICKLE_SUFFIXES]
    if pickles:
        raise CheckpointError(f"{path / pickles[0]}: refusing to load a pickle/torch.save checkpoint (loading it "
                              "could run arbitrary code); clearmamba reads only its own safetensors checkpoints")
    hint = " (training did not finish: resume it with clearmamba train --resume)" if (path / "last").is_dir() else ""
    raise CheckpointError(f"--checkpoint {path}: no clearmamba checkpoint ({CONFIG} + {WEIGHTS}) there{hint}")


def read_config(folder: Path) -> dict:
    path = folder / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{path}: field format is {found!r}; expected {FORMAT!r} (a checkpoint written by this "
                              "version of clearmamba; retrain older runs)")
    for key in ("record", "record_sha256", "weights"):
        if key not in config:
            raise CheckpointError(f"{path}: field {key} is missing; expected a complete checkpoint record")
    return config


def read_checkpoint(path: str | Path) -> tuple[RunRecord, dict[str, torch.Tensor], Path]:
    """The verified record and weights of a checkpoint, and its folder (raises :class:`CheckpointError`)."""
    folder = resolve_checkpoint(path)
    config = read_config(folder)
    if record_sha256_of(config["record"]) != config["record_sha256"]:
        raise CheckpointError(f"{folder / CONFIG}: the record was edited after it was written (its hash no longer "
                              "matches); refusing it. Retrain, or restore the original file.")
    weights_entry = config["weights"]
    if not isinstance(weights_entry, dict) or not weights_entry.get("sha256"):
        raise CheckpointError(f"{folder / CONFIG}: field weights.sha256 is missing; expected the weights' hash")
    weights_path = plain_name(folder, str(weights_entry.get("file", "")), "weights.file")
    weights, metadata = read_tensors(weights_path, weights_entry["sha256"])
    if metadata.get("record_sha256") != config["record_sha256"]:
        raise CheckpointError(f"{weights_path}: these weights were written with another record than {CONFIG}'s; "
                              "the two files come from different runs")
    try:
        record = from_json(RunRecord, config["record"], "record")
    except ConfigError as error:
        raise CheckpointError(f"{folder / CONFIG}: {error}") from None
    return record, weights, folder


def record_sha256_of(record_json: Any) -> str:
    # hash the stored JSON itself (not a re-parsed record): any edit, even one from_json would normalise, counts
    from .record import canonical_json

    return hashlib.sha256(canonical_json(record_json).encode()).hexdigest()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---- optimiser state <-> safetensors ----------------------------------------------------------------------
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
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}
