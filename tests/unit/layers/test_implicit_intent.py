"""ImplicitIntentExploration (I2E, Eq. 6–8, I-6)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras
from daian_tf.layers.implicit_intent import (ImplicitIntentExploration,
                                             target_attention)

B, T, E, ET, EI, H, W = 3, 5, 4, 3, 2, 2, 6


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    trigger = rng.normal(size=(B, ET)).astype("float32")
    intent = rng.normal(size=(B, EI)).astype("float32")
    history = rng.normal(size=(B, T, E)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=bool)
    return trigger, intent, history, mask


def _reference(layer: ImplicitIntentExploration, trigger, intent, history, mask):
    """Eq. 6–8 in numpy: per-head masked softmax attention, heads concatenated."""
    kq, bq = layer.query_layer.get_weights()
    q_ib = np.concatenate([trigger, intent], -1) @ kq + bq  # (B, W)
    mha = layer.attention
    wq, bq = mha.query_dense.get_weights()  # (W, H, d), (H, d)
    wk, bk = mha.key_dense.get_weights()  # (E, H, d)
    wv, bv = mha.value_dense.get_weights()
    wo, bo = mha.output_dense.get_weights()  # (H, d, W), (W,)
    q = np.einsum("bw,whd->bhd", q_ib, wq) + bq
    k = np.einsum("bte,ehd->bthd", history, wk) + bk
    v = np.einsum("bte,ehd->bthd", history, wv) + bv
    scores = np.einsum("bhd,bthd->bht", q, k) / np.sqrt(wq.shape[-1])
    out = np.zeros((trigger.shape[0], wo.shape[-1]))
    for b in range(trigger.shape[0]):
        if not mask[b].any():
            continue  # an empty history gives zeros
        s = np.where(mask[b][None, :], scores[b], -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        heads = np.einsum("ht,thd->hd", p, v[b])
        out[b] = np.einsum("hd,hdw->w", heads, wo) + bo
    return out


def test_output_shape_and_numpy_reference():
    trigger, intent, history, mask = _inputs()
    layer = ImplicitIntentExploration(num_heads=H, attention_width=W)
    out = np.asarray(layer(trigger, intent, history, mask=mask))
    assert out.shape == (B, W)
    assert layer.compute_output_shape((B, ET), (B, EI), (B, T, E)) == (B, W)
    np.testing.assert_allclose(out, _reference(layer, trigger, intent, history, mask),
                               rtol=1e-5, atol=1e-5)


def test_padded_steps_do_not_matter_and_empty_rows_are_zero():
    trigger, intent, history, mask = _inputs()
    layer = ImplicitIntentExploration(num_heads=H, attention_width=W)
    out = np.asarray(layer(trigger, intent, history, mask=mask))
    changed = history.copy()
    changed[~mask] = 1e3
    np.testing.assert_allclose(
        np.asarray(layer(trigger, intent, changed, mask=mask)), out,
        rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[2], np.zeros(W))
    longer = np.concatenate([history, np.ones((B, 2, E), "float32")], axis=1)
    longer_mask = np.concatenate([mask, np.zeros((B, 2), bool)], axis=1)
    np.testing.assert_allclose(
        np.asarray(layer(trigger, intent, longer, mask=longer_mask)), out,
        rtol=1e-5, atol=1e-5)


def test_no_mask_means_every_step_counts():
    trigger, intent, history, _ = _inputs()
    layer = ImplicitIntentExploration(num_heads=H, attention_width=W)
    np.testing.assert_allclose(
        np.asarray(layer(trigger, intent, history)),
        np.asarray(layer(trigger, intent, history, mask=np.ones((B, T), bool))),
        rtol=1e-6)


def test_empty_row_has_finite_gradients():
    trigger, intent, history, mask = _inputs()
    layer = ImplicitIntentExploration(num_heads=H, attention_width=W)
    history = tf.constant(history)
    with tf.GradientTape() as tape:
        tape.watch(history)
        loss = tf.reduce_sum(layer(trigger, intent, history, mask=mask))
    grads = tape.gradient(loss, [history] + layer.trainable_weights)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    np.testing.assert_array_equal(np.asarray(grads[0])[2], np.zeros((T, E)))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="attention_width"):
        ImplicitIntentExploration(num_heads=4, attention_width=6)
    with pytest.raises(ValueError, match="num_heads"):
        ImplicitIntentExploration(num_heads=0)
    with pytest.raises(ValueError, match="dropout"):
        ImplicitIntentExploration(dropout=1.0)


def test_config_round_trip():
    trigger, intent, history, mask = _inputs()
    layer = ImplicitIntentExploration(num_heads=H, attention_width=W, dropout=0.1,
                                      name="i2e")
    expected = np.asarray(layer(trigger, intent, history, mask=mask))
    config = layer.get_config()
    restored = ImplicitIntentExploration.from_config(config)
    assert restored.get_config() == config
    assert keras.layers.deserialize(keras.layers.serialize(layer)).get_config() == config
    restored(trigger, intent, history, mask=mask)
    restored.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(restored(trigger, intent, history, mask=mask)),
                               expected, rtol=1e-6)


def test_model_save_and_load(tmp_path):
    inputs = [keras.Input((ET,)), keras.Input((EI,)), keras.Input((T, E)),
              keras.Input((T,), dtype="bool")]
    out = ImplicitIntentExploration(num_heads=H, attention_width=W)(
        inputs[0], inputs[1], inputs[2], mask=inputs[3])
    model = keras.Model(inputs, out)
    data = list(_inputs())
    expected = np.asarray(model(data))
    model.save(tmp_path / "i2e.keras")
    loaded = keras.models.load_model(tmp_path / "i2e.keras")
    np.testing.assert_allclose(np.asarray(loaded(data)), expected, rtol=1e-6)


def _random_biases(layer, seed=1):
    """Non-zero biases (Keras initialises them to zero, which would hide a bias bug)."""
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        if "bias" in w.path:
            w.assign(rng.normal(size=w.shape).astype("float32"))


def test_target_attention_is_keras_multi_head_attention_values_and_gradients():
    """The single-query order of computation gives the layer's own output and
    gradients (random biases; rows with at least one key)."""
    rng = np.random.default_rng(0)
    query = tf.constant(rng.normal(size=(B, W)).astype("float32"))
    keys = tf.constant(rng.normal(size=(B, T, E)).astype("float32"))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 1]], dtype=bool)
    mha = keras.layers.MultiHeadAttention(num_heads=H, key_dim=W // H, output_shape=W)
    mha.build((B, 1, W), (B, T, E))
    _random_biases(mha)

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch([query, keys])
            out = fn()
            loss = tf.reduce_sum(out * tf.range(1.0, W + 1.0))
        return out, tape.gradient(loss, [query, keys] + mha.trainable_weights)

    fast, fast_g = grads(lambda: target_attention(mha, query, keys, mask))
    ref, ref_g = grads(lambda: mha(query[:, None], keys, keys,
                                   attention_mask=mask[:, None])[:, 0])
    np.testing.assert_allclose(np.asarray(fast), np.asarray(ref), rtol=1e-5, atol=1e-5)
    for g_fast, g_ref in zip(fast_g, ref_g):
        np.testing.assert_allclose(np.asarray(g_fast), np.asarray(g_ref),
                                   rtol=1e-4, atol=1e-5)


def test_target_attention_with_dropout_in_training_is_the_layer_call():
    rng = np.random.default_rng(0)
    query = rng.normal(size=(B, W)).astype("float32")
    keys = rng.normal(size=(B, T, E)).astype("float32")
    mask = np.ones((B, T), bool)
    mha = keras.layers.MultiHeadAttention(num_heads=H, key_dim=W // H, output_shape=W,
                                          dropout=0.5, seed=3)
    mha.build((B, 1, W), (B, T, E))
    inference = target_attention(mha, query, keys, mask, training=False)
    np.testing.assert_allclose(np.asarray(inference),
                               np.asarray(mha(query[:, None], keys, keys)[:, 0]),
                               rtol=1e-5, atol=1e-5)
    dropped = target_attention(mha, query, keys, mask, training=True)
    assert not np.allclose(np.asarray(dropped), np.asarray(inference))


@pytest.mark.parametrize("row", [0, 1, 2])
def test_target_attention_over_shared_keys_is_the_layer_on_repeated_keys(row):
    """Keys `(T, E)` shared by every query (a ranking request's one history) give
    Keras' attention over those keys repeated for each query; an empty mask gives the
    uniform average, as with per-row keys."""
    rng = np.random.default_rng(1)
    query = rng.normal(size=(B, W)).astype("float32")
    keys = rng.normal(size=(B, T, E)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=bool)
    mha = keras.layers.MultiHeadAttention(num_heads=H, key_dim=W // H, output_shape=W)
    mha.build((B, 1, W), (B, T, E))
    _random_biases(mha)
    tiled_keys = np.repeat(keys[row:row + 1], B, axis=0)
    tiled_mask = np.repeat(mask[row:row + 1], B, axis=0)
    shared = target_attention(mha, query, keys[row], mask[row])
    per_row = target_attention(mha, query, tiled_keys, tiled_mask)
    np.testing.assert_allclose(np.asarray(shared), np.asarray(per_row),
                               rtol=1e-5, atol=1e-5)
    if mask[row].any():
        ref = mha(query[:, None], tiled_keys, tiled_keys,
                  attention_mask=tiled_mask[:, None])[:, 0]
        np.testing.assert_allclose(np.asarray(shared), np.asarray(ref),
                                   rtol=1e-5, atol=1e-5)


def test_target_attention_over_shared_keys_refuses_training_dropout():
    mha = keras.layers.MultiHeadAttention(num_heads=H, key_dim=W // H, output_shape=W,
                                          dropout=0.5)
    mha.build((B, 1, W), (B, T, E))
    with pytest.raises(ValueError, match="inference-only"):
        target_attention(mha, np.zeros((B, W), "float32"),
                         np.zeros((T, E), "float32"), np.ones((T,), bool),
                         training=True)
