"""The drift report as files: PNG plots, one self-contained HTML page, and drift.json.

matplotlib is imported inside the functions (Agg backend, a bare Figure, no pyplot), as in
recsys.evaluation.plots, so importing this module stays cheap for the DAG parser and the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from recsys import atomic
from recsys.monitoring.drift import NUMERIC_SIGNALS, DriftReport, ReferenceStats, Window, stream_rng
from recsys.evaluation.plots import new_figure, save_figure
from recsys.evaluation.report import embed_plots, fmt_value

_ALARM, _OK, _REF, _WIN = "#c92a2a", "#1f5fbf", "#868e96", "#d9480f"
_MAX_CATEGORIES = 12
_MAX_ECDF_POINTS = 20_000  # per side: more points than pixels would only slow the PNG down
_DASH = "–"


def _as_dict(report: DriftReport | Mapping[str, Any]) -> dict[str, Any]:
    return report.to_dict() if isinstance(report, DriftReport) else dict(report)


def _signal_overview(signals: list[dict[str, Any]], path: Path) -> Path:
    rows = [s for s in signals if s.get("value") is not None and s.get("threshold")]
    fig = new_figure((7.5, 1.2 + 0.42 * max(1, len(rows))))
    ax = fig.add_subplot()
    if rows:
        y = np.arange(len(rows))[::-1]
        ratios = [s["value"] / s["threshold"] for s in rows]
        ax.barh(y, ratios, color=[_ALARM if s.get("alarm") else _OK for s in rows], height=0.6)
        ax.set_yticks(y, [s["name"] for s in rows])
        for yi, r, s in zip(y, ratios, rows):
            ci = (s.get("extra") or {}).get("interval") or {}
            label, at = f" {s['value']:.3g} / {s['threshold']:.3g}", max(r, 0)
            if ci.get("low") is not None and ci.get("high") is not None:  # the recall drop decides on its interval
                lo, hi = ci["low"] / s["threshold"], ci["high"] / s["threshold"]
                ax.errorbar(r, yi, xerr=[[max(r - lo, 0.0)], [max(hi - r, 0.0)]], fmt="none", ecolor="#212529", capsize=3, lw=1)
                ratios = ratios + [lo, hi]
                label, at = f"{label} [{ci['low']:.3g}, {ci['high']:.3g}]", max(at, hi)
            ax.annotate(label, (at, yi), va="center", fontsize="small")
        ax.set_xlim(min(0.0, min(ratios) * 1.1), max(1.3, max(ratios) * 1.25))
    else:
        ax.text(0.5, 0.5, "no signal measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    ax.axvline(1.0, color="#495057", ls="--", lw=1)
    ax.set_xlabel("value / threshold (alarm above 1 — red: alarming; bars: the recall drop's interval)")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title("Drift signals")
    return save_figure(fig, path)


def _category_mix(reference: Mapping[str, float], window: Mapping[str, float], path: Path, title: str = "Top-level category mix") -> Path:
    r_tot, w_tot = sum(reference.values()) or 1, sum(window.values()) or 1
    keys = sorted(set(reference) | set(window), key=lambda k: -(reference.get(k, 0) / r_tot + window.get(k, 0) / w_tot))
    n_all, keys = len(keys), keys[:_MAX_CATEGORIES]
    fig = new_figure((7.5, 4.2))
    ax = fig.add_subplot()
    x = np.arange(len(keys))
    ax.bar(x - 0.2, [reference.get(k, 0) / r_tot for k in keys], width=0.4, color=_REF, label="reference")
    ax.bar(x + 0.2, [window.get(k, 0) / w_tot for k in keys], width=0.4, color=_WIN, label="window")
    ax.set_xticks(x, keys, rotation=30, ha="right")
    ax.set_ylabel("share of interactions")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title + (f" (top {len(keys)} of {n_all})" if n_all > len(keys) else ""))
    return save_figure(fig, path)


def _ecdfs(panels: list[tuple[str, np.ndarray, np.ndarray, dict[str, Any]]], path: Path) -> Path:
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig = new_figure((4.0 * cols + 0.5, 3.2 * rows))
    for i, (name, ref, win, sig) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for values, colour, label, stream in ((ref, _REF, "reference", 21), (win, _WIN, "window", 22)):
            v = np.asarray(values, dtype=np.float64)
            if len(v) > _MAX_ECDF_POINTS:
                v = stream_rng(0, stream).choice(v, _MAX_ECDF_POINTS, replace=False)
            v = np.sort(v)
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", color=colour, lw=1.5, label=label)
        both = np.concatenate([np.asarray(ref, dtype=np.float64), np.asarray(win, dtype=np.float64)])
        lo, hi = np.percentile(both, [1, 99])
        if lo > 0 and hi / lo > 20:  # counts and prices are skewed: a log axis shows the body
            ax.set_xscale("log")
        value = sig.get("value")
        title = name if value is None else f"{name}: KS {value:.3f}"
        ax.set_title(title, fontsize="medium", color=_ALARM if sig.get("alarm") else "black")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize="small", loc="lower right")
    fig.suptitle("ECDFs, reference vs window")
    return save_figure(fig, path)


def drift_plots(
    reference: ReferenceStats, window: Window, report: DriftReport | Mapping[str, Any], out_dir: str | Path
) -> dict[str, Path]:
    """PNGs into out_dir: "signals" (value/threshold per measured signal), "category_mix" (when both
    sides have categories), "distributions" (ECDFs of the measured numeric signals)."""
    out_dir = Path(out_dir)
    d = _as_dict(report)
    by_name = {s["name"]: s for s in d.get("signals") or []}
    plots = {"signals": _signal_overview(list(by_name.values()), out_dir / "drift_signals.png")}
    cat = by_name.get("category_mix") or {}
    extra = cat.get("extra") or {}
    if extra.get("reference_shares") and extra.get("window_shares"):  # the bins the signal compared
        level = extra.get("level", 1)
        title = "Top-level category mix" if level == 1 else f"Category mix (down to level {level})"
        plots["category_mix"] = _category_mix(extra["reference_shares"], extra["window_shares"], out_dir / "drift_category_mix.png", title)
    elif reference.category_mix and window.category_mix:
        plots["category_mix"] = _category_mix(reference.category_mix, window.category_mix, out_dir / "drift_category_mix.png")
    panels = [
        (n, getattr(reference, n), getattr(window, n), by_name[n])
        for n in NUMERIC_SIGNALS
        if n in by_name and by_name[n].get("value") is not None and len(getattr(reference, n)) and len(getattr(window, n))
    ]
    if panels:
        plots["distributions"] = _ecdfs(panels, out_dir / "drift_distributions.png")
    return plots


# ---------------------------------------------------------------------------------------------
# HTML

_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Drift report – {{ verdict }}</title>
<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #212529; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #dee2e6; padding-bottom: .2em; }
.meta { color: #6c757d; font-size: .9em; }
.badge { display: inline-block; padding: .15em .6em; border-radius: .4em; color: #fff; font-size: .75em; vertical-align: middle; letter-spacing: .05em; }
.badge-drift { background: #c92a2a; } .badge-nodrift { background: #2b8a3e; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #dee2e6; padding: .3em .7em; text-align: right; }
th { background: #f1f3f5; } td.name, th.name { text-align: left; }
tr.alarm { background: #fff5f5; } tr.unmeasured { color: #868e96; }
td.alarm { color: #c92a2a; font-weight: bold; } td.ok { color: #2b8a3e; }
.plot img { max-width: 100%; border: 1px solid #dee2e6; margin: .5em 0; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; } dt { font-weight: bold; } dd { margin: 0; font-family: monospace; }
</style></head><body>
<h1>Drift report <span class="badge {{ badge_class }}">{{ verdict }}</span></h1>
<p class="meta">{{ n_alarms }} of {{ n_measured }} measured signal(s) alarming{% if reference_name %} · reference {{ reference_name }}{% endif %}</p>

<h2>Reasons</h2>
{% if reasons %}<ul class="reasons">{% for r in reasons %}<li>{{ r }}</li>{% endfor %}</ul>{% else %}<p>No signal alarmed.</p>{% endif %}

<h2>Signals</h2>
<table class="signals"><tr><th class="name">signal</th><th class="name">kind</th><th>value</th><th>threshold</th><th>alarm</th><th class="name">detail</th></tr>
{% for s in signals %}<tr class="{{ s.row_class }}"><td class="name">{{ s.name }}</td><td class="name">{{ s.kind }}</td><td>{{ s.value }}</td><td>{{ s.threshold }}</td><td class="{{ s.alarm_class }}">{{ s.alarm }}</td><td class="name">{{ s.detail }}</td></tr>
{% endfor %}</table>

{% if recall %}<h2>Champion Recall@{{ recall_k }}</h2>
<dl class="recall">{% for k, v in recall %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>{% endif %}
{% if category %}<h2>Category mix</h2>
<dl class="category">{% for k, v in category %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>{% endif %}

<h2>Window</h2>
{% if window %}<dl>{% for k, v in window %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>{% else %}<p>Not recorded.</p>{% endif %}
<h2>Reference</h2>
{% if reference %}<dl>{% for k, v in reference %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>{% else %}<p>Not recorded.</p>{% endif %}
<h2>Thresholds</h2>
{% if config %}<dl>{% for k, v in config %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>{% else %}<p>Not recorded.</p>{% endif %}

{% if plots %}<h2>Plots</h2>
{% for p in plots %}<div class="plot"><h3>{{ p.name }}</h3><img alt="{{ p.name }}" src="{{ p.src }}"></div>
{% endfor %}{% endif %}
</body></html>
"""


def _fmt_threshold(s: Mapping[str, Any]) -> str:
    t = s.get("threshold")
    return _DASH if t is None else f"{t:g}"


def _pairs(d: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    return [(str(k), _DASH if v is None else f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)) for k, v in (d or {}).items()]


def _pct(x: Any) -> str:
    return _DASH if x is None else f"{x * 100:.1f}%"


def _recall_rows(s: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The recall signal's evidence: point drop, interval, users on each side, and the verdict."""
    e = (s or {}).get("extra") or {}
    if not e:
        return []
    ci = e.get("interval") or {}
    rows = [
        ("status", str(e.get("status") or ("alarm" if (s or {}).get("alarm") else "no alarm"))),
        (f"evaluation Recall@{e.get('k', 10)}", fmt_value(e.get("eval_recall"))),
        (f"window Recall@{e.get('k', 10)}", fmt_value(e.get("window_recall"))),
        ("relative drop (point)", _pct(e.get("point_drop", (s or {}).get("value")))),
    ]
    if ci:
        rows.append((f"{ci.get('confidence', 0):.0%} interval of the drop", f"[{_pct(ci.get('low'))}, {_pct(ci.get('high'))}] ({ci.get('samples', 0):,} bootstrap resamples)"))
    rows.append(("alarm when", f"the interval's lower end > {_pct((s or {}).get('threshold'))}"))
    if "n_reference_users" in e:
        rows.append(("evaluable users", f"{e['n_reference_users']:,} at evaluation, {e.get('n_window_users', 0):,} in the window (at least {e.get('min_users', 0):,} each)"))
    return rows


def _category_rows(s: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    e = (s or {}).get("extra") or {}
    if "level" not in e:
        return []
    rows = [("compared down to level", str(e["level"])), ("how", str(e.get("mode", "")))]
    if e.get("split"):
        rows.append(("split into sub-categories", ", ".join(map(str, e["split"]))))
    if e.get("top_level_psi") is not None:
        rows.append(("PSI at the top level alone", f"{e['top_level_psi']:.3f}"))
    return rows


def render_html(report_dict: DriftReport | Mapping[str, Any], plots: Mapping[str, Any] | None = None) -> str:
    """One self-contained page (inline CSS, plots as base64 data URIs); every text is escaped.

    plots: name -> PNG path; None = the report's own "plots" entry, if any.
    """
    from jinja2 import Environment

    d = _as_dict(report_dict)
    drift = bool(d.get("drift"))
    signals = []
    for s in d.get("signals") or []:
        measured = s.get("value") is not None
        signals.append(
            {
                "name": s.get("name", ""),
                "kind": s.get("kind", ""),
                "value": fmt_value(s.get("value")),
                "threshold": _fmt_threshold(s),
                "alarm": "ALARM" if s.get("alarm") else ("no" if measured else ((s.get("extra") or {}).get("status") or _DASH)),
                "alarm_class": "alarm" if s.get("alarm") else ("ok" if measured else ""),
                "row_class": "alarm" if s.get("alarm") else ("" if measured else "unmeasured"),
                "detail": s.get("detail", ""),
            }
        )
    ref = d.get("reference") or {}
    recall_signal = next((s for s in d.get("signals") or [] if s.get("name") == "champion_recall"), None)
    env = Environment(autoescape=True)
    return env.from_string(_HTML).render(
        verdict="DRIFT" if drift else "NO DRIFT",
        badge_class="badge-drift" if drift else "badge-nodrift",
        n_alarms=sum(1 for s in d.get("signals") or [] if s.get("alarm")),
        n_measured=sum(1 for s in d.get("signals") or [] if s.get("value") is not None),
        reference_name=" ".join(str(x) for x in (ref.get("dataset"), (ref.get("digest") or "")[:12]) if x),
        reasons=[str(r) for r in d.get("reasons") or []],
        signals=signals,
        recall=_recall_rows(recall_signal),
        recall_k=((recall_signal or {}).get("extra") or {}).get("k", 10),
        category=_category_rows(next((s for s in d.get("signals") or [] if s.get("name") == "category_mix"), None)),
        window=_pairs(d.get("window")),
        reference=_pairs(ref),
        config=_pairs(d.get("config")),
        plots=embed_plots(plots if plots is not None else d.get("plots")),
    )


def write_drift_report(
    report: DriftReport | Mapping[str, Any], out_dir: str | Path, plots: Mapping[str, Path] | None = None
) -> tuple[Path, Path]:
    """Write drift.json and drift.html into out_dir (each atomically); return (json, html) paths.

    The plots' paths are recorded in drift.json under "plots"; the HTML embeds the images.
    """
    out_dir = Path(out_dir)
    d = _as_dict(report)
    if plots:
        d["plots"] = {str(k): str(v) for k, v in plots.items()}
    json_path, html_path = out_dir / "drift.json", out_dir / "drift.html"
    atomic.write_bytes(json_path, (json.dumps(d, indent=2, allow_nan=False) + "\n").encode("utf-8"), mkdir=True)
    atomic.write_bytes(html_path, render_html(d, plots).encode("utf-8"), mkdir=True)
    return json_path, html_path
