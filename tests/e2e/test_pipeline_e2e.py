"""End to end: the README's main job, `daian quickstart`, run as a new user runs it (the
console script, no TF_CPP_MIN_LOG_LEVEL, no PYTHONWARNINGS) on the embedded default world:
the real TFX pipeline (LocalDagRunner, SQLite ML Metadata, the Beam sample builder as
ExampleGen, Transform, DAIAN's three Trainer stages and DIN's Trainer, the TFMA Evaluators,
the push gate, the Pusher), the pushed SavedModel checked with `saved_model_cli`, served
over gRPC by the local server to the official `tensorflow-serving-api` stubs; and what the
user sees: our progress lines and tables, no library noise; `--verbose` keeps the
libraries' output.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from daian_tf.core import features as F
from daian_tf.core.config import DEFAULT_CONFIG_FILE, load_config
from daian_tf.core.names import EVAL, SPLITS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

# stderr lines the libraries print that are known noise (observed on a run without the
# quiet console; the reasons are in daian_tf/core/console.py); written out here, not
# imported from there, so that the check does not trust the code it checks
NOISE = [
    r"Unable to register cu(FFT|DNN|BLAS) factory",
    r"oneDNN custom operations are on",
    r"oneDNN supports DT_INT64 only",
    r"TF-TRT Warning",
    r"This TensorFlow binary is optimized",
    r"All log messages before absl::InitializeLog",
    r"computation placer already registered",
    r"op_level_cost_estimator",
    r"Logging before flag parsing",
    # objects freed during interpreter teardown (console.release_at_exit)
    r"Exception ignored in",
    # library log records, in Python's default format and in the console's
    r"(^|\d )(WARNING|INFO)[: ](absl|tensorflow|apache_beam|tfx|py\.warnings)\b",
    r"UserWarning",
    r"DeprecationWarning",
    r"FutureWarning",
    r"non-supported Python version",
    r"warnings\.warn\(",
    r"^\s+self\._interrupted_warning\(\)",
    # TensorFlow's and absl's C++ log formats, any level
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] ",
    r"^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ",
]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS", "GRPC_VERBOSITY",
                        "GLOG_minloglevel")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _daian(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """The `daian` console script of this environment (its entry point), or the same
    `main` through `python -m` where the script is not installed."""
    script = Path(sys.executable).parent / "daian"
    cmd = ([sys.executable, str(script)] if script.exists()
           else [sys.executable, "-m", "daian_tf.cli"])
    return subprocess.run(cmd + list(args), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def default_cfg():
    return load_config(DEFAULT_CONFIG_FILE)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """`daian quickstart --workdir W`, run once for the module: (W, the finished process)."""
    workdir = tmp_path_factory.mktemp("quickstart") / "qs"
    return workdir, _daian("quickstart", "--workdir", str(workdir), timeout=5400)


@pytest.fixture(scope="module")
def pipeline_run(quickstart):
    """What the quick start wrote to W/results.json (its table's rows, the paths)."""
    workdir, run = quickstart
    assert run.returncode == 0, run.stderr[-5000:]
    return json.loads((workdir / "results.json").read_text())


def test_quickstart_table_daian_above_din_above_popularity_below_oracle(pipeline_run):
    rows = {r["model"].split(" ")[0]: r for r in pipeline_run["rows"]}
    daian, din = rows["DAIAN"], rows["DIN"]
    popularity, oracle = rows["popularity"], rows["oracle"]
    for metric in ("auc", "gauc"):
        assert din[metric] > popularity[metric] + 0.02, (metric, din, popularity)
        assert daian[metric] > din[metric] + 0.02, (metric, daian, din)
        assert daian[metric] < oracle[metric] - 0.05, (metric, daian, oracle)
    assert oracle["logloss"] < daian["logloss"]
    assert daian["gauc_num_users"] > 100  # GAUC averages over many users, not a handful


def test_pipeline_produces_every_artifact(pipeline_run):
    from tfx_pipeline.runner import latest_output_uri

    md = pipeline_run["metadata"]
    for component, key in [("TirSampleGen", "examples"), ("StatisticsGen", "statistics"),
                           ("SchemaGen", "schema"), ("ExampleValidator", "anomalies"),
                           ("Transform", "transform_graph"),
                           ("Trainer_stage3", "model"), ("Trainer_din", "model"),
                           ("Evaluator_vs_din", "evaluation"), ("PushGate", "blessing"),
                           ("InfraCheck", "blessing"), ("Pusher", "pushed_model")]:
        uri = latest_output_uri(md, component, key)
        assert os.path.exists(uri), (component, uri)
    examples = latest_output_uri(md, "TirSampleGen", "examples")
    for split in (f"Split-{s}" for s in SPLITS):
        assert any(f.endswith(".gz") for f in os.listdir(os.path.join(examples, split)))
    report = json.load(open(os.path.join(examples, "report.json")))
    assert report["sim_range"][0] < report["sim_range"][1]


def test_example_validator_finds_no_anomaly(pipeline_run):
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    from tfx_pipeline.runner import latest_output_uri

    uri = latest_output_uri(pipeline_run["metadata"], "ExampleValidator", "anomalies")
    for split in SPLITS:
        path = os.path.join(uri, f"Split-{split}", "SchemaDiff.pb")
        anomalies = anomalies_pb2.Anomalies()
        anomalies.ParseFromString(open(path, "rb").read())
        assert not anomalies.anomaly_info, dict(anomalies.anomaly_info)


def test_saved_model_cli_shows_the_serving_contract(pipeline_run):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    out = subprocess.run([cli, "show", "--dir", pipeline_run["pushed_model"], "--all"],
                         check=True, capture_output=True, text=True).stdout
    block = out.split("signature_def['serving_default']:")[1].split("signature_def[")[0]
    assert "inputs['examples'] tensor_info:" in block
    assert "dtype: DT_STRING" in block and "shape: (-1)" in block
    assert "outputs['ctr'] tensor_info:" in block
    assert "dtype: DT_FLOAT" in block
    assert "signature_def['ctr']:" in out
    assert "outputs['intent'] tensor_info:" in block  # DAIAN's p̂ beside the ctr
    intent = out.split("signature_def['intent']:")[1].split("signature_def[")[0]
    assert "shape: (-1, 6)" in intent
    rank = out.split("signature_def['rank']:")[1].split("signature_def[")[0]
    assert "inputs['context'] tensor_info:" in rank and "shape: (1)" in rank
    assert "inputs['candidates'] tensor_info:" in rank


def test_pipeline_and_daian_train_bin_the_same_example_into_the_same_bin(
        pipeline_run, default_cfg, tmp_path):
    """One owner of the I-2 range: the sample builder. The pipeline hands it on as the
    Examples artifacts' property (TirSampleGen → Transform → Trainers → the pushed model),
    `daian train` as report.json; both Transform graphs bin the same raw examples into
    the same bins, and the pushed model holds the same range."""
    import tensorflow_transform as tft

    from daian_tf.core import similarity_range as SR
    from daian_tf.data.sample_builder import run_build_samples
    from daian_tf.data.transform import serving_feature_spec
    from daian_tf.evaluation.raw_split import read_split
    from daian_tf.workflows import transform_built_samples
    from tfx_pipeline.components.sample_gen import split_dir
    from tfx_pipeline.runner import latest_output_artifact, latest_output_uri

    md = pipeline_run["metadata"]
    generated = latest_output_artifact(md, "TirSampleGen", "examples")
    transformed = latest_output_artifact(md, "Transform", "transformed_examples")
    pipeline_range = SR.from_json(
        generated.custom_properties[SR.ARTIFACT_PROPERTY].string_value, "TirSampleGen")
    assert SR.from_json(transformed.custom_properties[SR.ARTIFACT_PROPERTY].string_value,
                        "Transform") == pipeline_range
    pushed = tf.saved_model.load(pipeline_run["pushed_model"])
    np.testing.assert_array_equal(pushed.sim_range.numpy(), pipeline_range)

    samples = tmp_path / "samples"
    report = run_build_samples(pipeline_run["raw_dir"], str(samples), default_cfg.samples)
    assert tuple(report[SR.REPORT_KEY]) == pipeline_range
    train_route = transform_built_samples(str(samples), str(tmp_path), default_cfg)
    assert tuple(train_route.sim_range) == pipeline_range

    split = read_split(os.path.join(split_dir(generated.uri, EVAL), "*"),
                       default_cfg.samples, limit=3000)
    parsed = tf.io.parse_example(tf.constant(split.requests),
                                 serving_feature_spec(default_cfg.samples))
    pipeline_tfo = tft.TFTransformOutput(latest_output_uri(md, "Transform",
                                                           "transform_graph"))
    bins = [tfo.transform_features_layer()(dict(parsed))[F.SIM_BIN].numpy()
            for tfo in (pipeline_tfo, train_route.tf_transform_output)]
    np.testing.assert_array_equal(bins[0], bins[1])
    assert len(set(bins[0].tolist())) == default_cfg.model.num_sim_bins


def test_grpc_round_trip_matches_in_process_scores(pipeline_run, default_cfg):
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    import grpc

    from daian_tf.evaluation.raw_split import read_split
    from serving.server import serve
    from tfx_pipeline.components.sample_gen import split_dir
    from tfx_pipeline.runner import latest_output_uri

    examples = latest_output_uri(pipeline_run["metadata"], "TirSampleGen", "examples")
    split = read_split(os.path.join(split_dir(examples, EVAL), "*"),
                       default_cfg.samples, limit=64)
    loaded = tf.saved_model.load(pipeline_run["pushed_model"])
    in_process = loaded.signatures["serving_default"](
        examples=tf.constant(split.requests))["ctr"].numpy().reshape(-1)

    server = serve(pipeline_run["serving_dir"], model_name="daian", port=0, wait=False)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "daian"
        request.model_spec.signature_name = "serving_default"
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto(split.requests))
        response = stub.Predict(request, timeout=30)
        served = tf.make_ndarray(response.outputs["ctr"]).reshape(-1)
        channel.close()
    finally:
        server.stop()
    assert served.shape == (64,)
    np.testing.assert_allclose(served, in_process, atol=1e-5)
    # rank: the first request's context and its candidates, over gRPC with the client
    from serving.client import PredictClient

    first = [i for i, e in enumerate(split.requests)
             if _request_features(e) == _request_features(split.requests[0])]
    assert len(first) >= 1
    server = serve(pipeline_run["serving_dir"], model_name="daian", port=0, wait=False)
    try:
        with PredictClient(f"127.0.0.1:{server.port}") as client:
            ranked = client.rank(split.requests[0], [split.requests[i] for i in first])
    finally:
        server.stop()
    np.testing.assert_allclose(ranked, in_process[first], atol=1e-5)
    assert np.all((served > 0) & (served < 1))
    assert np.std(served) > 0  # the model discriminates between candidates


def _request_features(serialized: bytes) -> bytes:
    """The request-level part of an example (everything but the target features)."""
    example = tf.train.Example.FromString(serialized)
    for key in F.TARGET_KEYS:
        del example.features.feature[key]
    return example.SerializeToString(deterministic=True)


def test_kubeflow_compile_writes_a_pipeline_spec(tmp_path, default_cfg):
    from tfx_pipeline.runner import compile_kubeflow

    out = compile_kubeflow("gs://bucket/raw", str(tmp_path / "root"), default_cfg,
                           str(tmp_path / "daian.json"), image="example.com/daian:1")
    spec = json.load(open(out["pipeline_spec"]))
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    assert {"TirSampleGen", "Transform", "Trainer_stage1", "Trainer_stage2",
            "Trainer_stage3", "Trainer_din", "Evaluator_vs_din", "Evaluator_vs_blessed",
            "PushGate", "InfraCheck", "Pusher"} <= set(tasks)
    executors = spec["pipelineSpec"]["deploymentSpec"]["executors"]
    assert any("example.com/daian:1" in json.dumps(e) for e in executors.values())


# --- what the user sees ---------------------------------------------------------------

def _node_ids(metadata: Path) -> list:
    """The ids of the pipeline's components, from its ML Metadata (node contexts)."""
    with sqlite3.connect(metadata) as db:
        names = [row[0] for row in db.execute(
            "SELECT c.name FROM Context c JOIN Type t ON c.type_id = t.id "
            "WHERE t.name = 'node'")]
    return sorted(name.split(".", 1)[1] for name in names)


def test_quickstart_exits_0(quickstart):
    _, run = quickstart
    assert run.returncode == 0, run.stderr[-5000:]


def test_quickstart_stderr_has_no_known_library_noise(quickstart):
    _, run = quickstart
    lines = run.stderr.splitlines()
    noisy = [line for line in lines if any(re.search(p, line) for p in NOISE)]
    assert not noisy, f"{len(noisy)} of {len(lines)} stderr lines are library " \
        "noise:\n" + "\n".join(noisy[:40])


def test_quickstart_stdout_shows_each_component_and_the_tables(quickstart):
    root, run = quickstart
    assert run.returncode == 0, run.stderr[-5000:]
    out = run.stdout
    nodes = _node_ids(root / "pipeline" / "metadata.sqlite")
    assert nodes
    table = out.split("] finished in", 1)[-1]
    for node in nodes:
        assert re.search(rf"^\[pipeline \d\d:\d\d:\d\d\] {node}: started$", out,
                         re.M), f"no start line of {node}:\n{out}"
        assert re.search(rf"^\[pipeline \d\d:\d\d:\d\d\] {node}: "
                         rf"(done in \d+\.\d s|cached)", out, re.M), \
            f"no result line of {node}:\n{out}"
        assert re.search(rf"^{node} +(ran|cached) +\d+\.\d$", table, re.M), \
            f"{node} is not in the summary table:\n{table}"
    assert re.search(r"^total +\d+\.\d$", table, re.M)
    assert "| model | AUC | GAUC | logloss |" in out  # the quick start's own table
    # InfraCheck: the model under tensorflow::LoadSavedModel, as TF Serving runs it: the
    # warmup request, then the 4 signatures on 64 eval examples
    assert re.search(r"INFRA BLESSED: loads and answers under TensorFlow's C\+\+ loader, "
                     r"as in TF Serving: 5 calls \(ctr, intent, rank, serving_default\) "
                     r"on 64 examples, max \|C\+\+ - local server\| "
                     r"(0|[\d.]+e-(0[6-9]|[1-9]\d))$", out, re.M), out


def test_verbose_keeps_the_library_output(quickstart, tmp_path):
    """A cheap command (the Beam sample builder on the quick start's raw logs):
    with --verbose its stderr carries library log records, which a quiet run never
    prints (checked on the quick start's stderr)."""
    root, run = quickstart
    assert run.returncode == 0, run.stderr[-5000:]
    library = re.compile(r"(^|\d )(INFO|WARNING)[: ](apache_beam|absl|tensorflow)[.: ]",
                         re.M)
    assert not library.search(run.stderr)
    verbose = _daian("--verbose", "build-samples", str(root / "raw"),
                     str(tmp_path / "samples"), timeout=1800)
    assert verbose.returncode == 0, verbose.stderr[-5000:]
    assert library.search(verbose.stderr), verbose.stderr[-3000:]
