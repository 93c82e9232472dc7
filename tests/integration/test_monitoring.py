"""Prometheus metrics on the REST port (serving/monitoring.py), as TF Serving names them."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.client import PredictClient
from serving.monitoring import (
    DEFAULT_PATH,
    REQUEST_COUNT,
    REQUEST_LATENCY,
    MonitoringConfig,
    parse_monitoring_config,
    read_monitoring_config,
)
from serving.server import serve
from tests._toy_servable import MODEL_NAME, examples, save_toy_model

CONFIG = Path(__file__).resolve().parents[2] / "serving" / "config"


def test_the_packaged_monitoring_file_parses_with_tf_servings_field_names():
    assert read_monitoring_config(CONFIG / "monitoring.config.pbtxt") == \
        MonitoringConfig(enable=True, path=DEFAULT_PATH)
    assert parse_monitoring_config("prometheus_config { enable: true }") == \
        MonitoringConfig(True, DEFAULT_PATH)  # an empty path is TF Serving's default
    assert not parse_monitoring_config("").enable


@pytest.mark.parametrize("text, message", [
    ("prometheus_config { enabled: true }", "enabled"),  # misspelt field
    ("prometheus_config { enable: 3 }", "enable"),
    ('prometheus_config { enable: true path: "metrics" }', "must start with '/'"),
])
def test_monitoring_files_tf_serving_refuses_are_refused_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_monitoring_config(text, "m.pbtxt")
    assert "m.pbtxt" in str(info.value)


def _get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",
                                    timeout=30) as response:
            return (response.status, response.headers["Content-Type"],
                    response.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def _samples(text: str) -> dict:
    """(sample name, sorted label items) → value, of a Prometheus text exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_predict_requests_are_counted_and_timed_by_model_status_and_entrypoint(
        tmp_path):
    base = tmp_path / MODEL_NAME
    save_toy_model(base / "1")
    config = MonitoringConfig(enable=True, path="/monitoring/prometheus/metrics")
    with serve(str(base), model_name=MODEL_NAME, port=0, poll_wait_s=0,
               rest_api_port=0, monitoring=config) as server:
        with PredictClient(server.target, model_name=MODEL_NAME) as client:
            for _ in range(3):
                client.predict_examples(examples())
            with pytest.raises(grpc.RpcError):
                client.predict_examples(examples(), signature_name="nope")
            client.model_status()  # not a predict request: not counted
        body = json.dumps({"instances": [{"b64": base64.b64encode(e).decode()}
                                         for e in examples()]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.rest_port}/v1/models/{MODEL_NAME}:predict",
            data=body, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        status, content_type, text = _get(server.rest_port, config.path)
    assert status == 200 and content_type.startswith("text/plain")
    assert f"# TYPE {REQUEST_COUNT} counter" in text  # TF Serving's name, no _total
    samples = _samples(text)
    count = f"{REQUEST_COUNT}_total"  # (the parser names every counter sample so)
    assert samples[(count, (("model_name", MODEL_NAME), ("status", "OK")))] == 4
    assert samples[(count, (("model_name", MODEL_NAME),
                            ("status", "INVALID_ARGUMENT")))] == 1
    labels = {"grpc": (("API", "predict"), ("entrypoint", "GRPC"),
                       ("model_name", MODEL_NAME)),
              "rest": (("API", "predict"), ("entrypoint", "REST"),
                       ("model_name", MODEL_NAME))}
    assert samples[(f"{REQUEST_LATENCY}_count", labels["grpc"])] == 4
    assert samples[(f"{REQUEST_LATENCY}_count", labels["rest"])] == 1
    assert samples[(f"{REQUEST_LATENCY}_sum", labels["grpc"])] > 0  # microseconds
    buckets = sorted((float(dict(items)["le"]), value)
                     for (name, items), value in samples.items()
                     if name == f"{REQUEST_LATENCY}_bucket"
                     and dict(items)["entrypoint"] == "GRPC")
    assert buckets[-1] == (float("inf"), 4)
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))  # cumulative

def test_no_metrics_path_without_a_monitoring_config(tmp_path):
    base = tmp_path / MODEL_NAME
    save_toy_model(base / "1")
    with serve(str(base), model_name=MODEL_NAME, port=0, poll_wait_s=0,
               rest_api_port=0) as server:
        status, _, _ = _get(server.rest_port, DEFAULT_PATH)
    assert status == 404


def test_prometheus_without_a_rest_port_is_refused_before_loading(tmp_path):
    with pytest.raises(ValueError, match="rest_api_port"):
        serve(str(tmp_path / "absent"), model_name=MODEL_NAME, port=0,
              monitoring=str(CONFIG / "monitoring.config.pbtxt"))
