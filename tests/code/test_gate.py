"""The promotion gate: a challenger replaces the champion only when it is good AND better."""

from __future__ import annotations

import math

import pytest
from sklearn.metrics import f1_score

from rakuten_mlops.evaluation.gate import (
    GateDecision,
    ReviewedComparison,
    compare_on_reviewed,
    decide_promotion,
)
from rakuten_mlops.params import GatePolicy, ParamsError, parse_section

POLICY = GatePolicy(min_weighted_f1=0.70, min_macro_f1=0.50, max_ece=0.10, min_improvement=0.01)
GOOD = {"weighted_f1": 0.82, "macro_f1": 0.78, "ece": 0.04, "accuracy": 0.82}


@pytest.mark.parametrize(
    ("challenger_f1", "champion_f1", "promote"),
    [
        pytest.param(0.85, 0.80, True, id="better-by-more-than-min-improvement"),
        pytest.param(0.805, 0.80, False, id="better-but-below-min-improvement"),
        pytest.param(0.81, 0.80, True, id="better-by-exactly-min-improvement"),
        pytest.param(0.80, 0.80, False, id="equal"),
        pytest.param(0.75, 0.80, False, id="worse"),
    ],
)
def test_challenger_must_beat_champion_by_min_improvement(
    challenger_f1: float, champion_f1: float, promote: bool
) -> None:
    decision = decide_promotion(
        {**GOOD, "weighted_f1": challenger_f1}, {**GOOD, "weighted_f1": champion_f1}, POLICY
    )
    assert decision.promote is promote
    comparison = [r for r in decision.reasons if "vs champion" in r]
    assert len(comparison) == 1
    assert comparison[0].startswith("PASS" if promote else "FAIL")


def test_equal_passes_when_no_improvement_is_required() -> None:
    policy = GatePolicy(min_weighted_f1=0.5, min_macro_f1=0.0, max_ece=0.2, min_improvement=0.0)
    assert decide_promotion(GOOD, dict(GOOD), policy).promote is True


def test_no_champion_promotes_on_thresholds_and_says_so() -> None:
    decision = decide_promotion(GOOD, None, POLICY)
    assert decision.promote is True
    assert any(r.startswith("INFO: no champion yet") for r in decision.reasons)
    assert all(not r.startswith("FAIL") for r in decision.reasons)


def test_unloadable_champion_note_is_reported() -> None:
    note = "champion v3 could not be loaded: file missing"
    decision = decide_promotion(GOOD, None, POLICY, champion_note=note)
    assert decision.promote is True
    assert any(note in r for r in decision.reasons)


@pytest.mark.parametrize(
    ("override", "failing"),
    [
        pytest.param({"weighted_f1": 0.65}, "weighted_f1", id="weighted-f1-below-minimum"),
        pytest.param({"macro_f1": 0.40}, "macro_f1", id="macro-f1-below-minimum"),
        pytest.param({"ece": 0.25}, "ece", id="ece-above-maximum"),
        pytest.param({"ece": math.nan}, "ece", id="ece-nan"),
    ],
)
def test_below_threshold_is_refused_even_without_champion(
    override: dict[str, float], failing: str
) -> None:
    decision = decide_promotion({**GOOD, **override}, None, POLICY)
    assert decision.promote is False
    failed = [r for r in decision.reasons if r.startswith("FAIL")]
    assert len(failed) == 1
    assert failing in failed[0]


def test_below_threshold_is_refused_even_when_much_better_than_champion() -> None:
    champion = {**GOOD, "weighted_f1": 0.30}
    decision = decide_promotion({**GOOD, "weighted_f1": 0.65}, champion, POLICY)
    assert decision.promote is False


def test_missing_metric_never_promotes() -> None:
    decision = decide_promotion({"weighted_f1": 0.9, "macro_f1": 0.9}, None, POLICY)
    assert decision.promote is False
    assert any("ece is missing" in r for r in decision.reasons)


def test_champion_without_primary_metric_is_treated_as_absent() -> None:
    decision = decide_promotion(GOOD, {"accuracy": 0.99}, POLICY)
    assert decision.promote is True
    assert any("champion has no weighted_f1" in r for r in decision.reasons)


def test_policy_from_params_reads_known_keys_and_refuses_typos() -> None:
    policy = parse_section(GatePolicy, {"min_weighted_f1": 0.6, "min_improvement": 0}, "gate")
    assert policy.min_weighted_f1 == 0.6
    assert policy.min_improvement == 0.0
    assert policy.max_ece == GatePolicy().max_ece
    with pytest.raises(ParamsError, match="min_weigthed_f1"):
        parse_section(GatePolicy, {"min_weigthed_f1": 0.6}, "gate")
    with pytest.raises(ParamsError, match=r"`gate\.max_ece` must be a number, got 'low'"):
        parse_section(GatePolicy, {"max_ece": "low"}, "gate")


def test_decision_serialises_to_json_ready_dict() -> None:
    decision = GateDecision(promote=False, reasons=["FAIL: x"])
    assert decision.to_dict() == {"promote": False, "reasons": ["FAIL: x"], "comparisons": {}}


def reviewed(challenger_only: int, champion_only: int, both: int = 10) -> ReviewedComparison:
    """A paired comparison: `both` right by both models, then the discordant products."""
    truth = [1] * (both + challenger_only + champion_only)
    champion = [1] * both + [2] * challenger_only + [1] * champion_only
    challenger = [1] * both + [1] * challenger_only + [2] * champion_only
    return compare_on_reviewed(truth, champion, challenger, champion_version=3)


def test_reviewed_comparison_counts_pairs_and_tests_them() -> None:
    comparison = reviewed(challenger_only=8, champion_only=1)
    assert (comparison.n, comparison.challenger_correct, comparison.champion_correct) == (
        19,
        18,
        11,
    )
    assert (comparison.challenger_only, comparison.champion_only) == (8, 1)
    # Exact two-sided McNemar: 2 * P(X <= 1), X ~ Binomial(9, 1/2) = 2 * 10 / 512.
    assert comparison.p_value == pytest.approx(20 / 512)
    assert comparison.to_dict()["challenger_accuracy"] == pytest.approx(18 / 19)
    truth = [1] * 19
    challenger = [1] * 18 + [2]
    assert comparison.challenger_weighted_f1 == pytest.approx(
        f1_score(truth, challenger, average="weighted", zero_division=0)
    )
    assert comparison.champion_weighted_f1 < comparison.challenger_weighted_f1


FLAT = {**GOOD, "weighted_f1": 0.80}
REVIEWED_POLICY = GatePolicy(
    min_weighted_f1=0.70,
    min_macro_f1=0.50,
    max_ece=0.10,
    min_improvement=0.01,
    max_test_regression=0.005,
    reviewed_significance=0.05,
    min_reviewed=15,
)


@pytest.mark.parametrize(
    ("challenger_f1", "comparison", "promote"),
    [
        pytest.param(0.7998, reviewed(8, 1), True, id="flat-on-test-better-on-reviewed"),
        pytest.param(0.7998, reviewed(5, 2), False, id="reviewed-gain-not-significant"),
        pytest.param(0.7998, reviewed(1, 8), False, id="champion-better-on-reviewed"),
        pytest.param(0.7900, reviewed(12, 0), False, id="significant-but-test-guard-fails"),
        pytest.param(0.7998, reviewed(5, 0, both=2), False, id="too-few-reviewed-products"),
        pytest.param(0.8200, reviewed(1, 8), True, id="better-on-test-is-enough"),
    ],
)
def test_reviewed_traffic_is_a_second_route_behind_the_test_guard(
    challenger_f1: float, comparison: ReviewedComparison, promote: bool
) -> None:
    decision = decide_promotion(
        {**GOOD, "weighted_f1": challenger_f1}, FLAT, REVIEWED_POLICY, reviewed=comparison
    )
    assert decision.promote is promote
    assert decision.comparisons["test"]["challenger"] == challenger_f1
    assert decision.comparisons["reviewed"]["n"] == comparison.n
    guard = [r for r in decision.reasons if "test split guard" in r]
    assert len(guard) == 1
    assert guard[0].startswith("FAIL" if challenger_f1 < 0.795 else "PASS")
    if comparison.n < REVIEWED_POLICY.min_reviewed:
        assert any("does not decide" in r for r in decision.reasons)
    else:
        assert any("McNemar p" in r for r in decision.reasons)


def test_reviewed_traffic_never_overrides_the_thresholds() -> None:
    decision = decide_promotion(
        {**GOOD, "weighted_f1": 0.65},
        {**GOOD, "weighted_f1": 0.65},
        REVIEWED_POLICY,
        reviewed=reviewed(20, 0),
    )
    assert decision.promote is False
