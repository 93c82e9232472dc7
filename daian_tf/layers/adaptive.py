"""GateNU and the Intent-Aware Adaptive Network, IA2N (DAIAN.md §5.2, Eq. 15–18).

- `g = GateNU([e_sim ‖ sg(v_int)])` (Eq. 15), with PEPNet's gate
  `GateNU(x) = γ · σ(W_2 ReLU(W_1 x + b_1) + b_2)`, `γ = 2` (Eq. 16);
- `w = MLP(g)`, split as `[w_exp ‖ w_imp]`, each of `o_exp`'s and `o_imp`'s width
  ([I-9]; Eq. 17);
- `o'_exp = w_exp ⊙ o_exp`, `o'_imp = w_imp ⊙ o_imp` (Eq. 18).

Chang et al., "PEPNet: Parameter and Embedding Personalized Network for Infusing with
Personalized Prior Information", KDD 2023.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="daian")
class GateNU(keras.layers.Layer):
    """PEPNet's gate neural unit: `γ · σ(W_2 ReLU(W_1 x + b_1) + b_2)` (Eq. 16).

    Args:
        units: output width.
        hidden_units: width of the ReLU layer; None: `units`.
        gamma: `γ`, the upper bound of the output (2 lets a gate scale up or down).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(B, D)`.

    Returns:
        `(B, units)`, every value in `(0, γ)` (float32 rounding reaches the bounds
        only where the sigmoid saturates, at pre-activations beyond about ±17).
    """

    def __init__(self,
                 units: int,
                 hidden_units: Optional[int] = None,
                 gamma: float = 2.0,
                 **kwargs):
        super().__init__(**kwargs)
        if int(units) < 1:
            raise ValueError(f"`units` must be >= 1, got {units}")
        if hidden_units is not None and int(hidden_units) < 1:
            raise ValueError(f"`hidden_units` must be >= 1 or None, got {hidden_units}")
        if float(gamma) <= 0.0:
            raise ValueError(f"`gamma` must be > 0, got {gamma}")
        self.units = int(units)
        self.hidden_units = None if hidden_units is None else int(hidden_units)
        self.gamma = float(gamma)

    def build(self, inputs_shape):
        hidden = self.units if self.hidden_units is None else self.hidden_units
        self.hidden_layer = keras.layers.Dense(hidden, activation="relu",
                                               dtype=self.dtype_policy, name="hidden")
        self.hidden_layer.build(inputs_shape)
        self.gate_layer = keras.layers.Dense(self.units, activation="sigmoid",
                                             dtype=self.dtype_policy, name="gate")
        self.gate_layer.build(tuple(inputs_shape[:-1]) + (hidden,))
        self.built = True

    def call(self, inputs):
        return self.gamma * self.gate_layer(self.hidden_layer(inputs))

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape[:-1]) + (self.units,)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"units": self.units, "hidden_units": self.hidden_units,
                       "gamma": self.gamma})
        return config


@keras.saving.register_keras_serializable(package="daian")
class IntentAwareAdaptiveNetwork(keras.layers.Layer):
    """IA2N: intent- and similarity-conditioned scaling of `o_exp` and `o_imp`.

    The intent enters through a stop-gradient (Eq. 15): no gradient reaches UIM here.

    Example:

    ```python
    ia2n = IntentAwareAdaptiveNetwork(hidden_units=(64,))
    o_exp2, o_imp2 = ia2n(e_sim, v_int, o_exp, o_imp)
    ```

    Args:
        hidden_units: the GateNU's width is `hidden_units[-1]`; `hidden_units[:-1]` are
            the ReLU hidden layers of the MLP after it, whose last layer is linear of
            width `Dx + Dm` ([I-9]).
        gamma: `γ` of the GateNU.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        similarity: `(B, Ds)` `e_sim`.
        intent: `(B, Di)` `v_int` (stop-gradient inside).
        explicit: `(B, Dx)` `o_exp`.
        implicit: `(B, Dm)` `o_imp`.
        training: unused; accepted for Keras' call convention.

    Returns:
        `(o'_exp (B, Dx), o'_imp (B, Dm))`.
    """

    def __init__(self,
                 hidden_units: Sequence[int] = (64,),
                 gamma: float = 2.0,
                 **kwargs):
        super().__init__(**kwargs)
        hidden_units = tuple(int(u) for u in hidden_units)
        if not hidden_units or any(u <= 0 for u in hidden_units):
            raise ValueError("`hidden_units` must be a non-empty list of positive "
                             f"integers, got {hidden_units}")
        if float(gamma) <= 0.0:
            raise ValueError(f"`gamma` must be > 0, got {gamma}")
        self.hidden_units = hidden_units
        self.gamma = float(gamma)

    def build(self, similarity_shape, intent_shape, explicit_shape, implicit_shape):
        for name, shape in (("similarity", similarity_shape), ("intent", intent_shape),
                            ("explicit", explicit_shape), ("implicit", implicit_shape)):
            if len(shape) != 2:
                raise ValueError(f"IntentAwareAdaptiveNetwork expects {name} of shape "
                                 f"(B, D), got {shape}")
        self.explicit_dim = int(explicit_shape[-1])
        self.implicit_dim = int(implicit_shape[-1])
        width = self.hidden_units[-1]
        self.gate = GateNU(width, gamma=self.gamma, dtype=self.dtype_policy,
                           name="gate_nu")
        self.gate.build((None, similarity_shape[-1] + intent_shape[-1]))
        self.mlp_layers = []
        for i, units in enumerate(self.hidden_units[:-1]):
            layer = keras.layers.Dense(units, activation="relu",
                                       dtype=self.dtype_policy, name=f"hidden_{i}")
            layer.build((None, width))
            self.mlp_layers.append(layer)
            width = units
        self.weight_layer = keras.layers.Dense(self.explicit_dim + self.implicit_dim,
                                               dtype=self.dtype_policy, name="scales")
        self.weight_layer.build((None, width))
        self.built = True

    def call(self, similarity, intent, explicit, implicit, training=None):
        w = self.gate(ops.concatenate([similarity, ops.stop_gradient(intent)], axis=-1))
        for layer in self.mlp_layers:
            w = layer(w)
        w = self.weight_layer(w)
        w_exp, w_imp = w[:, :self.explicit_dim], w[:, self.explicit_dim:]
        return w_exp * explicit, w_imp * implicit

    def compute_output_shape(self, similarity_shape, intent_shape, explicit_shape,
                             implicit_shape):
        return tuple(explicit_shape), tuple(implicit_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"hidden_units": list(self.hidden_units), "gamma": self.gamma})
        return config
