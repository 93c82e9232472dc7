"""A transformed split as columns, scored in-process; the popularity baseline's metrics."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from daian_tf.core import features as F
from daian_tf.core.names import INTENT_COLUMN, SCORE_COLUMN
from daian_tf.data.dataset import FilePattern, make_dataset
from daian_tf.evaluation.tables import ranking_metrics
from daian_tf.models import serving_input_keys
from daian_tf.models.popularity import PopularityBaseline

EVAL_BATCH_SIZE = 4096


def collect_columns(model: Optional[keras.Model], file_pattern: FilePattern,
                    tf_transform_output, keys: Sequence[str] = (),
                    with_intent: bool = False,
                    batch_size: int = EVAL_BATCH_SIZE) -> Dict[str, np.ndarray]:
    """A transformed split in file order, as columns: the label (`features.LABEL`), the
    transformed features `keys`, and with a model its `names.SCORE_COLUMN` (click
    probability) and, with `with_intent`, its `names.INTENT_COLUMN` (p̂, DAIAN's
    `predict_intent`)."""
    inputs_keys = serving_input_keys(model) if model is not None else []
    ds = make_dataset(file_pattern, tf_transform_output, batch_size, shuffle=False,
                      input_keys=sorted(set(inputs_keys) | set(keys)))
    out: Dict[str, list] = {k: [] for k in list(keys) + [F.LABEL, SCORE_COLUMN,
                                                           INTENT_COLUMN]}
    if model is not None:
        # traced for the full batches and once more with a free batch size for the last
        # one; Keras' predict_on_batch traces each shape anew and TensorFlow logs that
        # as excessive retracing once a run has scored a few splits
        score = tf.function(lambda batch: model(batch, training=False),
                            reduce_retracing=True)
    for inputs, label in ds:
        out[F.LABEL].append(label.numpy())
        for k in keys:
            out[k].append(inputs[k].numpy())
        if model is not None:
            batch = {k: inputs[k] for k in inputs_keys}
            out[SCORE_COLUMN].append(np.asarray(score(batch)).reshape(-1))
            if with_intent:
                out[INTENT_COLUMN].append(
                    np.asarray(model.predict_intent(batch, training=False)))
    return {k: np.concatenate(v) for k, v in out.items() if v}


def predict_split(model: keras.Model, file_pattern: FilePattern, tf_transform_output,
                  batch_size: int = EVAL_BATCH_SIZE
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels `(N,)`, predicted probabilities `(N,)` and user keys `(N,)` of a split."""
    cols = collect_columns(model, file_pattern, tf_transform_output, [F.USER_KEY],
                           batch_size=batch_size)
    return cols[F.LABEL].astype(np.int64), cols[SCORE_COLUMN], cols[F.USER_KEY]


def popularity_metrics(train_pattern: FilePattern, eval_pattern: FilePattern,
                       tf_transform_output) -> Dict[str, float]:
    """Fit the popularity baseline on train target ids, score the eval split."""
    keys = [F.xf(F.TARGET_ITEM_ID), F.USER_KEY]
    train = collect_columns(None, train_pattern, tf_transform_output, keys)
    test = collect_columns(None, eval_pattern, tf_transform_output, keys)
    baseline = PopularityBaseline().fit(train[keys[0]], train[F.LABEL].astype(np.int64))
    return ranking_metrics(test[F.LABEL].astype(np.int64),
                           baseline.predict(test[keys[0]]), test[F.USER_KEY])
