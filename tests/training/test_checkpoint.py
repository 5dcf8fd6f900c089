import pickle

import pytest
import torch

from clearmamba.training import CheckpointError, load_model, save_checkpoint
from clearmamba.training.checkpoint import load_training_state, save_training_state

from .conftest import checkpoint_config, make_exams, tiny_model


def test_round_trip_gives_the_same_predictions_and_config(tmp_path):
    model = tiny_model().eval()
    save_checkpoint(tmp_path / "ck", model, checkpoint_config())
    loaded, config = load_model(tmp_path / "ck")
    exams = make_exams(4)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(exams.frames, exams.frame_times, exams.mask).probs,
            model(exams.frames, exams.frame_times, exams.mask).probs,
            rtol=0,
            atol=0,
        )
    assert config["arch"] == "clear_mamba_tiny" and config["versions"]["torch"] == torch.__version__
    assert not list(tmp_path.glob("ck/*.tmp"))


def test_tampered_weights_are_refused_naming_the_file(tmp_path):
    save_checkpoint(tmp_path / "ck", tiny_model(), checkpoint_config())
    weights = tmp_path / "ck" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*SHA-256"):
        load_model(tmp_path / "ck")


@pytest.mark.parametrize("name", ["model.pt", "model.safetensors"])
def test_pickle_checkpoints_are_refused_without_unpickling(tmp_path, name):
    folder = tmp_path / "ck"
    save_checkpoint(folder, tiny_model(), checkpoint_config())

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    target = folder / name
    target.write_bytes(pickle.dumps(Boom(), protocol=4))
    with pytest.raises(CheckpointError, match=rf"{name}.*pickle"):
        load_model(target)
    if name == "model.safetensors":
        with pytest.raises(CheckpointError, match="pickle"):
            load_model(folder)
    torch.save(tiny_model().state_dict(), tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match=r"weights\.pth"):
        load_model(tmp_path)


def test_training_state_round_trip_restores_optimizer_and_rng(tmp_path):
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    exams = make_exams(3)
    model(exams.frames, exams.frame_times, exams.mask).probs.sum().backward()
    optimizer.step()
    rng = torch.get_rng_state()
    save_training_state(tmp_path / "last", model, checkpoint_config(), optimizer, {"epoch": 0, "history": []})
    weights, _, optimizer_state, progress = load_training_state(tmp_path / "last")
    fresh = torch.optim.AdamW(tiny_model(seed=1).parameters(), lr=1e-3)
    fresh.load_state_dict(optimizer_state)
    original, restored = optimizer.state_dict()["state"], fresh.state_dict()["state"]
    assert sorted(original) == sorted(restored)
    for index, a in original.items():
        b = restored[index]
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"]) and torch.equal(a["step"], b["step"])
    assert torch.equal(progress["rng_torch"], rng)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
