"""Our progress lines for a local TFX run, from the LocalDagRunner's own log records.

TFX 1.16's `LocalDagRunner` and its `Launcher` log, through absl's Python logger
(logger "absl"), at INFO:

    local_dag_runner.py  'Component %s is running.'     'Component %s is finished.'
                         'Skipping component %s.'
    launcher.py          'A cached execution %d is used.'
                         'Going to run a new execution %d'
                         'Publishing output artifacts %s for execution %s'
                         'Execution %d failed.' (ERROR)

`component_progress()` turns them into lines on stdout,

    [pipeline 12:00:01] Transform: started
    [pipeline 12:00:53] Transform: done in 51.8 s → post_transform_anomalies, ... and 5 more
    [pipeline 12:00:53] Evaluator: done in 9.1 s → blessing (NOT blessed), evaluation
    [pipeline 12:00:53] Pusher: cached (0.4 s)

(after "→": the output keys, with what their artifacts say of the result: a blessing's
BLESSED / NOT_BLESSED marker file, scalar custom properties the launcher's copy carries),

collects each component's wall time (`progress.seconds`, id → seconds; `progress.cached`,
the ids served from the cache) and prints a summary table when the run ends. It knows no
component by name: whatever the pipeline holds is reported.

It is a `logging.Filter` on the "absl" logger, not a handler: it sees every record that
logger makes and passes on only those at the level the logger had (WARNING unless
`--verbose`/`--log-file` asked for INFO), so lowering the level to INFO for the run adds
no INFO lines to stderr. The level is held at INFO for the run (TFX's Beam executors parse
absl's flags, which resets it); a level absl asks for meanwhile becomes the filter's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from typing import Callable, Dict, Iterator, List, Optional, TextIO

_RUNNING = "Component %s is running."
_FINISHED = "Component %s is finished."
_SKIPPED = "Skipping component %s."
_CACHED = "A cached execution %d is used."
_PUBLISHING = "Publishing output artifacts %s for execution %s"
_FAILED = "Execution %d failed."


# custom properties every artifact carries (bookkeeping, not a result)
_BOOKKEEPING = {"tfx_version", "name", "producer_component", "state", "is_external",
                "span", "version", "payload_format", "artifact_uri"}


def _properties(artifacts) -> str:
    """What a component's output artifacts say of its result, short: a blessing's
    marker file (`BLESSED` / `NOT blessed`) and scalar custom properties (`blessed=1`,
    counts) as far as the launcher's copy of the artifacts carries them: ` (...)`."""
    found = []
    for artifact in artifacts or ():
        uri = getattr(artifact, "uri", "")
        # a blessing (Evaluator, InfraValidator, a gate) marks its directory with a file
        for marker, text in (("BLESSED", "BLESSED"), ("NOT_BLESSED", "NOT blessed"),
                             ("INFRA_BLESSED", "INFRA BLESSED"),
                             ("INFRA_NOT_BLESSED", "INFRA NOT blessed")):
            if uri and "://" not in uri and os.path.exists(os.path.join(uri, marker)):
                found.append(text)
        mlmd = getattr(artifact, "mlmd_artifact", None)
        if mlmd is None:
            continue
        for key, value in sorted(mlmd.custom_properties.items()):
            if key in _BOOKKEEPING or key.startswith("__"):
                continue
            kind = value.WhichOneof("value")
            if kind not in ("int_value", "double_value", "string_value"):
                continue
            v = getattr(value, kind)
            text = f"{v:.4g}" if kind == "double_value" else str(v)
            if len(text) <= 40:
                found.append(f"{key}={text}")
    return f" ({', '.join(found[:4])})" if found else ""


def _now() -> str:
    return time.strftime("%H:%M:%S")


class PipelineProgress(logging.Filter):
    """Per-component progress of one local run (see the module docstring)."""

    def __init__(self, pass_level: int = logging.WARNING, stream: Optional[TextIO] = None,
                 clock: Callable[[], float] = time.monotonic, prefix: str = "pipeline"):
        super().__init__()
        self.pass_level = pass_level
        self.stream = stream
        self.clock = clock
        self.prefix = prefix
        self.seconds: Dict[str, float] = {}
        self.cached: List[str] = []
        self.skipped: List[str] = []
        self.failed: Optional[str] = None
        self.outputs: Dict[str, List[str]] = {}
        self._current: Optional[str] = None
        self._started_at = 0.0
        self._lock = threading.Lock()

    # -- output ---------------------------------------------------------------------
    def say(self, msg: str) -> None:
        stream = self.stream or sys.stdout
        print(f"[{self.prefix} {_now()}] {msg}", file=stream, flush=True)

    # -- the records -----------------------------------------------------------------
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._observe(record)
        except Exception:  # a progress line is never worth breaking the run
            pass
        return record.levelno >= self.pass_level

    def _observe(self, record: logging.LogRecord) -> None:
        msg, args = record.msg, record.args
        if not isinstance(msg, str) or not isinstance(args, tuple):
            return
        with self._lock:
            if msg == _RUNNING and args:
                self._current = str(args[0])
                self._started_at = self.clock()
                self.say(f"{self._current}: started")
            elif msg == _FINISHED and args:
                node = str(args[0])
                took = self.clock() - self._started_at if node == self._current else 0.0
                self.seconds[node] = round(took, 1)
                outputs = self.outputs.get(node)
                if node in self.cached:
                    self.say(f"{node}: cached ({took:.1f} s)")
                else:
                    detail = ""
                    if outputs:
                        more = len(outputs) - 3
                        detail = " → " + ", ".join(outputs[:3]) + (
                            f" and {more} more" if more > 0 else "")
                    self.say(f"{node}: done in {took:.1f} s{detail}")
                self._current = None
            elif msg == _SKIPPED and args:
                self.skipped.append(str(args[0]))
                self.say(f"{args[0]}: skipped")
            elif msg == _CACHED and self._current:
                self.cached.append(self._current)
            elif msg == _PUBLISHING and self._current and args:
                items = getattr(args[0], "items", None)
                if items is not None:
                    self.outputs[self._current] = sorted(
                        key + _properties(artifacts) for key, artifacts in items())
            elif msg == _FAILED and self._current:
                self.failed = self._current

    def fail(self) -> None:
        """The run raised while a component was running."""
        node = self.failed or self._current
        if node is None:
            return
        took = self.clock() - self._started_at
        self.failed = node
        self.say(f"{node}: FAILED after {took:.1f} s (the error follows)")

    # -- the summary -----------------------------------------------------------------
    def table(self) -> str:
        """One row a component: its id, what happened, its wall time."""
        rows = [(node, "cached" if node in self.cached else "ran", f"{sec:.1f}")
                for node, sec in self.seconds.items()]
        rows += [(node, "skipped", "-") for node in self.skipped]
        if self.failed and self.failed not in self.seconds:
            rows.append((self.failed, "FAILED", "-"))
        total = f"{sum(self.seconds.values()):.1f}"
        rows.append(("total", "", total))
        width = max([len("component")] + [len(r[0]) for r in rows])
        lines = [f"{'component':<{width}}  {'status':<7}  {'seconds':>8}",
                 f"{'-' * width}  {'-' * 7}  {'-' * 8}"]
        for i, (node, status, sec) in enumerate(rows):
            if i == len(rows) - 1:
                lines.append(f"{'-' * width}  {'-' * 7}  {'-' * 8}")
            lines.append(f"{node:<{width}}  {status:<7}  {sec:>8}")
        return "\n".join(lines)


@contextlib.contextmanager
def component_progress(stream: Optional[TextIO] = None,
                       summary: bool = True) -> Iterator[PipelineProgress]:
    """Progress lines for the `LocalDagRunner().run(...)` inside the block; yields the
    `PipelineProgress` (`.seconds`, `.cached`, `.table()`) and prints its table at the
    end unless `summary=False`."""
    # make sure absl's logger exists with its own level before we change it
    from absl import logging as _absl_logging  # noqa: F401

    absl_logger = logging.getLogger("absl")
    progress = PipelineProgress(pass_level=absl_logger.getEffectiveLevel(),
                                stream=stream)
    # TFX's Beam executors parse absl's flags, which sets the absl logger's level back
    # to the --verbosity default (WARNING): the level is held at INFO for the run and
    # what absl asks for becomes the level the filter passes on.
    pinned = absl_logger.__dict__.get("setLevel")  # daian_tf.core.console's, if any
    requested = [absl_logger.level]

    def set_level(level) -> None:
        if pinned is not None:
            pinned(level)
            return
        requested[0] = logging._checkLevel(level)  # noqa: SLF001 (as Logger.setLevel)
        progress.pass_level = (requested[0] if requested[0] != logging.NOTSET
                               else logging.getLogger().getEffectiveLevel())

    absl_logger.addFilter(progress)
    logging.Logger.setLevel(absl_logger, min(absl_logger.getEffectiveLevel(),
                                             logging.INFO))
    absl_logger.setLevel = set_level
    t0 = time.monotonic()
    try:
        yield progress
    except BaseException:
        progress.fail()
        raise
    finally:
        absl_logger.removeFilter(progress)
        if pinned is not None:
            absl_logger.setLevel = pinned
        else:
            del absl_logger.setLevel
            absl_logger.setLevel(requested[0])
    if summary and (progress.seconds or progress.skipped):
        progress.say(f"finished in {time.monotonic() - t0:.1f} s")
        print(progress.table(), file=stream or sys.stdout, flush=True)
