"""The local TF Serving-compatible server, driven through the official gRPC stubs.

The model served is the toy SavedModel of tests/_toy_servable.py (not DAIAN: the
server is shown to know nothing about it).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.client import PredictClient
from serving.contract import (
    INPUT_EXAMPLES,
    METADATA_SIGNATURE_DEF,
    OUTPUT_CTR,
    SIGNATURE_SERVING_DEFAULT,
)
from serving.load_test import run_load_test
from serving.server import serve
from tests._toy_servable import (
    MODEL_NAME,
    FEATURE_X,
    FEATURE_N,
    OUTPUT_LOGIT,
    SIGNATURE_SCORE,
    W_X,
    W_N,
    BIAS,
    save_toy_model,
    expected_ctr,
    examples,
    rows_with_defaults,
)


@pytest.fixture(scope="module")
def base_path(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("models") / MODEL_NAME
    save_toy_model(base / "1")
    return base


@pytest.fixture(scope="module")
def server(base_path):
    with serve(str(base_path), model_name=MODEL_NAME, port=0,
               version_labels={"stable": 1}) as running:
        yield running


@pytest.fixture()
def client(server):
    with PredictClient(server.target, model_name=MODEL_NAME) as c:
        yield c


@pytest.fixture()
def stub(server):
    with grpc.insecure_channel(server.target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _request(**spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    return request


def _examples_request(**spec) -> predict_pb2.PredictRequest:
    request = _request(**spec)
    request.inputs[INPUT_EXAMPLES].CopyFrom(
        tf.make_tensor_proto(examples(), dtype=tf.string))
    return request


def _rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value


# --- Predict -----------------------------------------------------------------------

def test_predict_with_official_stub_matches_model(stub, server, base_path):
    response = stub.Predict(_examples_request(), timeout=10)

    ctr = tf.make_ndarray(response.outputs[OUTPUT_CTR])
    np.testing.assert_allclose(ctr, expected_ctr(*rows_with_defaults()),
                               rtol=0, atol=1e-6)
    loaded = tf.saved_model.load(str(base_path / "1"))
    in_process = loaded.signatures[SIGNATURE_SERVING_DEFAULT](
        examples=tf.constant(examples()))
    np.testing.assert_allclose(ctr, in_process[OUTPUT_CTR].numpy(), rtol=0,
                               atol=1e-6)
    assert set(response.outputs) == {OUTPUT_CTR, OUTPUT_LOGIT}
    assert response.model_spec.name == MODEL_NAME
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == SIGNATURE_SERVING_DEFAULT


def test_predict_examples_via_client(client):
    ctr = client.predict_examples(examples())
    np.testing.assert_allclose(ctr, expected_ctr(*rows_with_defaults()),
                               rtol=0, atol=1e-6)


def test_output_filter_returns_only_the_named_output(client):
    outputs = client.predict({INPUT_EXAMPLES: np.array(examples(), dtype=object)},
                             output_filter=[OUTPUT_LOGIT])
    assert set(outputs) == {OUTPUT_LOGIT}
    x, n = rows_with_defaults()
    np.testing.assert_allclose(outputs[OUTPUT_LOGIT], W_X * x + W_N * n + BIAS,
                               rtol=0, atol=1e-6)


def test_second_signature_with_dense_inputs(client):
    x = np.array([1.5, -1.0], np.float32)
    n = np.array([4, 0], np.int64)
    outputs = client.predict({FEATURE_X: x, FEATURE_N: n},
                             signature_name=SIGNATURE_SCORE)
    np.testing.assert_allclose(outputs[OUTPUT_LOGIT], W_X * x + W_N * n + BIAS,
                               rtol=0, atol=1e-6)


def test_explicit_version_and_label_are_accepted(stub):
    for spec in ({"version": 1}, {"version_label": "stable"}):
        response = stub.Predict(_examples_request(**spec), timeout=10)
        assert response.model_spec.version.value == 1


def test_concurrent_requests_are_all_answered_and_counted(client, server):
    before = server.request_counts().get("Predict", 0)
    with futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: client.predict_examples(examples()),
                                range(8)))
    for ctr in results:
        np.testing.assert_allclose(ctr, expected_ctr(*rows_with_defaults()),
                                   rtol=0, atol=1e-6)
    assert server.request_counts()["Predict"] == before + 8


# --- ModelService and metadata -----------------------------------------------------

def test_load_test_counts_requests_and_errors(server):
    before = server.request_counts().get("Predict", 0)
    result = run_load_test(server.target, examples(), num_requests=12,
                           concurrency=3, batch_size=5, model_name=MODEL_NAME)
    assert (result.num_requests, result.num_errors) == (12, 0)
    assert server.request_counts()["Predict"] == before + 12
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms

    failing = run_load_test(server.target, examples(), num_requests=2,
                            concurrency=1, batch_size=1, model_name="nope")
    assert failing.num_errors == 2
    assert failing.first_error.startswith("NOT_FOUND")


def test_load_test_is_bounded_in_time_and_loopback_only(server):
    start = time.monotonic()
    result = run_load_test(server.target, examples(), num_requests=10**9,
                           concurrency=2, batch_size=2, model_name=MODEL_NAME,
                           duration_s=1.0)
    assert time.monotonic() - start < 5
    assert 0 < result.num_requests < 10**9 and result.num_errors == 0
    assert result.p50_ms <= result.p95_ms <= result.p99_ms
    with pytest.raises(ValueError, match="not a loopback address"):
        run_load_test("8.8.8.8:8500", examples(), num_requests=1)


def test_model_status_is_available_version_1(client):
    assert client.model_status() == {1: "AVAILABLE"}
    assert client.wait_until_available(deadline_s=5) == 1


def test_get_model_metadata_lists_signatures(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL_NAME
    request.metadata_field.append(METADATA_SIGNATURE_DEF)
    response = stub.GetModelMetadata(request, timeout=10)

    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata[METADATA_SIGNATURE_DEF].Unpack(signature_map)
    signatures = signature_map.signature_def
    assert {SIGNATURE_SERVING_DEFAULT, SIGNATURE_SCORE} <= set(signatures)
    serving_default = signatures[SIGNATURE_SERVING_DEFAULT]
    assert list(serving_default.inputs) == [INPUT_EXAMPLES]
    assert serving_default.inputs[INPUT_EXAMPLES].dtype == tf.string.as_datatype_enum
    assert set(serving_default.outputs) == {OUTPUT_CTR, OUTPUT_LOGIT}
    assert set(signatures[SIGNATURE_SCORE].inputs) == {FEATURE_X, FEATURE_N}
    assert response.model_spec.version.value == 1


def test_latest_numeric_version_is_served(tmp_path, base_path):
    base = tmp_path / MODEL_NAME
    shutil.copytree(base_path / "1", base / "9")
    save_toy_model(base / "10", bias=-1.0)  # 10 > 9 numerically, not as text
    (base / "tmp-11").mkdir()  # a half-written push is not a version

    with serve(str(base), model_name=MODEL_NAME, port=0) as running, \
            PredictClient(running.target, model_name=MODEL_NAME) as client:
        assert running.version == 10
        assert client.model_status() == {10: "AVAILABLE"}
        np.testing.assert_allclose(client.predict_examples(examples()),
                                   expected_ctr(*rows_with_defaults(), bias=-1.0),
                                   rtol=0, atol=1e-6)


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no numeric version directory"):
        serve(str(tmp_path), port=0)


# --- message size ------------------------------------------------------------------

# gRPC's default limit on a received message is 4 MiB; TF Serving lifts it
# (SetMaxMessageSize(kint32max)), so a large batch goes through there.
_ROWS_OVER_4_MIB = 1_200_000  # request: 4 + 8 bytes a row; response: 4 bytes a row


def _large_score_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {FEATURE_X: rng.normal(size=_ROWS_OVER_4_MIB).astype(np.float32),
            FEATURE_N: rng.integers(0, 5, size=_ROWS_OVER_4_MIB, dtype=np.int64)}


def test_requests_and_responses_over_4_mib_pass_as_in_tf_serving(server):
    """A 14 MB request and a 4.8 MB response, through `PredictClient`; and the same
    request through the official stub on a channel that lifts only its own
    receive limit (the server's limits are the server's)."""
    inputs = _large_score_inputs()
    expected = W_X * inputs[FEATURE_X] + W_N * inputs[FEATURE_N] + BIAS
    with PredictClient(server.target, model_name=MODEL_NAME, timeout_s=60) as client:
        logit = client.predict(inputs, SIGNATURE_SCORE, [OUTPUT_LOGIT])[OUTPUT_LOGIT]
    np.testing.assert_allclose(logit, expected, rtol=0, atol=1e-5)

    request = _request(signature_name=SIGNATURE_SCORE)
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    assert request.ByteSize() > 4 * 2 ** 20
    options = [("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(server.target, options=options) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=60)
    assert response.ByteSize() > 4 * 2 ** 20
    np.testing.assert_allclose(tf.make_ndarray(response.outputs[OUTPUT_LOGIT]),
                               expected, rtol=0, atol=1e-5)


def test_grpc_channel_arguments_reach_the_server(base_path):
    """`grpc_channel_arguments` (TF Serving's `--grpc_channel_arguments`) are the
    server's: a receive limit of 1 MiB refuses the large request, the small ones
    still pass."""
    with serve(str(base_path), model_name=MODEL_NAME, port=0, poll_wait_s=0,
               grpc_channel_arguments="grpc.max_receive_message_length=1048576"
               ) as limited:
        with PredictClient(limited.target, model_name=MODEL_NAME,
                           timeout_s=60) as client:
            with pytest.raises(grpc.RpcError) as refused:
                client.predict(_large_score_inputs(), SIGNATURE_SCORE)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            np.testing.assert_allclose(client.predict_examples(examples()),
                                       expected_ctr(*rows_with_defaults()),
                                       rtol=0, atol=1e-6)


def test_a_port_in_use_leaves_nothing_running(base_path):
    """The REST port is taken: an OSError naming it, and no model poller, gRPC port
    or batcher left behind."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = set(threading.enumerate())
        with pytest.raises(OSError, match=f"cannot bind REST port 127.0.0.1:{port}"):
            serve(str(base_path), model_name=MODEL_NAME, port=0, poll_wait_s=0.1,
                  rest_api_port=port)
    time.sleep(0.3)
    assert {t.name for t in set(threading.enumerate()) - before} == set()


def test_a_unix_socket_serves_beside_the_port(base_path, tmp_path):
    """`grpc_socket_path` (TF Serving's `--grpc_socket_path`): clients on the same
    host dial `unix:<path>`; the TCP port still answers. A socket that cannot be
    made is an OSError naming it."""
    socket_path = tmp_path / "serving.sock"
    with serve(str(base_path), model_name=MODEL_NAME, port=0, poll_wait_s=0,
               grpc_socket_path=str(socket_path)) as running:
        assert socket_path.exists()
        for target in (f"unix:{socket_path}", running.target):
            with PredictClient(target, model_name=MODEL_NAME) as client:
                np.testing.assert_allclose(client.predict_examples(examples()),
                                           expected_ctr(*rows_with_defaults()),
                                           rtol=0, atol=1e-6)
        result = run_load_test(f"unix:{socket_path}", examples(), num_requests=20,
                               concurrency=2, batch_size=2, model_name=MODEL_NAME)
        assert (result.num_requests, result.num_errors) == (20, 0)
    with pytest.raises(OSError, match="no/such/dir/serving.sock"):
        serve(str(base_path), model_name=MODEL_NAME, port=0, poll_wait_s=0,
              grpc_socket_path=str(tmp_path / "no" / "such" / "dir" / "serving.sock"))


# --- errors ------------------------------------------------------------------------

def test_unknown_model_name_is_not_found(stub):
    request = _examples_request()
    request.model_spec.name = "nope"
    error = _rpc_error(stub.Predict, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in error.details()


def test_unknown_version_is_not_found(stub):
    error = _rpc_error(stub.Predict, _examples_request(version=7))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "Specific(toy, 7)" in error.details()


def test_unknown_version_label_is_invalid_argument(stub):
    error = _rpc_error(stub.Predict, _examples_request(version_label="canary"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "canary" in error.details()


def test_unknown_signature_names_the_available_ones(stub):
    error = _rpc_error(stub.Predict, _examples_request(signature_name="rank"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert '"rank"' in error.details()
    assert SIGNATURE_SERVING_DEFAULT in error.details()
    assert SIGNATURE_SCORE in error.details()


def test_missing_input_is_invalid_argument(client):
    with pytest.raises(grpc.RpcError) as info:
        client.predict({FEATURE_X: np.array([1.0], np.float32)},
                       signature_name=SIGNATURE_SCORE)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"Missing but required: {{{FEATURE_N}}}" in info.value.details()


def test_extra_input_is_invalid_argument(client):
    with pytest.raises(grpc.RpcError) as info:
        client.predict({INPUT_EXAMPLES: np.array(examples(), dtype=object),
                        "extra": np.array([1.0], np.float32)})
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Sent extra: {extra}" in info.value.details()


def test_wrong_dtype_names_tensor_and_expected_dtype(client):
    with pytest.raises(grpc.RpcError) as info:
        client.predict({INPUT_EXAMPLES: np.array([1.0, 2.0], np.float32)})
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details()
    assert f'"{INPUT_EXAMPLES}"' in details
    assert "DT_FLOAT" in details and "expected DT_STRING" in details


def test_malformed_tensor_proto_is_invalid_argument(stub):
    request = _request(signature_name=SIGNATURE_SCORE)
    request.inputs[FEATURE_X].CopyFrom(tf.make_tensor_proto([1.0, 2.0], tf.float32))
    malformed = request.inputs[FEATURE_N]
    malformed.CopyFrom(tf.make_tensor_proto(np.array([1, 2], np.int64)))
    malformed.tensor_content = b"\x01\x02\x03"  # 3 bytes for 2 int64s
    error = _rpc_error(stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f'"{FEATURE_N}"' in error.details()


def test_wrong_rank_is_invalid_argument(client):
    with pytest.raises(grpc.RpcError) as info:
        client.predict({INPUT_EXAMPLES: np.array([examples()], dtype=object)})
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shape [1, 4]" in info.value.details()


def test_unknown_output_filter_is_invalid_argument(client):
    with pytest.raises(grpc.RpcError) as info:
        client.predict({INPUT_EXAMPLES: np.array(examples(), dtype=object)},
                       output_filter=["intent"])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "intent" in info.value.details()


def test_garbage_example_carries_tf_parse_error(client):
    with pytest.raises(grpc.RpcError) as info:
        client.predict_examples([b"not a tf.Example"])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Could not parse example input" in info.value.details()


def test_non_utf8_garbage_example_is_invalid_argument(client):
    # TF's parse error quotes the bytes; its Python binding cannot decode them.
    with pytest.raises(grpc.RpcError) as info:
        client.predict_examples([b"\xff\xfe not a tf.Example"])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tf.train.Example" in info.value.details()


def test_classify_is_unimplemented_with_reason(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL_NAME
    error = _rpc_error(stub.Classify, request)
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "Predict" in error.details()


def test_server_keeps_serving_after_errors(client):
    with pytest.raises(grpc.RpcError):
        client.predict_examples([b"garbage"])
    np.testing.assert_allclose(client.predict_examples(examples()),
                               expected_ctr(*rows_with_defaults()),
                               rtol=0, atol=1e-6)
