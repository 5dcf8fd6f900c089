"""The one training loop: schedule, sampling, weight decay, early stopping, callbacks, any method."""

import math

import pytest
import torch
from torch import nn

from clearmamba.training import (
    EarlyStopping,
    EpochLog,
    EvidenceStatistics,
    TrainConfig,
    build_optimizer,
    epoch_indices,
    fit,
    no_weight_decay_names,
    predict,
    warmup_cosine,
)
from clearmamba.training.fit import Callback
from clearmamba.uncertainty import create_method

from .conftest import FAST, tiny_model


def test_warmup_then_cosine_closed_form():
    total, warm = 20, 4
    assert [warmup_cosine(s, total, warm, 0.1) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # halfway through the cosine part: min + (1 - min) / 2
    assert warmup_cosine(4 + 8, total, warm, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert warmup_cosine(total, total, warm, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(5, total, warm, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 16)))


def test_balanced_sampling_draws_every_class_equally_often():
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    drawn = torch.cat([labels[epoch_indices(labels, e, seed=0, balanced=True)] for e in range(5)])
    share = torch.bincount(drawn, minlength=3).double() / len(drawn)
    torch.testing.assert_close(share, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02, rtol=0)
    plain = labels[epoch_indices(labels, 0, seed=0, balanced=False)]
    assert torch.bincount(plain).tolist() == [900, 90, 10]


def test_ranks_get_disjoint_shards_covering_the_data():
    labels = torch.zeros(11, dtype=torch.long)
    shards = [epoch_indices(labels, 3, seed=1, balanced=False, rank=r, world_size=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 6
    assert set(torch.cat(shards).tolist()) == set(range(11))
    assert not torch.equal(shards[0], epoch_indices(labels, 4, seed=1, balanced=False, rank=0, world_size=2))


def test_weight_decay_skips_biases_norms_and_what_models_list():
    model = tiny_model()
    skipped = no_weight_decay_names(model)
    # the temporal Mamba's state matrix and MedMamba's A_logs / Ds (their no_weight_decay())
    assert "temporal.A_log" in skipped and "temporal.D" in skipped
    assert any(n.endswith("A_logs") for n in skipped) and any(n.endswith(".Ds") for n in skipped)
    decay, no_decay = build_optimizer(model, TrainConfig(weight_decay=0.1)).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert not decayed & skipped
    assert all(p.ndim > 1 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    adam = build_optimizer(model, TrainConfig(decoupled_weight_decay=False))
    assert type(adam) is torch.optim.Adam


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)


def _blobs(n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 4, generator=g) + 2.5 * y[:, None].float()
    return x, y


class Recorder(Callback):
    def __init__(self) -> None:
        self.lrs, self.epochs = [], []

    def on_batch_end(self, state, output, target, loss) -> None:
        self.lrs.append(state.optimizer.param_groups[0]["lr"])

    def on_epoch_end(self, state, row) -> None:
        self.epochs.append(row["epoch"])


def test_fractional_epochs_constant_schedule_and_callbacks():
    recorder = Recorder()
    cfg = TrainConfig(epochs=1.5, batch_size=16, lr=0.1, schedule="constant", grad_clip=0, patience=0)
    result = fit(create_method("softmax"), Linear, _blobs(), cfg, callbacks=[recorder])
    # 64 / 16 = 4 steps per epoch; 1.5 epochs = 6 steps, the second epoch cut at 2
    assert len(recorder.lrs) == 6 and set(recorder.lrs) == {0.1} and recorder.epochs == [1, 2]
    assert [round(r["epoch"]) for r in result.history[0]] == [1, 2]


def test_the_same_seed_gives_the_same_weights_and_a_deep_ensemble_gets_its_members():
    cfg = TrainConfig(epochs=10, batch_size=16, lr=0.1, patience=0, seed=3)
    a = fit(create_method("softmax"), Linear, _blobs(), cfg).model
    b = fit(create_method("softmax"), Linear, _blobs(), cfg).model
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    ensemble = fit(create_method("ensemble", num_members=3, vectorize=False), Linear, _blobs(), cfg)
    assert len(ensemble.members) == 3 and len(ensemble.history) == 3
    w = [m.model.fc.weight for m in ensemble.members]
    assert not torch.equal(w[0], w[1])  # member m starts from seed + m
    x, y = _blobs(32, seed=5)
    probs = torch.stack([predict(m, x).probs for m in ensemble.members]).mean(0)
    torch.testing.assert_close(predict(ensemble.model, x).probs, probs)
    assert predict(ensemble.model, x).predicted.eq(y).float().mean() > 0.9


def test_evidence_statistics_match_a_recount_over_the_epoch():
    x, y = _blobs()
    cfg = TrainConfig(epochs=1, batch_size=64, lr=1e-9, schedule="constant", patience=0, weight_decay=0)
    row = fit(create_method("evidential"), Linear, (x, y), cfg, callbacks=[EvidenceStatistics()]).history[0][0]
    # one full-batch step with lr ~ 0: the statistics are those of the initial model (seed cfg.seed) on all samples
    torch.manual_seed(cfg.seed)
    with torch.no_grad():
        prediction = create_method("evidential").prepare(Linear())(x)
    correct = prediction.predicted == y
    assert row["accuracy"] == pytest.approx(float(correct.float().mean()))
    assert row["p_right"] == pytest.approx(float(prediction.confidence[correct].mean()), rel=1e-5)
    assert row["u_wrong"] == pytest.approx(float(prediction.score("vacuity")[~correct].mean()), rel=1e-5)


def test_early_stopping_stops_and_restores_the_best_epoch(exams):
    # lr 0: only BatchNorm statistics move, so validation stops improving within a few epochs
    early = EarlyStopping(patience=1)
    cfg = FAST.with_(epochs=30, lr=1e-12)
    seen = []

    class Keep(Callback):
        def on_epoch_end(self, state, row):
            seen.append({k: v.clone() for k, v in state.model.state_dict().items()})

    lines = []
    result = fit(create_method("evidential"), lambda: tiny_model(), exams[0], cfg, val=exams[1],
                 callbacks=[early, Keep(), EpochLog("tiny", lines.append)])  # fmt: skip
    nll = [row["val_nll"] for row in result.history[0]]
    assert result.stopped_early and len(nll) < 30 and result.best_epoch == early.best_epoch
    assert len(nll) == result.best_epoch + 1 and nll[-1] >= min(nll[:-1]) == nll[result.best_epoch - 1]
    best = seen[result.best_epoch - 1]
    assert all(torch.equal(v, best[k]) for k, v in result.model.state_dict().items())
    assert lines[0] == "tiny: training on 9 exams, validating on 6; 30 epochs of 3 steps"
    assert lines[-1] == f"tiny: early stop at epoch {len(nll)} (best {result.best_epoch})"
    assert sum(line.startswith("tiny epoch ") for line in lines) == len(nll)
