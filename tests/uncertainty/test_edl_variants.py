import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Dirichlet, kl_divergence

from clearmamba.uncertainty import (
    EvidentialLoss,
    FisherEvidentialLoss,
    RaPHead,
    RelaxedEvidentialLoss,
    create_evidential_loss,
    create_method,
)
from clearmamba.uncertainty.edl_variants import (
    dirichlet_fisher_logdet,
    fisher_weighted_squared_error,
    kl_to_symmetric_dirichlet,
    squared_error,
)

K = 4


def _batch(seed: int = 0, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    evidence = (torch.rand(n, K, generator=g, dtype=torch.float64) * 5).requires_grad_()
    target = torch.randint(0, K, (n,), generator=g)
    return evidence, target, F.one_hot(target, K).double()


@pytest.mark.parametrize("concentration", [0.1, 1.0, 2.5])
def test_kl_to_symmetric_dirichlet_matches_torch_distributions(concentration):
    alpha = torch.rand(8, K, dtype=torch.float64) * 3 + 0.05
    expected = kl_divergence(Dirichlet(alpha), Dirichlet(torch.full_like(alpha, concentration)))
    torch.testing.assert_close(kl_to_symmetric_dirichlet(alpha, concentration), expected, rtol=1e-10, atol=1e-10)


def test_squared_error_gradient_is_the_analytic_one():
    evidence, _, y = _batch()
    alpha = evidence + 1
    squared_error(alpha, y).sum().backward()
    with torch.no_grad():
        total = alpha.sum(-1, keepdim=True)
        p = alpha / total
        # d/d alpha_j sum_k (y_k - p_k)^2 = -2 / S [(y_j - p_j) - sum_k (y_k - p_k) p_k]
        expected = -2 / total * ((y - p) - ((y - p) * p).sum(-1, keepdim=True))
    torch.testing.assert_close(evidence.grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("prior_weight", [0.1, 1.0])
def test_relaxed_loss_equals_the_papers_formula_in_raw_evidence(prior_weight):
    raw, target, y = _batch(1)
    loss = RelaxedEvidentialLoss(prior_weight, kl_weight=0.3)
    # R-EDL written on the raw evidence e: p = (e + lambda) / (sum e + K lambda); KL(Dir(e(1-y)+lambda) || Dir(lambda))
    p = (raw + prior_weight) / (raw.sum(-1, keepdim=True) + K * prior_weight)
    kl = kl_divergence(Dirichlet(raw * (1 - y) + prior_weight), Dirichlet(torch.full_like(raw, prior_weight)))
    expected = ((y - p) ** 2).sum(-1).mean() + 0.3 * kl.mean()
    value = loss(raw / prior_weight, target)  # the head returns evidence in prior-weight units
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-12)
    (grad,) = torch.autograd.grad(value, raw)
    (expected_grad,) = torch.autograd.grad(expected, raw)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-10)


def test_relaxed_loss_has_no_variance_term_and_anneals():
    raw, target, y = _batch(2)
    loss = RelaxedEvidentialLoss(1.0, kl_weight=1.0)  # EpochLinear(10): no KL in the first epoch
    sse = EvidentialLoss("sse", kl_weight=0.0)(raw.detach(), target)
    relaxed = loss(raw.detach(), target, epoch=0.5)
    alpha = raw.detach() + 1
    p = alpha / alpha.sum(-1, keepdim=True)
    variance = (p * (1 - p) / (alpha.sum(-1, keepdim=True) + 1)).sum(-1).mean()
    torch.testing.assert_close(sse - relaxed, variance)
    assert loss(raw, target, epoch=5.0) > relaxed  # at epoch 5 the KL weighs 0.5


def test_fisher_logdet_matches_explicit_matrix_and_dirichlet_hessian():
    alpha = torch.tensor([[1.2, 3.0, 0.7, 5.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    x = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    for row, value in zip(alpha, dirichlet_fisher_logdet(alpha)):
        fisher = torch.diag(torch.polygamma(1, row)) - torch.polygamma(1, row.sum())
        torch.testing.assert_close(value, torch.logdet(fisher), rtol=1e-10, atol=1e-10)
        # Fisher information = -Hessian of the Dirichlet log-likelihood in alpha (independent of x)
        hessian = torch.autograd.functional.hessian(lambda a: Dirichlet(a).log_prob(x), row)
        torch.testing.assert_close(-hessian, fisher, rtol=1e-8, atol=1e-10)


def test_fisher_weighted_squared_error_uses_dirichlet_moments():
    evidence, _, y = _batch(3)
    alpha = evidence.detach() + 1
    dirichlet = Dirichlet(alpha)
    # E_Dir[(y_k - p_k)^2] = (y_k - E p_k)^2 + Var p_k, weighted by psi1(alpha_k)
    expected = (torch.polygamma(1, alpha) * ((y - dirichlet.mean) ** 2 + dirichlet.variance)).sum(-1)
    torch.testing.assert_close(fisher_weighted_squared_error(alpha, y), expected, rtol=1e-10, atol=1e-12)


def test_fisher_loss_value_and_gradient():
    evidence, target, y = _batch(4)
    loss = FisherEvidentialLoss(fisher_weight=0.05, kl_weight=0.5)
    value = loss(evidence, target)
    alpha = evidence + 1
    d = Dirichlet(alpha)
    fisher = torch.polygamma(1, alpha)
    mse = (fisher * ((y - d.mean) ** 2 + d.variance)).sum(-1)
    logdet = torch.stack([torch.logdet(torch.diag(f) - torch.polygamma(1, a.sum())) for f, a in zip(fisher, alpha)])
    kl = kl_divergence(Dirichlet(y + (1 - y) * alpha), Dirichlet(torch.ones_like(alpha)))
    expected = (mse - 0.05 * logdet + 0.5 * kl).mean()
    torch.testing.assert_close(value, expected, rtol=1e-9, atol=1e-11)
    (grad,) = torch.autograd.grad(value, evidence)
    (expected_grad,) = torch.autograd.grad(expected, evidence)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-7, atol=1e-9)
    # and against central finite differences in float64
    assert torch.autograd.gradcheck(lambda e: loss(e, target), (evidence,), eps=1e-6, atol=1e-6)


def test_fixed_kl_weight_and_target_removal_are_selectable():
    evidence, target, y = _batch(5)
    e = evidence.detach()
    fixed = create_evidential_loss("edl", kl_weight=0.005, kl_anneal_epochs=0, remove_target=True)
    kept = create_evidential_loss("edl", kl_weight=0.005, kl_anneal_epochs=0, remove_target=False)
    data = EvidentialLoss("mll", kl_weight=0.0)(e, target)
    kl_removed = kl_divergence(Dirichlet(y + (1 - y) * (e + 1)), Dirichlet(torch.ones_like(e))).mean()
    kl_kept = kl_divergence(Dirichlet(e + 1), Dirichlet(torch.ones_like(e))).mean()
    for epoch in (0.0, 3.7):  # constant weight: the same at every point of training
        torch.testing.assert_close(fixed(e, target, epoch=epoch), data + 0.005 * kl_removed)
        torch.testing.assert_close(kept(e, target, epoch=epoch), data + 0.005 * kl_kept)
    with pytest.raises(ValueError, match="unknown evidential objective"):
        create_evidential_loss("nope")


def test_rap_head_prior_weight_gives_relaxed_probabilities():
    torch.manual_seed(0)
    head = RaPHead(5, K, prior_weight=0.1)
    features = torch.randn(3, 5)
    out = head(features)
    raw = F.softplus(head.fc(features))
    expected = (raw + 0.1) / (raw.sum(-1, keepdim=True) + K * 0.1)
    torch.testing.assert_close(out.probs, expected)
    torch.testing.assert_close(out.score("vacuity"), K * 0.1 / (raw.sum(-1) + K * 0.1))


def test_evidential_method_selects_the_objective():
    model = torch.nn.Linear(3, K)
    method = create_method("evidential", objective="redl", prior_weight=0.2, kl_weight=1.0)
    assert isinstance(method.criterion, RelaxedEvidentialLoss) and method.criterion.prior_weight == 0.2
    wrapped = method.prepare(model)
    x = torch.randn(2, 3)
    torch.testing.assert_close(wrapped(x).evidence, F.softplus(model(x)) / 0.2)
    assert isinstance(create_method("evidential", objective="iedl").criterion, FisherEvidentialLoss)
    with pytest.raises(ValueError, match="prior_weight"):
        create_method("evidential", prior_weight=0.5)
