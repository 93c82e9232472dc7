"""Implicit Intent Exploration, I2E (DAIAN.md §4.1, Eq. 6–8).

An intent-based query `q_ib = Dense([e_tr ‖ v_int])` ([I-6]) attends over the whole
behavior sequence with masked multi-head target attention:
`head_h = softmax((q_ib W^Q_h)(E_u W^K_h)^T / √d_h)(E_u W^V_h)`,
`o_imp = [head_1 ‖ … ‖ head_H] W^O`.
"""

from __future__ import annotations

import keras
from keras import ops


def check_heads(num_heads: int, attention_width: int, dropout: float = 0.0) -> None:
    """Raise ValueError unless `attention_width` splits evenly into `num_heads` heads
    and `dropout` is in [0, 1)."""
    if int(num_heads) < 1:
        raise ValueError(f"`num_heads` must be >= 1, got {num_heads}")
    if int(attention_width) < 1 or int(attention_width) % int(num_heads):
        raise ValueError(f"`attention_width` must be a positive multiple of "
                         f"`num_heads`={num_heads}, got {attention_width}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1), got {dropout}")


def multi_head_attention(layer: keras.layers.Layer,
                         name: str) -> keras.layers.MultiHeadAttention:
    """Keras' `MultiHeadAttention` with `layer`'s heads, width, dropout and dtype policy:
    `attention_width // num_heads` dimensions a head, output `attention_width` wide."""
    return keras.layers.MultiHeadAttention(
        num_heads=layer.num_heads, key_dim=layer.attention_width // layer.num_heads,
        dropout=layer.dropout, output_shape=layer.attention_width,
        dtype=layer.dtype_policy, name=name)


def any_step(mask):
    """`(B, T)` boolean mask → `(B, 1)` float, 1.0 where the row has a True step."""
    return ops.cast(ops.any(mask, axis=-1, keepdims=True), "float32")


@keras.saving.register_keras_serializable(package="daian")
class ImplicitIntentExploration(keras.layers.Layer):
    """I2E: intent-based multi-head target attention over the sequence (Eq. 6–8).

    Padded steps get attention weight 0; a row with no real step gives exactly zeros
    (Keras' attention would otherwise return its output bias there).

    Example:

    ```python
    i2e = ImplicitIntentExploration(num_heads=4, attention_width=128)
    o_imp = i2e(trigger, v_int, history, mask=history_ids != 0)  # (B, 128)
    ```

    Args:
        num_heads: `H`, the number of attention heads.
        attention_width: width of `q_ib` and of the output; each head has
            `attention_width // num_heads` dimensions.
        dropout: dropout rate on the attention weights (training only).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        trigger: `(B, Et)` trigger item embedding `e_tr`.
        intent: `(B, Ei)` intent representation `v_int`.
        history: `(B, T, E)` behavior sequence `E_u`.
        mask: optional boolean `(B, T)`, True on real steps; None: all steps are real.
        training: whether dropout is active.

    Returns:
        `(B, attention_width)` the implicit intent vector `o_imp`.
    """

    def __init__(self,
                 num_heads: int = 4,
                 attention_width: int = 128,
                 dropout: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        check_heads(num_heads, attention_width, dropout)
        self.num_heads = int(num_heads)
        self.attention_width = int(attention_width)
        self.dropout = float(dropout)
        # The mask is an explicit call argument; the output carries none.
        self.supports_masking = True

    def build(self, trigger_shape, intent_shape, history_shape):
        if len(trigger_shape) != 2 or len(intent_shape) != 2 or len(history_shape) != 3:
            raise ValueError("ImplicitIntentExploration expects trigger (B, Et), intent "
                             f"(B, Ei) and history (B, T, E), got trigger "
                             f"{trigger_shape}, intent {intent_shape} and history "
                             f"{history_shape}")
        self.query_layer = keras.layers.Dense(self.attention_width,
                                              dtype=self.dtype_policy, name="q_ib")
        self.query_layer.build((None, trigger_shape[-1] + intent_shape[-1]))
        self.attention = multi_head_attention(self, "target_attention")
        self.attention.build((None, 1, self.attention_width), history_shape)
        self.built = True

    def call(self, trigger, intent, history, mask=None, training=None):
        query = self.query_layer(ops.concatenate([trigger, intent], axis=-1))
        if mask is None:
            mask = ops.ones(ops.shape(history)[:2], dtype="bool")
        mask = ops.cast(mask, "bool")
        out = self.attention(ops.expand_dims(query, 1), history, history,
                             attention_mask=ops.expand_dims(mask, 1),
                             training=training)
        return ops.squeeze(out, axis=1) * ops.cast(any_step(mask), out.dtype)

    def compute_mask(self, *args, **kwargs):
        return None

    def compute_output_shape(self, trigger_shape, intent_shape, history_shape):
        return (trigger_shape[0], self.attention_width)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "attention_width": self.attention_width,
            "dropout": self.dropout,
        })
        return config
