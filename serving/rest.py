"""TF Serving's REST API on the local server: predict, model status and metadata.

The shapes are TF Serving's (its `--rest_api_port`, "RESTful API" guide):

- `POST /v1/models/<name>[/versions/<v> | /labels/<l>]:predict` with a JSON body
  `{"signature_name": ..., "instances": [...]}` (row format: one entry per example;
  an object of named inputs when the signature has several) or `{"inputs": ...}`
  (columnar: the input's value, or an object of named inputs). Strings that are
  binary (serialized `tf.Example`s) are written `{"b64": "<base64>"}`. The answer is
  `{"predictions": [...]}` (row format: one entry per example, an object when there
  are several outputs) or `{"outputs": ...}` (columnar).
- `GET /v1/models/<name>[/versions/<v> | /labels/<l>]`: `{"model_version_status":
  [{"version": "3", "state": "AVAILABLE", "status": {"error_code": "OK",
  "error_message": ""}}]}`.
- `GET /v1/models/<name>[/versions/<v>]/metadata`: the signature defs as JSON.
- `GET <path>` of a `--monitoring_config_file` with Prometheus enabled: the request
  metrics in Prometheus' text format (serving/monitoring.py).

A predict request has a deadline of `timeout_s` seconds from its arrival (TF Serving's
`--rest_api_timeout_in_ms`, default 30 s): past it, a request waiting in a batch is
dropped uncomputed and answered 504, as a gRPC request past its deadline.

Errors answer `{"error": "<message>"}` with the HTTP status TF Serving maps the gRPC
code to (400 INVALID_ARGUMENT, 404 NOT_FOUND, 503 UNAVAILABLE, 504
DEADLINE_EXCEEDED, 500 otherwise). Requests go through the same code as gRPC's
(`_Handler` in serving/server.py): same checks, same batching, same counters.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)

from serving.contract import (
    METADATA_SIGNATURE_DEF,
    REST_API_TIMEOUT_MS,
    SIGNATURE_SERVING_DEFAULT,
)
from serving.monitoring import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.served_model import ServingError

_LOG = logging.getLogger(__name__)

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                   r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<tail>:predict|/metadata)?$")

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.OUT_OF_RANGE: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED: HTTPStatus.NOT_IMPLEMENTED,
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,
}


def _spec(match) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=match["name"])
    if match["version"]:
        spec.version.value = int(match["version"])
    if match["label"]:
        spec.version_label = match["label"]
    return spec


def _bad(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _to_array(value, dtype: tf.DType, name: str) -> np.ndarray:
    """A JSON value (nested lists, {"b64": ...} for binary strings) as an array."""
    def decode(v):
        if isinstance(v, dict):
            if set(v) != {"b64"}:
                raise _bad(f'input "{name}": an object value must be {{"b64": ...}}')
            try:
                return base64.b64decode(v["b64"], validate=True)
            except (ValueError, TypeError) as e:
                raise _bad(f'input "{name}": invalid base64: {e}') from e
        if isinstance(v, list):
            return [decode(x) for x in v]
        if isinstance(v, str) and dtype == tf.string:
            return v.encode()
        return v

    decoded = decode(value)
    try:
        if dtype == tf.string:
            return np.array(decoded, dtype=object)
        return np.array(decoded, dtype=dtype.as_numpy_dtype)
    except (TypeError, ValueError) as e:
        raise _bad(f'input "{name}": not a {dtype.name} tensor: {e}') from e


def _to_json(array: np.ndarray):
    if array.dtype == object or array.dtype.kind == "S":
        flat = [{"b64": base64.b64encode(x).decode()} if isinstance(x, bytes) else x
                for x in array.reshape(-1).tolist()]
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    return array.tolist()


def predict_request(body: dict, spec: model_pb2.ModelSpec,
                    input_dtypes: dict[str, tf.DType]) -> tuple[
                        predict_pb2.PredictRequest, bool]:
    """The `PredictRequest` of a REST predict body; and whether it is row format."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    rows, columns = "instances" in body, "inputs" in body
    if rows == columns:
        raise _bad('the request body needs exactly one of "instances" (row format) '
                   'and "inputs" (columnar format)')
    names = sorted(input_dtypes)
    request = predict_pb2.PredictRequest(model_spec=spec)
    if rows:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise _bad('"instances" must be a non-empty list')
        if len(names) == 1 and not all(isinstance(i, dict) and set(i) == set(names)
                                       for i in instances):
            values = {names[0]: instances}
        else:
            for i, instance in enumerate(instances):
                if not isinstance(instance, dict) or set(instance) != set(names):
                    raise _bad(f"instance {i} must be an object with the inputs "
                               f"{names}")
            values = {n: [i[n] for i in instances] for n in names}
    else:
        inputs = body["inputs"]
        if isinstance(inputs, dict) and set(inputs) == set(names):
            values = inputs
        elif len(names) == 1:
            values = {names[0]: inputs}
        else:
            raise _bad(f'"inputs" must be an object with the inputs {names}')
    for name, value in values.items():
        if name not in input_dtypes:
            raise _bad(f'input "{name}" is not an input of the signature; its '
                       f"inputs are {names}")
        request.inputs[name].CopyFrom(tf.make_tensor_proto(
            _to_array(value, input_dtypes[name], name)))
    return request, rows


def predict_json(response: predict_pb2.PredictResponse, rows: bool) -> dict:
    outputs = {n: tf.make_ndarray(p) for n, p in response.outputs.items()}
    if not rows:
        if len(outputs) == 1:
            return {"outputs": _to_json(next(iter(outputs.values())))}
        return {"outputs": {n: _to_json(v) for n, v in outputs.items()}}
    if len(outputs) == 1:
        return {"predictions": _to_json(next(iter(outputs.values())))}
    columns = {n: _to_json(v) for n, v in outputs.items()}
    count = len(next(iter(columns.values())))
    return {"predictions": [{n: columns[n][i] for n in columns}
                            for i in range(count)]}


DEFAULT_TIMEOUT_S = REST_API_TIMEOUT_MS / 1000


class RestServer:
    """TF Serving's REST API on a `_Handler`, in a thread; `.port`, `.stop()`.
    A predict request's deadline is `timeout_s` after it arrives."""

    def __init__(self, handler, host: str, port: int,
                 timeout_s: float = DEFAULT_TIMEOUT_S):
        self.timeout_s = timeout_s
        rest = self

        class _Request(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                _LOG.debug("REST %s", fmt % args)

            def do_GET(self):
                rest._answer(self, "GET")

            def do_POST(self):
                rest._answer(self, "POST")

        self._handler = handler
        self._http = ThreadingHTTPServer((host, port), _Request)
        self._http.daemon_threads = True
        self.host = host
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever,
                                        name="rest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()

    def _answer(self, request: BaseHTTPRequestHandler, verb: str) -> None:
        h = self._handler
        if (verb == "GET" and h.metrics is not None
                and request.path.split("?")[0] == h.metrics.path):
            payload = h.metrics.exposition()
            request.send_response(HTTPStatus.OK)
            request.send_header("Content-Type", METRICS_CONTENT_TYPE)
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            request.wfile.write(payload)
            return
        try:
            status, body = HTTPStatus.OK, self._route(request, verb)
        except ServingError as e:
            status, body = _HTTP_STATUS.get(e.code, HTTPStatus.INTERNAL_SERVER_ERROR), \
                {"error": str(e)}
        payload = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    def _route(self, request: BaseHTTPRequestHandler, verb: str) -> dict:
        match = _PATH.match(request.path)
        if match is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Malformed request: {verb} {request.path}")
        tail, spec = match["tail"], _spec(match)
        h = self._handler
        if verb == "POST" and tail == ":predict":
            deadline = time.monotonic() + self.timeout_s
            length = int(request.headers.get("Content-Length") or 0)
            try:
                body = json.loads(request.rfile.read(length) or b"null")
            except ValueError as e:
                raise _bad(f"the request body is not JSON: {e}") from e

            def run(_, time_remaining):
                if isinstance(body, dict) and body.get("signature_name"):
                    spec.signature_name = body["signature_name"]
                model = h.resolve(spec)
                function = model.signature(spec.signature_name
                                           or SIGNATURE_SERVING_DEFAULT)
                dtypes = {n: s.dtype for n, s in
                          function.structured_input_signature[1].items()}
                grpc_request, rows = predict_request(body, spec, dtypes)
                return predict_json(h.predict(grpc_request, time_remaining, model),
                                    rows)
            return h.call("REST:predict", None, deadline - time.monotonic(), run,
                          model_name=spec.name)
        if verb == "GET" and tail is None:
            status = h.call("REST:status",
                            get_model_status_pb2.GetModelStatusRequest(model_spec=spec),
                            None, h.status)
            return json_format.MessageToDict(status, preserving_proto_field_name=True,
                                             including_default_value_fields=True)
        if verb == "GET" and tail == "/metadata":
            ask = get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=spec, metadata_field=[METADATA_SIGNATURE_DEF])
            answer = h.call("REST:metadata", ask, None, h.metadata)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            answer.metadata[METADATA_SIGNATURE_DEF].Unpack(signature_map)
            return {"model_spec": {"name": answer.model_spec.name,
                                   "version": str(answer.model_spec.version.value)},
                    "metadata": {METADATA_SIGNATURE_DEF: json_format.MessageToDict(
                        signature_map, preserving_proto_field_name=True)}}
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Malformed request: {verb} {request.path}")


def start_rest(handler, host: str, port: int,
               timeout_s: float = DEFAULT_TIMEOUT_S) -> RestServer:
    """A `RestServer` on `port` (0: a free one)."""
    try:
        return RestServer(handler, host, port, timeout_s)
    except OSError as e:
        raise OSError(f"cannot bind REST port {host}:{port}: {e}") from e
