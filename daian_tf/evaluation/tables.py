"""Metric rows and tables: AUC, GAUC (with its group counts) and log loss."""

from __future__ import annotations

from typing import Dict, Iterable

import numpy as np

from daian_tf.core.names import AUC, GAUC, LOGLOSS, METRIC_LABELS, METRIC_NAMES
from daian_tf.metrics.ranking import auc, gauc, logloss

def ranking_metrics(labels: np.ndarray, probs: np.ndarray,
                    users: np.ndarray) -> Dict[str, float]:
    """AUC, GAUC (impression-weighted, with group counts) and log loss, JSON-able."""
    g = gauc(labels, probs, users)
    return {AUC: auc(labels, probs), GAUC: g.value,
            "gauc_num_users": g.num_groups, "gauc_num_skipped": g.num_skipped,
            LOGLOSS: logloss(labels, probs), "num_examples": int(len(labels))}


def main_metrics(metrics: Dict[str, float]) -> Dict[str, float]:
    """The metrics of every table (`names.METRIC_NAMES`) of a `ranking_metrics` dict."""
    return {k: metrics[k] for k in METRIC_NAMES}


def format_table(rows: Iterable[Dict[str, float]]) -> str:
    """A markdown table of metric rows (`{"model": name, **ranking_metrics}`)."""
    lines = ["| model | " + " | ".join(METRIC_LABELS[m] for m in METRIC_NAMES) + " |",
             "| --- |" + " --- |" * len(METRIC_NAMES)]
    for r in rows:
        lines.append(f"| {r['model']} | "
                     + " | ".join(f"{r[m]:.4f}" for m in METRIC_NAMES) + " |")
    return "\n".join(lines)
