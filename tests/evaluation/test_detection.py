import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from clearmamba import evaluation as ev


def scores_with_ties(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < 0.3
    # rounding makes many ties, the shift makes the score informative
    score = np.round(rng.normal(size=n) + 1.2 * positive, 1)
    return score, positive


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_auroc_aupr_roc_match_sklearn(seed):
    score, positive = scores_with_ties(seed)
    assert ev.auroc(score, positive) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)
    assert ev.average_precision(score, positive) == pytest.approx(
        average_precision_score(positive, score), abs=1e-12
    )
    fpr, tpr, thresholds = roc_curve(positive, score, drop_intermediate=False)
    curve = ev.roc_curve_points(torch.from_numpy(score), torch.from_numpy(positive))
    np.testing.assert_allclose(curve["fpr"].numpy(), fpr, atol=1e-12)
    np.testing.assert_allclose(curve["tpr"].numpy(), tpr, atol=1e-12)
    np.testing.assert_allclose(curve["threshold"].numpy()[1:], thresholds[1:])


@pytest.mark.parametrize("seed", [0, 1])
def test_ood_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    score_in = np.round(rng.normal(size=300), 2)
    score_out = np.round(rng.normal(loc=1.5, size=120), 2)
    score = np.concatenate([score_in, score_out])
    is_ood = np.r_[np.zeros(300, bool), np.ones(120, bool)]
    result = ev.ood_metrics(torch.from_numpy(score_in), score_out)
    fpr, tpr, _ = roc_curve(is_ood, score)
    assert result["auroc"] == pytest.approx(roc_auc_score(is_ood, score), abs=1e-12)
    assert result["aupr_out"] == pytest.approx(average_precision_score(is_ood, score), abs=1e-12)
    assert result["aupr_in"] == pytest.approx(average_precision_score(~is_ood, -score), abs=1e-12)
    assert result["fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)


def test_ood_metrics_by_named_set():
    score_in = np.linspace(0, 1, 50)
    sets = {"near": np.linspace(0.5, 1.5, 30), "far": np.linspace(5, 6, 30)}
    result = ev.ood_metrics_by_set(score_in, sets)
    assert set(result) == {"near", "far"}
    assert result["far"] == ev.ood_metrics(score_in, sets["far"])
    assert result["far"]["auroc"] == 1.0 and result["far"]["fpr95"] == 0.0
    assert result["near"]["auroc"] < 1.0


def test_fpr95_by_hand_at_exactly_95_percent():
    # 19 of 20 OOD scores sit above every ID score; the 20th is below two of the four ID scores
    score_in = [0.0, 1.0, 2.0, 3.0]
    score_out = [1.5] + [10.0 + i for i in range(19)]
    result = ev.ood_metrics(score_in, score_out)
    assert result["fpr95"] == 0.0
    assert ev.fpr_at_tpr(np.r_[score_in, score_out], np.r_[[0] * 4, [1] * 20], 1.0) == pytest.approx(0.5)
    # AUROC: 19 OOD beat all 4 ID, one beats 2 of 4 -> (19 * 4 + 2) / 80
    assert result["auroc"] == pytest.approx(78 / 80)


def test_large_scores_are_not_squashed():
    # torchmetrics' binary_auroc sigmoids these to 1.0 and returns 0.5; the pairwise answer is 3/4
    score = torch.tensor([20.0, 25.0, 30.0, 40.0])
    positive = torch.tensor([0, 1, 0, 1])
    assert ev.auroc(score, positive) == pytest.approx(0.75)


def test_misclassification_perfect_reversed_and_constant():
    correct = torch.tensor([True, True, False, True, False])
    perfect = (~correct).double()
    assert ev.misclassification_metrics(perfect, correct) == {"auroc": 1.0, "aupr": 1.0}
    assert ev.misclassification_metrics(-perfect, correct)["auroc"] == 0.0
    constant = ev.misclassification_metrics(torch.zeros(5), correct)
    # one ROC step from (0, 0) to (1, 1); precision of flagging everything = error rate
    assert constant == {"auroc": pytest.approx(0.5), "aupr": pytest.approx(0.4)}


def test_misclassification_without_errors_is_nan():
    result = ev.misclassification_metrics(torch.rand(10), torch.ones(10, dtype=torch.bool))
    assert np.isnan(result["auroc"]) and np.isnan(result["aupr"])


def test_bad_scores_raise_clear_errors():
    with pytest.raises(ValueError, match="score: expected finite"):
        ev.misclassification_metrics(torch.tensor([0.1, float("nan")]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="correct: expected 3 entries"):
        ev.misclassification_metrics(torch.rand(3), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="score_out: expected at least one sample"):
        ev.ood_metrics(torch.rand(3), torch.empty(0))
