"""The built-in benchmark: in-distribution splits, a held-out-device test set and named OOD sets.

Every set is an ``ExamSet`` of the same shape ``[n, frames, channels, size, size]``, so one evaluation loop
handles all of them. OOD sets carry ``UNKNOWN_LABEL`` (-1) labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from clearmamba.data.angiography import SimulatorConfig, simulate_exams, simulate_unseen_disease
from clearmamba.data.cameras import Camera
from clearmamba.data.examset import UNKNOWN_LABEL, ExamSet

NON_ANGIOGRAPHY_SOURCES = ("retina_photo", "immunohistochemistry", "cell_microscopy", "faces")
CORRUPTIONS = ("blank", "grey", "noise", "saturated", "heavy_blur", "dropped_frames")


def _source_image(name: str) -> np.ndarray:
    """A real CC0/public-domain image from scikit-image as float ``[h, w, 3]`` (or a stack for faces)."""
    from skimage import data

    if name == "retina_photo":
        return data.retina().astype(np.float32) / 255
    if name == "immunohistochemistry":
        return data.immunohistochemistry().astype(np.float32) / 255
    if name == "cell_microscopy":
        return np.repeat(data.cell().astype(np.float32)[..., None] / 255, 3, axis=-1)
    if name == "faces":
        faces = data.lfw_subset().astype(np.float32)  # [200, 25, 25], first 100 are faces
        return np.repeat(faces[:100, ..., None], 3, axis=-1)
    raise ValueError(f"unknown non-angiography source {name!r}; expected one of {NON_ANGIOGRAPHY_SOURCES}")


def non_angiography_exams(n: int, config: SimulatorConfig | None = None, seed: int = 0) -> ExamSet:
    """Still images of other kinds (colour fundus photo tiles, microscopy, faces) shaped like exams.

    Each exam is one random crop, resized and repeated over all frames (no dye dynamics), with the frame
    times of a typical FFA schedule so that time-aware models see ordinary-looking metadata.
    """
    from skimage.transform import resize

    cfg = config or SimulatorConfig()
    rng = np.random.default_rng([seed, 3])
    images = {}
    for name in NON_ANGIOGRAPHY_SOURCES:
        img = _source_image(name)
        longest = max(img.shape[-3:-1])
        if longest > 8 * cfg.size:  # shrink once, so each crop's resize is cheap
            factor = 8 * cfg.size / longest
            new_hw = tuple(max(int(d * factor), 1) for d in img.shape[-3:-1])
            img = resize(img, (*img.shape[:-3], *new_hw, img.shape[-1]), anti_aliasing=True)
        images[name] = img.astype(np.float32)
    frames = torch.zeros((n, cfg.frames, cfg.channels, cfg.size, cfg.size))
    sources = []
    for i in range(n):
        name = NON_ANGIOGRAPHY_SOURCES[i % len(NON_ANGIOGRAPHY_SOURCES)]
        img = images[name]
        if name == "faces":
            tile = img[rng.integers(len(img))]
        else:
            h, w = img.shape[:2]
            side = int(min(h, w) * rng.uniform(0.25, 0.9))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            tile = img[y : y + side, x : x + side]
        tile = resize(tile, (cfg.size, cfg.size), anti_aliasing=True)
        tile = tile.mean(-1, keepdims=True) if cfg.channels == 1 else tile
        still = torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1))).float().clamp(0, 1)
        frames[i] = still[None].expand(cfg.frames, -1, -1, -1)
        sources.append(name)
    times = torch.from_numpy(np.geomspace(12.0, 480.0, cfg.frames)).float().expand(n, -1).clone()
    return _ood_set(frames, times, "ood_non_angiography", f"other{seed}", sources, cfg, modality="other")


def corrupted_exams(
    n: int, config: SimulatorConfig | None = None, seed: int = 0, anatomy_seed: int | None = None
) -> ExamSet:
    """Broken exams: blank, uniform grey, pure noise, saturated, heavily blurred, or with frames dropped."""
    cfg = config or SimulatorConfig()
    base = simulate_exams(n, cfg, seed=seed, id_prefix=f"corrupted{seed}", anatomy_seed=anatomy_seed)
    gen = torch.Generator().manual_seed(seed * 7 + 5)
    frames = base.frames.clone()
    kinds = []
    for i in range(n):
        kind = CORRUPTIONS[i % len(CORRUPTIONS)]
        x = frames[i]
        if kind == "blank":
            x.zero_()
        elif kind == "grey":
            x.fill_(0.5)
        elif kind == "noise":
            x.copy_(torch.rand(x.shape, generator=gen))
        elif kind == "saturated":
            x.copy_((x * 5).clamp(0, 1))
        elif kind == "heavy_blur":
            small = F.interpolate(x.reshape(-1, 1, cfg.size, cfg.size), size=(4, 4), mode="area")
            x.copy_(F.interpolate(small, size=(cfg.size, cfg.size), mode="bilinear").view_as(x))
        elif kind == "dropped_frames":
            drop = torch.rand(cfg.frames, generator=gen) < 0.6
            x[drop] = 0
        kinds.append(kind)
    return _ood_set(frames, base.frame_times, "ood_corrupted", "", kinds, cfg, modality=None, like=base)


def _ood_set(frames, times, name, prefix, kinds, cfg, modality, like: ExamSet | None = None) -> ExamSet:
    n = frames.shape[0]
    return ExamSet(
        frames=frames,
        labels=torch.full((n,), UNKNOWN_LABEL, dtype=torch.int64),
        frame_times=times,
        mask=torch.ones((n, frames.shape[1]), dtype=torch.bool) if like is None else like.mask.clone(),
        exam_id=[f"{prefix}-e{i:05d}" for i in range(n)] if like is None else list(like.exam_id),
        patient_id=[f"{prefix}-p{i:05d}" for i in range(n)] if like is None else list(like.patient_id),
        eye=["OD"] * n if like is None else list(like.eye),
        modality=[modality] * n if like is None else list(like.modality),
        device_id=["unknown"] * n if like is None else list(like.device_id),
        class_names=cfg.classes,
        name=name,
        info={"source": name, "kind": kinds},
    )


def make_builtin_splits(
    config: SimulatorConfig | None = None,
    n_train: int = 1200,
    n_val: int = 300,
    n_test: int = 300,
    n_heldout: int = 300,
    n_ood: int = 200,
    seed: int = 0,
    progress: bool = False,
    n_calibration: int = 0,
) -> dict[str, ExamSet]:
    """Named ExamSets: ``train``, ``val``, ``test`` (same devices, disjoint patients), ``test_heldout_device``
    (only ``config.heldout_devices``), and OOD sets ``ood_unseen_disease``, ``ood_non_angiography``,
    ``ood_corrupted`` (labels -1), and with ``n_calibration`` a ``calibration`` set like ``val`` for fitting the
    referral rule on exams training never chose by. Patients never repeat across sets: each set has its own id
    prefix."""
    cfg = config or SimulatorConfig()
    base = int(seed) * 100

    def split(name: str, n: int, offset: int, devices=None) -> ExamSet:
        # one template bank (anatomy_seed) for all sets; patients differ by their own warps and ids
        return simulate_exams(
            n,
            cfg,
            base + offset,
            devices=devices,
            progress=progress,
            id_prefix=f"{name}{seed}",
            name=name,
            anatomy_seed=seed,
        )

    sets = {
        "train": split("train", n_train, 1),
        "val": split("val", n_val, 2),
        "test": split("test", n_test, 3),
    }
    if n_calibration > 0:
        sets["calibration"] = split("calibration", n_calibration, 9)  # 8 is make_camera_sets'
    if cfg.heldout_devices and n_heldout > 0:
        sets["test_heldout_device"] = split("test_heldout_device", n_heldout, 4, cfg.heldout_devices)
    if n_ood > 0:
        sets["ood_unseen_disease"] = simulate_unseen_disease(
            n_ood, cfg, base + 5, id_prefix=f"unseen{seed}", anatomy_seed=seed
        )
        sets["ood_non_angiography"] = non_angiography_exams(n_ood, cfg, base + 6)
        sets["ood_corrupted"] = corrupted_exams(n_ood, cfg, base + 7, anatomy_seed=seed)
    return sets


# ----------------------------------------------------------------------------------------------- cameras


def simulate_camera_exams(
    n: int,
    cameras: Camera | Sequence[Camera],
    config: SimulatorConfig | None = None,
    seed: int = 0,
    id_prefix: str | None = None,
    name: str | None = None,
    anatomy_seed: int | None = None,
) -> ExamSet:
    """``n`` simulated exams seen through ``cameras`` (one, or several with one drawn per exam; all frames of
    an exam through the same one). ``device_id`` is the camera's name. With the arguments of a set of
    :func:`make_builtin_splits` (its seed, ``id_prefix`` and ``anatomy_seed``) these are that set's exams
    (patients, lesions, frame times) seen through other cameras."""
    chosen = (cameras,) if isinstance(cameras, Camera) else tuple(cameras)
    if not chosen or not all(isinstance(c, Camera) for c in chosen):
        raise ValueError(f"simulate_camera_exams: expected a Camera or a sequence of Cameras, got {cameras!r}")
    cfg = replace(config or SimulatorConfig(), devices=chosen, heldout_devices=())
    names = tuple(c.name for c in chosen)
    return simulate_exams(
        n, cfg, seed, devices=names, id_prefix=id_prefix, name=name or "_".join(names), anatomy_seed=anatomy_seed
    )


def make_camera_sets(
    cameras: Sequence[Camera] | None = None,
    n: int = 200,
    config: SimulatorConfig | None = None,
    seed: int = 0,
) -> dict[str, ExamSet]:
    """One ExamSet per camera (default: the held-out cameras and ``device_E``), named ``camera_<name>``.

    Every set holds the same ``n`` exams (patients, lesions, frame times) seen through its camera, so the
    cameras are compared on paired exams. Their patients are disjoint from those of
    ``make_builtin_splits(seed=seed)`` (own id prefix and simulation seed); the vessel-tree templates are
    shared, as between that function's own sets.
    """
    from clearmamba.data.camera_family import HELDOUT_WITH_DEVICE_E

    cameras = HELDOUT_WITH_DEVICE_E if cameras is None else tuple(cameras)
    return {
        f"camera_{camera.name}": simulate_camera_exams(
            n, camera, config, int(seed) * 100 + 8, f"camera{seed}", f"camera_{camera.name}", anatomy_seed=seed
        )
        for camera in cameras
    }
