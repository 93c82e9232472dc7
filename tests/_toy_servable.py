"""A toy SavedModel for the serving tests: the server is shown to know nothing about DAIAN.

`serving_default` parses serialized tf.Examples with a float feature and an int feature
(both with defaults) and returns ctr = sigmoid(W_X * x + W_N * n + bias) and the logit;
a second signature `score` takes the two features as dense tensors. The bias is a
constructor argument, so that each version of a model answers differently and a test
can tell which version answered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from serving.client import make_example
from serving.contract import INPUT_EXAMPLES, OUTPUT_CTR, SIGNATURE_SERVING_DEFAULT

MODEL_NAME = "toy"
# Toy model features and outputs (not DAIAN's: see the module docstring).
FEATURE_X, FEATURE_N = "x", "n"
OUTPUT_LOGIT = "logit"
SIGNATURE_SCORE = "score"
W_X, W_N, BIAS = 0.7, -0.3, 0.1
DEFAULT_X, DEFAULT_N = 0.5, 2


class _ToyModel(tf.Module):
    def __init__(self, bias: float):
        super().__init__()
        self.w_x = tf.Variable(W_X, dtype=tf.float32)
        self.w_n = tf.Variable(W_N, dtype=tf.float32)
        self.bias = tf.Variable(bias, dtype=tf.float32)

    def _logit(self, x: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
        return self.w_x * x + self.w_n * tf.cast(n, tf.float32) + self.bias

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name=INPUT_EXAMPLES)])
    def serving_default(self, examples):
        parsed = tf.io.parse_example(examples, {
            FEATURE_X: tf.io.FixedLenFeature([], tf.float32, DEFAULT_X),
            FEATURE_N: tf.io.FixedLenFeature([], tf.int64, DEFAULT_N),
        })
        logit = self._logit(parsed[FEATURE_X], parsed[FEATURE_N])
        return {OUTPUT_CTR: tf.sigmoid(logit), OUTPUT_LOGIT: logit}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name=FEATURE_X),
                                  tf.TensorSpec([None], tf.int64, name=FEATURE_N)])
    def score(self, x, n):
        return {OUTPUT_LOGIT: self._logit(x, n)}


def save_toy_model(version_dir: Path, bias: float = BIAS) -> None:
    model = _ToyModel(bias)
    tf.saved_model.save(model, str(version_dir), signatures={
        SIGNATURE_SERVING_DEFAULT: model.serving_default,
        SIGNATURE_SCORE: model.score,
    })


def expected_ctr(x: np.ndarray, n: np.ndarray, bias: float = BIAS) -> np.ndarray:
    """The toy model's CTR, re-derived in numpy from its weights."""
    return 1.0 / (1.0 + np.exp(-(W_X * x + W_N * n + bias)))


# x, n per example; None leaves the feature out so the parse default applies.
ROWS = [(1.0, 0), (-2.0, 3), (None, 1), (0.25, None)]


def examples() -> list[bytes]:
    return [make_example({k: v for k, v in ((FEATURE_X, x), (FEATURE_N, n))
                          if v is not None}) for x, n in ROWS]


def rows_with_defaults() -> tuple[np.ndarray, np.ndarray]:
    x = np.array([DEFAULT_X if x is None else x for x, _ in ROWS], np.float64)
    n = np.array([DEFAULT_N if n is None else n for _, n in ROWS], np.float64)
    return x, n
