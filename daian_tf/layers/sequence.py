"""Masked sequence helpers of IntentRec and DUPN (models/intentrec.py, models/dupn.py).

Histories are padded at the END (`data.transform.pad_recent`: the most recent steps,
oldest first, then padding), so a row's most recent steps are the last VALID ones,
`[L_b − k, L_b)` with `L_b` the row's number of valid steps, not the last k positions.
"""

from __future__ import annotations

import keras
from keras import ops


def recent_steps_mask(mask, k: int):
    """The last `k` valid steps of each row: `mask` `(B, T)` (True on real steps, real
    steps first) → boolean `(B, T)`, True where `mask` and `position >= L_b − k`."""
    valid = ops.cast(mask, "int32")
    length = ops.sum(valid, axis=-1, keepdims=True)  # (B, 1)
    position = ops.expand_dims(ops.arange(ops.shape(valid)[1], dtype="int32"), 0)
    return ops.logical_and(ops.cast(mask, "bool"), position >= length - int(k))


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
