"""ExampleValidator stops the pipeline on examples that break the contract (DATA.md §2).

- the message of `tfx_pipeline.components.validation` on hand-made Anomalies protos;
- the contract schema (`daian_tf.data.transform.raw_schema`) on hand-made examples with a
  changed type, an out-of-range value and a missing feature (TFDV, as ExampleValidator);
- a real TFX run (LocalDagRunner, SQLite ML Metadata) of TirSampleGen → StatisticsGen →
  ImportSchemaGen → ExampleValidator → a downstream component, on a tiny simulated
  world: with a negative item price in items.csv (which the raw-log reader accepts) the
  run fails naming the feature and the anomaly, and the downstream component never
  runs; on the unchanged world the same pipeline runs to the end.
"""

import csv
import dataclasses
import json
import os
import shutil

import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2

from daian_tf.core import features as F
from daian_tf.core.config import DEFAULT_CONFIG_FILE, SimulationConfig, load_config
from daian_tf.core.errors import DaianInputError, ExampleContractError
from daian_tf.core.names import SPLITS
from daian_tf.data.beam_runners import pipeline_options, with_default_runner
from tfx_pipeline.components.validation import (
    DATASET, HEADER, anomaly_lines, contract_error)

NEGATIVE_PRICE = "-1"  # a sentinel for "unknown price" that some catalogs use


# --- the message ------------------------------------------------------------------
def _anomalies(**features) -> anomalies_pb2.Anomalies:
    """Anomalies with one anomaly per feature: name=(short, description)."""
    anomalies = anomalies_pb2.Anomalies()
    for name, (short, description) in features.items():
        info = anomalies.anomaly_info[name]
        info.short_description, info.description = short, description
        info.severity = anomalies_pb2.AnomalyInfo.ERROR
        reason = info.reason.add()
        reason.type = anomalies_pb2.AnomalyInfo.INT_TYPE_BIG_INT
        reason.short_description, reason.description = short, description
    return anomalies


def test_anomaly_lines_name_split_feature_and_anomaly():
    found = {
        "eval": _anomalies(**{F.LABEL: ("Out-of-range values",
                                        "Unexpectedly large value: 2.")}),
        "train": anomalies_pb2.Anomalies(),
    }
    assert anomaly_lines(found) == [
        f"split eval: feature {F.LABEL!r}: Out-of-range values: "
        "Unexpectedly large value: 2."]


def test_anomaly_lines_list_every_reason_and_dataset_anomalies():
    anomalies = _anomalies(**{F.TIMESTAMP: ("Unexpected data type", "Expected INT")})
    anomalies.anomaly_info[F.TIMESTAMP].reason.add(
        short_description="Column dropped", description="The feature was present "
        "in fewer examples than expected.")
    anomalies.dataset_anomaly_info.description = "Low num examples in dataset."
    anomalies.data_missing = False
    lines = anomaly_lines({"train": anomalies})
    assert lines == [
        f"split train: feature {F.TIMESTAMP!r}: Unexpected data type: Expected INT",
        f"split train: feature {F.TIMESTAMP!r}: Column dropped: The feature was "
        "present in fewer examples than expected.",
        f"split train: feature {DATASET!r}: Low num examples in dataset."]


def test_contract_error_is_a_project_input_error_or_none():
    assert contract_error({"train": anomalies_pb2.Anomalies()}) is None
    error = contract_error(
        {"eval": _anomalies(**{F.TARGET_PRICE: ("Out-of-range values",
                                                "Unexpectedly low value: -1.")})},
        where="/artifacts/anomalies")
    assert isinstance(error, DaianInputError)
    assert str(error).splitlines()[0] == HEADER
    assert (f"split eval: feature {F.TARGET_PRICE!r}: Out-of-range values: "
            "Unexpectedly low value: -1.") in str(error)
    assert "/artifacts/anomalies" in str(error)
    assert error.problems == (("eval", F.TARGET_PRICE,
                               "Out-of-range values: Unexpectedly low value: -1."),)


# --- the contract on hand-made examples ---------------------------------------------
@pytest.fixture(scope="module")
def cfg():
    return load_config(DEFAULT_CONFIG_FILE)


def _good_example(cfg, **overrides) -> tf.train.Example:
    n = cfg.samples.num_intent_levels
    values = {
        F.REQUEST_ID: [b"r1"], F.USER_ID: [b"u1"], F.TIMESTAMP: [1_700_000_000],
        **{F.user_feature(c): [b"x"] for c in cfg.samples.user_columns},
        **{k: [b"i1"] for k in F.TRIGGER_ITEM_KEYS + F.TARGET_ITEM_KEYS},
        F.TRIGGER_PRICE: [9.5], F.TARGET_PRICE: [3.0],
        **{k: [b"i0", b"i2"] for k in F.HIST_ITEM_KEYS},
        F.HIST_BEHAVIOR: [b"click", b"buy"], F.HIST_TIME_DELTA: [600, 60],
        F.LABEL: [1], F.INTENT_LABEL: [1.0] + [0.0] * (n - 1), F.INTENT_MASK: [1],
        F.INTENT_LABEL_LOO: [0.0] * n, F.INTENT_MASK_LOO: [0],
        F.TARGET_SIM: [0.5], F.INTENT_DIVERSITY: [0], F.P_TRUE: [0.1], F.POSITION: [0],
    }
    values.update(overrides)
    example = tf.train.Example()
    for key, vals in values.items():
        if vals is None:
            continue
        feature = example.features.feature[key]
        if not vals:  # an empty list keeps its type, as the sample builder writes it
            empty = feature.int64_list if key == F.HIST_TIME_DELTA else feature.bytes_list
            empty.SetInParent()
        elif isinstance(vals[0], bytes):
            feature.bytes_list.value.extend(vals)
        elif isinstance(vals[0], float):
            feature.float_list.value.extend(vals)
        else:
            feature.int64_list.value.extend(vals)
    return example


def _validate(cfg, examples, tmp_path) -> anomalies_pb2.Anomalies:
    import tensorflow_data_validation as tfdv

    from daian_tf.data.transform import raw_schema

    path = str(tmp_path / "examples.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for example in examples:
            writer.write(example.SerializeToString())
    stats = tfdv.generate_statistics_from_tfrecord(
        path, pipeline_options=pipeline_options())  # the project's runner
    return tfdv.validate_statistics(stats, raw_schema(cfg.samples))


def test_contract_catches_out_of_range_and_missing_values(cfg, tmp_path):
    no_history = {key: [] for key in F.HIST_KEYS}  # a user's first request
    good = [_good_example(cfg) for _ in range(3)] + [_good_example(cfg, **no_history)]
    assert not anomaly_lines({"train": _validate(cfg, good, tmp_path)})
    broken = good + [
        _good_example(cfg, **{F.LABEL: [2]}),  # out of range
        _good_example(cfg, **{F.TRIGGER_ITEM_ID: None}),  # missing
        _good_example(cfg, **{F.TARGET_SIM: [float("nan")]}),
        _good_example(cfg, **{F.HIST_TIME_DELTA: [600, 0]}),  # not before the request
        _good_example(cfg, **{F.HIST_BEHAVIOR: [b"click", b"view"]}),
    ]
    text = "\n".join(anomaly_lines({"train": _validate(cfg, broken, tmp_path)}))
    assert f"feature {F.LABEL!r}: Out-of-range values" in text, text
    assert f"feature {F.TRIGGER_ITEM_ID!r}: Column dropped" in text, text
    assert f"feature {F.TARGET_SIM!r}" in text and "NaN" in text, text
    assert f"feature {F.HIST_TIME_DELTA!r}: Out-of-range values" in text, text
    assert f"feature {F.HIST_BEHAVIOR!r}: Unexpected string values" in text, text


def test_contract_catches_a_changed_type(cfg, tmp_path):
    """Every example with the timestamp as text (one type per dataset: examples of two
    types in one batch already stop TFDV's statistics, i.e. StatisticsGen)."""
    examples = [_good_example(cfg, **{F.TIMESTAMP: [b"2023-11-15T00:00:00"]})] * 3
    text = "\n".join(anomaly_lines({"train": _validate(cfg, examples, tmp_path)}))
    assert f"feature {F.TIMESTAMP!r}: Unexpected data type" in text, text


# --- the pipeline -----------------------------------------------------------------
from tfx.dsl.component.experimental.decorators import component  # noqa: E402


@component
def AfterValidation() -> None:  # noqa: N802 - TFX component names are classes
    """Stands for Transform: runs only after the validator, never after a failure."""


def _world(path: str) -> str:
    from daian_tf.data.simulator import simulate

    simulate(path, SimulationConfig(num_users=40, num_items=320, history_days=3,
                                    request_days=3))
    return path


def _with_negative_prices(good: str, path: str) -> str:
    """A copy of `good` where every 10th item of items.csv has price -1."""
    shutil.copytree(good, path)
    items = os.path.join(path, F.ITEMS_FILE)
    with open(items, newline="") as f:
        rows = list(csv.reader(f))
    price = rows[0].index("price")
    for k, row in enumerate(rows[1:]):
        if k % 10 == 0:
            row[price] = NEGATIVE_PRICE
    with open(items, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return path


def _run(raw_dir: str, root: str, cfg) -> None:
    from tfx import v1 as tfx

    from tfx_pipeline.components.sample_gen import TirSampleGen
    from tfx_pipeline.components.validation import ExampleValidator
    from tfx_pipeline.pipeline import write_schema

    os.makedirs(root, exist_ok=True)
    schema_file = write_schema(cfg, os.path.join(root, "schema.pbtxt"))
    sample_gen = TirSampleGen(
        raw_dir=raw_dir,
        sample_config=json.dumps(dataclasses.asdict(cfg)["samples"], sort_keys=True))
    statistics_gen = tfx.components.StatisticsGen(
        examples=sample_gen.outputs["examples"])
    contract = tfx.components.ImportSchemaGen(schema_file=schema_file)
    validator = ExampleValidator(statistics=statistics_gen.outputs["statistics"],
                                 schema=contract.outputs["schema"])
    after = AfterValidation()
    after.add_upstream_node(validator)
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="validation",
        pipeline_root=os.path.join(root, "artifacts"),
        components=[sample_gen, statistics_gen, contract, validator, after],
        enable_cache=False,
        beam_pipeline_args=with_default_runner([]),  # the project's runner
        metadata_connection_config=tfx.orchestration.metadata
        .sqlite_metadata_connection_config(os.path.join(root, "metadata.sqlite")))
    tfx.orchestration.LocalDagRunner().run(pipeline)


def _executions(root: str, component_id: str) -> list:
    """States of the executions of `component_id` recorded in the run's ML Metadata."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = os.path.join(root, "metadata.sqlite")
    connection.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READONLY)
    store = metadata_store.MetadataStore(connection)
    node = store.get_context_by_type_and_name("node", f"validation.{component_id}")
    if node is None:
        return []
    return [metadata_store_pb2.Execution.State.Name(e.last_known_state)
            for e in store.get_executions_by_context(node.id)]


def _contract_error(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ExampleContractError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@pytest.fixture(scope="module")
def good_world(tmp_path_factory):
    return _world(str(tmp_path_factory.mktemp("world") / "raw"))


@pytest.mark.slow  # a TFX pipeline run (about 10-20 s)
def test_pipeline_stops_before_downstream_on_a_negative_price(good_world, cfg,
                                                              tmp_path):
    from daian_tf.data.raw_logs import inspect_raw_dir
    from daian_tf.data.catalog import read_items

    raw = _with_negative_prices(good_world, str(tmp_path / "raw"))
    inspect_raw_dir(raw, cfg.samples.user_columns)  # the raw-log reader accepts it
    assert min(s.price for s in read_items(os.path.join(raw, F.ITEMS_FILE)).values()) < 0

    root = str(tmp_path / "root")
    with pytest.raises(Exception) as caught:
        _run(raw, root, cfg)
    error = _contract_error(caught.value)
    assert error is not None, repr(caught.value)
    message = str(error)
    assert message.startswith(HEADER)
    for key in F.PRICE_KEYS:
        for split in SPLITS:
            assert (f"split {split}: feature {key!r}: Out-of-range values: "
                    "Unexpectedly low values: -1") in message, message
    assert {feature for _, feature, _ in error.problems} == set(F.PRICE_KEYS)
    assert _executions(root, "ExampleValidator") == ["FAILED"]
    assert _executions(root, "AfterValidation") == []


@pytest.mark.slow
def test_pipeline_runs_through_on_the_unchanged_world(good_world, cfg, tmp_path):
    root = str(tmp_path / "root")
    _run(good_world, root, cfg)
    assert _executions(root, "ExampleValidator") == ["COMPLETE"]
    assert _executions(root, "AfterValidation") == ["COMPLETE"]
