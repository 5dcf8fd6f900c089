import json

import pytest
import torch
from typer.testing import CliRunner

from clearmamba.cli.main import app
from clearmamba.experiments.edl_variants import (
    EDLVariantsConfig,
    _cache_key,
    _comparable,
    goal_check,
    sharpest_calibrated_wrong_median,
    sharpest_calibration,
)
from clearmamba.uncertainty import Prediction


def _result(accuracy, ece, wrong, right, ood_auroc, entropy_auroc=None):
    ood = {s: {"auroc": a} for s, a in ood_auroc.items()}
    out = {"accuracy": accuracy, "ece": ece, "wrong_confidence_median": wrong, "right_confidence_median": right,
           "ood": ood}
    if entropy_auroc is not None:
        out["ood_entropy"] = {s: {"auroc": a} for s, a in entropy_auroc.items()}
    return out


def test_goal_check_uses_the_ensembles_better_score():
    results = {
        "softmax": _result(0.99, 0.01, 0.7, 1.0, {"a": 0.95, "b": 0.90}),
        "ensemble": _result(0.992, 0.01, 0.6, 1.0, {"a": 0.96, "b": 0.91}, {"a": 0.97, "b": 0.89}),
        "x": _result(0.9895, 0.015, 0.3, 0.96, {"a": 0.965, "b": 0.92}),  # below the ensemble's entropy on "a"
        "y": _result(0.9895, 0.015, 0.3, 0.96, {"a": 0.975, "b": 0.92}),
    }
    goal = goal_check(results)
    assert goal["ensemble_ood_bar"] == {"a": 0.97, "b": 0.91}
    assert not goal["methods"]["x"]["ood"] and goal["methods"]["x"]["passed"] == 5
    assert goal["methods"]["y"]["all"]
    assert not goal["methods"]["ensemble"]["single_pass"]


def test_sharpest_calibration_pools_violators_by_hand():
    # sorted by confidence, correctness 0 1 0 0 1 1: the block (1, 0, 0) violates order and pools to 1/3
    confidence = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    correct = torch.tensor([0, 1, 0, 0, 1, 1])
    expected = torch.tensor([0.0, 1 / 3, 1 / 3, 1 / 3, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(sharpest_calibration(confidence, correct), expected)


def test_sharpest_calibration_is_calibrated_and_monotone():
    g = torch.Generator().manual_seed(0)
    confidence = torch.rand(2000, generator=g)
    correct = torch.rand(2000, generator=g) < confidence**0.5
    calibrated = sharpest_calibration(confidence, correct)
    order = confidence.argsort()
    assert bool((calibrated[order].diff() >= -1e-12).all())
    for level in calibrated.unique():  # every level is the accuracy of the samples mapped to it
        members = calibrated == level
        assert correct[members].double().mean().item() == pytest.approx(level.item(), abs=1e-9)


def test_sharpest_calibrated_wrong_median_on_a_separable_ranking():
    # every mistake is less confident than every right answer: the oracle puts mistakes at accuracy 0
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    labels = torch.tensor([0, 0, 1, 1])
    assert sharpest_calibrated_wrong_median(Prediction(probs=probs), labels) == 0.0


def test_cache_keys_of_runs_before_the_schedule_options_still_match():
    config = EDLVariantsConfig()
    old = {**_cache_key(config, "softmax_0", 0), "warmup_epochs": 0.0, "grad_clip": 0.0}
    assert _comparable(old) == _cache_key(config, "softmax_0", 0)
    # softmax members do not depend on the evidence activation, variants do
    exp = EDLVariantsConfig(evidence="exp")
    assert _cache_key(exp, "softmax_0", 0) == _cache_key(config, "softmax_0", 0)
    assert _cache_key(exp, "redl", 0) != _cache_key(config, "redl", 0)
    stored = {**_cache_key(config, "softmax_0", 0), "evidence": "softplus"}  # written before the key dropped it
    assert _comparable(stored) == _cache_key(exp, "softmax_0", 0)
    scheduled = EDLVariantsConfig(warmup_epochs=1.0, grad_clip=1.0)
    assert _cache_key(scheduled, "softmax_0", 0) != _cache_key(config, "softmax_0", 0)


def test_config_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown variant"):
        EDLVariantsConfig(variants=("edl_fixed", "nope"))
    with pytest.raises(ValueError, match="data must be"):
        EDLVariantsConfig(data="cifar")
    with pytest.raises(ValueError, match="unknown evidence"):
        EDLVariantsConfig(evidence="sigmoid")


@pytest.mark.slow
def test_quick_mnist_run_and_cache_reuse(offline_sources, tmp_path):
    args = ["experiment", "edl-variants", "--quick", "--out", str(tmp_path), "--variants", "edl_fixed,redl",
            "--posthoc", "scaled,density_scaled,gated_density_scaled", "--ood", ",".join(offline_sources)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    payload = json.loads((tmp_path / "results.json").read_text())
    expected = ["softmax", "softmax_ts", "ensemble"]
    for v in ("edl_fixed", "redl"):
        expected += [v, f"{v}+scaled", f"{v}+density+scaled", f"{v}+gated-density+scaled"]
    assert list(payload["results"]) == expected
    for name, r in payload["results"].items():
        assert 0.3 < r["accuracy"] <= 1.0, name
        assert set(r["ood"]) == set(offline_sources)
        assert r["spearman_with_msp"] == pytest.approx(r["spearman_vs_msp"].get(r["score"], 1.0)) or r["score"] == "msp"
    # post-hoc steps never change the predicted class of the evidence scaling (argmax of act(z / T) is kept)
    assert payload["results"]["redl+scaled"]["accuracy"] == payload["results"]["redl"]["accuracy"]
    assert payload["results"]["softmax"]["cost_vs_softmax"] == 1.0
    for r in payload["results"].values():  # the referral rule's mistake score, with its bootstrap interval
        rule = r["rule"]
        assert rule["mistake_score"] in ("one_minus_max_prob", "entropy", "mutual_information")
        low, high = rule["misclassification_auroc_ci"]
        assert low <= rule["misclassification_auroc"] <= high
    assert "rule's mistake score" in (tmp_path / "table.md").read_text()
    assert "| R-EDL + density + scaled | vacuity |" in (tmp_path / "table.md").read_text()
    gate = payload["posthoc"]["redl+gated-density+scaled"]
    # the chosen gate is the steepest within 10 % of the best validation NLL
    nll = {float(k): v for k, v in gate["val_nll_by_sharpness"].items()}
    within = [s for s, v in nll.items() if v <= 1.1 * min(nll.values())]
    assert gate["sharpness"] == max(within)
    # the second run trains nothing: every network comes from <out>/models
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and second.output.count("loaded from") == 4
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["results"]["redl"]["accuracy"] == payload["results"]["redl"]["accuracy"]


@pytest.mark.slow
def test_quick_angiography_run(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- edl-variants:angiography start -->\n<!-- edl-variants:angiography end -->\n")
    result = CliRunner().invoke(app, ["experiment", "edl-variants", "--quick", "--data", "angiography", "--out",
                                      str(tmp_path), "--variants", "redl", "--posthoc", "density_scaled", "--epochs",
                                      "0.5", "--doc", str(doc)])
    assert result.exit_code == 0, result.output
    assert "| R-EDL + density + scaled | vacuity |" in doc.read_text()
    payload = json.loads((tmp_path / "results.json").read_text())
    assert list(payload["results"]) == ["softmax", "softmax_ts", "ensemble", "redl", "redl+density+scaled"]
    assert all(set(r["ood"]) and all(s.startswith("ood") for s in r["ood"]) for r in payload["results"].values())


def test_write_doc_section_replaces_only_the_marked_block(tmp_path):
    from clearmamba.experiments.edl_variants_report import write_doc_section

    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- edl-variants:a start -->\nold\n<!-- edl-variants:a end -->\noutro\n")
    write_doc_section(doc, "a", "| new |")
    assert doc.read_text() == "intro\n<!-- edl-variants:a start -->\n| new |\n<!-- edl-variants:a end -->\noutro\n"
    with pytest.raises(ValueError, match="edl-variants:b"):
        write_doc_section(doc, "b", "x")
