"""Benchmark: training throughput of our models against the lean DIN probe, side by side.

For each batch size, each row runs in its own subprocess (so that peak RSS is per run):
- `lean`: `../shared/bench/lean_din.py`, a lean Keras 3 DIN on in-memory random arrays,
  with the same number of samples, batch, sequence length, table sizes and dim;
- `<model> full/<input>`: `model.fit`, one epoch after a 20-step warm-up, through the
  full data path: gzipped transformed TFRecords → `make_dataset` (shuffled, seed 0) →
  the Keras 3 model `<model>` (any registered name) of the packaged default config
  (`models.factory.build_model`), with its intent loss when it has one, as `fit_model`
  fits it (`training.multitask.with_intent_loss`); `<input>` is
  `stream` (parsed every epoch, examples shuffled in a buffer), `stream-request` (the
  default: the same, whole requests shuffled, so that a batch holds each of its
  requests' candidates and DAIAN's request side runs once per request), `memory` or
  `memory-request` (parsed once into memory, examples or requests fully shuffled);
- `daian-every-row`: DAIAN with `model.request_dedup` off (the request side computed
  for every sample), to show what computing it once per request buys;
- `input-only/<input>`: one epoch of `make_dataset` alone, no model;
- `din-matched`: our DIN with the probe's attention MLP (64,) instead of (64, 32),
  which isolates part of the architecture difference (our DIN still has more inputs:
  brand, shop, price and profile embeddings, and 3D-wide attention keys);
- `--jit` adds `din full/memory+jit` (`compile(jit_compile=True)`) and `lean+jit`.
The data loading of `cache="memory"` (one parse of the split) happens before the timed
epoch, as it happens once per training run; its time is reported as `load s`.
Every row runs `--repeats` times, in interleaved rounds (this machine has slow spells:
the probe alone measured 16.7k, 17.0k and 8.6k samples/s in three back-to-back runs).
Prints a markdown table: the median samples/s with its range, the ratio of the medians
to the lean probe's of the same batch, peak RSS.

The data: a simulated world (`--scale`), built with the Beam sample builder and
transformed with `preprocessing_fn` (tft_beam) under `--workdir`, reused when present
(delete the folder after changing the transform).

usage: python bench/bench_training.py [--models din [daian dupn ...]] [--batches 1024 4096]
       [--inputs stream-request memory-request ...] [--runs MODEL/INPUT ...]
       [--matched] [--jit] [--scale 1] [--repeats 3]
       [--workdir /tmp/daian_bench_training] [--lean ../shared/bench/lean_din.py]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from daian_tf.core.names import MODEL_NAMES  # no TensorFlow import

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_LEAN = REPO.parent / "shared" / "bench" / "lean_din.py"
WARMUP_STEPS = 20
MATCHED = "din-matched"  # DIN with the probe's attention MLP
EVERY_ROW = "daian-every-row"  # DAIAN without model.request_dedup
# input mode -> make_dataset's (cache, shuffle_unit)
INPUTS = {"stream": ("none", "example"), "stream-request": ("none", "request"),
          "memory": ("memory", "example"), "memory-request": ("memory", "request")}


def prepare(workdir: Path, scale: float) -> dict:
    """Simulate, build samples and transform once; returns paths and sizes."""
    from daian_tf.core.config import DEFAULT_CONFIG_FILE, load_config
    from daian_tf.data.sample_builder import run_build_samples
    from daian_tf.data.simulator import simulate
    from daian_tf.data.transform_beam import transform_samples

    meta = workdir / "data.json"
    if meta.exists():
        info = json.loads(meta.read_text())
        if {"raw", "sim_range", "eval_samples"} <= set(info):  # else: an older version
            return info
    cfg = load_config(DEFAULT_CONFIG_FILE)
    raw, samples = workdir / "raw", workdir / "samples"
    simulate(str(raw), cfg.simulation.scaled(scale))
    report = run_build_samples(str(raw), str(samples), cfg.samples)
    paths = transform_samples(str(samples), str(workdir / "t"), cfg,
                              report["sim_range"])
    info = {**paths, "train_samples": report["splits"]["train"]["samples"],
            "eval_samples": report["splits"]["eval"]["samples"],
            "raw": str(raw), "sim_range": report["sim_range"]}
    meta.write_text(json.dumps(info))
    return info


def _build(name: str, info: dict, tft_out):
    """The model `name` (a registered model, MATCHED or EVERY_ROW) as `fit_model` fits it
    (with its intent loss when it has one) and its input keys."""
    from daian_tf.core.config import DEFAULT_CONFIG_FILE, load_config
    from daian_tf.data.transform import vocab_sizes as table_sizes
    from daian_tf.models import serving_input_keys
    from daian_tf.models.factory import build_model
    from daian_tf.training.multitask import with_intent_loss
    from daian_tf.workflows import catalog_for

    cfg = load_config(DEFAULT_CONFIG_FILE)
    model_name = {MATCHED: "din", EVERY_ROW: "daian"}.get(name, name)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, name=model_name, request_dedup=name != EVERY_ROW))
    if name == MATCHED:
        cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, attention_units=(64,)))
    # DAIAN as it is: the joint step (stage 3 with one optimizer)
    model = with_intent_loss(build_model(
        cfg, table_sizes(tft_out, tuple(cfg.samples.user_columns)),
        sim_range=info["sim_range"], catalog=catalog_for(cfg, info["raw"])))
    return model, serving_input_keys(model)


def run_ours(info: dict, job: dict) -> dict:
    """One measured run (in this process) of `job`: {model, batch, part, input, jit}."""
    import keras
    import tensorflow as tf
    import tensorflow_transform as tft

    from daian_tf.data.dataset import make_dataset

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    keras.utils.set_random_seed(0)
    tft_out = tft.TFTransformOutput(info["transform_output"])
    model, keys = _build(job["model"], info, tft_out)
    batch, n = job["batch"], info["train_samples"]
    start = time.time()
    ds = make_dataset(info["train"], tft_out, batch, shuffle=True, seed=0,
                      input_keys=keys, cache=INPUTS[job["input"]][0],
                      shuffle_unit=INPUTS[job["input"]][1])
    load_s = time.time() - start
    result = {"load_s": round(load_s, 2)}
    if job["part"] == "input":
        for _ in ds.take(5):
            pass
        start, seen = time.time(), 0
        for _, label in ds:
            seen += int(label.shape[0])
        return {**result, "samples_per_s": seen / (time.time() - start)}
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(),
                  jit_compile=job["jit"])
    model.fit(ds.take(WARMUP_STEPS), verbose=0)  # tracing and allocation
    start = time.time()
    model.fit(ds, epochs=1, verbose=0)
    seconds = time.time() - start
    return {**result, "samples_per_s": n / seconds, "seconds": seconds,
            "params": int(model.count_params())}


def _run(cmd) -> dict:
    """Run `cmd` in a subprocess; its last JSON line plus the tree's peak RSS, or
    {"error": ...} if it failed."""
    from bench_sample_builder import measure  # this folder: the same RSS polling

    try:
        m = measure(cmd)
    except RuntimeError as e:
        return {"error": str(e).strip().splitlines()[-1][:120]}
    lines = [line for line in m["stdout"].splitlines() if line.startswith("{")]
    return {**json.loads(lines[-1]), "peak_rss_mib": m["peak_rss_mib"]}


def _jobs(args) -> list:
    """(row label, job) for each of our runs of one batch size (batch filled later):
    `--runs MODEL/INPUT ...` as given, else every model with every input."""
    pairs = ([tuple(r.split("/")) for r in args.runs] if args.runs
             else [(m, i) for m in args.models for i in args.inputs])
    inputs = list(dict.fromkeys(i for _, i in pairs))
    jobs = [(f"{model} full/{mode}",
             {"model": model, "part": "full", "input": mode, "jit": False})
            for model, mode in pairs]
    models = {m for m, _ in pairs}
    if "din" in models and args.matched:
        jobs.append((f"{MATCHED} full/{inputs[0]}",
                     {"model": MATCHED, "part": "full", "input": inputs[0],
                      "jit": False}))
    if "din" in models and args.jit:
        jobs.append(("din full/memory+jit",
                     {"model": "din", "part": "full", "input": "memory", "jit": True}))
    reader = "daian" if models & {"daian", EVERY_ROW} else "din"  # DAIAN reads more
    for mode in inputs:
        jobs.append((f"input-only/{mode} ({reader}'s features)",
                     {"model": reader, "part": "input", "input": mode, "jit": False}))
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["din"],
                    choices=[*MODEL_NAMES, EVERY_ROW])
    ap.add_argument("--batches", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--inputs", nargs="+", default=["stream-request", "memory-request"],
                    choices=list(INPUTS))
    ap.add_argument("--runs", nargs="+", metavar="MODEL/INPUT",
                    help="these rows instead of every model with every input, e.g. "
                         "daian/stream-request daian-every-row/stream")
    ap.add_argument("--matched", action="store_true",
                    help=f"also the {MATCHED} row (DIN with the probe's attention MLP)")
    ap.add_argument("--jit", action="store_true", help="also rows with jit_compile")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs of each row, interleaved; the table shows the median")
    ap.add_argument("--workdir", default="/tmp/daian_bench_training")
    ap.add_argument("--lean", default=str(DEFAULT_LEAN))
    ap.add_argument("--_ours", help=argparse.SUPPRESS)  # worker mode: a job as JSON
    ap.add_argument("--_prepare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args._prepare or args._ours:
        info = prepare(workdir, args.scale)
        if args._ours:
            print(json.dumps(run_ours(info, json.loads(args._ours))), flush=True)
        return
    # data preparation (Beam, tft) in its own process, so that no runner thread of it
    # is left in this one while the measured runs go
    subprocess.run([sys.executable, __file__, "--workdir", str(workdir), "--scale",
                    str(args.scale), "--_prepare"], check=True)
    info = json.loads((workdir / "data.json").read_text())

    rows = []
    for batch in args.batches:
        runs = [(label, [sys.executable, __file__, "--workdir", str(workdir),
                         "--_ours", json.dumps({**job, "batch": batch})])
                for label, job in _jobs(args)]
        sizes = vocab_sizes(info)
        lean_cmd = [sys.executable, args.lean, "--samples", str(info["train_samples"]),
                    "--batch", str(batch), "--items", str(sizes["item"]),
                    "--categories", str(sizes["category"]),
                    "--users", str(sizes["user_id"]), "--dim", "16"]
        runs.insert(0, ("lean", lean_cmd))
        if args.jit:
            runs.insert(1, ("lean+jit", lean_cmd + ["--jit"]))
        results = {label: [] for label, _ in runs}
        for round_ in range(args.repeats):  # rounds, so that slow spells hit every row
            for label, cmd in runs:
                res = _run(cmd)
                results[label].append(res)
                print(f"done: batch {batch} round {round_} {label}: "
                      f"{res.get('samples_per_s', res)}", file=sys.stderr, flush=True)
        rows += [(batch, label, results[label], results["lean"]) for label, _ in runs]

    print(f"train samples: {info['train_samples']}; machine: {os.cpu_count()} CPUs; "
          f"TF threads: 2 intra-op, 2 inter-op; median of {args.repeats} runs "
          f"(range in brackets)")
    print("| batch | run | samples/s | / lean | load s | peak RSS MiB |")
    print("|---:|---|---:|---:|---:|---:|")
    for batch, label, results, lean in rows:
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            print(f"| {batch} | {label} | failed: {errors[0]} | | | |")
            continue
        speeds = sorted(r["samples_per_s"] for r in results)
        median = statistics.median(speeds)
        ratio = median / statistics.median(r["samples_per_s"] for r in lean)
        load_s = statistics.median(r.get("load_s", 0) for r in results)  # none: lean
        print(f"| {batch} | {label} | {median:,.0f} [{speeds[0]:,.0f}–{speeds[-1]:,.0f}] "
              f"| {ratio:.2f} | {load_s:.1f} "
              f"| {max(r['peak_rss_mib'] for r in results):,.0f} |")


def vocab_sizes(info: dict) -> dict:
    """Rows of the item, category and user tables of the transformed data (the lean
    probe gets the same sizes)."""
    import tensorflow_transform as tft

    from daian_tf.core.config import DEFAULT_CONFIG_FILE, load_config
    from daian_tf.data.transform import vocab_sizes as sizes

    cfg = load_config(DEFAULT_CONFIG_FILE)
    return sizes(tft.TFTransformOutput(info["transform_output"]),
                 tuple(cfg.samples.user_columns))

if __name__ == "__main__":
    main()
