"""Evidential losses beyond Sensoy et al. (2018): R-EDL (Chen et al., ICLR 2024) and I-EDL (Deng et al., ICML 2023).

Notation as in :mod:`clearmamba.uncertainty.edl_losses`: evidence e >= 0 ``[b, k]``, one-hot target y.

- **R-EDL** relaxes two settings of EDL. The prior weight lambda replaces the number of classes:
  alpha = e + lambda, S = sum_k e_k + K lambda, p = alpha / S, vacuity K lambda / S. And the squared-error
  Bayes risk loses its variance term, which only pushes evidence up: loss = sum_k (y_k - p_k)^2.
  Its KL pulls the non-target evidence towards the prior: KL(Dir(e (1 - y) + lambda) || Dir(lambda)).
  Because (e + lambda) / (sum e + K lambda) = (e / lambda + 1) / (sum e / lambda + K), a head that returns the
  evidence **in units of the prior weight**, e' = e / lambda (``RaPHead(prior_weight=lambda)``), gives the
  ordinary alpha' = e' + 1 = alpha / lambda, the same p and the same vacuity; every function here takes e'.
- **I-EDL** weights the squared error of each class by the Fisher information of the Dirichlet, psi1(alpha_k),
  and adds -log det I(alpha) (weight ``fisher_weight``) and the usual KL(Dir(alpha~) || Dir(1)):
  loss = sum_k psi1(alpha_k) [(y_k - p_k)^2 + p_k (1 - p_k) / (S + 1)] - c log det I(alpha) + lambda_t KL,
  with I(alpha) = diag(psi1(alpha)) - psi1(S) 1 1^T, so log det I = sum_k log psi1(alpha_k)
  + log(1 - psi1(S) sum_k 1 / psi1(alpha_k)).

The formulas follow the authors' public code (MengyuanChen21/ICLR2024-REDL, ``ModifiedEvidentialN.py``;
danruod/IEDL, ``FisherEvidentialN.py``), rewritten here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from clearmamba.uncertainty.edl_losses import EvidentialLoss, _one_hot, remove_target_evidence
from clearmamba.uncertainty.schedules import Constant, EpochLinear


def kl_to_symmetric_dirichlet(alpha: Tensor, concentration: float = 1.0) -> Tensor:
    # KL(Dir(a) || Dir(c 1)) = lgamma(S) - lgamma(K c) - sum lgamma(a_k) + K lgamma(c)
    #                          + sum (a_k - c)(digamma(a_k) - digamma(S))
    k = alpha.shape[-1]
    total = alpha.sum(-1)
    c = torch.as_tensor(concentration, dtype=alpha.dtype)
    first = torch.lgamma(total) - torch.lgamma(k * c) - torch.lgamma(alpha).sum(-1) + k * torch.lgamma(c)
    second = ((alpha - c) * (torch.digamma(alpha) - torch.digamma(total).unsqueeze(-1))).sum(-1)
    return first + second


def squared_error(alpha: Tensor, y: Tensor) -> Tensor:
    # sum_k (y_k - p_k)^2 with p = alpha / S: the SE Bayes risk without its variance term (R-EDL)
    p = alpha / alpha.sum(-1, keepdim=True)
    return ((y - p) ** 2).sum(-1)


def fisher_weighted_squared_error(alpha: Tensor, y: Tensor) -> Tensor:
    # sum_k psi1(alpha_k) [(y_k - p_k)^2 + p_k (1 - p_k) / (S + 1)]   (I-EDL's data term)
    total = alpha.sum(-1, keepdim=True)
    p = alpha / total
    fisher = torch.polygamma(1, alpha)
    return (fisher * ((y - p) ** 2 + p * (1 - p) / (total + 1))).sum(-1)


def dirichlet_fisher_logdet(alpha: Tensor) -> Tensor:
    # log det [diag(psi1(a)) - psi1(S) 1 1^T] = sum log psi1(a_k) + log(1 - psi1(S) sum 1 / psi1(a_k))
    fisher = torch.polygamma(1, alpha)
    fisher_total = torch.polygamma(1, alpha.sum(-1))
    return fisher.log().sum(-1) + torch.log1p(-fisher_total * (1 / fisher).sum(-1))


def _evidence_of(prediction) -> Tensor:
    evidence = getattr(prediction, "evidence", prediction)
    if evidence is None:
        raise ValueError("an evidential loss needs evidence: use it with an evidential (RaP) head")
    return evidence


class RelaxedEvidentialLoss(nn.Module):
    """R-EDL: sum_k (y_k - p_k)^2 + lambda_t KL(Dir(lambda alpha~') || Dir(lambda)), on prior-unit evidence e'.

    ``prior_weight`` is lambda (R-EDL's MNIST setting: 0.1); pair it with ``RaPHead(prior_weight=lambda)``.
    The authors anneal the KL as min(1, epoch / 10) (``EpochLinear(10)``, the default here).
    """

    def __init__(
        self,
        prior_weight: float = 0.1,
        kl_weight: float = 1.0,
        annealing: Callable[[float], float] | None = None,
        remove_target: bool = True,
    ) -> None:
        super().__init__()
        if prior_weight <= 0 or kl_weight < 0:
            raise ValueError(f"prior_weight must be > 0 and kl_weight >= 0, got {prior_weight}, {kl_weight}")
        self.prior_weight = prior_weight
        self.kl_weight = kl_weight
        self.annealing = annealing if annealing is not None else EpochLinear(10.0)
        self.remove_target = remove_target

    def forward(self, prediction, target: Tensor, epoch: float | None = None) -> Tensor:
        evidence = _evidence_of(prediction)
        y = _one_hot(target, evidence)
        alpha_units = evidence + 1  # alpha / lambda
        data = squared_error(alpha_units, y).mean()
        coefficient = self.kl_weight * (1.0 if epoch is None else self.annealing(epoch))
        if coefficient == 0:
            return data
        kept = remove_target_evidence(alpha_units, y) if self.remove_target else alpha_units
        # back to the real concentrations: alpha~ = lambda (e' (1 - y) + 1) = e (1 - y) + lambda
        kl = kl_to_symmetric_dirichlet(self.prior_weight * kept, self.prior_weight).mean()
        return data + coefficient * kl


class FisherEvidentialLoss(nn.Module):
    """I-EDL: Fisher-weighted squared error - c log det I(alpha) + lambda_t KL(Dir(alpha~) || Dir(1)).

    ``fisher_weight`` is c (I-EDL's MNIST setting: 0.005); the KL is annealed as min(1, epoch / 10).
    """

    def __init__(
        self,
        fisher_weight: float = 0.005,
        kl_weight: float = 1.0,
        annealing: Callable[[float], float] | None = None,
        remove_target: bool = True,
    ) -> None:
        super().__init__()
        if fisher_weight < 0 or kl_weight < 0:
            raise ValueError(f"fisher_weight and kl_weight must be >= 0, got {fisher_weight}, {kl_weight}")
        self.fisher_weight = fisher_weight
        self.kl_weight = kl_weight
        self.annealing = annealing if annealing is not None else EpochLinear(10.0)
        self.remove_target = remove_target

    def forward(self, prediction, target: Tensor, epoch: float | None = None) -> Tensor:
        evidence = _evidence_of(prediction)
        y = _one_hot(target, evidence)
        alpha = evidence + 1
        loss = fisher_weighted_squared_error(alpha, y) - self.fisher_weight * dirichlet_fisher_logdet(alpha)
        coefficient = self.kl_weight * (1.0 if epoch is None else self.annealing(epoch))
        if coefficient != 0:
            kept = remove_target_evidence(alpha, y) if self.remove_target else alpha
            loss = loss + coefficient * kl_to_symmetric_dirichlet(kept, 1.0)
        return loss.mean()


EVIDENTIAL_OBJECTIVES = ("edl", "redl", "iedl", "public")


def create_evidential_loss(name: str = "edl", **options) -> nn.Module:
    """An evidential training loss by name: ``edl`` (:class:`EvidentialLoss`; options ``loss``,
    ``kl_weight``, ``annealing``, ``remove_target``), ``redl`` (:class:`RelaxedEvidentialLoss`) or ``iedl``
    (:class:`FisherEvidentialLoss`) or ``public`` (the public CLEAR-Mamba code's
    :class:`~clearmamba.uncertainty.edl_losses.PublicEvidentialLoss`: digamma NLL + lambda KL on the full alpha,
    ``adaptive`` lambda). A ``kl_anneal_epochs`` option <= 0 means a constant KL weight."""
    from clearmamba.uncertainty.edl_losses import PublicEvidentialLoss

    anneal = options.pop("kl_anneal_epochs", None)
    if anneal is not None:
        options["annealing"] = EpochLinear(anneal) if anneal > 0 else Constant(1.0)
    table = {"edl": EvidentialLoss, "redl": RelaxedEvidentialLoss, "iedl": FisherEvidentialLoss,
             "public": PublicEvidentialLoss}  # fmt: skip
    if name not in table:
        raise ValueError(f"unknown evidential objective {name!r}; expected one of {list(table)}")
    try:
        return table[name](**options)
    except TypeError as error:
        raise ValueError(f"bad options for evidential objective {name!r}: {error}") from None
