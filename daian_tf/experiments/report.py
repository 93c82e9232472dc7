"""Experiment report: a results dict → markdown tables, `results.json` and PNG figures.

The results dict is what `daian experiment` produces (JSON-able):

    {"config": {...}, "dataset": {"train_samples", "eval_samples", "raw_dir", ...},
     "runs": [{"variant": str, "seed": int, "num_levels": int,
               "metrics": {"auc", "gauc", "logloss"},
               "gauc_by_diversity": {"0": float, "1": float, "2+": float, ...},  # optional
               "intent": {"js_specific", "js_broad", "js_all",                  # optional
                          "mean_pred_specific", "mean_true_specific",
                          "mean_pred_broad", "mean_true_broad"},  # (n,) lists
               "train_seconds": float}, ...],
     "reference_rows": [{"name": "oracle" | "popularity", "metrics": {...}}, ...],
     "base_variant": "din", "n_sweep_variant": "daian"}

Runs are grouped by `(variant, num_levels)` and summarised over seeds (mean and sample
standard deviation, ddof = 1, 0 for a single seed). RelaImpr (DAIAN.md §8) compares a
group's mean AUC/GAUC with the base variant's mean at the same `num_levels` (or at the
base's only `num_levels`); the paired RelaImpr averages the per-seed RelaImpr against the
base run with the same seed. The figures are the paper's Figure 5 (predicted vs true
intent distribution), Figure 6 (GAUC by intent-diversity group) and Figure 7 (AUC/GAUC
against `n`); a figure whose data is absent is skipped, and the report says why.

Plots are drawn on `matplotlib.figure.Figure` objects with the Agg canvas, never pyplot,
so no display is needed and no global backend is set.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from daian_tf.errors import DaianInputError
from daian_tf.metrics.ranking import rela_impr

METRICS = ("auc", "gauc", "logloss")
RELA_IMPR_METRICS = ("auc", "gauc")
JS_KEYS = ("js_specific", "js_broad", "js_all")
# Figure 5: (panel title, predicted key, true key, JS key) per user group.
INTENT_PANELS = (
    ("Specific-intent users", "mean_pred_specific", "mean_true_specific", "js_specific"),
    ("Broad-intent users", "mean_pred_broad", "mean_true_broad", "js_broad"),
)
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
FIGURE5_FILE = "figure5_intent_distribution.png"
FIGURE6_FILE = "figure6_gauc_by_diversity.png"
FIGURE7_FILE = "figure7_levels.png"
_METRIC_LABEL = {"auc": "AUC", "gauc": "GAUC", "logloss": "logloss"}
_DPI = 110


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof = 1; 0 for one value) of `count` values.

    `mean` and `std` are NaN when `count` is 0.
    """

    mean: float
    std: float
    count: int


@dataclass(frozen=True)
class SummaryRow:
    """One `(variant, num_levels)` group of runs, summarised over its seeds.

    Attributes:
        variant: the variant name.
        num_levels: `n`, the number of intent levels.
        seeds: the seeds of the group's runs, sorted.
        metrics: {"auc" | "gauc" | "logloss": Stat} over seeds.
        is_base: whether this is the base variant (RelaImpr is then not reported).
        base_num_levels: the `num_levels` of the base group compared against, or None
            when there is none (no base runs, or none at a matching `n`).
        rela_impr: {"auc" | "gauc": RelaImpr in % of the means, or None when there is
            no base group or the base's mean is not above 0.5}.
        paired_rela_impr: {"auc" | "gauc": Stat of the per-seed RelaImpr in % against
            the base run with the same seed, or None when no seed pairs up}.
        intent: {"js_specific" | "js_broad" | "js_all": Stat} over the runs that report
            an intent block; empty when none does.
        gauc_by_diversity: {group: Stat of the GAUC over the runs reporting it}; empty
            when no run does.
        train_seconds: Stat of the training time in seconds.
    """

    variant: str
    num_levels: int
    seeds: Tuple[int, ...]
    metrics: Mapping[str, Stat]
    is_base: bool
    base_num_levels: Optional[int]
    rela_impr: Mapping[str, Optional[float]]
    paired_rela_impr: Mapping[str, Optional[Stat]]
    intent: Mapping[str, Stat]
    gauc_by_diversity: Mapping[str, Stat]
    train_seconds: Stat


class _PlotSkipped(Exception):
    """A figure cannot be drawn from the results; the message says why."""


# --------------------------------------------------------------------------- helpers


def _stat(values: Sequence[float]) -> Stat:
    a = np.asarray([_as_float(v) for v in values], dtype=np.float64)
    if not a.size:
        return Stat(math.nan, math.nan, 0)
    std = float(np.std(a, ddof=1)) if a.size > 1 else 0.0
    return Stat(float(np.mean(a)), std, int(a.size))


def _as_float(value: Any) -> float:
    """A metric value as float; None (a NaN that went through strict JSON) → NaN."""
    return math.nan if value is None else float(value)


def _safe_rela_impr(model: float, base: float) -> Optional[float]:
    """RelaImpr in %, or None where it is undefined (base not above 0.5, or NaN)."""
    if not (base > 0.5 and math.isfinite(model)):
        return None
    return rela_impr(model, base)


def _group_sort_key(group: str) -> Tuple[float, str]:
    """Orders diversity groups "0" < "1" < "2" < "2+" < "10" (leading integer first)."""
    match = re.match(r"\d+", group)
    return (int(match.group()) if match else math.inf, group)


def _check_runs(runs: Sequence[Mapping[str, Any]]) -> None:
    """Raises DaianInputError naming the first run that lacks a required field."""
    seen = set()
    for i, run in enumerate(runs):
        for key in ("variant", "seed", "num_levels", "metrics"):
            if key not in run:
                raise DaianInputError(f"results['runs'][{i}] has no {key!r} "
                                      f"(keys: {sorted(run)})")
        missing = [m for m in METRICS if m not in run["metrics"]]
        if missing:
            raise DaianInputError(f"results['runs'][{i}] (variant {run['variant']!r}, "
                                  f"seed {run['seed']}) has no metrics {missing}")
        key = (run["variant"], int(run["num_levels"]), int(run["seed"]))
        if key in seen:
            raise DaianInputError(f"results['runs'] holds two runs of variant {key[0]!r} "
                                  f"with num_levels {key[1]} and seed {key[2]}")
        seen.add(key)


def _group_runs(results: Mapping[str, Any]
                ) -> Dict[Tuple[str, int], List[Mapping[str, Any]]]:
    """{(variant, num_levels): runs sorted by seed}: base first, then in run order."""
    runs = results.get("runs") or []
    _check_runs(runs)
    groups: Dict[Tuple[str, int], List[Mapping[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["variant"], int(run["num_levels"])), []).append(run)
    base = results.get("base_variant")
    order = sorted(groups, key=lambda k: (k[0] != base, _first_index(runs, k[0]), k[1]))
    return {k: sorted(groups[k], key=lambda r: int(r["seed"])) for k in order}


def _first_index(runs: Sequence[Mapping[str, Any]], variant: str) -> int:
    return next(i for i, r in enumerate(runs) if r["variant"] == variant)


def _base_levels_for(num_levels: int, base_levels: Sequence[int]) -> Optional[int]:
    """The base group's `num_levels` to compare a group at `num_levels` against."""
    if num_levels in base_levels:
        return num_levels
    return base_levels[0] if len(base_levels) == 1 else None


def _main_num_levels(rows: Sequence[SummaryRow]) -> Optional[int]:
    """The `num_levels` most runs use (the default `n`; sweeps add a few others)."""
    counts: Counter = Counter()
    for row in rows:
        counts[row.num_levels] += len(row.seeds)
    if not counts:
        return None
    return min(counts, key=lambda n: (-counts[n], n))


def _base_row(rows: Sequence[SummaryRow],
              num_levels: Optional[int]) -> Optional[SummaryRow]:
    """The base variant's row at `num_levels`, or None."""
    return next((r for r in rows if r.is_base and r.num_levels == num_levels), None)


def _main_base_row(rows: Sequence[SummaryRow]) -> Optional[SummaryRow]:
    """The base row that rows at the main `num_levels` are compared against."""
    main_n = _main_num_levels(rows)
    base_levels = sorted(r.num_levels for r in rows if r.is_base)
    if main_n is None:
        return None
    return _base_row(rows, _base_levels_for(main_n, base_levels))


# --------------------------------------------------------------------------- summary


def _rela_impr_of_means(stat: Stat, base_runs: Sequence[Mapping[str, Any]],
                        metric: str) -> Optional[float]:
    """RelaImpr in % of a group's mean `metric` against the base runs' mean."""
    if not base_runs:
        return None
    return _safe_rela_impr(stat.mean, _stat([r["metrics"][metric]
                                              for r in base_runs]).mean)


def _paired_rela_impr(runs: Sequence[Mapping[str, Any]],
                      base_runs: Sequence[Mapping[str, Any]],
                      metric: str) -> Optional[Stat]:
    """Stat of the per-seed RelaImpr in % against the base run with the same seed."""
    base_by_seed = {int(r["seed"]): _as_float(r["metrics"][metric]) for r in base_runs}
    per_seed = [_safe_rela_impr(_as_float(r["metrics"][metric]),
                                base_by_seed[int(r["seed"])])
                for r in runs if int(r["seed"]) in base_by_seed]
    defined = [x for x in per_seed if x is not None]
    return _stat(defined) if defined else None


def summarize(results: Mapping[str, Any]) -> List[SummaryRow]:
    """Summarises the runs per `(variant, num_levels)` over seeds.

    Args:
        results: the experiment results dict (module docstring).

    Returns:
        One `SummaryRow` per `(variant, num_levels)`: the base variant's rows first,
        then the other variants in the order of their first run, each by `num_levels`.

    Raises:
        DaianInputError: a run lacks `variant`, `seed`, `num_levels` or a metric, or
            two runs share variant, `num_levels` and seed.
    """
    groups = _group_runs(results)
    base = results.get("base_variant")
    base_levels = sorted(n for v, n in groups if v == base)
    rows = []
    for (variant, num_levels), runs in groups.items():
        is_base = variant == base
        base_n = None if is_base else _base_levels_for(num_levels, base_levels)
        base_runs = groups[(base, base_n)] if base_n is not None else []
        metrics = {m: _stat([r["metrics"][m] for r in runs]) for m in METRICS}
        rela = {m: _rela_impr_of_means(metrics[m], base_runs, m)
                for m in RELA_IMPR_METRICS}
        paired = {m: _paired_rela_impr(runs, base_runs, m) for m in RELA_IMPR_METRICS}
        with_intent = [r["intent"] for r in runs if r.get("intent")]
        intent = ({k: _stat([i[k] for i in with_intent if k in i]) for k in JS_KEYS}
                  if with_intent else {})
        by_group: Dict[str, List[float]] = {}
        for r in runs:
            for group, value in (r.get("gauc_by_diversity") or {}).items():
                by_group.setdefault(str(group), []).append(value)
        rows.append(SummaryRow(
            variant=variant, num_levels=num_levels,
            seeds=tuple(int(r["seed"]) for r in runs), metrics=metrics,
            is_base=is_base, base_num_levels=base_n, rela_impr=rela,
            paired_rela_impr=paired, intent=intent,
            gauc_by_diversity={g: _stat(by_group[g])
                               for g in sorted(by_group, key=_group_sort_key)},
            train_seconds=_stat([r["train_seconds"] for r in runs
                                 if r.get("train_seconds") is not None])))
    return rows


# --------------------------------------------------------------------------- markdown


def _fmt_stat(stat: Optional[Stat], digits: int = 4) -> str:
    if stat is None or stat.count == 0:
        return "—"
    return f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def _fmt_pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:+.2f}%"


def _fmt_rela(row: SummaryRow, metric: str) -> str:
    if row.is_base:
        return "base"
    text = _fmt_pct(row.rela_impr[metric])
    paired = row.paired_rela_impr[metric]
    if paired is not None:
        text += f" (paired {paired.mean:+.2f} ± {paired.std:.2f}%)"
    return text


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines


def _ranking_section(results: Mapping[str, Any], rows: Sequence[SummaryRow]
                     ) -> List[str]:
    base = results.get("base_variant")
    lines = ["## Ranking metrics", ""]
    if not rows:
        return lines + ["No runs in the results.", ""]
    body = [[r.variant, str(r.num_levels), str(len(r.seeds))]
            + [_fmt_stat(r.metrics[m]) for m in METRICS]
            + [_fmt_rela(r, m) for m in RELA_IMPR_METRICS] for r in rows]
    ref_base = _main_base_row(rows)
    references = results.get("reference_rows") or []
    for ref in references:
        values = {m: _as_float(ref.get("metrics", {}).get(m)) for m in METRICS}
        rela = [_safe_rela_impr(values[m], ref_base.metrics[m].mean)
                if ref_base is not None else None for m in RELA_IMPR_METRICS]
        body.append([f"{ref.get('name', '?')} (reference)", "—", "—"]
                    + [f"{values[m]:.4f}" for m in METRICS]
                    + [_fmt_pct(x) for x in rela])
    header = ["model", "n", "seeds", "AUC mean ± std", "GAUC mean ± std",
              "logloss mean ± std", "RelaImpr AUC", "RelaImpr GAUC"]
    lines += _table(header, body)
    lines += ["", "Mean ± sample standard deviation over seeds. RelaImpr = "
              "((metric − 0.5) / (metric_base − 0.5) − 1) × 100% against "
              f"`{base}` at the same n (or at its only n), from the means over seeds; "
              "*paired* is the mean ± std over seeds of the per-seed RelaImpr against "
              "the base run with the same seed."]
    if references and ref_base is not None:
        lines[-1] += (" Reference rows are single evaluations, compared with "
                      f"`{base}` at n = {ref_base.num_levels}.")
    if not any(r.is_base for r in rows):
        lines += ["", f"The base variant `{base}` has no runs: RelaImpr is not computed."]
    total = sum(r.train_seconds.mean * r.train_seconds.count for r in rows
                if r.train_seconds.count)
    lines += ["", f"Training time: {total:.0f} s over "
              f"{sum(len(r.seeds) for r in rows)} runs.", ""]
    return lines


def _intent_section(rows: Sequence[SummaryRow]) -> List[str]:
    lines = ["## Intent precision (JS divergence)", ""]
    intent_rows = [r for r in rows if r.intent]
    if not intent_rows:
        return lines + ["Skipped: no run reports an intent distribution.", ""]
    lines += ["Jensen–Shannon divergence between the predicted intent distribution p̂ "
              "and the intent label, per request, averaged; natural log (nats, at most "
              "ln 2 ≈ 0.693), lower is better; mean ± std over seeds.", ""]
    body = [[r.variant, str(r.num_levels), str(r.intent[JS_KEYS[0]].count)]
            + [_fmt_stat(r.intent[k]) for k in JS_KEYS] for r in intent_rows]
    lines += _table(["model", "n", "seeds", "JS specific", "JS broad", "JS all"], body)
    return lines + [""]


def _diversity_section(results: Mapping[str, Any], rows: Sequence[SummaryRow]
                       ) -> List[str]:
    lines = ["## GAUC by intent-diversity group", ""]
    group_rows = [r for r in rows if r.gauc_by_diversity]
    if not group_rows:
        return lines + ["Skipped: no run reports GAUC by intent-diversity group.", ""]
    base = results.get("base_variant")
    groups = sorted({g for r in group_rows for g in r.gauc_by_diversity},
                    key=_group_sort_key)
    body = []
    for row in group_rows:
        base_row = _base_row(rows, row.base_num_levels)
        cells = [row.variant, str(row.num_levels)]
        for g in groups:
            stat = row.gauc_by_diversity.get(g)
            if stat is None:
                cells.append("—")
                continue
            cell = f"{stat.mean:.4f}"
            base_stat = base_row.gauc_by_diversity.get(g) if base_row else None
            if base_stat is not None:
                cell += f" ({stat.mean - base_stat.mean:+.4f})"
            cells.append(cell)
        body.append(cells)
    lines += ["GAUC within each group of requests by intent diversity (distinct leaf "
              "categories among a request's clicks that differ from the trigger's), mean "
              f"over seeds; in parentheses the difference from `{base}`.", ""]
    lines += _table(["model", "n"] + [f"diversity {g}" for g in groups], body)
    return lines + [""]


def _markdown(results: Mapping[str, Any], rows: Sequence[SummaryRow]) -> str:
    lines = (_ranking_section(results, rows) + _intent_section(rows)
             + _diversity_section(results, rows))
    return "\n".join(lines)


def markdown_table(results: Mapping[str, Any]) -> str:
    """The report's tables in markdown.

    Sections: ranking metrics per `(variant, n)` (mean ± std, RelaImpr against the base,
    then the reference rows such as the oracle and the popularity baseline), intent
    precision (JS divergence) for the variants that report it, and GAUC by
    intent-diversity group. A section whose data is absent says it is skipped.

    Args:
        results: the experiment results dict (module docstring).

    Returns:
        Markdown text.
    """
    return _markdown(results, summarize(results))


# --------------------------------------------------------------------------- figures


def _intent_source(results: Mapping[str, Any], rows: Sequence[SummaryRow]
                   ) -> Tuple[str, int, List[Mapping[str, Any]]]:
    """(variant, num_levels, intent blocks) for Figure 5.

    The variant is `n_sweep_variant` if it reports intent, else the first one that
    does; its `num_levels` is the main one if reported there, else the one with the most
    seeds.
    """
    intent_rows = [r for r in rows if r.intent]
    if not intent_rows:
        raise _PlotSkipped("no run reports an intent distribution")
    preferred = results.get("n_sweep_variant")
    variant = (preferred if any(r.variant == preferred for r in intent_rows)
               else intent_rows[0].variant)
    candidates = [r for r in intent_rows if r.variant == variant]
    main_n = _main_num_levels(rows)
    row = next((r for r in candidates if r.num_levels == main_n),
               max(candidates, key=lambda r: r.intent[JS_KEYS[0]].count))
    needed = [k for _, pred, true, _ in INTENT_PANELS for k in (pred, true)]
    blocks = [r["intent"] for r in results["runs"]
              if r["variant"] == variant and int(r["num_levels"]) == row.num_levels
              and r.get("intent") and all(k in r["intent"] for k in needed)]
    if not blocks:
        raise _PlotSkipped(f"the intent blocks of `{variant}` (n = {row.num_levels}) "
                           f"lack the per-level distributions {needed}")
    lengths = {len(b[k]) for b in blocks for k in needed}
    if len(lengths) != 1:
        raise _PlotSkipped(f"the per-level intent distributions of `{variant}` "
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
        js = _stat([b[js_key] for b in blocks if js_key in b])
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
    main_n = _main_num_levels(rows)
    base_row = _main_base_row(rows)
    if base_row is not None and not base_row.gauc_by_diversity:
        base_row = None
    others = [r for r in rows if r.gauc_by_diversity and not r.is_base
              and r.num_levels == main_n]
    shown = ([base_row] if base_row else []) + others
    if not shown:
        raise _PlotSkipped("no run reports GAUC by intent-diversity group")
    base = results.get("base_variant")
    groups = sorted({g for r in shown for g in r.gauc_by_diversity}, key=_group_sort_key)
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
        raise _PlotSkipped(f"`{variant}` was run at fewer than two values of n "
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
        ax.set_ylabel(_METRIC_LABEL[metric])
        ax.set_xticks(levels)
        ax.legend(fontsize="small")
    fig.suptitle(f"{variant}: AUC and GAUC against n (mean ± std over seeds)")
    return fig


_FIGURES = (
    (FIGURE5_FILE, "Figure 5: predicted vs true intent distribution", _figure5),
    (FIGURE6_FILE, "Figure 6: GAUC by intent-diversity group", _figure6),
    (FIGURE7_FILE, "Figure 7: AUC and GAUC against n", _figure7),
)


# --------------------------------------------------------------------------- files


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays → Python numbers and lists for json.dump."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"results hold a {type(value).__name__}, which is not JSON-able")


def _header(results: Mapping[str, Any]) -> List[str]:
    dataset = results.get("dataset") or {}
    lines = ["# Experiment report", ""]
    if dataset:
        parts = [f"{dataset[k]:,} {label} samples"
                 for k, label in (("train_samples", "training"),
                                  ("eval_samples", "evaluation")) if k in dataset]
        source = f" from `{dataset['raw_dir']}`" if "raw_dir" in dataset else ""
        lines += [f"Data: {' and '.join(parts) or 'sizes not reported'}{source}.", ""]
    lines += [f"Base variant: `{results.get('base_variant')}`. The full results, "
              f"config included, are in `{RESULTS_FILE}`.", ""]
    return lines


def write_report(results: Mapping[str, Any], out_dir: str | Path) -> Dict[str, Path]:
    """Writes `results.json`, `report.md` and the figures that the results support.

    Args:
        results: the experiment results dict (module docstring).
        out_dir: output directory, created if missing.

    Returns:
        {file stem: path} of every file written: "results", "report", and those of
        "figure5_intent_distribution", "figure6_gauc_by_diversity", "figure7_levels"
        that were drawn. A figure lacking data is skipped with a line in report.md.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / RESULTS_FILE, "report": out / REPORT_FILE}
    with open(paths["results"], "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, default=_json_default)
    rows = summarize(results)
    figure_lines = ["## Figures", ""]
    for file_name, title, draw in _FIGURES:
        try:
            fig = draw(results, rows)
        except _PlotSkipped as skipped:
            figure_lines += [f"{title}: skipped, {skipped}.", ""]
            continue
        path = out / file_name
        FigureCanvasAgg(fig)
        fig.savefig(path, dpi=_DPI)
        paths[Path(file_name).stem] = path
        figure_lines += [f"### {title}", "", f"![{title}]({file_name})", ""]
    text = "\n".join(_header(results) + [_markdown(results, rows)] + figure_lines)
    paths["report"].write_text(text, encoding="utf-8")
    return paths
