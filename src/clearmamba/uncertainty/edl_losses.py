"""Evidential deep learning losses (Sensoy et al. 2018), as batch means.

Notation: evidence e >= 0 ``[b, k]``, alpha = e + 1, S = sum_k alpha_k, p = alpha / S, one-hot target y.
The CLEAR-Mamba paper's RaP trains with loss + lambda_t * KL(Dir(alpha~) || Dir(1)), lambda = 0.005 annealed, target
evidence removed. clearmamba's default is lambda = 0.05, fixed, on the whole alpha: it was the best of the settings
measured in docs/edl-variants.md (the paper's was the weakest).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from clearmamba.uncertainty.schedules import Constant


def _one_hot(target: Tensor, evidence: Tensor) -> Tensor:
    if target.ndim == evidence.ndim:  # already one-hot / soft targets
        if target.shape != evidence.shape:
            raise ValueError(f"target shape {tuple(target.shape)} != evidence shape {tuple(evidence.shape)}")
        return target.to(evidence.dtype)
    if target.ndim != 1 or target.shape[0] != evidence.shape[0]:
        raise ValueError(
            f"target must be int labels [batch] or one-hot [batch, classes]; got {tuple(target.shape)} "
            f"for evidence {tuple(evidence.shape)}"
        )
    k = evidence.shape[-1]
    if bool(((target < 0) | (target >= k)).any()):
        raise ValueError(f"target labels must lie in [0, {k - 1}], got {target.tolist()}")
    return torch.nn.functional.one_hot(target.long(), k).to(evidence.dtype)


def max_likelihood_loss(alpha: Tensor, y: Tensor) -> Tensor:
    # sum_k y_k (log S - log alpha_k)   (Type-II maximum likelihood, -log E[p_y])
    total = alpha.sum(-1, keepdim=True)
    return (y * (total.log() - alpha.log())).sum(-1)


def cross_entropy_bayes_risk(alpha: Tensor, y: Tensor) -> Tensor:
    # sum_k y_k (digamma(S) - digamma(alpha_k))   (E_Dir[-log p_y])
    total = alpha.sum(-1, keepdim=True)
    return (y * (torch.digamma(total) - torch.digamma(alpha))).sum(-1)


def squared_error_bayes_risk(alpha: Tensor, y: Tensor) -> Tensor:
    # sum_k (y_k - p_k)^2 + p_k (1 - p_k) / (S + 1)   (E_Dir ||y - p||^2)
    total = alpha.sum(-1, keepdim=True)
    p = alpha / total
    return ((y - p) ** 2 + p * (1 - p) / (total + 1)).sum(-1)


def kl_to_uniform_dirichlet(alpha: Tensor) -> Tensor:
    # KL(Dir(a) || Dir(1)) = lgamma(S) - lgamma(K) - sum lgamma(a_k) + sum (a_k - 1)(digamma(a_k) - digamma(S))
    k = alpha.shape[-1]
    total = alpha.sum(-1)
    first = torch.lgamma(total) - math.lgamma(k) - torch.lgamma(alpha).sum(-1)
    second = ((alpha - 1) * (torch.digamma(alpha) - torch.digamma(total).unsqueeze(-1))).sum(-1)
    return first + second


def remove_target_evidence(alpha: Tensor, y: Tensor) -> Tensor:
    # alpha~ = y + (1 - y) alpha: the target class is set to 1 so only misleading evidence is penalised
    return y + (1 - y) * alpha


EDL_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mll": max_likelihood_loss,
    "ce": cross_entropy_bayes_risk,
    "sse": squared_error_bayes_risk,
}


def _loss_fn(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    try:
        return EDL_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown evidential loss {name!r}; expected one of {sorted(EDL_LOSSES)}") from None


def edl_loss(evidence: Tensor, target: Tensor, loss: str = "mll") -> Tensor:
    """Batch-mean evidential data loss: ``mll`` (Type-II ML), ``ce`` or ``sse`` (Bayes risks).

    ``evidence [b, k] >= 0``; ``target`` int labels ``[b]`` (or one-hot ``[b, k]``).
    """
    y = _one_hot(target, evidence)
    return _loss_fn(loss)(evidence + 1, y).mean()


def edl_kl(evidence: Tensor, target: Tensor, remove_target: bool = True) -> Tensor:
    """Batch-mean KL(Dir(alpha~) || Dir(1)); with ``remove_target`` the target evidence is removed first."""
    y = _one_hot(target, evidence)
    alpha = evidence + 1
    if remove_target:
        alpha = remove_target_evidence(alpha, y)
    return kl_to_uniform_dirichlet(alpha).mean()


class EvidentialLoss(nn.Module):
    """loss + lambda_t * KL, with lambda_t = ``kl_weight * annealing(epoch)``.

    Defaults: max-likelihood loss, lambda = 0.05 at every epoch, target evidence kept (docs/edl-variants.md);
    the paper's RaP is ``kl_weight=0.005, annealing=EpochLinear(10), remove_target=True``, labml's is
    ``kl_weight=1, annealing=PiecewiseLinear(...)``. Accepts evidence or a :class:`Prediction` with evidence.
    """

    def __init__(
        self,
        loss: str = "mll",
        kl_weight: float = 0.05,
        annealing: Callable[[float], float] | None = None,
        remove_target: bool = False,
    ) -> None:
        super().__init__()
        _loss_fn(loss)
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
        self.loss = loss
        self.kl_weight = kl_weight
        self.annealing = annealing if annealing is not None else Constant(1.0)
        self.remove_target = remove_target

    def kl_coefficient(self, epoch: float | None) -> float:
        # lambda_t = lambda * schedule(t); without a training clock the schedule's end value (1) applies
        return self.kl_weight * (1.0 if epoch is None else self.annealing(epoch))

    def forward(self, evidence, target: Tensor, epoch: float | None = None) -> Tensor:
        evidence = getattr(evidence, "evidence", evidence)
        if evidence is None:
            raise ValueError("EvidentialLoss needs evidence: use it with an evidential (RaP) head")
        data = edl_loss(evidence, target, self.loss)
        coefficient = self.kl_coefficient(epoch)
        if coefficient == 0:
            return data
        return data + coefficient * edl_kl(evidence, target, self.remove_target)


class SoftmaxCrossEntropy(nn.Module):
    """Cross-entropy on logits, with the same call signature as :class:`EvidentialLoss`."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits, target: Tensor, epoch: float | None = None) -> Tensor:
        logits = getattr(logits, "logits", logits)
        return nn.functional.cross_entropy(logits, target, label_smoothing=self.label_smoothing)


class PublicEvidentialLoss(nn.Module):
    """The public CLEAR-Mamba code's RaP loss, on the full alpha (no target evidence removed):

        loss = mean_b [ sum_k y_k (digamma(S) - digamma(alpha_k)) + lambda KL(Dir(alpha) || Dir(1)) ]

    ``lambda`` is ``kl_weight`` fixed, or with ``adaptive`` updated before each training batch from the batch
    means NLL_t and KL_t (detached; ``ema`` = 0.9, ``scale`` c = 1.2):

        m_nll <- ema m_nll + (1 - ema) NLL_t        m_kl <- ema m_kl + (1 - ema) max(KL_t, 1e-8)
        lambda <- ema lambda + (1 - ema) clip(c m_nll / (m_kl + 1e-8), kl_min, kl_max)

    with the averages started at the first batch's values and ``lambda`` at ``kl_weight``. The state is kept
    in buffers, so it travels with ``state_dict``; evaluation mode (``.eval()``) does not update it. The
    public code's KL leaves out the constant -ln Gamma(K): no effect on gradients, but it enters the
    adaptive ratio; ``kl_without_log_gamma_k=True`` reproduces that.
    """

    def __init__(
        self,
        kl_weight: float = 5e-3,
        adaptive: bool = False,
        scale: float = 1.2,
        ema: float = 0.9,
        kl_min: float = 1e-6,
        kl_max: float = 2e-2,
        kl_without_log_gamma_k: bool = False,
    ) -> None:
        super().__init__()
        if kl_weight < 0 or scale <= 0 or not 0 <= ema < 1 or not 0 <= kl_min <= kl_max:
            raise ValueError(
                f"PublicEvidentialLoss: need kl_weight >= 0, scale > 0, 0 <= ema < 1, 0 <= kl_min <= kl_max; got "
                f"{kl_weight}, {scale}, {ema}, {kl_min}, {kl_max}"
            )
        self.adaptive, self.scale, self.ema = adaptive, scale, ema
        self.kl_min, self.kl_max = kl_min, kl_max
        self.kl_without_log_gamma_k = kl_without_log_gamma_k
        self.register_buffer("kl_coefficient", torch.tensor(float(kl_weight), dtype=torch.float64))
        self.register_buffer("nll_average", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("kl_average", torch.tensor(float("nan"), dtype=torch.float64))
        self.last_nll = self.last_kl = float("nan")

    def kl(self, alpha: Tensor) -> Tensor:
        kl = kl_to_uniform_dirichlet(alpha)
        return kl + math.lgamma(alpha.shape[-1]) if self.kl_without_log_gamma_k else kl

    def update(self, nll: float, kl: float) -> float:
        """One adaptive step from a batch's mean NLL and KL; returns the new lambda."""
        kl = max(kl, 1e-8)
        if torch.isnan(self.nll_average):
            self.nll_average.fill_(nll)
            self.kl_average.fill_(kl)
        b = self.ema
        self.nll_average.mul_(b).add_((1 - b) * nll)
        self.kl_average.mul_(b).add_((1 - b) * kl)
        ratio = self.scale * float(self.nll_average) / (float(self.kl_average) + 1e-8)
        target = min(max(ratio, self.kl_min), self.kl_max)
        self.kl_coefficient.mul_(b).add_((1 - b) * target)
        return float(self.kl_coefficient)

    def forward(self, evidence, target: Tensor, epoch: float | None = None) -> Tensor:
        evidence = getattr(evidence, "evidence", evidence)
        if evidence is None:
            raise ValueError("PublicEvidentialLoss needs evidence: use it with an evidential (RaP) head")
        y = _one_hot(target, evidence)
        alpha = evidence + 1
        nll, kl = cross_entropy_bayes_risk(alpha, y), self.kl(alpha)
        self.last_nll, self.last_kl = float(nll.mean().detach()), float(kl.mean().detach())
        if self.adaptive and self.training:
            self.update(self.last_nll, self.last_kl)
        return (nll + float(self.kl_coefficient) * kl).mean()
