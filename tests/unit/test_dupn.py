"""The DUPN-style model on hand-made transformed inputs, and the transform's time
buckets it reads."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from daian_tf.core import features as F
from daian_tf.core.config import Config, ModelConfig
from daian_tf.core.names import DUPN as DUPN_NAME
from daian_tf.data.transform import pad_recent, time_bucket
from daian_tf.layers import embedding as emb
from daian_tf.layers.sequence import last_valid_step
from daian_tf.models.dupn import DUPN, dupn_input_keys
from daian_tf.models.factory import MODELS, build_model, has_intent
from tests.unit._sequence_models import (B, BEHAVIOR_XF, HIST_XF, LENGTHS, LEVELS,
                                         SIZES, T, TIME_XF, USER_COLUMNS, copy_inputs,
                                         make_inputs, scores)

CFG = ModelConfig(name=DUPN_NAME, embedding_dim=4, hidden_units=(16, 8),
                  attention_units=(8,), intent_hidden_units=(8,), lstm_units=6,
                  user_representation_dim=10)
KEYS = dupn_input_keys(USER_COLUMNS)
SEQ_KEYS = HIST_XF + [BEHAVIOR_XF, TIME_XF]


def _model(**overrides) -> DUPN:
    keras.utils.set_random_seed(0)
    return DUPN(dataclasses.replace(CFG, **overrides), SIZES, USER_COLUMNS, LEVELS)


def test_output_contract_intent_and_representation():
    model = _model()
    x = make_inputs(KEYS)
    assert KEYS == emb.feature_input_keys(USER_COLUMNS) + [BEHAVIOR_XF, TIME_XF]
    assert model.input_keys == KEYS
    out = np.asarray(model(x, training=False))
    assert out.shape == (B, 1) and np.all((out > 0) & (out < 1))
    p = np.asarray(model.predict_intent(x))
    assert p.shape == (B, LEVELS) and np.all(p > 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    r = np.asarray(model.user_representation(x))
    assert r.shape == (B, CFG.user_representation_dim) and np.all(np.isfinite(r))
    assert model.output_layer.name == "ctr_probability"
    # the multi-task fit's one-pass forward gives the same two outputs
    ctr, intent = model.ctr_and_intent(x, training=False)
    np.testing.assert_allclose(np.asarray(ctr), out, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(intent), p, rtol=1e-6)


def test_shared_tables_unchanged_and_own_behavior_time_tables():
    model = _model()
    model(make_inputs(KEYS))
    assert set(model.embedding.tables) == set(emb.table_vocabs(USER_COLUMNS))
    assert "behavior" not in model.embedding.tables
    assert model.behavior_table.input_dim == SIZES["behavior"]
    assert model.time_table.input_dim == F.TIME_BUCKETS


def test_padded_steps_change_nothing():
    model = _model()
    x = make_inputs(KEYS)
    before = scores(model, x)
    intent, rep = (np.asarray(model.predict_intent(x)),
                   np.asarray(model.user_representation(x)))
    y = copy_inputs(x)
    padded = x[HIST_XF[0]] == F.PADDING_ID
    for key in SEQ_KEYS[1:]:
        y[key][padded] = 2
    np.testing.assert_allclose(scores(model, y), before, atol=1e-6)
    longer = dict(x)
    for key in SEQ_KEYS:
        longer[key] = np.concatenate([x[key], np.zeros((B, 3), np.int64)], axis=1)
    np.testing.assert_allclose(scores(model, longer), before, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model.predict_intent(longer)), intent,
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(model.user_representation(longer)), rep,
                               atol=1e-6)


@pytest.mark.parametrize("key", [BEHAVIOR_XF, TIME_XF])
def test_behavior_type_and_time_bucket_change_the_output(key):
    model = _model()
    x = make_inputs(KEYS)
    before, rep = scores(model, x), np.asarray(model.user_representation(x))
    y = copy_inputs(x)
    high = SIZES["behavior"] if key == BEHAVIOR_XF else F.TIME_BUCKETS
    valid = x[HIST_XF[0]] != F.PADDING_ID
    y[key] = np.where(valid, 1 + (x[key] % (high - 1)), 0)
    after = scores(model, y)
    empty = np.array(LENGTHS) == 0  # a row without history has no step to change
    np.testing.assert_allclose(after[empty], before[empty], atol=1e-7)
    assert np.all(np.abs(after[~empty] - before[~empty]) > 1e-7)
    assert not np.allclose(np.asarray(model.user_representation(y))[~empty],
                           rep[~empty], atol=1e-6)


def test_user_representation_is_request_side():
    """The target does not change r nor p̂, but changes the CTR; the trigger changes r."""
    model = _model()
    x = make_inputs(KEYS)
    rep, intent = (np.asarray(model.user_representation(x)),
                   np.asarray(model.predict_intent(x)))
    y = copy_inputs(x)
    for key in emb.CANDIDATE_KEYS:
        y[key] = 1 + (x[key] % 3)
    np.testing.assert_allclose(np.asarray(model.user_representation(y)), rep, atol=1e-7)
    np.testing.assert_allclose(np.asarray(model.predict_intent(y)), intent, atol=1e-7)
    assert not np.allclose(scores(model, y), scores(model, x), atol=1e-7)
    z = copy_inputs(x)
    z[F.xf(F.TRIGGER_ITEM_ID)] = 1 + (x[F.xf(F.TRIGGER_ITEM_ID)] % 5)
    assert not np.allclose(np.asarray(model.user_representation(z))[1:], rep[1:],
                           atol=1e-6)


def test_last_valid_step():
    seq = np.arange(B * T * 2, dtype="float32").reshape(B, T, 2)
    mask = np.arange(T)[None, :] < np.array(LENGTHS)[:, None]
    got = np.asarray(last_valid_step(seq, mask))
    for b, n in enumerate(LENGTHS):
        np.testing.assert_array_equal(got[b], seq[b, n - 1] if n else [0.0, 0.0])


def test_weights_round_trip(tmp_path):
    model = _model()
    x = make_inputs(KEYS)
    before = scores(model, x)
    rep, intent = (np.asarray(model.user_representation(x)),
                   np.asarray(model.predict_intent(x)))
    path = str(tmp_path / "dupn.weights.h5")
    model.save_weights(path)
    keras.utils.set_random_seed(11)
    fresh = DUPN(CFG, SIZES, USER_COLUMNS, LEVELS)
    fresh(x)
    assert not np.allclose(scores(fresh, x), before, atol=1e-6)
    fresh.load_weights(path)
    np.testing.assert_allclose(scores(fresh, x), before, atol=1e-6)
    np.testing.assert_allclose(np.asarray(fresh.predict_intent(x)), intent, atol=1e-6)
    np.testing.assert_allclose(np.asarray(fresh.user_representation(x)), rep, atol=1e-6)


def test_registered_with_an_intent():
    cfg = dataclasses.replace(Config(), model=CFG)
    cfg = dataclasses.replace(cfg, samples=dataclasses.replace(
        cfg.samples, user_columns=USER_COLUMNS, num_intent_levels=LEVELS))
    assert DUPN_NAME in MODELS and has_intent(cfg)
    model = build_model(cfg, SIZES)
    assert isinstance(model, DUPN) and model.num_levels == LEVELS
    with pytest.raises(ValueError, match="behavior"):
        DUPN(CFG, {k: v for k, v in SIZES.items() if k != "behavior"}, USER_COLUMNS,
             LEVELS)


def test_fitted_through_the_intent_loss_its_variables_can_be_described():
    """What the pipeline's Trainer does after the fit (CI failed on it once: the one-pass
    forward left DUPN unbuilt, and the warm start refused it)."""
    from daian_tf.training.multitask import with_intent_loss
    from daian_tf.training.warm_start import describe_variables

    model = _model()
    x = make_inputs(KEYS)
    label = np.full((B, LEVELS), 1.0 / LEVELS, "float32")
    x[F.xf(F.INTENT_LABEL)], x[F.xf(F.INTENT_MASK)] = label, np.ones((B,), np.int64)
    fitted = with_intent_loss(model)
    assert fitted is not model
    fitted.compile(optimizer="adam", loss="binary_crossentropy")
    fitted.fit(x, np.zeros((B, 1), "float32"), epochs=1, batch_size=B, verbose=0)
    assert model.built
    assert len(describe_variables(model)) == len(model.weights) > 0


# --- the transform's time buckets (data/transform.py) ------------------------------

def _brute_force_bucket(delta: int) -> int:
    """1 + floor(log2(delta)) by exact integer arithmetic, in [1, TIME_BUCKETS - 1]."""
    if delta <= 1:
        return 1
    return min(1 + (int(delta).bit_length() - 1), F.TIME_BUCKETS - 1)


def test_time_bucket_matches_a_brute_force_rederivation():
    powers = [2 ** i + d for i in range(0, 30) for d in (-1, 0, 1)]
    rng = np.random.default_rng(0)
    deltas = np.array(sorted(set([0, 1, 59, 60, 3600, 86400, 14 * 86400] + powers
                                 + list(rng.integers(1, 40 * 86400, 500)))), np.int64)
    got = time_bucket(tf.constant(deltas)).numpy()
    expected = np.array([_brute_force_bucket(int(d)) for d in deltas])
    np.testing.assert_array_equal(got, expected)
    assert got.min() >= 1 and got.max() == F.TIME_BUCKETS - 1


def test_time_buckets_pad_like_the_history():
    deltas = tf.sparse.from_dense(tf.constant([[900, 60, 0], [5, 0, 0]], tf.int64))
    buckets = tf.SparseTensor(deltas.indices, time_bucket(deltas.values),
                              deltas.dense_shape)
    dense = pad_recent(buckets, 4).numpy()
    np.testing.assert_array_equal(dense, [[_brute_force_bucket(900),
                                           _brute_force_bucket(60), 0, 0],
                                          [_brute_force_bucket(5), 0, 0, 0]])
