"""The promotion gate: decides, from metrics measured on ONE split in ONE run, whether a challenger
may replace the champion. Pure functions: no MLflow, no I/O.

Rules (thresholds in `recsys.config.GateConfig`):
- with a champion: the primary metric must improve by at least `min_relative_gain` (relative), and
  no guardrail metric may drop by more than its tolerance (relative);
- without one (the first model ever): the primary metric must beat every baseline.
A metric the candidate lacks, or that is NaN, fails its check: the gate never promotes on missing evidence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from recsys.config import GateConfig

PROMOTED = "promoted"
REJECTED = "rejected"


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


def metric_name(base: str, k: int) -> str:
    return f"{base}_at_{k}"


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
) -> GateDecision:
    """The gate's decision for `candidate`, given the champion's and the baselines' metrics on the same split."""
    primary = metric_name(config.primary_metric, k)
    cand = _value(candidate, primary)
    checks: list[Check] = []
    reasons: list[str] = []
    if champion is None:
        for name in config.baselines:
            ref = _value(baselines.get(name), primary)
            if name not in baselines:
                continue  # a baseline this run did not score (e.g. not applicable to the data)
            passed = cand is not None and ref is not None and cand > ref
            checks.append(Check("baseline", primary, cand, ref, name, "> baseline", passed))
            if not passed:
                reasons.append(f"first model: {primary} {_fmt(cand)} does not beat {name} {_fmt(ref)}")
        if not checks:
            reasons.append("first model: no baseline was scored, nothing to prove it is better than trivial")
        promote = bool(checks) and all(c.passed for c in checks)
        if promote:
            best = max(checks, key=lambda c: c.reference or 0.0)
            reasons.insert(0, f"first model: {primary} {_fmt(cand)} beats every baseline (best: {best.reference_model} {_fmt(best.reference)})")
        return GateDecision(promote, primary, "baselines", tuple(checks), tuple(reasons))

    ref = _value(champion, primary)
    need = config.min_relative_gain
    passed = cand is not None and ref is not None and (cand >= ref * (1 + need) - 1e-12 if ref > 0 else cand > 0)
    checks.append(Check("primary", primary, cand, ref, "champion", f">= {_pct(need)} relative", passed))
    if cand is not None and ref is not None:
        verdict = "improves on" if passed else "does not improve enough on"
        reasons.append(f"{primary} {_fmt(cand)} {verdict} champion {_fmt(ref)}: {_pct(_relative_change(cand, ref))}, required {_pct(need)}")
    else:
        reasons.append(f"{primary} missing: candidate {_fmt(cand)}, champion {_fmt(ref)}")
    for base, tolerance in config.guardrails:
        name = metric_name(base, k)
        c_val, r_val = _value(candidate, name), _value(champion, name)
        if r_val is None:
            continue  # the champion was never measured on it: nothing to regress from
        ok = c_val is not None and c_val >= r_val * (1 - tolerance) - 1e-12
        checks.append(Check("guardrail", name, c_val, r_val, "champion", f">= -{tolerance * 100:.1f}% relative", ok))
        if not ok:
            change = _pct(_relative_change(c_val, r_val)) if c_val is not None else "missing"
            reasons.append(f"guardrail {name} regressed: {_fmt(c_val)} vs champion {_fmt(r_val)} ({change}, tolerated -{tolerance * 100:.1f}%)")
    promote = all(c.passed for c in checks)
    return GateDecision(promote, primary, "champion", tuple(checks), tuple(reasons))


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def summary_markdown(decision: GateDecision) -> str:
    """A short Markdown summary of the decision (the human review step shows it)."""
    lines = [f"**Gate: {decision.status}** (primary metric `{decision.primary_metric}`, against {decision.reference})", ""]
    lines += [f"- {r}" for r in decision.reasons]
    lines += ["", "| check | metric | candidate | reference | rule | passed |", "|---|---|---|---|---|---|"]
    for c in decision.checks:
        lines.append(f"| {c.kind} | {c.metric} | {_fmt(c.candidate)} | {c.reference_model} {_fmt(c.reference)} | {c.rule} | {'yes' if c.passed else 'NO'} |")
    return "\n".join(lines)
