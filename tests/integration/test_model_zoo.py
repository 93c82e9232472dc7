"""Every registered model on one small simulated world, through the routes a user takes:
`fit_model` (the experiments' and the Trainer's fit), the metrics against the popularity
baseline (AUC by scikit-learn), and the SavedModel served over gRPC with TF Serving's stubs
scoring as the in-process model (to 1e-5), every signature the model has.

A model joins by its entry in `models.factory.MODELS`; `ZOO` lists the ones tested here
(DIN and DAIAN have their own, deeper tests).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from daian_tf.core.config import Config, SampleConfig, SimulationConfig
from daian_tf.core.names import DAIAN, DIN, EVAL, MODEL_NAMES
from daian_tf.core.signatures import (OUTPUT_CTR, OUTPUT_INTENT,
                                      OUTPUT_USER_REPRESENTATION, SIGNATURE_CTR,
                                      SIGNATURE_INTENT, SIGNATURE_RANK,
                                      SIGNATURE_SERVING_DEFAULT,
                                      SIGNATURE_USER_REPRESENTATION)
from daian_tf.data.catalog import read_model_catalog
from daian_tf.data.simulator import simulate
from daian_tf.data.transform import serving_feature_spec
from daian_tf.evaluation.columns import collect_columns, predict_split
from daian_tf.evaluation.raw_split import read_split
from daian_tf.export.saved_model import export_serving_model
from daian_tf.models.factory import MODELS, has_intent, needs_catalog
from daian_tf.training.fit import fit_model
from daian_tf.core import features as F
from daian_tf.workflows import SAMPLES_DIR, prepare_data

pytestmark = pytest.mark.slow

ZOO = [name for name in MODEL_NAMES if name not in (DIN, DAIAN) and name in MODELS]


def _cfg(name: str = DIN) -> Config:
    return Config(
        simulation=SimulationConfig(num_users=150, num_items=300, num_categories=16,
                                    num_shops=20, request_days=5, history_days=4),
        samples=SampleConfig(history_days=4, max_seq_len=12),
        model=dataclasses.replace(Config().model, name=name, embedding_dim=8,
                                  hidden_units=(32, 16), attention_units=(16,)),
        train=dataclasses.replace(Config().train, epochs=3, batch_size=128,
                                  learning_rate=3e-3),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    cfg = _cfg()
    simulate(str(root / "raw"), cfg.simulation)
    data = prepare_data(str(root / "raw"), str(root / "data"), cfg)
    return {"root": root, "data": data, "catalog": read_model_catalog(str(root / "raw"))}


_FITTED: dict = {}


def _fitted(world, name):
    if name not in _FITTED:
        cfg, data = _cfg(name), world["data"]
        model, history = fit_model(cfg, data.tf_transform_output, data.train,
                                   data.validation, sim_range=data.sim_range,
                                   catalog=world["catalog"] if needs_catalog(cfg) else None,
                                   verbose=0)
        _FITTED[name] = (cfg, model, history)
    return _FITTED[name]


def test_the_zoo_is_not_empty():
    assert ZOO, "no model beside DIN and DAIAN is registered in models.factory.MODELS"


@pytest.mark.parametrize("name", ZOO)
def test_learns_above_the_popularity_baseline(world, name):
    cfg, model, _ = _fitted(world, name)
    data = world["data"]
    labels, scores, _ = predict_split(model, data.eval, data.tf_transform_output)
    assert np.all(np.isfinite(scores)) and np.all((scores > 0) & (scores < 1))
    target = F.xf(F.TARGET_ITEM_ID)
    train = collect_columns(None, data.train, data.tf_transform_output, [target])
    test = collect_columns(None, data.eval, data.tf_transform_output, [target])
    ctr = {}  # popularity, re-derived: the train CTR of the target id
    for item, label in zip(train[target], train[F.LABEL]):
        shown, clicked = ctr.get(item, (0, 0))
        ctr[item] = (shown + 1, clicked + int(label))
    popularity = np.array([(ctr.get(i, (0, 0))[1] + 1) / (ctr.get(i, (0, 0))[0] + 2)
                           for i in test[target]])
    auc_model = roc_auc_score(labels, scores)
    auc_popularity = roc_auc_score(test[F.LABEL].astype(int), popularity)
    assert auc_model > auc_popularity, (name, auc_model, auc_popularity)


def _request_part(serialized: bytes) -> bytes:
    """An example without its target features: what its request shares."""
    example = tf.train.Example.FromString(serialized)
    for key in F.TARGET_KEYS:
        del example.features.feature[key]
    return example.SerializeToString(deterministic=True)


@pytest.mark.parametrize("name", ZOO)
def test_served_over_grpc_scores_as_in_process(world, name, tmp_path):
    from serving.cc_loader import check_export
    from serving.client import PredictClient
    from serving.server import serve

    cfg, model, _ = _fitted(world, name)
    data = world["data"]
    split = read_split(os.path.join(world["root"], "data", SAMPLES_DIR, EVAL, "*"),
                       cfg.samples, limit=48)
    base = tmp_path / name
    export_serving_model(model, data.tf_transform_output, str(base / "1"), cfg.samples,
                         warmup_examples=split.requests[:2], model_name=name)
    loaded = tf.saved_model.load(str(base / "1"))
    expected = {SIGNATURE_SERVING_DEFAULT, SIGNATURE_CTR, SIGNATURE_RANK}
    if has_intent(cfg):
        expected.add(SIGNATURE_INTENT)
    if hasattr(model, "user_representation"):
        expected.add(SIGNATURE_USER_REPRESENTATION)
    assert set(loaded.signatures) == expected
    # as TF Serving runs it: tensorflow::LoadSavedModel + Session::Run, every signature
    checked = check_export(base / "1", split.requests)
    assert {c.signature for c in checked if c.source == "examples"} == expected
    assert max(c.max_abs_diff for c in checked) <= 1e-5

    # in process: the Keras model on the transformed features of the same examples
    parsed = tf.io.parse_example(tf.constant(split.requests),
                                 serving_feature_spec(cfg.samples))
    features = data.tf_transform_output.transform_features_layer()(parsed)
    keys = getattr(model, "input_keys", None) or [t.name for t in model.inputs]
    inputs = {k: features[k] for k in keys}
    in_process = np.asarray(model(inputs, training=False)).reshape(-1)

    with serve(str(base), model_name=name, port=0) as server, \
            PredictClient(server.target, model_name=name) as client:
        served = client.predict_examples(split.requests, SIGNATURE_SERVING_DEFAULT,
                                         OUTPUT_CTR)
        np.testing.assert_allclose(np.asarray(served).reshape(-1), in_process, atol=1e-5)
        # rank: the first request's context and its own candidates
        same = [i for i, e in enumerate(split.requests)
                if _request_part(e) == _request_part(split.requests[0])]
        ranked = client.rank(split.requests[0], [split.requests[i] for i in same])
        np.testing.assert_allclose(np.asarray(ranked).reshape(-1), in_process[same],
                                   atol=1e-5)
        if has_intent(cfg):
            intent = np.asarray(client.predict_examples(split.requests, SIGNATURE_INTENT,
                                                        OUTPUT_INTENT))
            np.testing.assert_allclose(
                intent, np.asarray(model.predict_intent(inputs, training=False)),
                atol=1e-5)
            np.testing.assert_allclose(intent.sum(axis=-1), 1.0, atol=1e-4)
        if hasattr(model, "user_representation"):
            vectors = np.asarray(client.predict_examples(
                split.requests, SIGNATURE_USER_REPRESENTATION, OUTPUT_USER_REPRESENTATION))
            np.testing.assert_allclose(
                vectors, np.asarray(model.user_representation(inputs, training=False)),
                atol=1e-5)
