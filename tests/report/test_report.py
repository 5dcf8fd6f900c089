"""The trust report: numbers checked against scikit-learn / torchmetrics / numpy, page checked as HTML."""

import base64
import html
import json
import os
import stat
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score
from torchmetrics.functional.classification import multiclass_calibration_error

from clearmamba.report import compute_report_metrics, headline_metrics, take_home_messages, write_report
from clearmamba.uncertainty import Prediction

K = 3
CLASSES = ["normal", "leakage", "staining"]
CALIBRATED, OVERCONFIDENT = "calibrated", "over-confident"


def calibrated_probs(n: int, seed: int, k: int = K) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities that are right exactly as often as they claim: label = argmax with probability max p."""
    g = torch.Generator().manual_seed(seed)
    predicted = torch.randint(0, k, (n,), generator=g)
    confidence = 0.4 + 0.59 * torch.rand(n, generator=g, dtype=torch.float64)
    probs = ((1 - confidence) / (k - 1))[:, None].repeat(1, k)
    probs[torch.arange(n), predicted] = confidence
    correct = torch.rand(n, generator=g, dtype=torch.float64) < confidence
    other = (predicted + torch.randint(1, k, (n,), generator=g)) % k
    return probs, torch.where(correct, predicted, other)


def pair(n: int = 240, seed: int = 0) -> dict:
    """A calibrated softmax model and the same answers made over-confident (logits x 4), same labels."""
    probs, labels = calibrated_probs(n, seed)
    logits = probs.log()
    return {
        CALIBRATED: Prediction.from_logits(logits, labels=labels, ids=[f"c{i}" for i in range(n)]),
        OVERCONFIDENT: Prediction.from_logits(4 * logits, labels=labels, ids=[f"c{i}" for i in range(n)]),
    }


def ood_like(n: int, seed: int, sharp: float) -> Prediction:
    g = torch.Generator().manual_seed(seed)
    return Prediction.from_logits(sharp * torch.randn(n, K, generator=g, dtype=torch.float64))


@pytest.fixture(scope="module")
def two_models():
    test = pair()
    oods = {CALIBRATED: ood_like(150, 1, 0.5), OVERCONFIDENT: ood_like(150, 1, 6.0)}
    return {m: {"test": test[m], "ood_noise": oods[m]} for m in test}


@pytest.fixture(scope="module")
def metrics(two_models):
    return compute_report_metrics(two_models, class_names=CLASSES, n_boot=40)


# ---- numbers ------------------------------------------------------------------------------------------


def numpy_aurc(score: np.ndarray, correct: np.ndarray) -> float:
    # continuous scores, no ties: risk of the k most certain, averaged over k
    errors = (~correct[np.argsort(score, kind="stable")]).astype(float)
    return float(np.mean(np.cumsum(errors) / np.arange(1, len(errors) + 1)))


def test_metrics_match_independent_implementations(two_models, metrics):
    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics  # strict JSON, no NaN
    for model, sets in two_models.items():
        pred = sets["test"]
        entry = metrics["models"][model]["sets"]["test"]
        y, p = pred.labels.numpy(), pred.probs.numpy()
        predicted = p.argmax(1)
        correct = predicted == y
        assert metrics["models"][model]["primary_score"] == "msp"
        assert entry["accuracy"] == pytest.approx(accuracy_score(y, predicted))
        tm_ece = multiclass_calibration_error(pred.probs.float(), pred.labels, num_classes=K, n_bins=15).item()
        assert entry["ece"] == pytest.approx(tm_ece, abs=1e-5)
        assert entry["wrong_confidence_median"] == pytest.approx(np.median(p.max(1)[~correct]))
        msp = 1 - p.max(1)
        assert entry["aurc"] == pytest.approx(numpy_aurc(msp, correct))
        kept = np.argsort(msp, kind="stable")[: len(y) - round(0.1 * len(y))]
        assert entry["accuracy_at_referral"]["10"] == pytest.approx(correct[kept].mean())
        recall = recall_score(y, predicted, labels=list(range(K)), average=None, zero_division=np.nan)
        assert [r["recall"] for r in entry["per_class"]] == pytest.approx(list(recall))
        assert [r["n"] for r in entry["per_class"]] == np.bincount(y, minlength=K).tolist()
        ood = sets["ood_noise"]
        score = np.concatenate([msp, 1 - ood.probs.numpy().max(1)])
        is_ood = np.r_[np.zeros(len(y)), np.ones(len(ood))]
        assert entry["ood_auroc"]["ood_noise"] == pytest.approx(roc_auc_score(is_ood, score))
        assert metrics["models"][model]["sets"]["ood_noise"]["role"] == "ood"
        for key, (low, high) in entry["ci95"].items():
            value = entry["ood_auroc"]["ood_noise"] if key == "ood_auroc/ood_noise" else entry[key]
            assert low <= value <= high, key


def test_known_properties_show_up(metrics):
    cal = metrics["models"][CALIBRATED]["sets"]["test"]
    over = metrics["models"][OVERCONFIDENT]["sets"]["test"]
    assert cal["accuracy"] == over["accuracy"]  # same answers, only the confidence differs
    assert cal["ece"] < 0.08 < 0.2 < over["ece"]
    assert over["wrong_confidence_median"] > cal["wrong_confidence_median"] + 0.2
    # the over-confident model is sure of everything, so it cannot tell the noise set apart
    assert cal["ood_auroc"]["ood_noise"] > 0.8 > 0.6 > over["ood_auroc"]["ood_noise"]


def test_take_home_messages_are_computed_from_numbers(metrics):
    messages = take_home_messages(metrics)
    over = metrics["models"][OVERCONFIDENT]["sets"]["test"]
    cal = metrics["models"][CALIBRATED]["sets"]["test"]
    first = next(m for m in messages if m.startswith("When it was wrong"))
    assert f"{OVERCONFIDENT} was typically {100 * over['wrong_confidence_median']:.0f}% sure" in first
    assert f"{CALIBRATED} only {100 * cal['wrong_confidence_median']:.0f}%" in first
    assert any(f"{CALIBRATED}'s stated confidence is closest" in m for m in messages)
    auroc = cal["ood_auroc"]["ood_noise"]
    assert any(f"{round(100 * auroc)} of 100 pairs (AUROC {auroc:.2f})" in m for m in messages)


# ---- the page -----------------------------------------------------------------------------------------


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "data", "action", "poster")]


def parse(text: str) -> Links:
    links = Links()
    links.feed(text)
    return links


def frames(t: int = 4, c: int = 1, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(t, c, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def report_text(two_models, metrics, tmp_path_factory):
    gallery = {f"c{i}": frames(seed=i) for i in range(0, 240, 20)}
    path = write_report(
        tmp_path_factory.mktemp("report") / "report.html",
        two_models,
        class_names=CLASSES,
        gallery=gallery,
        n_gallery=3,
        metadata={"command": "clearmamba demo --quick", "config": {"lr": 1e-3, "epochs": 2}},
        metrics=metrics,
    )
    return path.read_text(encoding="utf-8")


def test_report_is_self_contained(report_text):
    links = parse(report_text)
    assert "script" not in links.tags and "link" not in links.tags and "iframe" not in links.tags
    assert links.urls, "expected embedded figures"
    assert all(u.startswith("data:") or u.startswith("#") for u in links.urls), [u[:40] for u in links.urls]
    assert "url(" not in report_text and "@import" not in report_text
    images = [u for u in links.urls if u.startswith("data:image/png;base64,")]
    # wrong-answer dots, referral, histograms, reliability, OOD ROC, 3 gallery film strips
    assert len(images) == 8
    for uri in images:
        assert base64.b64decode(uri.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")


def test_report_shows_the_computed_numbers(two_models, report_text):
    for sets in two_models.values():
        pred = sets["test"]
        y, p = pred.labels.numpy(), pred.probs.numpy()
        correct = p.argmax(1) == y
        assert f"{100 * accuracy_score(y, p.argmax(1)):.1f}%" in report_text
        ece = multiclass_calibration_error(pred.probs.float(), pred.labels, num_classes=K, n_bins=15).item()
        assert f"{100 * ece:.1f}%" in report_text
        assert f"{100 * np.median(p.max(1)[~correct]):.0f}%" in report_text
        score = np.concatenate([1 - p.max(1), 1 - sets["ood_noise"].probs.numpy().max(1)])
        is_ood = np.r_[np.zeros(len(y)), np.ones(len(sets["ood_noise"]))]
        assert f"{roc_auc_score(is_ood, score):.2f}" in report_text
    assert "clearmamba demo --quick" in report_text


def test_gallery_shows_most_uncertain_exams_first(two_models, report_text):
    pred = two_models[CALIBRATED]["test"]  # the first model ranks the gallery
    in_gallery = np.arange(0, 240, 20)
    msp = (1 - pred.probs.max(1).values).numpy()[in_gallery]
    expected = [f"c{i}" for i in in_gallery[np.argsort(-msp, kind="stable")][:3]]
    positions = [report_text.index(f"<b>Exam {e}</b>") for e in expected]
    assert positions == sorted(positions)
    assert report_text.count('class="exam"') == 3


def test_everything_user_supplied_is_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    n = 60
    probs, labels = calibrated_probs(n, seed=3)
    ids = [evil if i == 0 else f'x"{i}' for i in range(n)]
    # exam 0 made the most uncertain so it leads the gallery
    probs[0] = torch.full((K,), 1 / K, dtype=torch.float64)
    predictions = {
        evil: {'<img src=x onerror="alert(2)">': Prediction(probs=probs, labels=labels, ids=ids)},
        "price $x^2$ model": {'<img src=x onerror="alert(2)">': Prediction(probs=probs, labels=labels, ids=ids)},
    }
    path = write_report(
        tmp_path / "r.html",
        predictions,
        class_names=["<b>bold</b>", "a&b", "it's"],
        gallery={evil: frames()},
        title=evil,
        metadata={evil: "</pre><script>alert(3)</script>"},
        n_boot=5,
    )
    text = path.read_text(encoding="utf-8")
    assert "<script" not in text.lower() and "<img src=x" not in text and "<b>bold</b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in text and "a&amp;b" in text
    assert all(u.startswith(("data:", "#")) for u in parse(text).urls)


# ---- the corners ----------------------------------------------------------------------------------------


def test_softmax_only_single_set_no_ood(tmp_path):
    probs, labels = calibrated_probs(80, seed=5)
    predictions = {"softmax": {"test": Prediction.from_logits(probs.log(), labels=labels)}}
    metrics = compute_report_metrics(predictions, class_names=CLASSES, n_boot=10)
    entry = metrics["models"]["softmax"]["sets"]["test"]
    assert metrics["ood_sets"] == {} and "ood_auroc" not in entry
    assert metrics["models"]["softmax"]["primary_score"] == "msp"
    assert "vacuity" not in entry["by_score"]
    text = write_report(tmp_path / "r.html", predictions, class_names=CLASSES, n_boot=10).read_text()
    assert "Spotting images" not in text and "The exams" not in text
    assert f"When softmax was wrong, it was typically {100 * entry['wrong_confidence_median']:.0f}% sure" in text


def test_evidential_model_defaults_to_vacuity_and_mixes_with_softmax(tmp_path):
    g = torch.Generator().manual_seed(7)
    labels = torch.randint(0, K, (90,), generator=g)
    evidence = torch.rand(90, K, generator=g) * 5
    ood_evidence = torch.rand(40, K, generator=g) * 0.5
    predictions = {
        "evidential": {
            "test": Prediction.from_evidence(evidence, labels=labels),
            "ood_blank": Prediction.from_evidence(ood_evidence),
        },
        "softmax": {"test": Prediction.from_logits(torch.randn(90, K, generator=g), labels=labels)},
    }
    metrics = compute_report_metrics(predictions, class_names=CLASSES, n_boot=10)
    assert metrics["models"]["evidential"]["primary_score"] == "vacuity"
    assert metrics["models"]["softmax"]["primary_score"] == "msp"
    vacuity = np.r_[(K / (evidence + 1).sum(1)).numpy(), (K / (ood_evidence + 1).sum(1)).numpy()]
    expected = roc_auc_score(np.r_[np.zeros(90), np.ones(40)], vacuity)
    assert metrics["models"]["evidential"]["sets"]["test"]["ood_auroc"]["ood_blank"] == pytest.approx(expected)
    assert "ood_auroc" not in metrics["models"]["softmax"]["sets"]["test"]  # it has no OOD set
    write_report(tmp_path / "r.html", predictions, class_names=CLASSES, metrics=metrics)


def test_class_missing_from_labels(tmp_path):
    probs, labels = calibrated_probs(100, seed=9, k=4)
    labels = torch.where(labels == 3, torch.zeros_like(labels), labels)  # nobody has class 3
    predictions = {"m": {"test": Prediction(probs=probs, labels=labels)}}
    names = [*CLASSES, "pooling"]
    metrics = compute_report_metrics(predictions, class_names=names, n_boot=10)
    rows = metrics["models"]["m"]["sets"]["test"]["per_class"]
    assert rows[3]["n"] == 0 and rows[3]["recall"] is None and rows[3]["mean_uncertainty"] is None
    predicted = probs.argmax(1).numpy()
    expected = recall_score(labels.numpy(), predicted, labels=[0, 1, 2], average=None)
    assert [r["recall"] for r in rows[:3]] == pytest.approx(list(expected))
    assert rows[3]["n_predicted"] == int((predicted == 3).sum())
    text = write_report(tmp_path / "r.html", predictions, class_names=names, metrics=metrics).read_text()
    assert "no exams of this class" in text


def test_explicit_ood_sets_and_unlabelled_sets():
    probs, labels = calibrated_probs(50, seed=11)
    predictions = {
        "m": {
            "internal": Prediction(probs=probs, labels=labels),
            "external": Prediction(probs=probs, labels=labels),
            "weird": Prediction(probs=calibrated_probs(30, seed=12)[0]),
        }
    }
    metrics = compute_report_metrics(predictions, class_names=CLASSES, ood_sets={"external": ["weird"]}, n_boot=0)
    sets = metrics["models"]["m"]["sets"]
    assert set(sets["external"]["ood_auroc"]) == {"weird"} and "ood_auroc" not in sets["internal"]
    assert sets["weird"]["role"] == "ood" and sets["weird"]["ood_reference"] == "external"
    assert "ci95" not in sets["internal"]  # n_boot=0 skips the bootstrap


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"class_names": ["a", "b"]}, "class_names has 2"),
        ({"class_names": CLASSES, "ood_sets": {"test": ["nope"]}}, "'nope' is not in the predictions"),
        ({"class_names": CLASSES, "primary_score": {"m": "vacuity"}}, "not available"),
        ({"class_names": CLASSES, "primary_score": {"other": "msp"}}, "unknown model"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    probs, labels = calibrated_probs(20, seed=1)
    predictions = {"m": {"test": Prediction(probs=probs, labels=labels)}}
    with pytest.raises(ValueError, match=message):
        compute_report_metrics(predictions, n_boot=0, **kwargs)


def test_bad_labels_name_model_and_set():
    probs, _ = calibrated_probs(20, seed=1)
    predictions = {"m": {"test": Prediction(probs=probs, labels=torch.full((20,), 7))}}
    with pytest.raises(ValueError, match=r"predictions\['m'\]\['test'\]\.labels"):
        compute_report_metrics(predictions, class_names=CLASSES, n_boot=0)


def test_write_is_atomic_and_replaces(tmp_path):
    probs, labels = calibrated_probs(40, seed=2)
    predictions = {"m": {"test": Prediction(probs=probs, labels=labels)}}
    target = tmp_path / "sub" / "report.html"
    target.parent.mkdir()
    target.write_text("old")
    path = write_report(target, predictions, class_names=CLASSES, n_boot=0)
    assert path == target and path.read_text().startswith("<!DOCTYPE html>")
    assert os.listdir(target.parent) == ["report.html"]  # no temporary file left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_perfect_model_has_no_wrong_answers_to_show(tmp_path):
    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, K, (30,), generator=g)
    logits = 5 * torch.nn.functional.one_hot(labels, K).double()
    predictions = {"perfect": {"test": Prediction.from_logits(logits, labels=labels)}}
    metrics = compute_report_metrics(predictions, class_names=CLASSES, n_boot=5)
    entry = metrics["models"]["perfect"]["sets"]["test"]
    assert entry["accuracy"] == 1.0 and entry["n_wrong"] == 0
    assert entry["wrong_confidence_median"] is None and entry["misclassification_auroc"] is None
    assert entry["ci95"]["wrong_confidence_median"] == [None, None]
    text = write_report(tmp_path / "r.html", predictions, class_names=CLASSES, metrics=metrics).read_text()
    assert "no wrong answers" not in take_home_messages(metrics)[0]  # the headline sentence is skipped
    assert "100.0%" in text


def test_headline_metrics_is_the_compact_view(metrics):
    compact = headline_metrics(metrics)
    for model, sets in compact.items():
        full = metrics["models"][model]["sets"]
        assert compact[model]["test"]["accuracy"] == full["test"]["accuracy"]
        assert compact[model]["test"]["ood_auroc"] == full["test"]["ood_auroc"]
        assert set(sets["test"]) == {
            "n",
            "accuracy",
            "ece",
            "wrong_confidence_median",
            "aurc",
            "ood_auroc",
            "primary_score",
        }
        assert "accuracy" not in sets["ood_noise"] and "ood_noise" in sets["ood_noise"]["ood_auroc"]


def test_unknown_labels_mark_unlabelled_and_ood_sets(tmp_path):
    probs, labels = calibrated_probs(40, seed=13)
    unknown = torch.full((25,), -1)  # the built-in OOD sets carry label -1
    ood_probs = calibrated_probs(25, seed=14)[0]
    predictions = {
        "m": {
            "test": Prediction(probs=probs, labels=labels, ids=[f"t{i}" for i in range(40)]),
            "external": Prediction(probs=ood_probs, labels=unknown, ids=[f"e{i}" for i in range(25)]),
            "ood_other": Prediction(probs=ood_probs, labels=unknown, ids=[f"o{i}" for i in range(25)]),
        }
    }
    metrics = compute_report_metrics(predictions, class_names=CLASSES, n_boot=5)
    sets = metrics["models"]["m"]["sets"]
    assert sets["external"]["role"] == "unlabelled" and "accuracy" not in sets["external"]
    assert sets["ood_other"]["role"] == "ood" and "ood_other" in sets["test"]["ood_auroc"]
    # the most uncertain exam of the familiar sets is unlabelled: shown without a true class or right/wrong
    uncertain = Prediction(probs=torch.full((1, K), 1 / K, dtype=torch.float64), labels=torch.tensor([-1]), ids=["u"])
    predictions["m"]["external"] = Prediction.cat([predictions["m"]["external"], uncertain])
    text = write_report(
        tmp_path / "r.html", predictions, class_names=CLASSES, gallery={"u": frames(), "t0": frames()}, n_boot=0
    ).read_text()
    first = text[text.index("<b>Exam u</b>") :]
    assert first.index("unknown / not applicable") < first.index("<b>Exam t0</b>")
    assert 'class="wrong"' not in first[: first.index("<b>Exam t0</b>")]
    mixed = Prediction(probs=probs, labels=torch.where(labels == 0, -1, labels))
    with pytest.raises(ValueError, match=r"\['test'\]\.labels: \d+ of 40 labels are negative"):
        compute_report_metrics({"m": {"test": mixed}}, class_names=CLASSES, n_boot=0)


def test_bootstrap_resamples_whole_patients_when_groups_are_given(tmp_path):
    from clearmamba import evaluation as ev

    probs, labels = calibrated_probs(30, seed=21)
    # every patient has four identical exams: resampling exams would make the interval too narrow
    probs, labels = probs.repeat_interleave(4, 0), labels.repeat_interleave(4)
    patients = [f"p{i // 4}" for i in range(120)]
    predictions = {"m": {"test": Prediction(probs=probs, labels=labels)}}
    grouped = compute_report_metrics(predictions, class_names=CLASSES, n_boot=100, groups={"test": patients})
    plain = compute_report_metrics(predictions, class_names=CLASSES, n_boot=100)
    correct = probs.argmax(1) == labels
    expected = ev.bootstrap_ci(lambda ok: ok.double().mean().item(), correct, n_boot=100, seed=0, groups=patients)
    low, high = grouped["models"]["m"]["sets"]["test"]["ci95"]["accuracy"]
    assert (low, high) == pytest.approx((expected.low, expected.high))
    plain_low, plain_high = plain["models"]["m"]["sets"]["test"]["ci95"]["accuracy"]
    assert high - low > 1.3 * (plain_high - plain_low)
    assert grouped["bootstrap_groups"] == ["test"]
    text = write_report(tmp_path / "r.html", predictions, class_names=CLASSES, metrics=grouped).read_text()
    assert "of whole patients ('test')" in html.unescape(text)
    with pytest.raises(ValueError, match=r"groups\['test'\]: expected one group id per exam \(120"):
        compute_report_metrics(predictions, class_names=CLASSES, n_boot=5, groups={"test": patients[:10]})


def test_bad_gallery_is_named(tmp_path):
    probs, labels = calibrated_probs(20, seed=1)
    predictions = {"m": {"test": Prediction(probs=probs, labels=labels, ids=[f"e{i}" for i in range(20)])}}
    with pytest.raises(ValueError, match=r"gallery\['e3'\]: expected frames as a tensor"):
        write_report(tmp_path / "r.html", predictions, class_names=CLASSES, gallery={"e3": [[1, 2]]}, n_boot=0)
    with pytest.raises(ValueError, match="gallery_model: 'x' is not one of the models"):
        write_report(tmp_path / "r.html", predictions, class_names=CLASSES, gallery_model="x", n_boot=0)
    assert not (tmp_path / "r.html").exists()
