import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal
from torch.distributions import kl_divergence as torch_kl

from clearmamba.uncertainty import (
    BayesConv,
    BayesLinear,
    ELBOLoss,
    VariationalClassifier,
    VariationalOutput,
    kl_divergence,
    to_variational,
)
from tests.uncertainty.toy import TinyConvNet


def test_kl_matches_the_closed_form_of_torch_distributions():
    torch.manual_seed(0)
    layer = BayesLinear(5, 3, prior_sigma=0.7, init_sigma=0.2)
    with torch.no_grad():
        layer.weight_rho.normal_(-1.0, 0.5)
        layer.bias_rho.normal_(-2.0, 0.5)
    expected = sum(
        torch_kl(Normal(mu, F.softplus(rho)), Normal(torch.zeros_like(mu), 0.7)).sum()
        for mu, rho in ((layer.weight_mu, layer.weight_rho), (layer.bias_mu, layer.bias_rho))
    )
    torch.testing.assert_close(layer.kl(), expected)
    torch.testing.assert_close(kl_divergence(nn.Sequential(layer, nn.ReLU())), expected)


def test_samples_differ_and_follow_the_posterior():
    torch.manual_seed(0)
    layer = BayesLinear(1, 1, bias=False, init_sigma=0.5)
    x = torch.ones(1, 1)
    with torch.no_grad():
        draws = torch.stack([layer(x) for _ in range(4000)]).flatten()
    assert draws.unique().numel() == 4000  # every call draws new weights
    # w = mu + sigma eps: the output of x = 1 has mean mu and std sigma
    assert abs(float(draws.mean() - layer.weight_mu.detach())) < 0.03
    assert abs(float(draws.std()) - 0.5) < 0.03


def test_conversion_keeps_the_deterministic_weights_as_means():
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    x = torch.randn(4, 1, 8, 8)
    before = model(x)
    head_only = to_variational(model, scope="head", init_sigma=1e-6)
    assert isinstance(head_only.fc, BayesLinear)
    assert isinstance(head_only.trunk[0], nn.Conv2d)  # the trunk is untouched
    torch.testing.assert_close(head_only(x), before, atol=1e-4, rtol=0)

    torch.manual_seed(0)
    reference = TinyConvNet().eval()
    torch.manual_seed(0)
    everything = to_variational(TinyConvNet().eval(), scope="all", init_sigma=1e-6)
    assert isinstance(everything.trunk[0], BayesConv) and isinstance(everything.trunk[3], BayesConv)
    torch.testing.assert_close(everything(x), reference(x), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="no layer"):
        to_variational(nn.ReLU())


def test_bayes_conv_3d_shapes_and_elbo():
    conv = BayesConv(nn.Conv3d(2, 4, 3, padding=1))
    assert conv(torch.randn(1, 2, 3, 5, 5)).shape == (1, 4, 3, 5, 5)
    model = VariationalClassifier(to_variational(TinyConvNet(), "head"), num_samples=5)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    output = model.train()(x)
    assert isinstance(output, VariationalOutput)
    loss = ELBOLoss(dataset_size=100, kl_weight=0.5)(output, y)
    torch.testing.assert_close(loss, F.cross_entropy(output.output, y) + 0.5 * output.kl / 100)
    loss.backward()
    assert model.model.fc.weight_rho.grad is not None and model.model.fc.weight_rho.grad.abs().sum() > 0
    prediction = model.eval()(x)
    assert prediction.members.shape == (5, 6, 3)
    assert prediction.score("mutual_info").min() >= 0
