import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr

from clearmamba import evaluation as ev


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    score = np.round(rng.random(300), 1)
    nll = np.round(score + rng.normal(scale=0.5, size=300), 1)
    error = rng.random(300) < score
    assert ev.spearman(score, nll) == pytest.approx(spearmanr(score, nll).statistic, abs=1e-12)
    assert ev.spearman(torch.from_numpy(score), torch.from_numpy(error)) == pytest.approx(
        spearmanr(score, error).statistic, abs=1e-12
    )


def test_average_ranks_match_scipy_rankdata():
    x = torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    np.testing.assert_allclose(ev.average_ranks(x).numpy(), rankdata(x.numpy()))


def test_spearman_monotone_and_constant():
    score = torch.arange(10.0)
    assert ev.spearman(score, score.exp()) == pytest.approx(1.0)
    assert ev.spearman(score, -score) == pytest.approx(-1.0)
    assert np.isnan(ev.spearman(score, torch.ones(10)))
    with pytest.raises(ValueError, match="lengths"):
        ev.spearman(score, score[:-1])


def test_wrong_answer_confidence_by_hand():
    # wrong: confidences 0.9, 0.6 -> median 0.75; right: 0.8, 0.7, 0.55 -> 0.7
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.8, 0.2], [0.3, 0.7], [0.55, 0.45]])
    labels = torch.tensor([1, 0, 0, 1, 0])
    result = ev.wrong_answer_confidence(probs, labels)
    assert result["wrong_median"] == pytest.approx(0.75)
    assert result["right_median"] == pytest.approx(0.7)
    assert (result["n_wrong"], result["n_right"]) == (2, 3)


def test_wrong_answer_confidence_matches_numpy_median(predictions):
    probs, labels = predictions
    confidence, predicted = probs.max(-1)
    wrong = (predicted != labels).numpy()
    result = ev.wrong_answer_confidence(probs, labels)
    assert result["wrong_median"] == pytest.approx(np.median(confidence.numpy()[wrong]), abs=1e-7)
    assert result["right_median"] == pytest.approx(np.median(confidence.numpy()[~wrong]), abs=1e-7)


def test_no_wrong_answers_gives_nan():
    result = ev.wrong_answer_confidence(torch.tensor([[0.9, 0.1]]), torch.tensor([0]))
    assert np.isnan(result["wrong_median"]) and result["n_wrong"] == 0
