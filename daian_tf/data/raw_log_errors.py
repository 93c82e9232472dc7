"""Carrying a `RawLogError` across Beam workers. A worker's exception reaches the
caller as text wrapped by the runner (multi-process and remote runners), losing its
type and its file/row/column; `encode_error` writes those into the message as a
machine-readable tag, `find_raw_log_error` finds the error again (as an exception in
the cause/context chain, or parsed back from the tag), and `quiet_runner_noise`
keeps the runners' own traceback logs of such an error off the console.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import sys
import threading
from typing import Optional

from daian_tf.core.errors import RawLogError

_MARK = re.compile(r"\[raw-log-error ([A-Za-z0-9+/=]+)\]")


def encode_error(err: RawLogError) -> str:
    """Text of `err` with a machine-readable tag that survives Beam's wrapping."""
    payload = json.dumps({"message": err.args[0], "file": err.file, "row": err.row,
                          "column": err.column}, sort_keys=True)
    tag = base64.b64encode(payload.encode("utf-8")).decode("ascii")
    return f"RawLogError: {err} [raw-log-error {tag}]"


def find_raw_log_error(exc: BaseException) -> Optional[RawLogError]:
    """The RawLogError at the root of an exception raised by a Beam runner, if any.

    Walks the cause/context chain; a worker error arrives as text (multi-process and
    remote runners), so the tag written by `encode_error` is parsed back.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        match = _MARK.search(str(exc))
        if match:
            return _rebuild(json.loads(base64.b64decode(match.group(1))))
        if isinstance(exc, RawLogError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


class RawLogErrorLogFilter(logging.Filter):
    """Drops the runners' own log records of a worker's RawLogError.

    Beam logs a failing element with its traceback before the error reaches the
    caller; for a raw-log error the caller re-raises it as one clear message
    (`find_raw_log_error`), so the traceback is noise. Other errors pass untouched.
    On a portable runner (Flink) the worker's traceback comes three times (the SDK
    worker's log, the job server's error, the runner's final message).

    It also drops the portable SDK worker's errors for a stream that the runner closed
    (gRPC status CANCELLED: "Multiplexer hanging up", "Runner closed connection"). The
    runner closes them when it is done with a worker (a Flink cluster does so at the
    end of each task, a successful run included) or when the job has failed; either
    way they are consequences, never the cause: a failed job's cause comes back
    through the job service as the run's own error. After a RawLogError (`seen`) the
    worker's errors of the job's other bundles go too: the runner cancels them
    ("Unknown process bundle instruction id"), the run fails with the raw-log error.
    """

    def __init__(self):
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if _MARK.search(record.getMessage()) is not None:
            self.seen = True
            return False
        if self.seen and record.name.startswith(_WORKER_LOGGERS):
            return False  # the failed job's other bundles, cancelled under the worker
        return not is_hang_up(record.exc_info[1] if record.exc_info else None)


# the loggers of the runners' failing-element tracebacks: the DirectRunner's
# (`apache_beam.runners.common`; with multi_processing its job service relays the
# workers' logs), the portable SDK worker's and its data plane, and the root logger,
# where the portable runner logs the job's error message
RUNNER_LOGGERS = ("apache_beam.runners.common",
                  "apache_beam.runners.portability.local_job_service",
                  "apache_beam.runners.worker.sdk_worker",
                  "apache_beam.runners.worker.data_plane", "root")


_WORKER_LOGGERS = "apache_beam.runners.worker."


class _DropMarkedWrites:
    """sys.stderr without the portable SDK worker's own print of a failing
    instruction's traceback (`sdk_worker._execute` prints it before it logs it) when
    that traceback is a RawLogError's, or comes after one (the job's other bundles,
    cancelled); every other write passes."""

    def __init__(self, stream, quiet: RawLogErrorLogFilter):
        self._stream, self._quiet, self._dropped = stream, quiet, False

    def write(self, text: str) -> int:
        dropped, self._dropped = self._dropped, False
        if _MARK.search(text) is not None:
            self._quiet.seen = self._dropped = True
        elif self._quiet.seen and text.startswith("Traceback (most recent call last)"):
            self._dropped = True  # a cancelled bundle's, after the raw-log error
        elif not (dropped and text == "\n"):  # print's line end after it
            self._stream.write(text)
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _grpc_status(exc: Optional[BaseException]) -> Optional[str]:
    """The status name of a gRPC error (e.g. "CANCELLED"); None for anything else."""
    code = getattr(exc, "code", None)
    try:
        return getattr(code(), "name", None) if callable(code) else None
    except Exception:  # noqa: BLE001 - not a gRPC error after all
        return None


def is_hang_up(exc: Optional[BaseException]) -> bool:
    """Whether `exc` is a gRPC stream closed by the other side (status CANCELLED)."""
    return _grpc_status(exc) == "CANCELLED"


@contextlib.contextmanager
def quiet_runner_noise():
    """While a pipeline runs: the runners' log records and prints of a RawLogError,
    and the portable worker's errors and thread deaths for streams the runner closed,
    stay off the console (see RawLogErrorLogFilter)."""
    quiet = RawLogErrorLogFilter()
    loggers = [logging.getLogger(None if name == "root" else name)
               for name in RUNNER_LOGGERS]
    for log in loggers:
        log.addFilter(quiet)
    previous = threading.excepthook

    def excepthook(args):  # a worker thread's last words: a hang-up, a cancelled job's
        if not (quiet.seen or is_hang_up(args.exc_value)):
            previous(args)

    threading.excepthook = excepthook
    stderr = sys.stderr
    sys.stderr = _DropMarkedWrites(stderr, quiet)
    try:
        yield quiet
    finally:
        sys.stderr = stderr
        threading.excepthook = previous
        for log in loggers:
            log.removeFilter(quiet)
    quiet_worker_teardown()  # reached only when the pipeline ran to its end


_TEARDOWN_CODES = ("CANCELLED", "UNAVAILABLE")
_teardown_quiet = False


def _is_teardown(exc: Optional[BaseException]) -> bool:
    """A gRPC stream closed or torn down under the worker (CANCELLED, UNAVAILABLE)."""
    return _grpc_status(exc) in _TEARDOWN_CODES


class _TeardownFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _is_teardown(record.exc_info[1] if record.exc_info else None)


def quiet_worker_teardown() -> None:
    """After a pipeline has run to its end, for the rest of the process: the portable
    SDK workers' errors and thread deaths for streams that went away stay off the
    console.

    With the FlinkRunner's LOOPBACK workers kept for the whole job
    (`beam_runners.ENVIRONMENT_CACHE_MILLIS`), the workers are still connected when
    Beam stops the job server at exit; each then logs "Failed to read inputs in the
    data plane" and its threads die with `UNAVAILABLE: Stream removed (Socket closed)`
    (a hundred lines for two workers). The job is done and its outputs written by
    then: these are the teardown, not news. Other records and thread deaths pass."""
    global _teardown_quiet
    if _teardown_quiet:
        return
    _teardown_quiet = True
    teardown = _TeardownFilter()
    for name in ("apache_beam.runners.worker.sdk_worker",
                 "apache_beam.runners.worker.data_plane",
                 "apache_beam.runners.worker.worker_pool_main"):
        logging.getLogger(name).addFilter(teardown)
    previous = threading.excepthook

    def excepthook(args):
        if not _is_teardown(args.exc_value):
            previous(args)

    threading.excepthook = excepthook


def _rebuild(d: dict) -> RawLogError:
    err = RawLogError.__new__(RawLogError)
    err.file, err.row, err.column = d["file"], d["row"], d["column"]
    Exception.__init__(err, d["message"])
    return err
