"""Server-side batching (serving/batching.py) through the gRPC server and official stubs.

The toy model (tests/_toy_servable.py) is re-derived in numpy, so every answer of a
merged, padded and split batch is checked against the model's own formula.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from serving.batching import (
    BatchingParameters,
    BatchScheduler,
    parse_batching_parameters,
    read_batching_parameters,
)
from serving.client import PredictClient, make_example
from serving.served_model import ServedModel
from serving.server import serve
from tests._toy_servable import (
    FEATURE_N,
    FEATURE_X,
    MODEL_NAME,
    SIGNATURE_SCORE,
    expected_ctr,
    save_toy_model,
)

CONFIG = Path(__file__).resolve().parents[2] / "serving" / "config"


def _rows(seed: int, n: int) -> tuple[list[bytes], np.ndarray]:
    """n examples with their expected CTRs (numpy re-derivation)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).round(3)
    k = rng.integers(0, 5, size=n)
    examples = [make_example({FEATURE_X: float(a), FEATURE_N: int(b)})
                for a, b in zip(x, k)]
    return examples, expected_ctr(x, k)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("batching") / MODEL_NAME
    save_toy_model(base / "1")
    return base


def test_the_packaged_batching_file_parses_with_tf_servings_field_names():
    params = read_batching_parameters(CONFIG / "batching_parameters.pbtxt")
    assert params == BatchingParameters(
        max_batch_size=512, batch_timeout_micros=2000, max_enqueued_batches=64,
        num_batch_threads=4, allowed_batch_sizes=(32, 128, 512),
        pad_variable_length_inputs=True)


@pytest.mark.parametrize("text, message", [
    ("max_batch_size: 3", r"b\.pbtxt: .* 1:17 .*Expected \"\{\""),  # a wrapper
    ("max_batch_size { value: 8 } allowed_batch_sizes: 4", "end with max_batch_size"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 8 allowed_batch_sizes: 4",
     "must increase"),
    ("num_batch_threads { value: 0 }", "num_batch_threads must be >= 1"),
    ("batch_timeout_micro { value: 1 }", "batch_timeout_micro"),
])
def test_batching_files_tf_serving_refuses_are_refused_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message):
        parse_batching_parameters(text, "b.pbtxt")


def test_concurrent_requests_are_merged_padded_and_split_back_exactly(base):
    params = BatchingParameters(max_batch_size=32, batch_timeout_micros=50_000,
                                num_batch_threads=1, allowed_batch_sizes=(8, 32))
    requests = [_rows(seed, n) for seed, n in enumerate([3, 5, 1, 7, 2, 4, 6, 3] * 3)]
    with serve(str(base), model_name=MODEL_NAME, port=0, poll_wait_s=0,
               batching=params) as server, \
            PredictClient(server.target, model_name=MODEL_NAME) as client, \
            futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda r: client.predict_examples(r[0]), requests))
        batcher = server.batcher
        for (examples, expected), got in zip(requests, answers):
            assert got.shape == (len(examples),)
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        assert batcher.tasks_run == len(requests)
        assert batcher.batches_run < len(requests), "nothing was merged"
        print(f"{len(requests)} requests in {batcher.batches_run} batches")


SLOW_S = 0.8  # each batch of _Slow takes this long: "at once" is well under it


class _Slow(ServedModel):
    computed: list[int] = []

    def run(self, signature_name, arrays, output_names):
        _Slow.computed.append(len(next(iter(arrays.values()))))
        time.sleep(SLOW_S)
        return super().run(signature_name, arrays, output_names)


def test_a_full_queue_answers_unavailable_at_once_and_nothing_hangs(base):
    params = BatchingParameters(max_batch_size=4, batch_timeout_micros=0,
                                max_enqueued_batches=1, num_batch_threads=1)
    examples, expected = _rows(1, 4)
    with serve(str(base), model_name=MODEL_NAME, port=0, poll_wait_s=0,
               batching=params, loader=_Slow, enable_warmup=False) as server, \
            PredictClient(server.target, model_name=MODEL_NAME, timeout_s=10,
                          retries=0) as client:
        codes, lock = [], threading.Lock()

        def call(_):
            start = time.monotonic()
            try:
                got = client.predict_examples(examples)
                np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
                assert "queue to which this task was submitted is full" in e.details()
            with lock:
                codes.append((code, time.monotonic() - start))

        start = time.monotonic()
        with futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(call, range(8)))
        wall = time.monotonic() - start
    unavailable = [s for c, s in codes if c == grpc.StatusCode.UNAVAILABLE]
    ok = [s for c, s in codes if c == grpc.StatusCode.OK]
    assert len(unavailable) + len(ok) == 8
    assert unavailable and ok
    assert max(unavailable) < SLOW_S / 2, "UNAVAILABLE should be answered at once"
    assert wall < 8 * SLOW_S + 2, "the requests did not all finish"


def test_a_request_whose_deadline_passes_in_its_batch_is_not_computed(base):
    params = BatchingParameters(max_batch_size=4, batch_timeout_micros=0,
                                num_batch_threads=1)
    examples, _ = _rows(2, 4)
    with serve(str(base), model_name=MODEL_NAME, port=0, poll_wait_s=0,
               batching=params, loader=_Slow, enable_warmup=False) as server, \
            PredictClient(server.target, model_name=MODEL_NAME, timeout_s=10) as slow, \
            PredictClient(server.target, model_name=MODEL_NAME, timeout_s=0.2,
                          retries=0) as hasty:
        _Slow.computed = []
        first = threading.Thread(target=slow.predict_examples, args=(examples,))
        first.start()
        time.sleep(0.1)  # the one batch thread is busy with the first request
        with pytest.raises(grpc.RpcError) as info:
            hasty.predict_examples(examples[:3])
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        first.join()
        time.sleep(SLOW_S + 0.2)
        assert _Slow.computed == [4], "the late request was computed"
        assert server.batcher.tasks_run == 1


def test_a_rest_request_past_its_timeout_in_a_batch_is_504_and_not_computed(base):
    """`rest_api_timeout_s` (TF Serving's `--rest_api_timeout_in_ms`) is a REST
    request's deadline: one that waits behind a busy batch thread past it is
    answered 504 and never computed."""
    params = BatchingParameters(max_batch_size=4, batch_timeout_micros=0,
                                num_batch_threads=1)
    examples, _ = _rows(2, 4)
    with serve(str(base), model_name=MODEL_NAME, port=0, poll_wait_s=0,
               batching=params, loader=_Slow, enable_warmup=False, rest_api_port=0,
               rest_api_timeout_s=0.2) as server, \
            PredictClient(server.target, model_name=MODEL_NAME, timeout_s=10) as slow:
        _Slow.computed = []
        first = threading.Thread(target=slow.predict_examples, args=(examples,))
        first.start()
        time.sleep(0.1)  # the one batch thread is busy with the first request
        body = json.dumps({"instances": [
            {"b64": base64.b64encode(e).decode()} for e in examples[:3]]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.rest_port}/v1/models/{MODEL_NAME}:predict",
            data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=30)
        assert info.value.code == 504
        assert "deadline exceeded" in json.loads(info.value.read())["error"]
        first.join()
        time.sleep(SLOW_S + 0.2)
        assert _Slow.computed == [4], "the late request was computed"


def test_oversized_requests_and_unbatchable_ones(base):
    params = BatchingParameters(max_batch_size=4, batch_timeout_micros=1000,
                                num_batch_threads=1)
    with serve(str(base), model_name=MODEL_NAME, port=0, poll_wait_s=0,
               batching=params) as server, \
            PredictClient(server.target, model_name=MODEL_NAME) as client:
        examples, _ = _rows(3, 5)
        with pytest.raises(grpc.RpcError) as info:
            client.predict_examples(examples)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Task size 5 is larger than maximum input batch size 4" in \
            info.value.details()
        model = server.manager.resolve(MODEL_NAME)
        # inputs that differ in dimension 0 (a ranking request's shape) run alone
        assert BatchScheduler.task_size(model, SIGNATURE_SCORE, {
            FEATURE_X: np.zeros(1, np.float32), FEATURE_N: np.zeros(3, np.int64)}) \
            is None
        assert BatchScheduler.task_size(model, SIGNATURE_SCORE, {
            FEATURE_X: np.zeros(3, np.float32), FEATURE_N: np.zeros(3, np.int64)}) == 3
