"""Checkpoints are safetensors bound to their typed run record: edits, swaps and pickles are refused; a crash while
writing leaves the previous checkpoint loadable."""

import json
import pickle
import shutil

import pytest
import torch

from clearmamba.serialize import from_json, to_json
from clearmamba.training import CheckpointError, RunRecord, load_run
from clearmamba.training import checkpoint as ckpt
from clearmamba.training.record import canonical_json

from .conftest import make_exams, train_tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ck") / "run"
    model, record = train_tiny(out)
    return out, model, record


def copy_of(run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(run[0] / "checkpoint", out)
    return out


def edit_record(folder, change):
    path = folder / "model.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def test_round_trip_gives_the_same_predictions_and_record(run):
    out, model, record = run
    loaded, loaded_record = load_run(out)
    assert canonical_json(loaded_record) == canonical_json(record)  # (NaN fields compare equal only as text)
    exams = make_exams(4, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(loaded(exams.frames, exams.frame_times, exams.mask).probs,
                                   model(exams.frames, exams.frame_times, exams.mask).probs, rtol=0, atol=0)
    assert record.versions.torch == torch.__version__ and record.preprocessing.frame_size == (16, 16)
    assert record.preprocessing.typical_frame_times == (0.0, 30.0, 60.0)
    assert record.data.test_exam_ids == tuple(f"test-{i}" for i in range(3))
    assert canonical_json(from_json(RunRecord, json.loads(json.dumps(to_json(record))))) == canonical_json(record)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (out / "checkpoint").iterdir()}
    assert set(modes.values()) == {0o644}, modes  # shared like any other output


@pytest.mark.parametrize("edit", [
    lambda c: c["record"]["classes"].reverse(),
    lambda c: c["record"]["referral"].update(mistake_threshold=1e9),
    lambda c: c["record"]["posthoc"].update(sha256="0" * 64),
    lambda c: c["record"]["posthoc"].pop("sha256"),
    lambda c: c["record"]["preprocessing"].update(frame_size=[32, 32]),
], ids=["classes permuted", "threshold", "posthoc hash", "posthoc hash removed", "frame size"])
def test_an_edited_record_is_refused_in_one_line(run, tmp_path, edit):
    folder = copy_of(run, tmp_path)
    edit_record(folder, edit)
    with pytest.raises(CheckpointError, match="edited") as error:
        load_run(folder)
    assert "\n" not in str(error.value)


def test_edited_record_with_a_recomputed_hash_is_still_caught_by_the_weights(run, tmp_path):
    folder = copy_of(run, tmp_path)

    def edit(config):
        config["record"]["referral"]["mistake_threshold"] = 1e9
        config["record_sha256"] = ckpt.record_sha256_of(config["record"])

    edit_record(folder, edit)
    with pytest.raises(CheckpointError, match="another record"):
        load_run(folder)


def test_files_must_be_plain_names_inside_the_folder(run, tmp_path):
    folder = copy_of(run, tmp_path)
    edit_record(folder, lambda c: c["weights"].update(file="/etc/passwd"))
    with pytest.raises(CheckpointError, match="plain file name"):
        load_run(folder)
    edit_record(folder, lambda c: c["weights"].update(file="../copy/model.safetensors"))
    with pytest.raises(CheckpointError, match="plain file name"):
        load_run(folder)
    edit_record(folder, lambda c: c["weights"].pop("sha256"))
    with pytest.raises(CheckpointError, match="weights.sha256"):
        load_run(folder)


def test_tampered_weights_and_posthoc_files_are_refused_naming_the_file(run, tmp_path):
    for name in ("model.safetensors", "posthoc.safetensors"):
        folder = copy_of(run, tmp_path / name)
        data = bytearray((folder / name).read_bytes())
        data[-3] ^= 0xFF
        (folder / name).write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match=rf"{name}.*SHA-256"):
            load_run(folder)


def test_class_names_must_match_the_head():
    from clearmamba.training.record import ModelSpec

    with pytest.raises(ValueError, match="5 names for a model with 6 outputs"):
        six_outputs = ModelSpec("clear_mamba_tiny", {"num_classes": 6})
        RunRecord(**{**_fields(), "classes": tuple("abcde"), "model": six_outputs})
    RunRecord(**_fields())  # the consistent record is accepted


def _fields():
    from clearmamba.data.sources import SplitRule
    from clearmamba.training import TrainConfig
    from clearmamba.training.record import DataSpec, MethodSpec, ModelSpec, Outcome, Preprocessing, Versions

    return {"classes": ("a", "b"), "model": ModelSpec("clear_mamba_tiny", {"num_classes": 2}),
            "preprocessing": Preprocessing((16, 16), 1, 3), "method": MethodSpec("softmax", {}),
            "train": TrainConfig(), "data": DataSpec("x", "h", "h", SplitRule((), (), 0), 1, 1, ()),
            "outcome": Outcome(1, 1, False, 0.0, 1.0, 0.0), "versions": Versions.current()}  # fmt: skip


@pytest.mark.parametrize("name", ["model.pt", "model.safetensors"])
def test_pickle_checkpoints_are_refused_without_unpickling(run, tmp_path, name):
    folder = copy_of(run, tmp_path)

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    target = folder / name
    target.write_bytes(pickle.dumps(Boom(), protocol=4))
    with pytest.raises(CheckpointError, match=rf"{name}.*pickle"):
        load_run(target)
    if name == "model.safetensors":
        with pytest.raises(CheckpointError, match="pickle"):
            load_run(folder)
    lone = tmp_path / "lone"
    lone.mkdir()
    torch.save({"w": torch.zeros(1)}, lone / "weights.pth")
    with pytest.raises(CheckpointError, match=r"weights\.pth"):
        load_run(lone)


def test_a_crash_between_the_files_of_a_checkpoint_leaves_the_previous_one(run, tmp_path, monkeypatch):
    out, model, record = run
    folder = copy_of(run, tmp_path)
    before = (folder / "model.json").read_bytes()
    calls = []

    def dies_after_the_weights(path, data, mode=0o600):
        calls.append(path.name)
        if len(calls) == 2:  # the weights are written, the record is not: the process dies here
            raise KeyboardInterrupt
        real(path, data, mode)

    real = ckpt.atomic_write_bytes
    monkeypatch.setattr(ckpt, "atomic_write_bytes", dies_after_the_weights)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(folder, model.model.model, record)
    monkeypatch.undo()
    assert (folder / "model.json").read_bytes() == before
    load_run(folder)  # the previous checkpoint is whole
    leftovers = [p for p in folder.parent.iterdir() if ckpt.TMP_MARK in p.name]
    assert leftovers and ckpt.clean_stale(folder.parent) and not any(ckpt.TMP_MARK in p.name
                                                                     for p in folder.parent.iterdir())


def test_a_crash_between_the_two_renames_is_recovered(run, tmp_path):
    (tmp_path / "run").mkdir()
    shutil.copytree(run[0] / "checkpoint", tmp_path / "run" / "checkpoint")
    moved = tmp_path / "run" / f".checkpoint.old{ckpt.TMP_MARK}123"
    (tmp_path / "run" / "checkpoint").rename(moved)  # the old folder was moved aside, the new one never renamed in
    load_run(tmp_path / "run")  # reads the moved-aside previous version
    ckpt.clean_stale(tmp_path / "run")
    assert (tmp_path / "run" / "checkpoint").is_dir() and not moved.exists()
    load_run(tmp_path / "run")
