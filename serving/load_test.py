"""Closed-loop gRPC load test of a TF Serving endpoint, through `PredictClient`.

`run_calls` sends requests from `concurrency` client threads, back to back, until
`num_requests` have been sent or `duration_s` has passed, whichever comes first, and
measures each request's latency. The target must be a loopback address: this is a tool
for a server on this machine (the local one, or TF Serving in a local container),
never a way to load a shared service by accident.

Two ways to run it (`daian load-test`, or `python -m serving.load_test` with the
libraries' logs):

    # against a running server: serving_default on a TFRecord file of examples
    daian load-test localhost:8500 examples.tfrecord.gz \\
        --num-requests 2000 --concurrency 8 --batch-size 64

    # the side-by-side benchmark on an exported model: local servers started here
    # (batching off and on), `rank` with 50/200/500 candidates against
    # `serving_default` on the same (context, candidate) pairs, the FLOPs each call
    # runs (from a profiler trace) and the machine's own dense-matmul GFLOP/s
    daian load-test --model-dir runs/quickstart/serving/daian \\
        --examples eval.tfrecord.gz --candidates 50 200 500

`rank` takes one context example and N candidate examples holding only the target
features (`candidate_example`); `serving_default` gets the same N pairs as full
examples (the context's features with each candidate's target features,
`rank_pairs`), so both compute the same N scores.
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import json
import math
import os
import re
import socket
import threading
import time
from concurrent import futures
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import grpc
import numpy as np
import tensorflow as tf

from daian_tf.core import features as F
from daian_tf.core.errors import DaianInputError
from serving.client import PredictClient
from serving.contract import DEFAULT_MODEL_NAME, OUTPUT_CTR, SIGNATURE_SERVING_DEFAULT

Call = Callable[[PredictClient], object]


@dataclass(frozen=True)
class LoadTestResult:
    """Summary of one load test; latencies in milliseconds (successful requests)."""

    num_requests: int
    num_errors: int
    examples_per_request: int
    wall_s: float
    requests_per_s: float
    examples_per_s: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    first_error: Optional[str]


def check_loopback(target: str) -> None:
    """Refuses a target that is not a loopback address (module docstring); a UNIX
    socket (`unix:PATH`) is on this machine."""
    if target.startswith("unix:"):
        return
    host = target.rsplit(":", 1)[0].strip("[]")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as e:
        raise ValueError(f"load test target {target!r}: cannot resolve {host!r}: "
                         f"{e}") from e
    remote = sorted(a for a in addresses
                    if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if remote:
        raise ValueError(f"load test target {target!r} resolves to {remote}, not a "
                         "loopback address; the load test only loads a server on "
                         "this machine")


def run_calls(target: str, calls: Sequence[Call], examples_per_request: int,
              num_requests: int = 200, concurrency: int = 4,
              duration_s: Optional[float] = None,
              model_name: str = DEFAULT_MODEL_NAME, timeout_s: float = 5.0,
              retries: int = 0) -> LoadTestResult:
    """Sends `calls` (cycled) from `concurrency` threads; bounded in count and time.

    Args:
        target: `host:port` of a loopback gRPC endpoint.
        calls: each takes the shared `PredictClient` and sends one request.
        examples_per_request: for the examples/s figure.
        num_requests: stop after this many requests.
        duration_s: or after this many seconds (None: no time bound).
        model_name, timeout_s, retries: the client's (`retries`: of UNAVAILABLE).

    Returns:
        Requests sent, errors, throughput and latency percentiles.
    """
    check_loopback(target)
    if not calls:
        raise ValueError("the load test needs at least one request to send")
    for name, value in (("num_requests", num_requests), ("concurrency", concurrency)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    pool = itertools.cycle(calls)
    lock = threading.Lock()
    latencies_ms: list[float] = []
    errors: list[str] = []
    sent = 0
    start = time.perf_counter()
    end = None if duration_s is None else start + duration_s

    with PredictClient(target, model_name=model_name, timeout_s=timeout_s,
                       retries=retries) as client:
        def worker() -> None:
            nonlocal sent
            while True:
                with lock:
                    if sent >= num_requests or (end is not None
                                                and time.perf_counter() >= end):
                        return
                    sent += 1
                    call = next(pool)
                began = time.perf_counter()
                try:
                    call(client)
                except grpc.RpcError as e:
                    with lock:
                        errors.append(f"{e.code().name}: {e.details()}")
                    continue
                elapsed_ms = (time.perf_counter() - began) * 1e3
                with lock:
                    latencies_ms.append(elapsed_ms)

        with futures.ThreadPoolExecutor(max_workers=concurrency) as executor:
            for f in [executor.submit(worker) for _ in range(concurrency)]:
                f.result()
        wall_s = time.perf_counter() - start

    p50, p90, p95, p99, top = (np.percentile(latencies_ms, [50, 90, 95, 99, 100])
                               if latencies_ms else [float("nan")] * 5)
    return LoadTestResult(
        num_requests=sent, num_errors=len(errors),
        examples_per_request=examples_per_request, wall_s=wall_s,
        requests_per_s=sent / wall_s,
        examples_per_s=len(latencies_ms) * examples_per_request / wall_s,
        p50_ms=float(p50), p90_ms=float(p90), p95_ms=float(p95), p99_ms=float(p99),
        max_ms=float(top), first_error=errors[0] if errors else None)


def run_load_test(target: str, examples: Sequence[bytes], num_requests: int = 200,
                  concurrency: int = 4, batch_size: int = 16,
                  model_name: str = DEFAULT_MODEL_NAME,
                  signature_name: str = SIGNATURE_SERVING_DEFAULT,
                  output_key: str = OUTPUT_CTR, timeout_s: float = 5.0,
                  duration_s: Optional[float] = None) -> LoadTestResult:
    """`run_calls` with `Predict` requests of `batch_size` examples each, taken from
    `examples` in turn (cycling)."""
    if not examples:
        raise ValueError("examples is empty: the load test needs at least one")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pool = itertools.cycle(examples)
    batches = [[next(pool) for _ in range(batch_size)]
               for _ in range(min(num_requests, 1000))]
    calls = [lambda c, b=b: c.predict_examples(b, signature_name, output_key)
             for b in batches]
    return run_calls(target, calls, batch_size, num_requests=num_requests,
                     concurrency=concurrency, duration_s=duration_s,
                     model_name=model_name, timeout_s=timeout_s)


def candidate_example(serialized: bytes) -> bytes:
    """An example reduced to its target features: what a `rank` caller sends as a
    candidate (the rest of a full example would be parsed for nothing)."""
    example = tf.train.Example.FromString(serialized)
    for key in list(example.features.feature):
        if key not in F.TARGET_KEYS:
            del example.features.feature[key]
    return example.SerializeToString()


def rank_pairs(context: bytes, candidates: Sequence[bytes]) -> list[bytes]:
    """The full examples `serving_default` scores for one `rank` request: the
    context's features with each candidate's target features."""
    base = tf.train.Example.FromString(context)
    pairs = []
    for serialized in candidates:
        candidate = tf.train.Example.FromString(serialized)
        example = tf.train.Example()
        example.CopyFrom(base)
        for key in F.TARGET_KEYS:
            if key in candidate.features.feature:
                example.features.feature[key].CopyFrom(candidate.features.feature[key])
            elif key in example.features.feature:
                del example.features.feature[key]
        pairs.append(example.SerializeToString())
    return pairs


def read_examples(path: str, limit: int = 10_000) -> list[bytes]:
    """Up to `limit` serialized examples from a TFRecord file (".gz" = GZIP).

    Raises DaianInputError naming the file when it is missing or not a TFRecord file
    of that compression."""
    compression = "GZIP" if path.endswith(".gz") else ""
    dataset = tf.data.TFRecordDataset(path, compression_type=compression)
    try:
        return [record.numpy() for record in dataset.take(limit)]
    except (tf.errors.DataLossError, tf.errors.NotFoundError) as e:
        how = ("a GZIP TFRecord file (its name ends in .gz)" if compression
               else "an uncompressed TFRecord file (its name does not end in .gz)")
        reason = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:.*", "", e.message)
        raise DaianInputError(f"cannot read {path} as {how}: {reason}") from e


# --- the side-by-side benchmark (--model-dir) -----------------------------------------

def matmul_gflops(threads: int = 2, size: int = 1024, seconds: float = 3.0) -> float:
    """The machine's dense float32 matmul GFLOP/s with `threads` threads (TensorFlow's
    own kernel; run in a fresh process, as TF fixes its thread pools at start)."""
    import subprocess
    import sys

    code = f"""
import time, tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads({threads})
tf.config.threading.set_inter_op_parallelism_threads(1)
a = tf.random.normal([{size}, {size}]); b = tf.random.normal([{size}, {size}])
f = tf.function(lambda: tf.matmul(a, b))
f().numpy()
n, start = 0, time.perf_counter()
while time.perf_counter() - start < {seconds}:
    f().numpy(); n += 1
print(2 * {size}**3 * n / (time.perf_counter() - start) / 1e9)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return float(out.stdout.strip().splitlines()[-1])


def signature_flops(version_dir: str,
                    calls: Sequence[tuple[str, dict[str, Sequence[bytes]]]]) -> list[int]:
    """The matrix-product FLOPs of each call `(signature, inputs)` (input name →
    serialized examples) on the SavedModel `version_dir`, loaded once, counted from
    a profiler trace of the call (`op_flops`)."""
    from serving import op_flops

    loaded = tf.saved_model.load(version_dir)  # (the signatures need it alive)
    graph = op_flops.saved_model_graph(version_dir)
    counts = []
    for signature, inputs in calls:
        function = loaded.signatures[signature]
        arguments = {name: tf.constant(list(v)) for name, v in inputs.items()}
        counts.append(op_flops.call_flops(lambda: function(**arguments), graph))
    return counts


def _benchmark(args) -> int:
    from serving.batching import read_batching_parameters
    from serving.server import serve

    pool = read_examples(args.examples, limit=max(args.candidates) + 1)
    if len(pool) < max(args.candidates) + 1:
        raise DaianInputError(f"{args.examples} holds {len(pool)} examples; "
                              f"{max(args.candidates) + 1} are needed (a context and "
                              f"the largest --candidates)")
    context = pool[0]
    requests = {}  # n → (rank's candidates, serving_default's pairs)
    for n in args.candidates:
        candidates = [candidate_example(c) for c in pool[1:n + 1]]
        requests[n] = candidates, rank_pairs(context, candidates)
    rows = []
    settings = [("off", None)]
    if args.batching_parameters_file:
        settings.append(("on", read_batching_parameters(args.batching_parameters_file)))
    for batching_name, batching in settings:
        with serve(args.model_dir, model_name=args.model_name, port=0,
                   host=args.host, poll_wait_s=0, batching=batching) as server:
            for n in args.candidates:
                candidates, pairs = requests[n]
                for signature, call in (
                        ("rank", lambda c: c.rank(context, candidates)),
                        ("serving_default", lambda c: c.predict_examples(pairs))):
                    if signature == "rank" and batching is not None:
                        continue  # rank is not batched; its row is the same
                    run_calls(server.target, [call], n, num_requests=5,
                              concurrency=1, model_name=args.model_name,
                              timeout_s=60)  # warm the shapes
                    result = run_calls(server.target, [call], n,
                                       num_requests=args.num_requests,
                                       concurrency=args.concurrency,
                                       duration_s=args.duration_s,
                                       model_name=args.model_name, timeout_s=60)
                    rows.append({"signature": signature, "batching": batching_name,
                                 "candidates": n, **asdict(result)})
                    print(f"done: {signature} batching {batching_name} n={n}: "
                          f"p50 {result.p50_ms:.1f} ms", flush=True)
    gflops_limit = matmul_gflops(threads=2)
    keys, calls = [], []
    for n, (candidates, pairs) in requests.items():
        keys += [("rank", n), (SIGNATURE_SERVING_DEFAULT, n)]
        calls += [("rank", {"context": [context], "candidates": candidates}),
                  (SIGNATURE_SERVING_DEFAULT, {"examples": pairs})]
    flops = dict(zip(keys, signature_flops(
        f"{args.model_dir}/{_latest(args.model_dir)}", calls)))
    print("\n| signature | batching | candidates | threads | requests | errors | "
          "QPS | candidates/s | p50 ms | p95 ms | p99 ms | p99/p50 | "
          "MFLOP/candidate | GFLOP/s | % of matmul |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        n = r["candidates"]
        per_candidate = flops[(r["signature"], n)] / n
        achieved = per_candidate * r["examples_per_s"] / 1e9
        print(f"| {r['signature']} | {r['batching']} | {n} | {args.concurrency} | "
              f"{r['num_requests']} | {r['num_errors']} | {r['requests_per_s']:.1f} | "
              f"{r['examples_per_s']:,.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['p99_ms'] / r['p50_ms']:.2f} | "
              f"{per_candidate / 1e6:.3f} | {achieved:.2f} | "
              f"{100 * achieved / gflops_limit:.1f} |")
    print(f"\nmachine: dense float32 matmul (1024², 2 threads) {gflops_limit:.1f} "
          "GFLOP/s. MFLOP/candidate: the matrix products one call ran, from a "
          "profiler trace of it (serving.op_flops), over its candidates; GFLOP/s = "
          "that × candidates/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows,
                       "flops": {f"{sig}/{n}": v for (sig, n), v in flops.items()},
                       "matmul_gflops_2_threads": gflops_limit}, f, indent=2)
    return 1 if any(r["num_errors"] for r in rows) else 0


def _latest(model_dir: str) -> int:
    from serving.model_config import list_version_dirs

    versions = list_version_dirs(model_dir)
    if not versions:
        raise DaianInputError(f"no numeric version directory under {model_dir}")
    return max(versions)


def run_from_args(args) -> int:
    """What `daian load-test` and `python -m serving.load_test` run, on the flags of
    `serving.cli.add_load_test_arguments`; returns the exit status (1 when a request
    failed). Raises DaianInputError naming a wrong flag, a missing examples file or a
    target that is not a loopback address."""
    examples = args.examples if args.model_dir else args.examples_file
    if args.model_dir:
        if not args.examples:
            raise DaianInputError("--model-dir needs --examples")
        if not os.path.isdir(args.model_dir):
            raise DaianInputError(f"no such model directory: {args.model_dir}")
    elif not (args.target and args.examples_file):
        raise DaianInputError("give TARGET EXAMPLES, or --model-dir with --examples")
    if not os.path.isfile(examples):
        raise DaianInputError(f"no such examples file: {examples}")
    try:
        check_loopback(args.host if args.model_dir else args.target)
    except ValueError as e:
        raise DaianInputError(str(e)) from e
    if args.model_dir:
        return _benchmark(args)
    result = run_load_test(args.target, read_examples(args.examples_file),
                           num_requests=args.num_requests,
                           concurrency=args.concurrency, batch_size=args.batch_size,
                           model_name=args.model_name, timeout_s=args.timeout_s,
                           duration_s=args.duration_s)
    summary = {k: None if isinstance(v, float) and math.isnan(v) else v
               for k, v in asdict(result).items()}  # JSON has no NaN: no latencies
    print(json.dumps(summary, indent=2))
    return 1 if result.num_errors else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m serving.load_test`: `daian load-test` without the `daian` command's
    console set-up (the libraries' logs show)."""
    from serving.cli import add_load_test_arguments

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    add_load_test_arguments(parser)
    try:
        return run_from_args(parser.parse_args(argv))
    except DaianInputError as e:
        parser.error(str(e))


if __name__ == "__main__":
    raise SystemExit(main())
