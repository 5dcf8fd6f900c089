import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from clearmamba import evaluation as ev

from .conftest import random_predictions


def batches(*tensors, size=64):
    n = len(tensors[0])
    for start in range(0, n, size):
        yield tuple(t[start : start + size] for t in tensors)


def test_streamed_ece_equals_functional_and_torchmetrics():
    probs, labels = random_predictions(n=500, seed=7)
    streamed, streamed_max = ev.ECE(), ev.ECE(norm="max")
    reference = MulticlassCalibrationError(num_classes=probs.shape[1], n_bins=15)
    for p, y in batches(probs, labels):
        streamed.update(p, y)
        streamed_max.update(p, y)
        reference.update(p, y)
    assert streamed.compute().item() == pytest.approx(ev.ece(probs, labels), abs=1e-12)
    assert streamed.compute().item() == pytest.approx(reference.compute().item(), abs=1e-6)
    assert streamed_max.compute().item() == pytest.approx(ev.mce(probs, labels), abs=1e-12)
    streamed.reset()
    streamed.update(probs[:10], labels[:10])
    assert streamed.compute().item() == pytest.approx(ev.ece(probs[:10], labels[:10]), abs=1e-12)


def test_streamed_score_metrics_equal_functional():
    rng = np.random.default_rng(0)
    score = torch.from_numpy(np.round(rng.random(400), 2))
    correct = torch.from_numpy(rng.random(400) > score.numpy() * 0.7)
    is_ood = torch.from_numpy(rng.random(400) < 0.3)
    metrics = {
        "aurc": ev.AURC(),
        "curve": ev.RiskCoverage(),
        "mis": ev.MisclassificationDetection(),
    }
    ood = ev.OODDetection()
    for s, c, o in batches(score, correct, is_ood, size=50):
        for metric in metrics.values():
            metric.update(s, c)
        ood.update(s, o)
    assert metrics["aurc"].compute().item() == pytest.approx(ev.aurc(score, correct), abs=1e-12)
    curve = ev.risk_coverage_curve(score, correct)
    for key, value in metrics["curve"].compute().items():
        torch.testing.assert_close(value, curve[key])
    for key, value in ev.misclassification_metrics(score, correct).items():
        assert metrics["mis"].compute()[key].item() == pytest.approx(value, abs=1e-12)
    for key, value in ev.ood_metrics(score[~is_ood], score[is_ood]).items():
        assert ood.compute()[key].item() == pytest.approx(value, abs=1e-12)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_compute_before_update_raises():
    with pytest.raises(ValueError, match="AURC: compute"):
        ev.AURC().compute()


def test_states_merge_like_two_processes():
    # merge_state applies each state's dist_reduce_fx (sum / cat), as a DDP sync would
    probs, labels = random_predictions(n=200, seed=3)
    score = 1 - probs.max(-1).values
    correct = probs.argmax(-1) == labels
    for make, args, expected in [
        (ev.ECE, (probs, labels), ev.ece(probs, labels)),
        (ev.AURC, (score, correct), ev.aurc(score, correct)),
    ]:
        first, second = make(), make()
        first.update(*(a[:120] for a in args))
        second.update(*(a[120:] for a in args))
        first.merge_state(second)
        assert first.compute().item() == pytest.approx(expected, abs=1e-12)
