import math

import pytest
import torch
from torch.distributions import Dirichlet

from clearmamba.uncertainty import dirichlet_uncertainty, sample_uncertainty


def _entropy(p):
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


def test_dirichlet_reference_split():
    out = dirichlet_uncertainty(torch.tensor([[3.126928, 1.313262, 1.974077]], dtype=torch.float64))
    assert out["total_entropy"].item() == pytest.approx(1.037650, abs=1e-5)
    assert out["expected_entropy"].item() == pytest.approx(0.899695, abs=1e-5)
    assert out["mutual_info"].item() == pytest.approx(0.137954, abs=1e-5)


def test_dirichlet_expected_entropy_matches_monte_carlo():
    torch.manual_seed(0)
    alpha = torch.tensor([[2.0, 0.5 + 1, 7.0, 1.0], [1.0, 1.0, 1.0, 1.0], [30.0, 2.0, 2.0, 5.0]])
    mc = _entropy(Dirichlet(alpha.double()).sample((100_000,))).mean(0)
    out = dirichlet_uncertainty(alpha)
    assert torch.allclose(out["expected_entropy"].double(), mc, atol=1e-2)
    assert torch.allclose(out["total_entropy"], out["expected_entropy"] + out["mutual_info"], atol=1e-6)
    assert torch.allclose(out["vacuity"], 4 / alpha.sum(-1))


def test_mutual_information_of_opposite_one_hot_members_is_ln2():
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    out = sample_uncertainty(probs)
    assert out["mutual_info"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert out["expected_entropy"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["disagreement"].item() == pytest.approx(0.5)


def test_identical_members_have_zero_mutual_information():
    p = torch.softmax(torch.randn(5, 4), -1)
    out = sample_uncertainty(p.expand(3, 5, 4))
    assert torch.allclose(out["mutual_info"], torch.zeros(5), atol=1e-6)
    assert torch.allclose(out["total_entropy"], _entropy(p), atol=1e-6)
    assert torch.allclose(out["variation_ratio"], torch.zeros(5))


def test_variation_ratio_by_hand():
    # 4 members vote 0, 0, 1, 2 -> mode has 2 of 4 votes -> 0.5
    eye = torch.eye(3)
    probs = torch.stack([eye[0], eye[0], eye[1], eye[2]]).unsqueeze(1) * 0.9 + 0.1 / 3
    assert sample_uncertainty(probs)["variation_ratio"].item() == pytest.approx(0.5)


def test_shape_errors():
    with pytest.raises(ValueError, match="members, batch, classes"):
        sample_uncertainty(torch.rand(4, 3))
    with pytest.raises(ValueError, match="alpha must be > 0"):
        dirichlet_uncertainty(torch.zeros(2, 3))
