import math

import pytest
import torch

from clearmamba.active import acquisition_scores, select_top_k

OPPOSITE = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # two members, one sample, opposite one-hot


def test_bald_of_opposite_one_hot_members_is_ln2():
    assert acquisition_scores("bald", OPPOSITE).item() == pytest.approx(math.log(2), abs=1e-6)


def test_bald_of_identical_members_is_zero_while_entropy_is_not():
    p = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    same = p.expand(4, 2, 2)
    assert torch.allclose(acquisition_scores("bald", same), torch.zeros(2), atol=1e-6)
    assert acquisition_scores("entropy", same)[0].item() == pytest.approx(math.log(2), abs=1e-6)


def test_vote_entropy_and_variation_ratio_by_hand():
    # 3 members vote 0, 0, 1
    probs = torch.tensor([[[0.8, 0.2]], [[0.6, 0.4]], [[0.3, 0.7]]])
    v = torch.tensor([2 / 3, 1 / 3])
    assert acquisition_scores("vote_entropy", probs).item() == pytest.approx(float(-(v * v.log()).sum()), abs=1e-6)
    assert acquisition_scores("variation_ratio", probs).item() == pytest.approx(1 / 3, abs=1e-6)


def test_mean_kl_to_consensus_matches_torch_kl():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(5, 7, 3), -1)
    consensus = probs.mean(0)
    expected = torch.stack(
        [torch.nn.functional.kl_div(consensus.log(), probs[m], reduction="none").sum(-1) for m in range(5)]
    ).mean(0)
    assert torch.allclose(acquisition_scores("mean_kl", probs), expected, atol=1e-6)


def test_vacuity_and_random():
    alpha = torch.tensor([[1.0, 1.0, 1.0], [10.0, 1.0, 1.0]])
    assert torch.allclose(acquisition_scores("vacuity", alpha), torch.tensor([1.0, 0.25]))
    g = torch.Generator().manual_seed(3)
    r = acquisition_scores("random", torch.rand(6, 3), generator=g)
    assert r.shape == (6,) and len(set(r.tolist())) == 6


def test_select_top_k_skips_labelled():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.8])
    assert select_top_k(scores, 2).tolist() == [1, 3]
    assert select_top_k(scores, 2, exclude=torch.tensor([1])).tolist() == [3, 2]
    with pytest.raises(ValueError, match="only 1 unlabelled"):
        select_top_k(scores, 2, exclude=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="unknown acquisition"):
        acquisition_scores("margin", scores)
