"""Where the intent signal is in a set of built samples (`daian inspect SAMPLES`).

Before asking why DAIAN does or does not beat DIN on some logs, measure what the logs
offer. Read from the sample builder's output (the examples the models see, with its
I-2 range), without training anything:

* **CTR by similarity level**: the train and eval CTR of each of the `n` levels of
  cos(trigger, target) (the I-2 levels of the intent labels). A flat row: similarity
  says nothing; a monotone one: a ranking by similarity alone works; a hump: which
  similarity is wanted is a matter of degree, which only the levels (or SEIN's bins) read.
* **One-signal rankers on the eval split** (AUC and GAUC): the similarity itself; the
  train CTR of the target's level (similarity as everyone's intent); the train CTR of the
  user's own level CTR, shrunk toward the level's (similarity as *this user's* intent:
  the gain over the previous row is the personal part, what UIM is for); the target's
  train clicks (popularity, which an ID model learns).
* **Intent labels**: clicks per labelled request, the mean label, and how often the
  leave-one-out label of I-3 is empty (a request's only click).
* **Is intent a user trait?** The split-half correlation of users' mean click level
  (their train clicks split at random in two halves, users with at least
  `MIN_USER_CLICKS`): near 0, a user's past says nothing about the next request's intent;
  near 1, it says everything.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Mapping, Optional

import numpy as np

from daian_tf.core import features as F
from daian_tf.core.names import EVAL, REPORT_FILE, SAMPLES_GLOB, SPLITS, TRAIN
from daian_tf.core.similarity_range import check_range, level_index
from daian_tf.metrics.ranking import auc, gauc

MIN_USER_CLICKS = 10


def _levels(sims: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    return level_index(np.asarray(sims, np.float64), lo, hi, n).astype(np.int64)

USER_PRIOR = 5.0  # impressions' worth of the level CTR in a user's shrunk level CTR
_COLUMNS = (F.REQUEST_ID, F.USER_ID, F.TARGET_ITEM_ID, F.LABEL, F.TARGET_SIM,
            F.INTENT_MASK, F.INTENT_MASK_LOO)


def read_split(samples_dir: str, split: str, num_levels: int) -> Dict[str, np.ndarray]:
    """The columns the inspection needs of one split of built samples."""
    import tensorflow as tf

    spec = {F.REQUEST_ID: tf.io.FixedLenFeature([], tf.string),
            F.USER_ID: tf.io.FixedLenFeature([], tf.string),
            F.TARGET_ITEM_ID: tf.io.FixedLenFeature([], tf.string),
            F.LABEL: tf.io.FixedLenFeature([], tf.int64),
            F.TARGET_SIM: tf.io.FixedLenFeature([], tf.float32),
            F.INTENT_MASK: tf.io.FixedLenFeature([], tf.int64),
            F.INTENT_MASK_LOO: tf.io.FixedLenFeature([], tf.int64),
            F.INTENT_LABEL: tf.io.FixedLenFeature([num_levels], tf.float32)}
    files = tf.io.gfile.glob(os.path.join(samples_dir, split, SAMPLES_GLOB))
    ds = (tf.data.TFRecordDataset(sorted(files), compression_type="GZIP")
          .batch(4096).map(lambda x: tf.io.parse_example(x, spec)))
    parts: Dict[str, list] = {k: [] for k in spec}
    for batch in ds.as_numpy_iterator():
        for k, v in batch.items():
            parts[k].append(v)
    return {k: (np.concatenate(v) if v else np.zeros((0,))) for k, v in parts.items()}


def _rankers(train: Mapping[str, np.ndarray], ev: Mapping[str, np.ndarray], n: int,
             lo: float, hi: float) -> Dict[str, np.ndarray]:
    """Eval scores of the one-signal rankers, each fitted on the train split only."""
    tr_level = _levels(train[F.TARGET_SIM], lo, hi, n)
    ev_level = _levels(ev[F.TARGET_SIM], lo, hi, n)
    y = train[F.LABEL].astype(np.float64)
    shown = np.bincount(tr_level, minlength=n).astype(np.float64)
    level_ctr = np.bincount(tr_level, weights=y, minlength=n) / np.maximum(shown, 1)

    # user x level CTR, shrunk toward the level's CTR with USER_PRIOR impressions
    users, u_idx = np.unique(train[F.USER_ID], return_inverse=True)
    cell = u_idx * n + tr_level
    u_shown = np.bincount(cell, minlength=len(users) * n)
    u_clicks = np.bincount(cell, weights=y, minlength=len(users) * n)
    shrunk = ((u_clicks + USER_PRIOR * np.tile(level_ctr, len(users)))
              / (u_shown + USER_PRIOR))
    row = {u: k for k, u in enumerate(users)}
    ev_user = np.array([row.get(u, -1) for u in ev[F.USER_ID]])
    user_level = np.where(ev_user >= 0, shrunk[np.maximum(ev_user, 0) * n + ev_level],
                          level_ctr[ev_level])

    items, i_idx = np.unique(train[F.TARGET_ITEM_ID], return_inverse=True)
    clicks = dict(zip(items, np.bincount(i_idx, weights=y)))
    popularity = np.array([clicks.get(i, 0.0) for i in ev[F.TARGET_ITEM_ID]])
    return {"similarity": ev[F.TARGET_SIM], "level_ctr": level_ctr[ev_level],
            "user_level_ctr": user_level, "popularity": popularity}


def _split_half(train: Mapping[str, np.ndarray], n: int, lo: float, hi: float,
                seed: int = 0) -> dict:
    clicked = train[F.LABEL] == 1
    users = train[F.USER_ID][clicked]
    levels = _levels(train[F.TARGET_SIM][clicked], lo, hi, n).astype(np.float64)
    half = np.random.default_rng(seed).integers(0, 2, len(users))
    uniq, idx = np.unique(users, return_inverse=True)
    count = np.bincount(idx, minlength=len(uniq))
    keep = count >= MIN_USER_CLICKS
    means = []
    for h in (0, 1):
        c = np.bincount(idx[half == h], minlength=len(uniq))
        s = np.bincount(idx[half == h], weights=levels[half == h], minlength=len(uniq))
        keep &= c > 0
        means.append(s / np.maximum(c, 1))
    a, b = means[0][keep], means[1][keep]
    return {"users": int(keep.sum()),
            "correlation": float(np.corrcoef(a, b)[0, 1]) if keep.sum() > 2 else None,
            "std_of_user_means": float(np.std((a + b) / 2)) if keep.sum() else None}


def inspect_samples(samples_dir: str, num_levels: Optional[int] = None) -> dict:
    """The signal report of built samples (the module docstring says what it holds)."""
    with open(os.path.join(samples_dir, REPORT_FILE)) as f:
        report = json.load(f)
    n = int(num_levels or report["config"]["num_intent_levels"])
    lo, hi = check_range(report["sim_range"], f"{samples_dir}/{REPORT_FILE} sim_range")
    data = {s: read_split(samples_dir, s, n) for s in SPLITS}
    out: dict = {"samples_dir": samples_dir, "num_levels": n, "sim_range": [lo, hi],
                 "splits": {}, "level_ctr": {}}
    for s in SPLITS:
        d = data[s]
        lvl = _levels(d[F.TARGET_SIM], lo, hi, n)
        shown = np.bincount(lvl, minlength=n)
        clicks = np.bincount(lvl, weights=d[F.LABEL], minlength=n)
        out["splits"][s] = {"samples": int(len(d[F.LABEL])),
                            "requests": int(len(np.unique(d[F.REQUEST_ID]))),
                            "ctr": float(d[F.LABEL].mean()) if len(d[F.LABEL]) else None}
        out["level_ctr"][s] = {"shown": shown.tolist(),
                               "ctr": (clicks / np.maximum(shown, 1)).round(4).tolist()}
    ev = data[EVAL]
    out["eval_rankers"] = {}
    for name, score in _rankers(data[TRAIN], ev, n, lo, hi).items():
        g = gauc(ev[F.LABEL], score, ev[F.USER_ID])
        out["eval_rankers"][name] = {"auc": round(auc(ev[F.LABEL], score), 4),
                                     "gauc": round(g.value, 4)}
    tr = data[TRAIN]
    _, first = np.unique(tr[F.REQUEST_ID], return_index=True)
    labelled = first[tr[F.INTENT_MASK][first] == 1]
    req_clicks = np.bincount(np.unique(tr[F.REQUEST_ID], return_inverse=True)[1],
                             weights=tr[F.LABEL])
    clicked = tr[F.LABEL] == 1
    out["intent_labels"] = {
        "requests_labelled": int(len(labelled)),
        "requests_unlabelled": int(len(first) - len(labelled)),
        "clicks_per_labelled_request": float(req_clicks[req_clicks > 0].mean())
        if (req_clicks > 0).any() else None,
        "mean_label": [round(float(x), 4) for x in tr[F.INTENT_LABEL][labelled].mean(axis=0)],
        "clicked_samples_with_empty_loo_label": float(
            (tr[F.INTENT_MASK_LOO][clicked] == 0).mean()) if clicked.any() else None,
    }
    out["user_trait"] = _split_half(tr, n, lo, hi)
    return out


def format_signal(report: dict) -> str:
    """The report as a few plain-text tables."""
    n = report["num_levels"]
    lines = [f"similarity range {report['sim_range'][0]:.4f} .. "
             f"{report['sim_range'][1]:.4f}, {n} levels (low → high similarity)"]
    for s in SPLITS:
        sp, lc = report["splits"][s], report["level_ctr"][s]
        lines.append(f"{s:5s} {sp['samples']:>8d} samples, {sp['requests']:>7d} requests, "
                     f"CTR {sp['ctr']:.4f}; CTR by level: "
                     + " ".join(f"{c:.3f}" for c in lc["ctr"]))
    lines.append("eval AUC / GAUC of one signal (fitted on train):")
    for name, m in report["eval_rankers"].items():
        lines.append(f"  {name:15s} {m['auc']:.4f} / {m['gauc']:.4f}")
    il = report["intent_labels"]
    lines.append(f"intent labels: {il['requests_labelled']} labelled, "
                 f"{il['requests_unlabelled']} unlabelled train requests; "
                 f"{il['clicks_per_labelled_request']:.2f} clicks per labelled request; "
                 f"mean label {il['mean_label']}; clicked samples whose leave-one-out "
                 f"label is empty: {il['clicked_samples_with_empty_loo_label']:.3f}")
    ut = report["user_trait"]
    lines.append(f"user trait: split-half correlation of users' mean click level "
                 f"{ut['correlation']:.3f} over {ut['users']} users with >= "
                 f"{MIN_USER_CLICKS} train clicks (std of user means "
                 f"{ut['std_of_user_means']:.3f} levels)")
    return "\n".join(lines)
