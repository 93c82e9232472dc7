"""The assembled DAIAN model on hand-made transformed inputs (no Transform needed)."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from daian_tf.core import features as F
from daian_tf.core.config import ModelConfig
from daian_tf.core.features import USER_ID_VOCAB, user_profile_vocab
from daian_tf.models.daian import DAIAN, daian_input_keys
from daian_tf.training.stages import STAGE2_INTENT_KEYS, LabelIntentModel

LOO_KEYS = STAGE2_INTENT_KEYS["loo"]

USER_COLUMNS = ("gender",)
B, T, N_ITEMS, D_M, LEVELS = 4, 5, 12, 6, 4
SIM_RANGE = (-0.5, 0.9)
CFG = ModelConfig(name="daian", embedding_dim=4, hidden_units=(16, 8),
                  attention_units=(8,), uim_hidden_units=(8,), intent_dim=4,
                  attention_heads=2, attention_width=8, projection_units=(8,),
                  gate_hidden_units=(8,), num_sim_bins=5)
SIZES = {"item": N_ITEMS + 2, "category": 6, "brand": 6, "shop": 5, "behavior": 6,
         USER_ID_VOCAB: 10, user_profile_vocab("gender"): 4}


def _catalog():
    rng = np.random.default_rng(3)
    ids = [f"i{k}" for k in range(N_ITEMS)] + ["cold"]
    return ids, rng.normal(size=(len(ids), D_M)).astype(np.float32)


def _model(**overrides) -> DAIAN:
    keras.utils.set_random_seed(0)
    ids, vectors = _catalog()
    return DAIAN(dataclasses.replace(CFG, **overrides), SIZES, USER_COLUMNS, LEVELS,
                 SIM_RANGE, ids, vectors)


def _inputs(seed: int = 0) -> dict:
    """A batch: row 0 has a full history, row 1 a partial one, row 2 none."""
    rng = np.random.default_rng(seed)
    lengths = [T, 2, 0, 3]
    hist = np.zeros((B, T), np.int64)
    raw_hist = np.full((B, T), b"", dtype=object)
    for b, n in enumerate(lengths):
        ids = rng.integers(1, N_ITEMS + 1, size=n)
        hist[b, :n] = ids
        raw_hist[b, :n] = [f"i{i - 1}".encode() for i in ids]
    x = {}
    for key in daian_input_keys(USER_COLUMNS):
        x[key] = rng.integers(1, 4, size=(B,)).astype(np.int64)
    x[F.xf(F.HIST_ITEM_ID)] = hist
    x[F.xf(F.HIST_CATEGORY_ID)] = np.where(hist > 0, rng.integers(1, 5, (B, T)), 0)
    x[F.xf(F.HIST_BRAND_ID)] = np.where(hist > 0, rng.integers(1, 5, (B, T)), 0)
    trig, targ = rng.integers(1, N_ITEMS + 1, size=(2, B))
    x[F.xf(F.TRIGGER_ITEM_ID)], x[F.xf(F.TARGET_ITEM_ID)] = trig, targ
    x[F.raw(F.TRIGGER_ITEM_ID)] = np.array([f"i{i - 1}".encode() for i in trig], object)
    x[F.raw(F.TARGET_ITEM_ID)] = np.array([f"i{i - 1}".encode() for i in targ], object)
    x[F.raw(F.HIST_ITEM_ID)] = raw_hist
    return x


def _scores(model, x) -> np.ndarray:
    return np.asarray(model(x, training=False)).reshape(-1)


@pytest.mark.parametrize("overrides", [
    {}, {"use_uim": False}, {"use_die": False}, {"use_sein": False},
    {"use_die": False, "use_sein": False}, {"uim_shared_tables": True}])
def test_scores_are_probabilities_for_every_switch(overrides):
    model = _model(**overrides)
    scores = _scores(model, _inputs())
    assert scores.shape == (B,)
    assert np.all(np.isfinite(scores)) and np.all((scores > 0) & (scores < 1))


def test_switches_remove_their_blocks():
    assert not hasattr(_model(use_die=False), "implicit")
    assert not hasattr(_model(use_die=False), "adaptive")
    assert _model(use_die=False).intent_embedding is None  # v_int feeds DIE only
    model = _model(use_sein=False)
    assert not hasattr(model, "similarity") and not hasattr(model, "adaptive")
    assert hasattr(model, "implicit") and hasattr(model, "explicit")


def test_intent_is_a_distribution_unless_wo_uim():
    x = _inputs()
    p = np.asarray(_model().predict_intent(x))
    assert p.shape == (B, LEVELS)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    raw = np.asarray(_model(use_uim=False).predict_intent(x))
    assert not np.allclose(raw.sum(axis=1), 1.0, atol=1e-3)


def test_uim_has_its_own_tables_unless_shared():
    """I-10: separate tables by default; the UIM variables and the CTR network's are
    disjoint; with shared tables, UIM's variables are only its estimator's."""
    model = _model()
    model(_inputs())
    uim = {id(v) for v in model.uim_variables()}
    table_ids = {id(v) for v in model.embedding.trainable_variables}
    assert model.uim_embedding is not model.embedding
    assert not uim & table_ids
    assert {id(v) for v in model.uim_embedding.trainable_variables} <= uim
    shared = _model(uim_shared_tables=True)
    shared(_inputs())
    assert shared.uim_embedding is shared.embedding
    assert not {id(v) for v in shared.uim_variables()} & {
        id(v) for v in shared.embedding.trainable_variables}


def test_padded_history_steps_do_not_change_the_scores():
    model = _model()
    x = _inputs()
    before = _scores(model, x)
    y = {k: np.array(v, copy=True) for k, v in x.items()}
    padded = x[F.xf(F.HIST_ITEM_ID)] == F.PADDING_ID
    y[F.xf(F.HIST_CATEGORY_ID)][padded] = 3
    y[F.xf(F.HIST_BRAND_ID)][padded] = 2
    y[F.raw(F.HIST_ITEM_ID)][padded] = b"i1"
    np.testing.assert_allclose(_scores(model, y), before, atol=1e-6)


def test_cold_target_reads_its_catalog_vector():
    """An out-of-vocabulary target (the OOV id) still differs by its catalog vector."""
    model = _model()
    x = _inputs()
    x[F.xf(F.TARGET_ITEM_ID)] = np.full((B,), N_ITEMS + 1, np.int64)  # OOV id
    cold = dict(x, **{F.raw(F.TARGET_ITEM_ID): np.array([b"cold"] * B, object)})
    unknown = dict(x, **{F.raw(F.TARGET_ITEM_ID): np.array([b"nowhere"] * B, object)})
    assert not np.allclose(_scores(model, cold), _scores(model, unknown), atol=1e-7)
    # without SEIN and DIE the multimodal vectors are not read at all
    plain = _model(use_sein=False, use_die=False)
    np.testing.assert_allclose(_scores(plain, cold), _scores(plain, unknown), atol=1e-7)


def test_ctr_gradient_reaches_uim_through_i2e_only():
    """Stage 3: the CTR loss trains UIM through I2E's query (no stop-gradient there);
    without DIE nothing of the CTR path reads the intent, so UIM gets no gradient."""
    import tensorflow as tf

    for use_die, expect in ((True, True), (False, False)):
        model = _model(use_die=use_die)
        x = _inputs()
        model(x)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(x, training=True))
        grads = tape.gradient(loss, model.uim_variables())
        nonzero = any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0
                      for g in grads)
        assert nonzero is expect


def test_bad_arguments_are_named():
    ids, vectors = _catalog()
    with pytest.raises(ValueError, match="sim_range"):
        DAIAN(CFG, SIZES, USER_COLUMNS, LEVELS, (0.5, 0.5), ids, vectors)


def _requests_with_candidates(seed: int = 0, per_request: int = 3) -> dict:
    """A batch of `B` requests × `per_request` candidates each, rows shuffled: the
    request-side features repeat, the target features differ."""
    rng = np.random.default_rng(seed)
    base = _inputs(seed)
    rows = np.repeat(np.arange(B), per_request)
    x = {k: np.asarray(v)[rows] for k, v in base.items()}
    n = len(rows)
    targ = rng.integers(1, N_ITEMS + 1, size=n)
    x[F.xf(F.TARGET_ITEM_ID)] = targ
    x[F.raw(F.TARGET_ITEM_ID)] = np.array([f"i{i - 1}".encode() for i in targ], object)
    for key in (F.TARGET_CATEGORY_ID, F.TARGET_BRAND_ID, F.TARGET_SHOP_ID,
                F.TARGET_PRICE):
        x[F.xf(key)] = rng.integers(1, 4, size=n).astype(np.int64)
    order = rng.permutation(n)
    return {k: v[order] for k, v in x.items()}


def _with_label_intent(x: dict, seed: int = 1) -> dict:
    """Stage-2 label keys: a request's samples get different leave-one-out labels."""
    rng = np.random.default_rng(seed)
    n = len(x[F.xf(F.USER_ID)])
    label = rng.dirichlet(np.ones(LEVELS), size=n).astype(np.float32)
    label[::2] = label[0]  # several rows share a label
    mask = (rng.random(n) < 0.7).astype(np.int64)
    return dict(x, **{F.xf(F.INTENT_LABEL_LOO): label, F.xf(F.INTENT_MASK_LOO): mask})


@pytest.mark.parametrize("intent", ["uim", "label"])
def test_request_side_once_per_request_is_the_same_function_and_gradient(intent):
    """model.request_dedup computes UIM, I2E and the explicit self-attention on the
    distinct requests of the batch: the scores and every variable's gradient equal
    those of the per-sample computation (the same weights); with UIM's p̂ (the DAIAN
    model) and with the ground-truth intent (stage 2's `LabelIntentModel`)."""
    import tensorflow as tf

    x = _with_label_intent(_requests_with_candidates())
    once, every = _model(), _model(request_dedup=False)
    for model in (once, every):
        model(x)  # build every variable
    every.set_weights(once.get_weights())
    if intent == "label":
        once, every = (LabelIntentModel(m, LOO_KEYS) for m in (once, every))
    results = []
    for model in (once, every):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.math.log(model(x, training=True)))
        grads = tape.gradient(loss, model.trainable_variables)
        results.append((np.asarray(model(x)),
                        [np.zeros(v.shape) if g is None else tf.convert_to_tensor(g)
                         for v, g in zip(model.trainable_variables, grads)]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    assert len(results[0][1]) == len(results[1][1])
    for g_once, g_every in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(np.asarray(g_once), np.asarray(g_every),
                                   rtol=1e-4, atol=1e-6)
    assert any(float(np.max(np.abs(g))) > 0 for g in results[0][1])


def test_request_side_runs_on_the_distinct_requests_only():
    """The request side sees one row per request of the batch (B requests here)."""
    model = _model()
    x = _requests_with_candidates(per_request=3)
    seen = []
    original = model.request_side

    def spy(inputs, training=None, intent=None):
        seen.append(int(np.shape(inputs[F.xf(F.USER_ID)])[0]))
        return original(inputs, training=training, intent=intent)

    model.request_side = spy
    model(x)  # the first call may trace the model more than once
    assert seen and set(seen) == {B}
    LabelIntentModel(model, LOO_KEYS)(_with_label_intent(x))
    assert seen[-1] > B  # the leave-one-out labels split requests


@pytest.mark.parametrize("overrides", [
    {}, {"use_uim": False}, {"use_die": False}, {"use_sein": False},
    {"use_die": False, "use_sein": False}, {"attention_softmax": True}])
@pytest.mark.parametrize("row", [0, 2])  # a full history; none
def test_score_candidates_is_call_on_the_request_repeated(overrides, row):
    """`score_candidates(one request, N candidates)` (the rank signature) equals
    `call` on N rows that repeat the request with each candidate's target, for every
    switch, with the context given only its request keys and the candidates only
    their target keys."""
    from daian_tf.models.daian import CANDIDATE_KEYS

    model = _model(**overrides)
    x = _requests_with_candidates(per_request=3)
    model(x)
    base = _inputs()
    context = {k: np.asarray(v)[row:row + 1] for k, v in base.items()
               if k in model.request_keys}
    candidates = {k: v for k, v in x.items() if k in CANDIDATE_KEYS}
    n = len(candidates[F.xf(F.TARGET_ITEM_ID)])
    repeated = {**{k: np.repeat(v, n, axis=0) for k, v in context.items()},
                **candidates}
    np.testing.assert_allclose(
        np.asarray(model.score_candidates(context, candidates)).reshape(-1),
        _scores(model, repeated), rtol=1e-5, atol=1e-6)


def test_call_with_intent_is_call_and_predict_intent():
    model = _model()
    x = _requests_with_candidates()
    probs, intent = model.call_with_intent(x, training=False)
    np.testing.assert_allclose(np.asarray(probs).reshape(-1), _scores(model, x),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(intent),
                               np.asarray(model.predict_intent(x, training=False)),
                               rtol=1e-6, atol=1e-7)
