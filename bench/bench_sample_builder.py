"""Benchmark: the sample builder against the leanest Beam join, on the same raw logs.

For each scale (the simulator's `num_users` multiplier: 1 gives about 100k impressions,
10 about 1M) and each runner setting (`--settings`; default all: the DirectRunner with 1
worker and with 2 workers, multi_processing; Beam's FlinkRunner with Flink embedded in
the job server's JVM, `--flink_master=[local]`, LOOPBACK workers, at the builder's
defaults and at parallelism 1 and 2, on the job server scripts/setup_flink.sh stages),
run

- the builder: `python -m daian_tf.cli build-samples RAW OUT [beam args]` (base config);
- the reference: `../shared/bench/lean_beam_join.py RAW [beam args]` (join + history
  cut only, writes nothing),

each in its own subprocess, measuring wall time, impressions/s and peak RSS of the whole
process tree (psutil, polled every 0.1 s, summed over the process and its children, so
multi-processing workers and the Flink job server's JVM count). Prints a markdown table
with builder/lean ratios (the JVM's own peak in brackets). The lean probe knows nothing
of the staged job server or of the builder's Flink defaults, so on Flink it gets the
options the builder runs with spelled out (`lean_args`).

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
import tempfile
import time
from typing import Dict, List, Sequence

import psutil

_FLINK = ["--runner=FlinkRunner", "--flink_master=[local]", "--environment_type=LOOPBACK"]
# name -> (label, Beam arguments)
RUNNER_SETTINGS = {
    "direct1": ("Direct, 1 worker", ["--direct_num_workers=1"]),
    "direct2": ("Direct, 2 workers (multi_processing)",
                ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]),
    "flink": ("Flink [local], the builder's defaults", _FLINK),
    "flink1": ("Flink [local], parallelism 1", _FLINK + ["--parallelism=1"]),
    "flink2": ("Flink [local], parallelism 2", _FLINK + ["--parallelism=2"]),
}


def lean_args(beam_args: List[str], raw: str) -> List[str]:
    """The lean probe's arguments: on Flink, the options the builder runs with (the
    staged job server, and the parallelism, workers and Flink settings that
    `beam_runners.pipeline_options` adds for these raw logs), spelled out."""
    if "--runner=FlinkRunner" not in beam_args:
        return list(beam_args)
    from daian_tf.data import beam_runners
    from daian_tf.data.sample_builder import raw_bytes

    try:
        options = beam_runners.pipeline_options(beam_args, raw_bytes(raw))
    except beam_runners.FlinkSetupError as e:
        raise SystemExit(f"the Flink rows need the staged job server: {e}")
    given = options.get_all_options(drop_default=True, retain_unknown_options=True)
    return [f"--{k}={v}" for k, v in given.items()]



def measure(cmd: Sequence[str], poll_s: float = 0.1,
            timeout_s: float | None = None) -> Dict[str, float]:
    """Run `cmd`; return wall seconds, the peak summed RSS (MiB) of its tree, and the
    peak RSS of the tree's JVMs alone (a Flink job server; 0 without one). After
    `timeout_s` the whole tree is killed and RuntimeError raised (a Flink run can hang:
    docs/beam-on-flink.md)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")
    # Output goes to files, read at the end: a pipe nobody reads while the command
    # runs blocks the command once it has written 64 KiB (a long Flink run does).
    out_file, err_file = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=out_file, stderr=err_file, env=env)
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
    proc.wait()
    wall = time.perf_counter() - start
    out_file.seek(0)
    err_file.seek(0)
    out, err = out_file.read(), err_file.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                           f"{err.decode()[-3000:]}")
    return {"seconds": wall, "peak_rss_mib": peak / 2**20,
            "peak_jvm_rss_mib": peak_jvm / 2**20, "stdout": out.decode(),
            "stderr_lines": err.decode(errors="replace").splitlines()}


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
    ap.add_argument("--timeout", type=float, default=3600,
                    help="seconds after which a run is killed and its row marked "
                    "failed (the Flink builder could hang: docs/beam-on-flink.md)")
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
            builder = _try(measure, [sys.executable, "-m", "daian_tf.cli",
                                     "build-samples", raw, out, *beam_args],
                           timeout_s=args.timeout)
            lean = _try(measure, [sys.executable, args.lean, raw,
                                  *lean_args(beam_args, raw)], timeout_s=args.timeout)
            samples = 0
            if builder is not None:
                report = json.load(open(os.path.join(out, "report.json")))
                samples = sum(s["samples"] for s in report["splits"].values())
            rows.append((scale, n_imp, samples, label, builder, lean))
            print(f"done: scale {scale:g}, {label}: builder {_s(builder)} s "
                  f"({_lines(builder)} lines on stderr), lean {_s(lean)} s",
                  file=sys.stderr, flush=True)

    print("| impressions | runner | builder s | lean s | ratio | builder imp/s | "
          "lean imp/s | builder peak RSS MiB (JVM) | lean peak RSS MiB (JVM) | "
          "RSS ratio |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for scale, n_imp, samples, label, b, l in rows:
        both = b is not None and l is not None
        print(f"| {n_imp:,} | {label} | {_s(b)} | {_s(l)} | "
              f"{b['seconds'] / l['seconds'] if both else float('nan'):.2f} | "
              f"{_rate(n_imp, b)} | {_rate(n_imp, l)} | {_mem(b)} | {_mem(l)} | "
              f"{b['peak_rss_mib'] / l['peak_rss_mib'] if both else float('nan'):.2f} |")
    print(f"\n(builder samples written: {', '.join(str(r[2]) for r in rows)}; machine: "
          f"{os.cpu_count()} CPUs; 'failed' = error or no result within --timeout)")


def _try(run, cmd, **kwargs):
    try:
        return run(cmd, **kwargs)
    except RuntimeError as e:
        print(f"failed: {str(e)[-2000:]}", file=sys.stderr, flush=True)
        return None


def _lines(m) -> str:
    return "-" if m is None else str(len(m["stderr_lines"]))


def _s(m) -> str:
    return "failed" if m is None else f"{m['seconds']:.1f}"


def _rate(n: int, m) -> str:
    return "" if m is None else f"{n / m['seconds']:,.0f}"


def _mem(m) -> str:
    if m is None:
        return ""
    jvm = f" ({m['peak_jvm_rss_mib']:,.0f})" if m["peak_jvm_rss_mib"] else ""
    return f"{m['peak_rss_mib']:,.0f}{jvm}"


if __name__ == "__main__":
    main()
