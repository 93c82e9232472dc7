"""HybridSimilarityEnhancer (Eq. 11–14, I-8): stop-gradient, bins, fusion, alignment."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras
from daian_tf.data.transform import sim_bin
from daian_tf.layers.similarity import (HybridSimilarityEnhancer, norm_ratio_fusion,
                                        similarity_bin)

B, D, DM, BINS = 4, 5, 3, 6
LO, HI = -0.5, 0.7


def _unit(x):
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norms > 0, x / np.where(norms > 0, norms, 1.0), 0.0)


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    tr_id = rng.normal(size=(B, D)).astype("float32")
    tg_id = rng.normal(size=(B, D)).astype("float32")
    tr_mm = _unit(rng.normal(size=(B, DM))).astype("float32")
    tg_mm = _unit(rng.normal(size=(B, DM))).astype("float32")
    tg_mm[3] = 0.0  # an item without a multimodal vector
    return tr_id, tg_id, tr_mm, tg_mm


def _project(layer, x):
    *hidden, last = layer.projection_layers
    for dense in hidden:
        kernel, bias = dense.get_weights()
        x = np.maximum(x @ kernel + bias, 0.0)
    kernel, bias = last.get_weights()
    return x @ kernel + bias


def _fusion(e_col, e_sem, eps):
    col = np.linalg.norm(e_col, axis=-1, keepdims=True)
    sem = np.linalg.norm(e_sem, axis=-1, keepdims=True)
    r = col / (col + sem + eps)
    return r * e_col + (1 - r) * e_sem


def _bins(s, lo, hi, n):
    """Bin by the edges: the largest i with edge_i <= s, clipped to the end bins."""
    edges = lo + (hi - lo) * np.arange(n + 1) / n
    return np.clip(np.searchsorted(edges, s, side="right") - 1, 0, n - 1)


def test_norm_ratio_fusion_matches_a_hand_computation():
    e_col = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], "float32")
    e_sem = np.array([[0.0, 1.0], [2.0, 2.0], [0.0, 0.0]], "float32")
    # row 0: r = 5 / (5 + 1) -> (5/6)*[3, 4] + (1/6)*[0, 1] = [2.5, 21/6]
    # row 1: r = 0 -> e_sem; row 2: r = 1 / (1 + 0 + eps) ~ 1 -> e_col
    got = np.asarray(norm_ratio_fusion(e_col, e_sem, 1e-8))
    np.testing.assert_allclose(got, [[2.5, 21 / 6], [2.0, 2.0], [1.0, 0.0]], rtol=1e-6)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 7, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(norm_ratio_fusion(a, b, 1e-3)),
                               _fusion(a, b, 1e-3), rtol=1e-5)


def test_similarity_bin_matches_edges_and_the_transform():
    s = np.concatenate([[-2.0, -0.5, -0.49, 0.0, 0.1, 0.5, 0.69, 0.7, 3.0],
                        np.random.default_rng(2).uniform(-0.7, 0.9, 200)])
    s = s.astype("float32")
    got = np.asarray(similarity_bin(s, LO, HI, BINS))
    # Against the edges, away from them (float32 rounding may flip a point on one).
    edges = LO + (HI - LO) * np.arange(BINS + 1) / BINS
    clear = np.abs(s.astype("float64")[:, None] - edges[1:-1]).min(axis=1) > 1e-5
    np.testing.assert_array_equal(got[clear],
                                  _bins(s.astype("float64"), LO, HI, BINS)[clear])
    # Against the Transform's bins, everywhere: training and the model agree.
    np.testing.assert_array_equal(got, sim_bin(tf.constant(s), (LO, HI), BINS).numpy())
    assert got.min() == 0 and got.max() == BINS - 1


def test_outputs_match_numpy():
    tr_id, tg_id, tr_mm, tg_mm = _inputs()
    layer = HybridSimilarityEnhancer(BINS, (LO, HI), projection_units=(4,))
    e_sim, s_sem = (np.asarray(o) for o in layer(tr_id, tg_id, tr_mm, tg_mm))
    assert e_sim.shape == (B, DM) and s_sem.shape == (B, 1)
    cos = np.array([np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
                    if np.linalg.norm(b) else 0.0 for a, b in zip(tr_mm, tg_mm)])
    np.testing.assert_allclose(s_sem[:, 0], cos, rtol=1e-5, atol=1e-6)
    e_col = _project(layer, tr_id) * _project(layer, tg_id)
    table = layer.bin_table.get_weights()[0]
    e_sem = table[_bins(s_sem[:, 0], LO, HI, BINS)]
    np.testing.assert_allclose(e_sim, _fusion(e_col, e_sem, 1e-8), rtol=1e-5,
                               atol=1e-6)
    shapes = layer.compute_output_shape((B, D), (B, D), (B, DM), (B, DM))
    assert shapes == ((B, DM), (B, 1))


def test_stop_gradient_into_id_embeddings_but_projection_learns():
    tr_id, tg_id, tr_mm, tg_mm = (tf.constant(x) for x in _inputs())
    layer = HybridSimilarityEnhancer(BINS, (LO, HI), projection_units=(4,),
                                     align_weight=0.0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([tr_id, tg_id])
        e_sim, _ = layer(tr_id, tg_id, tr_mm, tg_mm, training=True)
        loss = tf.reduce_sum(tf.square(e_sim))
    for grad in tape.gradient(loss, [tr_id, tg_id]):
        assert grad is None or not np.any(np.asarray(grad))
    projection = [w for d in layer.projection_layers for w in d.trainable_weights]
    for grad in tape.gradient(loss, projection):
        assert np.any(np.asarray(grad) != 0)


def test_alignment_loss_only_in_training_and_matches_numpy():
    tr_id, tg_id, tr_mm, tg_mm = _inputs()
    layer = HybridSimilarityEnhancer(BINS, (LO, HI), projection_units=(4,),
                                     align_weight=0.3)
    layer(tr_id, tg_id, tr_mm, tg_mm, training=False)
    assert layer.losses == []
    layer(tr_id, tg_id, tr_mm, tg_mm, training=True)
    assert len(layer.losses) == 1
    z = np.concatenate([_project(layer, tr_id), _project(layer, tg_id)])
    m = np.concatenate([tr_mm, tg_mm])
    has = np.linalg.norm(m, axis=1) > 0  # the target of row 3 has no vector
    cos = (_unit(z) * m).sum(-1)
    expected = 0.3 * np.mean(1.0 - cos[has])
    np.testing.assert_allclose(float(layer.losses[0]), expected, rtol=1e-5)


def test_zero_align_weight_adds_no_loss():
    tr_id, tg_id, tr_mm, tg_mm = _inputs()
    layer = HybridSimilarityEnhancer(BINS, (LO, HI), align_weight=0.0)
    layer(tr_id, tg_id, tr_mm, tg_mm, training=True)
    assert layer.losses == []


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_bins"):
        HybridSimilarityEnhancer(0, (LO, HI))
    with pytest.raises(ValueError, match="sim_range"):
        HybridSimilarityEnhancer(BINS, (1.0, -1.0))
    with pytest.raises(ValueError, match="sim_range"):
        HybridSimilarityEnhancer(BINS, (0.0,))
    with pytest.raises(ValueError, match="projection_units"):
        HybridSimilarityEnhancer(BINS, (LO, HI), projection_units=(0,))
    with pytest.raises(ValueError, match="align_weight"):
        HybridSimilarityEnhancer(BINS, (LO, HI), align_weight=-1.0)
    tr_id, tg_id, tr_mm, tg_mm = _inputs()
    with pytest.raises(ValueError, match="same width"):
        HybridSimilarityEnhancer(BINS, (LO, HI))(tr_id, tg_id[:, :2], tr_mm, tg_mm)


def test_config_round_trip():
    data = _inputs()
    layer = HybridSimilarityEnhancer(BINS, (LO, HI), projection_units=(4, 3),
                                     align_weight=0.2, epsilon=1e-6, name="hse")
    expected = [np.asarray(o) for o in layer(*data)]
    config = layer.get_config()
    restored = HybridSimilarityEnhancer.from_config(config)
    assert restored.get_config() == config
    assert keras.layers.deserialize(keras.layers.serialize(layer)).get_config() == config
    restored(*data)
    restored.set_weights(layer.get_weights())
    for got, want in zip(restored(*data), expected):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


def test_model_save_load_and_fit_with_the_alignment_loss(tmp_path):
    inputs = [keras.Input((D,)), keras.Input((D,)), keras.Input((DM,)),
              keras.Input((DM,))]
    e_sim, s_sem = HybridSimilarityEnhancer(BINS, (LO, HI), projection_units=(4,))(
        *inputs)
    out = keras.layers.Dense(1)(keras.layers.Concatenate()([e_sim, s_sem]))
    model = keras.Model(inputs, out)
    data = list(_inputs())
    expected = np.asarray(model(data))
    assert model.losses == []  # no alignment loss outside training
    model.save(tmp_path / "hse.keras")
    loaded = keras.models.load_model(tmp_path / "hse.keras")
    np.testing.assert_allclose(np.asarray(loaded(data)), expected, rtol=1e-6)
    # In fit the alignment loss is part of the loss: zero-label MSE alone would be
    # the squared outputs, and the reported loss is larger.
    loaded.compile(optimizer="sgd", loss="mse")
    mse = float(np.mean(np.asarray(loaded(data)) ** 2))
    logs = loaded.evaluate(data, np.zeros((B, 1)), verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(mse, rel=1e-5)  # evaluate: no training
    history = loaded.fit(data, np.zeros((B, 1)), epochs=1, batch_size=B, verbose=0)
    assert history.history["loss"][0] > mse + 1e-4
