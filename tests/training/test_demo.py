"""The demo trains its three twins side by side in worker processes: the same weights as one after another."""

import pytest
import torch
from safetensors.torch import load_file

from clearmamba.data.sources import training_splits
from clearmamba.training import TrainConfig
from clearmamba.training.demo import train_twins

from .conftest import exam_source, tiny_config


@pytest.mark.slow
def test_parallel_twins_train_exactly_like_sequential_ones(tmp_path):
    torch.set_num_threads(1)  # the workers run at one thread; so does the sequential reference here
    source = exam_source()
    data = (source, *training_splits(source, 0))
    quick = TrainConfig(epochs=1, batch_size=4, eval_batch_size=8, patience=0)
    jobs = {"evidential": tiny_config("evidential", quick, posthoc=False), "softmax": tiny_config("softmax", quick)}
    lines = []
    train_twins(jobs, tmp_path / "seq", data, workers=1, log=lines.append)
    train_twins(jobs, tmp_path / "par", data, workers=2, log=lines.append)
    assert any("side by side (2 processes" in line for line in lines)
    for name in jobs:
        a = load_file(tmp_path / "seq" / name / "checkpoint" / "model.safetensors")
        b = load_file(tmp_path / "par" / name / "checkpoint" / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
