"""`PushGate`: one blessing for the Pusher out of the two Evaluators' validations.

DAIAN is pushed only if its AUC and GAUC are not below the baseline's (DIN, trained on
the same Transform output) and, when a blessed model exists, not below that model's,
both on the same eval split (`eval_config.py`). TFX's Pusher reads one `ModelBlessing`;
the gate writes it with the Evaluator's own property names and files
(`tfx.components.evaluator.constants`: `blessed`, and `current_model_id`, read by
`LatestBlessedModelStrategy`, whose Resolver reads only this component's blessings),
plus `reason` (one line: why blessed or not, with the figures) and `summary` (JSON: the
gated metrics of each model). A `BLESSED` or `NOT_BLESSED` file marks the directory, as
the Evaluator's do.
"""


import json
import os
from typing import Dict, List, Tuple

from tfx.components.evaluator import constants as tfx_eval
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact
from tfx.dsl.component.experimental.annotations import Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from tfx_pipeline.eval_config import (BASELINE, CANDIDATE, GATED_METRICS, TFMA_CALIBRATION,
                                      TFMA_EXAMPLES, TFMA_LOGLOSS)

BLESSED_KEY = tfx_eval.ARTIFACT_PROPERTY_BLESSED_KEY  # what the Pusher reads
REASON_KEY, SUMMARY_KEY = "reason", "summary"
LATEST_BLESSED = "the latest blessed model"  # as the reason names it
REPORTED_METRICS = GATED_METRICS + (TFMA_LOGLOSS, TFMA_CALIBRATION, TFMA_EXAMPLES)


def overall_metrics(evaluation_uri: str) -> Dict[str, Dict[str, float]]:
    """{TFMA model name: {metric: value}} of the overall slice of an evaluation."""
    import tensorflow_model_analysis as tfma

    out: Dict[str, Dict[str, float]] = {}
    for metrics in tfma.load_metrics(evaluation_uri):
        if metrics.slice_key.single_slice_keys:
            continue
        for kv in metrics.metric_keys_and_values:
            key = kv.key
            if key.is_diff:
                continue
            if key.name in REPORTED_METRICS and kv.value.HasField("double_value"):
                out.setdefault(key.model_name, {})[key.name] = kv.value.double_value.value
    return out


def validation_failures(evaluation_uri: str) -> List[str]:
    """One line per failed threshold of an evaluation: how far the candidate's metric
    is below the baseline's, and how far it may be."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation_uri)
    lines = []
    for per_slice in result.metric_validations_per_slice:
        for failure in per_slice.failures:
            diff = failure.metric_value.double_value.value
            bound = failure.metric_threshold.change_threshold.absolute.value
            lines.append(f"{failure.metric_key.name} {-diff:.4f} below, at most "
                         f"{-bound:.4f} allowed")
    return lines


def _compare(name: str, evaluation_uri: str, blessing,
             required: bool) -> Tuple[bool, str, dict]:
    """(passes, one line, {model: metrics}) of one Evaluator. Without a baseline model
    (the first run has no blessed model) TFX drops the change thresholds and validates
    nothing: that passes unless the baseline is `required`."""
    ok = blessing.get_int_custom_property(BLESSED_KEY) == tfx_eval.BLESSED_VALUE
    metrics = overall_metrics(evaluation_uri)
    # a lone model keeps no name in TFMA's keys
    candidate = metrics.get(CANDIDATE) or metrics.get("", {})
    baseline = metrics.get(BASELINE, {})
    if not baseline:
        verdict = "fails" if required else "passes"
        return not required, f"{verdict}: {name} does not exist yet", {
            CANDIDATE: candidate}
    parts = []
    for metric in GATED_METRICS:
        c, b = candidate.get(metric, float("nan")), baseline.get(metric, float("nan"))
        parts.append(f"{metric} {c:.4f} vs {b:.4f}")
    text = f"{'passes' if ok else 'fails'} against {name} ({', '.join(parts)})"
    if not ok:
        text += ": " + "; ".join(validation_failures(evaluation_uri)
                                 or ["TFMA's validation failed"])
    return ok, text, {CANDIDATE: candidate, name: baseline}


@component
def PushGate(  # noqa: N802 - TFX component names are classes by convention
    model: InputArtifact[standard_artifacts.Model],
    blessing: OutputArtifact[standard_artifacts.ModelBlessing],
    baseline_name: Parameter[str] = "baseline",
    baseline_blessing: InputArtifact[standard_artifacts.ModelBlessing] = None,
    baseline_evaluation: InputArtifact[standard_artifacts.ModelEvaluation] = None,
    blessed_blessing: InputArtifact[standard_artifacts.ModelBlessing] = None,
    blessed_evaluation: InputArtifact[standard_artifacts.ModelEvaluation] = None,
) -> None:
    """Blesses `model` iff both Evaluators blessed it; says why in `reason`.

    Args:
      model: the candidate (DAIAN's last stage).
      baseline_blessing, baseline_evaluation: the Evaluator against the baseline model
        (absent when the candidate is the baseline's model).
      blessing: the output the Pusher and the next run's Resolver read.
      baseline_name: how the reason names the baseline (e.g. "din").
      blessed_blessing, blessed_evaluation: the Evaluator against the latest blessed
        model (absent when `pipeline.compare_with_blessed` is off).
    """
    checks = []
    if baseline_blessing is not None:
        checks.append(_compare(baseline_name, baseline_evaluation.uri, baseline_blessing,
                               required=True))
    if blessed_blessing is not None:
        checks.append(_compare(LATEST_BLESSED, blessed_evaluation.uri, blessed_blessing,
                               required=False))
    blessed = all(ok for ok, _, _ in checks)
    reason = ("BLESSED: " if blessed else "NOT BLESSED: ") + "; ".join(
        text for _, text, _ in checks)
    summary = {}
    for _, _, metrics in checks:
        summary.update(metrics)
    blessing.set_int_custom_property(
        BLESSED_KEY, tfx_eval.BLESSED_VALUE if blessed else tfx_eval.NOT_BLESSED_VALUE)
    blessing.set_int_custom_property(tfx_eval.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY,
                                     model.id)
    blessing.set_string_custom_property(
        tfx_eval.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
    blessing.set_string_custom_property(REASON_KEY, reason)
    blessing.set_string_custom_property(SUMMARY_KEY, json.dumps(summary, sort_keys=True))
    os.makedirs(blessing.uri, exist_ok=True)
    marker = tfx_eval.BLESSED_FILE_NAME if blessed else tfx_eval.NOT_BLESSED_FILE_NAME
    with open(os.path.join(blessing.uri, marker), "w") as f:
        f.write(reason + "\n")
    print(f"PushGate: {reason}", flush=True)

