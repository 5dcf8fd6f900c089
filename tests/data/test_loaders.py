"""Real-data loaders: round trips through files written here, group splits, named errors."""

from __future__ import annotations

import csv
import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clearmamba.data import mnist
from clearmamba.data.angiography import SimulatorConfig, simulate_exams
from clearmamba.data.loaders import DataError, load_image_folder, load_manifest
from clearmamba.data.splits import group_split, group_split_indices

FIELDS = ["path", "exam_id", "patient_id", "eye", "modality", "frame_time", "label"]


@pytest.fixture(scope="module")
def small_exams():
    cfg = SimulatorConfig(size=16, frames=4, min_frames=2)
    return simulate_exams(6, cfg, seed=9, anatomy_seed=0)


def _quantised(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 255) / 255


def _write_png(path: Path, frame: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((torch.round(frame[0] * 255)).numpy().astype(np.uint8), mode="L").save(path)


def _write_manifest(tmp: Path, exams, rows_out: list[dict] | None = None) -> Path:
    rows = []
    for i in range(len(exams)):
        for j in range(int(exams.mask[i].sum())):
            name = f"img/{exams.exam_id[i]}_{j}.png"
            _write_png(tmp / name, exams.frames[i, j])
            rows.append(
                {
                    "path": name,
                    "exam_id": exams.exam_id[i],
                    "patient_id": exams.patient_id[i],
                    "eye": exams.eye[i],
                    "modality": exams.modality[i],
                    "frame_time": f"{float(exams.frame_times[i, j]):.4f}",
                    "label": exams.class_names[int(exams.labels[i])],
                }
            )
    rows = rows[::-1]  # frames listed out of order: the loader sorts by frame_time
    if rows_out is not None:
        rows = rows_out(rows) if callable(rows_out) else rows_out
    return _write_csv(tmp / "manifest.csv", rows)


def _write_csv(path: Path, rows: list[dict], fields=FIELDS) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_manifest_round_trip(tmp_path, small_exams):
    loaded = load_manifest(_write_manifest(tmp_path, small_exams), class_names=small_exams.class_names)
    order = [loaded.exam_id.index(e) for e in small_exams.exam_id]
    got = loaded.subset(order)
    assert torch.equal(got.mask, small_exams.mask)
    assert torch.allclose(got.frames, _quantised(small_exams.frames), atol=1e-6)
    assert torch.allclose(got.frame_times, small_exams.frame_times, atol=1e-3)
    assert torch.equal(got.labels, small_exams.labels)
    assert got.patient_id == small_exams.patient_id and got.eye == small_exams.eye
    assert got.modality == small_exams.modality and got.info["skipped"] == 0


def test_manifest_one_row_per_exam_without_exam_id(tmp_path, small_exams):
    for i in range(3):
        _write_png(tmp_path / f"{i}.png", small_exams.frames[i, 0])
    rows = [{"path": f"{i}.png", "label": lab} for i, lab in enumerate(["b", "a", "b"])]
    loaded = load_manifest(_write_csv(tmp_path / "m.csv", rows, ["path", "label"]))
    assert loaded.class_names == ("a", "b") and loaded.labels.tolist() == [1, 0, 1]
    assert loaded.frames.shape == (3, 1, 1, 16, 16) and len(set(loaded.patient_id)) == 3
    numeric = [{"path": f"{i}.png", "label": lab} for i, lab in enumerate(["10", "2", "2"])]
    loaded = load_manifest(_write_csv(tmp_path / "n.csv", numeric, ["path", "label"]))
    assert loaded.class_names == ("2", "10") and loaded.labels.tolist() == [1, 0, 0]


def test_image_folder_round_trip(tmp_path, small_exams):
    for i in range(len(small_exams)):
        cls = small_exams.class_names[int(small_exams.labels[i])]
        for j in range(int(small_exams.mask[i].sum())):
            _write_png(tmp_path / cls / small_exams.exam_id[i] / f"frame{j}.png", small_exams.frames[i, j])
    _write_png(tmp_path / "normal" / "still.png", small_exams.frames[0, 0])
    loaded = load_image_folder(tmp_path, class_names=small_exams.class_names)
    assert len(loaded) == len(small_exams) + 1
    for i, exam_id in enumerate(small_exams.exam_id):
        j = [k for k, e in enumerate(loaded.exam_id) if e.endswith("/" + exam_id)][0]
        k = int(small_exams.mask[i].sum())
        assert int(loaded.mask[j].sum()) == k and int(loaded.labels[j]) == int(small_exams.labels[i])
        assert torch.allclose(loaded.frames[j, :k], _quantised(small_exams.frames[i, :k]), atol=1e-6)
    still = loaded.exam_id.index("normal/still")
    assert int(loaded.mask[still].sum()) == 1


def _idx_bytes(array: np.ndarray) -> bytes:
    # written from the format description (big-endian sizes after a 4-byte magic), independently of the reader
    return (
        struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.astype(np.uint8).tobytes()
    )


def test_idx_round_trip_plain_and_gzip(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = (
        rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 7).astype(np.uint8),
    )
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(images))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    loaded = mnist.load_idx(tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte.gz")
    assert loaded.frames.shape == (7, 1, 1, 28, 28)
    assert torch.equal(torch.round(loaded.frames[:, 0, 0] * 255).to(torch.uint8), torch.from_numpy(images))
    assert loaded.labels.tolist() == labels.tolist()
    (tmp_path / "bad-ubyte").write_bytes(b"\x01\x02\x03\x04" + bytes(10))
    with pytest.raises(DataError, match=r"bad-ubyte: bad IDX magic"):
        mnist.read_idx(tmp_path / "bad-ubyte")
    (tmp_path / "short-ubyte").write_bytes(_idx_bytes(images)[:-5])
    with pytest.raises(DataError, match=r"short-ubyte: .* expected 5488"):
        mnist.read_idx(tmp_path / "short-ubyte")


def test_fashion_mnist_is_found_in_the_system_folder_then_the_venv_then_the_variable(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    system, venv, chosen = tmp_path / "system", tmp_path / "venv", tmp_path / "chosen"
    for root, n in ((venv, 4), (chosen, 3)):
        root.mkdir()
        (root / "t10k-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(_idx_bytes(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)))
        )
        (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.arange(n) % 10)))
    monkeypatch.setattr(mnist, "FASHION_MNIST_DIR", system)
    monkeypatch.setattr(mnist, "FASHION_MNIST_VENV_DIR", venv)
    monkeypatch.delenv(mnist.FASHION_MNIST_ENV, raising=False)
    assert len(mnist.load_fashion_mnist("test")) == 4  # the system folder is empty: the venv's copy
    monkeypatch.setenv(mnist.FASHION_MNIST_ENV, str(chosen))
    assert len(mnist.load_fashion_mnist("test")) == 3
    monkeypatch.setattr(mnist, "FASHION_MNIST_VENV_DIR", tmp_path / "nowhere")
    monkeypatch.delenv(mnist.FASHION_MNIST_ENV)
    with pytest.raises(DataError, match="system"):  # reported where the Debian package puts the files
        mnist.load_fashion_mnist("test")


def _medmnist_file(path: Path, sizes=(5, 2, 3)) -> Path:
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 5, (n, 1))
    np.savez(path, **arrays)
    return path


def test_medmnist_npz_and_info_checks(tmp_path, monkeypatch):
    path = _medmnist_file(tmp_path / "retinamnist.npz")
    raw = np.load(path)
    val = mnist.load_medmnist_npz(path, split="val")
    assert val.frames.shape == (2, 1, 3, 28, 28)
    assert torch.allclose(
        val.frames[:, 0].permute(0, 2, 3, 1) * 255, torch.from_numpy(raw["val_images"]).float()
    )
    assert val.labels.tolist() == raw["val_labels"][:, 0].tolist()
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    info = {
        "n_samples": {"train": 5, "val": 2, "test": 3},
        "MD5": md5,
        "label": {str(k): f"grade {k}" for k in range(5)},
    }
    monkeypatch.setattr(mnist, "_medmnist_info", lambda flag: info)
    ok = mnist.load_medmnist_npz(path, split="test", flag="retinamnist")
    assert ok.class_names == tuple(f"grade {k}" for k in range(5))
    monkeypatch.setattr(
        mnist, "_medmnist_info", lambda flag: {**info, "n_samples": {**info["n_samples"], "train": 9}}
    )
    with pytest.raises(DataError, match=r"retinamnist.npz: 5 train images; expected 9"):
        mnist.load_medmnist_npz(path, split="train", flag="retinamnist")
    monkeypatch.setattr(mnist, "_medmnist_info", lambda flag: {**info, "MD5": "0" * 32})
    with pytest.raises(DataError, match="MD5"):
        mnist.load_medmnist_npz(path, split="train", flag="retinamnist")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataError, match=r"other.npz: missing \['train_images', 'train_labels'\]"):
        mnist.load_medmnist_npz(tmp_path / "other.npz")


def test_group_split_never_shares_a_patient_and_keeps_class_shares():
    rng = np.random.default_rng(0)
    groups = [f"p{g}" for g in rng.integers(0, 300, 900)]
    labels = rng.choice(4, 900, p=[0.55, 0.25, 0.15, 0.05])
    parts = group_split_indices(labels, groups, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=3)
    seen = [set(np.asarray(groups)[idx].tolist()) for idx in parts.values()]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(900))
    overall = np.bincount(labels, minlength=4) / 900
    for idx in parts.values():
        assert np.abs(np.bincount(labels[idx], minlength=4) / len(idx) - overall).max() < 0.06
    assert abs(len(parts["train"]) / 900 - 0.7) < 0.05


def test_group_split_of_simulated_exams(small_exams):
    parts = group_split(small_exams, {"a": 0.5, "b": 0.5}, seed=0)
    assert set(parts["a"].patient_id).isdisjoint(parts["b"].patient_id)
    assert len(parts["a"]) + len(parts["b"]) == len(small_exams)


def test_bad_manifest_inputs_name_file_row_and_expectation(tmp_path, small_exams):
    csv_path = _write_manifest(tmp_path, small_exams)
    good = list(csv.DictReader(csv_path.open()))
    names = small_exams.class_names

    def fails(rows, pattern, fields=FIELDS):
        path = _write_csv(tmp_path / "bad.csv", rows, fields)
        with pytest.raises(DataError, match=pattern):
            load_manifest(path, class_names=names)

    fails(
        [{**good[0], "path": "img/nope.png"}] + good[1:], r"bad.csv:2: .*nope.png: file not found; expected"
    )
    (tmp_path / "img" / "junk.png").write_bytes(b"not a png at all")
    fails([{**good[0], "path": "img/junk.png"}] + good[1:], r"bad.csv:2: .*junk.png: unreadable image")
    Image.new("L", (20, 16)).save(tmp_path / "img" / "wide.png")
    fails(
        good[:-1] + [{**good[-1], "path": "img/wide.png"}],
        r"bad.csv:\d+: frame .*wide.png has shape \(1, 16, 20\)",
    )
    fails(
        [{**good[0], "label": "glaucoma"}] + good[1:], r"bad.csv:2: unknown label 'glaucoma'; expected one of"
    )
    fails(good + [{**good[0], "patient_id": "someone-else", "path": "img/x.png"}], r"duplicate exam id")
    fails(good + [dict(good[0])], r"bad.csv:\d+: duplicate frame")
    fails([{**good[0], "frame_time": "early"}] + good[1:], r"bad.csv:2: frame_time 'early' is not a number")
    fails([{"path": r["path"]} for r in good], r"missing column\(s\) \['label'\]", fields=["path"])


def test_skip_bad_warns_counts_and_keeps_the_rest(tmp_path, small_exams):
    csv_path = _write_manifest(tmp_path, small_exams)
    rows = list(csv.DictReader(csv_path.open()))
    bad_exam = rows[0]["exam_id"]
    rows[0] = {**rows[0], "path": "img/missing.png"}
    rows.append({**rows[1], "exam_id": "x1", "label": "glaucoma"})
    path = _write_csv(tmp_path / "skip.csv", rows)
    with pytest.warns(UserWarning, match="skipping"):
        loaded = load_manifest(path, class_names=small_exams.class_names, skip_bad=True)
    assert loaded.info["skipped"] == 2
    assert bad_exam not in loaded.exam_id and "x1" not in loaded.exam_id
    assert len(loaded) == len(small_exams) - 1


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_image_folder(tmp_path / "absent")
    (tmp_path / "normal").mkdir()
    _write_png(tmp_path / "normal" / "a.png", torch.zeros(1, 8, 8))
    (tmp_path / "weird").mkdir()
    with pytest.raises(DataError, match=r"weird: unknown class folder 'weird'; expected one of \['normal'\]"):
        load_image_folder(tmp_path, class_names=("normal",))


def test_animal_mnist_offline_if_installed():
    pytest.importorskip("animal_mnist")
    animals = mnist.load_animal_mnist()
    assert animals.frames.shape == (10000, 1, 1, 28, 28) and animals.class_counts() == [1000] * 10
