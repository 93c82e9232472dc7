"""A local gRPC server speaking TF Serving's API, for development and tests.

TF Serving itself (`tensorflow_model_server`) cannot be installed on our machines
(DESIGN.md "Serving contract"). This server implements the same gRPC services from
the official `tensorflow-serving-api` stubs on top of SavedModels, so that the same
client code runs against both:

- `PredictionService.Predict`: the request's `TensorProto`s go to the signature's
  concrete function; its outputs come back as `TensorProto`s (`output_filter`
  honoured). A request whose gRPC deadline has passed is dropped before it is
  computed (`DEADLINE_EXCEEDED`).
- `PredictionService.GetModelMetadata`: the `SignatureDefMap` of the `serve`
  meta graph, packed in an `Any` under key `signature_def`, as TF Serving does.
- `ModelService.GetModelStatus`: every known version with its state and, for a
  version that failed to load, its error.
- `ModelService.HandleReloadConfigRequest`: swaps the model config at run time.

What it serves is a TF Serving model config (`--model_config_file`, several models,
version policies, version labels; serving/model_config.py), or one `base_path` and
name as `--model_base_path`/`--model_name`. serving/model_manager.py polls the base
paths, loads and warms up new versions beside the served ones and unloads the
versions the policy drops, as TF Serving does. The TensorProto checks and
conversions are `serving/served_model.py`'s; this module resolves model specs,
counts requests, turns errors into gRPC statuses and runs the server. Nothing here
knows the DAIAN model: any SavedModel with signatures is served. `serve` sets the
process's malloc to keep freed memory (daian_tf/core/allocator.py): without it, the
tensors of every request are pages faulted in afresh.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from collections import Counter
from concurrent import futures
from typing import Callable, Mapping, Optional, TypeVar

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from daian_tf.core.allocator import keep_freed_memory
from serving.contract import (
    DEFAULT_MODEL_NAME,
    MESSAGE_SIZE_OPTIONS,
    METADATA_SIGNATURE_DEF,
    REST_API_TIMEOUT_MS,
    SIGNATURE_SERVING_DEFAULT,
)
from serving.batching import BatchingParameters, BatchScheduler, read_batching_parameters
from serving.model_config import (
    ModelConfigError,
    ModelServerConfig,
    read_model_config,
    single_model_config,
)
from serving.model_manager import Loader, ModelManager
from serving.monitoring import MonitoringConfig, ServingMetrics, read_monitoring_config
from serving.served_model import ServedModel, ServingError

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

# the requests TF Serving's request metrics count: method → (API, entrypoint) labels
_METRIC_LABELS = {"Predict": ("predict", "GRPC"), "REST:predict": ("predict", "REST")}

# Request threads with batching: each waits while its request sits in a batch, so
# they bound how many requests can join batches at once.
BATCHING_REQUEST_THREADS = 64

ChannelArgument = tuple[str, "int | str"]


def parse_grpc_channel_arguments(text: str) -> list[ChannelArgument]:
    """TF Serving's `--grpc_channel_arguments`: `key=value` pairs separated by commas.

    As tensorflow_model_server (server.cc, `parseGrpcChannelArgs`), a value that is a
    32-bit integer is passed as an integer, any other as a string; gRPC ignores keys
    it does not know. Unlike it, an item without `=` is an error naming the item (it
    crashes there).

    Raises:
        ValueError: an item is not `key=value`.
    """
    arguments = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"gRPC channel argument {item!r} is not key=value "
                             f"(in {text!r})")
        try:
            number = int(value)
        except ValueError:
            number = None
        in_int32 = number is not None and -2 ** 31 <= number < 2 ** 31
        arguments.append((key.strip(), number if in_int32 else value))
    return arguments


def server_options(channel_arguments: "str | list[ChannelArgument]" = ""
                   ) -> list[ChannelArgument]:
    """The gRPC server's options: TF Serving's message limit both ways
    (`MAX_MESSAGE_BYTES`), then `channel_arguments`, which win over it, as
    `AddChannelArgument` does over `SetMaxMessageSize` there."""
    if isinstance(channel_arguments, str):
        channel_arguments = parse_grpc_channel_arguments(channel_arguments)
    options = dict(MESSAGE_SIZE_OPTIONS)
    options.update(channel_arguments)
    return list(options.items())


def set_tensorflow_threads(intra_op: int = 0, inter_op: int = 0,
                           session: int = 0) -> None:
    """TF Serving's `--tensorflow_intra_op_parallelism`,
    `--tensorflow_inter_op_parallelism` and `--tensorflow_session_parallelism` for
    this process, resolved as there: the first two when either is given, else
    `session` for both; all three at once is refused. 0: TensorFlow's default (the
    cores). Call before TensorFlow runs anything.

    Raises:
        ValueError: a negative count, all three given, or TensorFlow already
            running with other counts.
    """
    for name, value in (("intra_op", intra_op), ("inter_op", inter_op),
                        ("session", session)):
        if value < 0:
            raise ValueError(f"tensorflow_{name}_parallelism must be >= 0, got {value}")
    if intra_op and inter_op and session:
        raise ValueError("give tensorflow_session_parallelism or "
                         "tensorflow_intra_op_parallelism and "
                         "tensorflow_inter_op_parallelism, not all three (as "
                         "tensorflow_model_server)")
    if not (intra_op or inter_op):
        intra_op = inter_op = session
    try:
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as e:
        raise ValueError(f"TensorFlow's thread pools are set already ({e}): set "
                         "them before the first model loads") from e


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

    def __init__(self, manager: ModelManager,
                 batcher: Optional[BatchScheduler] = None,
                 metrics: Optional[ServingMetrics] = None):
        self.manager = manager
        self.batcher = batcher
        self.counter = _RequestCounter()
        self.metrics = metrics  # Prometheus (serving/monitoring.py), on the REST port

    def resolve(self, spec: model_pb2.ModelSpec) -> ServedModel:
        """The loaded version `spec` names (NOT_FOUND / INVALID_ARGUMENT if none)."""
        return self.manager.resolve(
            spec.name,
            version=spec.version.value if spec.HasField("version") else None,
            label=spec.version_label if spec.HasField("version_label") else None)

    @staticmethod
    def fill_spec(spec: model_pb2.ModelSpec, name: str, model: ServedModel,
                  signature_name: str = "") -> None:
        spec.name = name
        spec.version.value = model.version
        if signature_name:
            spec.signature_name = signature_name

    def call(self, method: str, request, time_remaining: Optional[float],
             run: Callable[[object, Optional[float]], _Response],
             model_name: str = "") -> _Response:
        """Counts and logs the request and runs it; every failure is a ServingError
        with the status to answer (TensorFlow's errors mapped to their codes).

        `time_remaining`: seconds to the request's deadline (None: none); a request
        already past it is dropped unrun. A predict request (`_METRIC_LABELS`) is
        also recorded in the Prometheus metrics, under `model_name`."""
        count = self.counter.increment(method)
        _LOG.debug("%s request #%d", method, count)
        start = time.perf_counter()
        try:
            if time_remaining is not None and time_remaining <= 0:
                self.counter.increment(f"{method}:deadline_exceeded")
                raise ServingError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{method} request #{count} reached the server after its "
                    "deadline; dropped before it was computed")
            result = run(request, time_remaining)
        except ServingError as e:
            error = e
        except tf.errors.OpError as e:
            error = ServingError(
                _GRPC_CODE_BY_NUMBER.get(e.error_code, grpc.StatusCode.INTERNAL),
                e.message)
        else:
            self._record(method, model_name, "OK", start)
            return result
        self._record(method, model_name, error.code.name, start)
        _LOG.warning("%s request #%d failed: %s: %s", method, count, error.code.name,
                     error)
        raise error

    def _record(self, method: str, model_name: str, status: str, start: float) -> None:
        if self.metrics is not None and method in _METRIC_LABELS:
            api, entrypoint = _METRIC_LABELS[method]
            self.metrics.observe(model_name, entrypoint, status,
                                 time.perf_counter() - start, api=api)

    def handle(self, method: str, request, context: grpc.ServicerContext,
               run: Callable[[object, Optional[float]], _Response]) -> _Response:
        """`call` for a gRPC method: a failure aborts the call with its status."""
        spec = getattr(request, "model_spec", None)
        try:
            return self.call(method, request, context.time_remaining(), run,
                             model_name=spec.name if spec is not None else "")
        except ServingError as e:
            context.abort(e.code, str(e))
        raise AssertionError("context.abort returned")  # abort always raises

    def predict(self, request: predict_pb2.PredictRequest,
                time_remaining: Optional[float],
                model: Optional[ServedModel] = None) -> predict_pb2.PredictResponse:
        """`Predict` on the version the request names (or `model`, a version the
        caller resolved already), batched when the server batches and the request
        can be (serving/batching.py)."""
        if model is None:
            model = self.resolve(request.model_spec)
        signature_name = request.model_spec.signature_name or SIGNATURE_SERVING_DEFAULT
        arrays, names = model.prepare(signature_name, dict(request.inputs),
                                      list(request.output_filter))
        size = (self.batcher.task_size(model, signature_name, arrays)
                if self.batcher is not None else None)
        if size is None:
            values = model.run(signature_name, arrays, names)
        else:
            values = self.batcher.run(model, signature_name, arrays, names, size,
                                      time_remaining)
        response = predict_pb2.PredictResponse()
        self.fill_spec(response.model_spec, request.model_spec.name, model,
                       signature_name)
        for name, value in values.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                 _time_remaining=None) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """`GetModelMetadata`: the signature defs of the version the request names."""
        model = self.resolve(request.model_spec)
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
        self.fill_spec(response.model_spec, request.model_spec.name, model)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in model.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        response.metadata[METADATA_SIGNATURE_DEF].Pack(signature_map)
        return response

    def status(self, request: get_model_status_pb2.GetModelStatusRequest,
               _time_remaining=None) -> get_model_status_pb2.GetModelStatusResponse:
        """`GetModelStatus`: the known versions of the model (or the one named)."""
        spec = request.model_spec
        if spec.HasField("version_label"):
            version = self.resolve(spec).version
        else:
            version = spec.version.value if spec.HasField("version") else None
        response = get_model_status_pb2.GetModelStatusResponse()
        response.model_version_status.extend(self.manager.status(spec.name, version))
        return response


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, handler: _Handler):
        self._h = handler

    def Predict(self, request: predict_pb2.PredictRequest, context):
        return self._h.handle("Predict", request, context, self._h.predict)

    def GetModelMetadata(self, request, context):
        return self._h.handle("GetModelMetadata", request, context, self._h.metadata)

    def _unimplemented(self, method: str, request, context):
        def refuse(_request, _time_remaining):
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
        return self._h.handle("GetModelStatus", request, context, self._h.status)

    def HandleReloadConfigRequest(self, request, context):
        return self._h.handle("HandleReloadConfigRequest", request, context,
                              self._reload)

    def _reload(self, request: model_management_pb2.ReloadConfigRequest,
                _time_remaining=None) -> model_management_pb2.ReloadConfigResponse:
        try:
            self._h.manager.reload(request.config)
        except ModelConfigError as e:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from e
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = grpc.StatusCode.OK.value[0]
        return response


class LocalModelServer:
    """Handle on a running server: `.port`, `.target`, `.manager`, `.stop()`.

    Use as a context manager to stop it on exit.
    """

    def __init__(self, server: grpc.Server, handler: _Handler, host: str, port: int,
                 rest=None):
        self._server = server
        self._handler = handler
        self._rest = rest
        self.host = host
        self.port = port
        self.rest_port = rest.port if rest is not None else None

    @property
    def manager(self) -> ModelManager:
        """The versions served (`available_versions`, `status`, `reload`, `poll`)."""
        return self._handler.manager

    @property
    def model_name(self) -> str:
        """The first model of the config (the only one with `model_base_path`)."""
        return self.manager.model_names()[0]

    @property
    def version(self) -> int:
        """The highest available version of `model_name` (what a request without a
        version gets)."""
        return self.manager.resolve(self.model_name).version

    @property
    def target(self) -> str:
        """`host:port`, for `grpc.insecure_channel` or `PredictClient`."""
        return f"{self.host}:{self.port}"

    def request_counts(self) -> dict[str, int]:
        """Requests received so far, per gRPC method (and `<method>:deadline_exceeded`
        for those dropped unanswered)."""
        return self._handler.counter.snapshot()

    @property
    def batcher(self) -> Optional[BatchScheduler]:
        """The batch scheduler (`batches_run`, `tasks_run`), None without batching."""
        return self._handler.batcher

    def stop(self, grace_s: Optional[float] = None) -> None:
        """Stops serving; in-flight requests get `grace_s` seconds to finish."""
        self.manager.stop()
        if self._rest is not None:
            self._rest.stop()
        self._server.stop(grace_s).wait()
        if self.batcher is not None:
            self.batcher.stop()
        _LOG.info("stopped serving %s on %s after %s", self.manager.model_names(),
                  self.target, self.request_counts())

    def wait(self) -> None:
        """Blocks until the server stops."""
        self._server.wait_for_termination()

    def __enter__(self) -> "LocalModelServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _bind(server: grpc.Server, address: str, what: str) -> int:
    """`server.add_insecure_port(address)`; OSError naming `what` if it fails."""
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:  # grpcio raises on newer versions, returns 0 on older
        raise OSError(f"cannot bind {what}: {e}") from e
    if bound == 0:
        raise OSError(f"cannot bind {what}")
    return bound


def serve(model_base_path: Optional[str] = None, model_name: str = DEFAULT_MODEL_NAME,
          port: int = 8500, wait: bool = False, host: str = "127.0.0.1",
          max_workers: Optional[int] = None,
          version_labels: Optional[Mapping[str, int]] = None,
          model_config: "str | ModelServerConfig | None" = None,
          poll_wait_s: float = 1.0, enable_warmup: bool = True,
          loader: Loader = ServedModel,
          batching: "str | BatchingParameters | None" = None,
          rest_api_port: Optional[int] = None,
          monitoring: "str | MonitoringConfig | None" = None,
          grpc_channel_arguments: "str | list[ChannelArgument]" = "",
          model_config_poll_wait_s: float = 0.0,
          grpc_socket_path: str = "",
          rest_api_timeout_s: float = REST_API_TIMEOUT_MS / 1000
          ) -> LocalModelServer:
    """Loads the configured models and serves them over gRPC.

    Give either `model_base_path` (with `model_name`, `version_labels`: one model,
    latest version, as `tensorflow_model_server --model_base_path --model_name`)
    or `model_config` (a `--model_config_file` path or a `ModelServerConfig`).

    Args:
        model_base_path: directory of numeric version directories, each a SavedModel
            (`<model_base_path>/<version>/saved_model.pb`), as TF Serving's
            `base_path`.
        model_name: the name clients put in `model_spec.name`.
        port: gRPC port; 0 picks a free one (read it from the returned `.port`).
        wait: block until SIGINT/SIGTERM, then stop (the CLI's `daian serve`);
            logs to stderr at INFO if logging is not configured yet.
        host: interface to bind; "0.0.0.0" to accept remote clients.
        max_workers: request threads: the requests served at once (default 4, or
            `BATCHING_REQUEST_THREADS` with batching, where a thread waits while its
            request sits in a batch); `daian serve --grpc_max_threads`.
        version_labels: label → version for `model_base_path`, as `version_labels`
            in a TF Serving model config.
        model_config: the models, policies and labels to serve.
        poll_wait_s: seconds between polls of the base paths for new versions
            (TF Serving's `--file_system_poll_wait_seconds`); 0: load at start only.
        enable_warmup: replay `assets.extra/tf_serving_warmup_requests` before a
            version is served (TF Serving's `--enable_model_warmup`).
        loader: builds the `ServedModel` of (version directory, version), e.g. a
            subclass that records or delays calls.
        batching: batch concurrent requests (TF Serving's `--enable_batching`) with
            these parameters, or those of this `--batching_parameters_file`
            (serving/batching.py); None: no batching.
        rest_api_port: also serve TF Serving's REST API on this port (0: a free
            one, read `.rest_port`; serving/rest.py); None: gRPC only.
        monitoring: a `--monitoring_config_file` path or a `MonitoringConfig`: with
            Prometheus enabled, TF Serving's request metrics are served at its path
            on the REST port (serving/monitoring.py); it then needs `rest_api_port`.
        grpc_channel_arguments: gRPC server arguments, TF Serving's
            `--grpc_channel_arguments` text (`key=value,...`) or (key, value)
            pairs; they win over the message limit the server otherwise has,
            TF Serving's (`MAX_MESSAGE_BYTES` both ways, not gRPC's 4 MiB).
        model_config_poll_wait_s: re-read the `model_config` file every this many
            seconds and serve it when it changed (TF Serving's
            `--model_config_file_poll_wait_seconds`); 0: never.
        grpc_socket_path: also serve gRPC on this UNIX socket (TF Serving's
            `--grpc_socket_path`; clients dial `unix:<path>`).
        rest_api_timeout_s: a REST predict request's deadline after it arrives
            (TF Serving's `--rest_api_timeout_in_ms`, default 30 s).

    Returns:
        The running (or, with `wait=True`, stopped) server.

    Raises:
        FileNotFoundError: a model has no version directory, or the config file is
            missing.
        RuntimeError: a model's versions all failed to load (the errors named).
        ModelConfigError: the config is not one TF Serving accepts.
        ValueError: a batching or monitoring config that does not parse,
            Prometheus enabled without a REST port, a channel argument that is
            not key=value, a config poll without a config file, or a REST timeout
            that is not positive.
        OSError: a port or the UNIX socket could not be bound (nothing is left
            running then).
    """
    if isinstance(monitoring, (str, Path)):
        monitoring = read_monitoring_config(monitoring)
    metrics = (ServingMetrics(monitoring.path)
               if monitoring is not None and monitoring.enable else None)
    if metrics is not None and rest_api_port is None:
        raise ValueError("the monitoring config enables Prometheus, which is served on "
                         "the REST port: give rest_api_port (--rest_api_port)")
    if wait and _LOG.getEffectiveLevel() > logging.INFO:
        # Run as a program (`daian serve`): show the loads and unloads.
        logging.getLogger("serving").setLevel(logging.INFO)
        if not logging.getLogger().handlers:  # (the `daian` CLI has set up its own)
            logging.basicConfig(
                format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (model_base_path is None) == (model_config is None):
        raise ValueError("serve needs exactly one of model_base_path and model_config")
    options = server_options(grpc_channel_arguments)  # a bad one fails before loading
    if rest_api_timeout_s <= 0:
        raise ValueError(f"the REST timeout must be > 0 s, got {rest_api_timeout_s}")
    if model_config_poll_wait_s < 0:  # before anything loads or polls
        raise ValueError("model_config_poll_wait_s must be >= 0, got "
                         f"{model_config_poll_wait_s}")
    if model_config_poll_wait_s and not isinstance(model_config, (str, Path)):
        raise ValueError("polling the model config (model_config_poll_wait_s) needs "
                         "model_config as a file path (--model_config_file)")
    if model_config is None:
        config = single_model_config(model_base_path, model_name)
        for label, version in (version_labels or {}).items():
            config.model_config_list.config[0].version_labels[label] = version
    elif isinstance(model_config, ModelServerConfig):
        config = model_config
    else:
        config = read_model_config(model_config)
    # a request's tensors change size with its candidates: glibc would map and fault
    # them in afresh on every call (daian_tf/core/allocator.py)
    keep_freed_memory()
    manager = ModelManager(config, poll_wait_s=poll_wait_s,
                           enable_warmup=enable_warmup, loader=loader)
    manager.start()
    if model_config_poll_wait_s:
        manager.watch_config_file(model_config, model_config_poll_wait_s)
    unavailable = manager.unavailable()
    if unavailable:
        manager.stop()
        reasons = "; ".join(f"model {n!r}: {r}" for n, r in unavailable.items())
        if all(not manager.status(n) for n in unavailable):
            raise FileNotFoundError(reasons)
        raise RuntimeError(f"no version could be served: {reasons}")
    if isinstance(batching, (str, Path)):
        batching = read_batching_parameters(batching)
    batcher = BatchScheduler(batching) if batching is not None else None
    if max_workers is None:
        max_workers = BATCHING_REQUEST_THREADS if batcher is not None else 4
    handler = _Handler(manager, batcher, metrics)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _PredictionService(handler), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        _ModelService(handler), server)
    rest = None
    try:
        bound = _bind(server, f"{host}:{port}", f"gRPC port {host}:{port}")
        if grpc_socket_path:
            _bind(server, f"unix:{grpc_socket_path}",
                  f"the UNIX socket {grpc_socket_path!r}")
        if rest_api_port is not None:
            from serving.rest import start_rest

            rest = start_rest(handler, host, rest_api_port, rest_api_timeout_s)
    except OSError:  # nothing left running: the ports, the poller, the batcher
        server.stop(None)
        manager.stop()
        if batcher is not None:
            batcher.stop()
        raise
    server.start()
    running = LocalModelServer(server, handler, host, bound, rest)
    if grpc_socket_path:
        _LOG.info("gRPC also on unix:%s", grpc_socket_path)
    _LOG.info("gRPC: %d request threads, options %s; TensorFlow: intra-op %d, "
              "inter-op %d threads (0: its default)", max_workers, dict(options),
              tf.config.threading.get_intra_op_parallelism_threads(),
              tf.config.threading.get_inter_op_parallelism_threads())
    for name in manager.model_names():
        _LOG.info("serving %r versions %s on %s%s", name,
                  manager.available_versions(name), running.target,
                  f" (REST on port {rest.port})" if rest is not None else "")
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
