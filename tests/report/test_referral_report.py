"""The report's referral part and its fixed defects: the operating point is the record's, the first screen leads
with it, weak models are not praised, labels and tables fit, bins agree, the gallery says what it shows."""

import html
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from clearmamba.evaluation import OperatingPoint, Proportion, decide, fit_referral_rule, operating_point
from clearmamba.evaluation.redraws import synthetic_predictions
from clearmamba.report import GalleryExam, Provenance, compute_report_metrics, take_home_messages, write_report
from clearmamba.report import figures as fg
from clearmamba.report.metrics import CALIBRATION_BINS
from clearmamba.uncertainty import Prediction

CLASSES = ["normal", "leakage", "staining", "pooling"]
PROVENANCE = Provenance(seed=7, split="patient-level 60/20/20", checkpoint_sha256="ab" * 32, data_sha256="cd" * 32)


@pytest.fixture(scope="module")
def setting():
    rule = fit_referral_rule(synthetic_predictions(1000, seed=0), class_names=CLASSES)
    predictions = {"RaP": {"test": synthetic_predictions(300, seed=1),
                           "ood_far": synthetic_predictions(120, seed=2, shift=6.0)}}  # fmt: skip
    return rule, predictions


@pytest.fixture(scope="module")
def page(setting, tmp_path_factory):
    rule, predictions = setting
    gallery = {f"id-1-{i}": GalleryExam(torch.rand(3, 1, 8, 8), [5.0, 30.0, 75.0]) for i in range(300)}
    path = write_report(tmp_path_factory.mktemp("r") / "r.html", predictions, class_names=CLASSES,
                        rules={"RaP": rule}, provenance=PROVENANCE, n_boot=20, gallery=gallery, n_gallery=4)
    return path.read_text(encoding="utf-8")  # fmt: skip


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_the_operating_point_is_the_records(setting, page):
    rule, predictions = setting
    test = predictions["RaP"]["test"]
    record = operating_point(decide(test, rule), test.labels, "test")  # what the run record stores
    # and by hand: pass the gate, stay below the mistake threshold, no tie
    u = test.extra["neg_log_density"].numpy()
    msp = 1 - test.probs.max(-1).values.numpy()
    accepted = (u <= rule.unfamiliar_threshold) & (msp < rule.mistake_threshold)
    wrong = test.probs.argmax(-1).numpy() != test.labels.numpy()
    assert record.accepted.count == accepted.sum() and record.accepted_error.count == (accepted & wrong).sum()
    text = _text(page)
    a, e = record.accepted, record.accepted_error
    assert f"{100 * a.value:.1f}% ({a.count} of {a.n}) ({100 * a.low:.1f}% to {100 * a.high:.1f}%)" in text
    assert f"{100 * e.value:.1f}% ({e.count} of {e.n}) ({100 * e.low:.1f}% to {100 * e.high:.1f}%)" in text
    far = operating_point(decide(predictions["RaP"]["ood_far"], rule), None, "ood_far")
    assert f"{100 * far.accepted.value:.1f}% ({far.accepted.count} of 120)" in text
    assert f"certified bound {100 * rule.risk_upper_bound:.2f}% on the {rule.calibration_n} validation" in text


def test_a_given_operating_point_is_shown_as_it_is(setting, tmp_path):
    rule, predictions = setting
    p = Proportion(123, 456, 0.2, 0.3)
    stored = OperatingPoint("test", 456, True, p, Proportion(1, 456, 0.0, 0.01), Proportion(332, 456, 0.7, 0.8),
                            Proportion(5, 123, 0.01, 0.09), 0.95, "clopper-pearson")  # fmt: skip
    text = _text(write_report(tmp_path / "r.html", {"RaP": {"test": predictions["RaP"]["test"]}}, class_names=CLASSES,
                              rules={"RaP": rule}, operating={"RaP": {"test": stored}}, n_boot=0).read_text())
    assert "27.0% (123 of 456) (20.0% to 30.0%)" in text and "4.1% (5 of 123)" in text  # fmt: skip


def test_the_first_screen_leads_with_the_promise_and_the_exams_to_refer(setting, page):
    rule, predictions = setting
    order = [page.index(x) for x in ('id="promise"', 'id="refer"', "Take-home messages", 'id="compare"')]
    assert order == sorted(order)
    text = _text(page)
    assert "clearmamba 0.1.0" in text and "checkpoint abababababababab… (SHA-256)" in text and "seed 7" in text
    assert "Guaranteed:" in text and "Of the exams it accepts, at most 5.0% are wrong" in text
    referred = [e for e in decide(predictions["RaP"]["test"], rule).exams() if e.decision != "accept"]
    assert f"'test' (in-distribution): {len(referred)} of 300 exams referred" in text
    assert referred[0].reason in text or any(e.reason in text for e in referred[:12])
    assert "more unusual than" in text and "the diagnosis is uncertain" in text
    # the rule's scores are the report's: its mistake score is the primary one, its gate flags the OOD set
    assert "refer at or above" in text and "-log density of the exam's features" in text
    messages = page[page.index("Take-home messages"):]
    assert messages.index("RaP accepted") < messages.index("accuracy was")


def _weak_and_strong(n=400, seed=3):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    strong = torch.nn.functional.one_hot(labels, 3).double() * 4 + torch.randn(n, 3, generator=g, dtype=torch.float64)
    # the weak model is 60 % right and unsure of everything: low confidence on its mistakes comes for free
    right = torch.rand(n, generator=g) < 0.6
    said = torch.where(right, labels, (labels + 1) % 3)
    noise = 0.1 * torch.rand(n, 3, generator=g, dtype=torch.float64)
    weak = torch.nn.functional.one_hot(said, 3).double() * 0.4 + noise
    return {"strong": {"test": Prediction.from_logits(strong, labels=labels)},
            "weak": {"test": Prediction.from_logits(weak, labels=labels)}}  # fmt: skip


def test_a_weak_model_is_not_rewarded(tmp_path):
    predictions = _weak_and_strong()
    metrics = compute_report_metrics(predictions, class_names=CLASSES[:3], n_boot=50)
    weak, strong = (metrics["models"][m]["sets"]["test"] for m in ("weak", "strong"))
    assert weak["wrong_confidence_median"] < strong["wrong_confidence_median"] and weak["accuracy"] < 0.7
    message = next(m for m in take_home_messages(metrics) if "wrong" in m and "sure" in m)
    assert "Left out of this comparison: weak" in message and "only" not in message
    page = write_report(tmp_path / "r.html", predictions, class_names=CLASSES[:3], metrics=metrics).read_text()
    table = page[page.index('id="compare"'):page.index('id="referral"')]
    weak_row = table[table.index("<td class=\"l\">weak"):].split("</tr>")[0]
    assert 'class="best"' not in weak_row
    assert "says little: it is unsure of most answers" in html.unescape(page)


def test_ood_roc_labels_do_not_overprint():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    g = torch.Generator().manual_seed(0)
    lines = [(f"a rather long model name {i}", torch.randn(200, generator=g), torch.randn(200, generator=g) + i,
              0.5 + 0.1 * i) for i in range(5)]  # fmt: skip
    fig = Figure(figsize=(11.2, 5.2))
    canvas = FigureCanvasAgg(fig)
    axes = fg.draw_ood_roc(fig, [("'a' vs 'test'", lines), ("'b' vs 'test'", lines[:2])])
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in axes:
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        assert len(boxes) >= 3
        for i, a in enumerate(boxes):
            assert ax.get_window_extent(renderer).contains(a.x0, a.y0)
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), (a, b)


def test_reliability_bins_are_the_ece_bins(monkeypatch, tmp_path):
    seen = {}
    original = fg.reliability_figure

    def spy(panels, n_bins, cols=3):
        seen["n_bins"] = n_bins
        return original(panels, n_bins=n_bins, cols=cols)

    monkeypatch.setattr(fg, "reliability_figure", spy)
    page = write_report(tmp_path / "r.html", _weak_and_strong(120), class_names=CLASSES[:3], n_boot=0).read_text()
    assert seen["n_bins"] == CALIBRATION_BINS == 15
    assert f"({CALIBRATION_BINS} bins, the same bins as the ECE)" in page and "10 bins" not in page


def test_gallery_shows_frame_times_and_honest_headings(setting, page, monkeypatch, tmp_path):
    rule, predictions = setting
    assert fg._time_label(75) == "1:15" and fg._time_label(9.5) == "9.5 s"
    # with a rule: uncertain exams under the "least sure" heading, least sure first
    section = page[page.index("Referred as uncertain"):]
    section = section[: section.index("</div>\n</div>") if "Referred as unfamiliar" not in section
                      else section.index("Referred as unfamiliar")]  # fmt: skip
    shown = re.findall(r"<b>Exam (id-1-\d+)</b>", section)
    decisions = decide(predictions["RaP"]["test"], rule)
    index = {e: i for i, e in enumerate(decisions.ids)}
    assert shown and all(decisions.outcome[index[e]] == "refer: uncertain" for e in shown)
    mistake = [float(decisions.mistake[index[e]]) for e in shown]
    assert mistake == sorted(mistake, reverse=True) and "frame times not recorded" not in section
    # without a rule and with K/S as the primary score, the heading names K/S instead of "least sure"
    times = []
    original = fg.film_strip
    monkeypatch.setattr(fg, "film_strip", lambda frames, t=None: times.append(t) or original(frames, t))
    g = torch.Generator().manual_seed(5)
    evidence = torch.rand(40, 4, generator=g, dtype=torch.float64) * 20
    evidence[0] = torch.tensor([5000.0, 0.0, 0.0, 0.0])  # K/S near 0
    evidence[1] = torch.tensor([2.0, 0.0, 0.0, 0.0])  # alpha (3, 1, 1, 1): K/S 0.67
    ids = [f"e{i}" for i in range(40)]
    pred = Prediction.from_evidence(evidence, labels=torch.zeros(40, dtype=torch.long), ids=ids)
    text = write_report(tmp_path / "g.html", {"edl": {"test": pred}}, class_names=CLASSES, n_boot=0,
                        gallery={"e0": torch.rand(2, 1, 8, 8), "e1": (torch.rand(2, 1, 8, 8), [0.0, 60.0])}).read_text()
    heading = re.search(r'<h2 id="gallery-1">(.*?)</h2>', text).group(1)
    assert html.unescape(heading) == "The exams edl ranks highest K/S (evidential vacuity)"
    assert "frame times not recorded" in text and [0.0, 60.0] in times and None in times  # fmt: skip


class Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.tables = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            parent = self.stack[-1] if self.stack else ("", {})
            self.tables.append({"parent": parent, "columns": 0, "rows": 0})
        if tag == "tr" and self.tables:
            self.tables[-1]["rows"] += 1
        if tag in ("th", "td") and self.tables and self.tables[-1]["rows"] == 1:
            self.tables[-1]["columns"] += 1
        self.stack.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()[0] != tag:
            pass


def test_every_table_is_narrow_and_scrolls_inside_the_page(page):
    parser = Tables()
    parser.feed(page)
    assert len(parser.tables) >= 5
    for t in parser.tables:
        tag, attrs = t["parent"]
        assert tag == "div" and attrs.get("class") == "scroll"
        assert t["columns"] <= 7


def test_another_score_that_ranks_mistakes_better_is_named(tmp_path):
    g = torch.Generator().manual_seed(2)
    n = 600
    predicted = torch.randint(0, 3, (n,), generator=g)
    confidence = 0.4 + 0.59 * torch.rand(n, generator=g, dtype=torch.float64)
    probs = ((1 - confidence) / 2)[:, None].repeat(1, 3)
    probs[torch.arange(n), predicted] = confidence
    right = torch.rand(n, generator=g, dtype=torch.float64) < confidence
    labels = torch.where(right, predicted, (predicted + 1) % 3)
    total = 300 + 700 * torch.rand(n, 1, generator=g, dtype=torch.float64)  # K/S unrelated to mistakes
    prediction = Prediction.from_evidence(probs * total - 1, labels=labels)
    metrics = compute_report_metrics({"edl": {"test": prediction}}, class_names=CLASSES[:3], n_boot=100)
    better = metrics["models"]["edl"]["sets"]["test"]["better_mistake_score"]
    assert metrics["models"]["edl"]["primary_score"] == "vacuity" and better["score"] != "vacuity"
    assert better["difference_ci95"][1] < 0
    message = next(m for m in take_home_messages(metrics) if "ranks edl's mistakes better than K/S (evidential" in m)
    assert "the 95% interval of the difference excludes 0" in message
    assert f"AURC {better['aurc']:.3f} vs {better['primary_aurc']:.3f}" in message


def test_rules_must_be_referral_rules(setting, tmp_path):
    rule, predictions = setting
    with pytest.raises(TypeError, match=r"rules\['RaP'\]: expected a ReferralRule"):
        write_report(tmp_path / "r.html", predictions, class_names=CLASSES, rules={"RaP": rule.to_dict()})
    with pytest.raises(ValueError, match="rules: 'other' is not one of the models"):
        write_report(tmp_path / "r.html", predictions, class_names=CLASSES, rules={"other": rule})


def test_templates_are_package_data():
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "templates/*" in pyproject["tool"]["setuptools"]["package-data"]["clearmamba.report"]
    from importlib.resources import files

    templates = files("clearmamba.report") / "templates"
    assert all((templates / name).is_file() for name in ("report.html.j2", "macros.html.j2", "report.css"))
    assert np.isfinite(CALIBRATION_BINS)
