import csv

import numpy as np
import torch
from PIL import Image

from clearmamba.data import read_image as loader_read_image
from clearmamba.training.sources import load_data, read_image


def _manifest(tmp_path, n_exams=24):
    rng = np.random.default_rng(0)
    rows = []
    for e in range(n_exams):
        for t in range(2):
            name = f"e{e}_{t}.png"
            Image.fromarray((rng.random((20, 24)) * 255).astype(np.uint8)).save(tmp_path / name)
            split = "test" if e >= n_exams - 4 else ""
            rows.append({"path": name, "exam_id": f"E{e}", "patient_id": f"P{e // 3}", "frame_time": t,
                         "label": "ab"[e % 2], "split": split})  # fmt: skip
    with open(tmp_path / "m.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path / "m.csv"


def test_manifest_split_column_is_kept_and_drawn_splits_never_share_a_patient(tmp_path):
    sets = load_data(str(_manifest(tmp_path)), frame_size=16)
    assert sorted(sets["test"].exam_id) == ["E20", "E21", "E22", "E23"]
    assert set(sets) == {"train", "val", "test"}
    assert sets["train"].frames.shape[1:] == (2, 1, 16, 16)
    patients = {name: set(exams.patient_id) for name, exams in sets.items()}
    assert not patients["train"] & patients["val"]
    assert sum(len(s) for s in sets.values()) == 24


def test_prediction_reads_images_as_the_loaders_do(tmp_path):
    _manifest(tmp_path, n_exams=1)
    path = tmp_path / "e0_0.png"
    expected = torch.from_numpy(loader_read_image(path, channels=1, size=16))
    assert torch.equal(read_image(path, (16, 16), 1), expected)
    assert read_image(path, (10, 12), 3).shape == (3, 10, 12)
