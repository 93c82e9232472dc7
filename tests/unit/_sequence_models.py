"""Hand-made transformed inputs for the IntentRec and DUPN unit tests."""

from __future__ import annotations

import numpy as np

from daian_tf.core import features as F
from daian_tf.core.features import USER_ID_VOCAB, user_profile_vocab

USER_COLUMNS = ("gender",)
SIZES = {"item": 20, "category": 6, "brand": 7, "shop": 5, "behavior": 6,
         USER_ID_VOCAB: 9, user_profile_vocab("gender"): 4}
B, T, LEVELS = 4, 8, 5
LENGTHS = (0, 2, 6, T)  # valid steps per row; padding at the end (pad_recent)
HIST_XF = [F.xf(h) for _, h in F.DIN_PAIRS]
BEHAVIOR_XF, TIME_XF = F.xf(F.HIST_BEHAVIOR), F.xf(F.HIST_TIME_BUCKET)


def _vocab(raw: str) -> str:
    if raw == F.USER_ID:
        return USER_ID_VOCAB
    if raw.startswith(F.USER_PREFIX):
        return raw
    return next(n for n, ks in F.SHARED_VOCABS.items() if raw in ks)


def make_inputs(keys, seed: int = 0, steps: int = T) -> dict:
    """Valid random transformed inputs for `keys`; row b has LENGTHS[b] valid steps,
    the rest padding (0), over `steps` >= T positions."""
    rng = np.random.default_rng(seed)
    valid = np.arange(steps)[None, :] < np.array(LENGTHS)[:, None]
    x = {}
    for key in keys:
        raw = key[: -len(F.XF_SUFFIX)]
        if key == TIME_XF:
            ids = rng.integers(1, F.TIME_BUCKETS, size=(B, steps))
        elif key == BEHAVIOR_XF or key in HIST_XF:
            ids = rng.integers(1, SIZES[_vocab(raw)], size=(B, steps))
        elif raw in F.PRICE_KEYS:
            x[key] = rng.integers(1, F.PRICE_BUCKETS, size=B).astype("int64")
            continue
        else:
            x[key] = rng.integers(1, SIZES[_vocab(raw)], size=B).astype("int64")
            continue
        x[key] = np.where(valid, ids, F.PADDING_ID).astype("int64")
    return x


def copy_inputs(x: dict) -> dict:
    return {k: np.array(v, copy=True) for k, v in x.items()}


def scores(model, x) -> np.ndarray:
    return np.asarray(model(x, training=False)).reshape(-1)
