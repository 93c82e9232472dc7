"""Benchmark: a new version pushed while `daian serve` is under load, then a broken one.

Copies the newest version of `--model-dir` into a fresh base path as version 1 and
starts `daian serve BASE --file_system_poll_wait_seconds=P` as a process (with
`--batching`: batching on, the packaged `serving/config/batching_parameters.pbtxt`).
Once version 1 is AVAILABLE it starts `daian load-test` (`serving_default`,
`--num-requests` requests of `--batch-size` examples from `--concurrency` threads) as a
process, and while that runs:

- at `--push-at` seconds: publishes version 2 (a copy of version 1) as a pipeline's
  pusher does, whole: copied to a hidden directory, then renamed to `2`;
- at `--broken-at` seconds: publishes version 3 the same way, whose `saved_model.pb`
  is not a SavedModel.

A thread polls `GetModelStatus` through TF Serving's own stub every 0.1 s and records
each change. Prints the timeline (seconds since the load started) and the load test's
summary. Exits 1 unless: no request failed, version 2 was reported (LOADING or
AVAILABLE) within the poll interval and became AVAILABLE, version 1 was then END
(the `latest` policy drops it), version 3 was END with its error, and version 2 was
still AVAILABLE at the end.

usage: python bench/bench_hot_reload.py --model-dir runs/quickstart/pipeline/serving \\
       --examples EVAL.tfrecord.gz [--num-requests 10000] [--concurrency 8] \\
       [--batch-size 12] [--push-at 10] [--broken-at 35] [--poll-s 1] [--batching]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from daian_tf.core.console import setup_console

setup_console()  # before TensorFlow loads (the stub's protos import it)

import grpc  # noqa: E402
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc  # noqa: E402

from daian_tf.training.multi_worker import free_ports  # noqa: E402
from serving.model_config import list_version_dirs  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODEL_NAME = "daian"


def daian() -> list[str]:
    script = Path(sys.executable).parent / "daian"
    return [str(script)] if script.exists() else [sys.executable, "-m", "daian_tf.cli"]


class StatusWatcher(threading.Thread):
    """Records `(unix time, ((version, state, error), ...))` at each change."""

    def __init__(self, target: str):
        super().__init__(daemon=True)
        self.stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(target))
        self.changes: list[tuple[float, tuple]] = []
        self.stop = threading.Event()

    def status(self) -> tuple:
        request = get_model_status_pb2.GetModelStatusRequest(
            model_spec={"name": MODEL_NAME})
        try:
            reply = self.stub.GetModelStatus(request, timeout=2)
        except grpc.RpcError as e:
            return (("rpc", e.code().name, ""),)
        state = get_model_status_pb2.ModelVersionStatus.State.Name
        return tuple(sorted((v.version, state(v.state), v.status.error_message)
                            for v in reply.model_version_status))

    def run(self) -> None:
        last = None
        while not self.stop.is_set():
            now = self.status()
            if now != last:
                self.changes.append((time.time(), now))
                last = now
            time.sleep(0.1)

    def first(self, version: int, states: tuple[str, ...]) -> float | None:
        """When `version` was first seen in one of `states`."""
        for t, status in self.changes:
            if any(v == version and s in states for v, s, _ in status):
                return t
        return None


def publish(base: Path, version: int, source: Path | None) -> float:
    """Version `version` appears whole under `base` (copy or broken file, then rename);
    returns when."""
    hidden = base / f".incoming-{version}"
    if source is not None:
        shutil.copytree(source, hidden)
    else:
        hidden.mkdir()
        (hidden / "saved_model.pb").write_bytes(b"not a SavedModel")
    hidden.rename(base / str(version))
    return time.time()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--examples", required=True)
    ap.add_argument("--num-requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--push-at", type=float, default=10.0)
    ap.add_argument("--broken-at", type=float, default=35.0)
    ap.add_argument("--poll-s", type=float, default=1.0)
    ap.add_argument("--batching", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="daian_hot_reload_"))
    base = work / MODEL_NAME
    newest = max(list_version_dirs(args.model_dir))
    shutil.copytree(Path(args.model_dir) / str(newest), base / "1")
    port = free_ports(1)[0]
    target = f"127.0.0.1:{port}"
    serve_cmd = daian() + ["serve", str(base), f"--port={port}",
                           f"--file_system_poll_wait_seconds={args.poll_s}"]
    if args.batching:
        serve_cmd += ["--enable_batching=true", "--batching_parameters_file="
                      f"{REPO / 'serving/config/batching_parameters.pbtxt'}"]
    serve_log = open(work / "serve.log", "w")
    server = subprocess.Popen(serve_cmd, stdout=serve_log, stderr=subprocess.STDOUT)
    watcher = StatusWatcher(target)
    watcher.start()
    try:
        deadline = time.time() + 300
        while watcher.first(1, ("AVAILABLE",)) is None:
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit("the server did not serve version 1:\n"
                                 + (work / "serve.log").read_text()[-3000:])
            time.sleep(0.2)
        print(f"serving version 1 of {args.model_dir} (its version {newest}); load "
              f"test: {args.num_requests} requests of {args.batch_size} examples from "
              f"{args.concurrency} threads", flush=True)
        start = time.time()
        load = subprocess.Popen(
            daian() + ["load-test", target, args.examples,
                       f"--num-requests={args.num_requests}",
                       f"--concurrency={args.concurrency}",
                       f"--batch-size={args.batch_size}", "--duration-s=600",
                       "--timeout-s=30"],
            stdout=subprocess.PIPE, text=True)
        time.sleep(max(0.0, start + args.push_at - time.time()))
        pushed = publish(base, 2, base / "1")
        time.sleep(max(0.0, start + args.broken_at - time.time()))
        broken = publish(base, 3, None)
        out, _ = load.communicate(timeout=900)
        ended = time.time()
        time.sleep(2 * args.poll_s)
    finally:
        watcher.stop.set()
        server.terminate()
        server.wait(timeout=60)
        serve_log.close()
    summary = json.loads(out)

    events = [(pushed, "version 2 published"), (broken, "version 3 (broken) published"),
              (ended, "load test process done")]
    events += [(t, "GetModelStatus: " + ", ".join(
                   f"{v}: {s}" + (f" ({e[:90]})" if e else "") for v, s, e in status))
               for t, status in watcher.changes if t >= start - 1]
    print("\ntimeline (s since the load test started)")
    for t, what in sorted(events):
        print(f"  {t - start:7.2f}  {what}")
    print("\nload test: " + json.dumps(summary))

    seen_2 = watcher.first(2, ("LOADING", "AVAILABLE"))
    available_2 = watcher.first(2, ("AVAILABLE",))
    end_1 = watcher.first(1, ("END",))
    end_3 = watcher.first(3, ("END",))
    final = dict((v, (s, e)) for v, s, e in watcher.changes[-1][1])
    checks = {
        "no request failed": summary["num_errors"] == 0,
        f"version 2 reported within the poll interval ({args.poll_s} s)":
            seen_2 is not None and seen_2 - pushed <= args.poll_s + 0.2,
        "version 2 AVAILABLE": available_2 is not None,
        "version 1 END after version 2 was AVAILABLE":
            end_1 is not None and available_2 is not None and end_1 >= available_2,
        "version 3 END with its error": end_3 is not None and bool(final.get(3, ("", ""))[1]),
        "version 2 AVAILABLE at the end": final.get(2, ("",))[0] == "AVAILABLE",
    }
    figures = {
        "version 2 seen after its push (s)": seen_2 and seen_2 - pushed,
        "version 2 AVAILABLE after its push (s)": available_2 and available_2 - pushed,
        "version 3 END after its push (s)": end_3 and end_3 - broken,
    }
    for name, value in figures.items():
        print(f"{name}: " + ("-" if value is None else f"{value:.2f}"))
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
