import math

import pytest
import torch

from clearmamba.uncertainty import Prediction, RaPHead, SoftmaxHead, create_head
from clearmamba.uncertainty.prediction import SCORES


def test_softmax_prediction_scores():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    pred = Prediction.from_logits(logits)
    assert set(pred.available_scores()) == {"msp", "entropy", "max_logit", "energy"}
    assert torch.allclose(pred.score("msp"), 1 - logits.softmax(-1).max(-1).values)
    assert pred.score("entropy")[1].item() == pytest.approx(math.log(3), abs=1e-6)
    assert torch.allclose(pred.score("energy"), -torch.logsumexp(logits, -1))
    with pytest.raises(ValueError, match="not defined"):
        pred.score("vacuity")


def test_evidential_prediction_scores_are_oriented_uncertain_high():
    sure = torch.tensor([[100.0, 0.0, 0.0]])
    unsure = torch.tensor([[0.0, 0.0, 0.0]])
    both = Prediction.from_evidence(torch.cat([sure, unsure]))
    for name in both.available_scores():
        s = both.score(name)
        assert s[1] > s[0], name  # no evidence must look more uncertain under every score
    assert both.score("vacuity")[1].item() == pytest.approx(1.0)


def test_member_prediction_scores():
    members = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    pred = Prediction.from_members(members)
    assert pred.score("mutual_info").item() == pytest.approx(math.log(2), abs=1e-6)
    assert {"variation_ratio", "disagreement"} <= set(pred.available_scores())


def test_cat_and_detach():
    a = Prediction.from_evidence(torch.rand(2, 3), labels=torch.tensor([0, 1]), ids=["a", "b"])
    b = Prediction.from_evidence(torch.rand(3, 3), labels=torch.tensor([2, 1, 0]), ids=["c", "d", "e"])
    joined = Prediction.cat([a, b])
    assert len(joined) == 5 and joined.ids == ["a", "b", "c", "d", "e"]
    assert torch.equal(joined.evidence[2:], b.evidence)
    with pytest.raises(ValueError, match="only some"):
        Prediction.cat([a, Prediction.from_logits(torch.rand(1, 3))])


def test_validation_errors():
    with pytest.raises(ValueError, match="batch, classes"):
        Prediction(probs=torch.rand(3))
    with pytest.raises(ValueError, match="labels"):
        Prediction(probs=torch.rand(3, 2), labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unknown uncertainty score"):
        Prediction.from_logits(torch.rand(2, 2)).score("nope")


def test_heads_share_the_container():
    torch.manual_seed(0)
    features = torch.randn(4, 8)
    rap = create_head("evidential", 8, 3)
    soft = create_head("softmax", 8, 3)
    assert isinstance(rap, RaPHead) and isinstance(soft, SoftmaxHead)
    p_rap, p_soft = rap(features), soft(features)
    assert p_rap.evidence is not None and (p_rap.evidence >= 0).all()
    assert torch.allclose(p_rap.probs.sum(-1), torch.ones(4))
    assert torch.allclose(p_rap.probs, p_rap.alpha / p_rap.alpha.sum(-1, keepdim=True))
    assert p_soft.evidence is None and torch.allclose(p_soft.probs.sum(-1), torch.ones(4))
    with pytest.raises(ValueError, match="unknown head"):
        create_head("gaussian", 8, 3)


def test_every_score_has_a_formula_comment_entry():
    assert set(SCORES) >= {"msp", "entropy", "mutual_info", "vacuity", "max_logit", "energy"}
