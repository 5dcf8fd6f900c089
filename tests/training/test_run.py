"""The training job: run folders, resume that reproduces an uninterrupted run, and refusals that say what to do."""

import csv

import pytest
import torch

from clearmamba.data.sources import Source, examset_sha256
from clearmamba.errors import UserError
from clearmamba.training.fit import Callback
from clearmamba.training.run import RunFolderError

from .conftest import FAST, exam_source, make_exams, train_tiny


class Interrupt(Callback):
    def __init__(self, after: int) -> None:
        self.after = after

    def on_epoch_end(self, state, row) -> None:
        if row["epoch"] == self.after:
            raise KeyboardInterrupt


def test_resume_after_an_interruption_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    import clearmamba.training.run as run_module

    straight_model, straight = train_tiny(tmp_path / "straight", train=FAST.with_(epochs=3), posthoc=False)
    real_fit = run_module.fit

    def interrupted_fit(*args, callbacks=(), **kwargs):
        return real_fit(*args, callbacks=[*callbacks, Interrupt(after=2)], **kwargs)

    monkeypatch.setattr(run_module, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        train_tiny(tmp_path / "resumed", train=FAST.with_(epochs=3), posthoc=False)
    monkeypatch.undo()
    rows = list(csv.DictReader((tmp_path / "resumed" / "metrics.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and not (tmp_path / "resumed" / "checkpoint").exists()
    resumed_model, resumed = train_tiny(tmp_path / "resumed", train=FAST.with_(epochs=3), posthoc=False, resume=True)
    for (name, a), (_, b) in zip(straight_model.state_dict().items(), resumed_model.state_dict().items()):
        assert torch.equal(a, b), name
    assert straight.outcome.best_epoch == resumed.outcome.best_epoch
    straight_rows = (tmp_path / "straight" / "metrics.csv").read_text().splitlines()
    resumed_rows = (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()
    assert straight_rows[0] == resumed_rows[0] == "epoch,lr,train_loss,train_acc,val_nll,val_acc,seconds"
    drop = lambda rows: [r.rsplit(",", 1)[0] for r in rows]  # noqa: E731  (seconds differ)
    assert drop(straight_rows) == drop(resumed_rows)


def test_resume_with_other_settings_is_refused_saying_how_to_match(tmp_path):
    train_tiny(tmp_path / "run", train=FAST.with_(epochs=1), posthoc=False)
    with pytest.raises(RunFolderError, match=r"--lr: 0\.003 in the run, 0\.01 now.*--overwrite"):
        train_tiny(tmp_path / "run", train=FAST.with_(epochs=1, lr=0.01), posthoc=False, resume=True)
    source = exam_source()
    bigger = {name: make_exams(len(s), seed=i, name=name) for i, (name, s) in enumerate(source.sets.items())}
    for exams in bigger.values():
        frames = torch.nn.functional.interpolate(exams.frames.flatten(0, 1), size=24)
        exams.frames = frames.unflatten(0, (len(exams), 3))
    other = Source("exams", bigger, examset_sha256(*bigger.values()), "seconds")
    with pytest.raises(RunFolderError, match=r"--frame-size: \[16, 16\] in the run, \[24, 24\] now"):
        train_tiny(tmp_path / "run", train=FAST.with_(epochs=1), source=other, posthoc=False, resume=True)


def test_nothing_to_resume_and_an_existing_out_are_errors(tmp_path):
    with pytest.raises(RunFolderError, match="no resumable run"):
        train_tiny(tmp_path / "fresh", resume=True)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("keep me")
    with pytest.raises(RunFolderError, match="already exists.*--overwrite"):
        train_tiny(tmp_path / "used")
    assert (tmp_path / "used" / "notes.txt").read_text() == "keep me"


def test_training_on_nan_frames_stops_with_a_clear_error(tmp_path):
    source = exam_source()
    source.sets["train"].frames[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(UserError, match="diverged at epoch 1") as error:
        train_tiny(tmp_path / "nan", source=source)
    assert not (tmp_path / "nan" / "checkpoint").exists()
    assert "\n" not in str(error.value)
