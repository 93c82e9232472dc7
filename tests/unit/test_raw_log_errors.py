"""A RawLogError across Beam workers, and what stays off the console while a pipeline
runs (daian_tf/data/raw_log_errors.py); tests/integration/test_flink_runner.py checks
the same on a real Flink run."""

from __future__ import annotations

import io
import logging
import sys
import threading

import grpc

from daian_tf.core.errors import RawLogError
from daian_tf.data.raw_log_errors import (RawLogErrorLogFilter, encode_error,
                                          find_raw_log_error, quiet_runner_noise)

ERR = RawLogError("timestamp must be an integer", "impressions.csv", 7, "timestamp")


class _Cancelled(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.CANCELLED


def _record(name, msg, exc=None):
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None,
                             (type(exc), exc, None) if exc else None)


def test_the_error_survives_the_runners_text_wrapping():
    wrapped = RuntimeError(f"Pipeline failed: java.lang.RuntimeException: ... "
                           f"{encode_error(ERR)} [while running 'Read']")
    found = find_raw_log_error(wrapped)
    assert (str(found), found.file, found.row, found.column) == (
        str(ERR), "impressions.csv", 7, "timestamp")
    assert find_raw_log_error(RuntimeError("something else")) is None


def test_the_filter_drops_the_error_its_consequences_and_nothing_else():
    f = RawLogErrorLogFilter()
    other = _record("apache_beam.runners.worker.sdk_worker", "Error processing 3: boom")
    assert f.filter(other)  # before any raw-log error: a real error shows
    assert not f.filter(_record("apache_beam.runners.worker.data_plane",
                                "Failed to read inputs", _Cancelled()))  # a hang-up
    assert f.filter(_record("apache_beam.runners.worker.data_plane", "Failed",
                            ValueError("not gRPC")))
    assert not f.filter(_record("root", f"java.lang.RuntimeException: {encode_error(ERR)}"))
    assert f.seen
    assert not f.filter(_record("apache_beam.runners.worker.sdk_worker",
                                "Unknown process bundle instruction id '21'"))
    assert f.filter(_record("root", "not the worker's"))


def test_while_a_pipeline_runs_the_workers_prints_and_thread_deaths_are_quiet(
        monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    seen = []
    hook = seen.append
    monkeypatch.setattr(threading, "excepthook", hook)
    def thread_dies_of(exc):
        t = threading.Thread(target=lambda: (_ for _ in ()).throw(exc))
        t.start()
        t.join()

    with quiet_runner_noise() as quiet:
        print("Traceback (most recent call last):\n  ...\nKeyError: 1", file=sys.stderr)
        thread_dies_of(KeyError(2))  # a real error: shows
        thread_dies_of(_Cancelled())  # the runner hung up: a consequence
        print(f"Traceback ...\nRuntimeError: {encode_error(ERR)}", file=sys.stderr)
        # after the raw-log error, the failing job's cancelled bundles and threads
        print("Traceback (most recent call last):\n  cancelled", file=sys.stderr)
        thread_dies_of(KeyError(3))
        print("progress line", file=sys.stderr)
    assert quiet.seen
    assert out.getvalue() == ("Traceback (most recent call last):\n  ...\nKeyError: 1\n"
                              "progress line\n")
    assert [a.exc_value.args for a in seen] == [(2,)]
    assert sys.stderr is out  # given back


class _Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE


def test_after_a_pipeline_ran_the_workers_teardown_stays_quiet(monkeypatch):
    import daian_tf.data.raw_log_errors as R

    monkeypatch.setattr(R, "_teardown_quiet", False)
    seen = []
    monkeypatch.setattr(threading, "excepthook", seen.append)
    logger = logging.getLogger("apache_beam.runners.worker.data_plane")
    monkeypatch.setattr(logger, "filters", [])

    def thread_dies_of(exc):
        t = threading.Thread(target=lambda: (_ for _ in ()).throw(exc))
        t.start()
        t.join()

    thread_dies_of(_Unavailable())  # before: shows
    try:
        with quiet_runner_noise():
            raise KeyError("the pipeline failed")
    except KeyError:
        pass
    thread_dies_of(_Unavailable())  # a failed pipeline leaves nothing quiet
    with quiet_runner_noise():
        pass  # ran to its end
    thread_dies_of(_Unavailable())  # the job server went away under the worker: quiet
    thread_dies_of(KeyError(5))  # anything else: shows
    assert [type(a.exc_value).__name__ for a in seen] == \
        ["_Unavailable", "_Unavailable", "KeyError"]
    assert not logger.filters[0].filter(
        _record(logger.name, "Failed to read inputs in the data plane.", _Unavailable()))
    assert logger.filters[0].filter(_record(logger.name, "Failed", ValueError("x")))
