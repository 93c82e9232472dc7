"""Experiment figures: the paper's Figures 5, 6 and 7 from a results dict and its summary.

Figure 5 is the predicted vs true intent distribution, Figure 6 the GAUC by
intent-diversity group, Figure 7 the AUC/GAUC against `n`. A figure whose data is absent
raises `PlotSkipped`, whose message says why; the report then skips it.

Plots are drawn on `matplotlib.figure.Figure` objects with the Agg canvas, never pyplot,
so no display is needed and no global backend is set.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from daian_tf.core.names import METRIC_LABELS
from daian_tf.experiments.summary import (JS_KEYS, RELA_IMPR_METRICS, SummaryRow,
                                          group_sort_key, main_base_row,
                                          main_num_levels, stat)

# Figure 5: (panel title, predicted key, true key, JS key) per user group.
INTENT_PANELS = (
    ("Specific-intent users", "mean_pred_specific", "mean_true_specific", "js_specific"),
    ("Broad-intent users", "mean_pred_broad", "mean_true_broad", "js_broad"),
)
FIGURE5_FILE = "figure5_intent_distribution.png"
FIGURE6_FILE = "figure6_gauc_by_diversity.png"
FIGURE7_FILE = "figure7_levels.png"
_DPI = 110


class PlotSkipped(Exception):
    """A figure cannot be drawn from the results; the message says why."""


def _intent_source(results: Mapping[str, Any], rows: Sequence[SummaryRow]
                   ) -> Tuple[str, int, List[Mapping[str, Any]]]:
    """(variant, num_levels, intent blocks) for Figure 5.

    The variant is `n_sweep_variant` if it reports intent, else the first one that
    does; its `num_levels` is the main one if reported there, else the one with the most
    seeds.
    """
    intent_rows = [r for r in rows if r.intent]
    if not intent_rows:
        raise PlotSkipped("no run reports an intent distribution")
    preferred = results.get("n_sweep_variant")
    variant = (preferred if any(r.variant == preferred for r in intent_rows)
               else intent_rows[0].variant)
    candidates = [r for r in intent_rows if r.variant == variant]
    main_n = main_num_levels(rows)
    row = next((r for r in candidates if r.num_levels == main_n),
               max(candidates, key=lambda r: r.intent[JS_KEYS[0]].count))
    needed = [k for _, pred, true, _ in INTENT_PANELS for k in (pred, true)]
    blocks = [r["intent"] for r in results["runs"]
              if r["variant"] == variant and int(r["num_levels"]) == row.num_levels
              and r.get("intent") and all(k in r["intent"] for k in needed)]
    if not blocks:
        raise PlotSkipped(f"the intent blocks of `{variant}` (n = {row.num_levels}) "
                          f"lack the per-level distributions {needed}")
    lengths = {len(b[k]) for b in blocks for k in needed}
    if len(lengths) != 1:
        raise PlotSkipped(f"the per-level intent distributions of `{variant}` "
                          f"(n = {row.num_levels}) have different lengths {lengths}")
    return variant, row.num_levels, blocks


def _seed_std(values: np.ndarray) -> Optional[np.ndarray]:
    """`(n,)` sample std over the seeds of `(S, n)` values; None for one seed."""
    return values.std(axis=0, ddof=1) if len(values) > 1 else None


def _figure5(results: Mapping[str, Any], rows: Sequence[SummaryRow]) -> Figure:
    """Mean predicted vs true intent distribution over the levels (paper Figure 5)."""
    variant, num_levels, blocks = _intent_source(results, rows)
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, len(INTENT_PANELS), sharey=True)
    width = 0.4
    for ax, (title, pred_key, true_key, js_key) in zip(axes, INTENT_PANELS):
        pred = np.asarray([b[pred_key] for b in blocks], dtype=np.float64)
        true = np.asarray([b[true_key] for b in blocks], dtype=np.float64)
        levels = np.arange(1, pred.shape[1] + 1)
        ax.bar(levels - width / 2, pred.mean(axis=0), width, yerr=_seed_std(pred),
               label="predicted p̂", capsize=2)
        ax.bar(levels + width / 2, true.mean(axis=0), width, yerr=_seed_std(true),
               label="true label", capsize=2)
        js = stat([b[js_key] for b in blocks if js_key in b])
        ax.set_title(f"{title} (JS = {js.mean:.3f} nats)")
        ax.set_xlabel("intent level (1 = least similar to the trigger)")
        ax.set_xticks(levels)
    axes[0].set_ylabel("mean probability")
    axes[0].legend()
    fig.suptitle(f"Intent distribution, {variant}, n = {num_levels}, "
                 f"mean over {len(blocks)} seed(s)")
    return fig


def _figure6(results: Mapping[str, Any], rows: Sequence[SummaryRow]) -> Figure:
    """GAUC per intent-diversity group and its lift over the base (paper Figure 6)."""
    main_n = main_num_levels(rows)
    base_row = main_base_row(rows)
    if base_row is not None and not base_row.gauc_by_diversity:
        base_row = None
    others = [r for r in rows if r.gauc_by_diversity and not r.is_base
              and r.num_levels == main_n]
    shown = ([base_row] if base_row else []) + others
    if not shown:
        raise PlotSkipped("no run reports GAUC by intent-diversity group")
    base = results.get("base_variant")
    groups = sorted({g for r in shown for g in r.gauc_by_diversity}, key=group_sort_key)
    x = np.arange(len(groups))
    fig = Figure(figsize=(11 if base_row and others else 6, 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, 2 if base_row and others else 1))

    def _means(row: SummaryRow) -> np.ndarray:
        return np.asarray([row.gauc_by_diversity[g].mean if g in row.gauc_by_diversity
                           else math.nan for g in groups])

    width = 0.8 / len(shown)
    for i, row in enumerate(shown):
        ax_x = x - 0.4 + width * (i + 0.5)
        axes[0].bar(ax_x, _means(row), width, label=row.variant)
    lowest = np.nanmin(np.concatenate([_means(r) for r in shown] + [[0.5]]))
    axes[0].set_ylim(bottom=max(0.0, lowest - 0.02))  # bars differ near 0.5–0.7
    axes[0].set_title(f"GAUC per group (n = {main_n})")
    axes[0].set_ylabel("GAUC")
    if len(axes) == 2:
        width = 0.8 / len(others)
        for i, row in enumerate(others):
            ax_x = x - 0.4 + width * (i + 0.5)
            axes[1].bar(ax_x, _means(row) - _means(base_row), width, label=row.variant)
        axes[1].axhline(0.0, color="black", linewidth=0.8)
        axes[1].set_title(f"GAUC lift over {base}")
        axes[1].set_ylabel(f"GAUC − GAUC({base})")
    for ax in axes:
        ax.set_xticks(x, [f"diversity {g}" for g in groups])
        ax.legend(fontsize="small")
    return fig


def _figure7(results: Mapping[str, Any], rows: Sequence[SummaryRow]) -> Figure:
    """AUC and GAUC, mean ± std over seeds, against `num_levels` (paper Figure 7)."""
    variant = results.get("n_sweep_variant")
    sweep = sorted((r for r in rows if r.variant == variant), key=lambda r: r.num_levels)
    if len(sweep) < 2:
        found = ", ".join(str(r.num_levels) for r in sweep) or "none"
        raise PlotSkipped(f"`{variant}` was run at fewer than two values of n "
                          f"(found: {found})")
    base_rows = [r for r in rows if r.is_base]
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, len(RELA_IMPR_METRICS))
    levels = [r.num_levels for r in sweep]
    for ax, metric in zip(axes, RELA_IMPR_METRICS):
        ax.errorbar(levels, [r.metrics[metric].mean for r in sweep],
                    yerr=[r.metrics[metric].std for r in sweep], marker="o",
                    capsize=3, label=variant)
        if len(base_rows) == 1:
            ax.axhline(base_rows[0].metrics[metric].mean, color="gray", linestyle="--",
                       label=f"{base_rows[0].variant} (n = {base_rows[0].num_levels})")
        ax.set_xlabel("number of intent levels n")
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.set_xticks(levels)
        ax.legend(fontsize="small")
    fig.suptitle(f"{variant}: AUC and GAUC against n (mean ± std over seeds)")
    return fig


# (file name, title, draw(results, rows) -> Figure, raising PlotSkipped) per figure.
FIGURES = (
    (FIGURE5_FILE, "Figure 5: predicted vs true intent distribution", _figure5),
    (FIGURE6_FILE, "Figure 6: GAUC by intent-diversity group", _figure6),
    (FIGURE7_FILE, "Figure 7: AUC and GAUC against n", _figure7),
)


def save_png(fig: Figure, path: str | Path) -> None:
    """Writes `fig` to `path` as a PNG through the Agg canvas."""
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=_DPI)
