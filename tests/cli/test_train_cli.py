import csv
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clearmamba.cli.main import app

REQUIRED = {"accuracy", "ece", "wrong_confidence_median", "aurc"}


def write_npz(path, n_per_class=8, size=16, seed=0):
    """Three classes told apart by brightness; MedMNIST layout with (n, 1) labels."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_per_class), ("val", 4), ("test", 4)):
        labels = np.repeat(np.arange(3), n)
        images = (rng.random((len(labels), size, size)) * 60 + labels[:, None, None] * 80).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    np.savez(path, **arrays)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_npz(root / "data.npz")
    run = root / "run"
    args = ["train", "--data", str(root / "data.npz"), "--out", str(run), "--epochs", "1", "--batch-size", "8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return root, run


def test_train_writes_a_checkpoint_with_a_validation_referral_rule(trained):
    _, run = trained
    config = json.loads((run / "checkpoint" / "model.json").read_text())
    rule = config["referral"]
    assert rule["score"] == "vacuity" and rule["target_risk"] == 0.05
    assert config["preprocessing"]["frame_size"] == [16, 16] and config["classes"] == ["0", "1", "2"]
    assert (run / "metrics.csv").is_file() and (run / "last" / "optimizer.safetensors").is_file()


def test_evaluate_writes_metrics_per_sample_csv_and_report(trained):
    root, run = trained
    write_npz(root / "other.npz", seed=5)
    args = ["evaluate", "--checkpoint", str(run), "--data", str(root / "data.npz"), "--ood", f"other={root}/other.npz",
            "--out", str(root / "eval"), "--n-boot", "10"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    test = metrics["models"]["clear_mamba_tiny"]["test"]
    assert set(test) >= REQUIRED and "ood_other" in test["ood_auroc"]
    rows = list(csv.DictReader((root / "eval" / "predictions.csv").read_text().splitlines()))
    columns = {"id", "label", "prediction", "p_0", "p_1", "p_2", "vacuity", "entropy", "mutual_info", "refer"}
    assert columns <= set(rows[0])
    threshold = metrics["referral"]["clear_mamba_tiny"]["threshold"]
    assert all((r["refer"] == "True") == (float(r["vacuity"]) > threshold) for r in rows)
    test_rows = [r for r in rows if r["set"] == "test"]
    accuracy = np.mean([r["label"] == r["prediction"] for r in test_rows])
    assert accuracy == pytest.approx(test["accuracy"])
    assert (root / "eval" / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_predict_names_an_unreadable_file_and_carries_on(trained):
    root, run = trained
    good = root / "good.png"
    Image.fromarray((np.random.default_rng(1).random((20, 20)) * 255).astype(np.uint8)).save(good)
    exam = root / "exam"
    exam.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16), 40 * i, dtype=np.uint8)).save(exam / f"frame{i}.png")
    broken = root / "broken.png"
    broken.write_bytes(b"not an image")
    result = CliRunner().invoke(app, ["predict", "--checkpoint", str(run), "--json", str(broken), str(good), str(exam)])
    assert result.exit_code == 0, result.output
    assert "broken.png" in result.output
    payload = json.loads(result.output[result.output.index("{") :])
    assert [r["exam"] for r in payload["results"]] == [str(good), str(exam)]
    assert payload["results"][1]["frames"] == 3 and "broken.png" in payload["skipped"][0]
    config = json.loads((run / "checkpoint" / "model.json").read_text())
    for r in payload["results"]:
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-5
        assert r["refer"] == (r["vacuity"] > config["referral"]["threshold"])


def test_demo_quick_trains_three_models_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"clear_mamba", "softmax", "single_frame"}
    for per_set in metrics["models"].values():
        for name in ("test", "test_heldout_device"):
            assert set(per_set[name]) >= REQUIRED
        assert set(per_set["test"]["ood_auroc"]) == {"ood_unseen_disease", "ood_non_angiography", "ood_corrupted"}
    for name in ("clear_mamba", "softmax", "single_frame"):
        rows = list(csv.DictReader((out / name / "metrics.csv").read_text().splitlines()))
        assert len(rows) >= 1  # it really trained
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64" in html


def test_train_evidence_option_reaches_the_head_and_the_posthoc_scaling(tmp_path):
    from clearmamba.training import load_model

    write_npz(tmp_path / "data.npz")
    run = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "data.npz"), "--out", str(run), "--epochs", "1", "--batch-size", "8",
            "--evidence", "exp"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((run / "checkpoint" / "model.json").read_text())
    assert config["model_kwargs"]["evidence"] == "exp"
    model, _ = load_model(run / "checkpoint")
    scaler = next(m for m in model.modules() if type(m).__name__ == "EvidenceScaler")
    assert scaler.evidence == "exp"
