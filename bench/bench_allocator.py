"""Benchmark: `rank` with glibc's default malloc against `keep_freed_memory`, side by side.

Each round runs one subprocess per setting (`DAIAN_KEEP_FREED_MEMORY=0` and the
default, which keeps freed memory: daian_tf/core/allocator.py), in turn. A subprocess
loads the SavedModel's `rank` signature, takes one context and N candidates from the
examples file (as `serving.load_test` does), warms up, then calls it `--calls` times
per N and reports, from `resource.getrusage` around the calls, the minor page faults
and the system and user CPU time a call, and the median wall time of a call. Prints a
markdown table of the medians over the rounds.

usage: python bench/bench_allocator.py --model-dir runs/quickstart/pipeline/serving \\
       --examples EVAL.tfrecord.gz [--candidates 1 200 500] [--calls 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETTINGS = (("glibc default", "0"), ("keep_freed_memory", "1"))

WORKER = """
import json, os, resource, statistics, sys, time
from daian_tf.core.allocator import keep_freed_memory
keep_freed_memory()
import tensorflow as tf
from serving.load_test import _latest, candidate_example, read_examples
model_dir, examples, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
sizes = [int(n) for n in sys.argv[4:]]
loaded = tf.saved_model.load(f"{model_dir}/{_latest(model_dir)}")
rank = loaded.signatures["rank"]
pool = read_examples(examples, limit=max(sizes) + 1)
rows = {}
for n in sizes:
    arguments = dict(context=tf.constant(pool[:1]), candidates=tf.constant(
        [candidate_example(c) for c in pool[1:n + 1]]))
    for _ in range(10):
        rank(**arguments)
    before, times = resource.getrusage(resource.RUSAGE_SELF), []
    for _ in range(calls):
        start = time.perf_counter()
        rank(**arguments)["ctr"].numpy()
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    rows[n] = {"faults": (after.ru_minflt - before.ru_minflt) / calls,
               "sys_ms": (after.ru_stime - before.ru_stime) / calls * 1e3,
               "user_ms": (after.ru_utime - before.ru_utime) / calls * 1e3,
               "p50_ms": statistics.median(times) * 1e3}
print(json.dumps(rows))
"""


def run(args, switch: str) -> dict:
    env = {**os.environ, "DAIAN_KEEP_FREED_MEMORY": switch, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                       os.environ.get("PYTHONPATH")]))}
    env.pop("GLIBC_TUNABLES", None)
    out = subprocess.run([sys.executable, "-c", WORKER, args.model_dir, args.examples,
                          str(args.calls), *map(str, args.candidates)],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"worker failed:\n{out.stderr[-3000:]}")
    return {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True, help="a base path of versions")
    ap.add_argument("--examples", required=True, help="TFRecord file of examples")
    ap.add_argument("--candidates", type=int, nargs="+", default=[1, 200, 500])
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    results = {name: [] for name, _ in SETTINGS}
    for r in range(args.rounds):
        for name, switch in SETTINGS:
            results[name].append(run(args, switch))
            print(f"round {r + 1}/{args.rounds}: {name} done", flush=True)
    print("\n| candidates | malloc | minor faults/call | sys ms/call | user ms/call | "
          "p50 ms (rounds) |")
    print("|---:|---|---:|---:|---:|---|")
    for n in args.candidates:
        for name, _ in SETTINGS:
            rows = [result[n] for result in results[name]]
            median = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
            each = ", ".join(f"{row['p50_ms']:.2f}" for row in rows)
            print(f"| {n} | {name} | {median['faults']:,.1f} | {median['sys_ms']:.2f} | "
                  f"{median['user_ms']:.2f} | {median['p50_ms']:.2f} ({each}) |")


if __name__ == "__main__":
    main()
