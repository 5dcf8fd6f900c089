import numpy as np
import pytest
import torch

from clearmamba import evaluation as ev


def test_groups_are_never_split():
    # group g has g + 1 samples; in every replicate each drawn group must appear with all its samples
    groups = np.repeat(np.arange(6), np.arange(1, 7))
    broken = []

    def groups_drawn(g):
        ids, counts = np.unique(g, return_counts=True)
        sizes = ids + 1
        if np.any(counts % sizes):
            broken.append(g)
        return float((counts // sizes).sum())

    result = ev.bootstrap_ci(groups_drawn, groups, groups=groups, n_boot=300)
    assert not broken
    # each replicate draws exactly as many groups as there are
    assert result.estimate == result.low == result.high == 6.0


def test_without_groups_every_replicate_keeps_n_samples():
    sizes = set()
    ev.bootstrap_ci(lambda x: sizes.add(len(x)) or 0.0, np.arange(37), n_boot=50)
    assert sizes == {37}


def test_interval_of_a_mean_contains_the_estimate_and_has_the_normal_width():
    x = np.random.default_rng(0).normal(size=400)
    result = ev.bootstrap_ci(np.mean, x, n_boot=1000, seed=1)
    assert result.estimate == pytest.approx(x.mean())
    assert result.low < result.estimate < result.high
    # normal theory: width 2 * 1.96 * s / sqrt(n)
    assert result.high - result.low == pytest.approx(2 * 1.96 * x.std() / 20, rel=0.15)


def test_grouped_interval_is_wider_for_duplicated_patients():
    # 40 patients x 10 identical images: resampling images would pretend n = 400
    patient_value = np.random.default_rng(0).normal(size=40)
    x = np.repeat(patient_value, 10)
    patients = np.repeat(np.arange(40), 10)
    naive = ev.bootstrap_ci(np.mean, x, n_boot=400)
    grouped = ev.bootstrap_ci(np.mean, x, groups=patients, n_boot=400)
    assert grouped.low < grouped.estimate < grouped.high
    ratio = (grouped.high - grouped.low) / (naive.high - naive.low)
    assert ratio == pytest.approx(np.sqrt(10), rel=0.3)


def test_tensors_several_arrays_seed_and_nan_replicates():
    score = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3, 0.7])
    correct = torch.tensor([True, False, True, False, True, True])
    first = ev.bootstrap_ci(ev.aurc, score, correct, n_boot=100, seed=3)
    again = ev.bootstrap_ci(ev.aurc, score, correct, n_boot=100, seed=3)
    assert first == again and first.estimate == pytest.approx(ev.aurc(score, correct))
    detection = ev.bootstrap_ci(
        lambda s, c: ev.misclassification_metrics(s, c)["auroc"], score, correct, n_boot=300
    )
    # some resamples hold no error: their AUROC is NaN and is left out
    assert 0 < detection.n_valid < 300


def test_string_group_ids():
    # eye ids as strings: 3 eyes with 2, 1 and 3 images; every replicate draws 3 whole eyes
    eyes = np.array(["P1-OD", "P1-OD", "P1-OS", "P2-OD", "P2-OD", "P2-OD"])
    size = {"P1-OD": 2, "P1-OS": 1, "P2-OD": 3}
    drawn_eyes = set()

    def eyes_drawn(e):
        ids, counts = np.unique(e, return_counts=True)
        drawn_eyes.add(sum(c / size[i] for i, c in zip(ids, counts)))
        return 0.0

    ev.bootstrap_ci(eyes_drawn, eyes, groups=eyes, n_boot=100)
    assert drawn_eyes == {3.0}


def test_bad_arguments():
    with pytest.raises(ValueError, match="groups: expected 3"):
        ev.bootstrap_ci(np.mean, np.arange(3.0), groups=[0, 1])
    with pytest.raises(ValueError, match="lengths"):
        ev.bootstrap_ci(lambda a, b: 0.0, np.arange(3), np.arange(4))
