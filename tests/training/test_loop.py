import csv
import math

import pytest
import torch

from clearmamba.training import TrainConfig, Trainer, epoch_indices, load_model, predict, warmup_cosine

from .conftest import checkpoint_config, tiny_model

FAST = {"batch_size": 4, "eval_batch_size": 8, "lr": 3e-3, "warmup_epochs": 1, "progress": False, "seed": 7}


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


def train(out, exams, epochs=2, resume=False, stop_after=None, head="evidential"):
    def interrupt(epoch, row):
        if stop_after is not None and epoch + 1 == stop_after:
            raise KeyboardInterrupt

    trainer = Trainer(tiny_model(head), TrainConfig(epochs=epochs, patience=0, **FAST), out, checkpoint_config(head))
    return trainer, trainer.fit(*exams, resume=resume, on_epoch_end=interrupt)


def test_resume_after_an_interruption_reproduces_the_uninterrupted_run(tmp_path, exams):
    straight, straight_result = train(tmp_path / "straight", exams)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "resumed", exams, stop_after=1)
    rows = list(csv.DictReader((tmp_path / "resumed" / "metrics.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["1"]
    resumed, resumed_result = train(tmp_path / "resumed", exams, resume=True)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert drop(straight_result.history) == drop(resumed_result.history)
    assert len(resumed_result.history) == 2


def test_training_writes_metrics_and_a_loadable_best_checkpoint(tmp_path, exams):
    trainer, result = train(tmp_path / "run", exams, epochs=3, head="softmax")
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").read_text().splitlines()))
    assert len(rows) == 3
    assert {"train_loss", "train_acc", "train_uncertainty", "val_nll", "val_acc", "lr"} <= set(rows[0])
    # 9 exams / batch 4 = 3 steps per epoch, 1 warm-up epoch; the CSV shows the lr of each epoch's last step
    expected_lr = [FAST["lr"] * warmup_cosine(3 * e + 2, 9, 3, 0.01) for e in range(3)]
    assert [float(r["lr"]) for r in rows] == pytest.approx(expected_lr)
    best = min(range(3), key=lambda i: float(rows[i]["val_nll"]))
    assert result.best_epoch == best + 1
    model, config = load_model(tmp_path / "run")
    assert config["epoch"] == best + 1 and config["classes"] == ["normal", "leakage", "staining"]
    prediction = predict(model, exams[1], batch_size=4)
    assert prediction.ids == exams[1].exam_id
    assert float(-prediction.probs[torch.arange(6), prediction.labels].log().mean()) == pytest.approx(
        float(rows[best]["val_nll"]), rel=1e-5
    )


def test_early_stopping_stops_when_validation_stops_improving(tmp_path, exams):
    # lr 0: only BatchNorm statistics move, so validation stops improving within a few epochs
    cfg = TrainConfig(epochs=30, patience=1, **{**FAST, "lr": 0.0})
    result = Trainer(tiny_model(), cfg, tmp_path / "run", checkpoint_config()).fit(*exams)
    nll = [row["val_nll"] for row in result.history]
    assert result.stopped_early and len(nll) < 30
    # stopped right after the first epoch that did not beat the best so far
    assert len(nll) == result.best_epoch + 1 and nll[-1] >= min(nll[:-1]) == nll[result.best_epoch - 1]
