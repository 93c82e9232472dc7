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


def target_attention(attention: keras.layers.MultiHeadAttention, query, keys, mask,
                     training=None):
    """`attention(query[:, None], keys, keys, attention_mask=mask[:, None])[:, 0]`: Keras'
    multi-head attention with one query per row (target attention, Eq. 7), computed
    in the order that suits a single query.

    With one query, `(q W^Q_h)(k_j W^K_h)^T = k_j (W^K_h (q W^Q_h)^T)`: the query is
    mapped into the keys' space once per row instead of every key into the head space,
    and `Σ_j a_hj (k_j W^V_h) = (Σ_j a_hj k_j) W^V_h`: the keys are pooled before the
    value projection (the value bias is added once: the weights sum to 1). The result
    is the layer's own, with its own weights; per row `T·E·2H` multiply-adds instead
    of `T·E·2W`. With attention dropout in training, the layer itself is called.
    It reads the layer's projections (`_query_dense`, ...), which Keras 3 keeps
    private: `tests/unit/layers/test_implicit_intent.py` checks the result against
    the layer's own call.

    Args:
        attention: a built `keras.layers.MultiHeadAttention` (key = value, one
            attention axis).
        query: `(B, Dq)`.
        keys: `(B, T, E)`, the keys and the values; or `(T, E)`, ONE sequence that
            every query attends to (a ranking request's candidates), whose scores and
            pooling are then single matrix products.
        mask: boolean `(B, T)`, True on the steps that may be attended to; `(T,)`
            with shared keys.
        training: Keras' flag (with shared keys: inference only).

    Returns:
        `(B, output)` the attention's output. A row with no True step gets a uniform
        average of its steps (multiply by `any_step(mask)` to zero it).
    """
    shared = len(keys.shape) == 2
    if attention.dropout > 0 and training:
        if shared:
            raise ValueError("target_attention with shared keys is inference-only")
        return ops.squeeze(attention(ops.expand_dims(query, 1), keys, keys,
                                     attention_mask=ops.expand_dims(mask, 1),
                                     training=training), axis=1)
    q_dense, k_dense = attention._query_dense, attention._key_dense
    v_dense, o_dense = attention._value_dense, attention._output_dense
    heads, head_dim = attention.num_heads, attention.key_dim
    width = keys.shape[-1]
    steps = ops.shape(keys)[-2]
    # 2-D matrix products, not einsums or transposed weights: oneDNN's Einsum costs
    # ~15 µs more a call and runs slower than MatMul on these shapes, and its
    # Transpose of a weight 0.1-0.3 ms (serving/README.md, "rank")
    q = ops.matmul(query, ops.reshape(q_dense.kernel, (-1, heads * head_dim)))
    q = (ops.reshape(q, (-1, heads, head_dim)) + _bias(q_dense)) * (
        1.0 / float(head_dim) ** 0.5)  # (B, H, dh)
    q_in_keys = _per_head(q, k_dense.kernel, transpose=True)  # (B, H, E)
    if shared:
        scores = ops.reshape(ops.matmul(ops.reshape(q_in_keys, (-1, width)),
                                        ops.transpose(keys)), (-1, heads, steps))
    else:
        scores = ops.matmul(q_in_keys, ops.transpose(keys, (0, 2, 1)))  # (B, H, T)
    if k_dense.bias is not None:  # the same for every step (kept: it is Keras' score)
        scores = scores + ops.sum(q * k_dense.bias, axis=-1, keepdims=True)
    mask = ops.cast(mask, "bool")
    mask = ops.expand_dims(mask, 0) if shared else ops.expand_dims(mask, 1)  # (·, 1, T)
    scores = ops.where(mask, scores, ops.full_like(scores, -1e9))
    weights = ops.softmax(scores, axis=-1)  # (B, H, T)
    if shared:
        pooled = ops.reshape(ops.matmul(ops.reshape(weights, (-1, steps)), keys),
                             (-1, heads, width))
    else:
        pooled = ops.matmul(weights, keys)  # (B, H, E)
    values = _per_head(pooled, v_dense.kernel)  # (B, H, dh)
    values = values + _bias(v_dense)
    out = ops.matmul(ops.reshape(values, (-1, heads * head_dim)),
                     ops.reshape(o_dense.kernel, (heads * head_dim, -1)))
    return ops.add(out, _bias(o_dense))  # a BiasAdd, fused into the product


def _per_head(x, kernel, transpose: bool = False):
    """`x` `(B, H, I)` times each head's slice of `kernel` `(·, H, ·)`:
    `einsum("bhi,ihk->bhk")`, or with `transpose` `einsum("bhi,khi->bhk")`, as one 2-D
    product a head (a transposed 2-D operand folds into the product; no weight is
    transposed)."""
    out = []
    for h in range(x.shape[1]):
        w = kernel[:, h]
        out.append(ops.matmul(x[:, h], ops.transpose(w) if transpose else w))
    return ops.stack(out, axis=1)


def _bias(layer):
    return 0.0 if layer.bias is None else layer.bias


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
        out = target_attention(self.attention, query, history, mask, training=training)
        return out * ops.cast(any_step(mask), out.dtype)

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
