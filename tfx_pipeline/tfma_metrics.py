"""GAUC as a TFMA custom metric, for the TFX Evaluator (DAIAN.md §8).

An `EvalConfig` names the metric by class and module, which TFMA imports by name when the
Evaluator runs (`tfma.metrics.metric_specs` does `importlib.import_module(module)` for a
`MetricConfig` whose `class_name` is not a built-in metric)::

    tfma.MetricsSpec(metrics=[gauc_metric_config()])
    # == tfma.MetricConfig(class_name="GAUC", module="tfx_pipeline.tfma_metrics")

Per slice and per model, the metric reports three values:

* `gauc`: `daian_tf.metrics.ranking.gauc(labels, predictions, users).value`, the
  impression-weighted mean of the per-user AUC (NaN when no user of the slice has both
  a click and a non-click);
* `gauc_num_users`: the number of users that mean is over;
* `gauc_excluded_users`: the number of users left out because all their examples in
  the slice have the same label.

The users are the raw example feature `user_id` (`features.USER_ID`), read through a
`FeaturePreprocessor`, so the examples the Evaluator reads must carry it (the raw
`Examples` do). With a baseline model (`ModelSpec(is_baseline=True)`), TFMA adds the
candidate-minus-baseline diff of every numeric metric itself, keyed by
`MetricKey(..., is_diff=True)`, so `GenericChangeThreshold`s on `gauc` work without
anything here.

Memory: GAUC does not decompose into sums, so the combiner keeps one (user, label,
prediction) triple per example of each slice until `extract_output`; an accumulator
grows linearly with the examples of its slice. The overall slice alone holds the whole
eval split, once per model evaluated, and every other slice spec adds its examples
again: on the order of 100 bytes per example and slice (three list entries, a Python
float and the user id's bytes object), so tens of millions of eval examples need
gigabytes on the worker that extracts the output.

Example weights are not supported: `daian_tf.metrics.ranking.gauc` weights users by their
number of impressions, not examples by a weight. A `MetricsSpec` that asks for
weighted metrics (explicitly, or by default because a `ModelSpec` sets
`example_weight_key`) gets a ValueError naming the fix, `example_weights { unweighted:
true }` in the spec that holds GAUC.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.proto import config_pb2
from tensorflow_model_analysis.utils import util as tfma_util

from daian_tf.core import features as F
from daian_tf.metrics.ranking import gauc

GAUC_NAME = "gauc"
NUM_USERS_SUFFIX = "_num_users"
EXCLUDED_USERS_SUFFIX = "_excluded_users"


def gauc_metric_config() -> tfma.MetricConfig:
    """The `MetricConfig` naming `GAUC` in this module, for an `EvalConfig`'s specs."""
    return tfma.MetricConfig(class_name=GAUC.__name__, module=GAUC.__module__)


def gauc_metric_names(name: str = GAUC_NAME) -> tuple:
    """(value, users used, users excluded): the metric names GAUC called `name` emits."""
    return name, name + NUM_USERS_SUFFIX, name + EXCLUDED_USERS_SUFFIX


class GAUC(metric_types.Metric):
    """Group AUC over users, per slice, computed by `daian_tf.metrics.ranking.gauc`.

    See the module docstring for the three metrics it emits, the memory it needs and
    why example weights are refused. Only `name` is configurable (the three metrics are
    `name`, `name + "_num_users"` and `name + "_excluded_users"`); the user feature is
    always `features.USER_ID`.
    """

    def __init__(self, name: str = GAUC_NAME):
        """Initializes the metric.

        Args:
            name: name of the GAUC value; the two counts are named after it.
        """
        super().__init__(_gauc_computations, name=name)


def _gauc_computations(
    name: str = GAUC_NAME,
    eval_config: Optional[config_pb2.EvalConfig] = None,
    model_names: Optional[List[str]] = None,
    output_names: Optional[List[str]] = None,
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    """One computation per (model, output), each emitting the three GAUC metrics."""
    if example_weighted:
        raise ValueError(
            "GAUC does not support example weights (it weights users by their number "
            "of impressions); set example_weights { unweighted: true } in the "
            "MetricsSpec that holds GAUC")
    computations = []
    # One preprocessor for all models: features are shared; labels and predictions of
    # every model come along (include_default_inputs) and are picked per model below.
    preprocessors = [metric_types.FeaturePreprocessor(feature_keys=[F.USER_ID])]
    for model_name in model_names or [""]:
        for output_name in output_names or [""]:
            keys = [metric_types.MetricKey(name=n, model_name=model_name,
                                           output_name=output_name,
                                           example_weighted=False)
                    for n in gauc_metric_names(name)]
            computations.append(metric_types.MetricComputation(
                keys=keys, preprocessors=preprocessors,
                combiner=_GaucCombiner(keys, eval_config)))
    return computations


class _GaucAccumulator:
    """The user, label and prediction of every example seen, in three parallel lists."""

    __slots__ = ("users", "labels", "predictions")

    def __init__(self):
        self.users: list = []
        self.labels: list = []
        self.predictions: list = []


class _GaucCombiner(beam.CombineFn):
    """Collects (user, label, prediction) per example; GAUC on them at the end."""

    def __init__(self, keys: List[metric_types.MetricKey],
                 eval_config: Optional[config_pb2.EvalConfig]):
        """Initializes the combiner.

        Args:
            keys: the value, users-used and users-excluded keys, in that order.
            eval_config: the EvalConfig (label and prediction keys of the model).
        """
        self._keys = keys
        self._eval_config = eval_config

    def create_accumulator(self) -> _GaucAccumulator:
        return _GaucAccumulator()

    def add_input(self, accumulator: _GaucAccumulator,
                  element: metric_types.StandardMetricInputs) -> _GaucAccumulator:
        key = self._keys[0]
        label, prediction, _ = next(metric_util.to_label_prediction_example_weight(
            element, eval_config=self._eval_config, model_name=key.model_name,
            output_name=key.output_name, example_weighted=False, flatten=False,
            require_single_example_weight=True))
        user = tfma_util.get_by_keys(element.features, [F.USER_ID], optional=True)
        user = np.asarray(user if user is not None else []).reshape(-1)
        label = np.asarray(label).reshape(-1)
        prediction = np.asarray(prediction).reshape(-1)
        if user.size != 1 or label.size != 1 or prediction.size != 1:
            raise ValueError(
                f"GAUC needs exactly one {F.USER_ID}, label and prediction per "
                f"example, got {user.size}, {label.size} and {prediction.size} "
                f"(metric {key})")
        accumulator.users.append(user[0])
        accumulator.labels.append(label[0].item())
        accumulator.predictions.append(float(prediction[0]))
        return accumulator

    def merge_accumulators(
            self, accumulators: Iterable[_GaucAccumulator]) -> _GaucAccumulator:
        accumulators = iter(accumulators)
        result = next(accumulators)
        for other in accumulators:
            result.users.extend(other.users)
            result.labels.extend(other.labels)
            result.predictions.extend(other.predictions)
        return result

    def extract_output(
            self, accumulator: _GaucAccumulator) -> Dict[metric_types.MetricKey, float]:
        result = gauc(np.asarray(accumulator.labels, dtype=np.float64),
                      np.asarray(accumulator.predictions, dtype=np.float64),
                      np.asarray(accumulator.users, dtype=object))
        value_key, used_key, excluded_key = self._keys
        return {value_key: result.value, used_key: result.num_groups,
                excluded_key: result.num_skipped}
