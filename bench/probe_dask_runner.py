"""Probe: can the sample builder run on Beam's DaskRunner, and does that runner spill?

Issue 3 asks for memory flat in the number of impressions; the DirectRunner (FnApiRunner)
keeps every shuffle in memory, so even the lean join grows. This script checks the
DaskRunner of the installed apache-beam (`apache_beam.runners.dask.dask_runner`, needs
`dask` and `distributed`, not part of the pinned set) on what the builder needs.

    python bench/probe_dask_runner.py check
        runs tiny pipelines on the DaskRunner and prints one line per feature the
        builder uses: several sinks in one pipeline, ParDo.with_outputs, Beam counters
        (`finalize_report` reads them), ReadFromText (the lean join reads with it).
        Exit status 1 when any of them fails.

    python bench/probe_dask_runner.py lean RAW [--chunks N] [beam args]
        the lean join of ../shared/bench/lean_beam_join.py in a form the DaskRunner can
        translate (ReadFromText replaced by Create over N byte ranges + a reading
        FlatMap); prints {"samples": ...} and {"seconds": ...}. Run it under
        bench_sample_builder.measure for peak RSS; on the DirectRunner it gives the
        same count as the lean join.

With apache-beam 2.74.0 and dask/distributed 2026.8.0 (2026-12-01) the check fails on all
four points: only the last applied transform's bag is computed (dask_runner.py,
`dask.optimize(list(dask_visitor.bags.values())[-1])`), tagged outputs lose their tag
(transform_evaluator.py, `results = [v.value for v in tagged_receivers.values]`, so each
output of a with_outputs ParDo receives every element), `DaskRunnerResult.metrics()`
raises NotImplementedError, and `Read` (behind ReadFromText) has no translation (NoOp, so
the next ParDo gets None).
"""

from __future__ import annotations

import argparse
import bisect
import csv
import io
import json
import os
import sys
import tempfile
import time

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
DAY = 86400


# --- check ---------------------------------------------------------------------------
def _split(x):
    Metrics.counter("probe", "seen").inc()
    yield beam.pvalue.TaggedOutput("even" if x % 2 == 0 else "odd", x)


def _append(x, path):
    with open(path, "a") as f:
        f.write(f"{x}\n")
    return x


def _lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return sorted(int(v) for v in f.read().split())


def check(runner: str) -> int:
    tmp = tempfile.mkdtemp(prefix="probe_dask_")
    even, odd = os.path.join(tmp, "even"), os.path.join(tmp, "odd")
    p = beam.Pipeline(options=PipelineOptions([f"--runner={runner}"]))
    out = (p | beam.Create(list(range(6)))
           | beam.FlatMap(_split).with_outputs("even", "odd"))
    _ = out.even | "SinkEven" >> beam.Map(_append, even)
    _ = out.odd | "SinkOdd" >> beam.Map(_append, odd)
    result = p.run()
    result.wait_until_finish()
    got_even, got_odd = _lines(even), _lines(odd)
    results = {
        "every sink runs": bool(got_even) and bool(got_odd),
        "with_outputs keeps tags": got_even in ([], [0, 2, 4]) and got_odd in ([], [1, 3, 5]),
    }
    try:
        counters = {c.key.metric.name: c.committed
                    for c in result.metrics().query()["counters"]}
        results["counters"] = counters.get("seen") == 6
    except Exception as exc:  # noqa: BLE001 - report whatever the runner raises
        results["counters"] = f"{type(exc).__name__}: {exc}"
    text = os.path.join(tmp, "lines.txt")
    with open(text, "w") as f:
        f.write("h\n1\n2\n3\n")
    count = os.path.join(tmp, "count")
    try:
        p = beam.Pipeline(options=PipelineOptions([f"--runner={runner}"]))
        _ = (p | beam.io.ReadFromText(text, skip_header_lines=1) | beam.Map(int)
             | beam.Map(_append, count))
        p.run().wait_until_finish()
        results["ReadFromText"] = _lines(count) == [1, 2, 3]
    except Exception as exc:  # noqa: BLE001
        results["ReadFromText"] = f"{type(exc).__name__}: {exc}"
    print(f"runner {runner}: even sink got {got_even}, odd sink got {got_odd}")
    for name, ok in results.items():
        print(f"{name}: {'ok' if ok is True else 'FAILS' + ('' if ok is False else f' ({ok})')}")
    return 0 if all(v is True for v in results.values()) else 1


# --- lean join that the DaskRunner can translate ------------------------------------
def _ranges(path, n):
    size = os.path.getsize(path)
    step = -(-size // n)
    return [(path, i * step, min(size, (i + 1) * step)) for i in range(n)]


def _read_range(r):
    path, start, end = r
    with open(path, "rb") as f:
        if start == 0:
            f.readline()  # header
        else:
            f.seek(start - 1)
            f.readline()  # the line that straddles `start` belongs to the previous range
        while f.tell() < end:
            line = f.readline()
            if not line:
                break
            yield line.decode()


def _fields(line):
    return next(csv.reader(io.StringIO(line)))


def _parse_behavior(line, header):
    row = dict(zip(header, _fields(line)))
    return row["user_id"], (int(row["timestamp"]), row["item_id"])


def _parse_impression(line, header):
    row = dict(zip(header, _fields(line)))
    return row["user_id"], (row["request_id"], int(row["timestamp"]), row["item_id"])


def _histories(kv):
    _, groups = kv
    behaviors = sorted(groups["behaviors"])
    times = [t for t, _ in behaviors]
    for request_id, t, item in groups["impressions"]:
        hi = bisect.bisect_left(times, t)
        lo = max(bisect.bisect_left(times, t - 14 * DAY), hi - 50)
        yield request_id, item, [behaviors[k][1] for k in range(lo, hi)]


def _write_count(n, path):
    with open(path, "w") as f:
        f.write(json.dumps({"samples": n}))


def lean(raw: str, chunks: int, beam_args) -> None:
    headers = {}
    for name in ("behaviors", "impressions"):
        with open(f"{raw}/{name}.csv", newline="") as f:
            headers[name] = next(csv.reader(f))
    count = os.path.join(tempfile.mkdtemp(prefix="probe_dask_"), "count.json")
    start = time.time()
    p = beam.Pipeline(options=PipelineOptions(list(beam_args)))
    beh = (p | "RangesB" >> beam.Create(_ranges(f"{raw}/behaviors.csv", chunks))
           | "ReadB" >> beam.FlatMap(_read_range)
           | "ParseBehaviors" >> beam.Map(_parse_behavior, headers["behaviors"]))
    imp = (p | "RangesI" >> beam.Create(_ranges(f"{raw}/impressions.csv", chunks))
           | "ReadI" >> beam.FlatMap(_read_range)
           | "ParseImpressions" >> beam.Map(_parse_impression, headers["impressions"]))
    # one sink, last in the pipeline: the only bag the DaskRunner computes
    _ = ({"behaviors": beh, "impressions": imp} | beam.CoGroupByKey()
         | beam.FlatMap(_histories) | beam.combiners.Count.Globally()
         | beam.Map(_write_count, count))
    p.run().wait_until_finish()
    with open(count) as f:
        print(f.read())
    print(json.dumps({"seconds": round(time.time() - start, 2), "beam_args": beam_args}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--runner", default=DASK_RUNNER)
    lp = sub.add_parser("lean")
    lp.add_argument("raw")
    lp.add_argument("--chunks", type=int, default=1)
    args, rest = ap.parse_known_args(argv)
    if args.cmd == "check":
        return check(args.runner)
    lean(args.raw, args.chunks, rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
