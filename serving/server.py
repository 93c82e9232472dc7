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
how real TF Serving does those). Nothing here knows the DAIAN model: any SavedModel
with signatures is served.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import Counter
from concurrent import futures
from pathlib import Path
from typing import Callable, Mapping, Optional, TypeVar

import grpc
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
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

_LOG = logging.getLogger(__name__)

SAVED_MODEL_FILE = "saved_model.pb"
SERVE_TAG = "serve"

# TF status codes are the canonical gRPC codes (tensorflow/core/protobuf/error_codes).
_GRPC_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

_NOT_PREDICT = (
    "{method} is not served: TF2 SavedModels (tf.saved_model.save, Keras export) "
    "write signatures with the predict method name only, which {method} refuses "
    "(serving #1512, tensorflow #38081). Call Predict with the signature instead "
    "(PITFALLS.md 'Serving')."
)

_Response = TypeVar("_Response")


class ServingError(Exception):
    """A request the server refuses, with the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def find_latest_version(model_base_path: str | Path) -> tuple[int, Path]:
    """The highest numeric version directory under `model_base_path`.

    Non-numeric entries (e.g. a `tmp-...` directory a pusher is writing) are
    skipped, as TF Serving skips them.

    Raises:
        FileNotFoundError: `model_base_path` is missing, holds no numeric version
            directory, or the latest one has no `saved_model.pb`.
    """
    base = Path(model_base_path)
    if not base.is_dir():
        raise FileNotFoundError(f"model_base_path {str(base)!r} is not a directory")
    versions = [(int(p.name), p) for p in base.iterdir()
                if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise FileNotFoundError(
            f"no numeric version directory (e.g. {base / '1'}) under {str(base)!r}")
    version, path = max(versions)
    if not (path / SAVED_MODEL_FILE).is_file():
        raise FileNotFoundError(
            f"latest version directory {str(path)!r} has no {SAVED_MODEL_FILE}")
    return version, path


def _read_signature_defs(
        version_dir: Path) -> Mapping[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of the `serve` meta graph of `version_dir/saved_model.pb`."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((version_dir / SAVED_MODEL_FILE).read_bytes())
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph.signature_def
    raise FileNotFoundError(
        f"{version_dir / SAVED_MODEL_FILE} has no meta graph tagged {SERVE_TAG!r}")


def _dtype_name(enum: int) -> str:
    """`DT_FLOAT`-style name of a `tensorflow.DataType` enum value."""
    return types_pb2.DataType.Name(enum)


class ServedModel:
    """One loaded version of a SavedModel and the calls TF Serving makes on it.

    Args:
        version_dir: `<model_base_path>/<version>`.
        version: the version number.
    """

    def __init__(self, version_dir: Path, version: int):
        self.version = version
        self.path = version_dir
        self.signature_defs = _read_signature_defs(version_dir)
        self._loaded = tf.saved_model.load(str(version_dir), tags=[SERVE_TAG])
        self._signatures = dict(self._loaded.signatures)
        if not self._signatures:
            raise ValueError(f"SavedModel {str(version_dir)!r} has no signatures")

    @property
    def signature_names(self) -> list[str]:
        """The callable signature names, sorted."""
        return sorted(self._signatures)

    def signature(self, name: str):
        """The concrete function of signature `name` (INVALID_ARGUMENT if absent)."""
        if name not in self._signatures:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'Serving signature key "{name}" not found. Available signatures: '
                f"{{{', '.join(self.signature_names)}}}.")
        return self._signatures[name]

    def predict(self, signature_name: str,
                inputs: Mapping[str, tensor_pb2.TensorProto],
                output_filter: list[str]) -> dict[str, tensor_pb2.TensorProto]:
        """Runs one signature on request tensors.

        Args:
            signature_name: the signature to run.
            inputs: input name → `TensorProto`, exactly the signature's inputs.
            output_filter: output names to return; empty means all.

        Returns:
            output name → `TensorProto`.

        Raises:
            ServingError: INVALID_ARGUMENT for an unknown signature, a missing or
                extra input, a wrong dtype or shape, or an unknown output name.
            tf.errors.OpError: the graph failed (e.g. an example does not parse).
        """
        function = self.signature(signature_name)
        specs: Mapping[str, tf.TensorSpec] = function.structured_input_signature[1]
        sent, expected = set(inputs), set(specs)
        if sent != expected:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'input size does not match signature "{signature_name}": '
                f"{len(sent)}!={len(expected)} len({{{','.join(sorted(sent))}}}) != "
                f"len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")
        arguments = {}
        for name, spec in specs.items():
            proto = inputs[name]
            if proto.dtype != spec.dtype.as_datatype_enum:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f'input tensor "{name}" of signature "{signature_name}" has '
                    f"dtype {_dtype_name(proto.dtype)}, expected "
                    f"{_dtype_name(spec.dtype.as_datatype_enum)}")
            try:
                value = tf.make_ndarray(proto)
            except (TypeError, ValueError) as e:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f'input tensor "{name}" is not a valid TensorProto: {e}') from e
            if not spec.shape.is_compatible_with(value.shape):
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f'input tensor "{name}" of signature "{signature_name}" has '
                    f"shape {list(value.shape)}, expected {spec.shape}")
            arguments[name] = tf.constant(value, dtype=spec.dtype)
        output_names = sorted(function.structured_outputs)
        unknown = [n for n in output_filter if n not in output_names]
        if unknown:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output tensor alias not found in signature: {', '.join(unknown)} "
                f"Outputs expected to be in the set {{{','.join(output_names)}}}.")
        try:
            outputs = function(**arguments)
        except UnicodeDecodeError as e:
            # TF quotes the offending input in some errors (e.g. "Could not parse
            # example input, value: '...'"), and its Python binding fails to decode
            # that message when the input holds non-UTF-8 bytes.
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'signature "{signature_name}" failed on its input, and '
                f"TensorFlow's error message, which quotes non-UTF-8 input bytes, "
                f"could not be decoded ({e}); e.g. a string input that is not a "
                "serialized tf.train.Example") from e
        return {n: tf.make_tensor_proto(outputs[n].numpy())
                for n in output_filter or output_names}


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
    if wait and not logging.getLogger().handlers:
        # Run as a program (`daian serve`): show the load and per-request log.
        logging.basicConfig(level=logging.INFO,
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
