import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, log_loss, recall_score
from torchmetrics.functional.classification import multiclass_calibration_error

from clearmamba import evaluation as ev

from .conftest import random_predictions


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_bins", [15, 7])
def test_ece_and_mce_match_torchmetrics(seed, dtype, n_bins):
    probs, labels = random_predictions(seed=seed, dtype=dtype)
    k = probs.shape[1]
    expected_ece = multiclass_calibration_error(probs, labels, k, n_bins=n_bins, norm="l1").item()
    expected_mce = multiclass_calibration_error(probs, labels, k, n_bins=n_bins, norm="max").item()
    assert ev.ece(probs, labels, n_bins=n_bins) == pytest.approx(expected_ece, abs=1e-6)
    assert ev.mce(probs, labels, n_bins=n_bins) == pytest.approx(expected_mce, abs=1e-6)


def test_ece_by_hand_with_confidence_exactly_one():
    # c = 1.0 (right) stays in the last bin: gap 0; c = 0.7 twice, one right: gap |0.5 - 0.7|, weight 2/3
    probs = torch.tensor([[1.0, 0.0], [0.7, 0.3], [0.7, 0.3]])
    labels = torch.tensor([0, 1, 0])
    assert ev.ece(probs, labels) == pytest.approx(2 / 3 * 0.2)
    assert ev.mce(probs, labels) == pytest.approx(0.2)
    bins = ev.reliability_bins(probs, labels)
    assert bins["count"].sum() == 3 and bins["count"][-1] == 1 and bins["count"][10] == 2
    assert bins["accuracy"][10] == pytest.approx(0.5) and bins["confidence"][10] == pytest.approx(0.7)


def test_perfectly_calibrated_bins_have_zero_ece():
    # 10 samples at confidence 0.8 of which 8 are right
    probs = torch.tensor([[0.8, 0.2]] * 10, dtype=torch.float64)
    labels = torch.tensor([0] * 8 + [1] * 2)
    assert ev.ece(probs, labels) == pytest.approx(0.0, abs=1e-12)
    assert ev.adaptive_ece(probs, labels, n_bins=2) == pytest.approx(0.0, abs=1e-12)


def test_adaptive_ece_by_hand():
    # equal-mass bins {0.6, 0.7} and {0.8, 0.9}; right: 0.9, 0.7; wrong: 0.8, 0.6
    confidence = torch.tensor([0.9, 0.8, 0.7, 0.6])
    probs = torch.stack([confidence, 1 - confidence], 1)
    labels = torch.tensor([0, 1, 0, 1])
    # high bin |0.5 - 0.85| = 0.35, low bin |0.5 - 0.65| = 0.15, equal weights
    assert ev.adaptive_ece(probs, labels, n_bins=2) == pytest.approx(0.25)


def test_adaptive_ece_matches_numpy_array_split():
    probs, labels = random_predictions(n=301, seed=5, dtype=torch.float64)
    confidence = probs.max(-1).values.numpy()
    correct = (probs.argmax(-1) == labels).numpy()
    order = np.argsort(confidence, kind="stable")
    expected = sum(
        len(idx) / len(order) * abs(correct[idx].mean() - confidence[idx].mean())
        for idx in np.array_split(order, 15)
    )
    assert ev.adaptive_ece(probs, labels) == pytest.approx(expected, abs=1e-12)
    counts = ev.reliability_bins(probs, labels, equal_mass=True)["count"]
    assert counts.max() - counts.min() <= 1 and counts.sum() == 301


def test_reliability_bin_counts_match_numpy_histogram(predictions):
    probs, labels = predictions
    confidence = probs.max(-1).values.double().numpy()
    expected, _ = np.histogram(confidence, bins=np.linspace(0, 1, 16))
    np.testing.assert_array_equal(ev.reliability_bins(probs, labels)["count"].numpy(), expected)


def test_accuracy_f1_recall_match_sklearn(predictions):
    probs, labels = predictions
    predicted = probs.argmax(-1).numpy()
    assert ev.accuracy(probs, labels) == pytest.approx(accuracy_score(labels, predicted), abs=1e-6)
    assert ev.macro_f1(probs, labels) == pytest.approx(f1_score(labels, predicted, average="macro"), abs=1e-6)
    np.testing.assert_allclose(
        ev.per_class_recall(probs, labels).numpy(), recall_score(labels, predicted, average=None), atol=1e-6
    )


def test_class_without_samples():
    # class 2 never occurs: F1 averages over classes 0 and 1 (1 and 2/3), its recall is undefined
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1]])
    labels = torch.tensor([0, 1, 1])
    assert ev.macro_f1(probs, labels) == pytest.approx((2 / 3 + 2 / 3) / 2)
    recall = ev.per_class_recall(probs, labels)
    assert recall[:2].tolist() == [1.0, 0.5] and torch.isnan(recall[2])


def test_brier_and_nll_match_sklearn():
    probs, labels = random_predictions(dtype=torch.float64)
    k = probs.shape[1]
    expected_brier = brier_score_loss(labels, probs, labels=list(range(k)), scale_by_half=False)
    assert ev.brier(probs, labels) == pytest.approx(expected_brier, rel=1e-10)
    assert ev.nll(probs, labels) == pytest.approx(log_loss(labels, probs, labels=list(range(k))), rel=1e-10)


def test_nll_stays_finite_when_true_class_has_zero_probability():
    probs = torch.tensor([[1.0, 0.0]])
    assert ev.nll(probs, torch.tensor([1])) == pytest.approx(-np.log(1e-12))


def test_numpy_input_gives_the_same_result(predictions):
    probs, labels = predictions
    assert ev.ece(probs.numpy(), labels.numpy()) == ev.ece(probs, labels)
    assert ev.brier(probs.numpy(), labels.numpy()) == ev.brier(probs, labels)


def test_bad_inputs_name_the_argument(predictions):
    probs, labels = predictions
    with pytest.raises(ValueError, match="probs: .*not logits"):
        ev.ece(torch.log(probs), labels)
    with pytest.raises(ValueError, match="labels: expected class indices"):
        ev.ece(probs, labels + 10)
    with pytest.raises(ValueError, match="labels: expected 300"):
        ev.nll(probs, labels[:-1])
    with pytest.raises(ValueError, match="probs: expected shape"):
        ev.brier(probs[0], labels[:1])


def test_adaptive_ece_never_splits_tied_confidences():
    # tied confidences may not be cut by an equal-mass boundary, or the input order would matter
    probs = torch.tensor([[0.8, 0.2]] * 6 + [[0.6, 0.4]] * 4, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 0, 1, 0, 0, 1, 0, 1])
    shuffled = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    # bins {0.6 x4} and {0.8 x6}: |0.5 - 0.6| * 0.4 + |4/6 - 0.8| * 0.6
    expected = 0.1 * 0.4 + abs(4 / 6 - 0.8) * 0.6
    assert ev.adaptive_ece(probs, labels, n_bins=2) == pytest.approx(expected)
    assert ev.adaptive_ece(probs[shuffled], labels[shuffled], n_bins=2) == pytest.approx(expected)
