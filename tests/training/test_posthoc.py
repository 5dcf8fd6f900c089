"""RaP's post-hoc step in training: fitted after training, stored beside the weights, rebuilt identically."""

import json

import pytest
import torch

from clearmamba.training import TrainConfig, load_run, predict
from clearmamba.training.checkpoint import CheckpointError
from clearmamba.training.posthoc import POSTHOC_FILE, features

from .conftest import exam_source, make_exams, train_tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    source = exam_source(n_train=12, n_val=9)
    out = tmp_path_factory.mktemp("posthoc") / "run"
    model, record = train_tiny(out, train=TrainConfig(epochs=1, batch_size=6), source=source)
    return source.sets, out, model, record


def test_evidential_runs_store_the_gate_and_reload_it_exactly(run):
    sets, out, model, record = run
    entry = record.posthoc
    assert (out / "checkpoint" / POSTHOC_FILE).is_file() and entry.sharpness > 0
    reloaded, reloaded_record = load_run(out)
    assert reloaded_record.posthoc == entry
    first, second = predict(model, sets["val"]), predict(reloaded, sets["val"])
    torch.testing.assert_close(first.evidence, second.evidence)
    # the gate scales evidence by exp(min(0, (log q - r) / w)) of the plain network's features
    plain, gate = reloaded.model.model, reloaded.model
    vectors = features(plain, sets["val"])
    head = plain.head(vectors)
    log_q = gate.density.log_density(vectors)
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
    _, out, _, _ = run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out / "checkpoint", copy)
    data = bytearray((copy / POSTHOC_FILE).read_bytes())
    data[-1] ^= 0xFF
    (copy / POSTHOC_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=POSTHOC_FILE):
        load_run(copy)
    json.loads((copy / "model.json").read_text())  # the config itself is untouched
