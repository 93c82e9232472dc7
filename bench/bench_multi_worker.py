"""Benchmark: DIN's `fit_model` in one process and with MultiWorkerMirroredStrategy in 1
and 2 worker processes on this machine, on the same data, side by side.

Rows (each run in fresh processes, `--repeats` rounds, the rows interleaved in each):
- `single`: `train.distribution: single`, one process, no strategy;
- `workers=N`: `train.distribution: multi_worker`, N processes started by
  `training.multi_worker.launch_local` (the route of `daian train --workers N`), each
  reading its shard of the transformed TFRecords.
Each row reports, measured in the chief: the wall time of the fit (all epochs, with each
epoch's evaluation), the training throughput (train examples of an epoch / seconds of the
epoch's training phase, from its first step to its evaluation, over the epochs after the
first, which traces the step functions), and each worker's train examples per epoch.

The data: a simulated world (`--scale` × the quick-start world), built with the Beam
sample builder and transformed once under `--workdir`, reused when present.
The model: DIN of the packaged default config, `--epochs`, global batch `--batch`.

usage: python bench/bench_multi_worker.py [--workers 1 2] [--scale 0.5] [--epochs 3]
       [--batch 256] [--repeats 2] [--workdir /tmp/daian_bench_multi_worker]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_training import prepare  # this folder: the same cached world

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def worker(job: dict, result_path: str) -> None:
    """One worker of a row (run by `launch_local`, or alone for `single`)."""
    from daian_tf.core.config import DEFAULT_CONFIG_FILE, load_config
    from daian_tf.training import multi_worker as mw

    cfg = load_config(DEFAULT_CONFIG_FILE, overrides={
        "model": {"name": "din"},
        "train": {"epochs": job["epochs"], "batch_size": job["batch"],
                  "distribution": job["distribution"]}})
    strategy = mw.strategy_for(cfg.train)  # before any other TensorFlow op
    import keras
    import tensorflow_transform as tft

    from daian_tf.training.fit import fit_model

    class EpochTimer(keras.callbacks.Callback):
        """Seconds of each epoch's training phase (first step to evaluation)."""

        def __init__(self):
            super().__init__()
            self.train_s, self._start = [], None

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_test_begin(self, logs=None):
            if self._start is not None:
                self.train_s.append(time.perf_counter() - self._start)
                self._start = None

    info = job["info"]
    timer = EpochTimer()
    tfo = tft.TFTransformOutput(info["transform_output"])
    start = time.perf_counter()
    _, history = fit_model(cfg, tfo, info["train"], info["eval"], verbose=0,
                           callbacks=[timer])
    fit_s = time.perf_counter() - start
    if not mw.is_chief(strategy):
        return
    n = info["train_samples"]
    later = timer.train_s[1:] or timer.train_s
    workers = history.get(mw.WORKERS_KEY, {})
    result = {"fit_s": fit_s, "epochs": len(timer.train_s),
              "fit_samples_per_s": n * len(timer.train_s) / fit_s,
              "train_samples_per_s": n / statistics.median(later),
              "val_auc": history["val_auc"][-1],
              "per_worker": {k: v[0] for k, v in workers.items()
                             if k.startswith("train_examples")}}
    Path(result_path).write_text(json.dumps(result))


def run_row(name: str, workers: int, job: dict, workdir: Path) -> dict:
    """One measured run of a row, in fresh processes."""
    from daian_tf.training.multi_worker import launch_local

    result = Path(tempfile.mkdtemp(dir=workdir)) / "result.json"
    job = {**job, "distribution": "single" if workers == 0 else "multi_worker"}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker",
               json.dumps(job), str(result)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                       if p]))
    if workers == 0:
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    else:
        launch_local(command, workers, str(result.parent), env=env, echo_chief=False)
    return json.loads(result.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/daian_bench_multi_worker")
    ap.add_argument("--worker", nargs=2, metavar=("JOB", "RESULT"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker[0]), args.worker[1])
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    info = prepare(workdir, args.scale)
    print(f"data: {info['train_samples']:,} train / {info['eval_samples']:,} eval "
          f"examples ({time.time() - start:.0f} s); DIN, {args.epochs} epochs, global "
          f"batch {args.batch}; {os.cpu_count()} cores", flush=True)
    job = {"info": info, "epochs": args.epochs, "batch": args.batch}
    rows = [("single", 0)] + [(f"workers={n}", n) for n in args.workers]
    results = {name: [] for name, _ in rows}
    for round_ in range(args.repeats):
        for name, n in rows:
            r = run_row(name, n, job, workdir)
            results[name].append(r)
            print(f"round {round_ + 1} {name}: fit {r['fit_s']:.1f} s, train "
                  f"{r['train_samples_per_s']:,.0f} samples/s, per worker "
                  f"{r['per_worker'] or '-'}, val AUC {r['val_auc']:.4f}", flush=True)
    print("\n| run | fit s (median) | samples/s, fit | samples/s, training phase "
          "(range) | train examples per worker and epoch | val AUC |")
    print("|---|---:|---:|---:|---|---:|")
    for name, _ in rows:
        rs = results[name]
        fit = statistics.median(r["fit_s"] for r in rs)
        fit_rate = statistics.median(r["fit_samples_per_s"] for r in rs)
        rates = [r["train_samples_per_s"] for r in rs]
        per_worker = ", ".join(f"{int(v):,}" for v in rs[0]["per_worker"].values()) or \
            f"{info['train_samples']:,}"
        print(f"| {name} | {fit:.1f} | {fit_rate:,.0f} | {statistics.median(rates):,.0f} "
              f"({min(rates):,.0f}–{max(rates):,.0f}) | {per_worker} | "
              f"{statistics.median(r['val_auc'] for r in rs):.4f} |")


if __name__ == "__main__":
    main()
