import pytest
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from clearmamba.uncertainty import SWAG, refresh_batchnorm


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def _collect(swag, snapshots):
    for theta in snapshots:
        vector_to_parameters(theta, swag.model.parameters())
        swag.collect()


def test_moments_match_the_snapshots():
    swag = SWAG(_mlp(), max_rank=2)
    size = swag.mean.numel()
    snapshots = [torch.randn(size) for _ in range(5)]
    _collect(swag, snapshots)
    stacked = torch.stack(snapshots)
    torch.testing.assert_close(swag.mean, stacked.mean(0))
    torch.testing.assert_close(swag.variance(), stacked.var(0, unbiased=False), atol=1e-5, rtol=1e-4)
    # ring of the last K deviations, each taken from the running mean after its update
    torch.testing.assert_close(swag.deviations[0], snapshots[4] - stacked.mean(0))
    torch.testing.assert_close(swag.deviations[1], snapshots[3] - stacked[:4].mean(0))


def test_zero_variance_swag_reduces_to_swa():
    swag = SWAG(_mlp(), max_rank=3, scale=1.0, num_samples=5)
    theta = parameters_to_vector(swag.model.parameters()).detach().clone() + 0.1
    _collect(swag, [theta, theta, theta])
    loader = [torch.randn(32, 4) for _ in range(3)]
    swag.prepare_samples(loader=loader)
    x = torch.randn(7, 4)
    swa = swag.swa_model(loader)
    swag_prediction = swag.eval()(x)
    expected = swa(x).softmax(-1)
    assert swag_prediction.members.shape == (5, 7, 3)
    for member in swag_prediction.members:
        torch.testing.assert_close(member, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(swag_prediction.score("mutual_info"), torch.zeros(7), atol=1e-5, rtol=0)
    # the wrapped model keeps its own weights after sampling
    torch.testing.assert_close(parameters_to_vector(swag.model.parameters()), theta)


def test_sample_covariance_matches_the_swag_posterior():
    swag = SWAG(nn.Linear(2, 2), max_rank=4, scale=1.0)
    size = swag.mean.numel()
    torch.manual_seed(1)
    snapshots = [torch.randn(size) for _ in range(4)]
    _collect(swag, snapshots)
    generator = torch.Generator().manual_seed(0)
    diag = torch.stack([swag.sample_weights(low_rank=False, generator=generator) for _ in range(6000)])
    torch.testing.assert_close(diag.var(0), swag.variance(), rtol=0.1, atol=1e-3)
    # low rank: Cov = (diag(sigma^2) + D^T D / (K - 1)) / 2
    low = torch.stack([swag.sample_weights(generator=generator) for _ in range(6000)])
    deviations = swag.deviations
    expected = (torch.diag(swag.variance()) + deviations.T @ deviations / 3) / 2
    torch.testing.assert_close(torch.cov(low.T), expected, rtol=0.15, atol=0.05)
    torch.testing.assert_close(low.mean(0), swag.mean, atol=0.03, rtol=0)


def test_refresh_batchnorm_uses_the_exact_data_statistics():
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2)).eval()
    data = torch.randn(40, 3) * 2 + 1
    refresh_batchnorm(model, [(data, torch.zeros(40))])
    torch.testing.assert_close(model[0].running_mean, data.mean(0))
    torch.testing.assert_close(model[0].running_var, data.var(0, unbiased=True))
    assert not model.training and not model[0].training  # modes restored
    assert model[0].momentum == 0.1


def test_uncollected_swag_is_refused():
    with pytest.raises(RuntimeError, match="collect"):
        SWAG(_mlp()).eval()(torch.randn(2, 4))
