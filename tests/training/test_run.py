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


def test_invariant_steps_and_camera_augmentation_travel_in_the_record(tmp_path):
    from dataclasses import replace

    from clearmamba.data.camera_family import TRAINING_FAMILY, CameraAugment
    from clearmamba.data.invariant import INVARIANT
    from clearmamba.data.sources import training_splits
    from clearmamba.training import load_run
    from clearmamba.training.inference import predict_files
    from clearmamba.training.run import CameraBatches, train_run

    from .conftest import tiny_config

    source = exam_source()
    data = (source, *training_splits(source, 0))
    cfg = replace(tiny_config("evidential", FAST.with_(epochs=1), posthoc=False), intensity=INVARIANT,
                  camera_augment=CameraAugment(TRAINING_FAMILY))  # fmt: skip
    _, record = train_run(cfg, tmp_path / "run", data=data, log=lambda _: None)
    model, loaded = load_run(tmp_path / "run")
    assert loaded.preprocessing.intensity == INVARIANT and loaded.augmentation == CameraAugment(TRAINING_FAMILY)
    # each exam of a batch through its own camera, the intensity steps after it
    frames, times, mask = (x[:4] for x in (source.sets["train"].frames, source.sets["train"].frame_times,
                                           source.sets["train"].mask))  # fmt: skip
    augmented, _, _ = CameraBatches(CameraAugment(TRAINING_FAMILY), INVARIANT)(
        (frames, times, mask), torch.Generator().manual_seed(0))
    plain = torch.stack([INVARIANT(frames[i], mask[i]) for i in range(4)])
    assert augmented.shape == plain.shape and not torch.allclose(augmented, plain)
    # predict applies the record's steps: an exam twice as bright gives the same answer
    from PIL import Image

    for name, gain in (("dim", 0.4), ("bright", 0.8)):
        folder = tmp_path / name
        folder.mkdir()
        for t in range(3):
            pixels = (source.sets["test"].frames[0, t, 0] * gain * 255).round().clamp(0, 255).byte().numpy()
            Image.fromarray(pixels).save(folder / f"f{t}.png")
    seen = []

    class Spy(torch.nn.Module):  # records what the model is given
        def forward(self, x, times, mask):
            seen.append(x.clone())
            return model(x, times, mask)

    results, errors = predict_files(Spy(), loaded, [tmp_path / "dim", tmp_path / "bright"])
    assert not errors and len(results) == 2
    # twice the light on disk, the same input to the model: the steps removed the gain (up to 8-bit rounding)
    assert seen[1].mean() > 0.1 and (seen[0] - seen[1]).abs().mean() < 0.01  # raw: means 2x apart
