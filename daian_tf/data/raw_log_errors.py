"""Carrying a `RawLogError` across Beam workers. A worker's exception reaches the
caller as text wrapped by the runner (multi-process and remote runners), losing its
type and its file/row/column; `encode_error` writes those into the message as a
machine-readable tag, `find_raw_log_error` finds the error again (as an exception in
the cause/context chain, or parsed back from the tag), and `RawLogErrorLogFilter`
drops the runner's own traceback log of such an error.
"""

from __future__ import annotations

import base64
import json
import logging
import re
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
    """Drops the runner's own log record of a worker's RawLogError.

    Beam logs a failing element with its traceback before the error reaches the
    caller; for a raw-log error the caller re-raises it as one clear message
    (`find_raw_log_error`), so the traceback is noise. Other errors pass untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return _MARK.search(record.getMessage()) is None


def _rebuild(d: dict) -> RawLogError:
    err = RawLogError.__new__(RawLogError)
    err.file, err.row, err.column = d["file"], d["row"], d["column"]
    Exception.__init__(err, d["message"])
    return err
