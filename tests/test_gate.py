"""The promotion gate's rules, on hand-built metrics with known outcomes."""

from __future__ import annotations

import math

import pytest

from recsys.evaluation.bootstrap import Interval
from recsys.config import GateConfig, PipelineConfig
from recsys.evaluation.gate import GateDecision, decide, summary_markdown

CHAMPION = {"ndcg_at_10": 0.250, "recall_at_10": 0.200, "cold_recall_at_10": 0.070, "coverage_at_10": 0.400}
BASELINES = {
    "popularity": {"ndcg_at_10": 0.05},
    "itemknn": {"ndcg_at_10": 0.17},
    "ease": {"ndcg_at_10": 0.24},
    "frozen": {"ndcg_at_10": 0.06},
}


# the runs these tests stand for are dense and without time: ALS and trending do not apply to them
DENSE = tuple(BASELINES)


def _with(**changes: float) -> dict[str, float]:
    return {**CHAMPION, **changes}


def test_better_challenger_is_promoted() -> None:
    d = decide(_with(ndcg_at_10=0.260), CHAMPION, BASELINES, GateConfig(), k=10)
    assert d.promote and d.status == "promoted" and d.reference == "champion"
    assert [c.kind for c in d.checks] == ["primary", "guardrail", "guardrail", "guardrail"]
    assert all(c.passed for c in d.checks)
    assert d.reasons[0] == "ndcg_at_10 0.2600 improves on champion 0.2500: +4.0%, required +1.0%"


def test_worse_challenger_is_refused_with_the_reason() -> None:
    d = decide(_with(ndcg_at_10=0.200), CHAMPION, BASELINES, GateConfig(), k=10)
    assert not d.promote and d.status == "rejected"
    assert d.reasons[0] == "ndcg_at_10 0.2000 does not improve enough on champion 0.2500: -20.0%, required +1.0%"


def test_gain_below_the_margin_is_refused() -> None:
    # +0.8% is an improvement, but below the 1% margin: not worth a model change
    d = decide(_with(ndcg_at_10=0.252), CHAMPION, BASELINES, GateConfig(), k=10)
    assert not d.promote
    # exactly the margin passes
    assert decide(_with(ndcg_at_10=0.2525), CHAMPION, BASELINES, GateConfig(), k=10).promote
    # a zero margin accepts any improvement
    assert decide(_with(ndcg_at_10=0.2501), CHAMPION, BASELINES, GateConfig(min_relative_gain=0.0), k=10).promote


def test_guardrail_regression_blocks_a_better_primary_metric() -> None:
    # much better NDCG, but cold-start recall dropped 30% (tolerance 5%)
    d = decide(_with(ndcg_at_10=0.30, cold_recall_at_10=0.049), CHAMPION, BASELINES, GateConfig(), k=10)
    assert not d.promote
    failed = [c for c in d.checks if not c.passed]
    assert [c.metric for c in failed] == ["cold_recall_at_10"]
    assert d.reasons[-1] == "guardrail cold_recall_at_10 regressed: 0.0490 vs champion 0.0700 (-30.0%, tolerated -5.0%)"
    # within tolerance (-4%) passes
    assert decide(_with(ndcg_at_10=0.30, cold_recall_at_10=0.0672), CHAMPION, BASELINES, GateConfig(), k=10).promote
    # a looser tolerance from the config lets the first one through
    loose = GateConfig(guardrails=(("cold_recall", 0.5), ("coverage", 0.1), ("recall", 0.02)))
    assert decide(_with(ndcg_at_10=0.30, cold_recall_at_10=0.049), CHAMPION, BASELINES, loose, k=10).promote


def test_missing_or_nan_candidate_metric_never_promotes() -> None:
    d = decide({"ndcg_at_10": 0.3, "recall_at_10": 0.3, "cold_recall_at_10": 0.1}, CHAMPION, BASELINES, GateConfig(), k=10)
    assert not d.promote  # coverage missing: a guardrail without evidence fails
    assert [c.metric for c in d.checks if not c.passed] == ["coverage_at_10"]
    d = decide(_with(ndcg_at_10=math.nan), CHAMPION, BASELINES, GateConfig(), k=10)
    assert not d.promote and d.checks[0].candidate is None


def test_missing_evidence_fails_unless_declared_not_applicable() -> None:
    # no cold target to measure cold recall on: NaN on both sides is missing evidence, not 0 >= 0
    nan_cold = {"cold_recall_at_10": math.nan}
    d = decide(_with(ndcg_at_10=0.26, **nan_cold), _with(**nan_cold), BASELINES, GateConfig(), k=10)
    assert not d.promote
    assert [c.metric for c in d.checks if not c.passed] == ["cold_recall_at_10"]
    assert any(r.startswith("guardrail cold_recall_at_10 missing") and "not_applicable" in r for r in d.reasons)
    # declared not applicable: skipped, and the report says so
    d = decide(_with(ndcg_at_10=0.26, **nan_cold), _with(**nan_cold), BASELINES, GateConfig(not_applicable=("cold_recall",)), k=10)
    assert d.promote
    assert [c.rule for c in d.checks if c.metric == "cold_recall_at_10"] == ["not applicable (configured)"]
    # the champion lacking a guardrail metric is missing evidence too
    assert not decide(_with(ndcg_at_10=0.26), {"ndcg_at_10": 0.25, "recall_at_10": 0.2}, BASELINES, GateConfig(), k=10).promote


def test_configured_baseline_that_was_not_scored_fails_the_first_model_check() -> None:
    scored = {name: m for name, m in BASELINES.items() if name != "itemknn"}
    d = decide({"ndcg_at_10": 0.26}, None, scored, GateConfig(), k=10)
    assert not d.promote
    assert "first model: baseline itemknn was configured but not scored: missing evidence" in d.reasons


def _interval(point: float, low: float, high: float, n: int = 400) -> Interval:
    return Interval(point, low, high, n, 0.95)


def test_primary_gain_needs_an_interval_above_zero() -> None:
    cand = _with(ndcg_at_10=0.260)  # +4%: enough on its point value
    noisy = {"ndcg_at_10": _interval(0.04, -0.02, 0.10)}
    d = decide(cand, CHAMPION, BASELINES, GateConfig(), k=10, intervals=noisy, test_users=400)
    assert not d.promote
    assert d.reasons[0] == "ndcg_at_10 0.2600 does not improve enough on champion 0.2500: +4.0% (95% CI -2.0% to +10.0% over 400 users), required +1.0%: the interval includes no gain"
    primary = d.checks[1]
    assert (primary.kind, primary.low, primary.high, primary.n) == ("primary", -0.02, 0.10, 400)
    sure = {"ndcg_at_10": _interval(0.04, 0.01, 0.07)}
    assert decide(cand, CHAMPION, BASELINES, GateConfig(), k=10, intervals=sure, test_users=400).promote
    # a confident gain below the margin is still refused
    assert not decide(_with(ndcg_at_10=0.252), CHAMPION, BASELINES, GateConfig(), k=10, intervals={"ndcg_at_10": _interval(0.008, 0.001, 0.015)}).promote
    # an interval that could not be formed (e.g. the champion scored 0 everywhere) is missing evidence
    assert not decide(cand, CHAMPION, BASELINES, GateConfig(), k=10, intervals={"ndcg_at_10": None}).promote


def test_guardrail_blocks_only_a_significant_drop_beyond_its_tolerance() -> None:
    cand = _with(ndcg_at_10=0.30, cold_recall_at_10=0.049)  # -30% cold recall
    primary = {"ndcg_at_10": _interval(0.2, 0.1, 0.3)}
    within_noise = primary | {"cold_recall_at_10": _interval(-0.3, -0.6, 0.05)}
    assert decide(cand, CHAMPION, BASELINES, GateConfig(), k=10, intervals=within_noise).promote
    significant = primary | {"cold_recall_at_10": _interval(-0.3, -0.5, -0.1)}
    d = decide(cand, CHAMPION, BASELINES, GateConfig(), k=10, intervals=significant)
    assert not d.promote
    assert d.reasons[-1] == "guardrail cold_recall_at_10 regressed: 0.0490 vs champion 0.0700 (-30.0%, 95% CI -50.0% to -10.0%, tolerated -5.0%)"


def test_too_few_test_users_left_is_no_decision() -> None:
    d = decide(_with(ndcg_at_10=0.30), CHAMPION, BASELINES, GateConfig(min_test_users=50), k=10, test_users=12)
    assert not d.promote
    assert d.checks[0].kind == "evidence" and not d.checks[0].passed
    assert d.reasons[0].startswith("not enough test data to decide: 12 test user(s) left")


def test_first_model_must_beat_every_baseline() -> None:
    d = decide({"ndcg_at_10": 0.26}, None, BASELINES, GateConfig(), k=10, applicable=DENSE)
    assert d.promote and d.reference == "baselines"
    assert [(c.reference_model, c.rule) for c in d.checks] == [
        ("popularity", "> baseline"),
        ("trending", "not applicable to this run"),
        ("itemknn", "> baseline"),
        ("ease", "> baseline"),
        ("frozen", "> baseline"),
        ("als", "not applicable to this run"),
    ]
    assert d.reasons == (
        "first model: ndcg_at_10 0.2600 beats every baseline (best: ease 0.2400)",
        "first model: not applicable to this run, so not compared: trending, als",
    )
    d = decide({"ndcg_at_10": 0.20}, None, BASELINES, GateConfig(), k=10, applicable=DENSE)
    assert not d.promote
    assert d.reasons[0] == "first model: ndcg_at_10 0.2000 does not beat ease 0.2400"
    # a tie is not a win
    assert not decide({"ndcg_at_10": 0.24}, None, BASELINES, GateConfig(), k=10, applicable=DENSE).promote
    # no baseline scored at all: refuse
    assert not decide({"ndcg_at_10": 0.5}, None, {}, GateConfig(), k=10, applicable=DENSE).promote
    # no baseline applies to the run: nothing proves the model beats the trivial, refuse
    nothing = decide({"ndcg_at_10": 0.5}, None, BASELINES, GateConfig(), k=10, applicable=())
    assert not nothing.promote and "first model: no baseline was configured, nothing to prove it is better than trivial" in nothing.reasons


def test_first_model_on_a_large_timed_catalog_must_beat_als_and_trending_too() -> None:
    """On the scalable path with time every registered baseline applies: the strongest one there (ALS, or what is
    selling now) is part of the first model's bar, and one that applies but was not scored is missing evidence."""
    scored = BASELINES | {"als": {"ndcg_at_10": 0.27}, "trending": {"ndcg_at_10": 0.20}}
    every = tuple(GateConfig().baselines)
    d = decide({"ndcg_at_10": 0.26}, None, scored, GateConfig(), k=10, applicable=every)
    assert not d.promote
    assert d.reasons == ("first model: ndcg_at_10 0.2600 does not beat als 0.2700",)
    assert decide({"ndcg_at_10": 0.28}, None, scored, GateConfig(), k=10, applicable=every).reasons[0] == "first model: ndcg_at_10 0.2800 beats every baseline (best: als 0.2700)"
    unscored = decide({"ndcg_at_10": 0.28}, None, BASELINES, GateConfig(), k=10, applicable=every)
    assert not unscored.promote
    assert [r for r in unscored.reasons if "missing evidence" in r] == [
        "first model: baseline trending was configured but not scored: missing evidence",
        "first model: baseline als was configured but not scored: missing evidence",
    ]


def test_first_model_reports_its_gain_over_each_baseline_with_the_interval() -> None:
    """A win inside the noise is still promoted (there is nothing else to serve) but is called what it is."""
    noisy = {"ease": Interval(0.0833, -0.02, 0.19, 2030, 0.95), "itemknn": Interval(0.3, 0.1, 0.5, 2030, 0.95)}
    d = decide({"ndcg_at_10": 0.26}, None, BASELINES, GateConfig(), k=10, intervals=noisy, applicable=DENSE)
    assert d.promote
    assert d.reasons[0] == "first model: ndcg_at_10 0.2600 beats every baseline (best: ease 0.2400, +8.3%, 95% CI -2.0% to +19.0% over 2030 users: within noise)"
    by_name = {c.reference_model: c for c in d.checks}
    assert (by_name["ease"].low, by_name["ease"].high, by_name["ease"].n) == (-0.02, 0.19, 2030)
    assert (by_name["itemknn"].low, by_name["itemknn"].high) == (0.1, 0.5) and by_name["popularity"].low is None
    clear = {"ease": Interval(0.0833, 0.03, 0.15, 2030, 0.95)}
    assert decide({"ndcg_at_10": 0.26}, None, BASELINES, GateConfig(), k=10, intervals=clear, applicable=DENSE).reasons[0].endswith("95% CI +3.0% to +15.0% over 2030 users)")
    lost = decide({"ndcg_at_10": 0.20}, None, BASELINES, GateConfig(), k=10, intervals={"ease": Interval(-0.1667, -0.3, -0.05, 2030, 0.95)}, applicable=DENSE)
    assert lost.reasons[:1] == ("first model: ndcg_at_10 0.2000 does not beat ease 0.2400, -16.7%, 95% CI -30.0% to -5.0% over 2030 users",)


def test_metric_names_follow_k_and_the_configured_primary() -> None:
    cand = {"recall_at_20": 0.5, "ndcg_at_20": 0.1}
    champ = {"recall_at_20": 0.4, "ndcg_at_20": 0.2}
    d = decide(cand, champ, {}, GateConfig(primary_metric="recall", guardrails=()), k=20)
    assert d.promote and d.primary_metric == "recall_at_20"


def test_decision_round_trips_through_json_form() -> None:
    d = decide(_with(ndcg_at_10=0.30, cold_recall_at_10=0.0), CHAMPION, BASELINES, GateConfig(), k=10)
    again = GateDecision.from_dict(d.to_dict())
    assert again == d and d.to_dict()["status"] == "rejected"
    md = summary_markdown(d)
    assert "**Gate: rejected**" in md and "| guardrail | cold_recall_at_10 | 0.0000 | champion 0.0700 | -100.0% | >= -5.0% relative | NO |" in md


def test_gate_params_from_the_trigger_form() -> None:
    cfg = PipelineConfig.from_params(
        {"gate_min_relative_gain": "0.05", "require_approval": "true", "gate_tolerance_cold_recall": 0.2, "candidate": "text"}
    )
    assert cfg.gate.min_relative_gain == 0.05 and cfg.gate.require_approval is True
    assert dict(cfg.gate.guardrails) == {"cold_recall": 0.2, "coverage": 0.10, "recall": 0.02}
    assert cfg.candidate == "text"
    assert PipelineConfig.from_params({"require_approval": False}).gate.require_approval is False
    assert PipelineConfig.from_params({"gate_baselines": "popularity, ease"}).gate.baselines == ("popularity", "ease")
    assert PipelineConfig.from_params({}).gate.baselines == ("popularity", "trending", "itemknn", "ease", "frozen", "als")
    with pytest.raises(ValueError, match="candidate must be one of"):
        PipelineConfig.from_params({"candidate": "gpt"})


CHURN = {"queries": 100, "k": 10, "overlap": 0.45, "churn": 0.55, "changed_entirely": 0.12, "rank_correlation": 0.3, "exposure_shift_popularity": 0.08}


def test_churn_is_not_a_check_unless_bounded() -> None:
    d = decide(_with(ndcg_at_10=0.260), CHAMPION, BASELINES, GateConfig(), k=10, churn=CHURN)
    assert d.promote and "churn" not in [c.kind for c in d.checks]
    # the review's summary reports it anyway
    assert "55% of the top-10 slots change (mean overlap 0.45), 12% of the lists change entirely" in summary_markdown(d, CHURN)


def test_max_churn_refuses_a_better_model_that_reshuffles_the_shelves() -> None:
    d = decide(_with(ndcg_at_10=0.260), CHAMPION, BASELINES, GateConfig(max_churn=0.5), k=10, churn=CHURN)
    assert not d.promote
    [check] = [c for c in d.checks if c.kind == "churn"]
    assert (check.metric, check.candidate, check.reference, check.passed) == ("churn_at_10", 0.55, 0.5, False)
    assert d.reasons[-1] == "churn churn_at_10 0.55 exceeds the allowed 0.50: 55% of the champion's top-10 related-item slots would change, 12% of the lists entirely"
    # within the bound it passes; exactly on it too
    assert decide(_with(ndcg_at_10=0.260), CHAMPION, BASELINES, GateConfig(max_churn=0.6), k=10, churn=CHURN).promote
    assert decide(_with(ndcg_at_10=0.260), CHAMPION, BASELINES, GateConfig(max_churn=0.55), k=10, churn=CHURN).promote


def test_max_churn_without_a_churn_measurement_is_missing_evidence() -> None:
    d = decide(_with(ndcg_at_10=0.260), CHAMPION, BASELINES, GateConfig(max_churn=0.5), k=10)
    assert not d.promote and d.reasons[-1].startswith("churn guardrail churn_at_10 missing")
    # the first model has no champion to churn against: the bound does not apply
    assert decide(_with(ndcg_at_10=0.260), None, BASELINES, GateConfig(max_churn=0.5), k=10, applicable=DENSE).promote
