"""ExplicitIntentExploitation and subsequence_mask (Eq. 9–10, I-7)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras
from daian_tf.layers.explicit_intent import ExplicitIntentExploitation, subsequence_mask

B, T, E, EG, H, W = 3, 5, 4, 3, 2, 6


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(B, EG)).astype("float32")
    history = rng.normal(size=(B, T, E)).astype("float32")
    sub_mask = np.array([[1, 0, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=bool)
    return target, history, sub_mask


def _attention(mha, query, keys, mask):
    """One Keras-layout multi-head attention in numpy; rows with no key give None."""
    wq, bq = mha.query_dense.get_weights()
    wk, bk = mha.key_dense.get_weights()
    wv, bv = mha.value_dense.get_weights()
    wo, bo = mha.output_dense.get_weights()
    q = np.einsum("se,ehd->shd", query, wq) + bq
    k = np.einsum("te,ehd->thd", keys, wk) + bk
    v = np.einsum("te,ehd->thd", keys, wv) + bv
    scores = np.einsum("shd,thd->hst", q, k) / np.sqrt(wq.shape[-1])
    scores = np.where(mask[None], scores, -np.inf)  # mask (S, T)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("hdw,shd->sw", wo, np.einsum("hst,thd->shd", p, v)) + bo


def _reference(layer, target, history, sub_mask):
    """Eq. 9–10 on the subsequence alone: gather S_u, MHSA on it, then MHTA."""
    out = np.zeros((target.shape[0], layer.attention_width))
    for b in range(target.shape[0]):
        s_u = history[b][sub_mask[b]]
        if len(s_u) == 0:
            continue
        full = np.ones((len(s_u), len(s_u)), bool)
        attended = _attention(layer.self_attention, s_u, s_u, full)
        out[b] = _attention(layer.target_attention, target[b][None], attended,
                            np.ones((1, len(s_u)), bool))[0]
    return out


def test_output_shape_and_reference_on_the_gathered_subsequence():
    target, history, sub_mask = _inputs()
    layer = ExplicitIntentExploitation(num_heads=H, attention_width=W)
    out = np.asarray(layer(target, history, sub_mask))
    assert out.shape == (B, W)
    assert layer.compute_output_shape((B, EG), (B, T, E)) == (B, W)
    np.testing.assert_allclose(out, _reference(layer, target, history, sub_mask),
                               rtol=1e-5, atol=1e-5)


def test_steps_outside_the_subsequence_do_not_matter_and_empty_rows_are_zero():
    target, history, sub_mask = _inputs()
    layer = ExplicitIntentExploitation(num_heads=H, attention_width=W)
    out = np.asarray(layer(target, history, sub_mask))
    changed = history.copy()
    changed[~sub_mask] = 1e3
    np.testing.assert_allclose(np.asarray(layer(target, changed, sub_mask)), out,
                               rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[2], np.zeros(W))


def test_empty_subsequence_has_finite_gradients():
    target, history, sub_mask = _inputs()
    layer = ExplicitIntentExploitation(num_heads=H, attention_width=W)
    history = tf.constant(history)
    target = tf.constant(target)
    with tf.GradientTape() as tape:
        tape.watch([history, target])
        loss = tf.reduce_sum(tf.square(layer(target, history, sub_mask)))
    grads = tape.gradient(loss, [history, target] + layer.trainable_weights)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    np.testing.assert_array_equal(np.asarray(grads[0])[2], np.zeros((T, E)))
    np.testing.assert_array_equal(np.asarray(grads[1])[2], np.zeros(EG))


def test_subsequence_mask():
    similarity = np.array([[0.9, 0.2, 0.5, 0.5], [0.1, 0.8, 0.49, 1.0]], "float32")
    valid = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    expected = (similarity >= 0.5) & valid
    np.testing.assert_array_equal(
        np.asarray(subsequence_mask(similarity, valid, 0.5)), expected)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="attention_width"):
        ExplicitIntentExploitation(num_heads=4, attention_width=10)
    with pytest.raises(ValueError, match="dropout"):
        ExplicitIntentExploitation(dropout=-0.1)
    with pytest.raises(ValueError, match=r"\(B, T, E\)"):
        ExplicitIntentExploitation(num_heads=H, attention_width=W)(
            np.zeros((B, EG), "float32"), np.zeros((B, E), "float32"),
            np.ones((B, T), bool))


def test_config_round_trip():
    target, history, sub_mask = _inputs()
    layer = ExplicitIntentExploitation(num_heads=H, attention_width=W, dropout=0.2,
                                       name="exp")
    expected = np.asarray(layer(target, history, sub_mask))
    config = layer.get_config()
    restored = ExplicitIntentExploitation.from_config(config)
    assert restored.get_config() == config
    assert keras.layers.deserialize(keras.layers.serialize(layer)).get_config() == config
    restored(target, history, sub_mask)
    restored.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(restored(target, history, sub_mask)),
                               expected, rtol=1e-6)


def test_model_save_and_load(tmp_path):
    inputs = [keras.Input((EG,)), keras.Input((T, E)), keras.Input((T,), dtype="bool")]
    out = ExplicitIntentExploitation(num_heads=H, attention_width=W)(*inputs)
    model = keras.Model(inputs, out)
    data = list(_inputs())
    expected = np.asarray(model(data))
    model.save(tmp_path / "exp.keras")
    loaded = keras.models.load_model(tmp_path / "exp.keras")
    np.testing.assert_allclose(np.asarray(loaded(data)), expected, rtol=1e-6)


def test_recent_steps_keep_the_most_recent_subsequence_steps():
    from daian_tf.layers.explicit_intent import recent_steps

    _, history, sub_mask = _inputs()
    kept, mask = (np.asarray(x) for x in recent_steps(history, sub_mask, 2))
    assert kept.shape == (B, 2, E) and mask.shape == (B, 2)
    for b in range(B):
        recent = np.flatnonzero(sub_mask[b])[-2:]  # brute force: last two True steps
        assert mask[b].sum() == len(recent)
        got = sorted(map(tuple, kept[b][mask[b]]))
        assert got == sorted(map(tuple, history[b, recent]))


@pytest.mark.parametrize("max_steps", [2, 10])
def test_max_steps_equals_attention_over_the_most_recent_steps(max_steps):
    """With a cap, the output is Eq. 9–10 on the last `max_steps` subsequence steps."""
    target, history, sub_mask = _inputs()
    layer = ExplicitIntentExploitation(num_heads=H, attention_width=W,
                                       max_steps=max_steps)
    out = np.asarray(layer(target, history, sub_mask))
    capped = sub_mask.copy()
    for b in range(B):
        capped[b, np.flatnonzero(sub_mask[b])[:-max_steps]] = False
    np.testing.assert_allclose(out, _reference(layer, target, history, capped),
                               rtol=1e-5, atol=1e-5)


def test_equals_the_composition_of_keras_attentions_with_random_biases():
    """MHSA then MHTA as two plain Keras `MultiHeadAttention` calls, on the layer's own
    weights with non-zero biases: same output and gradients as the layer (whose target
    attention takes the single-query order, `implicit_intent.target_attention`)."""
    target, history, sub_mask = (tf.constant(a) for a in _inputs())
    layer = ExplicitIntentExploitation(num_heads=H, attention_width=W)
    layer(target, history, sub_mask)
    rng = np.random.default_rng(1)
    for w in layer.weights:
        if "bias" in w.path:
            w.assign(rng.normal(size=w.shape).astype("float32"))

    def composed():
        pair = tf.logical_and(sub_mask[:, :, None], sub_mask[:, None, :])
        attended = layer.self_attention(history, history, history, attention_mask=pair)
        out = layer.target_attention(target[:, None], attended, attended,
                                     attention_mask=sub_mask[:, None])[:, 0]
        return out * tf.cast(tf.reduce_any(sub_mask, -1, keepdims=True), out.dtype)

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch([target, history])
            out = fn()
            loss = tf.reduce_sum(out * tf.range(1.0, W + 1.0))
        return out, tape.gradient(loss, [target, history] + layer.trainable_weights)

    out, g = grads(lambda: layer(target, history, sub_mask, training=True))
    ref, g_ref = grads(composed)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
