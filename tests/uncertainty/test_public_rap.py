"""The public CLEAR-Mamba code's RaP: the fused three-branch head and its loss (digamma NLL, KL on the full
alpha, fixed or adaptive lambda)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.special import digamma
from torch import nn
from torch.distributions import Dirichlet, kl_divergence

from clearmamba.uncertainty.edl_losses import PublicEvidentialLoss
from clearmamba.uncertainty.heads import BranchFusion, FusedRaPHead, FusedSoftmaxHead
from tests.helpers import randomise

EVIDENCE = torch.tensor([[3.0, 0.5, 0.1], [0.2, 0.4, 6.0], [1.0, 1.0, 1.0], [0.0, 9.0, 0.3]], dtype=torch.float64)
TARGET = torch.tensor([0, 1, 2, 1])


def test_digamma_nll_is_the_expected_negative_log_likelihood_under_the_dirichlet():
    loss = PublicEvidentialLoss(kl_weight=0.0)
    alpha = EVIDENCE + 1
    # closed form with scipy: psi(S) - psi(alpha_y)
    closed = [digamma(a.sum().item()) - digamma(a[y].item()) for a, y in zip(alpha, TARGET)]
    assert loss(EVIDENCE, TARGET).item() == pytest.approx(sum(closed) / 4, rel=1e-10)
    # and by sampling: E_{p ~ Dir(alpha)} [-log p_y]
    torch.manual_seed(0)
    samples = Dirichlet(alpha).sample((200_000,))  # n b k
    monte_carlo = -samples[:, torch.arange(4), TARGET].log().mean(0)
    torch.testing.assert_close(monte_carlo, torch.tensor(closed, dtype=torch.float64), rtol=1e-2, atol=1e-2)


def test_kl_is_on_the_full_alpha_and_the_public_constant_is_optional():
    alpha = EVIDENCE + 1
    expected = kl_divergence(Dirichlet(alpha), Dirichlet(torch.ones_like(alpha)))
    torch.testing.assert_close(PublicEvidentialLoss().kl(alpha), expected)
    public = PublicEvidentialLoss(kl_without_log_gamma_k=True).kl(alpha)
    torch.testing.assert_close(public, expected + math.lgamma(3))
    nll = torch.digamma(alpha.sum(-1)) - torch.digamma(alpha[torch.arange(4), TARGET])
    fixed = PublicEvidentialLoss(kl_weight=5e-3)
    assert fixed(EVIDENCE, TARGET).item() == pytest.approx((nll + 5e-3 * expected).mean().item(), rel=1e-12)
    assert float(fixed.kl_coefficient) == 5e-3  # fixed: never moves


def hand_step(state: dict, nll: float, kl: float, c=1.2, b=0.9, lo=1e-6, hi=2e-2) -> float:
    # the rule, written out: averages start at the first batch, then EMA; lambda is an EMA of the clipped ratio
    kl = max(kl, 1e-8)
    if state.get("nll") is None:
        state["nll"], state["kl"] = nll, kl
    state["nll"] = b * state["nll"] + (1 - b) * nll
    state["kl"] = b * state["kl"] + (1 - b) * kl
    state["lam"] = b * state["lam"] + (1 - b) * min(max(c * state["nll"] / (state["kl"] + 1e-8), lo), hi)
    return state["lam"]


def batch_terms(evidence, target):
    alpha = evidence + 1
    nll = (torch.digamma(alpha.sum(-1)) - torch.digamma(alpha[torch.arange(len(target)), target])).mean().item()
    kl = kl_divergence(Dirichlet(alpha), Dirichlet(torch.ones_like(alpha))).mean().item()
    return nll, kl


def test_adaptive_lambda_follows_the_hand_computation_in_all_three_regimes():
    loss, state = PublicEvidentialLoss(kl_weight=5e-3, adaptive=True), {"lam": 5e-3}
    # (NLL, KL) batch means: the averaged ratio c m_nll / m_kl starts above kl_max, then the NLL vanishes
    # and the ratio passes through the range and below kl_min
    steps = [(1.0, 2.0), (0.3, 5.0)] + [(0.0, 80.0)] * 400
    ratios, lams = [], []
    for nll, kl in steps:
        expected = hand_step(state, nll, kl)
        ratios.append(1.2 * state["nll"] / (state["kl"] + 1e-8))
        lams.append(loss.update(nll, kl))
        assert lams[-1] == pytest.approx(expected, rel=1e-12)
    assert ratios[0] > 2e-2 and any(1e-6 < r < 2e-2 for r in ratios) and ratios[-1] < 1e-6
    assert max(lams) <= 2e-2 and lams[-1] == pytest.approx(1e-6, rel=1e-6)


def test_adaptive_lambda_updates_before_each_training_batch_and_not_in_evaluation():
    loss, state = PublicEvidentialLoss(kl_weight=5e-3, adaptive=True), {"lam": 5e-3}
    for evidence in (EVIDENCE, EVIDENCE * 40, torch.full((4, 3), 1e-4, dtype=torch.float64)):
        nll, kl = batch_terms(evidence, TARGET)
        lam = hand_step(state, nll, kl)
        value = loss(evidence, TARGET)
        assert float(loss.kl_coefficient) == pytest.approx(lam, rel=1e-12)
        assert value.item() == pytest.approx(nll + lam * kl, rel=1e-9)  # the batch uses the updated lambda
        assert (loss.last_nll, loss.last_kl) == pytest.approx((nll, kl))
    loss.eval()
    loss(EVIDENCE, TARGET)
    assert float(loss.kl_coefficient) == pytest.approx(lam, rel=1e-12)
    restored = PublicEvidentialLoss(adaptive=True)
    restored.load_state_dict(loss.state_dict())  # the state travels with state_dict
    assert float(restored.kl_coefficient) == float(loss.kl_coefficient)
    assert float(restored.nll_average) == pytest.approx(state["nll"])


def test_the_adaptive_lambda_is_not_differentiated():
    logits = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    loss = PublicEvidentialLoss(adaptive=True)
    value = loss(nn.functional.softplus(logits), TARGET)
    value.backward()
    lam = float(loss.kl_coefficient)
    reference = logits.detach().clone().requires_grad_(True)
    alpha = nn.functional.softplus(reference) + 1
    nll = torch.digamma(alpha.sum(-1)) - torch.digamma(alpha[torch.arange(4), TARGET])
    (nll + lam * kl_divergence(Dirichlet(alpha), Dirichlet(torch.ones_like(alpha)))).mean().backward()
    torch.testing.assert_close(logits.grad, reference.grad)
    with pytest.raises(ValueError, match="evidence"):
        PublicEvidentialLoss()(type("P", (), {"evidence": None})(), TARGET)


def test_fused_heads_average_the_branch_projections():
    fusion = randomise(BranchFusion((4, 6, 6), proj_dim=5), seed=3)
    x = torch.randn(3, 16)
    parts = x.split([4, 6, 6], -1)
    manual = torch.stack(
        [p[2](torch.relu(p[0](r))) for p, r in zip(fusion.projections, parts)]
    ).mean(0)  # (1/3) sum psi_i(ReLU(phi_i R_i))
    torch.testing.assert_close(fusion(x), manual)
    head = FusedRaPHead((4, 6, 6), num_classes=3, proj_dim=5)
    prediction = head(x)
    logits = head.fc(head.fusion(x))
    torch.testing.assert_close(prediction.evidence, nn.functional.softplus(logits))
    torch.testing.assert_close(prediction.probs, (prediction.evidence + 1) / (prediction.evidence + 1).sum(-1, True))
    softmax = FusedSoftmaxHead((4, 6, 6), num_classes=3, proj_dim=5)
    torch.testing.assert_close(softmax(x).probs, softmax.fc(softmax.fusion(x)).softmax(-1))
    with pytest.raises(ValueError, match="branches"):
        head(torch.randn(3, 15))


