"""DAIAN through the real data path: three-stage training and the serving export.

Small random but valid examples (spec/DATA.md §2) → `preprocessing_fn` on Beam → each stage
of `training/stages.py` as its own `model.fit` → SavedModel with the ctr, intent and rank
signatures, reloaded and called.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from daian_tf.core import features as F
from daian_tf.core.signatures import (INPUT_CANDIDATES, INPUT_CONTEXT, INPUT_EXAMPLES,
                                      OUTPUT_CTR, OUTPUT_INTENT, SIGNATURE_CTR,
                                      SIGNATURE_INTENT,
                                      SIGNATURE_RANK, SIGNATURE_SERVING_DEFAULT)
from daian_tf.data.transform import vocab_sizes
from daian_tf.data.transform_beam import transform_samples
from daian_tf.export.saved_model import export_serving_model, to_serving_example
from daian_tf.models.factory import build_model
from daian_tf.training import stages
from tests.integration.test_transform_train_export import (NUM_ITEMS, SIM_RANGE, _cfg,
                                                           write_random_samples)

pytestmark = pytest.mark.slow

D_M = 6


def _daian_cfg():
    cfg = _cfg()
    return dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, name="daian", attention_width=8,
                                  attention_heads=2, intent_dim=4, uim_hidden_units=(8,),
                                  projection_units=(8,), gate_hidden_units=(8,)),
        # each stage's own updates are what these tests look at: no best-epoch choice
        # (random examples: an epoch may well be no better than the stage's start)
        train=dataclasses.replace(cfg.train, learning_rate=0.01, stage1_epochs=2,
                                  stage2_epochs=1, stage3_epochs=1,
                                  restore_best_epoch=False))


def _catalog():
    """Every item of the random examples plus one never shown (a cold item)."""
    rng = np.random.default_rng(1)
    ids = [f"item{i}" for i in range(NUM_ITEMS)] + ["cold_item"]
    return ids, rng.normal(size=(len(ids), D_M)).astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("daian_stages")
    cfg = _daian_cfg()
    examples = write_random_samples(root / "samples", cfg)
    paths = transform_samples(str(root / "samples"), str(root / "out"), cfg,
                              list(SIM_RANGE))
    return {"root": root, "cfg": cfg, "examples": examples, "paths": paths,
            "tfo": tft.TFTransformOutput(paths["transform_output"])}


def _model(data):
    keras.utils.set_random_seed(0)
    sizes = vocab_sizes(data["tfo"], data["cfg"].samples.user_columns)
    return build_model(data["cfg"], sizes, list(SIM_RANGE), _catalog())


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def _args(data):
    p = data["paths"]
    return p["train"], p["validation"], data["tfo"], data["cfg"].train


@pytest.fixture(scope="module")
def staged(data, tmp_path_factory):
    """One model through the three stages, with snapshots taken between them, and its
    export (one training for all the tests below)."""
    model = _model(data)
    batch = next(iter(stages.intent_dataset(model, data["paths"]["train"], data["tfo"],
                                            8, shuffle=False)))[0]
    model(batch)
    uim_ids = {id(u) for u in model.uim_variables()}

    def ctr_variables():
        return [v for v in model.trainable_variables if id(v) not in uim_ids]

    snap = {"kl_before": stages.intent_kl(model, data["paths"]["train"], data["tfo"]),
            "ctr_before_1": _values(ctr_variables())}
    ckpt = tmp_path_factory.mktemp("ckpt")
    stages.train_stage1(model, *_args(data), verbose=0)
    model.save_weights(str(ckpt / "stage1.weights.h5"))
    snap["kl_after"] = stages.intent_kl(model, data["paths"]["train"], data["tfo"])
    snap["ctr_after_1"] = _values(ctr_variables())
    snap["uim_after_1"] = _values(model.uim_variables())
    stages.train_stage2(model, *_args(data), verbose=0)
    snap["uim_after_2"] = _values(model.uim_variables())
    snap["stage3_model"] = stages.train_stage3(model, *_args(data), verbose=0).model
    snap["uim_after_3"] = _values(model.uim_variables())
    model.save_weights(str(ckpt / "stage3.weights.h5"))
    export_dir = str(tmp_path_factory.mktemp("export") / "1")
    export_serving_model(model, data["tfo"], export_dir, data["cfg"].samples,
                         warmup_examples=data["examples"]["eval"][:2])
    return {"model": model, "snap": snap, "ckpt": ckpt, "export_dir": export_dir,
            "loaded": tf.saved_model.load(export_dir)}


def test_stage1_lowers_the_intent_kl_and_trains_uim_only(staged):
    snap = staged["snap"]
    assert snap["kl_after"] < snap["kl_before"]
    for a, b in zip(snap["ctr_before_1"], snap["ctr_after_1"]):
        np.testing.assert_array_equal(a, b)


def test_intent_weights_count_each_request_once(data, staged):
    """I-11: the weights of a request's samples sum to 1 (labelled) or 0."""
    model = staged["model"]
    keys, weights, masks = [], [], []
    ds = stages.make_dataset(data["paths"]["train"], data["tfo"], 64, shuffle=False,
                             input_keys=[F.REQUEST_KEY, stages.INTENT_MASK_XF])
    for (inputs, _), (_, _, w) in zip(ds, stages.intent_dataset(
            model, data["paths"]["train"], data["tfo"], 64, shuffle=False)):
        keys.extend(inputs[F.REQUEST_KEY].numpy().tolist())
        masks.extend(inputs[stages.INTENT_MASK_XF].numpy().tolist())
        weights.extend(w.numpy().tolist())
    total = {}
    for k, w, m in zip(keys, weights, masks):
        total[k] = total.get(k, 0.0) + w
        assert w == 0.0 if m == 0 else w > 0
    assert all(abs(t - 1.0) < 1e-5 or t == 0.0 for t in total.values())


def test_stage2_leaves_uim_unchanged_and_stage3_moves_it_with_its_own_optimizer(
        data, staged):
    snap, model = staged["snap"], staged["model"]
    for a, b in zip(snap["uim_after_1"], snap["uim_after_2"]):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b)
               for a, b in zip(snap["uim_after_2"], snap["uim_after_3"]))
    train_cfg = data["cfg"].train
    stage3 = snap["stage3_model"]
    assert isinstance(stage3, stages.TwoOptimizerModel) and stage3.daian is model
    assert stage3.uim_optimizer is not stage3.optimizer
    np.testing.assert_allclose(float(stage3.uim_optimizer.learning_rate),
                               train_cfg.uim_lr_scale * train_cfg.learning_rate,
                               rtol=1e-6)
    np.testing.assert_allclose(float(stage3.optimizer.learning_rate),
                               train_cfg.learning_rate, rtol=1e-6)
    assert int(stage3.uim_optimizer.iterations.numpy()) > 0
    assert all(v.trainable for v in model.uim_variables())  # unfrozen after stage 2


def test_stage2_feeds_the_ground_truth_intent(data, staged):
    """In stage 2 the intent comes from the label (uniform where there is none)."""
    model = staged["model"]
    stage2 = stages.LabelIntentModel(
        model, stages.STAGE2_INTENT_KEYS[data["cfg"].train.stage2_label])
    key, mask_key = stage2.intent_keys
    assert key == F.xf(F.INTENT_LABEL_LOO)  # I-3 default
    ds = stages.make_dataset(data["paths"]["train"], data["tfo"], 16, shuffle=False,
                             input_keys=stage2.input_keys)
    inputs, _ = next(iter(ds))
    intent = np.asarray(model.per_sample_request(
        inputs, intent_keys=stage2.intent_keys)["intent"])
    label, mask = inputs[key].numpy(), inputs[mask_key].numpy()
    expected = np.where(mask[:, None] > 0, label, 1.0 / label.shape[1])
    np.testing.assert_allclose(intent, expected, atol=1e-6)


def test_a_stage_resumes_from_a_checkpoint(data, staged):
    """A fresh model loaded from the stage-3 weights scores like the trained one."""
    model = staged["model"]
    fresh = _model(data)
    ds = stages.make_dataset(data["paths"]["eval"], data["tfo"], 32, shuffle=False,
                             input_keys=model.input_keys)
    inputs, _ = next(iter(ds))
    fresh(inputs)
    fresh.load_weights(str(staged["ckpt"] / "stage3.weights.h5"))
    np.testing.assert_allclose(np.asarray(fresh(inputs)), np.asarray(model(inputs)),
                               atol=1e-6)


def test_export_serves_ctr_intent_and_rank(data, staged):
    loaded = staged["loaded"]
    np.testing.assert_allclose(loaded.sim_range.numpy(), SIM_RANGE)  # received, kept
    requests = [to_serving_example(e, data["cfg"].samples)
                for e in data["examples"]["eval"][:8]]
    out = loaded.signatures[SIGNATURE_SERVING_DEFAULT](
        **{INPUT_EXAMPLES: tf.constant(requests)})
    ctr, intent = out[OUTPUT_CTR].numpy(), out[OUTPUT_INTENT].numpy()
    assert ctr.shape == (8,) and np.all((ctr > 0) & (ctr < 1))
    n = data["cfg"].samples.num_intent_levels
    assert intent.shape == (8, n)
    np.testing.assert_allclose(intent.sum(axis=1), 1.0, atol=1e-5)
    only_intent = loaded.signatures[SIGNATURE_INTENT](
        **{INPUT_EXAMPLES: tf.constant(requests)})[OUTPUT_INTENT].numpy()
    np.testing.assert_allclose(only_intent, intent, atol=1e-6)

    # rank: one context + candidates = the same scores as full examples that combine
    # the context's request features with each candidate's target features
    context = tf.train.Example.FromString(requests[0])
    combined, candidates = [], []
    target_keys = set(F.TARGET_ITEM_KEYS) | {F.TARGET_PRICE}
    for r in requests[1:6]:
        cand = tf.train.Example.FromString(r)
        only_target = tf.train.Example()
        full = tf.train.Example()
        full.CopyFrom(context)
        for key in target_keys:
            only_target.features.feature[key].CopyFrom(cand.features.feature[key])
            full.features.feature[key].CopyFrom(cand.features.feature[key])
        candidates.append(only_target.SerializeToString())
        combined.append(full.SerializeToString())
    ranked = loaded.signatures[SIGNATURE_RANK](
        **{INPUT_CONTEXT: tf.constant([requests[0]]),
           INPUT_CANDIDATES: tf.constant(candidates)})[OUTPUT_CTR].numpy()
    expected = loaded.signatures[SIGNATURE_SERVING_DEFAULT](
        **{INPUT_EXAMPLES: tf.constant(combined)})[OUTPUT_CTR].numpy()
    np.testing.assert_allclose(ranked, expected, atol=1e-5)


def test_export_runs_under_tensorflows_cpp_loader_as_tf_serving_runs_it(data, staged):
    """`tensorflow::LoadSavedModel` + `Session::Run` (TF Serving's path) answers every
    signature, the warmup request included, as `tf.saved_model.load`; with a cold
    catalog item among the requests (the catalog's lookup table)."""
    from serving.cc_loader import check_export

    requests = [to_serving_example(e, data["cfg"].samples)
                for e in data["examples"]["eval"][:12]]
    cold = tf.train.Example.FromString(requests[-1])
    cold.features.feature[F.TARGET_ITEM_ID].bytes_list.value[:] = [b"cold_item"]
    requests.append(cold.SerializeToString())
    checked = check_export(staged["export_dir"], requests)
    assert [c.source for c in checked] == ["warmup request 0", "warmup request 1"] + [
        "examples"] * 4
    assert sorted(c.signature for c in checked[2:]) == sorted(
        [SIGNATURE_CTR, SIGNATURE_INTENT, SIGNATURE_RANK, SIGNATURE_SERVING_DEFAULT])
    assert all(c.rows == len(requests) for c in checked[2:])
    assert max(c.max_abs_diff for c in checked) <= 1e-5


def test_cold_item_gets_its_catalog_vector_in_serving(data, staged):
    """A target outside the training vocabulary but in the catalog is scored with its
    multimodal vector: two cold items with different vectors score differently."""
    loaded = staged["loaded"]
    base = tf.train.Example.FromString(
        to_serving_example(data["examples"]["eval"][0], data["cfg"].samples))
    scores = []
    for item in (b"cold_item", b"not_in_catalog_either"):
        ex = tf.train.Example()
        ex.CopyFrom(base)
        ex.features.feature[F.TARGET_ITEM_ID].bytes_list.value[:] = [item]
        scores.append(loaded.signatures[SIGNATURE_SERVING_DEFAULT](
            **{INPUT_EXAMPLES: tf.constant([ex.SerializeToString()])}
        )[OUTPUT_CTR].numpy()[0])
    assert scores[0] != pytest.approx(scores[1], abs=1e-7)


@pytest.mark.parametrize("model_overrides,train_overrides,stages_run", [
    ({"use_uim": False}, {}, ["stage2", "stage3"]),  # w/o UIM: no KL stage
    ({}, {"three_stage": False}, ["joint"]),  # w/o three-stage: one joint stage
    ({"use_die": False}, {}, ["stage1", "stage2", "stage3"]),  # UIM gets no CTR grad
])
def test_ablation_schedules_train(data, model_overrides, train_overrides, stages_run):
    """The ablations' schedules run through `fit_model` (stage 3 once failed for w/o
    UIM, whose UIM variables did not exist when UIM's optimizer was built, and for w/o
    DIE, where the CTR loss gives UIM no gradient), and no stage trains a variable the
    loss does not reach (Keras' "Gradients do not exist" warning)."""
    import warnings

    from daian_tf.training.fit import fit_model

    cfg = data["cfg"]
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, **model_overrides),
        train=dataclasses.replace(cfg.train, stage1_epochs=1, **train_overrides))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, history = fit_model(cfg, data["tfo"], data["paths"]["train"],
                                   data["paths"]["validation"], sim_range=list(SIM_RANGE),
                                   catalog=_catalog(), verbose=0)
    assert not [w for w in caught if "Gradients do not exist" in str(w.message)]
    assert list(history) == stages_run
    assert all(np.isfinite(h["loss"]).all() for h in history.values())


def test_probe_scores_as_the_model_and_its_knockouts_change_them(data, staged):
    """evaluation.probe: without a knock-out its hooks leave the scores as the model's
    own (so its metrics equal predict_split's); each knock-out changes the scores; the
    hooks are gone afterwards; the per-level rows add up to the split."""
    from daian_tf.evaluation.columns import predict_split
    from daian_tf.evaluation.probe import KNOCKOUTS, probe_daian
    from daian_tf.evaluation.tables import ranking_metrics

    model, pattern = staged["model"], data["paths"]["eval"]
    labels, scores, users = predict_split(model, pattern, data["tfo"])
    reference = ranking_metrics(labels, scores, users)
    report = probe_daian(model, pattern, data["tfo"])
    assert report["knockouts"]["none"]["auc"] == pytest.approx(reference["auc"], abs=1e-4)
    assert report["knockouts"]["none"]["gauc"] == pytest.approx(reference["gauc"], abs=1e-4)
    assert set(report["knockouts"]) == {"none", *KNOCKOUTS}
    assert sum(r["samples"] for r in report["by_level"]) == len(labels)
    for row in report["by_level"]:
        if row["samples"]:
            assert 0.0 <= row["r"] <= 1.0 and row["w_exp"] >= 0.0
    assert 0.0 <= report["uim"]["js_p_hat_vs_label"] <= np.log(2)
    # hooks removed: the model's own methods are back
    assert "call" not in model.similarity.__dict__ and "predict_intent" not in model.__dict__
    _, again, _ = predict_split(model, pattern, data["tfo"])
    np.testing.assert_allclose(again, scores, atol=1e-6)
    # a knock-out is real: replacing s_sem by its batch mean moves the scores
    from collections import defaultdict

    from daian_tf.evaluation import probe

    record = {}
    with probe._hooks(model, defaultdict(list), "s_sem"):
        batch = next(iter(probe.make_dataset(pattern, data["tfo"], 64, shuffle=False,
                                             input_keys=model.input_keys)))[0]
        record["knocked"] = np.asarray(model(batch, training=False))
    plain = np.asarray(model(batch, training=False))
    assert not np.allclose(plain, record["knocked"], atol=1e-6)


def test_rank_flops_from_the_trace_grow_by_one_candidates_share_each(data, staged):
    """The FLOPs `serving.load_test` reports for `rank` (its matrix products, read
    from a profiler trace of the call): a fixed request part plus the same amount
    for each candidate, and at least the head's own products per candidate."""
    from serving.load_test import candidate_example, signature_flops

    requests = [to_serving_example(e, data["cfg"].samples)
                for e in data["examples"]["eval"][:6]]
    candidates = [candidate_example(r) for r in requests[1:]]
    flops = signature_flops(staged["export_dir"], [
        (SIGNATURE_RANK, {INPUT_CONTEXT: requests[:1], INPUT_CANDIDATES: candidates[:n]})
        for n in (2, 3, 4)])
    per_candidate = flops[1] - flops[0]
    assert per_candidate > 0 and flops[2] - flops[1] == per_candidate
    model = staged["model"]
    head = sum(2 * int(np.prod(layer.kernel.shape))
               for layer in model.head + [model.output_layer])
    assert per_candidate >= head
