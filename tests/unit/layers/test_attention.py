"""DinAttentionPooling: shapes, masking, exact values, arguments, config, save/load."""

from __future__ import annotations

import numpy as np
import pytest

import keras
from daian_tf.layers.attention import DinAttentionPooling

B, T, E = 3, 5, 4


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(B, E)).astype("float32")
    keys = rng.normal(size=(B, T, E)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=bool)
    return query, keys, mask


def _reference(layer: DinAttentionPooling, query, keys, mask, activation):
    """The formula of DAIAN.md §2 in numpy, with the layer's weights."""
    q = np.repeat(query[:, None, :], keys.shape[1], axis=1)
    x = np.concatenate([q, keys, q - keys, q * keys], axis=-1)
    for dense in layer.hidden_layers:
        kernel, bias = (np.asarray(w) for w in dense.get_weights())
        x = activation(x @ kernel + bias)
    kernel, bias = (np.asarray(w) for w in layer.score_layer.get_weights())
    scores = (x @ kernel + bias)[..., 0]
    if layer.use_softmax:
        masked = np.where(mask, scores, -np.inf)
        with np.errstate(invalid="ignore"):
            weights = np.exp(masked - masked.max(-1, keepdims=True))
            weights = np.nan_to_num(weights / weights.sum(-1, keepdims=True))
    else:
        weights = scores * mask
    return (weights[..., None] * keys).sum(axis=1)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_output_shape():
    query, keys, mask = _inputs()
    layer = DinAttentionPooling(hidden_units=(8, 4))
    out = layer(query, keys, mask=mask)
    assert tuple(out.shape) == (B, E)
    assert layer.compute_output_shape((B, E), (B, T, E)) == (B, E)


@pytest.mark.parametrize("hidden_units", [(8, 4), ()])
@pytest.mark.parametrize("use_softmax", [False, True])
def test_matches_numpy_reference(use_softmax, hidden_units):
    query, keys, mask = _inputs()
    layer = DinAttentionPooling(hidden_units=hidden_units, use_softmax=use_softmax,
                                bias_initializer="random_normal")
    out = np.asarray(layer(query, keys, mask=mask))
    np.testing.assert_allclose(out, _reference(layer, query, keys, mask, _sigmoid),
                               rtol=1e-5, atol=1e-5)


def test_exact_values_with_ones_initializers():
    # No hidden layer, kernel ones, bias zero: a(k, q) = Σ(q + k + q − k + q ⊙ k)
    # = 2 Σq + q·k, worked out by hand for these inputs.
    query = np.array([[1.0, 0.0]], dtype="float32")
    keys = np.array([[[1.0, 2.0], [0.0, 3.0], [5.0, 5.0]]], dtype="float32")
    mask = np.array([[True, True, False]])
    layer = DinAttentionPooling(hidden_units=(), kernel_initializer="ones",
                                bias_initializer="zeros")
    out = np.asarray(layer(query, keys, mask=mask))
    # weights: step 0: 2 + 1 = 3; step 1: 2 + 0 = 2; step 2 padded: 0.
    np.testing.assert_allclose(out, [[3 * 1 + 2 * 0, 3 * 2 + 2 * 3]])
    soft = DinAttentionPooling(hidden_units=(), use_softmax=True,
                               kernel_initializer="ones", bias_initializer="zeros")
    w0 = np.exp(3.0) / (np.exp(3.0) + np.exp(2.0))
    np.testing.assert_allclose(np.asarray(soft(query, keys, mask=mask)),
                               [[w0 * 1 + (1 - w0) * 0, w0 * 2 + (1 - w0) * 3]],
                               rtol=1e-6)


@pytest.mark.parametrize("use_softmax", [False, True])
def test_padded_steps_do_not_matter_and_all_padded_rows_are_zero(use_softmax):
    query, keys, mask = _inputs()
    layer = DinAttentionPooling(hidden_units=(8,), use_softmax=use_softmax)
    out = np.asarray(layer(query, keys, mask=mask))
    changed = keys.copy()
    changed[~mask] = 1e3  # any value at padded steps
    np.testing.assert_allclose(np.asarray(layer(query, changed, mask=mask)), out,
                               rtol=1e-6, atol=1e-6)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[2], np.zeros(E))
    # Appending padded steps changes nothing either.
    longer = np.concatenate([keys, np.ones((B, 2, E), "float32")], axis=1)
    longer_mask = np.concatenate([mask, np.zeros((B, 2), bool)], axis=1)
    np.testing.assert_allclose(np.asarray(layer(query, longer, mask=longer_mask)), out,
                               rtol=1e-6, atol=1e-6)


def test_no_mask_means_every_step_counts():
    query, keys, _ = _inputs()
    layer = DinAttentionPooling(hidden_units=(4,))
    full = np.ones((B, T), bool)
    np.testing.assert_allclose(np.asarray(layer(query, keys)),
                               np.asarray(layer(query, keys, mask=full)), rtol=1e-6)


def test_weights_count_and_shapes():
    query, keys, mask = _inputs()
    layer = DinAttentionPooling(hidden_units=(8, 4))
    layer(query, keys, mask=mask)
    shapes = [tuple(w.shape) for w in layer.weights]
    assert shapes == [(4 * E, 8), (8,), (8, 4), (4,), (4, 1), (1,)]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="hidden_units"):
        DinAttentionPooling(hidden_units=(8, 0))
    layer = DinAttentionPooling()
    with pytest.raises(ValueError, match="same last dimension"):
        layer(np.zeros((B, E + 1), "float32"), np.zeros((B, T, E), "float32"))
    with pytest.raises(ValueError, match=r"\(B, T, E\)"):
        DinAttentionPooling()(np.zeros((B, E), "float32"), np.zeros((B, E), "float32"))


def test_config_round_trip():
    layer = DinAttentionPooling(hidden_units=(6, 3), activation="relu",
                                use_softmax=True, kernel_initializer="ones",
                                name="pool")
    config = layer.get_config()
    restored = DinAttentionPooling.from_config(config)
    assert restored.get_config() == config
    revived = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(revived, DinAttentionPooling)
    assert revived.get_config() == config


def test_model_save_and_load(tmp_path):
    query_in = keras.Input((E,), name="query")
    keys_in = keras.Input((T, E), name="keys")
    mask_in = keras.Input((T,), dtype="bool", name="mask")
    out = DinAttentionPooling(hidden_units=(8,))(query_in, keys_in, mask=mask_in)
    model = keras.Model([query_in, keys_in, mask_in], out)
    query, keys, mask = _inputs()
    expected = np.asarray(model([query, keys, mask]))
    path = tmp_path / "pool.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded([query, keys, mask])), expected,
                               rtol=1e-6)


@pytest.mark.parametrize("hidden_units", [(8, 4), ()])
@pytest.mark.parametrize("use_softmax", [False, True])
@pytest.mark.parametrize("row", [0, 1, 2])  # some padding, none, all padded
def test_pool_shared_is_the_pooling_of_every_query_over_one_sequence(
        use_softmax, hidden_units, row):
    """N queries against one sequence (a ranking request) equal `call` on the
    sequence repeated N times, and the numpy reference."""
    query, keys, mask = _inputs()
    layer = DinAttentionPooling(hidden_units=hidden_units, use_softmax=use_softmax,
                                bias_initializer="random_normal")
    layer(query, keys, mask=mask)
    tiled_keys = np.repeat(keys[row:row + 1], B, axis=0)
    tiled_mask = np.repeat(mask[row:row + 1], B, axis=0)
    shared = np.asarray(layer.pool_shared(query, keys[row], mask[row]))
    np.testing.assert_allclose(shared, np.asarray(layer(query, tiled_keys,
                                                        mask=tiled_mask)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        shared, _reference(layer, query, tiled_keys, tiled_mask, _sigmoid),
        rtol=1e-5, atol=1e-5)
    unmasked = np.asarray(layer.pool_shared(query, keys[row]))
    np.testing.assert_allclose(unmasked, np.asarray(layer(query, tiled_keys)),
                               rtol=1e-5, atol=1e-6)
