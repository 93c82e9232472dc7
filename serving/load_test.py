"""Closed-loop gRPC load test of a TF Serving endpoint, through `PredictClient`.

`concurrency` threads each send `Predict` requests of `batch_size` serialized
examples back to back until `num_requests` have been sent; latencies are measured
per request. Use it to tune `batch_timeout_micros` / `max_batch_size` of
config/batching_parameters.pbtxt against real TF Serving, or to smoke-test the
local server.

    python -m serving.load_test localhost:8500 examples.tfrecord.gz \
        --num-requests 2000 --concurrency 16 --batch-size 64
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from concurrent import futures
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import grpc
import numpy as np
import tensorflow as tf

from serving.client import PredictClient
from serving.contract import DEFAULT_MODEL_NAME, OUTPUT_CTR, SIGNATURE_SERVING_DEFAULT


@dataclass(frozen=True)
class LoadTestResult:
    """Summary of one load test; latencies in milliseconds."""

    num_requests: int
    num_errors: int
    examples_per_request: int
    wall_s: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    first_error: Optional[str]


def run_load_test(target: str, examples: Sequence[bytes], num_requests: int = 200,
                  concurrency: int = 4, batch_size: int = 16,
                  model_name: str = DEFAULT_MODEL_NAME,
                  signature_name: str = SIGNATURE_SERVING_DEFAULT,
                  output_key: str = OUTPUT_CTR,
                  timeout_s: float = 5.0) -> LoadTestResult:
    """Sends `num_requests` Predict requests from `concurrency` threads.

    Args:
        target: `host:port` of the gRPC endpoint.
        examples: serialized tf.Examples; request i takes the next `batch_size`
            of them, cycling.
        num_requests, concurrency, batch_size: the load.
        model_name, signature_name, output_key: what to call.
        timeout_s: per-request deadline.

    Returns:
        Request count, errors, throughput and latency percentiles (successful
        requests only).
    """
    if not examples:
        raise ValueError("examples is empty: the load test needs at least one")
    for name, value in (("num_requests", num_requests),
                        ("concurrency", concurrency), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    pool = itertools.cycle(examples)
    batches = [[next(pool) for _ in range(batch_size)] for _ in range(num_requests)]
    latencies_ms: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    with PredictClient(target, model_name=model_name, timeout_s=timeout_s) as client:
        def send(batch: list[bytes]) -> None:
            start = time.perf_counter()
            try:
                client.predict_examples(batch, signature_name, output_key)
            except grpc.RpcError as e:
                with lock:
                    errors.append(f"{e.code().name}: {e.details()}")
                return
            elapsed_ms = (time.perf_counter() - start) * 1e3
            with lock:
                latencies_ms.append(elapsed_ms)

        start = time.perf_counter()
        with futures.ThreadPoolExecutor(max_workers=concurrency) as executor:
            list(executor.map(send, batches))
        wall_s = time.perf_counter() - start

    p50, p90, p99, top = (np.percentile(latencies_ms, [50, 90, 99, 100])
                          if latencies_ms else [float("nan")] * 4)
    return LoadTestResult(
        num_requests=num_requests, num_errors=len(errors),
        examples_per_request=batch_size, wall_s=wall_s,
        requests_per_s=num_requests / wall_s, p50_ms=float(p50), p90_ms=float(p90),
        p99_ms=float(p99), max_ms=float(top),
        first_error=errors[0] if errors else None)


def read_examples(path: str, limit: int = 10_000) -> list[bytes]:
    """Up to `limit` serialized examples from a TFRecord file (".gz" = GZIP)."""
    compression = "GZIP" if path.endswith(".gz") else ""
    dataset = tf.data.TFRecordDataset(path, compression_type=compression)
    return [record.numpy() for record in dataset.take(limit)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="host:port of the gRPC endpoint")
    parser.add_argument("examples", help="TFRecord file of serialized tf.Examples")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--num-requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--timeout-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    result = run_load_test(args.target, read_examples(args.examples),
                           num_requests=args.num_requests,
                           concurrency=args.concurrency, batch_size=args.batch_size,
                           model_name=args.model_name, timeout_s=args.timeout_s)
    print(json.dumps(asdict(result), indent=2))
    return 1 if result.num_errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
