import math

import pytest
import torch

from clearmamba.experiments.lenet import lenet
from clearmamba.experiments.training import EvidenceStatistics, TrainConfig, optimizer_step, train
from clearmamba.uncertainty import EvidentialLoss, PiecewiseLinear, Prediction
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
    stats.update(Prediction.from_evidence(evidence), target)
    out = stats.compute()
    # alpha = [5,1], [1,2], [4,1]; max p = 5/6, 2/3, 4/5; u = 2/6, 2/3, 2/5
    assert out["accuracy"] == pytest.approx(1 / 3)
    assert out["p_right"] == pytest.approx(5 / 6) and out["u_right"] == pytest.approx(1 / 3)
    assert out["p_wrong"] == pytest.approx((2 / 3 + 4 / 5) / 2) and out["u_wrong"] == pytest.approx((2 / 3 + 2 / 5) / 2)


def test_train_feeds_the_schedule_fractional_epochs():
    seen = []
    schedule = PiecewiseLinear(total_epochs=2.0)
    inner = EvidentialLoss("mll", kl_weight=1.0, annealing=schedule)

    def loss(prediction, target, epoch):
        seen.append(epoch)
        return inner(prediction, target, epoch=epoch)

    x, y = torch.randn(20, 1, 28, 28), torch.randint(0, 10, (20,))
    history = train(lenet("evidential"), loss, x, y, TrainConfig(epochs=2.0, batch_size=8))
    assert seen == pytest.approx([0, 1 / 3, 2 / 3, 1, 4 / 3, 5 / 3])  # 3 steps per epoch, 2 epochs
    assert [h["epoch"] for h in history] == [1.0, 2.0]
    # labml's schedule: lambda = 0.01 at 20 % of training, 1 at the end
    assert schedule(0.4) == pytest.approx(0.01) and schedule(2.0) == 1.0 and schedule(0.2) == pytest.approx(0.005)


def test_optimizer_step_applies_warmup_cosine_and_clipping_only_when_asked():
    def one_step(config, step):
        model = torch.nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            model.weight.zero_()
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
        model.weight.grad = torch.tensor([[3.0, 4.0]])  # norm 5
        optimizer_step(model, optimizer, config, step, total_steps=10, steps_per_epoch=4)
        return optimizer.param_groups[0]["lr"], model.weight.detach().clone()

    lr, weight = one_step(TrainConfig(lr=0.1), step=0)  # labml's recipe: untouched
    assert lr == 0.1 and torch.allclose(weight, torch.tensor([[-0.3, -0.4]]))
    lr, weight = one_step(TrainConfig(lr=0.1, warmup_epochs=1.0, grad_clip=1.0), step=0)
    # warm-up: step 1 of 4 -> lr / 4; clipping: gradient scaled to norm 1 -> (0.6, 0.8)
    assert lr == pytest.approx(0.025) and torch.allclose(weight, -0.025 * torch.tensor([[0.6, 0.8]]), atol=1e-6)
    lr, _ = one_step(TrainConfig(lr=0.1, warmup_epochs=1.0), step=9)  # cosine end: min ratio 0.01
    assert lr == pytest.approx(0.1 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 5 / 6))))
