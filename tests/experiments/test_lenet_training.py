import math

import pytest
import torch

from clearmamba.experiments.lenet import lenet
from clearmamba.training import LABML_RECIPE, EvidenceStatistics, fit
from clearmamba.uncertainty import PiecewiseLinear, Prediction, create_method
from clearmamba.uncertainty.mc_dropout import MCDropout


def test_lenet_parameter_count_and_outputs():
    model = lenet("softmax")
    # conv 20@5x5 (1 in), conv 50@5x5 (20 in), fc 800->500, fc 500->10, each with bias
    expected = (20 * 25 + 20) + (50 * 20 * 25 + 50) + (800 * 500 + 500) + (500 * 10 + 10)
    assert sum(p.numel() for p in model.parameters()) == expected
    out = model.eval()(torch.randn(4, 1, 28, 28))
    assert out.logits.shape == (4, 10)
    torch.testing.assert_close(out.probs, out.logits.softmax(-1))
    edl = lenet("evidential", evidence="relu").eval()(torch.randn(4, 1, 28, 28))
    assert (edl.evidence >= 0).all()
    torch.testing.assert_close(edl.evidence, torch.relu(edl.logits))
    torch.testing.assert_close(edl.probs, (edl.evidence + 1) / (edl.evidence + 1).sum(-1, keepdim=True))


def test_mc_dropout_samples_the_lenet_head():
    torch.manual_seed(0)
    model = lenet("softmax").eval()
    prediction = MCDropout(model, num_samples=6, mode="head").eval()(torch.randn(3, 1, 28, 28))
    assert prediction.members.shape == (6, 3, 10)
    assert prediction.members.std(0).max() > 1e-4  # dropout 0.5 really varies the passes


def test_evidence_statistics_match_a_hand_computation():
    evidence = torch.tensor([[4.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    target = torch.tensor([0, 0, 1])  # right, wrong, wrong
    stats = EvidenceStatistics()
    stats.on_batch_end(None, Prediction.from_evidence(evidence), target, torch.tensor(0.0))
    out = {}
    stats.on_epoch_end(None, out)
    # alpha = [5,1], [1,2], [4,1]; max p = 5/6, 2/3, 4/5; u = 2/6, 2/3, 2/5
    assert out["accuracy"] == pytest.approx(1 / 3)
    assert out["p_right"] == pytest.approx(5 / 6) and out["u_right"] == pytest.approx(1 / 3)
    assert out["p_wrong"] == pytest.approx((2 / 3 + 4 / 5) / 2) and out["u_wrong"] == pytest.approx((2 / 3 + 2 / 5) / 2)


def test_fit_feeds_the_schedule_fractional_epochs():
    seen = []
    schedule = PiecewiseLinear(total_epochs=2.0)

    def recording(epoch: float) -> float:
        seen.append(epoch)
        return schedule(epoch)

    x, y = torch.randn(20, 1, 28, 28), torch.randint(0, 10, (20,))
    method = create_method("evidential", loss="mll", kl_weight=1.0, annealing=recording)
    result = fit(method, lambda: lenet("evidential"), (x, y), LABML_RECIPE.with_(epochs=2.0, batch_size=8))
    assert seen == pytest.approx([0, 1 / 3, 2 / 3, 1, 4 / 3, 5 / 3])  # 3 steps per epoch, 2 epochs
    assert [h["epoch"] for h in result.history[0]] == [1, 2]
    # labml's schedule: lambda = 0.01 at 20 % of training, 1 at the end
    assert schedule(0.4) == pytest.approx(0.01) and schedule(2.0) == 1.0 and schedule(0.2) == pytest.approx(0.005)
    assert math.isfinite(result.history[0][-1]["train_loss"])
