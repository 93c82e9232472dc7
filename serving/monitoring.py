"""Prometheus metrics of the local server, configured and named as TF Serving's.

`tensorflow_model_server --monitoring_config_file=F --rest_api_port=P` serves its
metrics in Prometheus' text format on the REST port, at the path of `F` (a
`tensorflow.serving.MonitoringConfig` in text format:
`prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }`; an empty
path means that one). `daian serve` takes the same flags and files, and exposes the
request metrics TF Serving's dashboards read, under TF Serving's names and labels:

- `:tensorflow:serving:request_count{model_name, status}`: a counter of `Predict`
  requests (gRPC and REST), `status` "OK" or the gRPC code's name;
- `:tensorflow:serving:request_latency{model_name, API, entrypoint}`: a histogram of
  their latency in microseconds (`API` "predict", `entrypoint` "GRPC" or "REST"),
  with TF Serving's buckets (10 µs × 1.8^i, 33 of them).

The `tensorflow-serving-api` package ships no class for `MonitoringConfig`; the message
is built here from tensorflow_serving/config/monitoring_config.proto (as
`serving.batching` builds `BatchingParameters`), and the file is parsed with
protobuf's text format parser. The metrics are kept with `prometheus_client`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import prometheus_client
from google.protobuf import descriptor_pb2

from serving.protos import message_class, parse_text

DEFAULT_PATH = "/monitoring/prometheus/metrics"  # TF Serving's, for an empty path
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
LATENCY_BUCKETS_US = tuple(10.0 * 1.8 ** i for i in range(33))
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST

_F = descriptor_pb2.FieldDescriptorProto
MONITORING_CONFIG = message_class(
    "tensorflow.serving", "daian_serving/monitoring_config.proto", {
        "PrometheusConfig": [(1, "enable", _F.TYPE_BOOL, None),
                             (2, "path", _F.TYPE_STRING, None)],
        "MonitoringConfig": [(1, "prometheus_config", _F.TYPE_MESSAGE,
                              ".tensorflow.serving.PrometheusConfig")],
    }, "MonitoringConfig")


@dataclass(frozen=True)
class MonitoringConfig:
    """Whether the Prometheus endpoint is on, and its path on the REST port."""

    enable: bool = False
    path: str = DEFAULT_PATH


def parse_monitoring_config(text: str, source: str = "<string>") -> MonitoringConfig:
    """A `--monitoring_config_file`'s content as `MonitoringConfig`.

    Raises:
        ValueError: not a MonitoringConfig in text format (the parser's line and
            column named), or a path that does not start with "/".
    """
    message = parse_text(MONITORING_CONFIG, text, source)
    prometheus = message.prometheus_config
    path = prometheus.path or DEFAULT_PATH
    if not path.startswith("/"):
        raise ValueError(f"{source}: prometheus_config.path must start with '/', "
                         f"got {path!r}")
    return MonitoringConfig(enable=prometheus.enable, path=path)


def read_monitoring_config(path: str | Path) -> MonitoringConfig:
    """Reads a `--monitoring_config_file` (see `parse_monitoring_config`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"monitoring config file {str(path)!r} does not exist")
    return parse_monitoring_config(path.read_text(), str(path))


def _label(value: str) -> str:
    """A label value escaped for Prometheus' text format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class ServingMetrics:
    """The server's request metrics.

    The latency histogram is a `prometheus_client.Histogram` in a registry of its own.
    The request counter is written out here: `prometheus_client` exposes a counter as
    `<name>_total`, and TF Serving's dashboards read `REQUEST_COUNT` without it.
    """

    def __init__(self, path: str = DEFAULT_PATH):
        self.path = path  # where the REST port serves them
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self._latency = prometheus_client.Histogram(
            REQUEST_LATENCY, "Distribution of wall time (in microseconds) for "
            "Tensorflow Serving request.", ["model_name", "API", "entrypoint"],
            buckets=LATENCY_BUCKETS_US, registry=self.registry)

    def observe(self, model_name: str, entrypoint: str, status: str,
                seconds: float, api: str = "predict") -> None:
        """One request: its model, "GRPC" or "REST", its status ("OK" or a gRPC code
        name) and its latency."""
        with self._lock:
            key = (model_name, status)
            self._counts[key] = self._counts.get(key, 0) + 1
        self._latency.labels(model_name, api, entrypoint).observe(seconds * 1e6)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format (`CONTENT_TYPE`)."""
        lines = [f"# HELP {REQUEST_COUNT} The total number of requests.",
                 f"# TYPE {REQUEST_COUNT} counter"]
        with self._lock:
            counts = sorted(self._counts.items())
        lines += [f'{REQUEST_COUNT}{{model_name="{_label(model)}",'
                  f'status="{_label(status)}"}} {count}'
                  for (model, status), count in counts]
        return ("\n".join(lines) + "\n").encode() + \
            prometheus_client.generate_latest(self.registry)
