"""RaP's post-hoc step in training: fitted after training, stored beside the weights, rebuilt identically."""

import json

import pytest
import torch

from clearmamba.training import TrainConfig, load_model, predict
from clearmamba.training.checkpoint import CheckpointError
from clearmamba.training.posthoc import POSTHOC_FILE, exam_features
from clearmamba.training.run import train_model

from .conftest import TINY, make_exams


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    sets = {"train": make_exams(12, seed=0, name="train"), "val": make_exams(9, seed=1, name="val")}
    out = tmp_path_factory.mktemp("posthoc") / "run"
    cfg = TrainConfig(epochs=1, batch_size=6, progress=False)
    model, config = train_model(sets, out, "clear_mamba_tiny", {k: v for k, v in TINY.items()
                                                                 if k not in ("num_classes", "in_chans")}, cfg)
    return sets, out, model, config


def test_evidential_runs_store_the_gate_and_reload_it_exactly(run):
    sets, out, model, config = run
    entry = config["posthoc"]
    assert (out / "checkpoint" / POSTHOC_FILE).is_file() and entry["sharpness"] > 0
    reloaded, reloaded_config = load_model(out)
    assert reloaded_config["posthoc"] == entry
    first, second = predict(model, sets["val"]), predict(reloaded, sets["val"])
    torch.testing.assert_close(first.evidence, second.evidence)
    # the gate scales evidence by exp(min(0, (log q - r) / w)) of the plain network's features
    plain, gate = reloaded.model.model, reloaded.model
    features = exam_features(plain, sets["val"])
    head = plain.head(features)
    log_q = gate.density.log_density(features)
    factor = torch.exp(torch.clamp((log_q - gate.reference) / gate.width, max=0)).float()
    expected = reloaded.scaler(type(head).from_evidence(head.evidence * factor[:, None], logits=head.logits))
    torch.testing.assert_close(second.evidence, expected.evidence)


def test_far_away_exams_get_less_evidence_than_training_exams(run):
    sets, _, model, _ = run
    far = make_exams(6, seed=3, name="far")
    far.frames.mul_(0).add_(1.0)  # all-white frames: nothing like the training exams
    near = predict(model, sets["train"]).evidence.sum(-1).median()
    assert predict(model, far).evidence.sum(-1).max() < near


def test_a_modified_posthoc_file_is_refused(run, tmp_path):
    _, out, _, config = run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out / "checkpoint", copy)
    data = bytearray((copy / POSTHOC_FILE).read_bytes())
    data[-1] ^= 0xFF
    (copy / POSTHOC_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=POSTHOC_FILE):
        load_model(copy)
    json.loads((copy / "model.json").read_text())  # the config itself is untouched
