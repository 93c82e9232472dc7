"""Benchmark: the sample builder against the leanest Beam join, on the same raw logs.

For each scale (the simulator's `num_users` multiplier: 1 gives about 100k impressions,
10 about 1M) and each runner setting (`--settings`; default all: the DirectRunner with 1
worker and with 2 workers, multi_processing; Beam's FlinkRunner with Flink embedded in
the job server's JVM, `--flink_master=[local]`, LOOPBACK workers, parallelism 1 and 2,
on the job server scripts/setup_flink.sh stages), run

- the builder: `python -m daian_tf.cli build-samples RAW OUT [beam args]` (base config);
- the reference: `../shared/bench/lean_beam_join.py RAW [beam args]` (join + history
  cut only, writes nothing),

each in its own subprocess, measuring wall time, impressions/s and peak RSS of the whole
process tree (psutil, polled every 0.1 s, summed over the process and its children, so
multi-processing workers and the Flink job server's JVM count). Prints a markdown table
with builder/lean ratios. The lean probe knows nothing of the staged job server, so on
Flink it gets `--flink_job_server_jar` and `--flink_version` explicitly.

usage: python bench/bench_sample_builder.py [--scales 1 10] [--workdir /tmp/daian_bench]
       [--lean ../shared/bench/lean_beam_join.py] [--settings direct1 flink2 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Sequence

import psutil

_FLINK = ["--runner=FlinkRunner", "--flink_master=[local]", "--environment_type=LOOPBACK"]
# name -> (label, Beam arguments)
RUNNER_SETTINGS = {
    "direct1": ("Direct, 1 worker", ["--direct_num_workers=1"]),
    "direct2": ("Direct, 2 workers (multi_processing)",
                ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]),
    "flink1": ("Flink [local], parallelism 1", _FLINK + ["--parallelism=1"]),
    "flink2": ("Flink [local], parallelism 2", _FLINK + ["--parallelism=2"]),
}


def lean_args(beam_args: List[str]) -> List[str]:
    """The lean probe's arguments: on Flink, the staged job server named explicitly."""
    if "--runner=FlinkRunner" not in beam_args:
        return list(beam_args)
    from daian_tf.data import beam_runners

    jar = beam_runners.flink_job_server_jar()
    if jar is None:
        raise SystemExit("the Flink rows need the staged job server: "
                         f"bash {beam_runners.SETUP_SCRIPT}")
    return list(beam_args) + [f"--flink_job_server_jar={jar}",
                              f"--flink_version={beam_runners.FLINK_VERSION}"]


def measure(cmd: Sequence[str], poll_s: float = 0.1,
            timeout_s: float | None = None) -> Dict[str, float]:
    """Run `cmd`; return wall seconds, the peak summed RSS (MiB) of its tree, and the
    peak RSS of the tree's JVMs alone (a Flink job server; 0 without one). After
    `timeout_s` the whole tree is killed and RuntimeError raised (a Flink run can hang:
    docs/beam-on-flink.md)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    root = psutil.Process(proc.pid)
    peak = peak_jvm = 0
    while proc.poll() is None:
        try:
            tree = [root] + root.children(recursive=True)
            peak = max(peak, sum(_rss(p) for p in tree))
            peak_jvm = max(peak_jvm, sum(_rss(p) for p in tree if _name(p) == "java"))
            if timeout_s is not None and time.perf_counter() - start > timeout_s:
                for p in reversed(tree):
                    p.kill()
                proc.wait()
                raise RuntimeError(f"{' '.join(cmd)}: no result within {timeout_s:.0f} s "
                                   f"(killed; peak RSS {peak / 2**20:,.0f} MiB)")
        except psutil.NoSuchProcess:
            pass
        time.sleep(poll_s)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                           f"{err.decode()[-3000:]}")
    return {"seconds": wall, "peak_rss_mib": peak / 2**20,
            "peak_jvm_rss_mib": peak_jvm / 2**20, "stdout": out.decode()}


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def _rss(p: psutil.Process) -> int:
    try:
        return p.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


def ensure_raw(workdir: str, scale: float) -> str:
    """Simulate the raw logs of `scale` once (same seed as the CLI's default)."""
    from daian_tf.data.simulator import simulate
    from daian_tf.core.config import SimulationConfig

    raw = os.path.join(workdir, f"raw_scale{scale:g}")
    if not os.path.exists(os.path.join(raw, "impressions.csv")):
        base = SimulationConfig()
        simulate(raw, dataclasses.replace(base, num_users=int(base.num_users * scale)))
    return raw


def count_rows(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f) - 1


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 10.0])
    ap.add_argument("--workdir", default="/tmp/daian_bench")
    ap.add_argument("--lean", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench",
        "lean_beam_join.py"), help="the reference probe (default: ../shared/bench/)")
    ap.add_argument("--settings", nargs="+", choices=sorted(RUNNER_SETTINGS),
                    default=list(RUNNER_SETTINGS), help="runner settings to measure "
                    "(default: all)")
    args = ap.parse_args(argv)

    rows = []
    for scale in args.scales:
        raw = ensure_raw(args.workdir, scale)
        n_imp = count_rows(os.path.join(raw, "impressions.csv"))
        for name in args.settings:
            label, beam_args = RUNNER_SETTINGS[name]
            out = os.path.join(args.workdir, f"samples_scale{scale:g}_{len(rows)}")
            builder = measure([sys.executable, "-m", "daian_tf.cli", "build-samples",
                               raw, out, *beam_args])
            lean = measure([sys.executable, args.lean, raw, *lean_args(beam_args)])
            report = json.load(open(os.path.join(out, "report.json")))
            samples = sum(s["samples"] for s in report["splits"].values())
            rows.append((scale, n_imp, samples, label, builder, lean))
            print(f"done: scale {scale:g}, {label}: builder {builder['seconds']:.1f} s, "
                  f"lean {lean['seconds']:.1f} s", file=sys.stderr, flush=True)

    print("| impressions | runner | builder s | lean s | ratio | builder imp/s | "
          "lean imp/s | builder peak RSS MiB | lean peak RSS MiB | RSS ratio |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for scale, n_imp, samples, label, b, l in rows:
        print(f"| {n_imp:,} | {label} | {b['seconds']:.1f} | {l['seconds']:.1f} | "
              f"{b['seconds'] / l['seconds']:.2f} | {n_imp / b['seconds']:,.0f} | "
              f"{n_imp / l['seconds']:,.0f} | {b['peak_rss_mib']:,.0f} | "
              f"{l['peak_rss_mib']:,.0f} | {b['peak_rss_mib'] / l['peak_rss_mib']:.2f} |")
    print(f"\n(builder samples written: {', '.join(str(r[2]) for r in rows)}; machine: "
          f"{os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
