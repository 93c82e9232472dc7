"""User Intent Modeling, UIM: intent estimation and the level table (DAIAN.md §3.2).

Eq. 4–5: `h = MLP([e_u ‖ pool(E_u; e_tr) ‖ e_tr])` with `pool` DIN attention whose query
is the trigger ([I-4]), and `p̂ = softmax(W h + b) ∈ Δ^n`, the predicted distribution of
the request's intent over the `n` similarity levels. The intent representation is
`v_int = p̂ · T_level`, the expectation of learned level embeddings ([I-5]).
The target item is never an input: intent is a property of the request.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

from daian_tf.layers.attention import DinAttentionPooling


def _positive_units(name: str, units: Sequence[int]) -> tuple:
    units = tuple(int(u) for u in units)
    if any(u <= 0 for u in units):
        raise ValueError(f"`{name}` must be positive integers, got {units}")
    return units


@keras.saving.register_keras_serializable(package="daian")
class IntentEstimator(keras.layers.Layer):
    """Intent estimation of UIM (Eq. 4–5, [I-4]).

    Example:

    ```python
    estimator = IntentEstimator(num_levels=6)
    p_hat = estimator(user, history, trigger, mask=history_ids != 0)  # (B, 6)
    ```

    Args:
        num_levels: `n`, the number of similarity levels (intent classes).
        hidden_units: widths of the ReLU MLP producing `h`; may be empty.
        attention_units: hidden widths of the DIN activation unit of `pool`.
        as_distribution: return `softmax(logits)` (p̂ on the simplex). False returns
            the raw logits: the `w/o UIM` ablation (intent not a distribution).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        user: `(B, Du)` user profile embedding `e_u`.
        history: `(B, T, E)` behavior sequence `E_u`.
        trigger: `(B, E)` trigger item embedding `e_tr`, same width as `history`.
        mask: optional boolean `(B, T)`, True on real steps; None: all steps are real.
        training: unused; accepted for Keras' call convention.

    Returns:
        `(B, num_levels)`: p̂ (rows sum to 1) when `as_distribution`, else the logits.
    """

    def __init__(self,
                 num_levels: int,
                 hidden_units: Sequence[int] = (128, 64),
                 attention_units: Sequence[int] = (64, 32),
                 as_distribution: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        if int(num_levels) < 2:
            raise ValueError(f"`num_levels` must be >= 2, got {num_levels}")
        self.num_levels = int(num_levels)
        self.hidden_units = _positive_units("hidden_units", hidden_units)
        self.attention_units = _positive_units("attention_units", attention_units)
        self.as_distribution = bool(as_distribution)
        # The mask is an explicit call argument; the output carries none.
        self.supports_masking = True

    def build(self, user_shape, history_shape, trigger_shape):
        if len(user_shape) != 2 or len(history_shape) != 3 or len(trigger_shape) != 2:
            raise ValueError("IntentEstimator expects user (B, Du), history (B, T, E) "
                             f"and trigger (B, E), got user {user_shape}, history "
                             f"{history_shape} and trigger {trigger_shape}")
        if history_shape[-1] != trigger_shape[-1]:
            raise ValueError("history and trigger must have the same width E (the "
                             "trigger is the attention query), got history "
                             f"{history_shape} and trigger {trigger_shape}")
        self.pooling = DinAttentionPooling(self.attention_units,
                                           dtype=self.dtype_policy, name="pool")
        self.pooling.build(trigger_shape, history_shape)
        width = user_shape[-1] + 2 * trigger_shape[-1]
        self.hidden_layers = []
        for i, units in enumerate(self.hidden_units):
            layer = keras.layers.Dense(units, activation="relu",
                                       dtype=self.dtype_policy, name=f"hidden_{i}")
            layer.build((None, width))
            self.hidden_layers.append(layer)
            width = units
        self.logit_layer = keras.layers.Dense(self.num_levels, dtype=self.dtype_policy,
                                              name="logits")
        self.logit_layer.build((None, width))
        self.built = True

    def logits(self, user, history, trigger, mask=None, training=None):
        """The logits `W h + b`, `(B, num_levels)`, of a built layer (Eq. 4–5)."""
        if not self.built:
            raise ValueError("IntentEstimator.logits needs a built layer: call the "
                             "layer once first")
        pooled = self.pooling(trigger, history, mask=mask)
        h = ops.concatenate([user, pooled, trigger], axis=-1)
        for layer in self.hidden_layers:
            h = layer(h)
        return self.logit_layer(h)

    def call(self, user, history, trigger, mask=None, training=None):
        logits = self.logits(user, history, trigger, mask=mask, training=training)
        return ops.softmax(logits, axis=-1) if self.as_distribution else logits

    def compute_mask(self, *args, **kwargs):
        return None

    def compute_output_shape(self, user_shape, history_shape, trigger_shape):
        return (user_shape[0], self.num_levels)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "num_levels": self.num_levels,
            "hidden_units": list(self.hidden_units),
            "attention_units": list(self.attention_units),
            "as_distribution": self.as_distribution,
        })
        return config


@keras.saving.register_keras_serializable(package="daian")
class IntentEmbedding(keras.layers.Layer):
    """The level table `T_level` and `v_int = p̂ · T_level` (Eq. 5, [I-5]).

    With `intent` a distribution the output is the expectation of the level embeddings;
    with a one-hot intent it is one row of the table.

    Args:
        num_levels: `n`, the rows of the table.
        output_dim: `d`, the width of a level embedding.
        embeddings_initializer: initializer of the table.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        intent: `(B, num_levels)` intent distribution (or logits, `w/o UIM`).

    Returns:
        `(B, output_dim)` the intent representation `v_int`.
    """

    def __init__(self,
                 num_levels: int,
                 output_dim: int,
                 embeddings_initializer: Any = "uniform",
                 **kwargs):
        super().__init__(**kwargs)
        if int(num_levels) < 1:
            raise ValueError(f"`num_levels` must be >= 1, got {num_levels}")
        if int(output_dim) < 1:
            raise ValueError(f"`output_dim` must be >= 1, got {output_dim}")
        self.num_levels = int(num_levels)
        self.output_dim = int(output_dim)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, intent_shape):
        if intent_shape[-1] != self.num_levels:
            raise ValueError(f"intent must have num_levels={self.num_levels} columns, "
                             f"got shape {intent_shape}")
        self.level_table = self.add_weight(
            name="level_table", shape=(self.num_levels, self.output_dim),
            initializer=self.embeddings_initializer)
        self.built = True

    def call(self, intent):
        return ops.matmul(intent, self.level_table)

    def compute_output_shape(self, intent_shape):
        return tuple(intent_shape[:-1]) + (self.output_dim,)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "num_levels": self.num_levels,
            "output_dim": self.output_dim,
            "embeddings_initializer": keras.initializers.serialize(
                self.embeddings_initializer),
        })
        return config
