"""A local gRPC server speaking TF Serving's API, for development and tests.

TF Serving itself (`tensorflow_model_server`) cannot be installed on our machines
(DESIGN.md "Serving contract"). This server implements the same gRPC services from
the official `tensorflow-serving-api` stubs on top of one SavedModel, so that the
same client code runs against both:

- `PredictionService.Predict`: the request's `TensorProto`s go to the signature's
  concrete function; its outputs come back as `TensorProto`s (`output_filter`
  honoured).
- `PredictionService.GetModelMetadata`: the `SignatureDefMap` of the `serve`
  meta graph, packed in an `Any` under key `signature_def`, as TF Serving does.
- `ModelService.GetModelStatus`: the loaded version, `AVAILABLE`.

As TF Serving does, it loads the highest numeric version directory
`<model_base_path>/<version>/saved_model.pb`. It serves one version loaded at
start: no polling for new versions, no batching, no warmup (serving/README.md says
how real TF Serving does those). The loaded version, its signatures and the
TensorProto checks and conversions of `Predict` are `serving/served_model.py`'s; this
module resolves model specs, counts requests, turns errors into gRPC statuses and
runs the server. Nothing here knows the DAIAN model: any SavedModel with signatures
is served.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import Counter
from concurrent import futures
from typing import Callable, Mapping, Optional, TypeVar

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.contract import (
    DEFAULT_MODEL_NAME,
    METADATA_SIGNATURE_DEF,
    SIGNATURE_SERVING_DEFAULT,
)
from serving.served_model import ServedModel, ServingError, find_latest_version

_LOG = logging.getLogger(__name__)

# TF status codes are the canonical gRPC codes (tensorflow/core/protobuf/error_codes).
_GRPC_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

_NOT_PREDICT = (
    "{method} is not served: TF2 SavedModels (tf.saved_model.save, Keras export) "
    "write signatures with the predict method name only, which {method} refuses "
    "(serving #1512, tensorflow #38081). Call Predict with the signature instead "
    "(PITFALLS.md 'Serving')."
)

_Response = TypeVar("_Response")


class _RequestCounter:
    """Thread-safe count of requests per gRPC method."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def increment(self, method: str) -> int:
        with self._lock:
            self._counts[method] += 1
            return self._counts[method]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class _Handler:
    """Resolves model specs and turns errors into gRPC statuses for both services."""

    def __init__(self, model: ServedModel, model_name: str,
                 version_labels: Mapping[str, int]):
        self.model = model
        self.model_name = model_name
        self.version_labels = dict(version_labels)
        self.counter = _RequestCounter()

    def check_spec(self, spec: model_pb2.ModelSpec) -> None:
        """Raises NOT_FOUND / INVALID_ARGUMENT unless `spec` names the loaded model."""
        served = (f"this server serves model {self.model_name!r} version "
                  f"{self.model.version}")
        if spec.name != self.model_name:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Latest({spec.name}); {served}")
        if spec.HasField("version") and spec.version.value != self.model.version:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({spec.name}, "
                f"{spec.version.value}); {served}")
        if spec.HasField("version_label"):
            label = spec.version_label
            if label not in self.version_labels:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Unrecognized servable version label: {label}; known labels: "
                    f"{sorted(self.version_labels)}")
            if self.version_labels[label] != self.model.version:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Specific({spec.name}, "
                    f"{self.version_labels[label]}) (label {label!r}); {served}")

    def fill_spec(self, spec: model_pb2.ModelSpec, signature_name: str = "") -> None:
        spec.name = self.model_name
        spec.version.value = self.model.version
        if signature_name:
            spec.signature_name = signature_name

    def handle(self, method: str, request, context: grpc.ServicerContext,
               run: Callable[[object], _Response]) -> _Response:
        """Counts and logs the request, runs it, and aborts with the right status."""
        count = self.counter.increment(method)
        _LOG.info("%s request #%d", method, count)
        try:
            return run(request)
        except ServingError as e:
            code, message = e.code, str(e)
        except tf.errors.OpError as e:
            code = _GRPC_CODE_BY_NUMBER.get(e.error_code, grpc.StatusCode.INTERNAL)
            message = e.message
        _LOG.warning("%s request #%d failed: %s: %s", method, count, code.name,
                     message)
        context.abort(code, message)
        raise AssertionError("context.abort returned")  # abort always raises


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, handler: _Handler):
        self._h = handler

    def Predict(self, request: predict_pb2.PredictRequest, context):
        return self._h.handle("Predict", request, context, self._predict)

    def _predict(self, request: predict_pb2.PredictRequest
                 ) -> predict_pb2.PredictResponse:
        self._h.check_spec(request.model_spec)
        signature_name = request.model_spec.signature_name or SIGNATURE_SERVING_DEFAULT
        outputs = self._h.model.predict(signature_name, dict(request.inputs),
                                        list(request.output_filter))
        response = predict_pb2.PredictResponse()
        self._h.fill_spec(response.model_spec, signature_name)
        for name, proto in outputs.items():
            response.outputs[name].CopyFrom(proto)
        return response

    def GetModelMetadata(self, request, context):
        return self._h.handle("GetModelMetadata", request, context, self._metadata)

    def _metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                  ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        self._h.check_spec(request.model_spec)
        fields = list(request.metadata_field)
        if not fields:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "GetModelMetadataRequest must specify at least one metadata_field "
                f"(the only one supported is {METADATA_SIGNATURE_DEF!r})")
        unsupported = [f for f in fields if f != METADATA_SIGNATURE_DEF]
        if unsupported:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Metadata field {', '.join(unsupported)} is not supported; the only "
                f"one is {METADATA_SIGNATURE_DEF!r}")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        self._h.fill_spec(response.model_spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in self._h.model.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        response.metadata[METADATA_SIGNATURE_DEF].Pack(signature_map)
        return response

    def _unimplemented(self, method: str, request, context):
        def refuse(_request):
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                               _NOT_PREDICT.format(method=method))
        return self._h.handle(method, request, context, refuse)

    def Classify(self, request, context):
        return self._unimplemented("Classify", request, context)

    def Regress(self, request, context):
        return self._unimplemented("Regress", request, context)

    def MultiInference(self, request, context):
        return self._unimplemented("MultiInference", request, context)


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, handler: _Handler):
        self._h = handler

    def GetModelStatus(self, request, context):
        return self._h.handle("GetModelStatus", request, context, self._status)

    def _status(self, request: get_model_status_pb2.GetModelStatusRequest
                ) -> get_model_status_pb2.GetModelStatusResponse:
        self._h.check_spec(request.model_spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add()
        status.version = self._h.model.version
        status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return response

    def HandleReloadConfigRequest(self, request, context):
        def refuse(_request):
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                "HandleReloadConfigRequest is not served: this development server "
                "serves one version loaded at start; restart it to load a new one")
        return self._h.handle("HandleReloadConfigRequest", request, context, refuse)


class LocalModelServer:
    """Handle on a running server: `.port`, `.version`, `.model_name`, `.stop()`.

    Use as a context manager to stop it on exit.
    """

    def __init__(self, server: grpc.Server, handler: _Handler, host: str, port: int):
        self._server = server
        self._handler = handler
        self.host = host
        self.port = port

    @property
    def model_name(self) -> str:
        return self._handler.model_name

    @property
    def version(self) -> int:
        """The version served (the highest numeric directory at start)."""
        return self._handler.model.version

    @property
    def target(self) -> str:
        """`host:port`, for `grpc.insecure_channel` or `PredictClient`."""
        return f"{self.host}:{self.port}"

    def request_counts(self) -> dict[str, int]:
        """Requests received so far, per gRPC method."""
        return self._handler.counter.snapshot()

    def stop(self, grace_s: Optional[float] = None) -> None:
        """Stops serving; in-flight requests get `grace_s` seconds to finish."""
        self._server.stop(grace_s).wait()
        _LOG.info("stopped serving %r on %s after %s", self.model_name, self.target,
                  self.request_counts())

    def wait(self) -> None:
        """Blocks until the server stops."""
        self._server.wait_for_termination()

    def __enter__(self) -> "LocalModelServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def serve(model_base_path: str, model_name: str = DEFAULT_MODEL_NAME,
          port: int = 8500, wait: bool = False, host: str = "127.0.0.1",
          max_workers: int = 4,
          version_labels: Optional[Mapping[str, int]] = None) -> LocalModelServer:
    """Loads the latest version under `model_base_path` and serves it over gRPC.

    Args:
        model_base_path: directory of numeric version directories, each a SavedModel
            (`<model_base_path>/<version>/saved_model.pb`), as TF Serving's
            `base_path`.
        model_name: the name clients put in `model_spec.name`.
        port: gRPC port; 0 picks a free one (read it from the returned `.port`).
        wait: block until SIGINT/SIGTERM, then stop (the CLI's `daian serve`);
            logs to stderr at INFO if logging is not configured yet.
        host: interface to bind; "0.0.0.0" to accept remote clients.
        max_workers: request threads (concurrent calls of the SavedModel).
        version_labels: label → version, as `version_labels` in a TF Serving model
            config; requests may name a label mapping to the served version.

    Returns:
        The running (or, with `wait=True`, stopped) server.

    Raises:
        FileNotFoundError: no loadable version under `model_base_path`.
        OSError: the port could not be bound.
    """
    if wait and _LOG.getEffectiveLevel() > logging.INFO:
        # Run as a program (`daian serve`): show the load and per-request log.
        logging.getLogger("serving").setLevel(logging.INFO)
        if not logging.getLogger().handlers:  # (the `daian` CLI has set up its own)
            logging.basicConfig(
                format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    version, version_dir = find_latest_version(model_base_path)
    _LOG.info("loading %r version %d from %s", model_name, version, version_dir)
    model = ServedModel(version_dir, version)
    handler = _Handler(model, model_name, version_labels or {})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _PredictionService(handler), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        _ModelService(handler), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as e:  # grpcio raises on newer versions, returns 0 on older
        raise OSError(f"cannot bind gRPC port {host}:{port}: {e}") from e
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {host}:{port}")
    server.start()
    running = LocalModelServer(server, handler, host, bound)
    _LOG.info("serving %r version %d (signatures %s) on %s", model_name, version,
              model.signature_names, running.target)
    if wait:
        stopped = threading.Event()

        def on_signal(signum, _frame):
            _LOG.info("received %s, stopping", signal.Signals(signum).name)
            stopped.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        stopped.wait()
        running.stop(grace_s=5.0)
    return running
