"""The optimizer of `train.optimizer`."""

from __future__ import annotations

import keras

from daian_tf.core.names import ADAGRAD, ADAM

OPTIMIZERS = {ADAM: keras.optimizers.Adam, ADAGRAD: keras.optimizers.Adagrad}


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """Adam or Adagrad (`train.optimizer`) at `learning_rate`."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; use one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](learning_rate=learning_rate)
