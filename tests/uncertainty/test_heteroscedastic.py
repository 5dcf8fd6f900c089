import numpy as np
import torch
import torch.nn.functional as F

from clearmamba.uncertainty import HeteroscedasticClassifier, HeteroscedasticLoss, HeteroscedasticOutput, create_method
from clearmamba.uncertainty.heteroscedastic import heteroscedastic_nll, heteroscedastic_prediction
from tests.uncertainty.toy import TinyConvNet


def test_vanishing_variance_gives_cross_entropy():
    torch.manual_seed(0)
    mean, target = torch.randn(8, 4), torch.randint(0, 4, (8,))
    nll = heteroscedastic_nll(mean, torch.full_like(mean, -40.0), target)
    torch.testing.assert_close(nll, F.cross_entropy(mean, target), atol=1e-5, rtol=0)


def test_monte_carlo_softmax_matches_gauss_hermite_quadrature():
    # two classes: E[softmax(mu + sigma eps)_1] = E[sigmoid(d)], d ~ N(mu1 - mu0, s0^2 + s1^2)
    mean = torch.tensor([[0.3, 1.1]], dtype=torch.float64)
    log_variance = torch.log(torch.tensor([[0.8, 1.5]], dtype=torch.float64))
    torch.manual_seed(0)
    p = heteroscedastic_prediction(mean, log_variance, num_samples=200_000).probs[0, 1]
    nodes, weights = np.polynomial.hermite.hermgauss(80)
    scale = np.sqrt(2 * (0.8 + 1.5))
    expected = (weights * (1 / (1 + np.exp(-(0.8 + scale * nodes))))).sum() / np.sqrt(np.pi)
    assert abs(float(p) - expected) < 3e-3


def test_classifier_outputs_loss_gradients_and_aleatoric_score():
    torch.manual_seed(0)
    model = HeteroscedasticClassifier(TinyConvNet(), num_samples=16)
    x, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    output = model.train()(x)
    assert isinstance(output, HeteroscedasticOutput) and output.log_variance.shape == (5, 3)
    HeteroscedasticLoss(8)(output, y).backward()
    assert model.layer.log_variance.weight.grad.abs().sum() > 0
    prediction = model.eval()(x)
    features = model.model.forward_features(x).mean((-2, -1))
    expected = model.layer.log_variance(features).exp().mean(-1)
    torch.testing.assert_close(prediction.score("aleatoric_variance"), expected)
    torch.testing.assert_close(prediction.probs.sum(-1), torch.ones(5))


def test_with_mc_dropout_one_model_gives_both_parts():
    method = create_method("heteroscedastic", num_samples=8, mc_dropout=6)
    model = method.prepare(TinyConvNet(), num_classes=3, dataset_size=10)
    x = torch.randn(4, 1, 8, 8)
    loss = method.loss(model.train()(x), torch.tensor([0, 1, 2, 1]))
    assert torch.isfinite(loss)
    prediction = method.predict(model, x)
    assert prediction.members.shape == (6, 4, 3)
    assert prediction.score("mutual_info").shape == (4,)  # epistemic, from the dropout samples
    assert (prediction.score("aleatoric_variance") > 0).all()  # aleatoric, from the head
    assert prediction.members.std(0).max() > 1e-4
