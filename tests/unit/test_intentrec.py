"""The IntentRec-style model on hand-made transformed inputs (no Transform needed)."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from daian_tf.core import features as F
from daian_tf.core.config import Config, ModelConfig
from daian_tf.core.names import INTENTREC
from daian_tf.layers.sequence import MaskedMeanPooling, recent_steps_mask
from daian_tf.models.factory import MODELS, build_model, has_intent
from daian_tf.models.intentrec import IntentRec, intentrec_input_keys
from daian_tf.training.multitask import IntentMultiTaskModel
from tests.unit._sequence_models import (B, HIST_XF, LENGTHS, LEVELS, SIZES, T,
                                         USER_COLUMNS, copy_inputs, make_inputs,
                                         scores)

K = 3
CFG = ModelConfig(name=INTENTREC, embedding_dim=4, hidden_units=(16, 8),
                  attention_units=(8,), intent_hidden_units=(8,), intent_dim=4,
                  short_term_steps=K, sequence_units=6)
KEYS = intentrec_input_keys(USER_COLUMNS)


def _model(**overrides) -> IntentRec:
    keras.utils.set_random_seed(0)
    return IntentRec(dataclasses.replace(CFG, **overrides), SIZES, USER_COLUMNS, LEVELS)


def test_output_contract_and_intent_distribution():
    model = _model()
    x = make_inputs(KEYS)
    out = np.asarray(model(x, training=False))
    assert out.shape == (B, 1) and np.all((out > 0) & (out < 1))
    assert model.output_layer.name == "ctr_probability"
    assert model.input_keys == KEYS
    p = np.asarray(model.predict_intent(x))
    assert p.shape == (B, LEVELS) and np.all(p > 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert model.intent_loss_weight == CFG.intent_loss_weight
    # the multi-task fit's one-pass forward gives the same two outputs
    ctr, intent = model.ctr_and_intent(x, training=False)
    np.testing.assert_allclose(np.asarray(ctr), out, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(intent), p, rtol=1e-6)


def test_recent_steps_mask_is_the_last_k_valid_steps():
    mask = np.arange(T)[None, :] < np.array(LENGTHS)[:, None]
    got = np.asarray(recent_steps_mask(mask, K))
    for b, n in enumerate(LENGTHS):
        expected = np.zeros(T, bool)
        expected[max(n - K, 0):n] = True
        np.testing.assert_array_equal(got[b], expected)


def test_padded_steps_change_nothing():
    model = _model()
    x = make_inputs(KEYS)
    before, intent = scores(model, x), np.asarray(model.predict_intent(x))
    y = copy_inputs(x)
    padded = x[HIST_XF[0]] == F.PADDING_ID
    for key in HIST_XF[1:]:
        y[key][padded] = 2
    np.testing.assert_allclose(scores(model, y), before, atol=1e-6)
    # more padding columns: the same scores and intent
    longer = make_inputs(KEYS, steps=T + 4)
    for key in HIST_XF:
        longer[key] = np.concatenate([x[key], np.zeros((B, 4), np.int64)], axis=1)
    for key in set(KEYS) - set(HIST_XF):
        longer[key] = x[key]
    np.testing.assert_allclose(scores(model, longer), before, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model.predict_intent(longer)), intent,
                               atol=1e-6)


def test_short_term_encoder_reads_only_the_last_k_steps():
    model = _model()
    x = make_inputs(KEYS)
    short, long = (np.asarray(v) for v in model.encode(x))
    row = 3  # LENGTHS[3] = T valid steps; step 0 is older than the last K
    y = copy_inputs(x)
    for key in HIST_XF:
        y[key][row, 0] = 1 + (x[key][row, 0] % 3)
    short2, long2 = (np.asarray(v) for v in model.encode(y))
    np.testing.assert_allclose(short2, short, atol=1e-7)
    assert not np.allclose(long2[row], long[row], atol=1e-6)
    # a recent step changes the short-term encoding
    z = copy_inputs(x)
    for key in HIST_XF:
        z[key][row, T - 1] = 1 + (x[key][row, T - 1] % 3)
    short3, _ = (np.asarray(v) for v in model.encode(z))
    assert not np.allclose(short3[row], short[row], atol=1e-6)


def test_trigger_and_intent_reach_the_ctr():
    model = _model()
    x = make_inputs(KEYS)
    y = copy_inputs(x)
    y[F.xf(F.TRIGGER_ITEM_ID)] = 1 + (x[F.xf(F.TRIGGER_ITEM_ID)] % 5)
    assert not np.allclose(np.asarray(model.predict_intent(y)),
                           np.asarray(model.predict_intent(x)), atol=1e-6)
    # the intent is request-level: the target does not change it
    z = copy_inputs(x)
    z[F.xf(F.TARGET_ITEM_ID)] = 1 + (x[F.xf(F.TARGET_ITEM_ID)] % 5)
    np.testing.assert_allclose(np.asarray(model.predict_intent(z)),
                               np.asarray(model.predict_intent(x)), atol=1e-7)
    # zeroing the intent vector's kernel changes the CTR: p̂ is fed to the tower
    before = scores(model, x)
    kernel = model.intent_vector.kernel
    kernel.assign(np.zeros(kernel.shape, "float32"))
    bias = model.intent_vector.bias
    bias.assign(np.zeros(bias.shape, "float32"))
    assert not np.allclose(scores(model, x), before, atol=1e-7)


def test_weights_round_trip(tmp_path):
    model = _model()
    x = make_inputs(KEYS)
    before, intent = scores(model, x), np.asarray(model.predict_intent(x))
    path = str(tmp_path / "intentrec.weights.h5")
    model.save_weights(path)
    keras.utils.set_random_seed(7)
    fresh = IntentRec(CFG, SIZES, USER_COLUMNS, LEVELS)
    fresh(x)
    assert not np.allclose(scores(fresh, x), before, atol=1e-6)
    fresh.load_weights(path)
    np.testing.assert_allclose(scores(fresh, x), before, atol=1e-6)
    np.testing.assert_allclose(np.asarray(fresh.predict_intent(x)), intent, atol=1e-6)


def test_masked_mean_pooling_config_round_trip():
    layer = MaskedMeanPooling(name="pool")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, MaskedMeanPooling) and clone.name == "pool"
    seq = np.arange(2 * 3 * 2, dtype="float32").reshape(2, 3, 2)
    mask = np.array([[True, True, False], [False, False, False]])
    np.testing.assert_allclose(np.asarray(clone(seq, mask=mask)),
                               [[1.0, 2.0], [0.0, 0.0]])


def test_registered_and_fitted_with_the_intent_loss():
    cfg = dataclasses.replace(Config(), model=CFG)
    cfg = dataclasses.replace(cfg, samples=dataclasses.replace(
        cfg.samples, user_columns=USER_COLUMNS, num_intent_levels=LEVELS))
    assert INTENTREC in MODELS and has_intent(cfg)
    model = build_model(cfg, SIZES)
    assert isinstance(model, IntentRec) and model.num_levels == LEVELS
    # one multi-task step moves the intent head (the KL gradient reaches it)
    x = make_inputs(KEYS)
    label = np.full((B, LEVELS), 1.0 / LEVELS, "float32")
    label[:, 0] += 0.5
    label /= label.sum(axis=1, keepdims=True)
    x[F.xf(F.INTENT_LABEL)], x[F.xf(F.INTENT_MASK)] = label, np.ones((B,), np.int64)
    wrapped = IntentMultiTaskModel(model, 1.0)
    wrapped.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    before = np.asarray(model.predict_intent(x))[:, 0].mean()
    for _ in range(5):
        wrapped.train_on_batch(x, np.zeros((B, 1), "float32"))
    assert np.asarray(model.predict_intent(x))[:, 0].mean() > before


@pytest.mark.parametrize("bad", [{"short_term_steps": 0}, {"sequence_units": 0},
                                 {"intent_hidden_units": ()}])
def test_config_checks(bad):
    with pytest.raises(ValueError):
        dataclasses.replace(CFG, **bad)
