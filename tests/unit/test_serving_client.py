"""`serving.client.make_example` and the client's behaviour without a server."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from daian_tf.core import features as F
from daian_tf.core.errors import DaianInputError
from daian_tf.training.multi_worker import free_ports
from serving.client import PredictClient, make_example
from serving.contract import DEFAULT_MODEL_NAME

SERVING_DIR = Path(__file__).resolve().parents[2] / "serving"


def _parse(serialized: bytes, spec: dict) -> dict:
    """Parses with TF's own parser, independently of the builder."""
    return {k: v.numpy() for k, v in tf.io.parse_single_example(serialized,
                                                                  spec).items()}


def test_scalars_round_trip_through_tf_parsing():
    serialized = make_example({
        F.USER_ID: "u1",                 # str → bytes_list, UTF-8
        F.TRIGGER_ITEM_ID: b"i\xc3\xa9",  # bytes kept as is
        F.TIMESTAMP: 1_700_000_000,      # int → int64_list
        F.TARGET_PRICE: 12.5,            # float → float_list
    })
    parsed = _parse(serialized, {
        F.USER_ID: tf.io.FixedLenFeature([], tf.string),
        F.TRIGGER_ITEM_ID: tf.io.FixedLenFeature([], tf.string),
        F.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
        F.TARGET_PRICE: tf.io.FixedLenFeature([], tf.float32),
    })
    assert parsed[F.USER_ID] == b"u1"
    assert parsed[F.TRIGGER_ITEM_ID] == "ié".encode("utf-8")
    assert parsed[F.TIMESTAMP] == 1_700_000_000
    assert parsed[F.TARGET_PRICE] == np.float32(12.5)


def test_lists_and_arrays_round_trip_through_tf_parsing():
    serialized = make_example({
        F.HIST_ITEM_ID: ["a", "b", "c"],
        F.HIST_BEHAVIOR: np.array(["click", "buy"]),
        F.HIST_TIME_DELTA: np.array([3, 2, 1], np.int32),
        F.INTENT_LABEL: (0.25, 0.75),
        F.HIST_BRAND_ID: np.array([], np.bytes_),  # typed empty lists
        F.INTENT_MASK_LOO: np.array([], np.int64),
    })
    parsed = tf.io.parse_single_example(serialized, {
        F.HIST_ITEM_ID: tf.io.VarLenFeature(tf.string),
        F.HIST_BEHAVIOR: tf.io.VarLenFeature(tf.string),
        F.HIST_TIME_DELTA: tf.io.VarLenFeature(tf.int64),
        F.INTENT_LABEL: tf.io.FixedLenFeature([2], tf.float32),
        F.HIST_BRAND_ID: tf.io.VarLenFeature(tf.string),
        F.INTENT_MASK_LOO: tf.io.VarLenFeature(tf.int64),
    })
    assert parsed[F.HIST_ITEM_ID].values.numpy().tolist() == [b"a", b"b", b"c"]
    assert parsed[F.HIST_BEHAVIOR].values.numpy().tolist() == [b"click", b"buy"]
    assert parsed[F.HIST_TIME_DELTA].values.numpy().tolist() == [3, 2, 1]
    np.testing.assert_array_equal(parsed[F.INTENT_LABEL].numpy(), [0.25, 0.75])
    assert parsed[F.HIST_BRAND_ID].values.numpy().size == 0
    assert parsed[F.INTENT_MASK_LOO].values.numpy().size == 0

    example = tf.train.Example.FromString(serialized)
    assert example.features.feature[F.HIST_BRAND_ID].HasField("bytes_list")
    assert example.features.feature[F.INTENT_MASK_LOO].HasField("int64_list")


@pytest.mark.parametrize("value, fragment", [
    (None, "NoneType"),
    ({"a": 1}, "dict"),
    (True, "bool"),
    ([1, "a"], "mixes"),
    ([], "empty list"),
    (np.array([1 + 2j]), "complex"),
])
def test_unsupported_values_name_the_key(value, fragment):
    with pytest.raises(DaianInputError, match=fragment) as info:
        make_example({F.USER_ID: "u1", F.TARGET_PRICE: value})
    assert repr(F.TARGET_PRICE) in str(info.value)


def test_wait_until_available_times_out_naming_the_target():
    target = f"127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    with PredictClient(target, timeout_s=0.2) as client:
        with pytest.raises(TimeoutError, match=target):
            client.wait_until_available(deadline_s=0.5, poll_interval_s=0.1)


# --- the shipped TF Serving files ----------------------------------------------------

def test_model_config_parses_as_tf_serving_model_server_config():
    config = text_format.Parse(
        (SERVING_DIR / "config" / "models.config.pbtxt").read_text(),
        model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == DEFAULT_MODEL_NAME
    assert model.base_path == f"/models/{DEFAULT_MODEL_NAME}"
    assert model.model_version_policy.latest.num_versions == 1


def test_k8s_deployment_uses_the_shipped_config_files():
    documents = list(yaml.safe_load_all(
        (SERVING_DIR / "k8s" / "deployment.yaml").read_text()))
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "tensorflow/serving:2.16.1"
    flags = dict(arg.lstrip("-").split("=", 1) for arg in container["args"])
    config_files = {p.name for p in (SERVING_DIR / "config").glob("*.pbtxt")}
    for flag in ("model_config_file", "batching_parameters_file",
                 "monitoring_config_file"):
        assert Path(flags[flag]).name in config_files, flag
    assert flags["enable_batching"] == flags["enable_model_warmup"] == "true"
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    assert DEFAULT_MODEL_NAME in container["readinessProbe"]["httpGet"]["path"]


class _Refused(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code

    def details(self):
        return self._code.name


def _flaky(codes):
    """A stub call answering the given error codes in turn, then "ok"; records the
    timeout each attempt got."""
    timeouts = []

    def call(request, timeout):
        timeouts.append(timeout)
        if len(timeouts) <= len(codes):
            raise _Refused(codes[len(timeouts) - 1])
        return "ok"
    return call, timeouts


def test_unavailable_is_retried_with_growing_pauses_within_the_deadline():
    client = PredictClient("127.0.0.1:1", timeout_s=5.0, retries=3, backoff_s=0.01)
    call, timeouts = _flaky([grpc.StatusCode.UNAVAILABLE] * 3)
    assert client._call(call, None) == "ok"
    assert len(timeouts) == 4 and client.retried == 3
    assert timeouts == sorted(timeouts, reverse=True)  # one deadline, shrinking
    assert timeouts[0] <= 5.0
    client.close()


def test_other_errors_and_exhausted_retries_are_raised():
    client = PredictClient("127.0.0.1:1", timeout_s=5.0, retries=2, backoff_s=0.001)
    call, timeouts = _flaky([grpc.StatusCode.INVALID_ARGUMENT])
    with pytest.raises(grpc.RpcError) as info:
        client._call(call, None)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(timeouts) == 1
    call, timeouts = _flaky([grpc.StatusCode.UNAVAILABLE] * 5)
    with pytest.raises(grpc.RpcError) as info:
        client._call(call, None)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and len(timeouts) == 3
    # a pause that would pass the deadline is not taken
    slow = PredictClient("127.0.0.1:1", timeout_s=0.05, retries=5, backoff_s=1.0)
    call, timeouts = _flaky([grpc.StatusCode.UNAVAILABLE] * 5)
    start = time.monotonic()
    with pytest.raises(grpc.RpcError):
        slow._call(call, None)
    assert len(timeouts) == 1 and time.monotonic() - start < 0.5
    client.close()
    slow.close()


def test_rank_pairs_are_the_context_with_each_candidates_target_features():
    from serving.load_test import candidate_example, rank_pairs

    context = make_example({F.USER_ID: "u1", F.TRIGGER_ITEM_ID: "i9",
                            F.HIST_ITEM_ID: ["i1", "i2"], F.TARGET_ITEM_ID: "i0",
                            F.TARGET_PRICE: 1.0})
    candidates = [make_example({F.TARGET_ITEM_ID: f"c{i}", F.TARGET_CATEGORY_ID: "k",
                                F.USER_ID: "someone else"}) for i in range(3)]
    pairs = [tf.train.Example.FromString(p) for p in rank_pairs(context, candidates)]
    target_keys = set(F.TARGET_ITEM_KEYS) | {F.TARGET_PRICE}
    for i, pair in enumerate(pairs):
        got = {k: v for k, v in pair.features.feature.items()}
        candidate = tf.train.Example.FromString(candidates[i]).features.feature
        ctx = tf.train.Example.FromString(context).features.feature
        # brute force: every key from where it must come
        expected = {k: ctx[k] for k in ctx if k not in target_keys}
        expected.update({k: candidate[k] for k in candidate if k in target_keys})
        assert got == expected
        thin = tf.train.Example.FromString(candidate_example(candidates[i]))
        assert dict(thin.features.feature) == {k: candidate[k] for k in candidate
                                                if k in target_keys}
