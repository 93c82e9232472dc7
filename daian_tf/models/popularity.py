"""Popularity baseline: the smoothed click-through rate of the target item.

`p(i) = (clicks_i + α · ctr) / (impressions_i + α)`, counted on the train split, with
`ctr` the global train CTR and `α` the prior strength; an item unseen in training gets
`ctr`. A floor that any CTR model must beat.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np


class PopularityBaseline:
    """Smoothed per-item CTR with a global-CTR fallback.

    Args:
        prior_strength: `α`, the number of pseudo-impressions at the global CTR added
            to every item (0: the raw per-item CTR).
    """

    def __init__(self, prior_strength: float = 10.0):
        if prior_strength < 0:
            raise ValueError(f"prior_strength must be >= 0, got {prior_strength}")
        self.prior_strength = float(prior_strength)
        self.global_ctr: Optional[float] = None
        self.item_ctr: Dict = {}

    def fit(self, item_ids, labels) -> "PopularityBaseline":
        """Count impressions and clicks per item.

        Args:
            item_ids: `(N,)` target item ids (any hashable dtype).
            labels: `(N,)` 0/1 clicks.
        """
        items = np.asarray(item_ids).reshape(-1)
        y = np.asarray(labels, dtype=np.float64).reshape(-1)
        if len(items) != len(y) or not len(y):
            raise ValueError(f"fit needs equally long, non-empty item_ids and labels, "
                             f"got {len(items)} and {len(y)}")
        self.global_ctr = float(y.mean())
        keys, index = np.unique(items, return_inverse=True)
        clicks = np.bincount(index, weights=y, minlength=len(keys))
        shown = np.bincount(index, minlength=len(keys))
        a = self.prior_strength
        ctr = (clicks + a * self.global_ctr) / (shown + a)  # shown >= 1 for every key
        self.item_ctr = dict(zip(keys.tolist(), ctr.tolist()))
        return self

    def predict(self, item_ids) -> np.ndarray:
        """`(N,)` float64 click probabilities of the given target items."""
        if self.global_ctr is None:
            raise RuntimeError("PopularityBaseline.predict called before fit")
        items = np.asarray(item_ids).reshape(-1)
        return np.array([self.item_ctr.get(i, self.global_ctr) for i in items.tolist()],
                        dtype=np.float64)
