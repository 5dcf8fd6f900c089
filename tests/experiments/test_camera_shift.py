"""The camera-shift study end to end at CI size, and the properties its design rests on."""

import json

import pytest
import torch

from clearmamba.data.camera_family import HELDOUT_WITH_DEVICE_E, TRAINING_FAMILY, check_heldout
from clearmamba.experiments.camera_shift import CANDIDATES, CameraShiftConfig, run, run_config


def test_every_candidate_changes_one_thing_of_the_demo_run():
    config = CameraShiftConfig()
    base = run_config(config, "hac", 0)
    assert base.model_options["hac"] is True and not base.intensity.steps and base.camera_augment is None
    assert not run_config(config, "no_hac", 0).model_options["hac"]
    assert run_config(config, "invariant", 0).intensity.steps
    augment = run_config(config, "augment", 0)
    assert augment.camera_augment.family == TRAINING_FAMILY and augment.builtin.train_camera == "ideal"
    assert run_config(config, "rap_public", 0).method.options["objective"] == "public"
    assert set(CANDIDATES) >= {"no_hac", "hac", "hac_public", "invariant", "augment", "invariant+augment"}
    # every held-out camera lies outside the augmentation family in at least 3 parameters
    assert all(len(v) >= 3 for v in check_heldout(HELDOUT_WITH_DEVICE_E).values())


@pytest.mark.slow
def test_quick_study_scores_every_camera_with_intervals(tmp_path):
    torch.set_num_threads(1)
    payload = run(CameraShiftConfig.quick_config(candidates=("hac", "invariant")), tmp_path, log=lambda _: None)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["results"]) == {"hac", "invariant"}
    per_set = payload["results"]["hac"]["0"]["plain"]
    assert set(per_set) == {"test", *(c.name for c in HELDOUT_WITH_DEVICE_E)}
    for name, entry in per_set.items():
        acc = entry["accuracy"]
        assert acc["n"] == (12 if name == "test" else 6) and acc["low"] <= acc["value"] <= acc["high"]
        assert 0 <= entry["ece"] <= 1 and (name == "test" or 0 <= entry["shift_auroc"] <= 1)
    bn = payload["results"]["hac"]["0"]["+bn"]["overexposed"]["accuracy"]
    assert bn["n"] == 6  # the adapted model is scored on the same camera exams
    table = (tmp_path / "table.md").read_text()
    assert "| hac | plain |" in table and "| invariant | +bn |" in table
