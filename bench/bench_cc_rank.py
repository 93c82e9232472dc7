"""Benchmark: `rank` and `serving_default` as TF Serving computes them (C++
`Session::Run`) beside our server's `ServedModel.run` (Python, `tf.saved_model.load`),
side by side, with the FLOPs they run and the machine's matmul limit.

For each N of `--candidates`: one context and N candidates from the examples file, and
the N full examples `serving_default` scores for the same pairs (as `daian load-test`
builds them). Each round runs, in turn:
- the C++ runner of `serving.cc_loader` (TensorFlow's `LoadSavedModel`, as
  `tensorflow_model_server`): `--calls` calls per (signature, N) after 20 unmeasured
  ones, each timed around its `Session::Run`;
- this process: the same calls through `ServedModel.run` (what a gRPC `Predict` of the
  local server runs, without the gRPC and `TensorProto` work), timed around it.
Both use TensorFlow's default thread pools (2 threads on 2 cores) and keep freed memory
(`daian_tf/core/allocator.py`; the runner through `GLIBC_TUNABLES`). No gRPC in either:
this measures the model as each loader runs it, one call at a time.

Prints a markdown table: p50 and p99 over all rounds, candidates/s (N × calls / their
summed time), MFLOP per candidate (the matrix products of one call, from a profiler
trace: `serving.op_flops`), the GFLOP/s that makes, and its share of the machine's
dense float32 matmul (1024², 2 threads), measured before and after the rounds.

usage: python bench/bench_cc_rank.py --model-dir runs/quickstart/pipeline/serving \\
       --examples EVAL.tfrecord.gz [--candidates 50 200 500] [--calls 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

WARMUP_CALLS = 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True, help="a base path or version dir")
    ap.add_argument("--examples", required=True)
    ap.add_argument("--candidates", type=int, nargs="+", default=[50, 200, 500])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from daian_tf.core.allocator import GLIBC_TUNABLES_VALUE, keep_freed_memory

    keep_freed_memory()
    os.environ["GLIBC_TUNABLES"] = GLIBC_TUNABLES_VALUE  # the runner's, at its start
    from serving.cc_loader import build_runner, run_signatures, version_dir
    from serving.contract import (INPUT_CANDIDATES, INPUT_CONTEXT, INPUT_EXAMPLES,
                                  OUTPUT_CTR, SIGNATURE_RANK, SIGNATURE_SERVING_DEFAULT)
    from serving.load_test import (candidate_example, matmul_gflops, rank_pairs,
                                   read_examples, signature_flops)
    from serving.served_model import ServedModel

    export = version_dir(args.model_dir)
    runner = build_runner()
    served = ServedModel(export, version=int(export.name))
    pool = read_examples(args.examples, limit=max(args.candidates) + 1)
    if len(pool) < max(args.candidates) + 1:
        raise SystemExit(f"{args.examples} holds {len(pool)} examples; "
                         f"{max(args.candidates) + 1} are needed")
    cases = []  # (signature, n, inputs)
    for n in args.candidates:
        candidates = [candidate_example(e) for e in pool[1:n + 1]]
        cases.append((SIGNATURE_RANK, n, {
            INPUT_CONTEXT: np.array(pool[:1], dtype=object),
            INPUT_CANDIDATES: np.array(candidates, dtype=object)}))
        cases.append((SIGNATURE_SERVING_DEFAULT, n, {
            INPUT_EXAMPLES: np.array(rank_pairs(pool[0], candidates), dtype=object)}))
    limit_before = matmul_gflops(threads=2)
    per_case = WARMUP_CALLS + args.calls
    cc = {(s, n): [] for s, n, _ in cases}
    py = {(s, n): [] for s, n, _ in cases}
    for r in range(args.rounds):
        timings: list = []
        run_signatures(export, [(s, inputs) for s, _, inputs in cases
                                for _ in range(per_case)], runner=runner, timings=timings)
        for i, (s, n, _) in enumerate(cases):
            cc[(s, n)] += timings[i * per_case + WARMUP_CALLS:(i + 1) * per_case]
        for s, n, inputs in cases:
            for i in range(per_case):
                start = time.perf_counter()
                served.run(s, inputs, [OUTPUT_CTR])
                if i >= WARMUP_CALLS:
                    py[(s, n)].append((time.perf_counter() - start) * 1e3)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    limit_after = matmul_gflops(threads=2)
    limit = max(limit_before, limit_after)
    flops = dict(zip([(s, n) for s, n, _ in cases], signature_flops(
        str(export), [(s, {k: list(v) for k, v in inputs.items()})
                      for s, _, inputs in cases])))

    print(f"\n{export}: {args.rounds} rounds × {args.calls} calls per row, one at a "
          "time\n")
    print("| loader | signature | cand. | cand./s | p50 ms | p99 ms | p99/p50 "
          "| MFLOP/cand. | GFLOP/s | % matmul |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for loader, times in (("C++ Session::Run", cc), ("ServedModel.run", py)):
        for s, n, _ in cases:
            t = np.asarray(times[(s, n)])
            p50, p99 = np.percentile(t, [50, 99])
            per_s = n * len(t) / (t.sum() / 1e3)
            per_candidate = flops[(s, n)] / n
            gflops = per_candidate * per_s / 1e9
            print(f"| {loader} | {s} | {n} | {per_s:,.0f} | {p50:.2f} | {p99:.2f} | "
                  f"{p99 / p50:.2f} | {per_candidate / 1e6:.3f} | {gflops:.2f} | "
                  f"{100 * gflops / limit:.1f} |")
    print(f"\nmatmul limit: dense float32 1024², 2 threads, {limit_before:.1f} GFLOP/s "
          f"before the rounds and {limit_after:.1f} after (the higher is the limit)")


if __name__ == "__main__":
    main()
