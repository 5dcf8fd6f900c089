"""Camera models, the training family, held-out cameras and camera augmentation."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from clearmamba.data.anatomy import field_of_view
from clearmamba.data.angiography import SimulatorConfig
from clearmamba.data.builtin import make_builtin_splits, make_camera_sets, simulate_camera_exams
from clearmamba.data.camera_family import (
    DEVICE_E,
    ENVELOPE,
    HELDOUT_CAMERAS,
    HELDOUT_WITH_DEVICE_E,
    IDEAL_CAMERA,
    MARGIN,
    MIN_OUTSIDE,
    SHIFT_PARAMETERS,
    TRAINING_DEVICES,
    TRAINING_FAMILY,
    CameraAugment,
    CameraAugmentedExams,
    CameraFamily,
    check_heldout,
    sample_heldout,
)
from clearmamba.data.cameras import Camera, dct_matrix, jpeg_compress, magnification_matrix
from clearmamba.data.devices import DEFAULT_DEVICES, apply_device

SIZE = 32
CFG = SimulatorConfig(size=SIZE, frames=4)


def noiseless(camera: Camera) -> Camera:
    return replace(camera, noise=0.0, banding=0.0)


# ---- the camera model -------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEFAULT_DEVICES, ids=lambda d: d.name)
def test_camera_from_device_reproduces_apply_device_exactly(device):
    fov = field_of_view(64)
    x = torch.rand(6, 64, 64, generator=torch.Generator().manual_seed(0)) * fov
    expected = apply_device(x, device, fov, torch.Generator().manual_seed(1))
    got = Camera.from_device(device).apply(x, torch.Generator().manual_seed(1))
    assert torch.equal(got, expected)


@pytest.mark.parametrize("camera", [*HELDOUT_WITH_DEVICE_E, TRAINING_FAMILY.sample(torch.Generator().manual_seed(3))],
                         ids=lambda c: c.name)  # fmt: skip
def test_a_camera_applies_identically_to_all_frames_of_an_exam(camera):
    camera = noiseless(camera)
    frame = torch.rand(1, 2, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    exam = torch.cat([frame, frame.flip(-1), frame, frame])  # [t=4, c=2, h, w], frames 0, 2, 3 alike
    seen = camera.apply(exam)
    assert torch.equal(seen[0], seen[2]) and torch.equal(seen[0], seen[3])
    # the exam at once is each frame alone: nothing depends on the frame's position in the exam
    alone = torch.stack([camera.apply(exam[i]) for i in range(len(exam))])
    torch.testing.assert_close(seen, alone, rtol=0, atol=1e-6)
    assert not torch.equal(seen, exam)  # a held-out camera is never the identity


def test_noise_and_banding_differ_between_frames_but_the_fixed_pattern_does_not():
    flat = torch.full((8, 32, 32), 0.5)
    banded = Camera("banded", noise=0.0, banding=0.05, vignetting=0.0, fov_radius=1.5).apply(
        flat, torch.Generator().manual_seed(0)
    )
    rows = banded - 0.5
    assert torch.allclose(rows, rows[:, :, :1].expand_as(rows))  # one offset per row
    assert rows[0].std() > 0.02 and not torch.allclose(rows[0], rows[1])  # redrawn per frame
    fixed = Camera("fixed", noise=0.0, fixed_pattern=0.05, vignetting=0.0, fov_radius=1.5, pattern_seed=3)
    a = fixed.apply(flat[:2], torch.Generator().manual_seed(0))
    b = fixed.apply(flat[:2], torch.Generator().manual_seed(9))
    assert torch.equal(a, b) and torch.equal(a[0], a[1]) and a[0].std() > 0.02  # same stripes everywhere


def test_aperture_area_and_centroid_match_the_ellipse_they_describe():
    size = 128
    camera = Camera("ellipse", fov_radius=0.7, fov_aspect=0.8, fov_shift_x=0.1, fov_shift_y=-0.15)
    mask = camera.aperture(size, size).double()
    pixel_area = (2 / size) ** 2
    assert mask.sum() * pixel_area == pytest.approx(math.pi * 0.7 * 0.7 * 0.8, rel=0.01)  # pi r_x r_y
    axis = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1
    assert (mask.sum(0) * axis).sum() / mask.sum() == pytest.approx(0.1, abs=1e-3)
    assert (mask.sum(1) * axis).sum() / mask.sum() == pytest.approx(-0.15, abs=1e-3)
    cropped = replace(camera, fov_crop=0.3).aperture(size, size)
    rows = cropped.amax(1) > 0.5
    assert rows.sum() * 2 / size == pytest.approx(2 * 0.7 * 0.8 * 0.7, abs=2 / size)  # height 2 (1 - c) r_y


def test_magnification_and_gradient_are_the_closed_forms():
    size = 64
    axis = (torch.arange(size) + 0.5) / size * 2 - 1
    # out(u) = in(u / zoom): magnifying a linear ramp by 2 halves its slope
    ramp = magnification_matrix(2.0, size) @ axis
    torch.testing.assert_close(ramp[2:-2], axis[2:-2] / 2, rtol=0, atol=1e-5)
    camera = Camera("ramp", vignetting=0.0, gain=1.5, gradient=0.3, gradient_angle=0.0)
    torch.testing.assert_close(camera.illumination(8, size), 1.5 * (1 + 0.3 * axis).expand(8, size))


def test_jpeg_compression_matches_libjpeg_through_pillow():
    image_module = pytest.importorskip("PIL.Image")
    frames = simulate_camera_exams(2, TRAINING_DEVICES[0], SimulatorConfig(size=64, frames=2), seed=1).frames
    x = frames[:, -1, 0]
    errors = []
    for quality in (10, 50, 90):
        decoded = []
        for image in x:
            buffer = io.BytesIO()
            image_module.fromarray(np.round(image.numpy() * 255).astype(np.uint8), "L").save(
                buffer, "JPEG", quality=quality
            )
            decoded.append(torch.from_numpy(np.asarray(image_module.open(buffer), dtype=np.float32) / 255))
        ours = jpeg_compress(x, quality)
        assert (ours - torch.stack(decoded)).abs().mean() < 0.5 / 255, quality
        errors.append((ours - x).abs().mean())
    assert errors[0] > errors[1] > errors[2] > 0  # lower quality, more loss
    assert torch.allclose(dct_matrix() @ dct_matrix().T, torch.eye(8), atol=1e-6)


def test_camera_fields_are_checked_and_round_trip_through_json():
    with pytest.raises(ValueError, match="gamma"):
        Camera("bad", gamma=-1.0)
    with pytest.raises(ValueError, match="jpeg_quality"):
        Camera("bad", jpeg_quality=50.5)
    record = json.loads(json.dumps(HELDOUT_CAMERAS[2].to_dict()))
    assert Camera.from_dict(record) == HELDOUT_CAMERAS[2]
    with pytest.raises(ValueError, match="cameras.json.*unknown camera field.*'exposure'"):
        Camera.from_dict({**record, "exposure": 2.0}, where="cameras.json")


def test_the_simulator_renders_the_ideal_retina_through_the_camera():
    # all frames of every exam through the one camera: simulating through it is applying it to the ideal exams
    # (a camera without noise and with gain >= 1 everywhere, so the ideal's clipping at 1 does not matter)
    camera = Camera("plain", noise=0.0, vignetting=0.0, gain=1.2, gamma=0.8, contrast=0.2, black_level=0.02,
                    fov_shift_x=0.05, fov_crop=0.1, jpeg_quality=60)  # fmt: skip
    cfg = SimulatorConfig(size=SIZE, frames=4)
    ideal = simulate_camera_exams(5, IDEAL_CAMERA, cfg, seed=2)
    direct = simulate_camera_exams(5, camera, cfg, seed=2)
    assert set(direct.device_id) == {"plain"} and torch.equal(direct.labels, ideal.labels)
    torch.testing.assert_close(direct.frames, camera.apply(ideal.frames), rtol=0, atol=1e-5)


# ---- the family and the held-out cameras --------------------------------------------------------------


def test_the_training_family_holds_the_training_devices_and_not_device_e():
    assert all(TRAINING_FAMILY.contains(c) for c in TRAINING_DEVICES)
    assert len(TRAINING_FAMILY.outside(DEVICE_E, MARGIN)) >= MIN_OUTSIDE
    for key in SHIFT_PARAMETERS:  # the envelope holds the training ranges
        assert ENVELOPE.range(key)[0] <= TRAINING_FAMILY.range(key)[0] <= TRAINING_FAMILY.range(key)[1]
        assert TRAINING_FAMILY.range(key)[1] <= ENVELOPE.range(key)[1]


def test_heldout_and_training_parameter_ranges_are_disjoint():
    assert len(HELDOUT_WITH_DEVICE_E) >= 9
    outside = check_heldout(HELDOUT_WITH_DEVICE_E)
    # independently of the family's own bookkeeping: the span of many sampled training cameras
    g = torch.Generator().manual_seed(0)
    trained = [TRAINING_FAMILY.sample(g) for _ in range(1000)]
    span = {k: (min(getattr(c, k) for c in trained), max(getattr(c, k) for c in trained)) for k in SHIFT_PARAMETERS}
    for camera in HELDOUT_WITH_DEVICE_E:
        beyond = [k for k in SHIFT_PARAMETERS if not span[k][0] <= getattr(camera, k) <= span[k][1]]
        assert set(outside[camera.name]) <= set(beyond), camera.name
        # every sampled training camera differs from it in at least three parameters, each out of range
        for trained_camera in trained[:50]:
            assert len([k for k in beyond if getattr(trained_camera, k) != getattr(camera, k)]) >= MIN_OUTSIDE


def test_check_heldout_names_a_camera_too_close_to_the_training_family():
    near = Camera("near", gain=1.3, gamma=0.7)  # two parameters out: not enough
    just_in = Camera("edge", gain=1.16, gamma=1.26, blur=0.91)  # out, but within the margin
    with pytest.raises(ValueError, match="near"):
        check_heldout([*HELDOUT_CAMERAS, near])
    with pytest.raises(ValueError, match="edge"):
        check_heldout([just_in])
    assert check_heldout([just_in], margin=0.0)["edge"] == ("gain", "gamma", "blur")
    with pytest.raises(ValueError, match="repeated"):
        check_heldout([HELDOUT_CAMERAS[0], HELDOUT_CAMERAS[0]])


def test_family_samples_are_inside_deterministic_and_varied():
    a = [TRAINING_FAMILY.sample(torch.Generator().manual_seed(s)) for s in range(200)]
    b = [TRAINING_FAMILY.sample(torch.Generator().manual_seed(s)) for s in range(200)]
    assert a == b and all(TRAINING_FAMILY.contains(c) for c in a)
    gains = torch.tensor([c.gain for c in a])
    assert gains.min() < 0.85 and gains.max() > 1.1  # the whole range is used
    with pytest.raises(ValueError, match="gamma"):
        CameraFamily("bad", gamma=(1.2, 0.8))


def test_sample_heldout_draws_cameras_outside_the_training_family_within_the_envelope():
    g = torch.Generator().manual_seed(5)
    cameras = [sample_heldout(g, name=f"h{i}") for i in range(40)]
    check_heldout(cameras, margin=MARGIN * 0.99)
    for camera in cameras:
        assert not ENVELOPE.outside(camera), camera
    again = [sample_heldout(torch.Generator().manual_seed(5), name="h0")]
    assert again[0] == cameras[0]


# ---- camera augmentation --------------------------------------------------------------------------


NOISELESS_FAMILY = replace(TRAINING_FAMILY, name="noiseless", noise=(0.0, 0.0), banding=(0.0, 0.0))


def test_camera_augmentation_is_deterministic_given_a_generator_and_independent_of_order():
    exams = simulate_camera_exams(6, IDEAL_CAMERA, CFG, seed=3)
    a = CameraAugmentedExams(exams, generator=torch.Generator().manual_seed(0))
    b = CameraAugmentedExams(exams, generator=torch.Generator().manual_seed(0))
    c = CameraAugmentedExams(exams, generator=torch.Generator().manual_seed(1))
    forward = [a[i]["frames"] for i in range(6)]
    backward = [b[i]["frames"] for i in reversed(range(6))][::-1]
    assert all(torch.equal(x, y) for x, y in zip(forward, backward))
    assert not torch.equal(forward[0], c[0]["frames"])
    a.set_epoch(1)
    assert a.camera_for(0) != b.camera_for(0) and not torch.equal(a[0]["frames"], forward[0])
    assert a[0]["label"] == exams[0]["label"] and a[0]["exam_id"] == exams[0]["exam_id"]


def test_camera_augmentation_sees_each_exam_through_one_camera():
    base = simulate_camera_exams(4, IDEAL_CAMERA, CFG, seed=4)
    frames = base.frames[:, :1].expand(-1, 4, -1, -1, -1).clone()  # every exam: one frame, four times
    exams = replace(base, frames=frames)
    augmented = CameraAugmentedExams(exams, CameraAugment(NOISELESS_FAMILY), torch.Generator().manual_seed(2))
    cameras = [augmented.camera_for(i) for i in range(4)]
    assert len({c.gain for c in cameras}) == 4  # a different camera per exam
    for i in range(4):
        seen = augmented[i]["frames"]
        assert all(torch.equal(seen[0], seen[t]) for t in range(1, 4))
        torch.testing.assert_close(seen, cameras[i].apply(frames[i]), rtol=0, atol=0)


def test_camera_augmentation_keeps_padding_zero_and_probability_zero_is_the_identity():
    cfg = SimulatorConfig(size=SIZE, frames=4, min_frames=1)
    exams = simulate_camera_exams(8, IDEAL_CAMERA, cfg, seed=5)
    assert not exams.mask.all()
    augmented = CameraAugmentedExams(exams, generator=torch.Generator().manual_seed(0))
    for i in range(8):
        item = augmented[i]
        assert (item["frames"][~item["mask"]] == 0).all()
    unchanged = CameraAugmentedExams(exams, CameraAugment(probability=0.0), torch.Generator().manual_seed(0))
    assert all(torch.equal(unchanged[i]["frames"], exams.frames[i]) for i in range(8))
    with pytest.raises(ValueError, match="probability"):
        CameraAugment(probability=1.5)


# ---- held-out camera sets ---------------------------------------------------------------------------


def test_camera_sets_pair_the_same_exams_across_cameras_and_share_no_patient_with_the_splits():
    cameras = (HELDOUT_CAMERAS[0], DEVICE_E)
    sets = make_camera_sets(cameras, n=6, config=CFG, seed=0)
    assert list(sets) == ["camera_overexposed", "camera_device_E"]
    a, b = sets.values()
    assert set(a.device_id) == {"overexposed"} and set(b.device_id) == {"device_E"}
    assert torch.equal(a.labels, b.labels) and torch.equal(a.frame_times, b.frame_times)
    assert a.patient_id == b.patient_id and not torch.equal(a.frames, b.frames)
    splits = make_builtin_splits(CFG, n_train=6, n_val=2, n_test=2, n_heldout=2, n_ood=0, seed=0)
    for name, split in splits.items():
        assert set(split.patient_id).isdisjoint(a.patient_id), name
