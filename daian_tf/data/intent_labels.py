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


def range_from_quantiles(quantiles: Sequence[float],
                         percentiles: Sequence[float]) -> Tuple[float, float]:
    """I-2: `[lo, hi]` at `percentiles` from evenly spaced quantiles (min .. max).

    `quantiles[i]` is the `100 * i / (len - 1)`-th percentile; values between two
    quantiles are interpolated linearly, as `numpy.percentile` does between ranks.
    """
    if len(quantiles) < 2:
        raise ValueError("need at least two quantiles (min and max) to derive sim_range")
    last = len(quantiles) - 1

    def at(p: float) -> float:
        pos = p / 100.0 * last
        i = min(int(math.floor(pos)), last - 1)
        frac = pos - i
        return quantiles[i] + (quantiles[i + 1] - quantiles[i]) * frac

    lo, hi = percentiles
    return float(at(lo)), float(at(hi))
