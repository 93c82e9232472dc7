"""The TFMA evaluation that gates the push: metrics, slices and the thresholds.

Two Evaluators run it on the eval split of the built examples, each with DAIAN's final
stage as the candidate: one against the baseline Trainer's model (DIN) and one against
the latest blessed model (`LatestBlessedModelStrategy`; none on the first run: TFX then
ignores the change thresholds, a "rubber stamp"). `PushGate` blesses the candidate only
if both pass.

Metrics (overall and per `intent_diversity` slice): example count, AUC, GAUC (the
package's TFMA metric, `tfma_metrics.GAUC`: the formula of `daian_tf.metrics.gauc`), log
loss (`binary_crossentropy`), calibration (mean prediction / mean label), mean label and
mean prediction. Thresholds (overall slice): AUC and GAUC of the candidate may not fall
below the baseline's by more than `pipeline.auc_tolerance` / `gauc_tolerance`.
"""

from __future__ import annotations

from typing import Dict

import tensorflow_model_analysis as tfma

from daian_tf.core import features as F
from daian_tf.core.names import AUC, GAUC
from daian_tf.core.signatures import OUTPUT_CTR, SIGNATURE_SERVING_DEFAULT
from tfx_pipeline.tfma_metrics import gauc_metric_config

CANDIDATE, BASELINE = "candidate", "baseline"  # TFMA model names
# TFMA's metric names of what the gate and the run's summary read
TFMA_AUC, TFMA_GAUC = AUC, GAUC  # TFMA's AUC is named "auc" by default
TFMA_LOGLOSS, TFMA_CALIBRATION, TFMA_EXAMPLES = ("binary_crossentropy", "calibration",
                                                 "example_count")
GATED_METRICS = (TFMA_AUC, TFMA_GAUC)
SLICE_FEATURES = (F.INTENT_DIVERSITY,)


def _no_worse_than_baseline(tolerance: float) -> tfma.PerSliceMetricThreshold:
    """Candidate − baseline >= −tolerance, on the overall slice only (a threshold
    without slicing specs would gate every slice, the small ones included)."""
    return tfma.PerSliceMetricThreshold(
        slicing_specs=[tfma.SlicingSpec()],
        threshold=tfma.MetricThreshold(change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -float(tolerance)})))


def tolerances(pipeline_cfg) -> Dict[str, float]:
    """{gated TFMA metric: how far below the baseline the candidate may be}."""
    return {TFMA_AUC: pipeline_cfg.auc_tolerance, TFMA_GAUC: pipeline_cfg.gauc_tolerance}


def eval_config(pipeline_cfg) -> tfma.EvalConfig:
    """The EvalConfig of both Evaluators (candidate vs one baseline model each)."""
    tol = tolerances(pipeline_cfg)
    spec = dict(signature_name=SIGNATURE_SERVING_DEFAULT, label_key=F.LABEL,
                prediction_key=OUTPUT_CTR)
    auc = tfma.MetricConfig(class_name="AUC",
                            per_slice_thresholds=[_no_worse_than_baseline(tol[TFMA_AUC])])
    gauc = gauc_metric_config()
    gauc.per_slice_thresholds.append(_no_worse_than_baseline(tol[TFMA_GAUC]))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(name=CANDIDATE, **spec),
                     tfma.ModelSpec(name=BASELINE, is_baseline=True, **spec)],
        slicing_specs=[tfma.SlicingSpec()] + [
            tfma.SlicingSpec(feature_keys=[key]) for key in SLICE_FEATURES],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="ExampleCount"),
            auc,
            gauc,
            tfma.MetricConfig(class_name="BinaryCrossentropy"),
            tfma.MetricConfig(class_name="Calibration"),
            tfma.MetricConfig(class_name="MeanLabel"),
            tfma.MetricConfig(class_name="MeanPrediction"),
        ])])
