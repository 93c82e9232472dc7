"""MultimodalCatalog and cosine: lookups, frozen weights, config, export."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras
from daian_tf.layers.catalog import MultimodalCatalog, cosine

IDS = ["item_a", "item_b", "item_c"]
VECTORS = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [0.0, -2.0, 0.0]], "float32")
# L2-normalised by hand; the zero row stays zero.
UNIT = np.array([[0.6, 0.8, 0.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]], "float32")


def test_lookup_of_known_unknown_and_padding_ids():
    catalog = MultimodalCatalog(IDS, vectors=VECTORS)
    ids = tf.constant([["item_c", ""], ["never_seen", "item_a"]])
    out = np.asarray(catalog(ids))
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], UNIT[2])
    np.testing.assert_array_equal(out[0, 1], np.zeros(3))  # "" is padding
    np.testing.assert_array_equal(out[1, 0], np.zeros(3))  # unknown id
    np.testing.assert_allclose(out[1, 1], UNIT[0], rtol=1e-6)
    one_d = np.asarray(catalog(tf.constant(["item_b", "item_a"])))
    np.testing.assert_allclose(one_d, UNIT[[1, 0]], rtol=1e-6)
    assert catalog.compute_output_shape((2, 5)) == (2, 5, 3)


def test_cosine_of_unit_or_zero_vectors_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 3))
    b = rng.normal(size=(4, 3))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    b[2] = 0.0
    expected = np.array([np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y))
                         if np.linalg.norm(y) else 0.0 for x, y in zip(a, b)])
    np.testing.assert_allclose(np.asarray(cosine(a.astype("float32"),
                                                 b.astype("float32"))),
                               expected, rtol=1e-5, atol=1e-6)


def test_weights_are_frozen_and_get_no_gradient():
    catalog = MultimodalCatalog(IDS, vectors=VECTORS)
    ids = tf.constant(["item_a", "item_c"])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(catalog(ids))
    assert catalog.trainable_weights == []
    assert [w.path.split("/")[-1] for w in catalog.non_trainable_weights] == ["vectors"]
    assert tape.gradient(loss, catalog.non_trainable_weights[0]) is None


@pytest.mark.parametrize("kwargs, match", [
    (dict(item_ids=[], embedding_dim=3), "empty"),
    (dict(item_ids=["a", "b", "a"], embedding_dim=3), "duplicates"),
    (dict(item_ids=["a", ""], embedding_dim=3), "empty string"),
    (dict(item_ids=["a", "b"], vectors=np.ones((3, 2))), "3 rows"),
    (dict(item_ids=["a", "b"], vectors=np.array([[1.0, np.nan], [1.0, 0.0]])),
     "finite"),
    (dict(item_ids=["a"], vectors=np.ones(3)), "2-D"),
    (dict(item_ids=["a"]), "embedding_dim"),
    (dict(item_ids=["a"], vectors=np.ones((1, 2)), embedding_dim=3), "width 2"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultimodalCatalog(**kwargs)


def test_config_round_trip_and_set_weights_reproduce_outputs():
    catalog = MultimodalCatalog(IDS, vectors=VECTORS, name="catalog")
    ids = tf.constant(["item_c", "item_a", "x", ""])
    expected = np.asarray(catalog(ids))
    config = catalog.get_config()
    assert config["item_ids"] == IDS and config["embedding_dim"] == 3
    assert "vectors" not in config
    restored = MultimodalCatalog.from_config(config)
    assert restored.get_config() == config
    np.testing.assert_array_equal(np.asarray(restored(ids)), np.zeros((4, 3)))
    restored.set_weights(catalog.get_weights())
    np.testing.assert_array_equal(np.asarray(restored(ids)), expected)


def test_works_inside_tf_function():
    catalog = MultimodalCatalog(IDS, vectors=VECTORS)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string)])
    def lookup(ids):
        return catalog(ids)

    out = lookup(tf.constant([["item_a", "nope", ""]])).numpy()
    np.testing.assert_allclose(out[0], [UNIT[0], np.zeros(3), np.zeros(3)], rtol=1e-6)


def _model(catalog: MultimodalCatalog) -> keras.Model:
    ids = keras.Input((2,), dtype="string", name="ids")
    return keras.Model(ids, catalog(ids))


def test_keras_model_save_and_load(tmp_path):
    model = _model(MultimodalCatalog(IDS, vectors=VECTORS))
    ids = tf.constant([["item_a", "item_c"], ["", "other"]])
    expected = np.asarray(model(ids))
    path = tmp_path / "catalog.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded(ids)), expected)


def test_saved_model_of_a_module_holding_the_model(tmp_path):
    """The export route (daian_tf/export/saved_model.py): tf.Module + tf.saved_model."""
    module = tf.Module()
    module.model = _model(MultimodalCatalog(IDS, vectors=VECTORS))
    module.lookup = tf.function(
        lambda ids: module.model(ids),
        input_signature=[tf.TensorSpec([None, 2], tf.string)])
    ids = tf.constant([["item_b", "item_c"], ["zzz", "item_a"]])
    expected = module.lookup(ids).numpy()
    tf.saved_model.save(module, str(tmp_path / "export"))
    reloaded = tf.saved_model.load(str(tmp_path / "export"))
    np.testing.assert_array_equal(reloaded.lookup(ids).numpy(), expected)
    np.testing.assert_allclose(expected[1, 1], UNIT[0], rtol=1e-6)
