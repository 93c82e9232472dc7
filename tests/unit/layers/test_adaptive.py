"""GateNU and IntentAwareAdaptiveNetwork (IA2N, Eq. 15–18, I-9)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras
from daian_tf.layers.adaptive import GateNU, IntentAwareAdaptiveNetwork

B, DS, DI, DX, DM = 4, 3, 2, 5, 6


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gate(layer: GateNU, x):
    """Eq. 16 in numpy with the layer's weights."""
    w1, b1 = layer.hidden_layer.get_weights()
    w2, b2 = layer.gate_layer.get_weights()
    return layer.gamma * _sigmoid(np.maximum(x @ w1 + b1, 0.0) @ w2 + b2)


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(B, d)).astype("float32") for d in (DS, DI, DX, DM)]


def test_gate_nu_matches_numpy_and_stays_within_bounds():
    rng = np.random.default_rng(0)
    x = (3.0 * rng.normal(size=(64, 7))).astype("float32")
    layer = GateNU(5, hidden_units=9, gamma=2.0)
    out = np.asarray(layer(x))
    assert out.shape == (64, 5)
    assert [tuple(w.shape) for w in layer.weights] == [(7, 9), (9,), (9, 5), (5,)]
    np.testing.assert_allclose(out, _gate(layer, x.astype("float64")), rtol=1e-5)
    assert np.all(out > 0.0) and np.all(out < 2.0)
    # Huge inputs saturate the sigmoid: float32 reaches the bounds, never beyond.
    huge = np.asarray(layer(x * 1e4))
    assert np.all(np.isfinite(huge)) and np.all(huge >= 0.0) and np.all(huge <= 2.0)
    assert GateNU(4).compute_output_shape((B, 3)) == (B, 4)


def test_gate_nu_hidden_defaults_to_units():
    layer = GateNU(4, gamma=3.0)
    out = np.asarray(layer(np.ones((2, 3), "float32") * 50.0))
    assert [tuple(w.shape) for w in layer.weights] == [(3, 4), (4,), (4, 4), (4,)]
    assert np.all(out <= 3.0)


def test_ia2n_matches_numpy():
    similarity, intent, explicit, implicit = _inputs()
    layer = IntentAwareAdaptiveNetwork(hidden_units=(6, 4), gamma=2.0)
    out_exp, out_imp = (np.asarray(o) for o in
                        layer(similarity, intent, explicit, implicit))
    assert out_exp.shape == (B, DX) and out_imp.shape == (B, DM)
    g = _gate(layer.gate, np.concatenate([similarity, intent], -1))
    assert layer.gate.units == 4
    for dense in layer.mlp_layers:
        kernel, bias = dense.get_weights()
        g = np.maximum(g @ kernel + bias, 0.0)
    kernel, bias = layer.weight_layer.get_weights()
    w = g @ kernel + bias
    np.testing.assert_allclose(out_exp, w[:, :DX] * explicit, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out_imp, w[:, DX:] * implicit, rtol=1e-5, atol=1e-6)
    assert layer.compute_output_shape((B, DS), (B, DI), (B, DX), (B, DM)) == (
        (B, DX), (B, DM))


def test_ia2n_stops_the_gradient_into_intent_but_not_into_similarity():
    similarity, intent, explicit, implicit = (tf.constant(x) for x in _inputs())
    layer = IntentAwareAdaptiveNetwork(hidden_units=(6,))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([similarity, intent])
        out_exp, out_imp = layer(similarity, intent, explicit, implicit)
        loss = tf.reduce_sum(out_exp) + tf.reduce_sum(tf.square(out_imp))
    grad_intent = tape.gradient(loss, intent)
    assert grad_intent is None or not np.any(np.asarray(grad_intent))
    assert np.any(np.asarray(tape.gradient(loss, similarity)) != 0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="units"):
        GateNU(0)
    with pytest.raises(ValueError, match="hidden_units"):
        GateNU(3, hidden_units=0)
    with pytest.raises(ValueError, match="gamma"):
        GateNU(3, gamma=0.0)
    with pytest.raises(ValueError, match="hidden_units"):
        IntentAwareAdaptiveNetwork(hidden_units=())
    with pytest.raises(ValueError, match="gamma"):
        IntentAwareAdaptiveNetwork(gamma=-1.0)
    similarity, intent, explicit, implicit = _inputs()
    with pytest.raises(ValueError, match="explicit"):
        IntentAwareAdaptiveNetwork()(similarity, intent, explicit[:, :, None], implicit)


def test_config_round_trip():
    data = _inputs()
    for layer, args in ((GateNU(3, hidden_units=5, gamma=1.5, name="gate"),
                         (data[0],)),
                        (IntentAwareAdaptiveNetwork((6, 4), gamma=1.5, name="ia2n"),
                         data)):
        expected = keras.tree.flatten(layer(*args))
        config = layer.get_config()
        restored = type(layer).from_config(config)
        assert restored.get_config() == config
        revived = keras.layers.deserialize(keras.layers.serialize(layer))
        assert revived.get_config() == config
        restored(*args)
        restored.set_weights(layer.get_weights())
        for got, want in zip(keras.tree.flatten(restored(*args)), expected):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)


def test_model_save_and_load(tmp_path):
    inputs = [keras.Input((d,)) for d in (DS, DI, DX, DM)]
    out_exp, out_imp = IntentAwareAdaptiveNetwork((6,))(*inputs)
    model = keras.Model(inputs, [out_exp, out_imp])
    data = _inputs()
    expected = [np.asarray(o) for o in model(data)]
    model.save(tmp_path / "ia2n.keras")
    loaded = keras.models.load_model(tmp_path / "ia2n.keras")
    for got, want in zip(loaded(data), expected):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
