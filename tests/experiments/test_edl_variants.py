import json

import pytest
from typer.testing import CliRunner

from clearmamba.cli.main import app
from clearmamba.experiments.edl_variants import EDLVariantsConfig, goal_check


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


def test_config_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown variant"):
        EDLVariantsConfig(variants=("edl_fixed", "nope"))
    with pytest.raises(ValueError, match="data must be"):
        EDLVariantsConfig(data="cifar")


@pytest.mark.slow
def test_quick_mnist_run_and_cache_reuse(offline_sources, tmp_path):
    args = ["experiment", "edl-variants", "--quick", "--out", str(tmp_path), "--variants", "edl_fixed,redl",
            "--posthoc", "scaled,density_scaled,gated_density_scaled"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    payload = json.loads((tmp_path / "results.json").read_text())
    expected = ["softmax", "softmax_ts", "ensemble"]
    for v in ("edl_fixed", "redl"):
        expected += [v, f"{v}+scaled", f"{v}+density+scaled", f"{v}+gated-density+scaled"]
    assert list(payload["results"]) == expected
    for name, r in payload["results"].items():
        assert 0.3 < r["accuracy"] <= 1.0, name
        assert set(r["ood"]) == {"fashion", "animal", "letters"}
        assert r["spearman_with_msp"] == pytest.approx(r["spearman_vs_msp"].get(r["score"], 1.0)) or r["score"] == "msp"
    # post-hoc steps never change the predicted class of the evidence scaling (argmax of act(z / T) is kept)
    assert payload["results"]["redl+scaled"]["accuracy"] == payload["results"]["redl"]["accuracy"]
    assert payload["results"]["softmax"]["cost_vs_softmax"] == 1.0
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
