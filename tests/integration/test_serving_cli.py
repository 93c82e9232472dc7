"""`daian serve` (tensorflow_model_server's flags), `daian score` and `daian load-test`,
as processes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2

from daian_tf.core.console import is_noise_line
from daian_tf.training.multi_worker import free_ports
from serving.client import PredictClient
from serving.contract import INPUT_EXAMPLES
from tests._toy_servable import (
    BIAS,
    FEATURE_N,
    FEATURE_X,
    MODEL_NAME,
    OUTPUT_LOGIT,
    SIGNATURE_SCORE,
    examples,
    expected_ctr,
    rows_with_defaults,
    save_toy_model,
)

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "serving" / "config"


def _daian_cmd() -> list[str]:
    script = Path(sys.executable).parent / "daian"
    return ([sys.executable, str(script)] if script.exists()
            else [sys.executable, "-m", "daian_tf.cli"])


SERVED_RECEIVE_LIMIT = 2 ** 20


def _wait_until_served(proc: subprocess.Popen, client: PredictClient, log: Path,
                       deadline_s: float = 120) -> None:
    """Until the model is AVAILABLE; a process that exits first fails at once, with
    its output."""
    end = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"daian serve exited ({proc.returncode}):\n"
                                 f"{log.read_text()[-3000:]}")
        try:
            client.wait_until_available(deadline_s=1)
            return
        except TimeoutError:
            if time.monotonic() > end:
                raise


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`daian serve --model_config_file=... --enable_batching=true
    --batching_parameters_file=... --rest_api_port=... --monitoring_config_file=...`
    on the packaged files, as a process, with tensorflow_model_server's gRPC and
    thread flags (a 1 MiB receive limit, 16 request threads, 2 TensorFlow threads)
    and its config file polled every 0.5 s."""
    tmp = tmp_path_factory.mktemp("cli")
    base = tmp / MODEL_NAME
    save_toy_model(base / "3")
    config = tmp / "models.config.pbtxt"
    config.write_text((CONFIG / "models.config.pbtxt").read_text().replace(
        '"/models/daian"', f'"{base}"').replace('name: "daian"', f'name: "{MODEL_NAME}"'))
    port, rest_port = free_ports(2)
    batching = CONFIG / "batching_parameters.pbtxt"
    log = tmp / "serve.log"  # a file, not a pipe nobody reads while the server runs
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            _daian_cmd() + ["serve", f"--model_config_file={config}", f"--port={port}",
                            "--enable_batching=true",
                            f"--batching_parameters_file={batching}",
                            f"--rest_api_port={rest_port}",
                            f"--monitoring_config_file="
                            f"{CONFIG / 'monitoring.config.pbtxt'}",
                            f"--grpc_channel_arguments="
                            f"grpc.max_receive_message_length={SERVED_RECEIVE_LIMIT}",
                            "--grpc_max_threads=16",
                            "--model_config_file_poll_wait_seconds=0.5",
                            "--tensorflow_session_parallelism=2"],
            cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, text=True)
    target = f"127.0.0.1:{port}"
    try:
        with PredictClient(target, model_name=MODEL_NAME) as client:
            _wait_until_served(proc, client, log)
        yield target, tmp, rest_port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    output = log.read_text()
    assert proc.returncode == 0, output[-3000:]
    assert "serving 'toy' versions [3]" in output


def test_daian_score_prints_the_served_scores(served):
    target, tmp, _ = served
    path = tmp / "examples.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for e in examples():
            writer.write(e)
    out = subprocess.run(_daian_cmd() + ["score", target, str(path),
                                         f"--model_name={MODEL_NAME}",
                                         "--batch_size=3"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["index"] for line in lines] == list(range(len(examples())))
    np.testing.assert_allclose([line["ctr"] for line in lines],
                               expected_ctr(*rows_with_defaults()), rtol=0, atol=1e-6)


def test_daian_score_names_what_the_server_refused(served):
    target, tmp, _ = served
    path = tmp / "one.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(examples()[0])
    out = subprocess.run(_daian_cmd() + ["score", target, str(path),
                                         "--model_name=nope"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "NOT_FOUND" in out.stderr and "nope" in out.stderr


def test_daian_serve_takes_tf_servings_grpc_and_thread_flags(served):
    """The receive limit of `--grpc_channel_arguments` refuses a 3.6 MB request (TF
    Serving's own limit, which this server has without the flag, is 2 GiB); the
    process logs its 16 request threads and TensorFlow's 2 + 2."""
    target, tmp, _ = served
    x = np.zeros(100_000, np.float32)  # 0.4 MB
    with PredictClient(target, model_name=MODEL_NAME) as client:
        with pytest.raises(grpc.RpcError) as refused:
            client.predict({FEATURE_X: np.concatenate([x, x, x]),
                            FEATURE_N: np.zeros(300_000, np.int64)}, SIGNATURE_SCORE)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert str(SERVED_RECEIVE_LIMIT) in refused.value.details()
        logit = client.predict({FEATURE_X: x[:3], FEATURE_N: np.zeros(3, np.int64)},
                               SIGNATURE_SCORE)[OUTPUT_LOGIT]
        np.testing.assert_allclose(logit, [BIAS] * 3, rtol=0, atol=1e-6)
    log = tmp / "serve.log"
    for _ in range(100):  # the line follows the server's start by a moment
        if "gRPC: 16 request threads" in log.read_text():
            break
        time.sleep(0.1)
    line = next(line for line in log.read_text().splitlines() if "gRPC: " in line)
    assert "16 request threads" in line
    assert f"'grpc.max_receive_message_length': {SERVED_RECEIVE_LIMIT}" in line
    assert "intra-op 2, inter-op 2 threads" in line


def test_daian_serve_serves_an_edited_model_config_file(served):
    """`--model_config_file_poll_wait_seconds`: a version label added to the file is
    served without a restart."""
    target, tmp, _ = served
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.version_label = "stable"
    request.inputs[INPUT_EXAMPLES].CopyFrom(tf.make_tensor_proto(examples()))
    with PredictClient(target, model_name=MODEL_NAME) as client:
        with pytest.raises(grpc.RpcError) as unknown:
            client._prediction.Predict(request, timeout=10)
        assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        config = tmp / "models.config.pbtxt"
        edited = tmp / "models.config.pbtxt.new"
        edited.write_text(config.read_text().replace(
            "model_version_policy {", "version_labels { key: 'stable' value: 3 }\n"
            "    model_version_policy {"))
        edited.replace(config)  # atomically, as a ConfigMap update
        deadline = time.monotonic() + 30
        while True:
            try:
                response = client._prediction.Predict(request, timeout=10)
                break
            except grpc.RpcError as e:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the label is not served: {e.details()}")
                time.sleep(0.1)
    assert response.model_spec.version.value == 3
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["ctr"]),
                               expected_ctr(*rows_with_defaults()), rtol=0, atol=1e-6)


def test_the_k8s_manifests_command_line_runs_on_daian_serve(tmp_path):
    """serving/k8s/deployment.yaml's `tensorflow_model_server` arguments, as they are
    (the config volume and the model path moved here, the ports free ones), start
    `daian serve`; its readiness probe's path answers and a request is scored."""
    documents = yaml.safe_load_all((REPO / "serving" / "k8s" / "deployment.yaml")
                                   .read_text())
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    config_dir = tmp_path / "config"
    shutil.copytree(CONFIG, config_dir)
    models = config_dir / "models.config.pbtxt"
    models.write_text(models.read_text().replace('"/models/', f'"{tmp_path}/models/'))
    save_toy_model(tmp_path / "models" / "daian" / "1")
    port, rest_port = free_ports(2)
    args = [arg.replace("/config/", f"{config_dir}/")
            .replace("--port=8500", f"--port={port}")
            .replace("--rest_api_port=8501", f"--rest_api_port={rest_port}")
            for arg in container["args"]]
    assert len(args) >= 10 and f"--port={port}" in args
    log = tmp_path / "serve.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen(_daian_cmd() + ["serve"] + args, cwd=REPO,
                                stdout=log_file, stderr=subprocess.STDOUT, text=True)
    try:
        with PredictClient(f"127.0.0.1:{port}", model_name="daian") as client:
            _wait_until_served(proc, client, log)
            np.testing.assert_allclose(client.predict_examples(examples()),
                                       expected_ctr(*rows_with_defaults()),
                                       rtol=0, atol=1e-6)
        probe = container["readinessProbe"]["httpGet"]["path"]
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}{probe}",
                                    timeout=30) as answer:
            assert answer.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()[-3000:]


def test_daian_load_test_reports_every_request_and_prints_no_library_noise(served):
    """`daian load-test TARGET EXAMPLES` from 3 threads: every request counted and
    answered, a JSON summary on stdout, and on stderr none of TensorFlow's and gRPC's
    start-up lines (`python -m serving.load_test` prints them)."""
    target, tmp, _ = served
    path = tmp / "load.tfrecord.gz"
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for e in examples():
            writer.write(e)
    out = subprocess.run(_daian_cmd() + ["load-test", target, str(path),
                                         f"--model-name={MODEL_NAME}",
                                         "--num-requests=30", "--concurrency=3",
                                         "--batch-size=4"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["num_requests"] == 30 and summary["num_errors"] == 0
    assert summary["examples_per_request"] == 4
    assert 0 < summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    noise = [line for line in out.stderr.splitlines() if is_noise_line(line)
             or "cuda" in line.lower() or "All log messages" in line]
    assert not noise, noise


def test_daian_load_test_counts_an_unreachable_server_as_failed_requests(tmp_path):
    path = tmp_path / "one.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(examples()[0])
    out = subprocess.run(_daian_cmd() + ["load-test", f"127.0.0.1:{free_ports(1)[0]}",
                                         str(path), "--num-requests=2",
                                         "--concurrency=1", "--timeout-s=2"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    summary = json.loads(out.stdout)  # strict JSON: no latencies are null, not NaN
    assert summary["num_errors"] == 2 and summary["p50_ms"] is None
    assert "UNAVAILABLE" in summary["first_error"]


def test_the_served_process_answers_prometheus_on_the_rest_port(served):
    """The packaged monitoring file's path, on the REST port: a predict request
    shows in TF Serving's request counter."""
    target, _, rest_port = served
    url = f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics"

    def ok_count() -> float:
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        return sum(s.value for f in text_string_to_metric_families(text)
                   for s in f.samples
                   if s.name == ":tensorflow:serving:request_count_total"
                   and s.labels == {"model_name": MODEL_NAME, "status": "OK"})

    before = ok_count()
    with PredictClient(target, model_name=MODEL_NAME) as client:
        client.predict_examples(examples())
    assert ok_count() == before + 1


@pytest.mark.parametrize("args, words", [
    (["serve", "/nonexistent/models"], "no numeric version directory"),
    (["serve", "--model_config_file=/nonexistent.pbtxt"], "does not exist"),
    (["score", "127.0.0.1:1", "/nonexistent.tfrecord"], "no such examples file"),
    (["score", "127.0.0.1:1", __file__],
     "as an uncompressed TFRecord file (its name does not end in .gz)"),
    (["load-test", "127.0.0.1:1", "/nonexistent.tfrecord"], "no such examples file"),
    (["load-test", "192.0.2.1:8500", __file__], "not a loopback address"),
    (["load-test", "127.0.0.1:1"], "give TARGET EXAMPLES"),
    (["load-test", "--model-dir", "/nonexistent/models", "--examples", __file__],
     "no such model directory"),
    (["serve", "/nonexistent/models",
      f"--monitoring_config_file={CONFIG / 'monitoring.config.pbtxt'}"],
     "--rest_api_port"),
    (["serve", "/nonexistent/models", "--grpc_channel_arguments=a=1,grpc.nothing"],
     "gRPC channel argument 'grpc.nothing' is not key=value"),
    (["serve", "/nonexistent/models", "--model_config_file_poll_wait_seconds=1"],
     "--model_config_file_poll_wait_seconds needs --model_config_file"),
    (["serve", "/nonexistent/models", "--num_load_threads=4"],
     "loads and unloads one version at a time"),
    (["serve", "/nonexistent/models", "--grpc_max_threads=0"],
     "--grpc_max_threads must be >= 1, got 0"),
    (["serve", "/nonexistent/models", "--tensorflow_intra_op_parallelism=1",
      "--tensorflow_inter_op_parallelism=1", "--tensorflow_session_parallelism=1"],
     "not all three"),
    (["serve", "/nonexistent/models", "--tensorflow_intra_op_parallelism=-1"],
     "tensorflow_intra_op_parallelism must be >= 0, got -1"),
    (["serve", "/nonexistent/models", "--batching_parameters_file=x.pbtxt"],
     "--batching_parameters_file needs --enable_batching=true"),
])
def test_bad_input_is_one_line_naming_it(args, words):
    out = subprocess.run(_daian_cmd() + args, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2
    assert words in out.stderr and "Traceback" not in out.stderr
