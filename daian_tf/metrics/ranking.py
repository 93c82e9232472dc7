"""Offline metrics on arrays: AUC, GAUC, log loss, RelaImpr (DAIAN.md §8).

GAUC, exactly (the original DIN repository mixes two forms, PITFALLS "GAUC"):

    GAUC = Σ_u w_u · AUC_u / Σ_u w_u

over the users u with at least one positive and one negative sample; `AUC_u` is the AUC
of u's samples (ties count one half); `w_u` is u's number of samples ("impressions",
the default) or of clicks ("clicks"). Users with one class only are excluded and counted
in `num_skipped`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

GAUC_WEIGHTS = ("impressions", "clicks")


class GaucResult(NamedTuple):
    """GAUC with the number of users it averages over and the number it skipped."""

    value: float  # NaN when no user has both classes
    num_groups: int
    num_skipped: int


def _binary_labels(labels, name: str = "labels") -> np.ndarray:
    y = np.asarray(labels).reshape(-1)
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"{name} must be 0/1, got values {np.unique(y)[:10]}")
    return y.astype(np.int64)


def _check_lengths(**arrays) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays must have the same length, got {lengths}")


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of `scores`, tied values sharing their average rank."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # Start index of each run of equal values, and the run of every position.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    run_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def auc(labels, scores) -> float:
    """ROC AUC (Mann–Whitney: P(score of a positive > score of a negative), ties ½).

    Args:
        labels: `(N,)` 0/1.
        scores: `(N,)` any real scores.

    Returns:
        The AUC; raises ValueError if only one class is present.
    """
    y = _binary_labels(labels)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    _check_lengths(labels=y, scores=s)
    num_pos = int(y.sum())
    num_neg = len(y) - num_pos
    if num_pos == 0 or num_neg == 0:
        raise ValueError(f"auc needs both classes, got {num_pos} positives and "
                         f"{num_neg} negatives")
    ranks = _average_ranks(s)
    return float((ranks[y == 1].sum() - num_pos * (num_pos + 1) / 2.0)
                 / (num_pos * num_neg))


def gauc(labels, scores, groups, weight: str = "impressions") -> GaucResult:
    """Group AUC (see the module docstring for the formula).

    Args:
        labels: `(N,)` 0/1.
        scores: `(N,)` scores.
        groups: `(N,)` group keys (user ids), any hashable dtype.
        weight: "impressions" (samples per user) or "clicks" (positives per user).

    Returns:
        `GaucResult(value, num_groups, num_skipped)`.
    """
    if weight not in GAUC_WEIGHTS:
        raise ValueError(f"weight must be one of {GAUC_WEIGHTS}, got {weight!r}")
    y = _binary_labels(labels)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    g = np.asarray(groups).reshape(-1)
    _check_lengths(labels=y, scores=s, groups=g)
    _, group_index = np.unique(g, return_inverse=True)
    order = np.argsort(group_index, kind="mergesort")
    bounds = np.flatnonzero(np.diff(group_index[order])) + 1
    total, total_weight, used, skipped = 0.0, 0.0, 0, 0
    for rows in np.split(order, bounds) if len(order) else []:
        clicks = int(y[rows].sum())
        if clicks == 0 or clicks == len(rows):
            skipped += 1
            continue
        w = float(len(rows) if weight == "impressions" else clicks)
        total += w * auc(y[rows], s[rows])
        total_weight += w
        used += 1
    value = total / total_weight if used else float("nan")
    return GaucResult(float(value), used, skipped)


def logloss(labels, probs, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy, probabilities clipped to `[eps, 1 − eps]`.

    Args:
        labels: `(N,)` 0/1.
        probs: `(N,)` predicted click probabilities.
        eps: clipping bound.
    """
    y = _binary_labels(labels)
    p = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), eps, 1.0 - eps)
    _check_lengths(labels=y, probs=p)
    if not len(y):
        raise ValueError("logloss of an empty array")
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def rela_impr(metric_model: float, metric_base: float) -> float:
    """RelaImpr in percent: ((model − 0.5) / (base − 0.5) − 1) × 100 (DAIAN.md §8).

    Args:
        metric_model: the model's AUC or GAUC.
        metric_base: the baseline's (DIN's) AUC or GAUC; must be above 0.5.
    """
    if not metric_base > 0.5:
        raise ValueError(f"rela_impr needs a baseline metric above 0.5, got "
                         f"{metric_base}")
    return float(((metric_model - 0.5) / (metric_base - 0.5) - 1.0) * 100.0)


def gauc_by_group(labels, scores, users, group_of_sample,
                  weight: str = "impressions") -> dict:
    """GAUC within each analysis group (Figure 6: groups of intent diversity).

    Args:
        labels, scores, users: as for `gauc`.
        group_of_sample: `(N,)` the group of each sample (e.g. `intent_diversity`).
        weight: as for `gauc`.

    Returns:
        {group: GaucResult} for every group value present, in sorted order.
    """
    g = np.asarray(group_of_sample).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores).reshape(-1)
    u = np.asarray(users).reshape(-1)
    _check_lengths(labels=y, scores=s, users=u, groups=g)
    return {k.item() if hasattr(k, "item") else k: gauc(y[g == k], s[g == k],
                                                       u[g == k], weight)
            for k in np.unique(g)}
