"""Multi-worker training through the user's route: `daian train SAMPLES OUT --workers 2`
on a small simulated world (two local processes, MultiWorkerMirroredStrategy over
loopback), against single-process fits of the same transformed data with three seeds.

- the two workers really both trained, on disjoint shards: each worker's own count of
  train examples per epoch (its shard) is about half, and the two add up to the split;
  every epoch's global counts are the split's sizes (train and eval, each example once);
  both ended with the same weights;
- the chief's export scores the raw eval examples with eval AUC and GAUC (computed here
  with scikit-learn) within the seed-to-seed spread of the single-process fits, and its
  summary reports the same AUC.

A worker that fails is named: with samples that are not the sample builder's output, the
chief's transform fails, the other worker stops at the barrier with an error naming the
chief, and the command exits with 1 after both errors.

DAIAN's three stages (a stage model, optimizer and dataset each) run under the strategy
too: two workers (`launch_local`, `fit_model` on the same transformed data, one epoch a
stage) end every stage in step with the same weights, and the plain copy that
`fit_model` returns scores the validation split as the fit's last epoch did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from sklearn.metrics import roc_auc_score

from daian_tf.core import features as F
from daian_tf.core.config import DEFAULT_CONFIG_FILE, load_config
from daian_tf.core.names import EVAL, SAMPLES_GLOB, TRAIN
from daian_tf.core.signatures import INPUT_EXAMPLES, OUTPUT_CTR, SIGNATURE_SERVING_DEFAULT
from daian_tf.data.sample_builder import run_build_samples
from daian_tf.data.simulator import simulate
from daian_tf.evaluation.columns import predict_split
from daian_tf.training.fit import fit_model
from daian_tf.workflows import SUMMARY_FILE, read_transformed

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKERS = 2
SEEDS = (0, 1, 2)  # the single-process fits whose spread the multi-worker run must meet
CONFIG = {  # a small world and DIN (as tests/integration/test_model_zoo.py)
    "simulation": {"num_users": 150, "num_items": 300, "num_categories": 16,
                   "num_shops": 20, "request_days": 4, "history_days": 4},
    "samples": {"history_days": 4, "max_seq_len": 12},
    "model": {"name": "din", "embedding_dim": 8, "hidden_units": [32, 16],
              "attention_units": [16]},
    "train": {"epochs": 3, "batch_size": 128, "learning_rate": 0.003, "seed": 0},
}


def _count(pattern: str) -> int:
    files = sorted(tf.io.gfile.glob(pattern))
    return sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))


def _gauc(labels, scores, users) -> float:
    """Impression-weighted mean of the per-user AUCs, users with one class left out."""
    total, weight = 0.0, 0
    for user in np.unique(users):
        rows = users == user
        if 0 < labels[rows].sum() < rows.sum():
            total += rows.sum() * roc_auc_score(labels[rows], scores[rows])
            weight += rows.sum()
    return total / weight


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_worker")
    config_file = root / "config.yaml"
    config_file.write_text(yaml.safe_dump(CONFIG))
    cfg = load_config(DEFAULT_CONFIG_FILE, config_file)
    simulate(str(root / "raw"), cfg.simulation)
    run_build_samples(str(root / "raw"), str(root / "samples"), cfg.samples)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "daian_tf.cli", "train", str(root / "samples"),
         str(root / "out"), "--config", str(config_file), "--workers", str(WORKERS)],
        env=env, capture_output=True, text=True, timeout=900)
    seconds = time.time() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((root / "out" / SUMMARY_FILE).read_text())
    return {"root": root, "cfg": cfg, "summary": summary, "stdout": proc.stdout,
            "seconds": seconds,
            "data": read_transformed(str(root / "samples"), str(root / "out"), cfg)}


@pytest.fixture(scope="module")
def single(run):
    """(AUC, GAUC) on the eval split of single-process fits, one per seed."""
    import dataclasses

    data, out = run["data"], []
    for seed in SEEDS:
        cfg = dataclasses.replace(run["cfg"], train=dataclasses.replace(
            run["cfg"].train, seed=seed))
        model, _ = fit_model(cfg, data.tf_transform_output, data.train, data.validation,
                             verbose=0)
        labels, scores, users = predict_split(model, data.eval, data.tf_transform_output)
        out.append((roc_auc_score(labels, scores), _gauc(labels, scores, users)))
    return np.array(out)


def test_both_workers_trained_on_disjoint_shards_of_the_split(run):
    summary, data = run["summary"], run["data"]
    history = summary["history"]
    epochs = run["cfg"].train.epochs
    n_train, n_validation = _count(data.train), _count(data.validation)
    # every epoch's global counts (the metrics read over all workers): each example once
    assert history["examples"] == [n_train] * epochs
    assert history["val_examples"] == [n_validation] * epochs
    workers = history["workers"]
    own = np.array([workers[f"train_examples_worker{i}"] for i in range(WORKERS)])
    assert own.shape == (WORKERS, epochs)
    np.testing.assert_array_equal(own.sum(axis=0), [n_train] * epochs)  # disjoint
    assert np.all(own > 0.4 * n_train)  # each worker trained on about its half
    digests = workers["weights_digest"]
    assert len(digests) == WORKERS and digests[0] > 0
    assert digests[1] == pytest.approx(digests[0], rel=1e-9)  # trained in step
    shards = summary["distribution"]["shards"]
    assert summary["distribution"]["workers"] == WORKERS
    for split in (TRAIN, EVAL):
        files = shards[split]["files"]
        assert sorted(files) == [f"worker{i}" for i in range(WORKERS)]
        if shards[split]["sharding"] == "file":
            assert not set(files["worker0"]) & set(files["worker1"])
        else:  # fewer files than workers: both read all, each keeps every 2nd element
            assert files["worker0"] == files["worker1"]
    # the chief printed the epochs; the other worker's output went to its log only
    assert run["stdout"].count("Epoch 1/") == 1
    log = (run["root"] / "out" / "workers" / "worker-1.log").read_text()
    assert "Epoch 1/" not in log


def test_metrics_meet_the_single_process_spread(run, single):
    from daian_tf.data.dataset import matching_files

    summary, root = run["summary"], run["root"]
    export = tf.saved_model.load(summary["serving_model_dir"])
    serve = export.signatures[SIGNATURE_SERVING_DEFAULT]
    raw = [x.numpy() for x in tf.data.TFRecordDataset(
        matching_files(str(root / "samples" / EVAL / SAMPLES_GLOB)),
        compression_type="GZIP")]
    scores = np.concatenate([
        serve(**{INPUT_EXAMPLES: tf.constant(raw[i:i + 1024])})[OUTPUT_CTR].numpy()
        .reshape(-1) for i in range(0, len(raw), 1024)])
    examples = [tf.train.Example.FromString(x).features.feature for x in raw]
    labels = np.array([f[F.LABEL].int64_list.value[0] for f in examples])
    users = np.array([f[F.USER_ID].bytes_list.value[0] for f in examples])
    auc, gauc = roc_auc_score(labels, scores), _gauc(labels, scores, users)
    assert summary[EVAL]["auc"] == pytest.approx(auc, abs=1e-5)  # the export is the model
    # within the seed-to-seed spread of the single-process fits (at least 0.01 wide)
    for value, refs, name in ((auc, single[:, 0], "AUC"), (gauc, single[:, 1], "GAUC")):
        spread = max(refs.max() - refs.min(), 0.01)
        assert refs.min() - spread <= value <= refs.max() + spread, (
            f"eval {name}: {WORKERS} workers {value:.4f}, one process "
            f"{np.round(refs, 4).tolist()} (seeds {SEEDS})")
    print(f"\n{WORKERS} workers: AUC {auc:.4f}, GAUC {gauc:.4f}; one process, seeds "
          f"{SEEDS}: AUC {np.round(single[:, 0], 4).tolist()}, GAUC "
          f"{np.round(single[:, 1], 4).tolist()}; `daian train --workers {WORKERS}` "
          f"took {run['seconds']:.0f} s")


_DAIAN_WORKER = """
import json, sys
from daian_tf.core.config import DEFAULT_CONFIG_FILE, load_config
from daian_tf.training import multi_worker as mw
config, samples, out, raw, result = sys.argv[1:]
cfg = load_config(DEFAULT_CONFIG_FILE, config, overrides={"model": {
    "name": "daian", "uim_hidden_units": [16], "intent_dim": 8, "attention_heads": 2,
    "attention_width": 16, "projection_units": [16], "gate_hidden_units": [16]},
    "train": {"distribution": "multi_worker", "batch_size": 256, "stage1_epochs": 1,
              "stage2_epochs": 1, "stage3_epochs": 1}})
strategy = mw.strategy_for(cfg.train)
from daian_tf.data.catalog import read_model_catalog
from daian_tf.evaluation.columns import predict_split
from daian_tf.evaluation.tables import ranking_metrics
from daian_tf.training.fit import fit_model, jsonable_history
from daian_tf.workflows import read_transformed
data = read_transformed(samples, out, cfg)
model, history = fit_model(cfg, data.tf_transform_output, data.train, data.validation,
                           sim_range=data.sim_range, catalog=read_model_catalog(raw),
                           verbose=0)
if mw.is_chief(strategy):
    metrics = ranking_metrics(*predict_split(model, data.validation,
                                             data.tf_transform_output))
    with open(result, "w") as f:
        json.dump({"history": jsonable_history(history), "validation": metrics}, f)
"""


def test_daian_three_stages_train_in_step(run, tmp_path):
    from daian_tf.training.multi_worker import launch_local

    root = run["root"]
    script = tmp_path / "daian_worker.py"
    script.write_text(_DAIAN_WORKER)
    result = tmp_path / "result.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    launch_local([sys.executable, str(script), str(root / "config.yaml"),
                  str(root / "samples"), str(root / "out"), str(root / "raw"),
                  str(result)], WORKERS, str(tmp_path / "logs"), env=env)
    report = json.loads(result.read_text())
    history = report["history"]
    for stage in ("stage1", "stage2", "stage3"):
        assert len(history[stage]["val_loss"]) == 1, stage
    assert history["stage3"]["val_auc"][0] > 0.55
    digests = history["workers"]["weights_digest"]
    assert len(digests) == WORKERS and digests[1] == pytest.approx(digests[0], rel=1e-9)
    # the returned copy holds the trained weights: it scores as stage 3 ended
    assert report["validation"]["auc"] == pytest.approx(history["stage3"]["val_auc"][0],
                                                  abs=0.01)


def test_a_failing_chief_is_named_and_the_run_fails(tmp_path):
    (tmp_path / "samples" / TRAIN).mkdir(parents=True)
    (tmp_path / "samples" / EVAL).mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run(
        [sys.executable, "-m", "daian_tf.cli", "train", str(tmp_path / "samples"),
         str(tmp_path / "out"), "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "worker 0 of 2 (the chief) failed (exit code 2)" in proc.stderr
    assert "no data-*.tfrecord.gz files" in proc.stderr  # the chief's own error
    assert ("worker 1 of 2 failed (exit code 1)" in proc.stderr
            and "worker(s) [0] failed transforming the samples" in proc.stderr)
    assert "Traceback" not in proc.stderr
