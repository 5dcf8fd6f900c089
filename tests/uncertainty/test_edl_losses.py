import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Dirichlet, kl_divergence

from clearmamba.uncertainty import EvidentialLoss, PiecewiseLinear, edl_kl, edl_loss, get_evidence_fn
from clearmamba.uncertainty.dirichlet import dirichlet_uncertainty

LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, -3.0], [5.0, 5.0, 5.0]])
TARGET = torch.tensor([0, 2, 1])


def test_softplus_reference_values():
    # independently derived in numpy/scipy and checked by Monte-Carlo (shared/research/UQ_ANCHORS.md 2.6)
    e = get_evidence_fn("softplus")(LOGITS)
    assert edl_loss(e, TARGET, "mll").item() == pytest.approx(1.097922, abs=1e-5)
    assert edl_loss(e, TARGET, "ce").item() == pytest.approx(1.291430, abs=1e-5)
    assert edl_loss(e, TARGET, "sse").item() == pytest.approx(0.731603, abs=1e-5)
    assert edl_kl(e, TARGET).item() == pytest.approx(0.656301, abs=1e-5)
    assert dirichlet_uncertainty(e + 1)["vacuity"].mean().item() == pytest.approx(0.429208, abs=1e-5)


def test_relu_reference_values():
    e = get_evidence_fn("relu")(LOGITS)
    assert edl_loss(e, TARGET, "mll").item() == pytest.approx(0.966224, abs=1e-5)
    assert edl_loss(e, TARGET, "ce").item() == pytest.approx(1.152189, abs=1e-5)
    assert edl_loss(e, TARGET, "sse").item() == pytest.approx(0.663690, abs=1e-5)
    assert edl_kl(e, TARGET).item() == pytest.approx(0.544718, abs=1e-5)


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    evidence = torch.rand(16, 5, dtype=torch.float64) * 4
    target = torch.randint(0, 5, (16,))
    y = F.one_hot(target, 5).double()
    alpha_tilde = y + (1 - y) * (evidence + 1)
    expected = kl_divergence(Dirichlet(alpha_tilde), Dirichlet(torch.ones_like(alpha_tilde))).mean()
    assert edl_kl(evidence, target).item() == pytest.approx(expected.item(), rel=1e-10)
    # without target removal the KL is taken on alpha itself
    expected_full = kl_divergence(Dirichlet(evidence + 1), Dirichlet(torch.ones_like(evidence))).mean()
    assert edl_kl(evidence, target, remove_target=False).item() == pytest.approx(expected_full.item(), rel=1e-10)


def test_losses_match_monte_carlo_over_the_dirichlet():
    torch.manual_seed(1)
    alpha = torch.tensor([[3.0, 1.5, 2.0], [1.2, 6.0, 1.1]], dtype=torch.float64)
    target = torch.tensor([0, 1])
    p = Dirichlet(alpha).sample((200_000,))  # [s, b, k]
    y = F.one_hot(target, 3).double()
    p_y = (p * y).sum(-1)
    evidence = alpha - 1
    # mll = -log E[p_y]; ce = E[-log p_y]; sse = E ||y - p||^2
    assert edl_loss(evidence, target, "mll").item() == pytest.approx(-p_y.mean(0).log().mean().item(), abs=1e-2)
    assert edl_loss(evidence, target, "ce").item() == pytest.approx((-p_y.log()).mean().item(), abs=1e-2)
    sse_mc = ((y - p) ** 2).sum(-1).mean().item()
    assert edl_loss(evidence, target, "sse").item() == pytest.approx(sse_mc, abs=1e-2)


def test_one_hot_targets_equal_int_targets():
    e = F.softplus(LOGITS)
    for loss in ("mll", "ce", "sse"):
        assert torch.allclose(edl_loss(e, TARGET, loss), edl_loss(e, F.one_hot(TARGET, 3).float(), loss))


@pytest.mark.parametrize("scale", [1e-7, 1e6])
@pytest.mark.parametrize("loss", ["mll", "ce", "sse"])
def test_gradients_finite_at_extreme_evidence(scale, loss):
    evidence = (torch.rand(8, 4) * scale + scale * 0.5).requires_grad_()
    target = torch.randint(0, 4, (8,))
    total = edl_loss(evidence, target, loss) + 0.005 * edl_kl(evidence, target)
    total.backward()
    assert torch.isfinite(total)
    assert torch.isfinite(evidence.grad).all()
    assert evidence.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["softplus", "relu", "exp"])
def test_evidence_gradients_finite_for_extreme_logits(name):
    logits = torch.tensor([[-200.0, 0.0, 200.0], [1e4, -1e4, 3.0]], requires_grad=True)
    evidence = get_evidence_fn(name)(logits)
    assert (evidence >= 0).all() and torch.isfinite(evidence).all()
    (edl_loss(evidence, torch.tensor([2, 0])) + edl_kl(evidence, torch.tensor([2, 0]))).backward()
    assert torch.isfinite(logits.grad).all()


def test_exp_evidence_is_clamped():
    e = get_evidence_fn("exp")(torch.tensor([[100.0, -100.0]]))
    assert e[0, 0].item() == pytest.approx(math.exp(10), rel=1e-6)
    assert e[0, 1].item() == pytest.approx(math.exp(-10), rel=1e-6)


def test_evidential_loss_combines_terms_with_annealing():
    e = F.softplus(LOGITS)
    schedule = PiecewiseLinear(((0.0, 0.0), (0.2, 0.01), (1.0, 1.0)), total_epochs=10)
    criterion = EvidentialLoss("sse", kl_weight=1.0, annealing=schedule, remove_target=True)
    # at epoch 1 (fraction 0.1) lambda = 0.005
    expected = edl_loss(e, TARGET, "sse") + 0.005 * edl_kl(e, TARGET)
    assert criterion(e, TARGET, epoch=1.0).item() == pytest.approx(expected.item(), rel=1e-6)
    assert criterion(e, TARGET, epoch=0.0).item() == pytest.approx(edl_loss(e, TARGET, "sse").item())


def test_default_rap_loss_is_the_measured_recipe():
    # lambda = 0.05 on KL(Dir(alpha) || Dir(1)) with the target evidence kept, at every epoch (docs/edl-variants.md)
    e = F.softplus(LOGITS)
    expected = edl_loss(e, TARGET, "mll") + 0.05 * edl_kl(e, TARGET, remove_target=False)
    for epoch in (None, 0.0, 3.0):
        assert EvidentialLoss()(e, TARGET, epoch=epoch).item() == pytest.approx(expected.item(), rel=1e-6)
    paper = edl_loss(e, TARGET, "mll") + 0.005 * edl_kl(e, TARGET)
    assert EvidentialLoss(kl_weight=0.005, remove_target=True)(e, TARGET).item() == pytest.approx(paper.item())


def test_bad_inputs_raise_clear_errors():
    e = F.softplus(LOGITS)
    with pytest.raises(ValueError, match="unknown evidential loss"):
        edl_loss(e, TARGET, "hinge")
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        edl_loss(e, torch.tensor([0, 3, 1]))
    with pytest.raises(ValueError, match="unknown evidence activation"):
        get_evidence_fn("sigmoid")
