"""DIN's activation unit and the attention pooling built on it (DAIAN.md §2).

Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="daian")
class DinAttentionPooling(keras.layers.Layer):
    """Attention pooling of a sequence with DIN's activation unit.

    `o = Σ_j w_j · k_j` with `w_j = a(k_j, q) = MLP([q, k_j, q − k_j, q ⊙ k_j])`, a
    scalar per step. By default the weights are not normalised (DIN's original form);
    `use_softmax=True` normalises them over the valid steps (DAIAN.md [I-1]). Padded
    steps (`mask` False) get weight exactly 0, and a row with no valid step gives a
    zero vector.

    Example:

    ```python
    pooling = DinAttentionPooling(hidden_units=(64, 32))
    pooled = pooling(query, keys, mask=ids != 0)  # (B, E)
    ```

    Args:
        hidden_units: widths of the activation unit's hidden layers; may be empty
            (then the unit is one linear map of the 4E features to a scalar).
        activation: activation of the hidden layers (DIN uses sigmoid).
        use_softmax: normalise the weights with a masked softmax over the steps.
        kernel_initializer: initializer of every kernel (cloned per sublayer).
        bias_initializer: initializer of every bias (cloned per sublayer).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        query: `(B, E)` the query, e.g. the target item.
        keys: `(B, T, E)` the sequence, e.g. the behavior history.
        mask: optional boolean `(B, T)`, True on real steps; None: all steps are real.
        training: unused; accepted for Keras' call convention.

    Returns:
        `(B, E)` the weighted sum of `keys`.
    """

    def __init__(self,
                 hidden_units: Sequence[int] = (64, 32),
                 activation: str = "sigmoid",
                 use_softmax: bool = False,
                 kernel_initializer: Any = "glorot_uniform",
                 bias_initializer: Any = "zeros",
                 **kwargs):
        super().__init__(**kwargs)
        hidden_units = tuple(int(u) for u in hidden_units)
        if any(u <= 0 for u in hidden_units):
            raise ValueError("`hidden_units` must be positive integers, got "
                             f"{hidden_units}")
        self.hidden_units = hidden_units
        self.activation = keras.activations.get(activation)
        self.use_softmax = bool(use_softmax)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        # The mask is an explicit call argument; the pooled output carries none.
        self.supports_masking = True

    def _dense(self, units: int, activation, name: str) -> keras.layers.Dense:
        return keras.layers.Dense(
            units, activation=activation,
            kernel_initializer=keras.initializers.get(
                keras.initializers.serialize(self.kernel_initializer)),
            bias_initializer=keras.initializers.get(
                keras.initializers.serialize(self.bias_initializer)),
            dtype=self.dtype_policy, name=name)

    def build(self, query_shape, keys_shape):
        if len(query_shape) != 2 or len(keys_shape) != 3:
            raise ValueError("DinAttentionPooling expects query (B, E) and keys "
                             f"(B, T, E), got query {query_shape} and keys {keys_shape}")
        if query_shape[-1] != keys_shape[-1]:
            raise ValueError("query and keys must have the same last dimension, got "
                             f"query {query_shape} and keys {keys_shape}")
        width = 4 * keys_shape[-1]
        self.hidden_layers = []
        for i, units in enumerate(self.hidden_units):
            layer = self._dense(units, self.activation, f"hidden_{i}")
            layer.build((None, None, width))
            self.hidden_layers.append(layer)
            width = units
        self.score_layer = self._dense(1, None, "score")
        self.score_layer.build((None, None, width))
        self.built = True

    def call(self, query, keys, mask=None, training=None):
        first = self._first_layer(self.hidden_layers[0] if self.hidden_layers
                                  else self.score_layer, query, keys)
        weights = self._weights(first, mask)  # (B, T)
        return ops.sum(ops.expand_dims(weights, -1) * keys, axis=1)

    def pool_shared(self, query, keys, mask=None):
        """The same pooling for `N` queries over ONE sequence (a ranking request: one
        user's history, N candidates): `query` `(N, E)`, `keys` `(T, E)`, `mask`
        `(T,)` → `(N, E)`, equal to `call(query, tile(keys), tile(mask))`.

        The first layer at step j is `q (W_q + W_d) + b + k_j (W_k − W_d) + (q ⊙ k_j)
        W_p = q K_j + c_j` with `K_j = diag(k_j) W_p + W_q + W_d` `(E, U)` and
        `c_j = k_j (W_k − W_d) + b` `(U,)`. The T blocks side by side, `(E, T·U)`, and
        their biases `(T·U,)` are built once for the sequence; the first layer of all
        N·T (query, step) pairs is then one 2-D product `(N, E) × (E, T·U)` plus a bias
        vector, which grappler fuses into the product (TensorFlow 2.16 on CPU fuses a
        ReLU too, not the sigmoid: that stays one pass). The later layers run on its
        `(N·T, U)` rows, and the pooling is one `(N, T) × (T, E)` product. Only the
        small `(T, E)` keys are transposed.
        """
        layer = self.hidden_layers[0] if self.hidden_layers else self.score_layer
        width = keys.shape[-1]
        w_q, w_k, w_d, w_p = (layer.kernel[i * width:(i + 1) * width] for i in range(4))
        kernel = (ops.expand_dims(ops.transpose(keys), -1) * ops.expand_dims(w_p, 1)
                  + ops.expand_dims(w_q + w_d, 1))  # (E, T, U)
        bias = ops.matmul(keys, w_k - w_d)  # (T, U)
        if layer.use_bias:
            bias = bias + layer.bias
        # ops.add, not `+`: Keras' TensorFlow backend makes it a BiasAdd, which
        # grappler fuses into the product (`+` is an AddV2: one more pass over N·T·U)
        product = ops.matmul(query, ops.reshape(kernel, (width, -1)))
        first = layer.activation(ops.add(product, ops.reshape(bias, (-1,))))  # (N, T·U)
        first = ops.reshape(first, (-1, ops.shape(keys)[0], layer.units))  # (N, T, U)
        return ops.matmul(self._weights(first, None if mask is None else
                                        ops.expand_dims(mask, 0)), keys)

    def _weights(self, first, mask):
        """The attention weights `(B, T)` from the first layer's output `(B, T, U)`,
        with `mask` `(B, T)` or `(1, T)` (None: every step is real). The later layers
        run on the `(B·T, U)` rows: 2-D products with the bias fused (a 3-D input
        would be a batched product, then the bias added apart)."""
        x = first
        later = (self.hidden_layers + [self.score_layer])[1:]
        if later:
            x = ops.reshape(x, (-1, x.shape[-1]))
            for layer in later:
                x = layer(x)
        scores = ops.reshape(x, ops.shape(first)[:-1])
        if mask is None:
            valid = ops.ones_like(scores)
        else:
            valid = ops.cast(mask, scores.dtype) * ops.ones_like(scores)
        if self.use_softmax:
            # Padded steps get a large negative score, then weight 0 after the product;
            # an all-padded row gets a uniform softmax times zeros: all weights 0.
            scores = ops.where(valid > 0, scores, ops.full_like(scores, -1e9))
            scores = ops.softmax(scores, axis=-1)
        return scores * valid

    @staticmethod
    def _first_layer(layer, query, keys):
        """`layer([q, k_j, q − k_j, q ⊙ k_j])` for every step j, computed as
        `q (W_q + W_d) + b + k_j (W_k − W_d + diag(q) W_p)` with `layer`'s kernel
        `[W_q; W_k; W_d; W_p]`: the same function and weights, with the query's parts
        folded once per row into an `E × U` matrix, so a step costs `E·U`
        multiply-adds instead of `4E·U`."""
        width = keys.shape[-1]
        w_q, w_k, w_d, w_p = (layer.kernel[i * width:(i + 1) * width] for i in range(4))
        per_row = ops.matmul(query, w_q + w_d)  # (B, U)
        if layer.use_bias:
            per_row = per_row + layer.bias
        per_row_kernel = (ops.expand_dims(w_k - w_d, 0)  # (B, E, U)
                          + ops.expand_dims(query, -1) * ops.expand_dims(w_p, 0))
        per_step = ops.matmul(keys, per_row_kernel)  # (B, T, U)
        return layer.activation(per_step + ops.expand_dims(per_row, 1))

    def compute_mask(self, inputs, previous_mask=None):
        return None

    def compute_output_shape(self, query_shape, keys_shape):
        return (keys_shape[0], keys_shape[-1])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "hidden_units": list(self.hidden_units),
            "activation": keras.activations.serialize(self.activation),
            "use_softmax": self.use_softmax,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        })
        return config
