"""GAUC as a TFMA custom metric (`tfx_pipeline.tfma_metrics`), run through TFMA for real.

Small seeded tf.Examples (user_id, label, intent_diversity and three float prediction
columns) are written to a TFRecord file and evaluated by `tfma.run_model_analysis` on
Beam's DirectRunner with model-less `ModelSpec`s (the predictions are features), sliced
overall and by intent_diversity. The TFMA values are checked against
`daian_tf.metrics.ranking.gauc` and against an independent per-user scikit-learn
computation; with a baseline model, a change threshold on `gauc` is shown to pass and to
fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from sklearn.metrics import roc_auc_score
from tensorflow_model_analysis import constants as tfma_constants
from tensorflow_model_analysis.slicer import slicer_lib

from daian_tf.core import features as F
from daian_tf.core.signatures import OUTPUT_CTR
from daian_tf.data.beam_runners import pipeline_options
from daian_tf.metrics.ranking import gauc
from tensorflow_model_analysis.metrics import metric_specs
from tfx_pipeline.tfma_metrics import GAUC as GaucMetric
from tfx_pipeline.tfma_metrics import gauc_metric_config, gauc_metric_names

NUM_USERS = 30
SEED = 20261201
# Prediction columns of the test data (test-only names, not features of the project).
GOOD = OUTPUT_CTR  # correlated with the label, rounded so that ties occur
NOISY = OUTPUT_CTR + "_noisy"  # correlated more weakly: the baseline
NEGATED = OUTPUT_CTR + "_negated"  # 1 - GOOD: a worse candidate
CANDIDATE, BASELINE = "candidate", "baseline"
GAUC, NUM_USERS_KEY, EXCLUDED_KEY = gauc_metric_names()


def _make_data(rng: np.random.Generator) -> dict:
    """Columns of the examples: 30 users, a few with only clicks or only non-clicks."""
    users, labels, diversity = [], [], []
    for u in range(NUM_USERS):
        n = int(rng.integers(2, 14))
        if u % 7 == 0:
            y = np.ones(n, np.int64)  # clicks only
        elif u % 7 == 1:
            y = np.zeros(n, np.int64)  # non-clicks only
        else:
            y = (rng.random(n) < 0.35).astype(np.int64)
        users += [f"u{u:03d}".encode()] * n
        labels.append(y)
        diversity.append(rng.choice([-1, 0, 1, 2], size=n, p=[0.2, 0.3, 0.3, 0.2]))
    labels = np.concatenate(labels)
    good = np.round(1.0 / (1.0 + np.exp(-(1.5 * labels + rng.normal(size=len(labels))))),
                    1)
    noisy = 1.0 / (1.0 + np.exp(-(0.4 * labels + rng.normal(size=len(labels)))))
    return {F.USER_ID: np.array(users, dtype=object), F.LABEL: labels,
            F.INTENT_DIVERSITY: np.concatenate(diversity).astype(np.int64),
            GOOD: good.astype(np.float32), NOISY: noisy.astype(np.float32),
            NEGATED: (1.0 - good).astype(np.float32)}


def _write_examples(data: dict, path: str) -> None:
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(len(data[F.LABEL])):
            feature = {
                F.USER_ID: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[data[F.USER_ID][i]])),
                F.LABEL: tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[data[F.LABEL][i]])),
                F.INTENT_DIVERSITY: tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[data[F.INTENT_DIVERSITY][i]])),
            }
            for key in (GOOD, NOISY, NEGATED):
                feature[key] = tf.train.Feature(
                    float_list=tf.train.FloatList(value=[data[key][i]]))
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """(columns, path of the TFRecord file holding them)."""
    data = _make_data(np.random.default_rng(SEED))
    path = str(tmp_path_factory.mktemp("tfma_gauc") / "examples.tfrecord")
    _write_examples(data, path)
    return data, path


def _sklearn_gauc(labels, scores, users):
    """(GAUC, users used, users skipped), per user with scikit-learn's roc_auc_score."""
    total, weight, used, skipped = 0.0, 0.0, 0, 0
    for user in sorted(set(users.tolist())):
        rows = users == user
        if len(np.unique(labels[rows])) < 2:
            skipped += 1
            continue
        total += rows.sum() * roc_auc_score(labels[rows], scores[rows])
        weight += rows.sum()
        used += 1
    return total / weight, used, skipped


def _slicing_specs():
    return [tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[F.INTENT_DIVERSITY])]


def _run(path: str, output_path: str, model_specs, metrics_specs) -> dict:
    """Runs TFMA; {(slice key, model name, is_diff): {metric name: value}}.

    With several model specs, TFMA keeps the baseline spec only if it is handed as many
    `EvalSharedModel`s (it strips baselines and refuses change thresholds otherwise);
    model-less ones say so with the `materialized_prediction` model type.
    """
    eval_config = tfma.EvalConfig(model_specs=model_specs, metrics_specs=metrics_specs,
                                  slicing_specs=_slicing_specs())
    shared_models = None
    if len(model_specs) > 1:
        shared_models = [tfma.types.EvalSharedModel(
            model_name=spec.name, is_baseline=spec.is_baseline,
            model_type=tfma_constants.MATERIALIZED_PREDICTION) for spec in model_specs]
    tfma.run_model_analysis(eval_shared_model=shared_models, eval_config=eval_config,
                            data_location=path, output_path=output_path,
                            pipeline_options=pipeline_options())  # the project's runner
    results = {}
    for metrics_for_slice in tfma.load_metrics(output_path):
        slice_key = slicer_lib.deserialize_slice_key(metrics_for_slice.slice_key)
        for kv in metrics_for_slice.metric_keys_and_values:
            group = results.setdefault(
                (slice_key, kv.key.model_name, kv.key.is_diff), {})
            group[kv.key.name] = kv.value.double_value.value
    return results


def _slices(data):
    """{slice key as TFMA writes it: row mask}, overall and per intent_diversity."""
    out = {(): np.ones(len(data[F.LABEL]), bool)}
    for value in np.unique(data[F.INTENT_DIVERSITY]):
        out[((F.INTENT_DIVERSITY, int(value)),)] = data[F.INTENT_DIVERSITY] == value
    return out


def test_gauc_per_slice_matches_daian_and_sklearn(dataset, tmp_path):
    data, path = dataset
    results = _run(
        path, str(tmp_path / "out"),
        [tfma.ModelSpec(label_key=F.LABEL, prediction_key=GOOD)],
        [tfma.MetricsSpec(metrics=[gauc_metric_config()])])
    slices = _slices(data)
    assert {key[0] for key in results} == set(slices)
    for slice_key, rows in slices.items():
        y, s, u = data[F.LABEL][rows], data[GOOD][rows], data[F.USER_ID][rows]
        metrics = results[(slice_key, "", False)]
        expected = gauc(y, s, u)
        sk_value, sk_used, sk_skipped = _sklearn_gauc(y, s, u)
        assert expected.num_groups > 0 and expected.num_skipped > 0, slice_key
        assert metrics[GAUC] == pytest.approx(expected.value, abs=1e-6), slice_key
        assert metrics[GAUC] == pytest.approx(sk_value, abs=1e-6), slice_key
        assert metrics[NUM_USERS_KEY] == expected.num_groups == sk_used, slice_key
        assert metrics[EXCLUDED_KEY] == expected.num_skipped == sk_skipped, slice_key
    # The per-user grouping matters: GAUC differs from the AUC of all examples.
    assert not math.isclose(results[((), "", False)][GAUC],
                            roc_auc_score(data[F.LABEL], data[GOOD]), abs_tol=1e-3)


def _two_model_run(path, output_path, candidate_key):
    model_specs = [
        tfma.ModelSpec(name=CANDIDATE, label_key=F.LABEL, prediction_key=candidate_key),
        tfma.ModelSpec(name=BASELINE, label_key=F.LABEL, prediction_key=NOISY,
                       is_baseline=True),
    ]
    config = gauc_metric_config()
    config.threshold.CopyFrom(tfma.MetricThreshold(
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -1e-10})))
    metrics_specs = [tfma.MetricsSpec(metrics=[config],
                                      model_names=[CANDIDATE, BASELINE])]
    results = _run(path, output_path, model_specs, metrics_specs)
    return results, tfma.load_validation_result(output_path)


@pytest.mark.parametrize("candidate_key, better", [(GOOD, True), (NEGATED, False)])
def test_change_threshold_against_baseline(dataset, tmp_path, candidate_key, better):
    data, path = dataset
    results, validation = _two_model_run(path, str(tmp_path / "out"), candidate_key)
    for slice_key, rows in _slices(data).items():
        y, u = data[F.LABEL][rows], data[F.USER_ID][rows]
        candidate = gauc(y, data[candidate_key][rows], u).value
        baseline = gauc(y, data[NOISY][rows], u).value
        assert results[(slice_key, CANDIDATE, False)][GAUC] == pytest.approx(
            candidate, abs=1e-6)
        assert results[(slice_key, BASELINE, False)][GAUC] == pytest.approx(
            baseline, abs=1e-6)
        assert results[(slice_key, CANDIDATE, True)][GAUC] == pytest.approx(
            candidate - baseline, abs=1e-6)
    overall = gauc(data[F.LABEL], data[candidate_key], data[F.USER_ID]).value - \
        gauc(data[F.LABEL], data[NOISY], data[F.USER_ID]).value
    assert (overall > 0) == better
    if better:  # every slice improves here, so the threshold holds everywhere
        assert all(results[(key[0], CANDIDATE, True)][GAUC] > 0
                   for key in results if key[1] == CANDIDATE and key[2])
    assert validation.validation_ok == better
    if not better:
        failed = {kv.metric_key.name
                  for f in validation.metric_validations_per_slice
                  for kv in f.failures}
        assert failed == {GAUC}


def test_config_resolves_to_gauc_and_refuses_example_weights():
    metric = metric_specs.metric_instance(gauc_metric_config())
    assert isinstance(metric, GaucMetric)
    keys = [key.name for c in metric.computations(model_names=[CANDIDATE, BASELINE])
            for key in c.keys]
    assert keys == [GAUC, NUM_USERS_KEY, EXCLUDED_KEY] * 2
    with pytest.raises(ValueError, match="unweighted"):
        metric.computations(example_weighted=True)
