"""gRPC client for TF Serving's Predict API, and a `tf.train.Example` builder.

The same client talks to real TF Serving (`tensorflow_model_server`) and to the
local server in `serving/server.py`: both speak the official
`tensorflow_serving.apis` services. Signature and tensor names come from
`serving.contract`. RPC failures surface as `grpc.RpcError` (its `.code()` and
`.details()` carry TF Serving's status).

Example:
    with PredictClient("localhost:8500") as client:
        client.wait_until_available(deadline_s=30)
        ctr = client.predict_examples([make_example({"user_id": "u1", ...})])
"""

from __future__ import annotations

import numbers
import random
import time
from typing import Iterable, Mapping, Optional, Sequence, Union

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from daian_tf.core.errors import DaianInputError
from serving.contract import (
    DEFAULT_MODEL_NAME,
    INPUT_CANDIDATES,
    INPUT_CONTEXT,
    INPUT_EXAMPLES,
    MESSAGE_SIZE_OPTIONS,
    OUTPUT_CTR,
    SIGNATURE_RANK,
    SIGNATURE_SERVING_DEFAULT,
)

FeatureValue = Union[bytes, str, int, float, Sequence, np.ndarray]

_STATE_NAME = get_model_status_pb2.ModelVersionStatus.State.Name


def _feature(key: str, value: FeatureValue) -> tf.train.Feature:
    """One python value (scalar or list) as a `tf.train.Feature`.

    bytes/str → bytes_list (str UTF-8 encoded), int → int64_list,
    float → float_list; a list/tuple/ndarray of one of those likewise. An empty
    list has no kind: pass a typed empty ndarray (`np.array([], np.int64)`,
    `np.array([], np.bytes_)`).
    """
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iu":
            return tf.train.Feature(
                int64_list=tf.train.Int64List(value=value.ravel().tolist()))
        if value.dtype.kind == "f":
            return tf.train.Feature(
                float_list=tf.train.FloatList(value=value.ravel().tolist()))
        if value.dtype.kind in "SU" and value.size == 0:
            return tf.train.Feature(bytes_list=tf.train.BytesList())
        if value.dtype.kind not in "OSU":
            raise DaianInputError(
                f"feature {key!r}: unsupported ndarray dtype {value.dtype} "
                "(use integer, float, bytes or str)")
        value = value.ravel().tolist()
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise DaianInputError(
            f"feature {key!r}: an empty list has no type; pass a typed empty "
            "ndarray, e.g. np.array([], dtype=np.int64)")
    kinds = {_kind(key, v) for v in values}
    if len(kinds) > 1:
        raise DaianInputError(
            f"feature {key!r} mixes value kinds {sorted(kinds)} in one list")
    kind = kinds.pop()
    if kind == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[v.encode("utf-8") if isinstance(v, str) else v for v in values]))
    if kind == "int64":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _kind(key: str, value: object) -> str:
    """"bytes", "int64" or "float" for one scalar; DaianInputError otherwise."""
    if isinstance(value, (bytes, str)):
        return "bytes"
    # bool is an int in python, but a tf.train.Example has no bool: refuse it
    # rather than guess 0/1.
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(
            value, (bool, np.bool_)):
        return "int64"
    if isinstance(value, (numbers.Real, np.floating)) and not isinstance(
            value, (bool, np.bool_)):
        return "float"
    raise DaianInputError(
        f"feature {key!r}: unsupported value type {type(value).__name__} "
        f"({value!r}); use bytes, str, int, float or a list of one of them")


def make_example(features: Mapping[str, FeatureValue]) -> bytes:
    """A serialized `tf.train.Example` from python values.

    Args:
        features: feature key → bytes/str (bytes_list), int (int64_list),
            float (float_list), or a list/tuple/ndarray of one kind. Keys should
            come from `daian_tf.core.features`.

    Returns:
        The serialized example, ready for `PredictClient.predict_examples`.

    Raises:
        DaianInputError: a value of an unsupported type, a mixed or untyped empty
            list; the message names the feature key.
    """
    example = tf.train.Example(features=tf.train.Features(
        feature={key: _feature(key, value) for key, value in features.items()}))
    return example.SerializeToString()


class PredictClient:
    """TF Serving gRPC client (PredictionService + ModelService) with deadlines and
    retries.

    Every call has a deadline of `timeout_s` seconds, retries included. A call
    answered `UNAVAILABLE` (a full batching queue, a server starting or going away)
    is retried up to `retries` times after an exponential backoff with jitter
    (`backoff_s`, doubled each time), within that deadline; other errors are raised
    at once.

    Args:
        target: `host:port` of the gRPC endpoint (TF Serving's `--port`, 8500).
        model_name: `model_spec.name` of every request.
        timeout_s: deadline of each call, in seconds.
        retries: retries of an `UNAVAILABLE` call (0: none).
        backoff_s: the first retry's pause, in seconds.
    """

    def __init__(self, target: str, model_name: str = DEFAULT_MODEL_NAME,
                 timeout_s: float = 5.0, retries: int = 3, backoff_s: float = 0.05):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.target = target
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.retried = 0  # UNAVAILABLE answers retried so far
        # TF Serving answers and takes messages up to MAX_MESSAGE_BYTES; gRPC's
        # default would refuse a response over 4 MiB here
        self._channel = grpc.insecure_channel(target, options=MESSAGE_SIZE_OPTIONS)
        self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(
            self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def predict(self, inputs: Mapping[str, np.ndarray],
                signature_name: str = SIGNATURE_SERVING_DEFAULT,
                output_filter: Optional[Iterable[str]] = None
                ) -> dict[str, np.ndarray]:
        """Calls `Predict` on one signature.

        Args:
            inputs: input tensor name → array (dtype must match the signature;
                bytes/str arrays become DT_STRING).
            signature_name: the signature to run.
            output_filter: output names to return; None returns all.

        Returns:
            output name → array, as the signature computes it.
        """
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = signature_name
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        request.output_filter.extend(output_filter or ())
        response = self._call(self._prediction.Predict, request)
        return {name: tf.make_ndarray(proto)
                for name, proto in response.outputs.items()}

    def predict_examples(self, serialized_examples: list[bytes],
                         signature_name: str = SIGNATURE_SERVING_DEFAULT,
                         output_key: str = OUTPUT_CTR) -> np.ndarray:
        """Scores serialized `tf.Example`s through a signature taking `examples`.

        Args:
            serialized_examples: B serialized examples (see `make_example`).
            signature_name: a signature with a tf.string [None] input `examples`.
            output_key: the output to return.

        Returns:
            The output `output_key`, first dimension B (e.g. CTR, shape (B,)).
        """
        examples = np.array(serialized_examples, dtype=object)
        return self.predict({INPUT_EXAMPLES: examples}, signature_name,
                            output_filter=[output_key])[output_key]

    def rank(self, context: bytes, candidates: list[bytes]) -> np.ndarray:
        """Scores one request's candidates through the `rank` signature.

        Args:
            context: one serialized example with the user, trigger and history.
            candidates: N serialized examples with the target features.

        Returns:
            `(N,)` click probabilities; the request side is computed once.
        """
        inputs = {INPUT_CONTEXT: np.array([context], dtype=object),
                  INPUT_CANDIDATES: np.array(candidates, dtype=object)}
        return self.predict(inputs, SIGNATURE_RANK,
                            output_filter=[OUTPUT_CTR])[OUTPUT_CTR]

    def model_status(self) -> dict[int, str]:
        """Version → state name (e.g. {1: "AVAILABLE"}) from `GetModelStatus`."""
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        response = self._call(self._models.GetModelStatus, request)
        return {status.version: _STATE_NAME(status.state)
                for status in response.model_version_status}

    def wait_until_available(self, deadline_s: float,
                             poll_interval_s: float = 0.2) -> int:
        """Polls `GetModelStatus` until a version is AVAILABLE.

        Args:
            deadline_s: give up after this many seconds.
            poll_interval_s: pause between polls.

        Returns:
            The highest AVAILABLE version.

        Raises:
            TimeoutError: none became available in time; names the target and the
                last status or error seen.
        """
        end = time.monotonic() + deadline_s
        last: object = "no answer"
        while True:
            try:
                available = [v for v, state in self.model_status().items()
                             if state == "AVAILABLE"]
                if available:
                    return max(available)
                last = "no AVAILABLE version"
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.NOT_FOUND,
                                    grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                last = f"{e.code().name}: {e.details()}"
            if time.monotonic() >= end:
                raise TimeoutError(
                    f"model {self.model_name!r} not AVAILABLE at {self.target} "
                    f"after {deadline_s} s (last: {last})")
            time.sleep(poll_interval_s)

    def _call(self, method, request):
        """`method(request)` within the deadline, retrying UNAVAILABLE (class doc)."""
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                return method(request, timeout=max(remaining, 1e-3))
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or attempt >= self.retries:
                    raise
                pause = self.backoff_s * 2 ** attempt * (0.5 + random.random())
                if time.monotonic() + pause >= deadline:
                    raise
                attempt += 1
                self.retried += 1
                time.sleep(pause)

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> "PredictClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
