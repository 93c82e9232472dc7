"""The DIN baseline: shared tables, padding invariance, output contract, save/load."""

from __future__ import annotations

import numpy as np
import pytest

import keras
from daian_tf.core import features as F
from daian_tf.core.features import PRICE_VOCAB, USER_ID_VOCAB, user_profile_vocab
from daian_tf.core.names import CTR_OUTPUT
from daian_tf.core.config import ModelConfig
from daian_tf.layers.embedding import embedding_layer_name
from daian_tf.models.din import build_din, din_input_keys

USER_COLUMNS = ("gender", "segment")
SIZES = {"item": 20, "category": 6, "brand": 7, "shop": 5, "behavior": 6,
         USER_ID_VOCAB: 9, user_profile_vocab("gender"): 4,
         user_profile_vocab("segment"): 5}
B, T = 4, 6
HIST_KEYS = [F.xf(h) for _, h in F.DIN_PAIRS]


def _model(**overrides):
    keras.utils.set_random_seed(0)
    cfg = ModelConfig(embedding_dim=4, hidden_units=(16, 8), attention_units=(8,),
                      **overrides)
    return build_din(cfg, SIZES, USER_COLUMNS)


def _inputs(seed: int = 0):
    """Valid random transformed inputs; histories end in padding."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for key in din_input_keys(USER_COLUMNS):
        if key in HIST_KEYS:
            continue
        raw = key[: -len(F.XF_SUFFIX)]
        if raw in F.PRICE_KEYS:
            high = F.PRICE_BUCKETS
        elif raw == F.USER_ID:
            high = SIZES[USER_ID_VOCAB]
        elif raw.startswith(F.USER_PREFIX):
            high = SIZES[raw]
        else:
            high = SIZES[next(n for n, ks in F.SHARED_VOCABS.items() if raw in ks)]
        inputs[key] = rng.integers(1, high, size=B).astype("int64")
    lengths = np.array([0, 2, 5, T])
    for key, (_, hist) in zip(HIST_KEYS, F.DIN_PAIRS):
        vocab = next(n for n, ks in F.SHARED_VOCABS.items() if hist in ks)
        ids = rng.integers(1, SIZES[vocab], size=(B, T))
        ids[np.arange(T)[None, :] >= lengths[:, None]] = F.PADDING_ID
        inputs[key] = ids.astype("int64")
    return inputs


def _score(model, inputs):
    return np.asarray(model.predict_on_batch(inputs)).reshape(-1)


def test_output_contract():
    model = _model()
    assert list(model.output_names) == [CTR_OUTPUT]
    assert sorted(t.name for t in model.inputs) == sorted(din_input_keys(USER_COLUMNS))
    out = _score(model, _inputs())
    assert out.shape == (B,) and np.all((out > 0) & (out < 1))


def test_one_table_per_vocabulary():
    model = _model()
    tables = [layer for layer in model.layers
              if isinstance(layer, keras.layers.Embedding)]
    expected = {"item", "category", "brand", "shop", PRICE_VOCAB, USER_ID_VOCAB,
                user_profile_vocab("gender"), user_profile_vocab("segment")}
    assert sorted(t.name for t in tables) == sorted(
        embedding_layer_name(v) for v in expected)
    item = model.get_layer(embedding_layer_name("item"))
    assert item.input_dim == SIZES["item"]


@pytest.mark.parametrize("key", [F.TRIGGER_ITEM_ID, F.TARGET_ITEM_ID, F.HIST_ITEM_ID])
def test_trigger_target_and_history_read_the_shared_item_table(key):
    """Changing one row of the item table moves the score whichever slot holds it."""
    model = _model()
    inputs = _inputs()
    row = SIZES["item"] - 1  # removed from every slot, then placed only in `key`
    for k in (F.TRIGGER_ITEM_ID, F.TARGET_ITEM_ID):
        inputs[F.xf(k)] = np.where(inputs[F.xf(k)] == row, 1, inputs[F.xf(k)])
    hist = inputs[F.xf(F.HIST_ITEM_ID)]
    hist[hist == row] = 1
    if key == F.HIST_ITEM_ID:
        hist[:, 0] = row
    else:
        inputs[F.xf(key)][:] = row
    before = _score(model, inputs)
    table = model.get_layer(embedding_layer_name("item"))
    weights = np.asarray(table.embeddings).copy()
    weights[row] += 1.0
    table.embeddings.assign(weights)
    after = _score(model, inputs)
    assert np.all(np.abs(after - before) > 1e-7)


def test_appending_padding_or_changing_the_padding_row_changes_no_score():
    model = _model()
    inputs = _inputs()
    before = _score(model, inputs)
    longer = dict(inputs)
    for key in HIST_KEYS:
        longer[key] = np.concatenate([inputs[key], np.zeros((B, 3), "int64")], axis=1)
    np.testing.assert_allclose(_score(model, longer), before, rtol=1e-6, atol=1e-7)
    for vocab in ("item", "category", "brand"):
        table = model.get_layer(embedding_layer_name(vocab))
        weights = np.asarray(table.embeddings).copy()
        weights[F.PADDING_ID] = 5.0
        table.embeddings.assign(weights)
    # Rows with padding only in their history (and no padded trigger/target ids).
    np.testing.assert_allclose(_score(model, inputs), before, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("softmax", [False, True])
def test_empty_history_gives_a_finite_score(softmax):
    model = _model(attention_softmax=softmax)
    inputs = _inputs()
    for key in HIST_KEYS:
        inputs[key] = np.zeros_like(inputs[key])
    assert np.all(np.isfinite(_score(model, inputs)))


def test_missing_vocabulary_raises():
    sizes = dict(SIZES)
    del sizes["shop"]
    with pytest.raises(ValueError, match="shop"):
        build_din(ModelConfig(), sizes, USER_COLUMNS)


def test_save_and_load_gives_the_same_scores(tmp_path):
    model = _model()
    inputs = _inputs()
    path = tmp_path / "din.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(_score(loaded, inputs), _score(model, inputs), rtol=1e-6)
