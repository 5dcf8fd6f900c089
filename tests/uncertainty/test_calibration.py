import torch
import torch.nn.functional as F

from clearmamba.uncertainty import Prediction, TemperatureScaler


def _overconfident(n=3000, k=5, factor=4.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    true_logits = 1.5 * torch.randn(n, k, generator=generator)
    labels = torch.multinomial(true_logits.softmax(-1), 1, generator=generator).squeeze(-1)
    return factor * true_logits, labels


def test_temperature_scaling_lowers_nll_of_an_overconfident_model():
    logits, labels = _overconfident()
    scaler = TemperatureScaler().fit(logits[:2000], labels[:2000])
    # the logits were multiplied by 4, so the fitted temperature should undo it
    assert abs(scaler.temperature - 4.0) < 0.4
    before = F.cross_entropy(logits[2000:], labels[2000:])
    after = F.cross_entropy(scaler(logits[2000:]).logits, labels[2000:])
    assert after < before - 0.3
    torch.testing.assert_close(scaler(logits).probs, (logits / scaler.temperature).softmax(-1))


def test_evidence_scaling_lowers_nll_of_overconfident_evidence():
    generator = torch.Generator().manual_seed(1)
    evidence = 3 * torch.rand(3000, 4, generator=generator) ** 3
    labels = torch.multinomial((evidence + 1) / (evidence + 1).sum(-1, keepdim=True), 1, generator=generator)[:, 0]
    overconfident = Prediction.from_evidence(20 * evidence)
    scaler = TemperatureScaler().fit(overconfident, labels)
    assert abs(scaler.temperature - 20) < 4
    scaled = scaler(overconfident)
    torch.testing.assert_close(scaled.evidence, 20 * evidence / scaler.temperature)
    nll = lambda p: -p.probs.gather(-1, labels[:, None]).log().mean()  # noqa: E731
    assert nll(scaled) < nll(overconfident) - 0.1


def test_members_are_scaled_one_by_one():
    logits, labels = _overconfident(n=500, factor=3.0)
    members = torch.stack([(logits + 0.3 * torch.randn_like(logits)).softmax(-1) for _ in range(3)])
    prediction = Prediction.from_members(members)
    scaler = TemperatureScaler(2.0)
    expected = (members.log() / 2.0).softmax(-1).mean(0)
    torch.testing.assert_close(scaler(prediction).probs, expected)
    fitted = TemperatureScaler().fit(prediction, labels)
    assert fitted.temperature > 1.5
