"""The referral rule as a record: a frozen dataclass with a strict JSON round trip (``to_dict`` / ``from_dict``).

:mod:`clearmamba.evaluation.referral` fits and applies it; this module only holds and checks it. ``from_dict``
refuses unknown, missing or out-of-range fields with an error naming the field, so an edited run record cannot
slip a threshold of 1e9 or a delta of 2 past the loader. Infinite thresholds are written ``"inf"`` / ``"-inf"``
(strict JSON has no infinity). Score names are the public names of :mod:`clearmamba.evaluation.naming`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clearmamba.errors import UserError

from .mistake_score import CandidateResult, LogisticCombination
from .naming import score_label

SCHEMA_VERSION = 1
SET_CALIBRATION = ("uncertain", "all")


class ReferralRuleError(UserError, ValueError):
    """A stored referral rule is malformed; the message names the field and what was expected."""


@dataclass(frozen=True)
class ScoreReference:
    """Sorted scores of the validation exams, to read a new score as a percentile or a conformal p-value."""

    values: tuple[float, ...]  # ascending

    @classmethod
    def of(cls, scores: Tensor) -> ScoreReference:
        return cls(tuple(scores.double().sort().values.tolist()))

    def _sorted(self) -> Tensor:
        return torch.tensor(self.values, dtype=torch.float64)

    def share_below(self, scores: Tensor) -> Tensor:
        """#{validation scores < s} / n, ``[b]`` (x 100 = percentile)."""
        return torch.searchsorted(self._sorted(), scores.double(), right=False).double() / len(self.values)

    def p_value(self, scores: Tensor) -> Tensor:
        """Conformal p-value (1 + #{validation scores >= s}) / (n + 1), ``[b]``: small = unusual."""
        n = len(self.values)
        at_least = n - torch.searchsorted(self._sorted(), scores.double(), right=False)
        return (1 + at_least.double()) / (n + 1)

    def to_dict(self) -> dict[str, Any]:
        raw = np.asarray(self.values, dtype="<f8").tobytes()
        return {"n": len(self.values), "sorted_float64_base64": base64.b64encode(raw).decode("ascii")}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ScoreReference:
        _keys(data, {"n", "sorted_float64_base64"}, where)
        n = _int(data, "n", where, low=1)
        try:
            raw = base64.b64decode(data["sorted_float64_base64"], validate=True)
        except (TypeError, ValueError) as error:
            raise ReferralRuleError(f"{where}.sorted_float64_base64: expected base64 text ({error})") from None
        if len(raw) != 8 * n:
            raise ReferralRuleError(f"{where}.sorted_float64_base64: expected {n} float64 values "
                                    f"({8 * n} bytes), got {len(raw)} bytes")  # fmt: skip
        values = np.frombuffer(raw, dtype="<f8")
        if not np.isfinite(values).all() or (np.diff(values) < 0).any():
            raise ReferralRuleError(f"{where}.sorted_float64_base64: expected finite values in ascending order")
        return cls(tuple(values.tolist()))


@dataclass(frozen=True)
class ReferralRule:
    """Refer an exam when it is unfamiliar (``unfamiliar_score > unfamiliar_threshold``) or when the diagnosis is
    uncertain (``mistake_score >= mistake_threshold``); accept it otherwise.

    The promise: with probability >= ``1 - delta`` over the draw of the calibration exams, the error rate among
    accepted in-distribution exams is <= ``target_risk`` (when ``guaranteed``; exchangeable exams assumed).
    """

    class_names: tuple[str, ...]
    # "is this exam unlike my training data?" (None: the model has no such score; the gate is off)
    unfamiliar_score: str | None
    unfamiliar_threshold: float | None  # refer above it; conformal p-value <= 1 - id_pass_rate
    id_pass_rate: float  # share of in-distribution exams meant to pass the gate, e.g. 0.99
    unfamiliar_reference: ScoreReference | None
    # "am I likely wrong?"
    mistake_score: str
    mistake_threshold: float  # refer at or above it; +inf refers none, -inf all
    mistake_reference: ScoreReference
    combination: LogisticCombination | None  # when mistake_score is the logistic combination
    selection: tuple[CandidateResult, ...]  # held-out fold results of the candidates (names: public)
    selection_folds: int
    # the guarantee
    target_risk: float
    delta: float
    validation_n: int  # labelled validation exams the rule was fitted on
    calibration_n: int  # of those, the exams the mistake threshold was certified on (they pass the gate)
    calibration_coverage: float  # share of calibration exams accepted
    calibration_risk: float  # error rate among them
    risk_upper_bound: float  # Clopper-Pearson bound on the accepted error at 1 - delta / n_tests
    n_tests: int  # Bonferroni count: coverage levels x candidate scores
    guaranteed: bool
    exams_needed: int | None  # about how many validation exams would support the target (None: no number would)
    validation_coverage: float  # share of all validation exams accepted by both gates
    # conformal prediction sets shown for uncertain exams (LAC: classes with 1 - p_k <= set_quantile)
    set_alpha: float
    set_quantile: float
    set_calibration: str  # "uncertain": fitted on validation exams referred as uncertain; "all": on all passing
    set_calibration_n: int
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # one check for both construction paths: from_dict re-validates through to_dict's shape
        _validate(self.to_dict(), "referral rule")

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> str:
        """The rule in plain words."""
        parts = []
        if self.unfamiliar_score is not None and math.isfinite(self.unfamiliar_threshold):
            parts.append(f"Refer as unfamiliar when {score_label(self.unfamiliar_score)} is above "
                         f"{self.unfamiliar_threshold:.4g} (about {100 * self.id_pass_rate:.3g}% of in-distribution "
                         "exams pass).")  # fmt: skip
        elif self.unfamiliar_score is not None:
            parts.append(f"The unfamiliar-input gate ({score_label(self.unfamiliar_score)}) is off: too few "
                         f"validation exams for a pass rate of {100 * self.id_pass_rate:.3g}%.")  # fmt: skip
        else:
            parts.append("No unfamiliar-input gate: the model has no density, evidence or ensemble score.")
        if self.mistake_threshold == math.inf:
            parts.append(f"No exam is referred as uncertain ({score_label(self.mistake_score)}).")
        elif self.mistake_threshold == -math.inf:
            parts.append("Every exam is referred as uncertain.")
        else:
            parts.append(f"Refer as uncertain when {score_label(self.mistake_score)} is at least "
                         f"{self.mistake_threshold:.4g}.")  # fmt: skip
        promise = (f"at most {100 * self.target_risk:.3g}% of accepted in-distribution exams are wrong, with "
                   f"probability at least {100 * (1 - self.delta):.3g}% over the calibration draw")  # fmt: skip
        if self.guaranteed:
            parts.append(f"Guarantee: {promise} (certified bound {100 * self.risk_upper_bound:.2f}% on "
                         f"{self.calibration_n} validation exams).")  # fmt: skip
        else:
            need = f"; about {self.exams_needed} validation exams would" if self.exams_needed else ""
            parts.append(f"NO guarantee: {self.validation_n} validation exams cannot certify that {promise}{need}.")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("unfamiliar_reference", "mistake_reference", "combination"):
                value = None if value is None else value.to_dict()
            elif f.name == "selection":
                value = [{"name": c.name, "held_out_aurc": _json_float(c.held_out_aurc), "folds_won": c.folds_won}
                         for c in value]  # fmt: skip
            elif f.name == "class_names":
                value = list(value)
            elif isinstance(value, float):
                value = _json_float(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "referral rule") -> ReferralRule:
        """The rule of a ``to_dict`` record; :class:`ReferralRuleError` names any bad field."""
        _validate(data, where)
        values = dict(data)
        values["class_names"] = tuple(data["class_names"])
        for name in ("unfamiliar_reference", "mistake_reference"):
            values[name] = None if data[name] is None else ScoreReference.from_dict(data[name], f"{where}.{name}")
        try:
            values["combination"] = (None if data["combination"] is None
                                     else LogisticCombination.from_dict(data["combination"], f"{where}.combination"))
        except ValueError as error:  # fmt: skip
            raise ReferralRuleError(str(error)) from None
        values["selection"] = tuple(CandidateResult(c["name"], _read_float(c["held_out_aurc"]), c["folds_won"])
                                    for c in data["selection"])  # fmt: skip
        for name in _FLOATS:
            if values[name] is not None:
                values[name] = _read_float(values[name])
        return cls(**values)


# ---- validation ---------------------------------------------------------------------------------------

_FLOATS = ("unfamiliar_threshold", "id_pass_rate", "mistake_threshold", "target_risk", "delta",
           "calibration_coverage", "calibration_risk", "risk_upper_bound", "validation_coverage", "set_alpha",
           "set_quantile")  # fmt: skip


def _json_float(x: float) -> float | str | None:
    if x is None:
        return None
    if math.isnan(x):
        return None
    return "inf" if x == math.inf else "-inf" if x == -math.inf else float(x)


def _read_float(x: Any) -> float:
    if x is None:
        return float("nan")
    return {"inf": math.inf, "-inf": -math.inf}.get(x, x) if isinstance(x, str) else float(x)


def _keys(data: Any, expected: set[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ReferralRuleError(f"{where}: expected an object, got {type(data).__name__}")
    missing, unknown = expected - set(data), set(data) - expected
    if missing:
        raise ReferralRuleError(f"{where}: missing field(s) {sorted(missing)}")
    if unknown:
        raise ReferralRuleError(f"{where}: unknown field(s) {sorted(unknown)}; expected {sorted(expected)}")


def _number(data, name, where, low=-math.inf, high=math.inf, open_low=False, open_high=False, infinite=False):
    value = data[name]
    if isinstance(value, str) and infinite and value in ("inf", "-inf"):
        return _read_float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        allowed = ' or "inf"/"-inf"' if infinite else ""
        raise ReferralRuleError(f"{where}.{name}: expected a finite number{allowed}, got {value!r}")
    if value < low or value > high or (open_low and value == low) or (open_high and value == high):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ReferralRuleError(f"{where}.{name}: expected a number in {interval}, got {value!r}")
    return float(value)


def _int(data, name, where, low=0):
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ReferralRuleError(f"{where}.{name}: expected an integer >= {low}, got {value!r}")
    return value


def _validate(data: Any, where: str) -> None:
    _keys(data, {f.name for f in fields(ReferralRule)}, where)
    if data["schema_version"] != SCHEMA_VERSION:
        raise ReferralRuleError(f"{where}.schema_version: expected {SCHEMA_VERSION}, got {data['schema_version']!r}")
    names = data["class_names"]
    if not isinstance(names, list | tuple) or len(names) < 2 or not all(isinstance(c, str) for c in names):
        raise ReferralRuleError(f"{where}.class_names: expected a list of at least 2 class names, got {names!r}")
    if len(set(names)) != len(names):
        raise ReferralRuleError(f"{where}.class_names: expected distinct names, got {list(names)}")
    for name in ("target_risk", "delta", "id_pass_rate", "set_alpha"):
        _number(data, name, where, 0, 1, open_low=True, open_high=True)
    for name in ("calibration_coverage", "calibration_risk", "risk_upper_bound", "validation_coverage"):
        _number(data, name, where, 0, 1)
    _number(data, "mistake_threshold", where, infinite=True)
    _number(data, "set_quantile", where, infinite=True)
    for name in ("validation_n", "calibration_n", "set_calibration_n"):
        _int(data, name, where)
    _int(data, "n_tests", where, low=1)
    _int(data, "selection_folds", where, low=2)
    if data["calibration_n"] > data["validation_n"]:
        raise ReferralRuleError(f"{where}.calibration_n: expected at most validation_n={data['validation_n']}, "
                                f"got {data['calibration_n']}")  # fmt: skip
    if data["exams_needed"] is not None:
        _int(data, "exams_needed", where, low=1)
    if not isinstance(data["guaranteed"], bool):
        raise ReferralRuleError(f"{where}.guaranteed: expected true or false, got {data['guaranteed']!r}")
    if data["guaranteed"] and data["risk_upper_bound"] > data["target_risk"]:
        raise ReferralRuleError(f"{where}.guaranteed: true, but risk_upper_bound {data['risk_upper_bound']} "
                                f"exceeds target_risk {data['target_risk']}")  # fmt: skip
    if data["set_calibration"] not in SET_CALIBRATION:
        raise ReferralRuleError(f"{where}.set_calibration: expected one of {SET_CALIBRATION}, "
                                f"got {data['set_calibration']!r}")  # fmt: skip
    if not isinstance(data["mistake_score"], str) or not data["mistake_score"]:
        raise ReferralRuleError(f"{where}.mistake_score: expected a score name, got {data['mistake_score']!r}")
    gate = data["unfamiliar_score"]
    if gate is None:
        if data["unfamiliar_threshold"] is not None or data["unfamiliar_reference"] is not None:
            raise ReferralRuleError(f"{where}.unfamiliar_threshold: expected null when unfamiliar_score is null")
    else:
        if not isinstance(gate, str) or not gate:
            raise ReferralRuleError(f"{where}.unfamiliar_score: expected a score name or null, got {gate!r}")
        _number(data, "unfamiliar_threshold", where, infinite=True)
        if data["unfamiliar_reference"] is None:
            raise ReferralRuleError(f"{where}.unfamiliar_reference: expected the validation scores of "
                                    f"{gate!r}, got null")  # fmt: skip
    if data["mistake_reference"] is None:
        raise ReferralRuleError(f"{where}.mistake_reference: expected the validation mistake scores, got null")
    if (data["combination"] is None) == (data["mistake_score"] == "logistic_mistake"):
        raise ReferralRuleError(f"{where}.combination: expected an object exactly when mistake_score is "
                                "'logistic_mistake'")  # fmt: skip
    selection = data["selection"]
    if not isinstance(selection, list | tuple) or not all(
        isinstance(c, Mapping) and set(c) == {"name", "held_out_aurc", "folds_won"} for c in selection
    ):
        raise ReferralRuleError(f"{where}.selection: expected a list of {{name, held_out_aurc, folds_won}}, "
                                f"got {selection!r}")  # fmt: skip
