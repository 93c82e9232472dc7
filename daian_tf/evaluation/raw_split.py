"""An eval split of built (raw, untransformed) examples, scored by any callable.

Used by the quick start: scores come from any callable (a model in-process, a gRPC
client, a baseline), so every row of a table is computed the same way.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

import numpy as np
import tensorflow as tf

from daian_tf.core import features as F
from daian_tf.evaluation.tables import ranking_metrics
from daian_tf.export.saved_model import to_serving_example


@dataclass
class EvalSplit:
    """The columns of an example split that evaluation needs, plus the requests."""

    labels: np.ndarray  # (N,) int
    users: np.ndarray  # (N,) object (bytes)
    items: np.ndarray  # (N,) object (bytes): target item ids
    p_true: np.ndarray  # (N,) float; NaN where the example has none
    requests: List[bytes]  # serialized tf.Example without labels

    def __len__(self) -> int:
        return len(self.labels)


def _files(file_pattern: str) -> List[str]:
    files = sorted(glob.glob(file_pattern))
    if not files:
        raise FileNotFoundError(f"no example files match {file_pattern}")
    return files


_COLUMNS = {
    F.LABEL: tf.io.FixedLenFeature([], tf.int64),
    F.USER_ID: tf.io.FixedLenFeature([], tf.string),
    F.TARGET_ITEM_ID: tf.io.FixedLenFeature([], tf.string),
    F.P_TRUE: tf.io.FixedLenFeature([], tf.float32, default_value=np.nan),
}


def read_split(file_pattern: str, sample_cfg, limit: int | None = None,
               with_requests: bool = True) -> EvalSplit:
    """Reads gzipped TFRecords of DATA.md §2 examples into an `EvalSplit`.

    The requests are the examples reduced to what a serving request carries
    (`to_serving_example`: no labels, no analysis columns). `with_requests=False`
    skips building them (the slow, per-example part) when only the columns are needed.
    """
    dataset = tf.data.TFRecordDataset(_files(file_pattern), compression_type="GZIP")
    if limit is not None:
        dataset = dataset.take(limit)
    columns = {k: [] for k in _COLUMNS}
    requests: List[bytes] = []
    for batch in dataset.batch(4096).as_numpy_iterator():
        parsed = tf.io.parse_example(batch, _COLUMNS)
        for key in _COLUMNS:
            columns[key].append(parsed[key].numpy())
        if with_requests:
            requests.extend(to_serving_example(r, sample_cfg) for r in batch)
    c = {k: np.concatenate(v) if v else np.zeros(0) for k, v in columns.items()}
    return EvalSplit(c[F.LABEL].astype(np.int64), c[F.USER_ID].astype(object),
                     c[F.TARGET_ITEM_ID].astype(object),
                     c[F.P_TRUE].astype(np.float64), requests)


def score_in_batches(score_fn: Callable[[List[bytes]], np.ndarray],
                     requests: Sequence[bytes], batch_size: int = 512) -> np.ndarray:
    """Calls `score_fn` on consecutive batches of serialized requests."""
    out = [np.asarray(score_fn(list(requests[i:i + batch_size]))).reshape(-1)
           for i in range(0, len(requests), batch_size)]
    return np.concatenate(out) if out else np.zeros(0)


def metric_row(name: str, split: EvalSplit, scores: np.ndarray) -> Dict[str, float]:
    """`ranking_metrics` of `scores` on `split`, under the row name `name`."""
    return {"model": name, **ranking_metrics(split.labels, scores, split.users)}
