"""Report figures: each function writes one PNG and returns its path.

matplotlib is imported inside the functions (Agg backend, no display needed) so that importing
this module stays cheap for the DAG parser and the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110
# strong colours for the models a decision is about, muted greys/pastels for the baselines
_STRONG = ("#1f5fbf", "#d9480f", "#2b8a3e", "#862e9c")
_MUTED = ("#adb5bd", "#a5b4c8", "#c9b79c", "#b5c9a5", "#c8a5b4", "#9cc0c9", "#ced4da")


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A headless matplotlib Figure (shared by every report's plots)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: workers and CI have no display
    from matplotlib.figure import Figure

    # a bare Figure (not pyplot) is never registered globally, so nothing leaks between calls
    return Figure(figsize=figsize, layout="constrained")


def save_figure(fig: Figure, path: Path) -> Path:
    """Write `fig` as a PNG at `path` (folders created) and free it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    fig.clear()
    return path


def learning_curve(
    losses: dict[int, float],
    val_history: dict[int, float],
    val_metric: str,
    path: Path,
    best_step: int | None = None,
) -> Path:
    """Training loss by step (left axis) and the validation metric by step (right axis).

    A dashed vertical line marks best_step. Either series may be empty (fine-tuning skipped
    leaves only the step-0 validation point).
    """
    fig = new_figure((7.5, 4.2))
    ax = fig.add_subplot()
    handles = []
    if losses:
        steps = sorted(losses)
        handles += ax.plot(steps, [losses[s] for s in steps], color=_STRONG[0], lw=1.5, label="training loss")
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers, even for a lone step 0
    if losses:
        ax.set_ylabel("training loss", color=_STRONG[0])
    else:
        ax.set_yticks([])  # an empty loss axis would show a meaningless 0..1 scale
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    if val_history:
        steps = sorted(val_history)
        handles += ax2.plot(
            steps, [val_history[s] for s in steps], color=_STRONG[1], marker="o", lw=1.2, label=f"validation {val_metric}"
        )
    ax2.set_ylabel(f"validation {val_metric}", color=_STRONG[1])
    if best_step is not None:
        handles.append(ax.axvline(best_step, color="#495057", ls="--", lw=1, label=f"best step {best_step}"))
    steps_all = [*losses, *val_history, *([best_step] if best_step is not None else [])]
    if steps_all and max(steps_all) - min(steps_all) < 2:
        ax.set_xlim(min(steps_all) - 1, max(steps_all) + 1)  # a lone point would get a ±0.05 axis
    if not losses and not val_history:
        ax.text(0.5, 0.5, "no training or validation data", ha="center", va="center", transform=ax.transAxes)
    if handles:
        ax.legend(handles=handles, loc="best", fontsize="small")
    ax.set_title("Learning curve" if losses else f"Learning curve (no training steps; {val_metric} only)")
    return save_figure(fig, path)


def model_comparison(
    metrics: dict[str, dict[str, float]],
    metric_names: list[str],
    path: Path,
    highlight: tuple[str, ...] = ("candidate", "champion"),
) -> Path:
    """Grouped bars: one group per metric, one bar per model (dict order), labelled with 3 decimals.

    Highlighted models get strong colours, baselines muted ones; a metric a model lacks has no bar.
    """
    models = list(metrics)
    n = max(len(models), 1)
    fig = new_figure((max(6.0, 1.0 + len(metric_names) * (0.5 + 0.35 * n)), 4.5))
    ax = fig.add_subplot()
    width = 0.8 / n
    x = np.arange(len(metric_names))
    strong, muted = iter(_STRONG * 4), iter(_MUTED * 4)
    for i, model in enumerate(models):
        is_hl = model in highlight
        colour = next(strong) if is_hl else next(muted)
        pos = [j for j, m in enumerate(metric_names) if metrics[model].get(m) is not None]
        vals = [float(metrics[model][metric_names[j]]) for j in pos]
        bars = ax.bar(
            x[np.asarray(pos, dtype=np.int64)] + (i - (n - 1) / 2) * width,
            vals,
            width,
            label=model,
            color=colour,
            edgecolor="black" if is_hl else "none",
            linewidth=0.6,
            zorder=3 if is_hl else 2,
        )
        if vals:
            ax.bar_label(bars, fmt="%.3f", fontsize=6.5, rotation=90, padding=2)
    ax.set_xticks(x, metric_names, rotation=20, ha="right")
    ax.set_ylabel("value")
    ax.margins(y=0.25)  # room for the rotated value labels
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.set_title("Model comparison (test split)")
    if models:
        # outside the axes: inside, it would cover the tallest bars' labels
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, path)


def popularity_bias(
    exposure: dict[str, Sequence[float] | np.ndarray],
    path: Path,
    catalog_share_line: bool = True,
) -> Path:
    """Share of recommendations per item-popularity bin (1 = most popular), one line per model.

    A dashed line at 1/n marks uniform exposure; lines above it on the left mean popularity bias.
    """
    fig = new_figure((7.5, 4.2))
    ax = fig.add_subplot()
    strong, muted = iter(_STRONG * 4), iter(_MUTED * 4)
    n_bins = 0
    for model, shares in exposure.items():
        y = np.asarray(shares, dtype=np.float64)
        if not len(y):
            continue
        n_bins = max(n_bins, len(y))
        colour = next(strong) if model in ("candidate", "champion") else next(muted)
        ax.plot(np.arange(1, len(y) + 1), y, marker="o", ms=4, lw=1.6, color=colour, label=model)
    if catalog_share_line and n_bins:
        ax.axhline(1.0 / n_bins, color="#495057", ls="--", lw=1, label=f"uniform (1/{n_bins})")
    if n_bins:
        ax.set_xticks(np.arange(1, n_bins + 1))
        ax.legend(fontsize="small")
    ax.set_xlabel("item popularity bin (1 = most popular)")
    ax.set_ylabel("share of recommendations")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title("Exposure by item popularity (long tail on the right)")
    return save_figure(fig, path)


def segment_comparison(segments: dict[str, dict[str, dict[str, Any]]], metric: str, path: Path) -> Path:
    """Candidate vs champion per segment (one panel per view: category, popularity), horizontal bars with
    the number of test targets, so a reviewer sees who wins and who loses."""
    views = [(view, rows) for view, rows in segments.items() if rows]
    height = max(3.0, 0.32 * sum(len(rows) for _, rows in views) + 1.2 * len(views))
    fig = new_figure((8.0, height))
    grid = fig.add_gridspec(len(views) or 1, 1, height_ratios=[max(len(rows), 1) for _, rows in views] or [1])
    for n, (view, rows) in enumerate(views):
        ax = fig.add_subplot(grid[n])
        names = list(rows)
        y = np.arange(len(names))
        for offset, model, colour in ((-0.2, "candidate", _STRONG[0]), (0.2, "champion", _STRONG[1])):
            ax.barh(y + offset, [rows[s].get(model, 0.0) for s in names], height=0.4, color=colour, label=model)
        ax.set_yticks(y, [f"{s} ({rows[s]['targets']})" for s in names], fontsize="small")
        ax.invert_yaxis()
        ax.set_xlabel(f"{metric} per segment (test targets in brackets)")
        ax.set_title(f"by {view}", fontsize="medium", loc="left")
        ax.grid(axis="x", alpha=0.3)
        if n == 0:
            ax.legend(fontsize="small", loc="lower right")
    fig.suptitle("Who wins and who loses: candidate vs champion")
    return save_figure(fig, path)
