"""Explicit Intent Exploitation (DAIAN.md §4.2, Eq. 9–10, [I-7]).

The subsequence `S_u = {e_j ∈ E_u : sim(j, tr) ≥ τ}` keeps the behaviors whose multimodal
similarity to the trigger reaches `τ`, the lower edge of the top `k_exp` similarity
levels ([I-7]). Then `S'_u = MHSA(S_u)` (masked multi-head self-attention) and
`o_exp = MHTA(query = e_tg, keys/values = S'_u)`, target attention as in Eq. 7.
An empty subsequence yields a zero vector, never NaN.
"""

from __future__ import annotations

import keras
from keras import ops

from daian_tf.layers.implicit_intent import (any_step, check_heads,
                                             multi_head_attention, target_attention)


def subsequence_mask(similarity, valid, threshold: float):
    """The steps of `S_u` (Eq. 9): real steps whose similarity reaches `threshold`.

    Args:
        similarity: `(B, T)` `sim(history_j, trigger)`.
        valid: boolean `(B, T)`, True on real (non-padded) steps.
        threshold: `τ`, the lower edge of the top `k_exp` levels
            (`core.similarity_range.lower_edge_of_top`).

    Returns:
        boolean `(B, T)`: `valid & (similarity >= threshold)`.
    """
    return ops.logical_and(ops.cast(valid, "bool"), similarity >= threshold)


def recent_steps(history, sub_mask, max_steps: int):
    """The `max_steps` most recent steps of the subsequence, gathered to the front.

    Attention without position encodings does not depend on the order of the steps, so
    only which steps are kept matters.

    Args:
        history: `(B, T, E)` with a static T.
        sub_mask: boolean `(B, T)`, True on the subsequence's steps.
        max_steps: K; `min(K, T)` steps are returned.

    Returns:
        `((B, K, E), (B, K) bool)`: the kept steps and their mask (False where a row's
        subsequence has fewer than K steps).
    """
    steps = history.shape[1]
    if steps is None:
        raise ValueError("recent_steps needs a static sequence length, got history "
                         f"{history.shape}")
    k = min(int(max_steps), int(steps))
    positions = ops.where(sub_mask, ops.expand_dims(ops.arange(steps), 0), -1)
    top, index = ops.top_k(positions, k=k, sorted=True)  # most recent first
    # one gather of rows of the (B·T, E) steps: Keras' take_along_axis on TensorFlow
    # broadcasts the indices to (B, K, E) and transposes both operands around its
    # gather (23 more kernels a one-row `rank` call; serving/README.md)
    flat = index + ops.expand_dims(ops.arange(ops.shape(history)[0], dtype=index.dtype)
                                   * steps, 1)  # (B, K) rows of the flattened steps
    width = history.shape[-1]
    return ops.take(ops.reshape(history, (-1, width)), flat, axis=0), top >= 0


@keras.saving.register_keras_serializable(package="daian")
class ExplicitIntentExploitation(keras.layers.Layer):
    """Masked self-attention over the subsequence, then target attention (Eq. 9–10).

    Steps outside the subsequence (`sub_mask` False) neither attend nor are attended
    to, so their values do not change the output; a row with an empty subsequence
    gives exact zeros, with finite gradients.

    Example:

    ```python
    sub = subsequence_mask(sim_hist_trigger, history_ids != 0, tau)
    o_exp = ExplicitIntentExploitation()(target, history, sub)  # (B, 128)
    ```

    Args:
        num_heads: heads of both attentions.
        attention_width: output width of both attentions; each head has
            `attention_width // num_heads` dimensions.
        dropout: dropout rate on the attention weights (training only).
        max_steps: keep only the `max_steps` most recent steps of the subsequence
            (`recent_steps`), which bounds the cost of the self-attention; None or 0:
            every step of the sequence.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        target: `(B, Eg)` target item embedding `e_tg`.
        history: `(B, T, E)` behavior sequence `E_u`.
        sub_mask: boolean `(B, T)`, True on the steps of `S_u`
            (`subsequence_mask`).
        training: whether dropout is active.

    Returns:
        `(B, attention_width)` the explicit intent vector `o_exp`.
    """

    def __init__(self,
                 num_heads: int = 4,
                 attention_width: int = 128,
                 dropout: float = 0.0,
                 max_steps: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        check_heads(num_heads, attention_width, dropout)
        if max_steps is not None and int(max_steps) < 0:
            raise ValueError(f"`max_steps` must be >= 0 or None, got {max_steps}")
        self.num_heads = int(num_heads)
        self.attention_width = int(attention_width)
        self.dropout = float(dropout)
        self.max_steps = int(max_steps) if max_steps else None

    def build(self, target_shape, history_shape):
        if len(target_shape) != 2 or len(history_shape) != 3:
            raise ValueError("ExplicitIntentExploitation expects target (B, Eg) and "
                             f"history (B, T, E), got target {target_shape} and "
                             f"history {history_shape}")
        self.self_attention = multi_head_attention(self, "self_attention")
        self.self_attention.build(history_shape, history_shape)
        attended_shape = tuple(history_shape[:2]) + (self.attention_width,)
        self.target_attention = multi_head_attention(self, "target_attention")
        self.target_attention.build((target_shape[0], 1, target_shape[-1]),
                                    attended_shape)
        self.built = True

    def call(self, target, history, sub_mask, training=None):
        attended, sub_mask = self.attend(history, sub_mask, training=training)
        return self.read_out(target, attended, sub_mask, training=training)

    def attend(self, history, sub_mask, training=None):
        """`S'_u = MHSA(S_u)` (Eq. 9), the request-level half of the block (it does not
        read the target, so a model can compute it once per request).

        Returns:
            `(attended, mask)`: `(B, K, attention_width)` and boolean `(B, K)`, K the
            kept steps (`max_steps`, or T), False off the subsequence.
        """
        sub_mask = ops.cast(sub_mask, "bool")
        if self.max_steps is not None:
            history, sub_mask = recent_steps(history, sub_mask, self.max_steps)
        pair_mask = ops.logical_and(ops.expand_dims(sub_mask, 2),
                                    ops.expand_dims(sub_mask, 1))  # (B, K, K)
        attended = self.self_attention(history, history, history,
                                       attention_mask=pair_mask, training=training)
        return attended, sub_mask

    def read_out(self, target, attended, sub_mask, training=None):
        """`o_exp = MHTA(e_tg, S'_u)` (Eq. 10) on `attend`'s output; zeros for an empty
        subsequence."""
        out = target_attention(self.target_attention, target, attended, sub_mask,
                               training=training)
        return out * ops.cast(any_step(sub_mask), out.dtype)

    def compute_output_shape(self, target_shape, history_shape):
        return (target_shape[0], self.attention_width)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "attention_width": self.attention_width,
            "dropout": self.dropout,
            "max_steps": self.max_steps,
        })
        return config
