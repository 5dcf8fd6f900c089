"""The simulator: determinism, metadata, each class's time signature, and leakage vs staining."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clearmamba.data.anatomy import template_bank, warp_templates
from clearmamba.data.angiography import (
    CLASS_NAMES,
    DeviceProfile,
    SimulatorConfig,
    _sample_exam_plan,
    simulate_exams,
)
from clearmamba.data.examset import collate_exams

SIZE = 32  # small frames keep the suite fast; the signatures do not depend on the size
CLEAN = DeviceProfile("clean", gain=1.0, gamma=1.0, noise=0.0, blur=0.0, vignetting=0.0, resolution=1.0)


def test_same_seed_same_bytes_and_other_seed_differs():
    cfg = SimulatorConfig(size=32)
    a, b = simulate_exams(10, cfg, seed=5, anatomy_seed=0), simulate_exams(10, cfg, seed=5, anatomy_seed=0)
    assert a.frames.numpy().tobytes() == b.frames.numpy().tobytes()
    assert torch.equal(a.labels, b.labels) and a.patient_id == b.patient_id
    c = simulate_exams(10, cfg, seed=6, anatomy_seed=0)
    assert not torch.equal(a.frames, c.frames)


def test_shapes_ranges_and_metadata():
    cfg = SimulatorConfig(size=32, frames=6, channels=3, icga_fraction=0.5)
    s = simulate_exams(24, cfg, seed=1, anatomy_seed=0)
    assert s.frames.shape == (24, 6, 3, 32, 32) and s.frames.dtype == torch.float32
    assert s.frames.min() >= 0 and s.frames.max() <= 1
    assert torch.equal(s.frames[:, :, 0], s.frames[:, :, 2])  # grey replicated to RGB
    assert s.labels.dtype == torch.int64 and set(s.labels.tolist()) <= set(range(len(CLASS_NAMES)))
    assert s.mask.all() and (s.frame_times[:, 1:] > s.frame_times[:, :-1]).all()  # times increase
    assert set(s.eye) <= {"OD", "OS"} and set(s.modality) == {"FFA", "ICGA"}
    assert set(s.device_id) <= set(cfg.training_devices) and len(set(s.exam_id)) == 24
    # ICGA runs longer than FFA: its last frame comes later
    last = s.frame_times[:, -1]
    icga = torch.tensor([m == "ICGA" for m in s.modality])
    assert last[icga].min() > last[~icga].max()


def test_left_eyes_are_mirrored_right_eyes():
    bank = template_bank(32, 0)
    which = np.array([0, 0])
    params = {
        "angle": np.zeros(2),
        "zoom": np.ones(2),
        "shift": np.zeros((2, 2)),
        "elastic": np.zeros((2, 2, 4, 4)),
    }
    od, os_ = warp_templates(bank, which, params, np.array([False, True]), 32)
    assert torch.allclose(od, os_.flip(-1), atol=1e-5)
    disc = od[4]
    x_centroid = (disc.sum(0) * torch.linspace(-1, 1, 32)).sum() / disc.sum()
    assert x_centroid > 0.2  # OD: optic disc on the right of the image


def _lesion_only(kind: str, n: int = 12, seed: int = 0) -> torch.Tensor:
    """Frames with minus without the lesion ``[n, t, h, w]``: noise-free camera, same plan and anatomy."""
    base = dict(classes=(kind,), devices=(CLEAN,), heldout_devices=(), icga_fraction=0.0, size=SIZE)
    with_lesion = simulate_exams(n, SimulatorConfig(**base), seed=seed, anatomy_seed=0)
    without = simulate_exams(n, SimulatorConfig(**base, lesion_strength=0.0), seed=seed, anatomy_seed=0)
    return (with_lesion.frames - without.frames)[:, :, 0]


def _area(diff: torch.Tensor, threshold: float = 0.04) -> torch.Tensor:
    return (diff > threshold).float().sum((-1, -2))  # [n, t]


def test_leakage_grows_staining_does_not():
    leak, stain = _area(_lesion_only("leakage")), _area(_lesion_only("staining"))
    assert (leak[:, -1] > 2 * leak[:, 3]).all()  # leakage area grows from early-mid to late frames
    assert (stain[:, -1] <= 1.15 * stain[:, 4] + 1).all() and (stain[:, 4] >= 0.85 * stain[:, -1]).all()
    # at the last frame both have the same size distribution (the one thing a single frame sees)
    assert abs(leak[:, -1].mean() - stain[:, -1].mean()) < 0.35 * stain[:, -1].mean()


def test_pooling_non_perfusion_microaneurysm_signatures():
    pool = _lesion_only("pooling")
    pool_level = pool.amax((-1, -2))
    assert (pool_level[:, -1] > 2 * pool_level[:, 2]).all()  # fills up over time
    area = _area(pool)
    assert (area[:, -1] <= 1.25 * area[:, 5] + 2).all()  # within a fixed boundary
    np_ = _lesion_only("non_perfusion")
    assert (np_.amin((-1, -2))[:, 2:] < -0.05).all()  # a dark zone once dye is in the vessels
    assert (np_.amax((-1, -2)) < 0.02).all()  # and never brighter
    ma = _lesion_only("microaneurysms")
    early_area = _area(ma)[:, 2]
    assert (early_area > 0).all() and (early_area < 0.05 * SIZE * SIZE).all()  # early pinpoint dots
    assert (ma[:, 0].amax((-1, -2)) < ma[:, 2].amax((-1, -2))).all()  # not there before the arterial phase


def test_single_late_frame_cannot_separate_leakage_from_staining_but_frame_differences_can():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cfg = SimulatorConfig(size=32, classes=("leakage", "staining"))
    s = simulate_exams(240, cfg, seed=3, anatomy_seed=0)
    x, y = s.frames[:, :, 0], s.labels.numpy()

    def brightness_profile(img: torch.Tensor) -> np.ndarray:
        # location-free features: the upper half of the sorted pixel values
        v = img.reshape(len(img), -1).sort(dim=1).values
        return v[:, (torch.linspace(0.5, 1, 33) * (v.shape[1] - 1)).long()].numpy()

    def accuracy(features: np.ndarray) -> float:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
        return cross_val_score(model, features, y, cv=5).mean()

    last_frame = accuracy(brightness_profile(x[:, -1]))
    last_frame_pixels = accuracy(torch.nn.functional.avg_pool2d(x[:, -1], 2).flatten(1).numpy())
    difference = accuracy(brightness_profile(x[:, -1] - x[:, 4]))
    assert last_frame < 0.62 and last_frame_pixels < 0.62  # chance is 0.5 (balanced classes)
    assert difference > 0.85


def test_label_noise_and_imbalance():
    cfg = SimulatorConfig(size=16, label_noise=0.3)
    noisy = simulate_exams(200, cfg, seed=2, anatomy_seed=0)
    clean = simulate_exams(200, SimulatorConfig(size=16), seed=2, anatomy_seed=0)
    assert torch.equal(noisy.true_labels, clean.labels)
    flipped = (noisy.labels != noisy.true_labels).float().mean().item()
    assert 0.2 < flipped < 0.4  # Binomial(200, 0.3): +-3 sd
    long_tail = SimulatorConfig(imbalance=10.0)
    p = long_tail.class_probabilities()
    assert p[0] / p[-1] == pytest.approx(10.0) and p.sum() == pytest.approx(1.0)
    plan = _sample_exam_plan(6000, long_tail, np.random.default_rng(0), long_tail.training_devices)
    freq = np.bincount(plan["label"], minlength=6) / 6000
    assert np.allclose(freq, p, atol=0.025)


def test_variable_length_exams_are_padded_and_masked():
    cfg = SimulatorConfig(size=16, frames=6, min_frames=2)
    s = simulate_exams(30, cfg, seed=4, anatomy_seed=0)
    lengths = s.mask.sum(1)
    assert lengths.min() >= 2 and lengths.max() <= 6 and len(set(lengths.tolist())) > 1
    assert (s.frames[~s.mask] == 0).all() and (s.frame_times[~s.mask] == 0).all()
    items = [s[i] for i in range(5)]
    short = {key: items[0][key][:2] for key in ("frames", "frame_times", "mask")}
    items[0] = {**items[0], **short}
    batch = collate_exams(items)
    assert batch["frames"].shape == (5, 6, 1, 16, 16)
    assert batch["mask"][0].sum() == min(2, int(lengths[0])) and not batch["mask"][0, 2:].any()
    assert batch["label"].tolist() == s.labels[:5].tolist() and batch["exam_id"] == s.exam_id[:5]


def test_bad_config_errors_name_the_field():
    with pytest.raises(ValueError, match="classes"):
        SimulatorConfig(classes=("normal", "glaucoma"))
    with pytest.raises(ValueError, match="size"):
        SimulatorConfig(size=1000)
    with pytest.raises(ValueError, match="heldout_devices"):
        SimulatorConfig(heldout_devices=("nope",))
    with pytest.raises(ValueError, match="devices"):
        simulate_exams(2, SimulatorConfig(size=16), devices=("nope",))


def test_importing_the_data_package_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, clearmamba.data, clearmamba.data.angiography, clearmamba.data.loaders;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'skimage', 'scipy', 'PIL', 'sklearn'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
