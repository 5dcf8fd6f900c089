"""``clearmamba train | evaluate | predict | demo`` end to end, through the real entry point."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.cli.run import assert_clean_error, clearmamba

REQUIRED = {"accuracy", "ece", "wrong_confidence_median", "aurc"}
CLASSES = ("normal", "leakage", "staining")


def write_npz(path, n_per_class=8, size=16, seed=0):
    """Three classes told apart by brightness; MedMNIST layout with (n, 1) labels."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_per_class), ("val", 4), ("test", 4)):
        labels = np.repeat(np.arange(3), n)
        images = (rng.random((len(labels), size, size)) * 60 + labels[:, None, None] * 80).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    np.savez(path, **arrays)


def write_exams(root, n_exams=12, frames=4, size=16, seed=0, split=None, only=None, name="manifest.csv"):
    """Multi-frame exams as PNG files plus a manifest with frame times; the class sets the brightness trend."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(n_exams):
        label = CLASSES[e % 3] if only is None else only
        k = CLASSES.index(label)
        for t in range(frames):
            level = 40 + 50 * k + (30 * t if k == 1 else 0)
            pixels = np.clip(rng.random((size, size)) * 40 + level, 0, 255).astype(np.uint8)
            path = root / "frames" / f"s{seed}_e{e}_f{t}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
            row = {"path": f"frames/{path.name}", "exam_id": f"s{seed}-e{e}", "patient_id": f"s{seed}-p{e}",
                   "frame_time": 15 * t, "label": label}  # fmt: skip
            if split is not None:
                row["split"] = split
            rows.append(row)
    with open(root / name, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / name


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cli")
    write_npz(root / "data.npz")
    run = root / "run"
    result = clearmamba("train", "--data", root / "data.npz", "--out", run, "--epochs", "1", "--batch-size", "8")
    assert result.code == 0, result.output
    return root, run, result


@pytest.fixture(scope="module")
def trained_exams(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("exams")
    manifest = write_exams(root, n_exams=24)
    run = root / "run"
    result = clearmamba("train", "--data", manifest, "--out", run, "--epochs", "2", "--batch-size", "8", "--seed", "3")
    assert result.code == 0, result.output
    return root, manifest, run


def test_train_writes_a_checkpoint_with_a_validation_referral_rule(trained):
    _, run, result = trained
    record = json.loads((run / "checkpoint" / "model.json").read_text())["record"]
    rule = record["referral"]
    assert rule["target_risk"] == 0.05 and rule["delta"] == 0.1 and rule["validation_n"] == 12
    assert rule["unfamiliar_score"] == "neg_log_density"  # RaP's density gate answers "is this unfamiliar?"
    assert rule["mistake_score"] in ("one_minus_max_prob", "entropy", "mutual_information")
    # 12 validation exams cannot support a 5 % promise: said, with how many would, and the run still succeeds
    assert "warning: " in result.stdout and "validation exams would" in result.stdout
    assert record["preprocessing"]["frame_size"] == [16, 16] and record["classes"] == ["0", "1", "2"]
    assert (run / "metrics.csv").is_file() and (run / "last" / "optimizer.safetensors").is_file()
    # the split sizes first, then one plain line per epoch with train and validation loss and accuracy
    lines = result.stdout.splitlines()
    assert lines[0].startswith("data ") and "train 24, val 12, test 12" in lines[0]
    epoch = next(line for line in lines if line.startswith("epoch 1/1"))
    assert "train loss" in epoch and "val nll" in epoch and "acc" in epoch


def test_evaluate_on_the_training_source_scores_its_recorded_test_split(trained):
    root, run, _ = trained
    write_npz(root / "other.npz", seed=5)
    result = clearmamba("evaluate", "--checkpoint", run, "--data", root / "data.npz",
                        "--ood", f"other={root}/other.npz", "--out", root / "eval", "--n-boot", "10")  # fmt: skip
    assert result.code == 0, result.output
    assert "scoring 12 exams of" in result.stdout and "recorded test split" in result.stdout
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    test = metrics["models"]["clear_mamba_tiny"]["test"]
    assert set(test) >= REQUIRED and "ood_other" in test["ood_auroc"]
    rows = list(csv.DictReader((root / "eval" / "predictions.csv").read_text().splitlines()))
    columns = {"id", "label", "prediction", "p_0", "p_1", "p_2", "decision", "reason", "neg_log_density",
               "neg_log_density_threshold", "neg_log_density_p_value", "prediction_set"}
    assert columns <= set(rows[0])
    test_rows = [r for r in rows if r["set"] == "test"]
    assert len(test_rows) == 12
    # the rule's decisions in the CSV are the operating point metrics.json reports
    point = metrics["referral"]["clear_mamba_tiny"]["operating_point"]["test"]
    assert point["accepted"]["count"] == sum(r["decision"] == "accept" for r in test_rows)
    unfamiliar = [float(r["neg_log_density"]) > float(r["neg_log_density_threshold"]) for r in test_rows]
    assert point["referred_unfamiliar"]["count"] == sum(unfamiliar)
    accuracy = np.mean([r["label"] == r["prediction"] for r in test_rows])
    assert accuracy == pytest.approx(test["accuracy"])
    assert (root / "eval" / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_evaluate_a_drawn_split_reuses_the_exams_held_out_in_training(trained_exams, tmp_path):
    root, manifest, run = trained_exams
    record = json.loads((run / "checkpoint" / "model.json").read_text())["record"]
    held_out = set(record["data"]["test_exam_ids"])
    assert record["data"]["split"]["drawn"] == ["train", "val", "test"] and record["data"]["split"]["seed"] == 3
    result = clearmamba("evaluate", "--checkpoint", run, "--data", manifest, "--out", tmp_path / "e", "--n-boot", "0")
    assert result.code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "e" / "predictions.csv").read_text().splitlines()))
    assert {r["id"] for r in rows} == held_out and f"scoring {len(held_out)} exams" in result.stdout
    result = clearmamba("evaluate", "--checkpoint", run, "--data", manifest, "--split", "all", "--out", tmp_path / "a",
                        "--n-boot", "0")  # fmt: skip
    assert result.code == 0 and "scoring 24 exams" in result.stdout and "includes training exams" in result.stdout


def test_evaluate_a_one_class_manifest_maps_labels_by_the_checkpoints_classes(trained_exams, tmp_path):
    _, _, run = trained_exams
    manifest = write_exams(tmp_path, n_exams=5, seed=9, only="leakage")
    result = clearmamba("evaluate", "--checkpoint", run, "--data", manifest, "--out", tmp_path / "e", "--n-boot", "0")
    assert result.code == 0, result.output
    assert "scoring 5 exams" in result.stdout and "not the run's training source" in result.stdout
    rows = list(csv.DictReader((tmp_path / "e" / "predictions.csv").read_text().splitlines()))
    assert len(rows) == 5 and {r["label"] for r in rows} == {"leakage"}
    assert {"p_normal", "p_leakage", "p_staining"} <= set(rows[0])
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    accuracy = np.mean([r["prediction"] == "leakage" for r in rows])
    assert metrics["models"]["clear_mamba_tiny"]["test"]["accuracy"] == pytest.approx(accuracy)


def test_evaluate_a_test_only_manifest(trained_exams, tmp_path):
    _, _, run = trained_exams
    manifest = write_exams(tmp_path, n_exams=6, seed=11, split="test")
    result = clearmamba("evaluate", "--checkpoint", run, "--data", manifest, "--split", "test", "--out", tmp_path / "e",
                        "--n-boot", "0")  # fmt: skip
    assert result.code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "e" / "predictions.csv").read_text().splitlines()))
    assert len(rows) == 6 and [r["label"] for r in rows] == [CLASSES[e % 3] for e in range(6)]


def test_an_unknown_label_lists_the_known_ones(trained_exams, tmp_path):
    _, _, run = trained_exams
    manifest = write_exams(tmp_path, n_exams=2, seed=12, only="normal")
    text = manifest.read_text().replace(",normal", ",glaucoma", 1)
    manifest.write_text(text)
    result = clearmamba("evaluate", "--checkpoint", run, "--data", manifest, "--out", tmp_path / "e")
    assert_clean_error(result, "manifest.csv:2", "'glaucoma'", "normal", "leakage", "staining")


def test_predict_an_exam_folder_equals_evaluating_it_through_a_manifest(trained_exams, tmp_path):
    _, _, run = trained_exams
    rng = np.random.default_rng(4)
    folder = tmp_path / "exam"
    folder.mkdir()
    rows = []
    for t in range(12):  # frame1 .. frame12: natural order, not frame1, frame10, frame11, frame12, frame2, ...
        Image.fromarray((rng.random((20, 20)) * 200 + 5 * t).astype(np.uint8)).save(folder / f"frame{t + 1}.png")
        rows.append({"path": f"exam/frame{t + 1}.png", "exam_id": "x", "frame_time": 15 * t, "label": "normal"})
    with open(tmp_path / "m.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    times = ",".join(str(15 * t) for t in range(12))
    result = clearmamba("predict", "--checkpoint", run, "--json", "--frame-times", times, folder)
    assert result.code == 0, result.output
    predicted = json.loads(result.stdout)["results"][0]
    assert predicted["frames"] == 12 and predicted["frame_times"] == [15.0 * t for t in range(12)]
    result = clearmamba("evaluate", "--checkpoint", run, "--data", tmp_path / "m.csv", "--out", tmp_path / "e",
                        "--n-boot", "0")  # fmt: skip
    assert result.code == 0, result.output
    row = next(csv.DictReader((tmp_path / "e" / "predictions.csv").read_text().splitlines()))
    for name in CLASSES:
        assert float(row[f"p_{name}"]) == pytest.approx(predicted["probabilities"][name], abs=2e-6)


def test_predict_without_times_uses_the_training_exams_typical_times_and_says_so(trained_exams, tmp_path):
    _, _, run = trained_exams
    folder = tmp_path / "exam"
    folder.mkdir()
    for t in range(3):
        Image.fromarray(np.full((16, 16), 60 + 10 * t, dtype=np.uint8)).save(folder / f"f{t}.png")
    result = clearmamba("predict", "--checkpoint", run, folder)
    assert result.code == 0, result.output
    assert "assumed the training exams' typical times 0, 15, 30 s" in result.stdout


def test_predict_names_an_unreadable_file_and_carries_on(trained):
    root, run, _ = trained
    good = root / "good.png"
    Image.fromarray((np.random.default_rng(1).random((20, 20)) * 255).astype(np.uint8)).save(good)
    broken = root / "broken.png"
    broken.write_bytes(b"not an image")
    result = clearmamba("predict", "--checkpoint", run, "--json", broken, good)
    assert result.code == 0, result.output
    payload = json.loads(result.stdout)
    assert [r["exam"] for r in payload["results"]] == [str(good)]
    assert "broken.png" in payload["skipped"][0] and "broken.png" in result.stderr
    for r in payload["results"]:
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-5
        assert r["decision"] in ("accept", "refer: unfamiliar", "refer: uncertain") and r["reason"]
        unfamiliar = r["scores"]["neg_log_density"]
        assert (r["decision"] == "refer: unfamiliar") == unfamiliar["fires"]
        assert (r["diagnosis"] is not None) == (r["decision"] == "accept")


def test_demo_quick_trains_three_models_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    result = clearmamba("demo", "--quick", "--out", out)
    assert result.code == 0, result.output
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
    # piped into a log, every epoch prints a line (no silence between "training" and the end)
    assert result.stdout.count("epoch 1/2") == 3
    again = clearmamba("demo", "--quick", "--out", out)  # an earlier demo is replaced
    assert again.code == 0, again.output


def test_train_evidence_option_reaches_the_head_and_the_posthoc_scaling(tmp_path):
    from clearmamba.training import load_run

    write_npz(tmp_path / "data.npz")
    run = tmp_path / "run"
    result = clearmamba("train", "--data", tmp_path / "data.npz", "--out", run, "--epochs", "1", "--batch-size", "8",
                        "--evidence", "exp", "--device", "cpu")  # fmt: skip
    assert result.code == 0, result.output
    model, record = load_run(run)
    assert record.model.options["evidence"] == "exp" and record.method.options["evidence"] == "exp"
    scaler = next(m for m in model.modules() if type(m).__name__ == "EvidenceScaler")
    assert scaler.evidence == "exp"


def test_camera_augmentation_is_the_default_and_evaluate_can_adapt_to_a_new_camera(trained, tmp_path):
    from clearmamba.training import load_run

    root, run, _ = trained
    _, record = load_run(run)
    assert record.augmentation is not None and record.preprocessing.intensity.steps == ()
    result = clearmamba("evaluate", "--checkpoint", run, "--data", root / "data.npz", "--adapt",
                        "--out", tmp_path / "e", "--n-boot", "0")  # fmt: skip
    assert result.code == 0, result.output
    assert "BatchNorm statistics re-estimated" in result.stdout
    write_npz(tmp_path / "d.npz")
    result = clearmamba("train", "--data", tmp_path / "d.npz", "--out", tmp_path / "r", "--epochs", "1",
                        "--no-camera-augment", "--invariant")  # fmt: skip
    assert result.code == 0, result.output
    _, record = load_run(tmp_path / "r")
    assert record.augmentation is None and record.preprocessing.intensity.steps
