import math

import pytest
import torch
from scipy.stats import spearmanr

from clearmamba import evaluation as ev


def test_summary_agrees_with_the_single_metrics(predictions):
    probs, labels = predictions
    msp = 1 - probs.max(-1).values
    noise = torch.rand(len(labels), generator=torch.Generator().manual_seed(0))
    summary = ev.summarize(probs, labels, {"msp": msp, "noise": noise.numpy()})
    assert summary["accuracy"] == pytest.approx(ev.accuracy(probs, labels))
    assert summary["ece"] == ev.ece(probs, labels)
    assert summary["nll"] == pytest.approx(ev.nll(probs, labels))
    assert summary["brier"] == ev.brier(probs, labels)
    assert summary["wrong_confidence_median"] == ev.wrong_answer_confidence(probs, labels)["wrong_median"]
    correct = probs.argmax(-1) == labels
    assert summary["aurc/msp"] == ev.aurc(msp, correct)
    assert summary["misclassification_auroc/noise"] == ev.misclassification_metrics(noise, correct)["auroc"]
    true_prob = probs.double()[torch.arange(len(labels)), labels]
    expected_rho = spearmanr(msp.numpy(), -true_prob.log().numpy()).statistic
    assert summary["spearman_nll/msp"] == pytest.approx(expected_rho, abs=1e-9)
    assert summary["accuracy_at_referral_20/msp"] == ev.accuracy_at_referral(msp, correct)[0.2]
    # an informative score beats noise on this data
    assert summary["aurc/msp"] < summary["aurc/noise"]
    assert all(isinstance(v, float) and not math.isinf(v) for v in summary.values())


def test_summary_rejects_a_score_of_the_wrong_length(predictions):
    probs, labels = predictions
    with pytest.raises(ValueError, match=r"scores\['msp'\]: expected 300"):
        ev.summarize(probs, labels, {"msp": torch.rand(10)})
