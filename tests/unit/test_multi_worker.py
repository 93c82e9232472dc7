"""`training/multi_worker.py` without a cluster: TF_CONFIG checks, the batch-size rule,
and `launch_local` on small Python programs (a worker that fails while the others run,
all that succeed). The training itself: tests/integration/test_multi_worker.py."""

from __future__ import annotations

import json
import sys
import time

import pytest

from daian_tf.core.config import TrainConfig
from daian_tf.core.errors import DaianInputError
from daian_tf.training import multi_worker as mw


def _config(workers, index, type_="worker", **extra) -> dict:
    return {"TF_CONFIG": json.dumps({"cluster": {"worker": workers, **extra},
                                     "task": {"type": type_, "index": index}})}


def test_tf_config_gives_this_workers_place():
    spec = mw.read_tf_config(_config(["h:1", "h:2", "h:3"], 1))
    assert (spec.index, spec.num_workers, spec.is_chief) == (1, 3, False)
    assert mw.read_tf_config(_config(["h:1"], 0)).is_chief


@pytest.mark.parametrize("environ, match", [
    ({}, r"TF_CONFIG is not set: start the workers with `daian train SAMPLES OUT "
         r"--workers N`"),
    ({"TF_CONFIG": "{cluster"}, "TF_CONFIG is not valid JSON"),
    ({"TF_CONFIG": json.dumps({"task": {"type": "worker", "index": 0}})},
     "must name the workers"),
    (_config(["h:1", "h:2"], 2), r"task must be .*index.*0\.\.1"),
    (_config(["h:1", "h:2"], 0, type_="chief"), "task must be"),
    (_config(["h:1"], 0, ps=["h:9"]), r"only 'worker' tasks are supported.*\['ps'\]"),
])
def test_bad_tf_config_is_named(environ, match):
    with pytest.raises(DaianInputError, match=match):
        mw.read_tf_config(environ)


def test_multi_worker_without_tf_config_fails_before_tensorflow_starts(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert mw.strategy_for(TrainConfig()) is None  # single: no strategy, no TF_CONFIG
    with pytest.raises(DaianInputError, match="TF_CONFIG is not set"):
        mw.strategy_for(TrainConfig(distribution="multi_worker"))


def test_the_global_batch_must_split_evenly():
    mw.check_batch_size(256, 2)
    with pytest.raises(DaianInputError, match=r"train.batch_size \(255\) must be "
                       r"divisible by the number of workers \(2\)"):
        mw.check_batch_size(255, 2)


def test_without_a_strategy_a_process_is_the_chief_of_one():
    assert (mw.worker_index(None), mw.num_workers(None), mw.is_chief(None)) == (0, 1, True)


# launch_local: each worker a small Python program that reads its TF_CONFIG

_WORKER = """
import json, os, sys, time
task = json.loads(os.environ["TF_CONFIG"])
index, workers = task["task"]["index"], task["cluster"]["worker"]
print(f"worker {index} of {len(workers)} at {workers[index]}", flush=True)
mode = sys.argv[1]
if mode == "fail" and index == 1:
    print("something went wrong on worker 1", file=sys.stderr, flush=True)
    sys.exit(3)
if mode == "fail":  # the others keep running
    time.sleep(600)
"""


def _command(tmp_path, mode):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    return [sys.executable, str(script), mode]


def test_launch_local_runs_every_worker_with_its_tf_config(tmp_path, capsys):
    mw.launch_local(_command(tmp_path, "ok"), 3, str(tmp_path / "logs"))
    logs = [(tmp_path / "logs" / f"worker-{i}.log").read_text() for i in range(3)]
    addresses = set()
    for i, log in enumerate(logs):
        assert log.startswith(f"worker {i} of 3 at 127.0.0.1:")
        addresses.add(log.split(" at ")[1].strip())
    assert len(addresses) == 3  # distinct ports
    out = capsys.readouterr().out
    assert "3 workers on this machine" in out
    assert "worker 0 of 3" in out and "worker 1 of 3" not in out  # the chief echoes


def test_a_failing_worker_is_named_and_the_others_are_stopped(tmp_path):
    start = time.time()
    with pytest.raises(mw.WorkerFailed) as failed:
        mw.launch_local(_command(tmp_path, "fail"), 3, str(tmp_path / "logs"),
                        grace_s=1.0)
    assert time.time() - start < 60  # the sleeping workers did not run their 600 s
    message = str(failed.value)
    assert failed.value.index == 1 and failed.value.returncode == 3
    assert "worker 1 of 3 failed (exit code 3)" in message
    assert "something went wrong on worker 1" in message  # the end of its log
    assert "worker(s) [0, 2] were still running and were stopped" in message


def test_fewer_than_one_worker_is_refused(tmp_path):
    with pytest.raises(DaianInputError, match="--workers must be >= 1"):
        mw.launch_local(_command(tmp_path, "ok"), 0, str(tmp_path / "logs"))
