"""The promotion gate: decides, from metrics measured on ONE split in ONE run, whether a challenger
may replace the champion. Pure functions: no MLflow, no I/O.

Rules (thresholds in `recsys.config.GateConfig`):
- with a champion: both are scored on the same test users, minus the pairs the champion has seen
  (`recsys.evaluation.lineage`); too few users left and the gate refuses to decide. The primary metric's relative
  gain must reach `min_relative_gain` AND the lower bound of its paired-bootstrap interval
  (`recsys.evaluation.bootstrap`) must be above zero. A guardrail blocks when its relative drop exceeds its
  tolerance and the drop is significant (the interval's upper bound is below zero), so noise alone
  never blocks; a guardrail without per-user values (catalog coverage) is judged on its point value;
- without one (the first model ever): the primary metric must beat every configured baseline. The paired
  interval of the gain over each baseline (same test users) is reported beside it, and a win inside the noise is
  called one, not hidden: the rule stays the point comparison, since refusing a first model leaves nothing to serve.
A metric that is missing or NaN (e.g. no cold target to measure cold recall on) fails its check, and a
configured baseline that applies to the run but was not scored fails the first-model check: the gate never
promotes on missing evidence. A configured baseline the run cannot score by design (`applicable`: ALS on the
dense path, trending without time) and a check listed in `not_applicable` are reported as not applicable.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

from recsys.evaluation.bootstrap import Interval
from recsys.config import GateConfig
from recsys.evaluation.metrics import metric_name

PROMOTED = "promoted"
REJECTED = "rejected"
# the rule of a configured first-model baseline that the run cannot score by design (`decide`'s `applicable`)
NOT_APPLICABLE_TO_RUN = "not applicable to this run"


@dataclass(frozen=True)
class Check:
    """One comparison the gate made."""

    kind: str  # "primary", "guardrail" or "baseline"
    metric: str
    candidate: float | None
    reference: float | None
    reference_model: str
    rule: str
    passed: bool
    # the relative change's bootstrap interval (None: judged on the point value) and the users it rests on
    low: float | None = None
    high: float | None = None
    n: int | None = None


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    primary_metric: str
    reference: str  # "champion" or "baselines" (first model)
    checks: tuple[Check, ...]
    reasons: tuple[str, ...]

    @property
    def status(self) -> str:
        return PROMOTED if self.promote else REJECTED

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["checks"] = [asdict(c) for c in self.checks]
        out["reasons"] = list(self.reasons)
        out["status"] = self.status
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GateDecision":
        return cls(
            promote=bool(data["promote"]),
            primary_metric=data["primary_metric"],
            reference=data["reference"],
            checks=tuple(Check(**c) for c in data["checks"]),
            reasons=tuple(data["reasons"]),
        )


def _value(metrics: dict[str, float] | None, name: str) -> float | None:
    if metrics is None or name not in metrics or metrics[name] is None:
        return None
    value = float(metrics[name])
    return None if math.isnan(value) else value


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def _relative_change(candidate: float, reference: float) -> float:
    if reference == 0:
        return 0.0 if candidate == 0 else math.inf
    return candidate / reference - 1.0


def decide(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    baselines: dict[str, dict[str, float]],
    config: GateConfig,
    k: int,
    intervals: dict[str, Interval | None] | None = None,
    test_users: int | None = None,
    churn: dict[str, Any] | None = None,
    applicable: Collection[str] | None = None,
) -> GateDecision:
    """The gate's decision for `candidate`, given the champion's and the baselines' metrics on the same split.

    `intervals` holds, per metric name, the candidate's relative change against the champion with its
    paired-bootstrap interval (None where it could not be formed); without an entry a metric is judged on
    its point value. For a first model (no champion) it is keyed by baseline name instead: the primary
    metric's gain over that baseline, reported with its check. `test_users` is how many test users the champion comparison rests on. `churn` is
    `recsys.evaluation.churn.churn_metrics` against the champion, bounded by `config.max_churn` when set.
    `applicable` names the baselines this run can score (`recsys.model.baselines.applicable`; None: every
    configured one): a configured baseline outside it is a passed "not applicable to this run" check."""
    primary = metric_name(config.primary_metric, k)
    cand = _value(candidate, primary)
    checks: list[Check] = []
    reasons: list[str] = []
    if champion is None:
        over = intervals or {}  # first model: keyed by baseline name, the candidate's gain over it
        skipped = [name for name in config.baselines if applicable is not None and name not in applicable]
        for name in config.baselines:
            if name in skipped:
                checks.append(Check("baseline", primary, cand, None, name, NOT_APPLICABLE_TO_RUN, True))
                continue
            ref = _value(baselines.get(name), primary)
            passed = cand is not None and ref is not None and cand > ref
            ci = over.get(name)
            checks.append(Check("baseline", primary, cand, ref, name, "> baseline", passed, *((ci.low, ci.high, ci.n) if ci is not None else ())))
            if name not in baselines:
                reasons.append(f"first model: baseline {name} was configured but not scored: missing evidence")
            elif not passed:
                reasons.append(f"first model: {primary} {_fmt(cand)} does not beat {name} {_fmt(ref)}{_noise(cand, ref, ci, config)}")
        compared = [c for c in checks if c.reference_model not in skipped]
        if not compared:
            reasons.append("first model: no baseline was configured, nothing to prove it is better than trivial")
        promote = bool(compared) and all(c.passed for c in compared)
        if promote:
            best = max(compared, key=lambda c: c.reference or 0.0)
            win = _noise(cand, best.reference, over.get(best.reference_model), config)
            reasons.insert(0, f"first model: {primary} {_fmt(cand)} beats every baseline (best: {best.reference_model} {_fmt(best.reference)}{win})")
        if skipped:
            reasons.append(f"first model: not applicable to this run, so not compared: {', '.join(skipped)}")
        return GateDecision(promote, primary, "baselines", tuple(checks), tuple(reasons))

    intervals = intervals or {}
    if test_users is not None:
        enough = test_users >= config.min_test_users
        checks.append(Check("evidence", "test_users", float(test_users), float(config.min_test_users), "champion", ">= min_test_users", enough))
        if not enough:
            reasons.append(
                f"not enough test data to decide: {test_users} test user(s) left after excluding what the champion trained on,"
                f" {config.min_test_users} needed; the champion stays"
            )
    ref = _value(champion, primary)
    need = config.min_relative_gain
    ci = intervals.get(primary)
    confident = primary not in intervals or (ci is not None and ci.low > 0)
    big_enough = cand is not None and ref is not None and (cand >= ref * (1 + need) - 1e-12 if ref > 0 else cand > 0)
    passed = big_enough and confident
    rule = f">= {_pct(need)} relative" + (f", {ci_label(config)} lower bound > 0" if primary in intervals else "")
    checks.append(_check("primary", primary, cand, ref, rule, passed, ci))
    if cand is not None and ref is not None:
        verdict = "improves on" if passed else "does not improve enough on"
        interval = f" ({ci_label(config)} {_pct(ci.low)} to {_pct(ci.high)} over {ci.n} users)" if ci is not None else ""
        why = "" if passed or not big_enough else ": the interval includes no gain" if ci is not None else ": no interval could be formed"
        reasons.append(f"{primary} {_fmt(cand)} {verdict} champion {_fmt(ref)}: {_pct(_relative_change(cand, ref))}{interval}, required {_pct(need)}{why}")
    else:
        reasons.append(f"{primary} missing: candidate {_fmt(cand)}, champion {_fmt(ref)}")
    for base, tolerance in config.guardrails:
        name = metric_name(base, k)
        c_val, r_val = _value(candidate, name), _value(champion, name)
        if base in config.not_applicable:
            checks.append(Check("guardrail", name, c_val, r_val, "champion", "not applicable (configured)", True))
            continue
        ci = intervals.get(name)
        drop = c_val is not None and r_val is not None and c_val < r_val * (1 - tolerance) - 1e-12
        significant = name not in intervals or ci is None or ci.high < 0
        ok = c_val is not None and r_val is not None and not (drop and significant)
        rule = f">= -{tolerance * 100:.1f}% relative" + (f" unless the drop is within noise ({ci_label(config)} upper bound >= 0)" if name in intervals else "")
        checks.append(_check("guardrail", name, c_val, r_val, rule, ok, ci))
        if c_val is None or r_val is None:
            reasons.append(f"guardrail {name} missing: candidate {_fmt(c_val)}, champion {_fmt(r_val)} (no target to measure it on; list it in not_applicable if that is expected)")
        elif not ok:
            interval = f", {ci_label(config)} {_pct(ci.low)} to {_pct(ci.high)}" if ci is not None else ""
            reasons.append(f"guardrail {name} regressed: {_fmt(c_val)} vs champion {_fmt(r_val)} ({_pct(_relative_change(c_val, r_val))}{interval}, tolerated -{tolerance * 100:.1f}%)")
    if config.max_churn is not None:
        name = metric_name("churn", k)
        value = None if churn is None else float(churn["churn"])
        ok = value is not None and value <= config.max_churn + 1e-12
        checks.append(Check("churn", name, value, config.max_churn, "champion", f"<= {config.max_churn:.2f} (1 - mean overlap@{k} of related items)", ok))
        if value is None:
            reasons.append(f"churn guardrail {name} missing: the candidate's related items were not compared with the champion's")
        elif not ok:
            reasons.append(
                f"churn {name} {value:.2f} exceeds the allowed {config.max_churn:.2f}: {value:.0%} of the champion's top-{k} related-item slots"
                f" would change, {churn['changed_entirely']:.0%} of the lists entirely"
            )
    promote = all(c.passed for c in checks)
    return GateDecision(promote, primary, "champion", tuple(checks), tuple(reasons))


def _noise(cand: float | None, ref: float | None, ci: Interval | None, config: GateConfig) -> str:
    """", +1.6%, 95% CI -1.9% to +3.3% over 2030 users: within noise" (empty without an interval)."""
    if ci is None or cand is None or ref is None:
        return ""
    verdict = ": within noise" if within_noise(ci.low, ci.high) else ""
    return f", {_pct(_relative_change(cand, ref))}, {ci_label(config)} {_pct(ci.low)} to {_pct(ci.high)} over {ci.n} users{verdict}"


def within_noise(low: float, high: float) -> bool:
    """A relative change whose interval [low, high] holds zero: not told apart from no change."""
    return low <= 0 <= high


def ci_label(config: GateConfig) -> str:
    return f"{config.confidence * 100:g}% CI"


def _check(kind: str, metric: str, cand: float | None, ref: float | None, rule: str, passed: bool, ci: Interval | None) -> Check:
    if ci is None:
        return Check(kind, metric, cand, ref, "champion", rule, passed)
    return Check(kind, metric, cand, ref, "champion", rule, passed, ci.low, ci.high, ci.n)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def change_text(kind: str | None, candidate: float | None, reference: float | None, low: float | None = None, high: float | None = None, n: int | None = None) -> str:
    """A check's relative change with its bootstrap interval, e.g. "+4.0% [+1.0%, +7.0%] n=400"
    ("" where there is none: an evidence check, a missing value, a zero reference)."""
    if kind in ("evidence", "churn") or candidate is None or reference is None or reference == 0:  # churn: a bound, not a reference model
        return ""
    point = _pct(candidate / reference - 1.0)
    return point if low is None or high is None else f"{point} [{_pct(low)}, {_pct(high)}] n={n}"


def _change(c: Check) -> str:
    return change_text(c.kind, c.candidate, c.reference, c.low, c.high, c.n)


def summary_markdown(decision: GateDecision, churn: dict[str, Any] | None = None) -> str:
    """A short Markdown summary of the decision (the human review step shows it), with the churn
    against the champion when it was measured."""
    lines = [f"**Gate: {decision.status}** (primary metric `{decision.primary_metric}`, against {decision.reference})", ""]
    lines += [f"- {r}" for r in decision.reasons]
    if churn is not None:
        from recsys.evaluation.churn import churn_line

        lines += ["", churn_line(churn)]
    lines += ["", "| check | metric | candidate | reference | relative change (interval) | rule | passed |", "|---|---|---|---|---|---|---|"]
    for c in decision.checks:
        lines.append(
            f"| {c.kind} | {c.metric} | {_fmt(c.candidate)} | {c.reference_model} {_fmt(c.reference)} | {_change(c)} | {c.rule} | {'yes' if c.passed else 'NO'} |"
        )
    return "\n".join(lines)
