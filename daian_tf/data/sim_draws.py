"""Seeded random streams and the vectorised draws of the simulated world.

Every part of the simulation draws from `seeded_rng(cfg, *stream)`, an independent
generator per (seed, stream...), so the world (stream 0) and each day (stream 1, day)
can be drawn alone and the written logs stay byte-identical for a seed. The draws
here are generic (one categorical or Dirichlet draw per row, one weighted item per
index range); `sim_world` and `sim_days` give them their meaning.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from daian_tf.core.config import SimulationConfig

_WEIGHTED_ROUNDS = 30  # rejection-sampling rounds before falling back to uniform


def seeded_rng(cfg: SimulationConfig, *stream: int) -> np.random.Generator:
    """An independent generator per (seed, stream...), so days can run alone."""
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, *stream]))


def categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of `probs` (R, K) → (R,) int."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cum[:, -1:]
    return np.minimum((u >= cum).sum(axis=1), probs.shape[1] - 1)


def dirichlet_rows(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """One Dirichlet draw per row of `alpha` (R, K) → (R, K); a row that underflows
    (all gammas 0 for tiny alphas) falls back to the normalised alpha."""
    g = rng.standard_gamma(alpha)
    s = g.sum(axis=1, keepdims=True)
    mean = alpha / alpha.sum(axis=1, keepdims=True)
    return np.where(s > 0, g / np.where(s > 0, s, 1.0), mean)


def sample_in_ranges(
        rng: np.random.Generator, weight: np.ndarray, lo: np.ndarray, hi: np.ndarray,
        reject: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None,
) -> np.ndarray:
    """One item per row from the index range [lo, hi), proportionally to `weight`.

    Args:
      weight: (N,) non-negative item weights; zero-weight items are never drawn.
      lo, hi: (R,) index ranges, each holding at least one valid item.
      reject: optional callable(rows (M,), items (M,)) → (M,) bool, the drawn rows
        to draw again.
    Returns:
      (R,) item indices. After `_WEIGHTED_ROUNDS` rejected rounds a row draws
      uniformly in its range (still excluding zero weights and rejects), so that a
      dominant rejected item cannot stall it.
    """
    cum = np.concatenate([[0.0], np.cumsum(weight)])
    out = np.empty(len(lo), dtype=np.int64)
    todo = np.arange(len(lo))
    rounds = 0
    while todo.size:
        a, b = lo[todo], hi[todo]
        if rounds < _WEIGHTED_ROUNDS:
            target = cum[a] + rng.random(todo.size) * (cum[b] - cum[a])
            items = np.searchsorted(cum, target, side="right") - 1
        else:
            items = a + (rng.random(todo.size) * (b - a)).astype(np.int64)
        items = np.clip(items, a, b - 1)
        out[todo] = items
        bad = weight[items] <= 0
        if reject is not None:
            bad |= reject(todo, items)
        todo = todo[bad]
        rounds += 1
    return out
