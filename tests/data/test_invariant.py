"""Acquisition-invariant preprocessing: each step removes exactly the part of the camera it claims to."""

from __future__ import annotations

import json

import pytest
import torch

from clearmamba.data.angiography import SimulatorConfig
from clearmamba.data.builtin import simulate_camera_exams
from clearmamba.data.camera_family import IDEAL_CAMERA
from clearmamba.data.cameras import Camera
from clearmamba.data.invariant import (
    INVARIANT,
    ExamView,
    FieldOfViewMask,
    FlattenIllumination,
    HistogramEqualise,
    PercentileNormalise,
    PreprocessedExams,
    Preprocessing,
    Standardise,
)

CFG = SimulatorConfig(size=32, frames=4)
PLAIN = Camera("plain", noise=0.0, vignetting=0.0)  # the simulator's aperture, nothing else


@pytest.fixture(scope="module")
def ideal():
    return simulate_camera_exams(3, IDEAL_CAMERA, CFG, seed=1)


@pytest.fixture(scope="module")
def exam(ideal):
    """One exam [t, c, h, w] with a sharp aperture and a black background."""
    return PLAIN.apply(ideal.frames[0])


def real(t: int) -> torch.Tensor:
    return torch.ones(t, dtype=torch.bool)


def run(step, frames, fov=None):
    return step(ExamView(frames, real(frames.shape[0]), fov)).frames


@pytest.mark.parametrize("gain, black", [(0.6, 0.05), (1.7, 0.0), (1.0, 0.12)])
def test_fov_mask_is_invariant_to_gain_and_black_level(exam, gain, black):
    step = FieldOfViewMask()
    shifted = gain * exam + black  # the map applies everywhere, outside the FOV too
    assert torch.equal(step.estimate(shifted, real(4)), step.estimate(exam, real(4)))
    # the black level is removed and the gain kept: out(a x + b) = a out(x)
    torch.testing.assert_close(run(step, shifted), gain * run(step, exam), rtol=0, atol=1e-5)
    fov = step.estimate(exam, real(4))
    assert 0.5 < fov.float().mean() < 0.85 and (run(step, shifted)[:, :, ~fov] == 0).all()


@pytest.mark.parametrize("gain, gamma", [(0.5, 0.6), (1.8, 1.7), (1.0, 2.2)])
def test_power_percentile_normalisation_is_invariant_to_gain_and_gamma(exam, gain, gamma):
    fov = FieldOfViewMask().estimate(exam, real(4))
    step = PercentileNormalise(mode="power")
    # out(g x^gamma) = out(x), exactly: quantiles are order statistics, so they follow the map
    torch.testing.assert_close(run(step, gain * exam**gamma, fov), run(step, exam, fov), rtol=0, atol=2e-5)
    # the middle quantile lands on middle_value
    inside = run(step, exam, fov)[:, :, fov].reshape(-1)
    assert torch.quantile(inside, 0.5, interpolation="lower") == pytest.approx(0.3, abs=1e-5)
    # the linear mode removes the gain but not the gamma: the claim is specific
    linear = PercentileNormalise(mode="linear")
    torch.testing.assert_close(run(linear, gain * exam, fov), run(linear, exam, fov), rtol=0, atol=1e-5)
    assert (run(linear, gain * exam**gamma, fov) - run(linear, exam, fov)).abs().max() > 0.05 or gamma == 1.0


def test_standardise_is_invariant_to_affine_maps_and_hits_its_targets(exam):
    fov = FieldOfViewMask().estimate(exam, real(4))
    step = Standardise(mean=0.5, std=0.2, clip=False)
    torch.testing.assert_close(run(step, 0.4 * exam + 0.1, fov), run(step, exam, fov), rtol=0, atol=1e-5)
    inside = run(step, exam, fov)[:, :, fov].double()
    assert inside.mean() == pytest.approx(0.5, abs=1e-6) and inside.std() == pytest.approx(0.2, abs=1e-6)


def test_histogram_equalisation_is_invariant_to_any_increasing_tone_curve(exam):
    fov = FieldOfViewMask().estimate(exam, real(4))
    step = HistogramEqualise()
    curve = Camera("s", contrast=0.8, noise=0.0)  # an S-curve, as a camera applies it
    for f in (torch.sqrt, lambda x: torch.exp(3 * x), lambda x: x + curve.contrast * (x * x * (3 - 2 * x) - x)):
        assert torch.equal(run(step, f(exam), fov), run(step, exam, fov))
    inside = run(step, exam, fov)[:, :, fov]
    assert inside.mean() == pytest.approx(0.5, abs=1e-3)  # mid-ranks / (n + 1) are uniform on (0, 1)


def test_flatten_illumination_removes_a_log_polynomial_field_exactly_and_vignetting_mostly(exam):
    fov = FieldOfViewMask().estimate(exam, real(4))
    step = FlattenIllumination(degree=2)
    axis = (torch.arange(32) + 0.5) / 32 * 2 - 1
    y, x = torch.meshgrid(axis, axis, indexing="ij")

    def relative(y):  # a global gain aside
        return y[:, :, fov] / y[:, :, fov].mean()

    field = torch.exp(0.3 * x - 0.2 * y**2 + 0.1 * x * y)  # log s is a polynomial of degree 2
    torch.testing.assert_close(relative(run(step, exam * field, fov)), relative(run(step, exam, fov)))
    assert (relative(exam * field) - relative(exam)).abs().max() > 0.05  # the field was there to remove
    torch.testing.assert_close(run(step, 1.6 * exam, fov), 1.6 * run(step, exam, fov), rtol=1e-5, atol=1e-6)

    camera_field = Camera("uneven", gradient=0.4, vignetting=0.5, noise=0.0).illumination(32, 32)
    before = (relative(exam * camera_field) - relative(exam)).abs().mean()
    after = (relative(run(step, exam * camera_field, fov)) - relative(run(step, exam, fov))).abs().mean()
    assert after < before / 3


def test_the_default_pipeline_removes_a_camera_gain_gamma_and_black_level(ideal):
    # end to end, through the camera model: only the soft rim of the aperture is not a pure tone map
    other = Camera("other", noise=0.0, vignetting=0.0, gain=0.7, gamma=1.5, black_level=0.05)
    a, b = PLAIN.apply(ideal.frames), other.apply(ideal.frames)
    pa, pb = INVARIANT.apply_batch(a), INVARIANT.apply_batch(b)
    assert (pa - pb).abs().mean() < 0.01 < 0.05 < (a - b).abs().mean()


def test_padded_frames_do_not_count_and_stay_zero(exam):
    padded = torch.cat([exam[:3], torch.rand(2, *exam.shape[1:])])
    mask = torch.tensor([True, True, True, False, False])
    for pipeline in (INVARIANT, Preprocessing((FieldOfViewMask(), HistogramEqualise()))):
        out = pipeline(padded, mask)
        assert (out[3:] == 0).all()
        torch.testing.assert_close(out[:3], pipeline(exam[:3]), rtol=0, atol=0)


def test_preprocessing_round_trips_through_json_and_names_bad_fields():
    pipeline = Preprocessing((FieldOfViewMask(fraction=0.2), FlattenIllumination(degree=1), Standardise(clip=False)))
    record = json.loads(json.dumps(pipeline.to_dict()))
    assert Preprocessing.from_dict(record) == pipeline
    assert record["steps"][0] == {"name": "fov_mask", "fraction": 0.2, "low": 0.02, "high": 0.98,
                                  "subtract_background": True}  # fmt: skip
    with pytest.raises(ValueError, match="model.json.*steps\\[1\\].*unknown field.*'radius'"):
        Preprocessing.from_dict({"steps": [{"name": "fov_mask"}, {"name": "standardise", "radius": 2}]}, "model.json")
    with pytest.raises(ValueError, match="steps\\[0\\].name"):
        Preprocessing.from_dict({"steps": [{"name": "sharpen"}]})
    with pytest.raises(ValueError, match="mode"):
        PercentileNormalise(mode="log")


def test_the_dataset_wrapper_and_examset_helper_preprocess_without_touching_the_input(ideal):
    exams = simulate_camera_exams(3, PLAIN, SimulatorConfig(size=32, frames=4, min_frames=2), seed=2)
    before = exams.frames.clone()
    wrapped = PreprocessedExams(exams, INVARIANT)
    out = INVARIANT.apply_examset(exams)
    for i in range(3):
        torch.testing.assert_close(wrapped[i]["frames"], INVARIANT(exams.frames[i], exams.mask[i]))
        torch.testing.assert_close(out.frames[i], wrapped[i]["frames"])
    assert torch.equal(exams.frames, before) and torch.equal(out.labels, exams.labels)
    assert torch.equal(Preprocessing()(exams.frames[0]), exams.frames[0])  # no steps: the identity
