import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from torch import nn

from clearmamba.uncertainty import (
    ClassConditionalGaussian,
    DensityAwareEvidence,
    EvidenceScaler,
    Prediction,
    RaPHead,
    TemperatureScaler,
)
from clearmamba.uncertainty.calibration import negative_log_likelihood


def _clusters(n_per_class: int = 200, d: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([[0.0, 0.0, 0.0], [4.0, 0.0, 1.0], [0.0, 4.0, -1.0]])[:, :d]
    mixing = torch.tensor([[1.0, 0.3, 0.0], [0.0, 0.8, 0.2], [0.0, 0.0, 0.5]])[:d, :d]
    labels = torch.arange(3).repeat_interleave(n_per_class)
    features = means[labels] + torch.randn(len(labels), d, generator=g) @ mixing
    return features, labels


def test_log_density_matches_scipy_mixture():
    features, labels = _clusters()
    gaussian = ClassConditionalGaussian(ridge=0.0).fit(features, labels)
    x = features.double().numpy()
    means = np.stack([x[labels.numpy() == c].mean(0) for c in range(3)])
    centred = x - means[labels.numpy()]
    covariance = centred.T @ centred / len(x)
    queries = np.array([[0.5, 0.2, 0.0], [10.0, -7.0, 3.0]])
    expected = logsumexp([np.log(1 / 3) + multivariate_normal(means[c], covariance).logpdf(queries)
                          for c in range(3)], axis=0)
    np.testing.assert_allclose(gaussian.log_density(torch.tensor(queries)).numpy(), expected, rtol=1e-9)


class _FeatureModel(nn.Module):
    """Identity features + an evidential head whose logits grow without bound far from the data."""

    def __init__(self) -> None:
        super().__init__()
        self.head = RaPHead(3, 3)
        with torch.no_grad():
            self.head.fc.weight.copy_(torch.eye(3) * 3)
            self.head.fc.bias.zero_()

    def forward_features(self, x):
        return x

    def forward(self, x):
        return self.head(x)


def test_density_aware_evidence_vanishes_far_from_the_training_features():
    features, labels = _clusters()
    model = _FeatureModel()
    wrapped = DensityAwareEvidence(model, reference_quantile=0.05, normalize=False)
    wrapped.fit(features, labels, _clusters(seed=1)[0])
    far = torch.tensor([[60.0, -40.0, 50.0]])  # the head gives it huge evidence (logit 180 for class 0)
    assert model(far).evidence.max() > 100
    out = wrapped(far)
    assert out.evidence.sum() < 1e-6
    assert out.score("vacuity").item() == pytest.approx(1.0, abs=1e-6)
    # typical held-out features keep their evidence: at least 90 % keep > 99 % of it
    held_out = _clusters(seed=2)[0]
    ratio = wrapped(held_out).evidence.sum(-1) / model(held_out).evidence.sum(-1)
    assert (ratio > 0.99).float().mean() > 0.9
    assert out.score("neg_log_density").item() > wrapped(held_out).score("neg_log_density").max()


def test_normalised_density_judges_the_direction():
    features, labels = _clusters()
    features = features + 6.0  # all classes in the positive octant, so directions are informative
    model = _FeatureModel()
    wrapped = DensityAwareEvidence(model).fit(features, labels, _clusters(seed=1)[0] + 6.0)
    far = torch.tensor([[60.0, -40.0, -50.0]])  # a direction no training feature has; logit 180 for class 0
    assert model(far).evidence.max() > 100
    assert wrapped(far).evidence.sum() < 1e-6
    typical = (_clusters(seed=2)[0] + 6.0) * 3  # same directions, 3x the norm: normalised away
    ratio = wrapped(typical).evidence.sum(-1) / model(typical).evidence.sum(-1)
    assert (ratio > 0.99).float().mean() > 0.9


def test_density_needs_features_and_fit():
    with pytest.raises(ValueError, match="forward_features"):
        DensityAwareEvidence(nn.Linear(3, 3))
    with pytest.raises(RuntimeError, match="fit"):
        ClassConditionalGaussian().log_density(torch.zeros(1, 3))


def _miscalibrated(seed: int = 0, n: int = 2000, k: int = 5):
    """EDL's usual failure: logits 3x too small, so the Dirichlet is far too unsure for the true frequencies."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(n, k, generator=g) * 2
    labels = torch.distributions.Categorical(logits=clean).sample()
    return Prediction.from_evidence(torch.nn.functional.softplus(clean * 0.3), logits=clean * 0.3), labels


def test_evidence_scaling_lowers_nll_on_a_miscalibrated_toy():
    val, val_labels = _miscalibrated(0)
    test, test_labels = _miscalibrated(1)
    scaler = EvidenceScaler("softplus").fit(val, val_labels)
    before = negative_log_likelihood(test.probs, test_labels)
    after = negative_log_likelihood(scaler(test).probs, test_labels)
    assert after < before - 0.3
    assert scaler.temperature < 0.5  # the logits were 3x too small
    # at least as good as evidence-only temperature scaling (a special case: T = 1)
    evidence_only = TemperatureScaler().fit(val, val_labels)
    assert after <= negative_log_likelihood(evidence_only(test).probs, test_labels) + 1e-4


def test_evidence_scaling_identity_and_model_factor():
    prediction, _ = _miscalibrated(2, n=50)
    identity = EvidenceScaler("softplus")
    torch.testing.assert_close(identity(prediction).probs, prediction.probs)
    # a model factor r (R-EDL's 1 / lambda) is carried through: e' = c r act(z / T)
    relaxed = Prediction.from_evidence(prediction.evidence / 0.1, logits=prediction.logits)
    torch.testing.assert_close(identity(relaxed).evidence, relaxed.evidence)


def test_fit_density_gate_keeps_the_steepest_gate_within_the_nll_tolerance():
    from clearmamba.uncertainty import fit_density_gate

    features, labels = _clusters()
    val_features, val_labels = _clusters(seed=1)
    gate, scaler, record = fit_density_gate(_FeatureModel(), features + 6.0, labels, val_features + 6.0, val_labels)
    nll = record["val_nll_by_sharpness"]
    assert record["sharpness"] == max(s for s, v in nll.items() if v <= 1.1 * min(nll.values()))
    assert gate.sharpness == record["sharpness"] and gate.reference_quantile == 0.5
    # the median of the validation log-densities is the reference: about half the validation inputs are gated
    log_q = gate.density.log_density(val_features + 6.0)
    assert 0.4 < (log_q < gate.reference).float().mean() < 0.6
