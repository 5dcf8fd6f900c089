import json

import numpy as np
import pytest
from typer.testing import CliRunner

from clearmamba.cli.main import app
from clearmamba.experiments.active_learning import ActiveConfig, balanced_start, summarize_curves


def test_balanced_start_takes_per_class_without_repeats():
    labels = np.repeat(np.arange(10), 7)
    picked = balanced_start(labels, 3, seed=1)
    assert np.bincount(labels[picked]).tolist() == [3] * 10 and len(set(picked)) == 30
    with pytest.raises(ValueError, match="fewer than initial_per_class=8"):
        balanced_start(labels, 8, seed=1)


def test_config_rejects_unknown_acquisition():
    with pytest.raises(ValueError, match="unknown acquisition"):
        ActiveConfig(acquisitions=("bald", "oracle"))


def test_summary_area_under_the_curve_by_hand():
    curves = {"a": [{"labels": [10, 20, 40], "accuracy": [0.5, 0.7, 0.9]},
                    {"labels": [10, 20, 40], "accuracy": [0.5, 0.5, 0.7]}]}
    s = summarize_curves(curves)["a"]
    # trapezoids: (0.5+0.7)/2*10 + (0.7+0.9)/2*20 = 22 -> /30; second: 5 + 12 = 17 -> /30
    assert s["mean_accuracy_over_curve"] == pytest.approx((22 / 30 + 17 / 30) / 2)
    assert s["final_accuracy_mean"] == pytest.approx(0.8) and s["final_accuracy_min"] == pytest.approx(0.7)


@pytest.mark.slow
def test_quick_simulation_end_to_end(offline_sources, tmp_path):
    result = CliRunner().invoke(app, ["active", "simulate", "--quick", "--out", str(tmp_path), "--threads", "1"])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "curves.json").read_text())
    assert set(payload["curves"]) == {"random", "bald", "vacuity"}
    for runs in payload["curves"].values():
        curve = runs[0]
        assert curve["labels"] == [20, 30, 40]  # 2 per class, then +10 per round
        assert [sum(c) for c in curve["picked_classes"]] == [10, 10]
        assert all(0.0 <= a <= 1.0 for a in curve["accuracy"])
    # every softmax arm starts from the same labelled set and the same first network
    assert payload["curves"]["random"][0]["accuracy"][0] == payload["curves"]["bald"][0]["accuracy"][0]
    assert (tmp_path / "learning_curves.png").stat().st_size > 10_000
    assert "| bald | 40 |" in (tmp_path / "summary.md").read_text()


def test_mean_kl_to_the_mean_committee_equals_bald():
    # 1/M sum_m KL(p_m || p_mean) = H[p_mean] - 1/M sum_m H[p_m]: QBC's mean KL ranks the pool exactly like BALD
    import torch

    from clearmamba.active import acquisition_scores

    members = torch.softmax(torch.randn(7, 50, 10, generator=torch.Generator().manual_seed(0)) * 3, -1)
    torch.testing.assert_close(acquisition_scores("mean_kl", members), acquisition_scores("bald", members))
