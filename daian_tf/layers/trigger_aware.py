"""Small layers shared by the trigger-aware baselines DIHN, DIAN and DEI2N
(`docs/models-trigger-aware.md`).

- `ConditionalMixture`: DIAN's `ŷ = p·ŷ_a + (1 − p)·ŷ_b`, a named layer so that the
  model's output carries `names.CTR_OUTPUT`.

DEI2N's recent behaviours use `layers.sequence.RecentStepsMask`.
"""

from __future__ import annotations

import keras


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
