"""RaP's post-hoc step after training: density gate + evidence scaling, fitted once, stored beside the weights.

The evidential model is wrapped as ``ScaledModel(DensityAwareEvidence(model), EvidenceScaler)``
(``clearmamba.uncertainty.fit_density_gate``): evidence shrinks for exams whose features lie far from the
training exams' (so K/S rises on inputs unlike the training data), then one temperature and one scale are
fitted on validation NLL. Still one forward pass. docs/edl-variants.md has the measurements behind it.

The fitted tensors go to ``posthoc.safetensors`` (hash in the run record); ``attach_posthoc`` rebuilds the
wrapper from them without running any stored code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .checkpoint import CheckpointError, load_tensors, plain_name, sha256_bytes, tensors_to_bytes
from .data import as_tensor_set
from .record import PosthocEntry

POSTHOC_FILE = "posthoc.safetensors"
KIND = "density_gate+evidence_scaling"
GATE_BUFFERS = ("density.means", "density.whitening", "density.log_priors", "density.log_normaliser", "reference",
                "width")  # fmt: skip
SCALER_PARAMETERS = ("log_temperature", "log_scale")


@torch.no_grad()
def features(model: nn.Module, data, batch_size: int = 64) -> Tensor:
    """Penultimate vectors ``n d`` (``model.forward_features``) of a whole data set, in eval mode."""
    data = as_tensor_set(data)
    model.eval()
    parts = [model.forward_features(*(x[i : i + batch_size] for x in data.inputs)) for i in range(0, len(data),
                                                                                                  batch_size)]
    return torch.cat(parts)


def fit_posthoc(model: nn.Module, train_set, val_set, evidence: str,
                batch_size: int = 64) -> tuple[nn.Module, PosthocEntry, bytes]:  # fmt: skip
    """Fit the density gate on training features and the scaling on validation.

    Returns the wrapped model, its record entry and the bytes of ``posthoc.safetensors``."""
    from clearmamba.uncertainty import ScaledModel, fit_density_gate

    train, val = as_tensor_set(train_set), as_tensor_set(val_set)
    gate, scaler, fitted = fit_density_gate(model, features(model, train, batch_size), train.labels,
                                            features(model, val, batch_size), val.labels, evidence=evidence)
    wrapped = ScaledModel(gate, scaler).eval()
    data = tensors_to_bytes(posthoc_tensors(wrapped))
    sharpness = float(fitted.pop("sharpness"))
    fitted["val_nll_by_sharpness"] = {str(k): v for k, v in fitted["val_nll_by_sharpness"].items()}
    entry = PosthocEntry(KIND, POSTHOC_FILE, sha256_bytes(data), evidence, sharpness, fitted)
    return wrapped, entry, data


def posthoc_tensors(wrapped: nn.Module) -> dict[str, Tensor]:
    gate, scaler = wrapped.model, wrapped.scaler
    tensors = {f"gate.{name}": gate.get_buffer(name) for name in GATE_BUFFERS}
    tensors.update({f"scaler.{name}": getattr(scaler, name).detach() for name in SCALER_PARAMETERS})
    return {k: v.contiguous().cpu() for k, v in tensors.items()}


def attach_posthoc(model: nn.Module, folder: str | Path, entry: PosthocEntry) -> nn.Module:
    """Rebuild ``ScaledModel(gate, scaler)`` around a loaded model from its verified post-hoc tensors."""
    from clearmamba.uncertainty import DensityAwareEvidence, EvidenceScaler, ScaledModel

    if entry.kind != KIND:
        raise CheckpointError(f"{folder}: record.posthoc.kind is {entry.kind!r}; expected {KIND!r}")
    path = plain_name(Path(folder), entry.file, "record.posthoc.file")
    tensors = load_tensors(path, entry.sha256)
    missing = [k for k in [f"gate.{n}" for n in GATE_BUFFERS] + [f"scaler.{n}" for n in SCALER_PARAMETERS]
               if k not in tensors]  # fmt: skip
    if missing:
        raise CheckpointError(f"{path}: tensors {missing} are missing")
    gate = DensityAwareEvidence(model, reference_quantile=0.5, sharpness=entry.sharpness)
    for name in GATE_BUFFERS:
        owner, _, attr = name.rpartition(".")
        setattr(gate.get_submodule(owner) if owner else gate, attr, tensors[f"gate.{name}"])
    scaler = EvidenceScaler(entry.evidence)
    with torch.no_grad():
        for name in SCALER_PARAMETERS:
            getattr(scaler, name).copy_(tensors[f"scaler.{name}"])
    return ScaledModel(gate, scaler).eval()
