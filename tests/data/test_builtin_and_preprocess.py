"""Built-in splits (patients, devices, OOD sets) and the plain-torch preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clearmamba.data.anatomy import field_of_view
from clearmamba.data.angiography import SimulatorConfig, simulate_exams
from clearmamba.data.builtin import CORRUPTIONS, NON_ANGIOGRAPHY_SOURCES, make_builtin_splits
from clearmamba.data.examset import UNKNOWN_LABEL, concat_examsets
from clearmamba.data.preprocess import ExamAugment, TransformedExams, fov_mask, normalise_intensity


@pytest.fixture(scope="module")
def splits():
    cfg = SimulatorConfig(size=32, frames=4)
    return make_builtin_splits(cfg, n_train=24, n_val=8, n_test=8, n_heldout=8, n_ood=12, seed=0)


def test_builtin_split_names_shapes_and_labels(splits):
    assert set(splits) == {
        "train",
        "val",
        "test",
        "test_heldout_device",
        "ood_unseen_disease",
        "ood_non_angiography",
        "ood_corrupted",
    }
    for name, s in splits.items():
        assert s.frames.shape[1:] == (4, 1, 32, 32), name
        assert s.frames.min() >= 0 and s.frames.max() <= 1, name
        if name.startswith("ood_"):
            assert (s.labels == UNKNOWN_LABEL).all(), name
        else:
            assert (s.labels >= 0).all(), name


def test_builtin_splits_share_no_patient_and_hold_out_the_device(splits):
    patients = {name: set(s.patient_id) for name, s in splits.items() if name != "ood_corrupted"}
    names = list(patients)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert patients[a].isdisjoint(patients[b]), (a, b)
    assert set(splits["test_heldout_device"].device_id) == {"device_E"}
    for name in ("train", "val", "test"):
        assert "device_E" not in splits[name].device_id


def test_ood_sets_are_what_they_say(splits):
    other = splits["ood_non_angiography"]
    assert set(other.info["kind"]) == set(NON_ANGIOGRAPHY_SOURCES)
    assert torch.equal(other.frames[:, 0], other.frames[:, -1])  # stills: no dye dynamics
    assert (other.frames.flatten(1).std(1) > 0.005).all()  # real pixels, not blank
    bad = splits["ood_corrupted"]
    kinds = bad.info["kind"]
    assert set(kinds) == set(CORRUPTIONS)
    assert (bad.frames[kinds.index("blank")] == 0).all()
    assert torch.allclose(bad.frames[kinds.index("grey")], torch.tensor(0.5))
    picked = bad.subset([2, 0])
    assert picked.info["kind"] == [kinds[2], kinds[0]] and picked.exam_id == [bad.exam_id[2], bad.exam_id[0]]


def test_concat_pads_shorter_exams():
    a = simulate_exams(2, SimulatorConfig(size=16, frames=3), seed=0, anatomy_seed=0)
    b = simulate_exams(2, SimulatorConfig(size=16, frames=5), seed=1, anatomy_seed=0)
    both = concat_examsets([a, b])
    assert both.frames.shape == (4, 5, 1, 16, 16) and both.mask.sum(1).tolist() == [3, 3, 5, 5]


def test_fov_mask_finds_the_camera_circle():
    s = simulate_exams(3, SimulatorConfig(size=32), seed=2, anatomy_seed=0)
    truth = field_of_view(32) > 0.5
    for i in range(3):
        found = fov_mask(s.frames[i])
        iou = (found & truth).sum() / (found | truth).sum()
        assert iou > 0.9


def test_normalise_intensity_maps_quantiles_to_zero_and_one():
    frames = torch.rand(3, 1, 20, 20) * 0.5 + 0.2
    mask = torch.ones(20, 20, dtype=torch.bool)
    out = normalise_intensity(frames, mask, low=0.1, high=0.9)
    lo, hi = np.quantile(frames.numpy(), [0.1, 0.9])
    expected = np.clip((frames.numpy() - lo) / (hi - lo), 0, 1)
    assert np.allclose(out.numpy(), expected, atol=1e-5)


def test_augment_identity_and_flip_are_exact():
    frames = torch.rand(4, 1, 16, 16)
    still = ExamAugment(flip=False, max_degrees=0, scale=0, brightness=0, contrast=0, gamma=0)
    assert torch.allclose(still(frames), frames, atol=1e-5)
    flip = ExamAugment(flip=True, max_degrees=0, scale=0, brightness=0, contrast=0, gamma=0)
    outs = [flip(frames, torch.Generator().manual_seed(k)) for k in range(8)]
    flipped = [o for o in outs if not torch.allclose(o, frames, atol=1e-5)]
    assert flipped and all(torch.allclose(o, frames.flip(-1), atol=1e-5) for o in flipped)
    moved = ExamAugment()(frames, torch.Generator().manual_seed(0))
    assert moved.shape == frames.shape and moved.min() >= 0 and moved.max() <= 1


def test_transformed_exams_keep_padding_zero():
    s = simulate_exams(4, SimulatorConfig(size=16, frames=5, min_frames=2), seed=3, anatomy_seed=0)
    wrapped = TransformedExams(s, lambda x: x + 0.3)
    for i in range(4):
        item = wrapped[i]
        assert (item["frames"][~item["mask"]] == 0).all()
        assert torch.allclose(item["frames"][item["mask"]], s.frames[i][s.mask[i]] + 0.3)
