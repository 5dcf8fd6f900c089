"""Evidence activations: map a head's raw outputs to non-negative evidence e >= 0.

The Dirichlet built on it has alpha = e + 1 (see :mod:`clearmamba.uncertainty.dirichlet`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# exp evidence overflows float32 near logit 88; clamping keeps the loss finite and matches the
# official EDL notebook, which clips before exponentiating.
EXP_CLAMP = 10.0


def softplus_evidence(logits: Tensor) -> Tensor:
    # e = log(1 + exp(x)); smooth and never exactly zero, so every class keeps a gradient
    return F.softplus(logits)


def relu_evidence(logits: Tensor) -> Tensor:
    # e = max(0, x); the original EDL paper's choice
    return F.relu(logits)


def exp_evidence(logits: Tensor) -> Tensor:
    # e = exp(clamp(x, -10, 10))
    return torch.exp(logits.clamp(-EXP_CLAMP, EXP_CLAMP))


EVIDENCE_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "softplus": softplus_evidence,
    "relu": relu_evidence,
    "exp": exp_evidence,
}


def get_evidence_fn(name: str) -> Callable[[Tensor], Tensor]:
    """Return the evidence activation called ``name`` (softplus, relu or exp)."""
    try:
        return EVIDENCE_FUNCTIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown evidence activation {name!r}; expected one of {sorted(EVIDENCE_FUNCTIONS)}"
        ) from None
