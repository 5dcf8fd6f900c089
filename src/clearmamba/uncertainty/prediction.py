"""One prediction container for every method, and the named uncertainty scores computed from it.

Convention, stated once for all of clearmamba: **a higher score means more uncertain**. Confidence-like
quantities become scores by ``1 - x`` or negation (``msp = 1 - max p``, ``max_logit = -max logit``).

A :class:`Prediction` holds the predictive probabilities ``probs [b, k]`` and whatever the method
produced besides: ``logits [b, k]`` (softmax heads), ``evidence [b, k]`` (evidential heads, alpha = e + 1),
``members [m, b, k]`` (MC Dropout samples, ensemble members, SWAG draws), method-specific ``extra``
scores (e.g. a heteroscedastic head's predicted variance), and optionally ``labels`` and ``ids``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor

from clearmamba.uncertainty import dirichlet, sampling


@dataclass
class Prediction:
    probs: Tensor
    logits: Tensor | None = None
    evidence: Tensor | None = None
    members: Tensor | None = None
    labels: Tensor | None = None
    ids: list[str] | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.probs.ndim != 2:
            raise ValueError(f"probs must be [batch, classes], got shape {tuple(self.probs.shape)}")
        batch, classes = self.probs.shape
        for name in ("logits", "evidence"):
            value = getattr(self, name)
            if value is not None and value.shape != self.probs.shape:
                raise ValueError(f"{name} shape {tuple(value.shape)} != probs shape {(batch, classes)}")
        if self.members is not None and self.members.shape[1:] != self.probs.shape:
            raise ValueError(f"members must be [m, {batch}, {classes}], got {tuple(self.members.shape)}")
        if self.labels is not None and self.labels.shape != (batch,):
            raise ValueError(f"labels must be [{batch}], got {tuple(self.labels.shape)}")
        if self.ids is not None and len(self.ids) != batch:
            raise ValueError(f"ids has {len(self.ids)} entries for a batch of {batch}")

    # ---- constructors --------------------------------------------------------------------------
    @classmethod
    def from_logits(cls, logits: Tensor, **kw) -> Prediction:
        return cls(probs=logits.softmax(-1), logits=logits, **kw)

    @classmethod
    def from_evidence(cls, evidence: Tensor, logits: Tensor | None = None, **kw) -> Prediction:
        return cls(probs=dirichlet.expected_probability(evidence + 1), logits=logits, evidence=evidence, **kw)

    @classmethod
    def from_members(cls, member_probs: Tensor, **kw) -> Prediction:
        return cls(probs=sampling.mean_probability(member_probs), members=member_probs, **kw)

    @staticmethod
    def cat(predictions: Sequence[Prediction]) -> Prediction:
        """Concatenate along the batch axis (members along their batch axis, dim 1)."""
        if not predictions:
            raise ValueError("cannot concatenate an empty list of predictions")
        first = predictions[0]

        def joined(name: str, dim: int = 0):
            values = [getattr(p, name) for p in predictions]
            if all(v is None for v in values):
                return None
            if any(v is None for v in values):
                raise ValueError(f"cannot concatenate predictions where only some have {name}")
            return torch.cat(values, dim)

        ids = None if first.ids is None else [i for p in predictions for i in (p.ids or [])]
        extra = {k: torch.cat([p.extra[k] for p in predictions]) for k in first.extra}
        return Prediction(
            probs=joined("probs"),
            logits=joined("logits"),
            evidence=joined("evidence"),
            members=joined("members", 1),
            labels=joined("labels"),
            ids=ids,
            extra=extra,
        )

    # ---- convenience -----------------------------------------------------------------------------
    @property
    def alpha(self) -> Tensor | None:
        return None if self.evidence is None else self.evidence + 1

    @property
    def predicted(self) -> Tensor:
        return self.probs.argmax(-1)

    @property
    def confidence(self) -> Tensor:
        return self.probs.max(-1).values

    @property
    def num_classes(self) -> int:
        return self.probs.shape[-1]

    def __len__(self) -> int:
        return self.probs.shape[0]

    def map_tensors(self, fn: Callable[[Tensor], Tensor]) -> Prediction:
        """Apply ``fn`` to every tensor field (e.g. ``.detach().cpu()``)."""
        changes = {
            f.name: fn(getattr(self, f.name))
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        changes["extra"] = {k: fn(v) for k, v in self.extra.items()}
        return replace(self, **changes)

    def detach(self) -> Prediction:
        return self.map_tensors(lambda t: t.detach())

    def to(self, device) -> Prediction:
        return self.map_tensors(lambda t: t.to(device))

    # ---- uncertainty scores ----------------------------------------------------------------------
    def available_scores(self) -> list[str]:
        return [name for name, (needs, _) in SCORES.items() if needs(self)] + sorted(self.extra)

    def score(self, name: str) -> Tensor:
        """Per-sample uncertainty score ``[b]``; higher means more uncertain."""
        if name in self.extra:
            return self.extra[name]
        if name not in SCORES:
            raise ValueError(f"unknown uncertainty score {name!r}; known: {sorted(SCORES)}")
        needs, compute = SCORES[name]
        if not needs(self):
            raise ValueError(
                f"score {name!r} is not defined for this prediction; available: {self.available_scores()}"
            )
        return compute(self)

    def scores(self) -> dict[str, Tensor]:
        return {name: self.score(name) for name in self.available_scores()}


def _expected_entropy(p: Prediction) -> Tensor:
    if p.evidence is not None:
        return dirichlet.dirichlet_expected_entropy(p.alpha)
    return sampling.expected_entropy(p.members)


def _mutual_info(p: Prediction) -> Tensor:
    return (dirichlet.categorical_entropy(p.probs) - _expected_entropy(p)).clamp_min(0.0)


def _has(*names: str) -> Callable[[Prediction], bool]:
    return lambda p: any(getattr(p, n) is not None for n in names)


def _always(p: Prediction) -> bool:
    return True


# name -> (is it defined for this prediction?, how to compute it); all "higher = more uncertain"
SCORES: dict[str, tuple[Callable[[Prediction], bool], Callable[[Prediction], Tensor]]] = {
    # 1 - max_k p_k (maximum softmax / expected probability)
    "msp": (_always, lambda p: 1.0 - p.confidence),
    # H[p], total predictive entropy
    "entropy": (_always, lambda p: dirichlet.categorical_entropy(p.probs)),
    # aleatoric part: E[H(p)] over the Dirichlet or over members
    "expected_entropy": (_has("evidence", "members"), _expected_entropy),
    # epistemic part: H[p] - E[H(p)]
    "mutual_info": (_has("evidence", "members"), _mutual_info),
    # K / S, the evidential uncertainty mass
    "vacuity": (_has("evidence"), lambda p: dirichlet.vacuity(p.alpha)),
    # -max_k logit_k
    "max_logit": (_has("logits"), lambda p: -p.logits.max(-1).values),
    # -logsumexp(logits): the free energy, low for in-distribution inputs
    "energy": (_has("logits"), lambda p: -torch.logsumexp(p.logits, -1)),
    # 1 - modal votes / M
    "variation_ratio": (_has("members"), lambda p: sampling.variation_ratio(p.members)),
    # fraction of members disagreeing with the mean prediction
    "disagreement": (_has("members"), lambda p: sampling.disagreement(p.members)),
}
