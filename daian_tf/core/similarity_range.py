"""[I-2] The similarity range `[lo, hi]` and the one rule that cuts it into levels.

**One owner.** The sample builder estimates `[lo, hi]` once (the
`samples.sim_percentiles` of the train trigger–target similarity, or
`samples.sim_range` when the config fixes it) and labels the intents with it. It is
written to the builder's `report.json` (`REPORT_KEY`) and, in the TFX pipeline, to the
`Examples` artifact's custom property (`ARTIFACT_PROPERTY`). Every later step receives it
as data and never estimates it again: Transform (`custom_config`), the Trainer, the
model (its similarity bins and explicit-intent threshold) and `daian train`.

**One rule.** `n` equal-width intervals over `[lo, hi]`; a similarity `s` falls in

    clip(floor((s − lo) / (hi − lo) · n), 0, n − 1)

so values outside the range go to the end intervals. The intent levels of Eq. 1
(`n = samples.num_intent_levels`), the similarity bins of SEIN (`n =
model.num_sim_bins`, in the model and as the Transform's `target_sim_xf`) and the
explicit-intent threshold (the lower edge of the top levels) all come from here.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

# `level_index`'s namespace for one Python float at a time (the sample builder's)
SCALAR = SimpleNamespace(floor=math.floor, clip=lambda x, lo, hi: min(hi, max(lo, x)))

REPORT_KEY = "sim_range"  # report.json["sim_range"]: [lo, hi]
ARTIFACT_PROPERTY = "sim_range"  # Examples artifact custom property: JSON [lo, hi]


def check_range(sim_range: Any, source: str = "sim_range") -> Tuple[float, float]:
    """`(lo, hi)` as floats; ValueError naming `source` unless `lo < hi`."""
    try:
        lo, hi = (float(v) for v in sim_range)
    except (TypeError, ValueError):
        raise ValueError(f"{source} must be [lo, hi], got {sim_range!r}") from None
    if not lo < hi:
        raise ValueError(f"{source} must be [lo, hi] with lo < hi, got {[lo, hi]}")
    return lo, hi


def to_json(sim_range: Sequence[float]) -> str:
    """The artifact property's value of `[lo, hi]`."""
    return json.dumps(list(check_range(sim_range)))


def from_json(value: Optional[str], source: str) -> Tuple[float, float]:
    """`[lo, hi]` from an artifact property's value; ValueError naming `source` when
    absent or malformed."""
    if not value:
        raise ValueError(f"{source} has no {ARTIFACT_PROPERTY!r}: the samples were not "
                         f"built by this version's sample builder")
    return check_range(json.loads(value), source)


def level_edges(lo: float, hi: float, num_levels: int) -> List[float]:
    """The `num_levels + 1` equal-width edges over `[lo, hi]`."""
    lo, hi = check_range((lo, hi))
    if num_levels < 1:
        raise ValueError(f"number of levels must be >= 1, got {num_levels}")
    return [lo + (hi - lo) * i / num_levels for i in range(num_levels + 1)]


def lower_edge_of_top(lo: float, hi: float, num_levels: int, top_levels: int) -> float:
    """The lower edge of the top `top_levels` of `num_levels` levels over `[lo, hi]`
    (the explicit-intent threshold τ of I-7)."""
    if not 1 <= int(top_levels) <= int(num_levels):
        raise ValueError(f"top_levels must be in 1..{num_levels}, got {top_levels}")
    return level_edges(lo, hi, num_levels)[int(num_levels) - int(top_levels)]


def level_index(similarity, lo: float, hi: float, num_levels: int, xp=np):
    """The level (or bin) of `similarity`, by the rule of the module docstring.

    Args:
        similarity: a float, an array or a tensor (cast it to float32 first for
            tensors).
        lo, hi: the range.
        num_levels: `n`.
        xp: the array namespace of `similarity`: `numpy` (arrays), `SCALAR` (one
            Python float), `keras.ops` (Keras tensors), `tf.experimental.numpy`
            (Transform graphs).

    Returns:
        The index in `[0, n)`, of `similarity`'s shape, as a float of `xp`; cast it to
        an integer type.
    """
    width = max(float(hi) - float(lo), 1e-12)
    position = xp.floor((similarity - float(lo)) / width * num_levels)
    return xp.clip(position, 0.0, num_levels - 1.0)
