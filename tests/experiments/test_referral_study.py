"""The referral re-draw study on a checkpoint trained on the built-in data (CI size)."""

import json

import pytest
import torch

from clearmamba.data.sources import BuiltinData
from clearmamba.errors import UserError
from clearmamba.experiments.referral_study import ReferralStudyConfig, run
from clearmamba.training import TrainConfig
from clearmamba.training.record import MethodSpec
from clearmamba.training.run import RunConfig, train_run
from tests.training.conftest import TINY_OPTIONS, train_tiny


@pytest.mark.slow
def test_quick_study_redraws_calibration_and_reports_ood_acceptance(tmp_path):
    torch.set_num_threads(1)
    builtin = BuiltinData(n_train=24, n_val=9, n_test=9, n_heldout=6, n_ood=6, size=16, frames=3,
                          classes=("normal", "leakage", "staining"))  # fmt: skip
    cfg = RunConfig(data="builtin", model_options={"head": "evidential", **TINY_OPTIONS},
                    method=MethodSpec("evidential", {}), train=TrainConfig(epochs=1, batch_size=8, patience=0),
                    builtin=builtin)  # fmt: skip
    train_run(cfg, tmp_path / "run", log=lambda _: None)
    payload = run(ReferralStudyConfig.quick_config(checkpoints=(str(tmp_path / "run"),)), tmp_path / "out",
                  log=lambda _: None)  # fmt: skip
    result = json.loads((tmp_path / "out" / "results.json").read_text())["results"]["run"]
    summary = result["summary"]
    assert summary["draws"] == 3 and len(result["draws"]) == 3
    assert set(summary["ood_accepted_mean"]) == {"ood_unseen_disease", "ood_non_angiography", "ood_corrupted"}
    held = sum(not (d["test_accepted_error"] > 0.05) for d in result["draws"]) / 3
    assert summary["held"] == pytest.approx(held)
    assert result["heldout_camera"]["n"] == 20 and payload["wall_seconds"] > 0


def test_a_checkpoint_not_trained_on_builtin_is_refused(tmp_path):
    train_tiny(tmp_path / "run", posthoc=False)
    with pytest.raises(UserError, match="needs a run trained with --data builtin"):
        run(ReferralStudyConfig.quick_config(checkpoints=(str(tmp_path / "run"),)), tmp_path / "out")
