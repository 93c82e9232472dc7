"""Intent labels of DAIAN.md §3.1 (Eq. 1, I-2, I-3) and intent diversity (§8).

Pure functions over one request; the sample builder calls them per request.

A request's clicked targets `c_1..c_K` have similarities `s_j = cos(m_trigger, m_cj)`,
each in a level of `[lo, hi]` (`daian_tf.core.similarity_range.level_index`: `n`
equal-width levels, values outside in the end levels). The label is the histogram of
the levels divided by `K`.
"""

from __future__ import annotations

import math
from typing import Iterable, List, Sequence, Tuple

import numpy as np


def intent_histogram(levels: Iterable[int], n: int) -> Tuple[List[float], int]:
    """Eq. 1: the fraction of clicks per level, and the mask (1 iff any click).

    Args:
      levels: the level index of each clicked target of the request (K values).
      n: number of levels.

    Returns:
      `(label, mask)`: `label` has length `n` and sums to 1 when `mask == 1`; with no
      click it is all zeros and `mask == 0`.
    """
    counts = [0] * n
    for k in levels:
        counts[k] += 1
    total = sum(counts)
    if total == 0:
        return [0.0] * n, 0
    return [c / total for c in counts], 1


def leave_one_out(levels: Sequence[int], own_level: int, clicked: bool,
                  n: int) -> Tuple[List[float], int]:
    """I-3: the request's label without the current sample's own click.

    Args:
      levels: levels of all clicked targets of the request (the sample's own included).
      own_level: the level of the current sample's target.
      clicked: whether the current sample was clicked; if not, the label is the plain one.
      n: number of levels.
    """
    if not clicked:
        return intent_histogram(levels, n)
    rest = list(levels)
    rest.remove(own_level)
    return intent_histogram(rest, n)


def intent_diversity(click_categories: Iterable[str], trigger_category: str) -> int:
    """DAIAN.md §8: distinct leaf categories among the clicks that differ from the
    trigger's. Unknown categories (empty strings: items missing from items.csv) are not
    counted."""
    return len({c for c in click_categories if c and c != trigger_category})


SIM_BINS = 2 ** 16  # the histogram of train similarities over [-1, 1] (I-2)


def similarity_bins(sims: Sequence[float]) -> np.ndarray:
    """The bin of each cosine similarity in `SIM_BINS` equal bins over [-1, 1] (values
    outside, from rounding, in the end bins)."""
    b = np.floor((np.asarray(sims, dtype=np.float64) + 1.0) * (SIM_BINS / 2.0))
    return np.clip(b, 0, SIM_BINS - 1).astype(np.int64)


def range_from_histogram(counts: Sequence[int],
                         percentiles: Sequence[float]) -> Tuple[float, float]:
    """I-2: `[lo, hi]` at `percentiles` of the similarities counted in `counts`
    (`SIM_BINS` bins, `similarity_bins`), as `numpy.percentile` would give them (linear
    between ranks), each order statistic taken at its bin's centre: within half a bin,
    1/`SIM_BINS`, of the exact value. Counts add up in any order, so the range does not
    depend on how a runner splits and merges the data."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("no similarities to derive sim_range from")
    cum = np.cumsum(counts)
    width = 2.0 / len(counts)

    def order_statistic(k: int) -> float:  # the k-th smallest (0-based)
        return -1.0 + (int(np.searchsorted(cum, k, side="right")) + 0.5) * width

    def at(p: float) -> float:
        pos = p / 100.0 * (total - 1)
        k = int(math.floor(pos))
        lo = order_statistic(k)
        return lo + (order_statistic(min(k + 1, total - 1)) - lo) * (pos - k)

    lo, hi = percentiles
    return float(at(lo)), float(at(hi))
