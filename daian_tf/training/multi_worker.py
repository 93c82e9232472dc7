"""Multi-worker training: `tf.distribute.MultiWorkerMirroredStrategy` (`train.distribution:
multi_worker`; docs/multi-worker.md).

Every worker runs the same program with its own `TF_CONFIG` (`{"cluster": {"worker":
[host:port, ...]}, "task": {"type": "worker", "index": i}}`); worker 0 is the chief.
`launch_local` starts N such processes on this machine on free loopback ports (`daian
train ... --workers N`); on a cluster the scheduler sets `TF_CONFIG` on each worker.

- The strategy (`strategy_for`) is created once per process, before any other
  TensorFlow op (TensorFlow configures its collective ops at program start).
- The model, its optimizer and metrics are built under `strategy.scope()`; every step
  all-reduces the gradients, so every worker holds the same weights.
- Each worker reads its shard of the TFRecords (`distribute_dataset`:
  `strategy.distribute_datasets_from_function`, the shard taken explicitly by
  `data.dataset.make_dataset(shard=...)`: whole files when there are at least as many
  files as workers, else every n-th request run or record). `train.batch_size` stays the
  global batch: each worker takes `batch_size / workers` examples a step, so a step sees
  as many examples as a single-process step. Shards may differ in size: the per-worker
  datasets have an unknown length, and tf.distribute's partial-batch handling ends every
  worker's epoch at the same step (a worker whose shard is done gets empty batches).
- The Keras metrics are on-read variables summed over all replicas when read at an
  epoch's end: the History (AUC, loss, `examples`, their `val_` forms) is that of the
  whole split, every eval example counted once.

Keras 3 (3.12 here) does not run `fit` under this strategy as it ships (keras #20585):
its TF trainer reduces a whole `(x, y)` batch with `strategy.reduce` before building
the model (MultiWorkerMirroredStrategy refuses nested values), and reduces the per-step
logs with `axis=0`, which scalars do not have. `_fix_keras_for_multi_worker` replaces
those two reductions, for multi-worker strategies only, by each worker's own values:
the batch is read for its shapes and dtypes only, and the per-step logs (progress bar,
batch-level callbacks) become this worker's running values; the epoch logs stay global.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from daian_tf.core.errors import DaianInputError
from daian_tf.core.names import MULTI_WORKER

TF_CONFIG = "TF_CONFIG"
EXAMPLES_METRIC = "examples"  # the ExampleCount metric's name in the History
WORKERS_KEY = "workers"  # fit_model's History: each worker's own figures
WORKER_LOG = "worker-{index}.log"  # launch_local's log of each worker

_STRATEGY: Optional[tf.distribute.MultiWorkerMirroredStrategy] = None


@dataclass(frozen=True)
class WorkerSpec:
    """This process's place in the cluster of `TF_CONFIG`."""

    index: int
    workers: List[str]

    @property
    def num_workers(self) -> int:
        return len(self.workers)

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def read_tf_config(environ=None) -> WorkerSpec:
    """This worker's place from `TF_CONFIG`, checked; `DaianInputError` naming what is
    wrong (unset, not JSON, no worker list, a task that is not one of its workers)."""
    environ = os.environ if environ is None else environ
    raw = environ.get(TF_CONFIG)
    if not raw:
        raise DaianInputError(
            f"train.distribution is {MULTI_WORKER!r} but {TF_CONFIG} is not set: start "
            f"the workers with `daian train SAMPLES OUT --workers N` (N processes on "
            f"this machine), or set {TF_CONFIG} on every worker of a cluster "
            f"(docs/multi-worker.md)")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DaianInputError(f"{TF_CONFIG} is not valid JSON ({e}): {raw!r}") from None
    workers = (config.get("cluster") or {}).get("worker") if isinstance(config, dict) \
        else None
    if not isinstance(workers, list) or not workers:
        raise DaianInputError(f"{TF_CONFIG} must name the workers as "
                              f'{{"cluster": {{"worker": ["host:port", ...]}}, ...}}; '
                              f"got {raw!r}")
    extra = sorted(set(config["cluster"]) - {"worker"})
    if extra:
        raise DaianInputError(f"{TF_CONFIG}: only 'worker' tasks are supported (worker 0 "
                              f"is the chief); got cluster jobs {extra}")
    task = config.get("task") or {}
    index = task.get("index")
    if task.get("type") != "worker" or not isinstance(index, int) \
            or not 0 <= index < len(workers):
        raise DaianInputError(f'{TF_CONFIG}: task must be {{"type": "worker", "index": '
                              f"0..{len(workers) - 1}}}; got {task!r}")
    return WorkerSpec(index=index, workers=list(workers))


def _is_multi_worker(strategy) -> bool:
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())  # noqa: SLF001


def _local_values(strategy, structure):
    """Each `DistributedValues` of `structure` replaced by this worker's first replica's
    value."""
    return tf.nest.map_structure(
        lambda v: (strategy.experimental_local_results(v)[0]
                   if isinstance(v, tf.distribute.DistributedValues) else v),
        structure)


def _fix_keras_for_multi_worker() -> None:
    """Let Keras 3's `fit`/`evaluate` run under a multi-worker strategy (module
    docstring; keras #20585). Idempotent; other strategies are left as they were."""
    from keras.src.backend.tensorflow import trainer as tf_trainer

    trainer_cls = getattr(tf_trainer, "TensorFlowTrainer", None)
    if (trainer_cls is None or not hasattr(trainer_cls, "_maybe_symbolic_build")
            or not hasattr(tf_trainer, "reduce_per_replica")):
        raise RuntimeError(
            f"multi-worker training adapts Keras' TensorFlow trainer as of keras 3.12 "
            f"(TensorFlowTrainer._maybe_symbolic_build, reduce_per_replica); keras "
            f"{keras.__version__} differs: see daian_tf/training/multi_worker.py")
    if getattr(tf_trainer, "_daian_multi_worker_fix", False):
        return
    build = trainer_cls._maybe_symbolic_build
    reduce_per_replica = tf_trainer.reduce_per_replica

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None or not _is_multi_worker(self._distribute_strategy):
            return build(self, iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:  # one batch, read for its shapes and dtypes
            data_batch = _local_values(self.distribute_strategy, next(batches))
            break
        return build(self, iterator=None, data_batch=data_batch)

    def _reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and _is_multi_worker(strategy):
            return _local_values(strategy, values)  # the step's logs: this worker's
        return reduce_per_replica(values, strategy, reduction)

    trainer_cls._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = _reduce_per_replica
    tf_trainer._daian_multi_worker_fix = True


def strategy_for(train_cfg) -> Optional[tf.distribute.MultiWorkerMirroredStrategy]:
    """None for `train.distribution: single`; else this process's
    `MultiWorkerMirroredStrategy` over the workers of `TF_CONFIG`, created on the first
    call (which must come before any other TensorFlow op of the process)."""
    global _STRATEGY
    if train_cfg.distribution != MULTI_WORKER:
        return None
    if _STRATEGY is None:
        read_tf_config()  # a clear error before TensorFlow reads it
        _fix_keras_for_multi_worker()
        try:
            _STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:
            if "program startup" in str(e):
                raise RuntimeError(
                    "train.distribution is multi_worker, but this process ran TensorFlow "
                    "ops before its MultiWorkerMirroredStrategy was created; create it "
                    "first (training.multi_worker.strategy_for)") from e
            raise
    return _STRATEGY


def worker_index(strategy) -> int:
    """This worker's index (0: the chief); 0 without a strategy."""
    if strategy is None:
        return 0
    return int(strategy.cluster_resolver.task_id or 0)


def num_workers(strategy) -> int:
    """Workers in the strategy's cluster; 1 without a strategy."""
    if strategy is None:
        return 1
    return int(strategy.extended._num_workers)  # noqa: SLF001


def is_chief(strategy) -> bool:
    """Whether this process writes the run's outputs (worker 0, or no strategy)."""
    return worker_index(strategy) == 0


def check_batch_size(batch_size: int, workers: int) -> None:
    """`train.batch_size` is the global batch: it must split evenly over the workers."""
    if batch_size % workers:
        raise DaianInputError(
            f"train.batch_size ({batch_size}) must be divisible by the number of workers "
            f"({workers}): each worker takes batch_size / workers examples a step")


def distribute_dataset(strategy, make: Callable[..., tf.data.Dataset],
                       global_batch_size: int):
    """`make(shard=(workers, index), batch_size=per-worker batch)` on every worker, as a
    distributed dataset for `fit`/`evaluate` (module docstring); `make(shard=None,
    batch_size=global_batch_size)` without a strategy."""
    if strategy is None:
        return make(shard=None, batch_size=global_batch_size)
    check_batch_size(global_batch_size, num_workers(strategy))

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        ds = make(shard=(context.num_input_pipelines, context.input_pipeline_id),
                  batch_size=context.get_per_replica_batch_size(global_batch_size))
        # an unknown length: Keras then runs each epoch to the end of the data, which
        # tf.distribute ends on the same step on every worker; a known per-worker
        # length would have each worker stop at its own count, out of step
        return ds.filter(lambda *_: True)

    return strategy.distribute_datasets_from_function(dataset_fn)


def gather_rows(strategy, values: Sequence[float]) -> np.ndarray:
    """`(workers, len(values))`: row i holds worker i's `values` (float64), on every
    worker; one all-reduce, so every worker must call it at the same point."""
    n, i = num_workers(strategy), worker_index(strategy)
    rows = np.zeros((n, len(values)), np.float64)
    rows[i] = values
    rows /= len(strategy.extended.worker_devices)  # one copy a worker, not a replica
    return np.asarray(_sum_over_workers(strategy, tf.constant(rows)))


@tf.function
def _sum_over_workers(strategy, value: tf.Tensor) -> tf.Tensor:
    return strategy.reduce(tf.distribute.ReduceOp.SUM,
                           strategy.run(lambda: tf.identity(value)), axis=None)


class PeerFailed(RuntimeError):
    """Another worker failed a step that this one waited for (`barrier`)."""


def barrier(strategy, ok: bool, what: str) -> None:
    """Wait until every worker gets here; raise `PeerFailed` on every worker that came
    with `ok=True` when any came with `ok=False` (e.g. the chief failed `what`, and
    raises its own error)."""
    flags = gather_rows(strategy, [1.0 if ok else 0.0])[:, 0]
    failed = [i for i, flag in enumerate(flags) if flag < 0.5]
    if failed and ok:
        raise PeerFailed(f"worker {worker_index(strategy)}: worker(s) {failed} failed "
                         f"{what}; see their logs")


class ExampleCount(keras.metrics.Metric):
    """Examples seen (train) or scored (eval): with multi-worker training, read at an
    epoch's end it is the sum over all workers (each example once), and this worker's
    own count within a step's logs."""

    def __init__(self, name: str = EXAMPLES_METRIC, **kwargs):
        super().__init__(name=name, **kwargs)
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="int64",
                                       name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.count.assign_add(keras.ops.cast(keras.ops.shape(y_true)[0], "int64"))

    def result(self):
        # an op on the variable reads it as tf.distribute reads on-read variables: this
        # replica's value within a step, the sum over all replicas outside one
        # (`ops.convert_to_tensor` would sum within a step too)
        return keras.ops.cast(self.count, "float64")


class WorkerExamples(keras.callbacks.Callback):
    """This worker's train examples per epoch (`per_epoch`), from the `ExampleCount` of
    each step's logs (this worker's own running count under a multi-worker strategy)."""

    def __init__(self):
        super().__init__()
        self.per_epoch: List[int] = []
        self._last = None

    def on_epoch_begin(self, epoch, logs=None):
        self._last = None

    def on_train_batch_end(self, batch, logs=None):
        self._last = (logs or {}).get(EXAMPLES_METRIC, self._last)

    def on_epoch_end(self, epoch, logs=None):
        self.per_epoch.append(0 if self._last is None else int(np.asarray(self._last)))


def weights_digest(model: keras.Model) -> float:
    """A number that differs between two sets of weights (float64 sum of |w|): equal on
    every worker when the workers trained in step."""
    return float(sum(np.abs(np.asarray(w, np.float64)).sum() for w in model.get_weights()))


# ----------------------------------------------------------------------------------
# launching workers on this machine


class WorkerFailed(RuntimeError):
    """A worker started by `launch_local` exited with an error; the message names it,
    its exit code and the end of its log."""

    def __init__(self, message: str, index: int, returncode: int):
        super().__init__(message)
        self.index, self.returncode = index, returncode


def free_ports(count: int, host: str = "127.0.0.1") -> List[int]:
    """`count` distinct free TCP ports on `host` (bound and released)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(workers: Sequence[str], index: int) -> str:
    """The `TF_CONFIG` of worker `index` of `workers`."""
    return json.dumps({"cluster": {"worker": list(workers)},
                       "task": {"type": "worker", "index": index}})


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace").rstrip("\n").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _copy_lines(source, sinks) -> None:
    for line in iter(source.readline, b""):
        for sink in sinks:
            sink.write(line)
            sink.flush()


def _stop(procs: Sequence[subprocess.Popen], grace_s: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + grace_s
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch_local(command: Sequence[str], num_workers: int, log_dir: str,
                 env: Optional[dict] = None, host: str = "127.0.0.1",
                 echo_chief: bool = True, grace_s: float = 5.0,
                 tail_lines: int = 25) -> None:
    """Run `command` as `num_workers` processes on this machine, worker i with the
    `TF_CONFIG` of a cluster of free ports on `host`, and wait for all of them.

    Worker i writes its output to `log_dir/worker-<i>.log`; with `echo_chief`, a line
    names the workers and the chief's output (worker 0) is also copied to this
    process's stdout as it comes. When a worker exits with an
    error, the others get `grace_s` seconds to end on their own (they fail too when
    they wait on it), then are stopped.

    Raises:
        WorkerFailed: a worker exited with an error; the message names each worker
            that failed with its exit code and the last `tail_lines` of its log, and
            the workers that were stopped.
    """
    if num_workers < 1:
        raise DaianInputError(f"--workers must be >= 1, got {num_workers}")
    logs = Path(log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    workers = [f"{host}:{p}" for p in free_ports(num_workers, host)]
    paths = [logs / WORKER_LOG.format(index=i) for i in range(num_workers)]
    if echo_chief:
        print(f"multi-worker: {num_workers} workers on this machine "
              f"({', '.join(workers)}); logs: {logs}/{WORKER_LOG.format(index='<i>')}; "
              f"the chief (worker 0) prints here", flush=True)
    procs: List[subprocess.Popen] = []
    files, threads = [], []
    try:
        for i in range(num_workers):
            worker_env = dict(os.environ if env is None else env)
            worker_env[TF_CONFIG] = tf_config(workers, i)
            log = open(paths[i], "wb")
            files.append(log)
            if i == 0 and echo_chief:
                p = subprocess.Popen(list(command), env=worker_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                t = threading.Thread(target=_copy_lines,
                                     args=(p.stdout, [log, sys.stdout.buffer]),
                                     daemon=True)
                t.start()
                threads.append(t)
            else:
                p = subprocess.Popen(list(command), env=worker_env, stdout=log,
                                     stderr=subprocess.STDOUT)
            procs.append(p)
        while True:
            codes = [p.poll() for p in procs]
            if all(c == 0 for c in codes):
                return
            if any(c not in (None, 0) for c in codes):
                break
            time.sleep(0.2)
        deadline = time.time() + grace_s  # let the others end on their own first
        while time.time() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.2)
        codes = [p.poll() for p in procs]
        stopped = [i for i, c in enumerate(codes) if c is None]
        _stop(procs, grace_s)
    except BaseException:
        _stop(procs, grace_s)
        raise
    finally:
        for t in threads:
            t.join(timeout=5)
        for f in files:
            f.close()
    failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
    parts = [f"worker {i} of {num_workers}{' (the chief)' if i == 0 else ''} failed "
             f"(exit code {c}); the end of {paths[i]}:\n{_tail(paths[i], tail_lines)}"
             for i, c in failed]
    if stopped:
        parts.append(f"worker(s) {stopped} were still running and were stopped")
    raise WorkerFailed("\n\n".join(parts), failed[0][0], failed[0][1])
