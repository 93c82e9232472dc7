"""The versions a server holds: loaded, warmed up, switched and unloaded as TF Serving does.

`ModelManager` serves the models of a `ModelServerConfig` (serving/model_config.py).
Every `poll_wait_s` seconds (TF Serving's `--file_system_poll_wait_seconds`) a thread
lists each model's `base_path` and applies its version policy:

1. each version the policy aspires to and that is not loaded yet is loaded beside
   the versions already served (state `LOADING`), warmed up by replaying
   `assets.extra/tf_serving_warmup_requests` (TF Serving's
   `--enable_model_warmup`), and only then made `AVAILABLE`: requests switch to it
   from that moment;
2. then versions the policy no longer aspires to are unloaded (`UNLOADING`, then
   `END`), but never the last available version of a model while none of the
   aspired ones is available (TF Serving's availability-preserving policy): a
   broken new version leaves the old one serving.

A version that fails to load or warm up is `END` with its error in
`GetModelStatus`; the others are untouched. It is not retried until its directory
changes (TF Serving retries `--max_num_load_retries` times, default 5, a minute apart;
a push that is really broken stays broken, and a re-push changes the directory).

`reload(config)` swaps the whole config (`HandleReloadConfigRequest`): models that
left it are unloaded, new ones loaded; it returns when every model of the new config
has an available version or has failed, as TF Serving's reload does.
`watch_config_file(path, wait_s)` re-reads a `--model_config_file` every `wait_s`
seconds and reloads it when it differs from the config served (TF Serving's
`--model_config_file_poll_wait_seconds`); a file that is missing or refused is
logged and the served config stays.

A request holds the `ServedModel` it resolved until it finishes, so unloading a
version never breaks a request in flight: the version object lives until its last
request returns.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, predict_pb2, prediction_log_pb2

from serving.contract import SIGNATURE_SERVING_DEFAULT, WARMUP_DIR, WARMUP_FILE
from serving.model_config import (
    ModelConfig,
    ModelConfigError,
    ModelServerConfig,
    aspired_versions,
    check_model_config,
    list_version_dirs,
    model_configs,
    read_model_config,
)
from serving.served_model import SAVED_MODEL_FILE, ServedModel, ServingError

_LOG = logging.getLogger(__name__)

State = get_model_status_pb2.ModelVersionStatus.State

# TF Serving reads at most this many warmup records (servables/tensorflow/
# saved_model_warmup_util.cc: kMaxNumRecords).
MAX_WARMUP_RECORDS = 1000
# Versions in END kept per model for GetModelStatus (the rest are forgotten).
KEEP_ENDED = 8


@dataclass
class VersionState:
    """One version of one model as `GetModelStatus` reports it."""

    version: int
    state: int
    path: Path
    model: Optional[ServedModel] = None
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""
    # The directory's saved_model.pb mtime when it was tried (a failed version is
    # retried only when it changes).
    stamp: float = 0.0
    since: float = field(default_factory=time.monotonic)


def _stamp(path: Path) -> float:
    try:
        return (path / SAVED_MODEL_FILE).stat().st_mtime
    except OSError:
        return 0.0


def read_warmup_requests(version_dir: Path) -> list[predict_pb2.PredictRequest]:
    """The Predict requests of `<version_dir>/assets.extra/tf_serving_warmup_requests`.

    The file is a TFRecord of `PredictionLog`s. As TF Serving, only Predict logs are
    taken (the others need Classify/Regress, which TF2 exports do not serve), at
    most `MAX_WARMUP_RECORDS`.

    Returns:
        The requests in file order (none without a warmup file).

    Raises:
        ValueError: a record is not a `PredictionLog` of a Predict request, or there
            are too many.
    """
    path = Path(version_dir) / WARMUP_DIR / WARMUP_FILE
    if not path.is_file():
        return []
    requests = []
    for index, record in enumerate(tf.data.TFRecordDataset(str(path))):
        if index >= MAX_WARMUP_RECORDS:
            raise ValueError(
                f"{path}: more than {MAX_WARMUP_RECORDS} warmup records "
                "(TF Serving refuses such a version)")
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(record.numpy())
        except Exception as e:  # protobuf's DecodeError
            raise ValueError(f"{path}: record {index} is not a PredictionLog: "
                             f"{e}") from e
        kind = log.WhichOneof("log_type")
        if kind != "predict_log":
            raise ValueError(f"{path}: record {index} is a {kind}; only predict_log "
                             "warmup requests are replayed")
        requests.append(log.predict_log.request)
    return requests


def warm_up(model: ServedModel) -> int:
    """Replays the version's warmup requests (`read_warmup_requests`) on `model`,
    each once. As in TF Serving, a request's `model_spec.name` is not checked: an
    export warmed up under one name serves under another.

    Returns:
        The number of requests replayed (0 without a warmup file).

    Raises:
        ValueError: the warmup file is not one TF Serving replays.
        ServingError, tf.errors.OpError: a warmup request failed (the version is
            then not served, as in TF Serving).
    """
    requests = read_warmup_requests(model.path)
    for request in requests:
        model.predict(request.model_spec.signature_name or SIGNATURE_SERVING_DEFAULT,
                      dict(request.inputs), list(request.output_filter))
    return len(requests)


Loader = Callable[[Path, int], ServedModel]


class ModelManager:
    """The served versions of every model of a config; see the module docstring.

    Args:
        config: the models to serve.
        poll_wait_s: seconds between polls of the base paths; 0 or less: no polling
            thread (call `poll()` yourself; tests do).
        enable_warmup: replay each version's warmup requests before serving it.
        loader: builds a `ServedModel` from (directory, version); tests inject
            slow or failing loads through it.
    """

    def __init__(self, config: ModelServerConfig, poll_wait_s: float = 1.0,
                 enable_warmup: bool = True, loader: Loader = ServedModel):
        check_model_config(config)
        self.poll_wait_s = poll_wait_s
        self.enable_warmup = enable_warmup
        self._loader = loader
        self._lock = threading.Lock()  # guards _config and _versions
        self._poll_lock = threading.Lock()  # one poll (load/unload pass) at a time
        self._config = config
        self._versions: dict[str, dict[int, VersionState]] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._watcher: Optional[threading.Thread] = None
        self._config_file_problem: Optional[str] = None  # the last one logged

    # -- the poll loop ---------------------------------------------------------------

    def start(self) -> None:
        """Loads what the config asks for now, then polls in a daemon thread."""
        self.poll()
        if self.poll_wait_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-poller",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stops polling (the loaded versions stay until the manager is dropped)."""
        self._stop.set()
        for thread in (self._thread, self._watcher):
            if thread is not None:
                thread.join()
        self._thread = self._watcher = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_wait_s):
            try:
                self.poll()
            except Exception:  # a poll must never kill the poller
                _LOG.exception("polling the model base paths failed")

    def poll(self) -> None:
        """One pass: for each model, load newly aspired versions, then unload."""
        with self._poll_lock:
            with self._lock:
                models = dict(model_configs(self._config))
                gone = [name for name in self._versions if name not in models]
            for name in gone:
                self._unload_model(name)
            for name, model in models.items():
                self._poll_model(name, model)

    def _poll_model(self, name: str, model: ModelConfig) -> None:
        on_disk = list_version_dirs(model.base_path)
        aspired = aspired_versions(model, on_disk)
        with self._lock:
            states = self._versions.setdefault(name, {})
            to_load = [v for v in sorted(aspired, reverse=True)
                       if self._needs_load(states.get(v), on_disk[v])]
        for version in to_load:
            self._load(name, version, on_disk[version])
        with self._lock:
            available = set(self._available(name))
            if available & aspired:
                to_unload = sorted(available - aspired)
            else:  # keep serving what we have until an aspired version is up
                to_unload = []
        for version in to_unload:
            self._unload(name, version)

    @staticmethod
    def _needs_load(state: Optional[VersionState], path: Path) -> bool:
        if state is None:
            return True
        if state.state in (State.AVAILABLE, State.LOADING):
            return False
        if state.state == State.END and state.error_code != grpc.StatusCode.OK:
            return _stamp(path) != state.stamp  # retried once re-pushed
        return state.state == State.END  # unloaded earlier, aspired again

    def _load(self, name: str, version: int, path: Path) -> None:
        state = VersionState(version, State.LOADING, path, stamp=_stamp(path))
        with self._lock:
            self._versions[name][version] = state
        _LOG.info("loading model %r version %d from %s", name, version, path)
        start = time.monotonic()
        try:
            if not (path / SAVED_MODEL_FILE).is_file():
                raise FileNotFoundError(
                    f"version directory {str(path)!r} has no {SAVED_MODEL_FILE}")
            loaded = self._loader(path, version)
            replayed = warm_up(loaded) if self.enable_warmup else 0
        except Exception as e:  # any failure fails this version only
            code = e.code if isinstance(e, ServingError) else grpc.StatusCode.UNKNOWN
            if isinstance(e, FileNotFoundError):
                code = grpc.StatusCode.NOT_FOUND
            message = f"{type(e).__name__}: {e}"
            _LOG.error("model %r version %d failed to load: %s", name, version,
                       message)
            with self._lock:
                state.state, state.error_code, state.error_message = (
                    State.END, code, f"Loading servable: {{name: {name} version: "
                    f"{version}}} failed: {message}")
                state.since = time.monotonic()
            return
        with self._lock:
            state.model, state.state, state.since = loaded, State.AVAILABLE, \
                time.monotonic()
        _LOG.info("model %r version %d AVAILABLE after %.1f s (%d warmup requests)",
                  name, version, time.monotonic() - start, replayed)

    def _unload(self, name: str, version: int) -> None:
        with self._lock:
            state = self._versions[name][version]
            # Requests that resolved it keep their reference until they return; the
            # version is freed with the last one (TF Serving's UNLOADING is that wait).
            state.model = None
            state.state, state.since = State.END, time.monotonic()
            self._forget_ended(name)
        _LOG.info("model %r version %d unloaded", name, version)

    def _unload_model(self, name: str) -> None:
        with self._lock:
            versions = list(self._available(name))
        for version in versions:
            self._unload(name, version)
        with self._lock:
            self._versions.pop(name, None)

    def _forget_ended(self, name: str) -> None:
        ended = sorted((s.since, v) for v, s in self._versions[name].items()
                       if s.state == State.END)
        for _, version in ended[:-KEEP_ENDED]:
            del self._versions[name][version]

    # -- config ----------------------------------------------------------------------

    @property
    def config(self) -> ModelServerConfig:
        with self._lock:
            return self._config

    def reload(self, config: ModelServerConfig) -> None:
        """Serves `config` from now on (`HandleReloadConfigRequest`).

        Returns after one poll under the new config: every model in it has then
        been loaded or has failed.

        Raises:
            ModelConfigError: the config is refused; the old one stays.
        """
        check_model_config(config)
        with self._lock:
            self._config = config
        self.poll()

    def watch_config_file(self, path: str | Path, wait_s: float) -> None:
        """Polls the model config file `path` every `wait_s` seconds in a daemon
        thread (`poll_config_file`), as TF Serving's
        `--model_config_file_poll_wait_seconds`."""
        if wait_s <= 0:
            raise ValueError(f"wait_s must be > 0, got {wait_s}")
        if self._watcher is not None:
            raise RuntimeError("a config file is watched already")

        def run() -> None:
            while not self._stop.wait(wait_s):
                try:
                    self.poll_config_file(path)
                except Exception:  # a poll must never kill the watcher
                    _LOG.exception("polling the model config file %s failed", path)

        self._watcher = threading.Thread(target=run, name="config-file-poller",
                                         daemon=True)
        self._watcher.start()

    def poll_config_file(self, path: str | Path) -> bool:
        """Reads `path` and serves it if it differs from the config served.

        A file that is missing, does not parse or is refused leaves the served
        config as it is and is logged at ERROR, once until the problem changes (TF
        Serving logs it and keeps its config too). Write the file atomically (a
        rename, as a Kubernetes ConfigMap does): a half-written file that parses is
        a config.

        Returns:
            Whether the config was swapped.
        """
        try:
            config = read_model_config(path)
            if config == self.config:
                self._config_file_problem = None
                return False
            self.reload(config)
        except (OSError, ModelConfigError) as e:
            problem = f"{type(e).__name__}: {e}"
            if problem != self._config_file_problem:
                _LOG.error("model config file %s not applied, the config before it "
                           "is served: %s", path, problem)
                self._config_file_problem = problem
            return False
        self._config_file_problem = None
        _LOG.info("model config file %s changed: serving models %s", path,
                  self.model_names())
        return True

    # -- requests --------------------------------------------------------------------

    def model_names(self) -> list[str]:
        with self._lock:
            return list(model_configs(self._config))

    def resolve(self, name: str, version: Optional[int] = None,
                label: Optional[str] = None) -> ServedModel:
        """The `ServedModel` a request's `model_spec` names, as TF Serving resolves it.

        No version and no label: the highest available version. A label maps to a
        version through the model's `version_labels`.

        Raises:
            ServingError: NOT_FOUND for an unknown model or a version that is not
                available; INVALID_ARGUMENT for an unknown label.
        """
        with self._lock:
            models = model_configs(self._config)
            if name not in models:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Latest({name}); served models: "
                    f"{sorted(models)}")
            if label is not None:
                labels = dict(models[name].version_labels)
                if label not in labels:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Unrecognized servable version label: {label}; model "
                        f"{name!r} has labels {sorted(labels)}")
                version = labels[label]
            available = self._available(name)
            if version is None:
                if not available:
                    raise ServingError(
                        grpc.StatusCode.NOT_FOUND,
                        f"Servable not found for request: Latest({name}); no version "
                        f"of {name!r} is available (GetModelStatus says why)")
                return available[max(available)]
            if version not in available:
                what = f" (label {label!r})" if label is not None else ""
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Specific({name}, {version})"
                    f"{what}; available versions of {name!r}: {sorted(available)}")
            return available[version]

    def status(self, name: str, version: Optional[int] = None
               ) -> list[get_model_status_pb2.ModelVersionStatus]:
        """`ModelVersionStatus` of each known version of `name` (or of one version).

        Raises:
            ServingError: NOT_FOUND for an unknown model or version.
        """
        with self._lock:
            if name not in model_configs(self._config):
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Could not find any versions of model {name}")
            states = dict(self._versions.get(name, {}))
            answer = []
            for v in sorted(states, reverse=True):
                if version is not None and v != version:
                    continue
                s = states[v]
                status = get_model_status_pb2.ModelVersionStatus(version=v,
                                                                 state=s.state)
                status.status.error_code = s.error_code.value[0]
                status.status.error_message = s.error_message
                answer.append(status)
        if version is not None and not answer:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Could not find version {version} of model {name}")
        return answer

    def unavailable(self) -> dict[str, str]:
        """Model name → why it has no AVAILABLE version, for every such model."""
        with self._lock:
            models = model_configs(self._config)
            reasons = {}
            for name, model in models.items():
                if self._available(name):
                    continue
                errors = [s.error_message for s in self._versions.get(name, {}).values()
                          if s.error_message]
                reasons[name] = "; ".join(errors) if errors else (
                    f"no numeric version directory (e.g. "
                    f"{Path(model.base_path) / '1'}) under {model.base_path!r}")
            return reasons

    def available_versions(self, name: str) -> list[int]:
        """The AVAILABLE versions of `name`, ascending."""
        with self._lock:
            return sorted(self._available(name))

    def _available(self, name: str) -> dict[int, ServedModel]:
        """Version → loaded model, for the AVAILABLE versions of `name` (the caller
        holds the lock; an AVAILABLE version always has its model)."""
        return {v: s.model for v, s in self._versions.get(name, {}).items()
                if s.state == State.AVAILABLE}
