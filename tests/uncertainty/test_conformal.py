import math

import numpy as np
import pytest
import torch

from clearmamba.uncertainty import SplitConformal, coverage, mean_set_size
from clearmamba.uncertainty.conformal import aps_scores, conformal_quantile, lac_sets


def _pool(n=12000, k=6, seed=0):
    # labels from the true distribution; the "model" is over-confident and noisy, so sets must adapt
    generator = torch.Generator().manual_seed(seed)
    true_logits = 1.2 * torch.randn(n, k, generator=generator)
    labels = torch.multinomial(true_logits.softmax(-1), 1, generator=generator).squeeze(-1)
    model_probs = (2.0 * true_logits + 0.5 * torch.randn(n, k, generator=generator)).softmax(-1)
    return model_probs, labels


@pytest.mark.parametrize("score, randomized", [("lac", False), ("aps", False), ("aps", True)])
def test_split_conformal_reaches_the_coverage_on_held_out_data(score, randomized):
    alpha, n_cal = 0.1, 1000
    probs, labels = _pool()
    coverages = []
    for split in range(10):
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(split))
        cal, test = order[:n_cal], order[n_cal:]
        conformal = SplitConformal(alpha, score, randomized).fit(probs[cal], labels[cal])
        sets = conformal.predict_sets(probs[test])
        coverages.append(coverage(sets, labels[test]))
    mean = float(np.mean(coverages))
    # E[coverage] lies in [1 - alpha, 1 - alpha + 1/(n+1)]; the mean of 10 splits has sd ~ 0.003
    assert 1 - alpha - 0.01 <= mean <= 1 - alpha + 1 / (n_cal + 1) + 0.012
    # the model's raw top-1 "set" covers far less: the sets did real work
    assert float((probs.argmax(-1) == labels).float().mean()) < 0.75
    assert 1.0 < mean_set_size(sets) < probs.shape[1]


def test_quantile_is_the_finite_sample_order_statistic():
    scores = torch.rand(57, generator=torch.Generator().manual_seed(3))
    for alpha in (0.05, 0.1, 0.3):
        level = math.ceil(58 * (1 - alpha)) / 57
        assert conformal_quantile(scores, alpha) == pytest.approx(
            np.quantile(scores.numpy(), level, method="inverted_cdf")
        )
    assert conformal_quantile(torch.rand(5), 0.1) == math.inf  # too few calibration points: every class


def test_aps_scores_by_hand():
    probs = torch.tensor([[0.5, 0.2, 0.3]])
    torch.testing.assert_close(aps_scores(probs), torch.tensor([[0.5, 1.0, 0.8]]))
    torch.testing.assert_close(aps_scores(probs, torch.tensor([0.5])), torch.tensor([[0.25, 0.9, 0.65]]))


def test_bad_inputs():
    with pytest.raises(ValueError, match="alpha"):
        SplitConformal(alpha=1.5)
    with pytest.raises(ValueError, match="probabilities"):
        SplitConformal().fit(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(RuntimeError, match="fit"):
        SplitConformal().predict_sets(torch.full((2, 2), 0.5))


def test_lac_sets_from_a_stored_quantile_equal_the_fitted_sets():
    probs, labels = _pool(n=600, seed=4)
    conformal = SplitConformal(0.1, "lac").fit(probs[:300], labels[:300])
    assert torch.equal(lac_sets(probs[300:], conformal.quantile), conformal.predict_sets(probs[300:]))
    by_hand = torch.tensor([[0.7, 0.2, 0.1]])
    assert lac_sets(by_hand, 0.8).tolist() == [[True, True, False]]  # 1 - p <= 0.8  <=>  p >= 0.2
