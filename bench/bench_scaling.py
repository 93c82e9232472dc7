"""Benchmark: how each offline stage grows with the data, and what that says about scale.

For each scale (the simulator's `num_users` multiplier: 1 gives about 100k impressions,
10 about 1M, 50 about 5M; the default world otherwise), each stage runs in its own
subprocess, measured by `bench_sample_builder.measure` (wall time and the peak summed RSS
of the whole process tree, a Flink job server's JVM included):

- `builder/<runner>`: `daian build-samples RAW OUT [runner flags]` for each `--runners`
  (`direct`: the DirectRunner, one worker; `flink`: Beam's FlinkRunner, Flink embedded
  in the job server, LOOPBACK workers, the parallelism the builder sizes by the raw
  logs, `beam_runners.flink_parallelism`; the JVM's own peak RSS in its own column);
- `transform`: `transform_samples` (tf.Transform on the DirectRunner) over the
  DirectRunner's samples: analyze the train split, transform both;
- `epoch/<model>`: one epoch of `model.fit` over the transformed train split (the default
  config's model, `bench_training.run_ours`: streamed, whole requests shuffled, after a
  20-step warm-up that is not timed; the process's wall time includes start-up, TF's
  import and the warm-up, so the table gives the fit's own seconds beside it).

Then, for each stage, the growth exponent b of `seconds ∝ n^b` and `peak RSS ∝ n^b`
(n = impressions; least squares on log–log over all scales, and between the two
largest, where fixed costs weigh least), and the extrapolation with the latter to
Alimama's logs (26M impressions a day, 8 days: 208M) and to a billion impressions, as
one-machine figures (this machine) from which docs/scaling.md derives workers.
Prints a markdown table and writes `<workdir>/scaling.json`.

usage: python bench/bench_scaling.py [--scales 1 10 50] [--runners direct flink]
       [--models daian] [--workdir /tmp/daian_scaling]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_sample_builder import count_rows, ensure_raw, measure  # noqa: E402

RUNNERS = {
    "direct": ["--direct_num_workers=1"],
    "flink": ["--runner=FlinkRunner", "--flink_master=[local]",
              "--environment_type=LOOPBACK"],
}
TARGETS = {"Alimama (26M/day × 8 days)": 26e6 * 8, "1B impressions": 1e9}


def _transform(samples: str, out: str) -> dict:
    """Worker mode: transform `samples` into `out` (the default config)."""
    from daian_tf.core.config import DEFAULT_CONFIG_FILE, load_config
    from daian_tf.data.transform_beam import transform_samples

    report = json.loads(Path(samples, "report.json").read_text())
    paths = transform_samples(samples, out, load_config(DEFAULT_CONFIG_FILE),
                              report["sim_range"])
    return {**paths, "train_samples": report["splits"]["train"]["samples"],
            "sim_range": report["sim_range"]}


def _epoch(info: dict, model: str) -> dict:
    """Worker mode: one timed epoch of `model` (bench_training.run_ours)."""
    from bench_training import run_ours

    return run_ours(info, {"model": model, "batch": 256, "part": "full",
                           "input": "stream-request", "jit": False})


def exponent(ns, ys) -> float:
    """b of y ∝ n^b, least squares on log–log."""
    xs, ls = [math.log(n) for n in ns], [math.log(y) for y in ys]
    mx, my = sum(xs) / len(xs), sum(ls) / len(ls)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ls))
            / sum((x - mx) ** 2 for x in xs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 10.0, 50.0])
    ap.add_argument("--runners", nargs="+", default=["direct", "flink"],
                    choices=list(RUNNERS))
    ap.add_argument("--models", nargs="+", default=["daian"])
    ap.add_argument("--stages", nargs="+", default=["builder", "transform", "epoch"],
                    choices=["builder", "transform", "epoch"],
                    help="the stages to run (epoch needs transform)")
    ap.add_argument("--workdir", default="/tmp/daian_scaling")
    ap.add_argument("--timeout", type=float, default=3600,
                    help="seconds after which a stage's run is killed and reported as "
                    "failed (the Flink builder can hang: docs/beam-on-flink.md)")
    ap.add_argument("--previous", help="scaling.json of an earlier run whose rows "
                    "join this run's in the tables (e.g. smaller scales)")
    ap.add_argument("--_transform", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_epoch", nargs=2, help=argparse.SUPPRESS)  # info.json model
    args = ap.parse_args()
    if args._transform:
        print(json.dumps(_transform(*args._transform)), flush=True)
        return
    if args._epoch:
        print(json.dumps(_epoch(json.loads(Path(args._epoch[0]).read_text()),
                                args._epoch[1])), flush=True)
        return

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    rows = json.loads(Path(args.previous).read_text()) if args.previous else []

    def run(stage: str, n: int, cmd, worker: bool = False) -> dict:
        try:
            m = measure(cmd, timeout_s=args.timeout)
        except RuntimeError as e:  # one failed stage: say so, go on with the others
            print(f"FAILED: {stage} at {n:,} impressions: {str(e)[-1500:]}",
                  file=sys.stderr, flush=True)
            return {}
        row = {"stage": stage, "impressions": n, "seconds": m["seconds"],
               "peak_rss_mib": m["peak_rss_mib"],
               "peak_jvm_rss_mib": m["peak_jvm_rss_mib"]}
        if worker:  # this script's worker mode: its last line is a JSON result
            row["result"] = json.loads(m["stdout"].strip().splitlines()[-1])
        rows.append(row)
        print(f"done: {stage} at {n:,} impressions: {m['seconds']:.1f} s, "
              f"{m['peak_rss_mib']:,.0f} MiB", file=sys.stderr, flush=True)
        (work / "scaling.json").write_text(json.dumps(rows, indent=1))
        return row

    for scale in args.scales:
        raw = ensure_raw(str(work), scale)
        n = count_rows(os.path.join(raw, "impressions.csv"))
        for runner in args.runners if "builder" in args.stages else []:
            out = work / f"samples_scale{scale:g}_{runner}"
            run(f"builder/{runner}", n, [py, "-m", "daian_tf.cli", "build-samples", raw,
                                         str(out), *RUNNERS[runner]])
        samples = work / f"samples_scale{scale:g}_{args.runners[0]}"
        if "transform" not in args.stages:
            continue
        t = run("transform", n, [py, __file__, "--_transform", str(samples),
                                 str(work / f"t_scale{scale:g}")], worker=True)
        if not t:
            continue
        info = {**t["result"], "raw": raw}
        info_path = work / f"info_scale{scale:g}.json"
        info_path.write_text(json.dumps(info))
        for model in args.models if "epoch" in args.stages else []:
            run(f"epoch/{model}", n, [py, __file__, "--_epoch", str(info_path), model],
                worker=True)

    stages = list(dict.fromkeys(r["stage"] for r in rows))
    print("| stage | impressions | wall s | fit s | peak RSS MiB | of it, JVM MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        fit = r.get("result", {}).get("seconds")
        jvm = r.get("peak_jvm_rss_mib")
        print(f"| {r['stage']} | {r['impressions']:,} | {r['seconds']:.1f} | "
              f"{'' if fit is None else f'{fit:.1f}'} | {r['peak_rss_mib']:,.0f} | "
              f"{f'{jvm:,.0f}' if jvm else ''} |")
    print("\n| stage | b seconds (all; last two) | b peak RSS (all; last two) | "
          + " | ".join(f"{k}: one machine" for k in TARGETS) + " |")
    print("|---|---:|---:|" + "---:|" * len(TARGETS))
    for stage in stages:
        rs = [r for r in rows if r["stage"] == stage]
        if len(rs) < 2:
            continue
        ns = [r["impressions"] for r in rs]
        secs = [r.get("result", {}).get("seconds") or r["seconds"] for r in rs]
        mems = [r["peak_rss_mib"] for r in rs]
        # the extrapolation uses the growth between the two largest scales: at the
        # small ones, fixed costs (start-up, imports, tracing) hide it
        bt, bm = exponent(ns[-2:], secs[-2:]), exponent(ns[-2:], mems[-2:])
        cells = []
        for target in TARGETS.values():
            hours = secs[-1] * (target / ns[-1]) ** bt / 3600
            gib = mems[-1] * (target / ns[-1]) ** max(bm, 0.0) / 1024
            cells.append(f"{hours:,.1f} h, {gib:,.1f} GiB")
        print(f"| {stage} | {exponent(ns, secs):.2f}; {bt:.2f} | "
              f"{exponent(ns, mems):.2f}; {bm:.2f} | " + " | ".join(cells) + " |")
    print(f"\n(machine: {os.cpu_count()} CPUs; rows in {work / 'scaling.json'})")


if __name__ == "__main__":
    main()
