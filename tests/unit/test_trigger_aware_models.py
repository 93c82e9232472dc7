"""DIHN, DIAN and DEI2N (docs/models-trigger-aware.md): output contract, padding
invariance, the trigger read, save/load, and each model's own structure."""

from __future__ import annotations

import numpy as np
import pytest

import keras
from daian_tf.core import features as F
from daian_tf.core.config import Config, ModelConfig
from daian_tf.core.names import CTR_OUTPUT, DEI2N, DIAN, DIHN
from daian_tf.layers.embedding import embedding_layer_name, feature_input_keys
from daian_tf.layers.sequence import RecentStepsMask
from daian_tf.models import dian, dihn
from daian_tf.models.dei2n import build_dei2n
from daian_tf.models.factory import MODELS, has_intent, needs_catalog
from tests.unit.test_din import HIST_KEYS, SIZES, USER_COLUMNS, B, _inputs, _score

BUILDERS = {DIHN: dihn.build_dihn, DIAN: dian.build_dian, DEI2N: build_dei2n}
NAMES = sorted(BUILDERS)


def _model(name, **overrides):
    keras.utils.set_random_seed(0)
    cfg = ModelConfig(embedding_dim=4, hidden_units=(32, 16), attention_units=(8,),
                      uim_hidden_units=(8,), attention_heads=2, attention_width=8,
                      recent_steps=3, **overrides)
    return BUILDERS[name](cfg, SIZES, USER_COLUMNS)


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_din_inputs_and_no_catalog(name):
    cfg = Config(model=ModelConfig(name=name))
    assert name in MODELS and not needs_catalog(cfg) and not has_intent(cfg)


@pytest.mark.parametrize("name", NAMES)
def test_output_contract(name):
    model = _model(name)
    assert list(model.output_names) == [CTR_OUTPUT]
    assert sorted(t.name for t in model.inputs) == sorted(feature_input_keys(USER_COLUMNS))
    out = _score(model, _inputs())
    assert out.shape == (B,) and np.all((out > 0) & (out < 1))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("softmax", [False, True])
def test_padded_steps_change_nothing(name, softmax):
    """Side-feature ids at padded steps, extra padding, and the padding rows' vectors."""
    model = _model(name, attention_softmax=softmax)
    inputs = _inputs()
    before = _score(model, inputs)
    padded = inputs[F.xf(F.HIST_ITEM_ID)] == F.PADDING_ID
    assert padded.any() and (~padded).any()
    changed = dict(inputs)
    for key in HIST_KEYS[1:]:  # the item id defines the mask; the others may be anything
        changed[key] = np.where(padded, 3, inputs[key])
    np.testing.assert_allclose(_score(model, changed), before, rtol=1e-6, atol=1e-7)
    longer = {k: np.concatenate([v, np.zeros((B, 3), "int64")], axis=1)
              if k in HIST_KEYS else v for k, v in inputs.items()}
    np.testing.assert_allclose(_score(model, longer), before, rtol=1e-6, atol=1e-7)
    for vocab in ("item", "category", "brand"):
        table = model.get_layer(embedding_layer_name(vocab))
        weights = np.asarray(table.embeddings).copy()
        weights[F.PADDING_ID] = 5.0
        table.embeddings.assign(weights)
    np.testing.assert_allclose(_score(model, inputs), before, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_the_empty_history_gives_a_finite_score(name):
    model = _model(name)
    inputs = {k: np.zeros_like(v) if k in HIST_KEYS else v
              for k, v in _inputs().items()}
    assert np.all(np.isfinite(_score(model, inputs)))


@pytest.mark.parametrize("name", NAMES)
def test_reads_the_trigger(name):
    model = _model(name)
    inputs = _inputs()
    before = _score(model, inputs)
    for key in (F.TRIGGER_ITEM_ID, F.TRIGGER_CATEGORY_ID):
        changed = dict(inputs)
        vocab = next(n for n, ks in F.SHARED_VOCABS.items() if key in ks)
        changed[F.xf(key)] = (inputs[F.xf(key)] % (SIZES[vocab] - 1)) + 1
        assert np.all(changed[F.xf(key)] != inputs[F.xf(key)])
        assert np.all(np.abs(_score(model, changed) - before) > 1e-7), key


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_gives_the_same_scores(name, tmp_path):
    model = _model(name)
    inputs = _inputs()
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(_score(loaded, inputs), _score(model, inputs), rtol=1e-6)


def test_dihn_alpha_is_a_request_score_in_the_open_unit_interval():
    model = _model(DIHN)
    inputs = _inputs()
    alpha = np.asarray(dihn.intent_model(model).predict_on_batch(inputs))
    assert alpha.shape == (B, 1) and np.all((alpha > 0) & (alpha < 1))
    other_target = dict(inputs)
    other_target[F.xf(F.TARGET_ITEM_ID)] = (inputs[F.xf(F.TARGET_ITEM_ID)] % 18) + 1
    np.testing.assert_allclose(
        np.asarray(dihn.intent_model(model).predict_on_batch(other_target)), alpha,
        rtol=1e-6)


def test_dian_is_the_intent_mixture_of_its_two_networks():
    model = _model(DIAN)
    inputs = _inputs()
    p, tan, tfn, y = (np.asarray(a) for a in
                      dian.parts_model(model).predict_on_batch(inputs))
    np.testing.assert_allclose(y, p * tan + (1 - p) * tfn, rtol=1e-6)
    np.testing.assert_allclose(_score(model, inputs), y.reshape(-1), rtol=1e-6)
    assert np.all((p > 0) & (p < 1))
    assert np.all(np.abs(tan - tfn) > 1e-6)  # the mixture is not trivially one network


def test_dian_trigger_free_network_ignores_the_trigger():
    model = _model(DIAN)
    inputs = _inputs()
    changed = dict(inputs)
    changed[F.xf(F.TRIGGER_ITEM_ID)] = (inputs[F.xf(F.TRIGGER_ITEM_ID)] % 18) + 1
    parts = dian.parts_model(model)
    before, after = parts.predict_on_batch(inputs), parts.predict_on_batch(changed)
    np.testing.assert_allclose(after[2], before[2], rtol=1e-6)  # ŷ_TFN
    assert np.all(np.abs(after[1] - before[1]) > 1e-7)  # ŷ_TAN


@pytest.mark.parametrize("mask, steps, expected", [
    ([[1, 1, 1, 1, 0, 0]], 2, [[0, 0, 1, 1, 0, 0]]),  # padding after (pad_recent)
    ([[0, 0, 1, 1, 1, 1]], 3, [[0, 0, 0, 1, 1, 1]]),  # padding before
    ([[1, 0, 0, 0, 0, 0]], 3, [[1, 0, 0, 0, 0, 0]]),
    ([[0, 0, 0, 0, 0, 0]], 3, [[0, 0, 0, 0, 0, 0]]),
])
def test_recent_steps_mask(mask, steps, expected):
    out = RecentStepsMask(steps)(np.array(mask, bool))
    np.testing.assert_array_equal(np.asarray(out), np.array(expected, bool))


def test_dei2n_instant_interest_reads_only_the_recent_steps():
    """Replacing a real step older than the last k moves DIN's pooling only; zeroing the
    instant branch's value projection shows the rest of the score is unchanged."""
    model = _model(DEI2N)
    inputs = _inputs()
    item = F.xf(F.HIST_ITEM_ID)
    # row 3 has T = 6 real steps, recent_steps = 3: step 0 is outside the window
    din_layer = model.get_layer("din_attention")
    for w in din_layer.weights:
        w.assign(np.zeros(w.shape, w.dtype))  # o_din = 0 whatever the history
    before = _score(model, inputs)
    old, recent = dict(inputs), dict(inputs)
    old[item] = inputs[item].copy()
    old[item][3, 0] = (inputs[item][3, 0] % 18) + 1
    recent[item] = inputs[item].copy()
    recent[item][3, 5] = (inputs[item][3, 5] % 18) + 1
    np.testing.assert_allclose(_score(model, old), before, rtol=1e-6, atol=1e-7)
    assert abs(_score(model, recent)[3] - before[3]) > 1e-7
