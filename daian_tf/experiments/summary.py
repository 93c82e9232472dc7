"""Experiment summary: the results dict, and its runs summarised over seeds.

The results dict is what `daian experiment` produces (JSON-able):

    {"config": {...}, "dataset": {"train_samples", "eval_samples", "raw_dir", ...},
     "runs": [{"variant": str, "seed": int, "num_levels": int,
               "metrics": {"auc", "gauc", "logloss"},
               "gauc_by_diversity": {"0": float, "1": float, "2+": float, ...},  # optional
               "intent": {"js_specific", "js_broad", "js_all",                  # optional
                          "mean_pred_specific", "mean_true_specific",
                          "mean_pred_broad", "mean_true_broad"},  # (n,) lists
               "train_seconds": float,
               "samples_per_second": float}, ...],  # optional
     "reference_rows": [{"name": "oracle" | "popularity", "metrics": {...}}, ...],
     "base_variant": "din", "n_sweep_variant": "daian"}

The metric keys are `core.names.METRIC_NAMES`. Runs are grouped by
`(variant, num_levels)` and summarised over seeds (mean and sample standard deviation,
ddof = 1, 0 for a single seed). RelaImpr (DAIAN.md §8) compares a group's mean AUC/GAUC
with the base variant's mean at the same `num_levels` (or at the base's only
`num_levels`); the paired RelaImpr averages the per-seed RelaImpr against the base run
with the same seed.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from daian_tf.core.errors import DaianInputError
from daian_tf.core.names import AUC, GAUC, METRIC_NAMES
from daian_tf.metrics.ranking import rela_impr

RELA_IMPR_METRICS = (AUC, GAUC)
JS_KEYS = ("js_specific", "js_broad", "js_all")


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
        samples_per_second: Stat of the training throughput (train samples × epochs
            run, over the fit's wall time); count 0 when no run reports it.
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
    samples_per_second: Stat = Stat(math.nan, math.nan, 0)


# --------------------------------------------------------------------------- helpers


def stat(values: Sequence[float]) -> Stat:
    """The `Stat` of `values` (None read as NaN)."""
    a = np.asarray([as_float(v) for v in values], dtype=np.float64)
    if not a.size:
        return Stat(math.nan, math.nan, 0)
    std = float(np.std(a, ddof=1)) if a.size > 1 else 0.0
    return Stat(float(np.mean(a)), std, int(a.size))


def as_float(value: Any) -> float:
    """A metric value as float; None (a NaN that went through strict JSON) → NaN."""
    return math.nan if value is None else float(value)


def safe_rela_impr(model: float, base: float) -> Optional[float]:
    """RelaImpr in %, or None where it is undefined (base not above 0.5, or NaN)."""
    if not (base > 0.5 and math.isfinite(model)):
        return None
    return rela_impr(model, base)


def group_sort_key(group: str) -> Tuple[float, str]:
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
        missing = [m for m in METRIC_NAMES if m not in run["metrics"]]
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


def main_num_levels(rows: Sequence[SummaryRow]) -> Optional[int]:
    """The `num_levels` most runs use (the default `n`; sweeps add a few others)."""
    counts: Counter = Counter()
    for row in rows:
        counts[row.num_levels] += len(row.seeds)
    if not counts:
        return None
    return min(counts, key=lambda n: (-counts[n], n))


def base_row(rows: Sequence[SummaryRow],
             num_levels: Optional[int]) -> Optional[SummaryRow]:
    """The base variant's row at `num_levels`, or None."""
    return next((r for r in rows if r.is_base and r.num_levels == num_levels), None)


def main_base_row(rows: Sequence[SummaryRow]) -> Optional[SummaryRow]:
    """The base row that rows at the main `num_levels` are compared against."""
    main_n = main_num_levels(rows)
    base_levels = sorted(r.num_levels for r in rows if r.is_base)
    if main_n is None:
        return None
    return base_row(rows, _base_levels_for(main_n, base_levels))


# --------------------------------------------------------------------------- summary


def _rela_impr_of_means(group: Stat, base_runs: Sequence[Mapping[str, Any]],
                        metric: str) -> Optional[float]:
    """RelaImpr in % of a group's mean `metric` against the base runs' mean."""
    if not base_runs:
        return None
    return safe_rela_impr(group.mean, stat([r["metrics"][metric]
                                            for r in base_runs]).mean)


def _paired_rela_impr(runs: Sequence[Mapping[str, Any]],
                      base_runs: Sequence[Mapping[str, Any]],
                      metric: str) -> Optional[Stat]:
    """Stat of the per-seed RelaImpr in % against the base run with the same seed."""
    base_by_seed = {int(r["seed"]): as_float(r["metrics"][metric]) for r in base_runs}
    per_seed = [safe_rela_impr(as_float(r["metrics"][metric]),
                               base_by_seed[int(r["seed"])])
                for r in runs if int(r["seed"]) in base_by_seed]
    defined = [x for x in per_seed if x is not None]
    return stat(defined) if defined else None


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
        metrics = {m: stat([r["metrics"][m] for r in runs]) for m in METRIC_NAMES}
        rela = {m: _rela_impr_of_means(metrics[m], base_runs, m)
                for m in RELA_IMPR_METRICS}
        paired = {m: _paired_rela_impr(runs, base_runs, m) for m in RELA_IMPR_METRICS}
        with_intent = [r["intent"] for r in runs if r.get("intent")]
        intent = ({k: stat([i[k] for i in with_intent if k in i]) for k in JS_KEYS}
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
            gauc_by_diversity={g: stat(by_group[g])
                               for g in sorted(by_group, key=group_sort_key)},
            train_seconds=stat([r["train_seconds"] for r in runs
                                if r.get("train_seconds") is not None]),
            samples_per_second=stat([r["samples_per_second"] for r in runs
                                     if r.get("samples_per_second") is not None])))
    return rows
