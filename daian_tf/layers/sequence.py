"""Masked sequence helpers of DEI2N, IntentRec and DUPN (models/dei2n.py,
models/intentrec.py, models/dupn.py).

Histories are padded at the END (`data.transform.pad_recent`: the most recent steps,
oldest first, then padding), so a row's most recent steps are the last VALID ones, not
the last k positions. `recent_steps_mask` reads only the mask, so it holds on either
side of the padding.
"""

from __future__ import annotations

import keras
from keras import ops


def recent_steps_mask(mask, k: int):
    """The `k` most recent real steps of each row: `mask` `(B, T)` (True on real steps,
    chronological) → boolean `(B, T)`, True where step j is real and at most `k` real
    steps lie at or after it: `m_j ∧ (Σ_{i ≥ j} m_i ≤ k)`."""
    real = ops.cast(mask, "int32")
    at_or_after = ops.flip(ops.cumsum(ops.flip(real, axis=1), axis=1), axis=1)
    return ops.logical_and(ops.cast(mask, "bool"), at_or_after <= int(k))


def last_valid_step(sequence, mask):
    """`sequence` `(B, T, E)` at each row's last valid step `(B, E)`; zeros for a row
    without any (real steps first, as `pad_recent` writes them)."""
    valid = ops.cast(mask, sequence.dtype)
    length = ops.cast(ops.sum(valid, axis=-1), "int32")  # (B,)
    onehot = ops.one_hot(ops.maximum(length - 1, 0), ops.shape(sequence)[1],
                         dtype=sequence.dtype) * ops.expand_dims(
                             ops.cast(length > 0, sequence.dtype), -1)
    return ops.sum(ops.expand_dims(onehot, -1) * sequence, axis=1)


@keras.saving.register_keras_serializable(package="daian")
class MaskedMeanPooling(keras.layers.Layer):
    """`o = Σ_j m_j k_j / max(Σ_j m_j, 1)`: the mean of the real steps, a zero vector for
    a row without any.

    Call arguments:
        sequence: `(B, T, E)`.
        mask: boolean `(B, T)`, True on the steps to average.

    Returns:
        `(B, E)`.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, sequence, mask=None):
        if mask is None:
            return ops.mean(sequence, axis=1)
        weights = ops.cast(mask, sequence.dtype)
        total = ops.sum(ops.expand_dims(weights, -1) * sequence, axis=1)
        count = ops.maximum(ops.sum(weights, axis=-1, keepdims=True), 1.0)
        return total / count

    def compute_mask(self, *args, **kwargs):
        return None

    def compute_output_shape(self, sequence_shape, mask_shape=None):
        return (sequence_shape[0], sequence_shape[-1])


@keras.saving.register_keras_serializable(package="daian")
class RecentStepsMask(keras.layers.Layer):
    """`recent_steps_mask` as a layer (a functional model's graph node): the `steps`
    most recent real steps of a padded, chronological history.

    Args:
        steps: k ≥ 1, how many of the most recent real steps to keep.
        **kwargs: base layer arguments.

    Call arguments:
        steps_mask: boolean `(B, T)`, True on real steps.

    Returns:
        boolean `(B, T)`.
    """

    def __init__(self, steps: int, **kwargs):
        super().__init__(**kwargs)
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps = int(steps)

    def call(self, steps_mask):
        # not named `mask`: Keras gives that call argument a meaning of its own
        return recent_steps_mask(steps_mask, self.steps)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"steps": self.steps})
        return config
