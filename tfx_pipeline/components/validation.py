"""`ExampleValidator`: TFX's ExampleValidator that stops the pipeline on an anomaly.

TFX's own component only writes an `ExampleAnomalies` artifact (one `SchemaDiff.pb`
per split) and lets the pipeline go on. This one has a thin subclass of TFX's executor
that, after TFX's `Do` has written the anomalies, reads them back for every split and
raises `ExampleContractError` if there is any: the execution fails, so every component
downstream of it (Transform, via `add_upstream_node`, and so Trainer and Pusher) does
not run. The error's message names each split, feature and anomaly, e.g.

    ExampleValidator: the built examples break the schema (spec/DATA.md §2):
      split eval: feature 'target_price': Out-of-range values: Unexpectedly low value: -1.

The schema is the contract written by `daian_tf.data.transform.raw_schema` (types,
presence, shapes and the value rules of `_add_value_constraints`), imported with
ImportSchemaGen, so the examples are checked against DATA.md rather than themselves.
"""

from __future__ import annotations

import os
from typing import Dict, List, Mapping, Tuple

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.components.example_validator import executor as validator_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import artifact_utils
from tfx.types import standard_component_specs as specs
from tfx.utils import io_utils

from daian_tf.core.errors import ExampleContractError

HEADER = "ExampleValidator: the built examples break the schema (spec/DATA.md §2):"
DATASET = "<dataset>"  # the feature name of an anomaly of the whole split


def _reasons(info: anomalies_pb2.AnomalyInfo) -> List[str]:
    """`short description: description` of each reason of one anomaly (the info's own
    texts when it lists no reasons)."""
    pairs = [(r.short_description, r.description) for r in info.reason] or [
        (info.short_description, info.description)]
    texts = []
    for short, long in pairs:
        short, long = short.strip(), long.strip()
        texts.append(f"{short}: {long}" if short and long and short != long
                     else short or long or "anomaly without description")
    return texts


def anomaly_problems(anomalies_by_split: Mapping[str, anomalies_pb2.Anomalies]
                     ) -> List[Tuple[str, str, str]]:
    """(split, feature, anomaly) of every anomaly, splits and features sorted.

    An anomaly of a whole split (`dataset_anomaly_info`, e.g. too few examples) has the
    feature `DATASET`; a split with no data (`data_missing`) is one too.
    """
    problems = []
    for split in sorted(anomalies_by_split):
        anomalies = anomalies_by_split[split]
        for feature in sorted(anomalies.anomaly_info):
            for text in _reasons(anomalies.anomaly_info[feature]):
                problems.append((split, feature, text))
        if anomalies.HasField("dataset_anomaly_info"):
            for text in _reasons(anomalies.dataset_anomaly_info):
                problems.append((split, DATASET, text))
        if anomalies.data_missing:
            problems.append((split, DATASET, "the split has no data"))
    return problems


def anomaly_lines(anomalies_by_split: Mapping[str, anomalies_pb2.Anomalies]
                  ) -> List[str]:
    """One line per anomaly: `split S: feature 'F': short description: description`."""
    return [f"split {split}: feature {feature!r}: {text}"
            for split, feature, text in anomaly_problems(anomalies_by_split)]


def contract_error(anomalies_by_split: Mapping[str, anomalies_pb2.Anomalies],
                   where: str = "") -> ExampleContractError | None:
    """The error to raise for these anomalies, or None when there are none."""
    problems = anomaly_problems(anomalies_by_split)
    if not problems:
        return None
    lines = [HEADER] + [f"  split {s}: feature {f!r}: {t}" for s, f, t in problems]
    if where:
        lines.append(f"  (anomalies written to {where})")
    return ExampleContractError("\n".join(lines), problems)


def read_anomalies(anomalies_artifact) -> Dict[str, anomalies_pb2.Anomalies]:
    """{split: Anomalies} of an `ExampleAnomalies` artifact (TFX's `SchemaDiff.pb`)."""
    found = {}
    for split in artifact_utils.decode_split_names(anomalies_artifact.split_names):
        path = os.path.join(artifact_utils.get_split_uri([anomalies_artifact], split),
                            validator_executor.DEFAULT_FILE_NAME)
        anomalies = anomalies_pb2.Anomalies()
        anomalies.ParseFromString(io_utils.read_bytes_file(path))
        found[split] = anomalies
    return found


class ExampleValidatorExecutor(validator_executor.Executor):
    """TFX's ExampleValidator executor, raising `ExampleContractError` when the
    anomalies it has written are not empty."""

    def Do(self, input_dict, output_dict, exec_properties):  # noqa: N802
        result = super().Do(input_dict, output_dict, exec_properties)
        artifact = artifact_utils.get_single_instance(output_dict[specs.ANOMALIES_KEY])
        error = contract_error(read_anomalies(artifact), artifact.uri)
        if error is not None:
            raise error
        return result


class ExampleValidator(tfx.components.ExampleValidator):
    """TFX's ExampleValidator whose execution fails on any anomaly (see the module)."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(ExampleValidatorExecutor)
