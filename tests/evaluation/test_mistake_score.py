"""Choosing the mistake score on held-out folds; the logistic combination against scikit-learn."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from clearmamba.evaluation import aurc
from clearmamba.evaluation.mistake_score import (
    COMBINATION,
    choose_mistake_score,
    fit_logistic_combination,
    mistake_score,
)
from clearmamba.evaluation.redraws import synthetic_predictions
from clearmamba.uncertainty import Prediction


def _entropy_knows_better(n=2000, seed=0):
    # top probability 0.6 for every exam (1 - max p cannot rank anything); the rest split as (a, 0.4 - a):
    # exams with an even split (high entropy) are wrong half the time, the others 2 % of the time
    g = torch.Generator().manual_seed(seed)
    a = 0.4 * torch.rand(n, generator=g, dtype=torch.float64)
    probs = torch.stack([torch.full_like(a, 0.6), a, 0.4 - a], -1)
    even = (a - 0.2).abs() < 0.05
    wrong = torch.rand(n, generator=g, dtype=torch.float64) < torch.where(even, 0.5, 0.02)
    return Prediction(probs=probs), wrong


def test_a_score_that_wins_on_held_out_folds_replaces_the_default():
    prediction, wrong = _entropy_knows_better()
    choice = choose_mistake_score(prediction, wrong, ("msp", "entropy"), folds=5)
    assert choice.default == "msp" and choice.chosen == "entropy"
    by_name = {c.name: c for c in choice.candidates}
    assert by_name["entropy"].folds_won == 5
    # 1 - max p ties everywhere: its AURC is the error rate, on every fold
    assert by_name["msp"].held_out_aurc == pytest.approx(float(wrong.double().mean()), abs=0.02)
    assert by_name["entropy"].held_out_aurc < 0.5 * by_name["msp"].held_out_aurc


def test_the_default_stays_when_no_candidate_wins():
    # every candidate is a monotone function of the same number: identical rankings, nobody wins a fold
    prediction = synthetic_predictions(1000, seed=3)
    wrong = prediction.predicted != prediction.labels
    choice = choose_mistake_score(prediction, wrong, ("msp", "entropy"), folds=5)
    assert choice.chosen == "msp" and all(c.folds_won == 0 for c in choice.candidates)
    assert choice.candidates[0].held_out_aurc == pytest.approx(choice.candidates[1].held_out_aurc)


def test_logistic_combination_matches_scikit_learn():
    g = torch.Generator().manual_seed(5)
    evidence = torch.rand(500, 3, generator=g, dtype=torch.float64) * torch.rand(500, 1, generator=g) * 30
    prediction = Prediction.from_evidence(evidence)
    wrong = torch.rand(500, generator=g, dtype=torch.float64) < prediction.score("msp")
    features = ("msp", "entropy", "mutual_info")
    fitted = fit_logistic_combination(prediction, wrong, features)
    x = np.stack([np.log(np.maximum(prediction.score(f).numpy(), 1e-12)) for f in features], -1)
    z = (x - x.mean(0)) / x.std(0)
    reference = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(z, wrong.numpy())
    np.testing.assert_allclose(fitted.weights, reference.coef_[0], atol=1e-4)
    assert fitted.bias == pytest.approx(reference.intercept_[0], abs=1e-4)
    score = mistake_score(prediction, COMBINATION, fitted).numpy()
    np.testing.assert_allclose(score, reference.decision_function(z), atol=1e-4)
    assert fit_logistic_combination(prediction, torch.zeros(500, dtype=torch.bool), features) is None


def test_combination_is_a_candidate_only_when_asked():
    prediction, wrong = _entropy_knows_better(seed=1)
    plain = choose_mistake_score(prediction, wrong, ("msp", "entropy"))
    combined = choose_mistake_score(prediction, wrong, ("msp", "entropy"), combine=True)
    assert COMBINATION not in {c.name for c in plain.candidates}
    assert COMBINATION in {c.name for c in combined.candidates}
    if combined.chosen == COMBINATION:  # its refit on all exams ranks at least as well as 1 - max p
        assert aurc(mistake_score(prediction, COMBINATION, combined.combination), ~wrong) < aurc(
            prediction.score("msp"), ~wrong
        )


def test_no_candidate_available_is_named():
    with pytest.raises(ValueError, match=r"none of \['vacuity'\] is available"):
        choose_mistake_score(Prediction(probs=torch.full((4, 2), 0.5)), torch.zeros(4, dtype=torch.bool), ("vacuity",))
