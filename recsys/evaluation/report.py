"""Render the evaluation/gate report (a JSON-able dict the pipeline builds) as HTML, Markdown and files.

Schema (every part but model_name is optional; metric dicts may lack keys):
    model_name, version, run_id, created,
    dataset {name, digest, items, users, interactions, split {strategy, train, val, test}},
    code {git_sha, recsys_version, python, torch, device},
    decision {promote, status, primary_metric, reference, reasons [str], checks [{name, metric,
              candidate, reference, reference_model, rule, passed}]},
    metrics {split: {model: {metric: value}}}   ("candidate" is the model under review,
                                                 "champion" the current one, the rest baselines),
    slices [metric names], plots {name: png path}.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recsys import atomic

HEADLINE_METRICS: tuple[str, ...] = (
    "ndcg_at_10",
    "recall_at_10",
    "mrr_at_10",
    "cold_recall_at_10",
    "coverage_at_10",
    "long_tail_share_at_10",
)
CANDIDATE = "candidate"
CHAMPION = "champion"
# metrics where smaller is better (exposure inequality); everything else is "higher is better"
LOWER_IS_BETTER_PREFIXES: tuple[str, ...] = ("gini_at_",)
MAX_DESCRIPTION_CHARS = 5000
_MAX_REASONS = 8
_MAX_REASON_CHARS = 300
_DASH = "–"


# ---------------------------------------------------------------------------------------------
# small helpers shared by the HTML and Markdown renderers


def _num(v: Any) -> float | None:
    """v as a finite float, or None (missing, NaN, non-numeric); numpy scalars included."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if not isinstance(v, (bool, str)) and math.isfinite(f) else None


def fmt_value(v: Any, decimals: int = 4) -> str:
    """A metric value with fixed decimals; "–" for missing or non-finite."""
    f = _num(v)
    return _DASH if f is None else f"{f:.{decimals}f}"


def _fmt_count(v: Any) -> str:
    f = _num(v)
    if f is None:
        return _DASH if v is None else str(v)
    return f"{int(f):,}" if f == int(f) else f"{f:,}"


def lower_is_better(metric: str) -> bool:
    return metric.startswith(LOWER_IS_BETTER_PREFIXES)


def best_value(values: Sequence[Any], metric: str) -> float | None:
    """The best of the numeric values for this metric (max, or min for lower-is-better), None if none."""
    nums = [f for f in map(_num, values) if f is not None]
    if not nums:
        return None
    return min(nums) if lower_is_better(metric) else max(nums)


def relative_change(candidate: Any, reference: Any) -> float | None:
    """(candidate - reference) / |reference|, None when either is missing or the reference is 0."""
    c, r = _num(candidate), _num(reference)
    if c is None or r is None or r == 0:
        return None
    return (c - r) / abs(r)


def _fmt_change(rel: float | None) -> str:
    return _DASH if rel is None else f"{rel * 100:+.1f}%"


def decision_status(report: Mapping[str, Any]) -> str:
    """"promoted", "rejected" or "pending", from decision.status, else decision.promote."""
    decision = report.get("decision") or {}
    status = str(decision.get("status") or "").strip().lower()
    if status in ("promoted", "champion", "accepted", "passed"):
        return "promoted"
    if status in ("rejected", "not promoted", "failed"):
        return "rejected"
    if not status and decision.get("promote") is True:
        return "promoted"
    if not status and decision.get("promote") is False:
        return "rejected"
    return "pending"


def _metric_splits(report: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """The metrics by split, test first (it is the one the gate decides on)."""
    metrics = report.get("metrics") or {}
    order = sorted(metrics, key=lambda s: s != "test")
    return {s: metrics[s] or {} for s in order}


def _primary_models(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    splits = _metric_splits(report)
    return next(iter(splits.values()), {})


def _reasons(report: Mapping[str, Any]) -> list[str]:
    reasons = (report.get("decision") or {}).get("reasons") or []
    return [str(r) for r in reasons]


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


# ---------------------------------------------------------------------------------------------
# HTML


def _table(models: Mapping[str, Mapping[str, Any]], columns: Sequence[str]) -> dict[str, Any]:
    """Rows of formatted cells with the best value per column flagged (ties all flagged)."""
    best = {c: best_value([m.get(c) for m in models.values()], c) for c in columns}
    rows = []
    for name, vals in models.items():
        vals = vals or {}
        cells = []
        for c in columns:
            f = _num(vals.get(c))
            cells.append({"text": fmt_value(f), "best": f is not None and f == best[c]})
        rows.append({"model": name, "candidate": name == CANDIDATE, "cells": cells})
    return {"columns": list(columns), "rows": rows}


def embed_plots(plots: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """Plots as base64 data URIs; missing or unreadable files are skipped (a report never fails on a plot)."""
    out = []
    for name, p in (plots or {}).items():
        try:
            data = Path(p).read_bytes()
        except (OSError, TypeError):
            continue
        out.append({"name": str(name).replace("_", " "), "src": "data:image/png;base64," + base64.b64encode(data).decode("ascii")})
    return out


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ model_name }} v{{ version }} – {{ status }}</title>
<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #212529; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #dee2e6; padding-bottom: .2em; }
.meta { color: #6c757d; font-size: .9em; }
.badge { display: inline-block; padding: .15em .6em; border-radius: .4em; color: #fff; font-size: .75em; vertical-align: middle; text-transform: uppercase; letter-spacing: .05em; }
.badge-promoted { background: #2b8a3e; } .badge-rejected { background: #c92a2a; } .badge-pending { background: #868e96; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #dee2e6; padding: .3em .7em; text-align: right; }
th { background: #f1f3f5; } td.name, th.name { text-align: left; }
tr.candidate { background: #e7f5ff; }
td.pass { color: #2b8a3e; font-weight: bold; } td.fail { color: #c92a2a; font-weight: bold; }
.plot img { max-width: 100%; border: 1px solid #dee2e6; margin: .5em 0; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; } dt { font-weight: bold; } dd { margin: 0; font-family: monospace; }
{{ panel_css }}
</style></head><body>
<h1>{{ model_name }} v{{ version }} <span class="badge badge-{{ status }}">{{ status }}</span></h1>
<p class="meta">run {{ run_id }}{% if created %} · {{ created }}{% endif %}{% if primary_metric %} · primary metric {{ primary_metric }}{% endif %}{% if reference %} · reference {{ reference }}{% endif %}</p>

<h2>Decision</h2>
{% if reasons %}<ul class="reasons">{% for r in reasons %}<li>{{ r }}</li>{% endfor %}</ul>{% else %}<p>No reasons given.</p>{% endif %}
{% if checks %}
{% if evidence %}<p class="evidence">{{ evidence }}</p>{% endif %}
<table class="checks"><tr><th class="name">check</th><th class="name">metric</th><th>candidate</th><th class="name">reference model</th><th>reference</th><th class="name">relative change [interval]</th><th class="name">rule</th><th>result</th></tr>
{% for c in checks %}<tr><td class="name">{{ c.name }}</td><td class="name">{{ c.metric }}</td><td>{{ c.candidate }}</td><td class="name">{{ c.reference_model }}</td><td>{{ c.reference }}</td><td class="name">{{ c.change }}</td><td class="name">{{ c.rule }}</td><td class="{{ c.cls }}">{{ c.result }}</td></tr>
{% endfor %}</table>{% endif %}

{% if churn %}<h2>Churn vs the champion</h2>
<p class="churn">{{ churn_line }}</p>
<table class="churn"><tr><th class="name">exposure (share of recommended slots)</th><th>candidate</th><th>champion</th></tr>
{% for name, row in churn_rows %}<tr><td class="name">{{ name }}</td><td>{{ row.candidate }}</td><td>{{ row.champion }}</td></tr>
{% endfor %}</table>{% endif %}

{% if panel_section %}<h2>What shoppers would see: the review panel</h2>
<p>The same requests for every version of this model (best sellers, mid-range, long tail, new items, carts); the candidate's new items are green, moved ones yellow, the champion's items it dropped are listed in red.</p>
{{ panel_section }}{% endif %}

{% for split, t in metric_tables %}
<h2>Metrics ({{ split }}){% if sample_note %}: {{ sample_note }}{% endif %}</h2>
{{ table(t) }}
{% endfor %}
{% if slice_table %}<h2>Slices ({{ slice_split }})</h2>
{{ table(slice_table) }}{% endif %}

<h2>Data</h2>
{% if dataset %}<dl>{% for k, v in dataset %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>{% else %}<p>Not recorded.</p>{% endif %}
<h2>Code and environment</h2>
{% if code %}<dl>{% for k, v in code %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>{% else %}<p>Not recorded.</p>{% endif %}

{% if plots %}<h2>Plots</h2>
{% for p in plots %}<div class="plot"><h3>{{ p.name }}</h3><img alt="{{ p.name }}" src="{{ p.src }}"></div>
{% endfor %}{% endif %}
</body></html>
"""

_TABLE_MACRO = """{% macro table(t) %}<table class="metrics"><tr><th class="name">model</th>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in t.rows %}<tr{% if r.candidate %} class="candidate"{% endif %}><td class="name">{{ r.model }}</td>{% for cell in r.cells %}<td>{% if cell.best %}<b>{{ cell.text }}</b>{% else %}{{ cell.text }}{% endif %}</td>{% endfor %}</tr>
{% endfor %}</table>{% endmacro %}"""


def _dataset_items(ds: Mapping[str, Any]) -> list[tuple[str, str]]:
    items = [(k, str(ds[k])) for k in ("name", "digest") if ds.get(k) is not None]
    items += [(k, _fmt_count(ds[k])) for k in ("items", "users", "interactions") if ds.get(k) is not None]
    split = ds.get("split")
    if isinstance(split, Mapping) and split:
        items.append(("split", _split_text(split)))
    # anything else the pipeline adds still shows up, after the known keys
    items += [(k, str(v)) for k, v in ds.items() if k not in ("name", "digest", "items", "users", "interactions", "split")]
    return items


def _split_text(split: Mapping[str, Any]) -> str:
    parts = [f"{k} {_fmt_count(v)}" for k, v in split.items() if k != "strategy"]
    strategy = split.get("strategy")
    return (f"{strategy}: " if strategy else "") + " / ".join(parts)


def _check_change(c: Mapping[str, Any]) -> str:
    """The candidate's relative change in a check, with its bootstrap interval when it has one."""
    from recsys.evaluation.gate import change_text, within_noise

    values = [_num(c.get(k)) for k in ("candidate", "reference", "low", "high")]
    return change_text(c.get("kind"), *values, c.get("n")) or _DASH


def _panel_section(view: Mapping[str, Any] | None) -> Any:
    if not view:
        return ""
    from markupsafe import Markup

    from recsys.evaluation.panel import panel_html

    return Markup(panel_html(dict(view)))  # built from escaped pieces (recsys.evaluation.panel)


def _panel_css(view: Mapping[str, Any] | None) -> Any:
    if not view:
        return ""
    from markupsafe import Markup

    from recsys.evaluation.panel import PANEL_CSS

    return Markup(PANEL_CSS)


def _churn_line(churn: Mapping[str, Any] | None) -> str:
    if not churn:
        return ""
    from recsys.evaluation.churn import churn_line

    return churn_line(churn) + (" (a fixed sample of the catalog's items)" if churn.get("sampled") else "")


def _churn_rows(churn: Mapping[str, Any] | None) -> list[tuple[str, dict[str, str]]]:
    """Exposure per popularity bucket, then the categories that moved most."""
    if not churn:
        return []
    rows = [(f"popularity: {name}", v) for name, v in (churn.get("exposure_by_popularity") or {}).items()]
    rows += [(f"category: {name}", v) for name, v in (churn.get("exposure_by_category") or {}).items()]
    return [(name, {"candidate": f"{v['candidate']:.1%}", "champion": f"{v['champion']:.1%}"}) for name, v in rows]


def render_html(report: Mapping[str, Any], headline: Sequence[str] = HEADLINE_METRICS) -> str:
    """One self-contained HTML page (inline CSS, plots as base64 data URIs); all text is escaped."""
    from jinja2 import Environment

    env = Environment(autoescape=True, trim_blocks=False)
    tmpl = env.from_string(_TABLE_MACRO + _HTML)
    decision = report.get("decision") or {}
    checks = []
    for c in decision.get("checks") or []:
        passed = c.get("passed")
        checks.append(
            {
                "name": c.get("name") or c.get("kind", ""),
                "metric": c.get("metric", ""),
                "candidate": fmt_value(c.get("candidate")),
                "reference_model": c.get("reference_model") or _DASH,
                "reference": fmt_value(c.get("reference")),
                "change": _check_change(c),
                "rule": c.get("rule") or _DASH,
                "result": "pass" if passed is True else "fail" if passed is False else _DASH,
                "cls": "pass" if passed is True else "fail" if passed is False else "",
            }
        )
    splits = _metric_splits(report)
    metric_tables = [(s, _table(models, headline)) for s, models in splits.items() if models]
    sample = ((report.get("dataset") or {}).get("split") or {}).get("eval_sample")
    sample_note = f"a sample of at most {_fmt_count(sample)} users per stage (eval_max_users), full ranking" if sample else ""
    slices = list(report.get("slices") or [])
    slice_split = next(iter(splits), "")
    slice_table = _table(splits[slice_split], slices) if slices and slice_split and splits[slice_split] else None
    return tmpl.render(
        model_name=report.get("model_name", "model"),
        version=report.get("version", "?"),
        run_id=report.get("run_id") or _DASH,
        created=report.get("created"),
        status=decision_status(report),
        primary_metric=decision.get("primary_metric"),
        reference=decision.get("reference"),
        reasons=_reasons(report),
        evidence=report.get("evidence") or "",
        churn=report.get("churn"),
        panel_section=_panel_section(report.get("panel_view")),
        panel_css=_panel_css(report.get("panel_view")),
        churn_line=_churn_line(report.get("churn")),
        churn_rows=_churn_rows(report.get("churn")),
        checks=checks,
        metric_tables=metric_tables,
        sample_note=sample_note,
        slice_table=slice_table,
        slice_split=slice_split,
        dataset=_dataset_items(report.get("dataset") or {}),
        code=[(k, str(v)) for k, v in (report.get("code") or {}).items() if v is not None],
        plots=embed_plots(report.get("plots")),
    )


# ---------------------------------------------------------------------------------------------
# Markdown for the MLflow registry version description


def _md_cell(text: Any) -> str:
    # a pipe would split the cell and a newline would end the row
    return str(text).replace("|", "\\|").replace("\n", " ")


def _reference_for(models: Mapping[str, Mapping[str, Any]], metric: str) -> tuple[float | None, str | None]:
    """The value the candidate is compared with: the champion's, else the best baseline's."""
    if CHAMPION in models:
        return _num((models[CHAMPION] or {}).get(metric)), CHAMPION
    baselines = {m: _num((v or {}).get(metric)) for m, v in models.items() if m not in (CANDIDATE, CHAMPION)}
    best = best_value(list(baselines.values()), metric)
    if best is None:
        return None, None
    return best, next(m for m, v in baselines.items() if v == best)


def review_summary(report: Mapping[str, Any]) -> list[str]:
    """Three lines a reviewer can act on: the decision with the primary metric's change and interval,
    the other checks, and how much the shelves would change."""
    from recsys.evaluation.gate import NOT_APPLICABLE_TO_RUN, change_text, within_noise

    decision = report.get("decision") or {}
    checks = [dict(c, kind=c.get("kind") or c.get("name")) for c in decision.get("checks") or []]
    status = decision_status(report).upper()
    primary = next((c for c in checks if c.get("kind") == "primary"), None)
    if primary is not None:
        change = change_text("primary", primary.get("candidate"), primary.get("reference"), primary.get("low"), primary.get("high"), primary.get("n"))
        first = f"**{status}**: {primary.get('metric')} {fmt_value(primary.get('candidate'))} vs champion {fmt_value(primary.get('reference'))} ({change or _DASH}; rule {primary.get('rule')})"
    else:
        base = [c for c in checks if c.get("kind") == "baseline" and c.get("rule") != NOT_APPLICABLE_TO_RUN]
        beaten = [c for c in base if c.get("passed")]
        skipped = [str(c.get("reference_model")) for c in checks if c.get("kind") == "baseline" and c.get("rule") == NOT_APPLICABLE_TO_RUN]
        first = f"**{status}**: first model of this name, {len(beaten)} of {len(base)} baselines beaten on {decision.get('primary_metric', '?')}"
        first += f" ({', '.join(skipped)}: not applicable to this run)" if skipped else ""
        best = max(base, key=lambda c: c.get("reference") or 0.0, default=None)
        if best is not None and best.get("low") is not None and best.get("high") is not None:  # the strongest baseline's gain, and whether it is noise
            change = change_text("baseline", best.get("candidate"), best.get("reference"), best["low"], best["high"], best.get("n"))
            noise = ": within noise" if within_noise(best["low"], best["high"]) else ""
            first += f"; over the strongest, {best.get('reference_model')}: {change}{noise}" if change else ""
    failed = [c for c in checks if c.get("passed") is False and c.get("kind") != "primary"]
    others = [c for c in checks if c.get("kind") in ("guardrail", "churn", "evidence")]
    if failed:
        second = "Failed: " + "; ".join(f"{c.get('kind')} {c.get('metric')} {fmt_value(c.get('candidate'))} (rule {c.get('rule')})" for c in failed)
    elif others:
        second = f"Guardrails: all {len(others)} within their rules"
    else:
        second = "Guardrails: none apply to a first model"
    churn = report.get("churn")
    if churn:
        third = f"Shelves: {churn['churn']:.0%} of the top-{churn['k']} related-item slots change vs the champion, {churn['changed_entirely']:.0%} of the lists entirely"
    else:
        third = "Shelves: no champion to compare with"
    return [first, second, third]


def version_description(report: Mapping[str, Any], headline: Sequence[str] = HEADLINE_METRICS) -> str:
    """Markdown for the registry version: decision and reasons, headline metrics table, data and code lines.

    The table has one row per headline metric and one column per model (candidate, champion,
    then baselines), plus the candidate's relative change vs the champion, or vs the best
    baseline for that metric when there is no champion. Kept under MAX_DESCRIPTION_CHARS.
    """
    status = decision_status(report)
    reasons = _reasons(report)
    shown = [_short(r.replace("\n", " "), _MAX_REASON_CHARS) for r in reasons[:_MAX_REASONS]]
    if len(reasons) > _MAX_REASONS:
        shown.append(f"… and {len(reasons) - _MAX_REASONS} more")
    first = f"**{status.upper()}**"
    if shown:
        first += ": " + "; ".join(shown)
    summary = review_summary(report)
    lines = [f"{summary[0]}  ", f"{summary[1]}  ", summary[2], "", first, ""]  # the three lines first (Markdown line breaks)
    if report.get("evidence"):
        lines += [f"**Evidence:** {report['evidence']}", ""]
    if report.get("churn"):
        lines += [f"**Churn:** {_churn_line(report['churn'])}", ""]
    panel = report.get("panel")
    if panel:
        changed = f"; {panel['related_lists_changed']} of {panel['related_lists']} related-item lists change" if panel.get("related_lists") else ""
        lines += [f"**Side by side:** {panel['requests']} review-panel requests, champion and candidate, in the run's artifact `evaluation/panel.html` (and report.html){changed}", ""]

    models = _primary_models(report)
    if models:
        order = [m for m in (CANDIDATE, CHAMPION) if m in models] + [m for m in models if m not in (CANDIDATE, CHAMPION)]
        has_champion = CHAMPION in models
        delta_header = "Δ vs champion" if has_champion else "Δ vs best baseline"
        lines.append("| metric | " + " | ".join(_md_cell(m) for m in order) + f" | {delta_header} |")
        lines.append("|---|" + "---:|" * (len(order) + 1))
        for metric in headline:
            cells = [fmt_value((models[m] or {}).get(metric)) for m in order]
            ref, ref_model = _reference_for(models, metric)
            change = _fmt_change(relative_change((models.get(CANDIDATE) or {}).get(metric), ref))
            if not has_champion and ref_model and change != _DASH:
                change += f" ({_md_cell(ref_model)})"
            lines.append(f"| {_md_cell(metric)} | " + " | ".join(cells) + f" | {change} |")
        lines.append("")

    ds = report.get("dataset") or {}
    if ds:
        digest = str(ds.get("digest") or "")
        parts = [f"**Data:** {ds.get('name', '?')}" + (f" (digest `{digest[:12]}`)" if digest else "")]
        parts += [f"{_fmt_count(ds[k])} {k}" for k in ("items", "users", "interactions") if ds.get(k) is not None]
        line = ", ".join(parts)
        if isinstance(ds.get("split"), Mapping) and ds["split"]:
            line += f"; split {_split_text(ds['split'])}"
        lines += [line, ""]
    code = report.get("code") or {}
    if code or report.get("run_id"):
        parts = []
        if code.get("git_sha"):
            parts.append(f"git `{str(code['git_sha'])[:8]}`")
        labels = {"recsys_version": "recsys", "python": "Python", "torch": "torch", "device": "device"}
        parts += [f"{label} {code[k]}" for k, label in labels.items() if code.get(k)]
        if report.get("run_id"):
            parts.append(f"run `{report['run_id']}`")
        lines += ["**Code:** " + " · ".join(parts), ""]

    text = "\n".join(lines).strip() + "\n"
    if len(text) > MAX_DESCRIPTION_CHARS:
        note = "\n\n… (truncated; see report.html)\n"
        text = text[: MAX_DESCRIPTION_CHARS - len(note)].rsplit("\n", 1)[0] + note
    return text


# ---------------------------------------------------------------------------------------------
# files


def _json_default(o: Any) -> Any:
    # numpy scalars/arrays and paths slip into reports built from pipeline results
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def write_report(report: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write report.json and report.html into out_dir (both atomically); return (json, html) paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / "report.json", out_dir / "report.html"
    atomic.write_text(json_path, json.dumps(report, indent=2, sort_keys=False, default=_json_default) + "\n")
    atomic.write_text(html_path, render_html(report))
    return json_path, html_path
