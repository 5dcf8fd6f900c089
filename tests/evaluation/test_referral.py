"""The referral rule: each reason, the unfamiliar gate's conformal promise, the small-calibration warning and
refusal, the prediction sets, the JSON round trip and the refusal of bad fields."""

import json
import math
import warnings

import pytest
import torch

from clearmamba.errors import UserError
from clearmamba.evaluation.redraws import synthetic_predictions
from clearmamba.evaluation.referral import (
    ACCEPT,
    REFER_UNCERTAIN,
    REFER_UNFAMILIAR,
    GuaranteeUnavailableError,
    ReferralWarning,
    decide,
    fit_referral_rule,
    unfamiliar_threshold,
)
from clearmamba.evaluation.referral_rule import ReferralRule, ReferralRuleError
from clearmamba.uncertainty import Prediction

CLASSES = ["normal", "leakage", "staining", "pooling"]


@pytest.fixture(scope="module")
def rule():
    return fit_referral_rule(synthetic_predictions(1000, seed=0), class_names=CLASSES)


def _exam(top: float, predicted: int = 1, density: float = 0.0, k: int = 4) -> Prediction:
    probs = torch.full((1, k), (1 - top) / (k - 1), dtype=torch.float64)
    probs[0, predicted] = top
    return Prediction(probs=probs, extra={"neg_log_density": torch.tensor([density], dtype=torch.float64)})


def test_the_fitted_rule_states_its_promise(rule):
    assert rule.guaranteed and rule.risk_upper_bound <= rule.target_risk == 0.05
    assert rule.unfamiliar_score == "neg_log_density" and rule.mistake_score == "one_minus_max_prob"
    assert rule.calibration_n == 990  # 1 % of the validation exams sit above the gate
    assert 0.5 < rule.calibration_coverage < 0.874  # the synthetic oracle accepts 87.4 %
    assert rule.n_tests == 20 * 2  # levels x candidates (1 - max p, entropy)
    assert "Guarantee: at most 5% of accepted" in rule.describe()


def test_each_referral_reason(rule):
    sure, unfamiliar = decide(_exam(0.99), rule).exam(0), decide(_exam(0.99, density=9.0), rule).exam(0)
    unsure = decide(_exam(0.3), rule).exam(0)
    uniform = decide(_exam(0.25), rule).exam(0)
    assert sure.decision == ACCEPT and sure.diagnosis == "leakage" and sure.reason.startswith("familiar")
    assert sure.prediction_set is None
    assert unfamiliar.decision == REFER_UNFAMILIAR and unfamiliar.diagnosis is None
    assert "unlike the exams the model was validated on" in unfamiliar.reason
    assert unfamiliar.scores[0].fires and unfamiliar.scores[0].p_value <= 1 - rule.id_pass_rate
    assert unsure.decision == REFER_UNCERTAIN and unsure.diagnosis is None and unsure.leading_class == "leakage"
    assert "leakage" in unsure.prediction_set and "possible classes" in unsure.reason
    assert unsure.scores[-1].fires and unsure.scores[-1].threshold == rule.mistake_threshold
    # a uniform prediction is no diagnosis, and names no leading class
    assert uniform.decision == REFER_UNCERTAIN and uniform.diagnosis is None and uniform.leading_class is None
    assert "no class stands out" in uniform.reason
    record = json.loads(json.dumps(unsure.to_dict()))
    assert set(record["scores"]) == {"neg_log_density", "one_minus_max_prob"}  # the public names, no "msp"
    assert record["scores"]["one_minus_max_prob"]["value"] == pytest.approx(0.7)
    assert record["confidence"] == pytest.approx(0.3)
    row = unsure.flat()  # the CSV row: the same names, flat
    assert row["one_minus_max_prob"] == pytest.approx(0.7) and row["p_leakage"] == pytest.approx(0.3)
    assert row["neg_log_density_p_value"] == record["scores"]["neg_log_density"]["p_value"]
    assert row["decision"] == REFER_UNCERTAIN and row["diagnosis"] == "" and "leakage" in row["prediction_set"]
    assert not any(key.startswith("msp") for key in row)


def test_a_tie_is_referred_even_when_nothing_else_is():
    # a perfect model: every level certified, the threshold is +inf and no score would refer anything
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 3, generator=g, dtype=torch.float64) * 3
    validation = Prediction.from_logits(logits, labels=logits.argmax(-1))
    perfect = fit_referral_rule(validation, unfamiliar_score=None)
    assert perfect.mistake_threshold == math.inf and perfect.guaranteed
    tie = decide(Prediction.from_logits(torch.tensor([[2.0, 2.0, -1.0]], dtype=torch.float64)), perfect).exam(0)
    assert tie.decision == REFER_UNCERTAIN and tie.leading_class is None


def test_the_unfamiliar_gate_keeps_its_conformal_promise():
    n, pass_rate = 199, 0.95
    # c = floor(0.05 * 200) - 1 = 9: refer above the 190th smallest of 199, so P(refer) = 10 / 200 exactly
    assert unfamiliar_threshold(torch.arange(n, dtype=torch.float64), pass_rate) == 189.0
    generator, referred = torch.Generator().manual_seed(0), []
    for _ in range(1000):
        validation = torch.randn(n, generator=generator, dtype=torch.float64)
        fresh = torch.randn(50, generator=generator, dtype=torch.float64)
        referred.append(float((fresh > unfamiliar_threshold(validation, pass_rate)).double().mean()))
    mean = sum(referred) / len(referred)  # 50 000 fresh exams over 1000 draws: sd of the mean ~ 0.0012
    assert abs(mean - 0.05) < 0.005
    # fit_referral_rule uses that threshold, and the decision is the conformal p-value test, exam by exam
    for draw in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ReferralWarning)
            r = fit_referral_rule(synthetic_predictions(n, seed=draw), id_pass_rate=pass_rate, mistake_scores=("msp",))
        fresh = Prediction(probs=torch.full((500, 4), 0.25, dtype=torch.float64),
                           extra={"neg_log_density": 0.5 * torch.randn(500, generator=generator) + 1.5})
        decisions = decide(fresh, r)
        p = r.unfamiliar_reference.p_value(decisions.unfamiliar)
        assert 0 < int(decisions.referred_unfamiliar.sum()) < 500
        assert torch.equal(decisions.referred_unfamiliar, p <= 1 - pass_rate + 1e-12)


def test_small_calibration_warns_with_the_exams_needed_and_refuses_a_demanded_guarantee():
    def perfect(n, seed=0):
        logits = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
        return Prediction.from_logits(logits, labels=logits.argmax(-1))

    with pytest.warns(ReferralWarning, match=r"9 validation exams cannot support .* about (\d+) validation exams") as w:
        small = fit_referral_rule(perfect(9), unfamiliar_score=None)
    assert not small.guaranteed and "NO guarantee" in small.describe()
    # no error at all: (1 - 0.05)^n <= 0.1 / (20 levels x 2 scores)  =>  n >= 116.8
    needed = math.ceil(math.log(0.1 / 40) / math.log(0.95))
    assert small.exams_needed == needed == 117 and f"about {needed} validation" in str(w[0].message)
    assert fit_referral_rule(perfect(needed), unfamiliar_score=None).guaranteed
    with pytest.warns(ReferralWarning):
        assert not fit_referral_rule(perfect(needed - 1), unfamiliar_score=None).guaranteed
    with pytest.raises(GuaranteeUnavailableError, match="cannot support") as refused:
        fit_referral_rule(perfect(9), unfamiliar_score=None, require_guarantee=True)
    assert isinstance(refused.value, UserError)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gate_off = fit_referral_rule(synthetic_predictions(50, seed=2))
    assert any("needs at least 99 validation exams" in str(c.message) for c in caught)
    assert gate_off.unfamiliar_threshold == math.inf and "is off" in gate_off.describe()


def test_prediction_sets_cover_the_uncertain_exams(rule):
    assert rule.set_calibration == "uncertain" and rule.set_calibration_n >= 20
    fresh = synthetic_predictions(20000, seed=7)
    covered, sizes = [], []
    for draw in range(8):  # one calibration draw's coverage is Beta-distributed (sd ~ 0.02 here): average 8
        r = rule if draw == 0 else fit_referral_rule(synthetic_predictions(1000, seed=100 + draw))
        decisions = decide(fresh, r)
        uncertain = decisions.referred_uncertain
        covered.append(float(decisions.sets[uncertain].gather(-1, fresh.labels[uncertain].view(-1, 1)).double().mean()))
        sizes.append(float(decisions.sets[uncertain].double().sum(-1).mean()))
    assert sum(covered) / 8 >= 1 - rule.set_alpha - 0.015
    assert sum(sizes) / 8 < 3.5  # not every class every time


def test_json_round_trip(rule):
    text = json.dumps(rule.to_dict(), allow_nan=False)  # strict JSON
    again = ReferralRule.from_dict(json.loads(text))
    assert again == rule
    exams = synthetic_predictions(300, seed=3)
    assert decide(exams, again).outcome == decide(exams, rule).outcome
    g = torch.Generator().manual_seed(4)
    evidence = torch.rand(600, 3, generator=g, dtype=torch.float64) * torch.rand(600, 1, generator=g) * 20
    labels = torch.where(torch.rand(600, generator=g) < 0.8, evidence.argmax(-1), torch.randint(0, 3, (600,)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReferralWarning)
        combined = fit_referral_rule(Prediction.from_evidence(evidence, labels=labels), combine=True, target_risk=0.3)
    assert ReferralRule.from_dict(json.loads(json.dumps(combined.to_dict()))) == combined


def _edit(data, path, value):
    data = json.loads(json.dumps(data))
    *parents, last = path
    target = data
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return data


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("delta",), 1.5, r"referral rule\.delta: expected a number in \(0, 1\)"),
        (("target_risk",), "0.05", r"\.target_risk: expected a finite number"),
        (("mistake_threshold",), "big", r"\.mistake_threshold: expected a finite number or \"inf\""),
        (("class_names",), ["only"], r"\.class_names: expected a list of at least 2"),
        (("guaranteed",), "yes", r"\.guaranteed: expected true or false"),
        (("risk_upper_bound",), 0.2, r"\.guaranteed: true, but risk_upper_bound 0.2 exceeds"),
        (("n_tests",), 0, r"\.n_tests: expected an integer >= 1"),
        (("calibration_n",), 10**6, r"\.calibration_n: expected at most validation_n"),
        (("set_calibration",), "some", r"\.set_calibration: expected one of"),
        (("mistake_reference", "n"), 3, r"\.mistake_reference\.sorted_float64_base64: expected 3 float64"),
        (("mistake_score",), "logistic_mistake", r"\.combination: expected an object exactly when"),
        (("schema_version",), 99, r"\.schema_version: expected 1"),
        (("delta",), KeyError, r"referral rule: missing field\(s\) \['delta'\]"),
        (("surprise",), 1, r"unknown field\(s\) \['surprise'\]"),
    ],
)
def test_bad_fields_are_refused_by_name(rule, path, value, message):
    with pytest.raises(ReferralRuleError, match=message):
        ReferralRule.from_dict(_edit(rule.to_dict(), path, value))


def test_decide_names_what_does_not_fit(rule):
    with pytest.raises(ValueError, match="prediction has 3 classes; the rule was fitted for 4"):
        decide(Prediction(probs=torch.full((2, 3), 1 / 3), extra={"neg_log_density": torch.zeros(2)}), rule)
    with pytest.raises(ValueError, match=r"needs the score\(s\) \['neg_log_density'\].*post-hoc"):
        decide(Prediction(probs=torch.full((2, 4), 0.25)), rule)
    with pytest.raises(TypeError, match="ReferralRule.from_dict"):
        decide(synthetic_predictions(3), rule.to_dict())
    with pytest.raises(ValueError, match="no labels"):
        fit_referral_rule(Prediction(probs=torch.full((5, 4), 0.25)))
