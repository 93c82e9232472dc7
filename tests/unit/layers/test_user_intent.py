"""IntentEstimator and IntentEmbedding (UIM, Eq. 4–5, I-4, I-5)."""

from __future__ import annotations

import numpy as np
import pytest

import keras
from daian_tf.layers.user_intent import IntentEmbedding, IntentEstimator

B, T, E, DU, N = 3, 5, 4, 6, 4


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    user = rng.normal(size=(B, DU)).astype("float32")
    history = rng.normal(size=(B, T, E)).astype("float32")
    trigger = rng.normal(size=(B, E)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=bool)
    return user, history, trigger, mask


def _reference(layer: IntentEstimator, user, history, trigger, mask):
    """Eq. 4–5 in numpy with the layer's weights (DIN pooling, trigger as query)."""
    q = np.repeat(trigger[:, None, :], history.shape[1], axis=1)
    x = np.concatenate([q, history, q - history, q * history], axis=-1)
    for dense in layer.pooling.hidden_layers:
        kernel, bias = dense.get_weights()
        x = 1.0 / (1.0 + np.exp(-(x @ kernel + bias)))
    kernel, bias = layer.pooling.score_layer.get_weights()
    weights = (x @ kernel + bias)[..., 0] * mask
    pooled = (weights[..., None] * history).sum(axis=1)
    h = np.concatenate([user, pooled, trigger], axis=-1)
    for dense in layer.hidden_layers:
        kernel, bias = dense.get_weights()
        h = np.maximum(h @ kernel + bias, 0.0)
    kernel, bias = layer.logit_layer.get_weights()
    return h @ kernel + bias


def test_output_is_a_distribution_matching_numpy():
    user, history, trigger, mask = _inputs()
    layer = IntentEstimator(N, hidden_units=(8, 6), attention_units=(5,))
    p_hat = np.asarray(layer(user, history, trigger, mask=mask))
    assert p_hat.shape == (B, N)
    assert layer.compute_output_shape((B, DU), (B, T, E), (B, E)) == (B, N)
    np.testing.assert_allclose(p_hat.sum(-1), np.ones(B), rtol=1e-6)
    assert np.all(p_hat > 0)
    logits = _reference(layer, user, history, trigger, mask)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(p_hat, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(layer.logits(user, history, trigger, mask=mask)), logits,
        rtol=1e-5, atol=1e-5)


def test_without_distribution_returns_raw_logits():
    user, history, trigger, mask = _inputs()
    layer = IntentEstimator(N, hidden_units=(8,), as_distribution=False)
    out = np.asarray(layer(user, history, trigger, mask=mask))
    np.testing.assert_allclose(out, _reference(layer, user, history, trigger, mask),
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(out.sum(-1), 1.0)


def test_padded_steps_do_not_matter_and_empty_history_is_finite():
    user, history, trigger, mask = _inputs()
    layer = IntentEstimator(N, hidden_units=(8,))
    out = np.asarray(layer(user, history, trigger, mask=mask))
    changed = history.copy()
    changed[~mask] = 1e3
    np.testing.assert_allclose(np.asarray(layer(user, changed, trigger, mask=mask)),
                               out, rtol=1e-6, atol=1e-6)
    assert np.all(np.isfinite(out))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_levels"):
        IntentEstimator(1)
    with pytest.raises(ValueError, match="hidden_units"):
        IntentEstimator(N, hidden_units=(4, 0))
    with pytest.raises(ValueError, match="attention_units"):
        IntentEstimator(N, attention_units=(-1,))
    user, history, trigger, _ = _inputs()
    with pytest.raises(ValueError, match="same width E"):
        IntentEstimator(N)(user, history, np.zeros((B, E + 1), "float32"))
    with pytest.raises(ValueError, match="needs a built layer"):
        IntentEstimator(N).logits(user, history, trigger)


def test_intent_embedding_is_the_expectation_of_level_rows():
    table = np.arange(N * 3, dtype="float32").reshape(N, 3)
    layer = IntentEmbedding(N, 3)
    layer.build((None, N))
    layer.set_weights([table])
    intent = np.array([[1, 0, 0, 0], [0.25, 0.25, 0.5, 0]], "float32")
    expected = np.stack([table[0], 0.25 * table[0] + 0.25 * table[1] + 0.5 * table[2]])
    np.testing.assert_allclose(np.asarray(layer(intent)), expected, rtol=1e-6)
    assert layer.compute_output_shape((B, N)) == (B, 3)
    with pytest.raises(ValueError, match="num_levels=4"):
        IntentEmbedding(N, 3)(np.zeros((B, N + 1), "float32"))
    with pytest.raises(ValueError, match="output_dim"):
        IntentEmbedding(N, 0)


def test_config_round_trip_and_weights():
    user, history, trigger, mask = _inputs()
    for layer, args in (
            (IntentEstimator(N, hidden_units=(8,), attention_units=(5, 3),
                             as_distribution=False, name="uim"),
             (user, history, trigger)),
            (IntentEmbedding(N, 3, embeddings_initializer="ones", name="levels"),
             (np.full((B, N), 1.0 / N, "float32"),))):
        expected = np.asarray(layer(*args))
        config = layer.get_config()
        restored = type(layer).from_config(config)
        assert restored.get_config() == config
        revived = keras.layers.deserialize(keras.layers.serialize(layer))
        assert revived.get_config() == config
        restored(*args)
        restored.set_weights(layer.get_weights())
        np.testing.assert_allclose(np.asarray(restored(*args)), expected, rtol=1e-6)


def test_model_save_and_load(tmp_path):
    user_in = keras.Input((DU,), name="user")
    hist_in = keras.Input((T, E), name="history")
    trig_in = keras.Input((E,), name="trigger")
    mask_in = keras.Input((T,), dtype="bool", name="mask")
    p_hat = IntentEstimator(N, hidden_units=(8,))(user_in, hist_in, trig_in,
                                                   mask=mask_in)
    v_int = IntentEmbedding(N, 3)(p_hat)
    model = keras.Model([user_in, hist_in, trig_in, mask_in], [p_hat, v_int])
    inputs = list(_inputs())
    expected = [np.asarray(o) for o in model(inputs)]
    model.save(tmp_path / "uim.keras")
    loaded = keras.models.load_model(tmp_path / "uim.keras")
    for got, want in zip(loaded(inputs), expected):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
