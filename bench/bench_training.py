"""Benchmark: training throughput of our models against the lean DIN probe, side by side.

For each batch size, in separate subprocesses (so that peak memory is per run):
- ours: `model.fit` through the full data path (gzipped transformed TFRecords →
  `daian_tf.data.dataset.make_dataset` → the Keras 3 model of `configs/base.yaml`), one
  epoch after a 20-step warm-up, as `fit_model` trains it;
- the reference: `../shared/bench/lean_din.py` (a lean Keras 3 DIN on in-memory random
  arrays) with the same number of samples, batch, sequence length and table sizes.
Prints a markdown table: samples/s, peak RSS, and the ratio ours / lean.

The data: a simulated world (`--scale`), built with the Beam sample builder and
transformed with `preprocessing_fn` (tft_beam) under `--workdir`, reused when present.

usage: python bench/bench_training.py [--batches 1024 4096] [--scale 1]
       [--workdir /tmp/daian_bench_training] [--lean ../shared/bench/lean_din.py]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_LEAN = REPO.parent / "shared" / "bench" / "lean_din.py"


def prepare(workdir: Path, scale: float) -> dict:
    """Simulate, build samples and transform once; returns paths and sizes."""
    from daian_tf.data.sample_builder import run_build_samples
    from daian_tf.data.simulator import simulate
    from daian_tf.training.config import load_config
    from daian_tf.training.trainer import transform_samples

    meta = workdir / "data.json"
    if meta.exists():
        return json.loads(meta.read_text())
    cfg = load_config(REPO / "configs" / "base.yaml")
    raw, samples = workdir / "raw", workdir / "samples"
    simulate(str(raw), cfg.simulation.scaled(scale))
    report = run_build_samples(str(raw), str(samples), cfg.samples)
    paths = transform_samples(str(samples), str(workdir / "t"), cfg,
                              report["sim_range"])
    info = {**paths, "train_samples": report["splits"]["train"]["samples"]}
    meta.write_text(json.dumps(info))
    return info


def run_ours(info: dict, batch: int) -> dict:
    """One measured epoch of `model.fit` on the transformed data (in this process)."""
    import keras
    import tensorflow as tf
    import tensorflow_transform as tft

    from daian_tf.data.dataset import make_dataset
    from daian_tf.training.config import load_config
    from daian_tf.training.trainer import build_model, input_names
    from daian_tf.data.transform import vocab_sizes

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    cfg = load_config(REPO / "configs" / "base.yaml")
    tft_out = tft.TFTransformOutput(info["transform_output"])
    model = build_model(cfg, tft_out)
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    ds = make_dataset(info["train"], tft_out, batch, shuffle=True, seed=0,
                      input_keys=input_names(model))
    model.fit(ds.take(20), verbose=0)  # warm-up: tracing and allocation
    start = time.time()
    model.fit(ds, epochs=1, verbose=0)
    seconds = time.time() - start
    sizes = vocab_sizes(tft_out, tuple(cfg.samples.user_columns))
    return {"samples_per_s": info["train_samples"] / seconds, "seconds": seconds,
            "params": int(model.count_params()), "vocab_sizes": sizes}


def _run(cmd) -> dict:
    """Run `cmd` in a subprocess; its last JSON line plus the tree's peak RSS."""
    from bench_sample_builder import measure  # this folder: the same RSS polling

    m = measure(cmd)
    lines = [line for line in m["stdout"].splitlines() if line.startswith("{")]
    return {**json.loads(lines[-1]), "peak_rss_mib": m["peak_rss_mib"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--workdir", default="/tmp/daian_bench_training")
    ap.add_argument("--lean", default=str(DEFAULT_LEAN))
    ap.add_argument("--_ours", type=int, help=argparse.SUPPRESS)  # worker modes
    ap.add_argument("--_prepare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args._prepare or args._ours:
        info = prepare(workdir, args.scale)
        if args._ours:
            print(json.dumps(run_ours(info, args._ours)), flush=True)
        return
    # data preparation (Beam, tft) in its own process, so that no runner thread of it
    # is left in this one while the measured runs go
    subprocess.run([sys.executable, __file__, "--workdir", str(workdir), "--scale",
                    str(args.scale), "--_prepare"], check=True)
    info = json.loads((workdir / "data.json").read_text())

    rows = []
    for batch in args.batches:
        ours = _run([sys.executable, __file__, "--workdir", str(workdir),
                            "--_ours", str(batch)])
        sizes = ours["vocab_sizes"]
        lean = _run([
            sys.executable, args.lean, "--samples", str(info["train_samples"]),
            "--batch", str(batch), "--items", str(sizes["item"]),
            "--categories", str(sizes["category"]), "--users", str(sizes["user_id"]),
            "--dim", "16"])
        rows.append((batch, ours, lean))
        print(f"done: batch {batch}", file=sys.stderr, flush=True)

    print(f"train samples: {info['train_samples']}; machine: {os.cpu_count()} CPUs")
    print("| batch | ours samples/s | lean samples/s | ratio | ours peak RSS MiB | "
          "lean peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for batch, ours, lean in rows:
        print(f"| {batch} | {ours['samples_per_s']:,.0f} | {lean['samples_per_s']:,.0f} "
              f"| {ours['samples_per_s'] / lean['samples_per_s']:.2f} | "
              f"{ours['peak_rss_mib']:,.0f} | {lean['peak_rss_mib']:,.0f} |")


if __name__ == "__main__":
    main()
