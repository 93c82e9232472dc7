"""Small layers shared by the trigger-aware baselines DIHN, DIAN and DEI2N
(`docs/models-trigger-aware.md`).

- `ConditionalMixture`: DIAN's `ŷ = p·ŷ_a + (1 − p)·ŷ_b`, a named layer so that the
  model's output carries `names.CTR_OUTPUT`;
- `RecentStepsMask`: the last k real steps of a padded history (DEI2N's recent
  behaviours), whatever the side the padding is on.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="daian")
class ConditionalMixture(keras.layers.Layer):
    """`p·a + (1 − p)·b`: the total-probability mixture of two click probabilities.

    With `p`, `a` and `b` in (0, 1) the result is a convex combination, so it stays in
    (0, 1).

    Call arguments:
        p: `(B, 1)` the mixing probability (DIAN: P(intent is trigger-related)).
        a: `(B, 1)` the probability under the first condition (DIAN: ŷ_TAN).
        b: `(B, 1)` the probability under the second condition (DIAN: ŷ_TFN).

    Returns:
        `(B, 1)`.
    """

    def call(self, p, a, b):
        return p * a + (1.0 - p) * b

    def compute_output_shape(self, p_shape, a_shape, b_shape):
        return a_shape


@keras.saving.register_keras_serializable(package="daian")
class RecentStepsMask(keras.layers.Layer):
    """The `steps` most recent real steps of a padded, chronological history.

    Step j is kept when it is real and at most `steps` real steps lie at or after it:
    `m_rec_j = m_j ∧ (Σ_{i ≥ j} m_i ≤ steps)`. It reads only the mask, so it holds
    whether the padding comes after the steps (`data.transform.pad_recent`) or
    before them, and padded steps never count.

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
        real = ops.cast(steps_mask, "int32")
        at_or_after = ops.flip(ops.cumsum(ops.flip(real, axis=1), axis=1), axis=1)
        return ops.logical_and(ops.cast(steps_mask, "bool"), at_or_after <= self.steps)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"steps": self.steps})
        return config
