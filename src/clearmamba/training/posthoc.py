"""RaP's post-hoc step after training: density gate + evidence scaling, fitted once, stored beside the weights.

The evidential model is wrapped as ``ScaledModel(DensityAwareEvidence(model), EvidenceScaler)``
(``clearmamba.uncertainty.fit_density_gate``): evidence shrinks for exams whose features lie far from the
training exams' (so K/S rises on inputs unlike the training data), then one temperature and one scale are
fitted on validation NLL. Still one forward pass. docs/edl-variants.md has the measurements behind it.

The fitted tensors go to ``posthoc.safetensors`` (hash in the checkpoint JSON); ``attach_posthoc`` rebuilds
the wrapper without running any stored code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import CheckpointError, atomic_write_bytes, load_tensors, sha256_bytes, tensors_to_bytes
from .loop import batches, dataset_labels

POSTHOC_FILE = "posthoc.safetensors"
GATE_BUFFERS = ("density.means", "density.whitening", "density.log_priors", "density.log_normaliser", "reference",
                "width")  # fmt: skip
SCALER_PARAMETERS = ("log_temperature", "log_scale")


@torch.no_grad()
def exam_features(model: nn.Module, dataset, batch_size: int = 64) -> Tensor:
    """Penultimate exam vectors ``n d`` (``model.forward_features``) of a whole dataset, in eval mode."""
    model.eval()
    parts = [model.forward_features(b["frames"], b["frame_times"], b["mask"])
             for b in batches(dataset, range(len(dataset)), batch_size)]  # fmt: skip
    return torch.cat(parts)


def fit_posthoc(model: nn.Module, train_set, val_set, batch_size: int = 64) -> tuple[nn.Module, dict[str, Any]]:
    """Fit the density gate on training features and the scaling on validation; returns (wrapped, record)."""
    from clearmamba.uncertainty import ScaledModel, fit_density_gate

    evidence = getattr(getattr(model, "cfg", None), "evidence", "softplus")
    gate, scaler, record = fit_density_gate(
        model,
        exam_features(model, train_set, batch_size),
        dataset_labels(train_set),
        exam_features(model, val_set, batch_size),
        dataset_labels(val_set),
        evidence=evidence,
    )
    by_sharpness = {str(k): v for k, v in record.pop("val_nll_by_sharpness").items()}  # JSON keys are strings
    record = {"kind": "density_gate+evidence_scaling", "evidence": evidence, **record,
              "val_nll_by_sharpness": by_sharpness}  # fmt: skip
    return ScaledModel(gate, scaler).eval(), record


def posthoc_tensors(wrapped: nn.Module) -> dict[str, Tensor]:
    gate, scaler = wrapped.model, wrapped.scaler
    tensors = {f"gate.{name}": gate.get_buffer(name) for name in GATE_BUFFERS}
    tensors.update({f"scaler.{name}": getattr(scaler, name).detach() for name in SCALER_PARAMETERS})
    return {k: v.contiguous().cpu() for k, v in tensors.items()}


def save_posthoc(folder: str | Path, wrapped: nn.Module, record: dict[str, Any]) -> dict[str, Any]:
    """Write ``posthoc.safetensors``; returns the JSON entry (record + file + SHA-256) for the config."""
    data = tensors_to_bytes(posthoc_tensors(wrapped))
    atomic_write_bytes(Path(folder) / POSTHOC_FILE, data)
    return {**record, "file": POSTHOC_FILE, "sha256": sha256_bytes(data)}


def attach_posthoc(model: nn.Module, folder: str | Path, entry: dict[str, Any]) -> nn.Module:
    """Rebuild ``ScaledModel(gate, scaler)`` around a loaded model from its verified post-hoc tensors."""
    from clearmamba.uncertainty import DensityAwareEvidence, EvidenceScaler, ScaledModel

    path = Path(folder) / entry.get("file", POSTHOC_FILE)
    tensors = load_tensors(path, entry.get("sha256"))
    missing = [k for k in [f"gate.{n}" for n in GATE_BUFFERS] + [f"scaler.{n}" for n in SCALER_PARAMETERS]
               if k not in tensors]  # fmt: skip
    if missing:
        raise CheckpointError(f"{path}: tensors {missing} are missing")
    gate = DensityAwareEvidence(model, reference_quantile=0.5, sharpness=float(entry["sharpness"]))
    for name in GATE_BUFFERS:
        owner, _, attr = name.rpartition(".")
        setattr(gate.get_submodule(owner) if owner else gate, attr, tensors[f"gate.{name}"])
    scaler = EvidenceScaler(entry.get("evidence", "softplus"))
    with torch.no_grad():
        for name in SCALER_PARAMETERS:
            getattr(scaler, name).copy_(tensors[f"scaler.{name}"])
    return ScaledModel(gate, scaler).eval()
