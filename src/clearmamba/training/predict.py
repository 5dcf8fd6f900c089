"""The one batching ``predict``: a model over a whole data set, in eval mode, without gradients.

``Method.predict`` scores one batch; this walks a data set (ExamSet, TensorSet, ``(inputs, labels)`` or a
tensor) in batches and attaches ``labels`` and ``ids`` to the concatenated :class:`Prediction`.
"""

from __future__ import annotations

import torch
from torch import nn

from clearmamba.uncertainty import Prediction
from clearmamba.uncertainty.outputs import as_prediction

from .data import as_tensor_set


@torch.no_grad()
def predict(model: nn.Module, data, batch_size: int = 64, device: str | torch.device = "cpu") -> Prediction:
    """Predictions for every item of ``data`` (on CPU), with ``labels`` and ``ids`` attached."""
    data = as_tensor_set(data)
    if isinstance(model, nn.Module):
        model.eval()
    device = torch.device(device)
    parts = []
    for start in range(0, len(data), batch_size):
        inputs = tuple(x[start : start + batch_size].to(device) for x in data.inputs)
        parts.append(as_prediction(model(*inputs)).detach().to("cpu"))
    prediction = Prediction.cat(parts)
    prediction.labels = data.labels if data.labelled else None
    prediction.ids = list(data.ids) if data.ids is not None else None
    return prediction
