"""Server-side batching of concurrent requests, configured like TF Serving's.

TF Serving's `--enable_batching --batching_parameters_file=F` merges the inputs of
concurrent requests of one model version and signature along dimension 0, runs them
once, and splits the outputs back. This module does the same for the local server,
with TF Serving's parameters and their meaning (its `shared_batch_scheduler.h`):

- `max_batch_size`: the most examples (not requests) in one batch; a request larger
  than that is refused (`INVALID_ARGUMENT`);
- `batch_timeout_micros`: how long the first request of an open batch waits for
  others before the batch runs anyway;
- `max_enqueued_batches`: batches a queue (one per model version and signature) may
  hold, the open one included; a request that needs one more is answered
  `UNAVAILABLE` ("The batch scheduling queue to which this task was submitted is
  full"), at once, as TF Serving answers; the client retries with backoff
  (`serving.client`);
- `num_batch_threads`: threads that run batches, shared by all queues;
- `allowed_batch_sizes`: a batch is padded (with copies of its first example) up to
  the next allowed size, so the graph sees few shapes; the last must equal
  `max_batch_size`;
- `pad_variable_length_inputs`: inputs whose other dimensions differ between requests
  are padded (zeros, empty strings) instead of refused.

Only requests whose inputs all share dimension 0, on signatures whose inputs all have
a free batch dimension, are batched. Others (the ranking signature's one `context`
beside N `candidates`) run on their own: TF Serving would refuse them ("Batching
Run() input tensors must have equal 0th-dimension size"); PITFALLS.md "Serving" says
why ranking is served without batching. A request whose deadline passes while it
waits is dropped from its batch, unrun, and answered `DEADLINE_EXCEEDED`.

The parameters file is a `tensorflow.serving.BatchingParameters` in text format.
The `tensorflow-serving-api` package ships no class for that message, so
`BATCHING_PARAMETERS` is built here (`serving.protos`) from the field names, numbers
and types of tensorflow_serving/servables/tensorflow/session_bundle_config.proto
(fields 1-7), and the file is parsed with protobuf's own text format parser.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import grpc
import numpy as np
from google.protobuf import descriptor_pb2

from serving.protos import message_class, parse_text
from serving.served_model import ServedModel, ServingError

_LOG = logging.getLogger(__name__)

QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


_F = descriptor_pb2.FieldDescriptorProto
BATCHING_PARAMETERS = message_class(  # the module docstring says why it is built here
    "tensorflow.serving", "daian_serving/batching_parameters.proto", {
        "BatchingParameters": [
            (1, "max_batch_size", _F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
            (2, "batch_timeout_micros", _F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
            (3, "max_enqueued_batches", _F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
            (4, "num_batch_threads", _F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
            (5, "thread_pool_name", _F.TYPE_MESSAGE, ".google.protobuf.StringValue"),
            (6, ("repeated", "allowed_batch_sizes"), _F.TYPE_INT64, None),
            (7, "pad_variable_length_inputs", _F.TYPE_BOOL, None)]},
    "BatchingParameters")


@dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's batching parameters; unset ones take its defaults
    (SharedBatchScheduler's queue options; threads: the machine's cores)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self):
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"batching parameter {name} must be >= 1, got "
                                 f"{getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError("batching parameter batch_timeout_micros must be >= 0, "
                             f"got {self.batch_timeout_micros}")
        sizes = list(self.allowed_batch_sizes)
        if sizes and (sizes != sorted(set(sizes)) or sizes[-1] != self.max_batch_size
                      or sizes[0] < 1):
            raise ValueError(
                f"allowed_batch_sizes {sizes} must increase and end with "
                f"max_batch_size ({self.max_batch_size}), as TF Serving requires")


def parse_batching_parameters(text: str, source: str = "<string>"
                              ) -> BatchingParameters:
    """A `--batching_parameters_file`'s content as `BatchingParameters`.

    Raises:
        ValueError: not a BatchingParameters in text format (the parser's line and
            column named), or values TF Serving refuses.
    """
    message = parse_text(BATCHING_PARAMETERS, text, source)
    given = {}
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                 "num_batch_threads"):
        if message.HasField(name):
            given[name] = getattr(message, name).value
    try:
        return BatchingParameters(
            **given, allowed_batch_sizes=tuple(message.allowed_batch_sizes),
            pad_variable_length_inputs=message.pad_variable_length_inputs)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e


def read_batching_parameters(path: str | Path) -> BatchingParameters:
    """Reads a `--batching_parameters_file` (see `parse_batching_parameters`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"batching parameters file {str(path)!r} does not exist")
    return parse_batching_parameters(path.read_text(), str(path))


class _Task:
    """One request waiting in a batch."""

    def __init__(self, arrays: dict[str, np.ndarray], size: int,
                 output_names: list[str], deadline: Optional[float]):
        self.arrays = arrays
        self.size = size
        self.output_names = output_names
        self.deadline = deadline
        self.done = threading.Event()
        self.result: Optional[dict[str, np.ndarray]] = None
        self.error: Optional[BaseException] = None
        self.abandoned = False  # its caller gave up (deadline); not computed

    def finish(self, result=None, error=None) -> None:
        self.result, self.error = result, error
        self.done.set()


class _Batch:
    def __init__(self):
        self.tasks: list[_Task] = []
        self.size = 0
        self.opened = time.monotonic()
        self.closed = False


class BatchScheduler:
    """Batches `serving_default`-style requests; see the module docstring.

    Args:
        params: the batching parameters.
    """

    def __init__(self, params: BatchingParameters):
        self.params = params
        self._cond = threading.Condition()
        # (id of the ServedModel, signature) -> (model, signature, deque of batches)
        self._queues: dict[tuple[int, str], tuple[ServedModel, str, deque]] = {}
        self._stopped = False
        self.batches_run = 0
        self.tasks_run = 0
        self._threads = [threading.Thread(target=self._work, name=f"batch-{i}",
                                          daemon=True)
                         for i in range(params.num_batch_threads)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()

    @staticmethod
    def task_size(model: ServedModel, signature_name: str,
                  arrays: dict[str, np.ndarray]) -> Optional[int]:
        """The request's batch size if it can be batched (module docstring), else
        None."""
        if not model.batchable(signature_name):
            return None
        sizes = {a.shape[0] for a in arrays.values() if a.ndim}
        if len(sizes) != 1 or any(a.ndim == 0 for a in arrays.values()):
            return None
        return sizes.pop()

    def run(self, model: ServedModel, signature_name: str,
            arrays: dict[str, np.ndarray], output_names: list[str], size: int,
            timeout_s: Optional[float]) -> dict[str, np.ndarray]:
        """Runs one request inside a batch; blocks until its outputs are ready.

        Raises:
            ServingError: INVALID_ARGUMENT (larger than max_batch_size), UNAVAILABLE
                (queue full), DEADLINE_EXCEEDED (the deadline passed first).
        """
        p = self.params
        if size > p.max_batch_size:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Task size {size} is larger than maximum input batch size "
                f"{p.max_batch_size}")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        task = _Task(arrays, size, output_names, deadline)
        key = (id(model), signature_name)
        with self._cond:
            if key not in self._queues:
                self._queues[key] = (model, signature_name, deque())
            batches = self._queues[key][2]
            last = batches[-1] if batches and not batches[-1].closed else None
            if last is None or last.size + size > p.max_batch_size:
                if last is not None:
                    last.closed = True
                if len(batches) >= p.max_enqueued_batches:
                    raise ServingError(grpc.StatusCode.UNAVAILABLE, QUEUE_FULL)
                last = _Batch()
                batches.append(last)
            last.tasks.append(task)
            last.size += size
            if last.size >= p.max_batch_size:
                last.closed = True
            self._cond.notify()
        if not task.done.wait(timeout=timeout_s):
            with self._cond:
                task.abandoned = True
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                               "deadline exceeded while the request waited in a batch")
        if task.error is not None:
            raise task.error
        return task.result

    def _next_batch(self):
        """Under the lock: (model, signature, batch) ready to run, or the seconds to
        wait for the earliest open batch's timeout (None: nothing queued)."""
        timeout_s = self.params.batch_timeout_micros / 1e6
        now = time.monotonic()
        wait = None
        for key, (model, signature, batches) in list(self._queues.items()):
            if not batches:
                continue
            first = batches[0]
            due = first.opened + timeout_s
            if first.closed or due <= now:
                batches.popleft()
                if not batches:
                    del self._queues[key]
                return (model, signature, first), None
            wait = due - now if wait is None else min(wait, due - now)
        return None, wait

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    ready, wait = self._next_batch()
                    if ready is not None:
                        break
                    self._cond.wait(timeout=wait)
                model, signature, batch = ready
                now = time.monotonic()
                tasks = []
                for task in batch.tasks:
                    if task.abandoned or (task.deadline is not None
                                          and task.deadline <= now):
                        task.finish(error=ServingError(
                            grpc.StatusCode.DEADLINE_EXCEEDED,
                            "deadline exceeded before the batch ran; not computed"))
                    else:
                        tasks.append(task)
            if tasks:
                self._run_batch(model, signature, tasks)

    def _run_batch(self, model: ServedModel, signature: str,
                   tasks: list[_Task]) -> None:
        try:
            arrays = self._merge([t.arrays for t in tasks])
            total = sum(t.size for t in tasks)
            padded = self._padded_size(total)
            if padded > total:
                arrays = {n: np.concatenate([a, np.repeat(a[:1], padded - total, 0)])
                          for n, a in arrays.items()}
            names = sorted({n for t in tasks for n in t.output_names})
            outputs = model.run(signature, arrays, names)
            for name, value in outputs.items():
                if value.ndim == 0 or value.shape[0] != padded:
                    raise ServingError(
                        grpc.StatusCode.INTERNAL,
                        f'output "{name}" of signature "{signature}" has shape '
                        f"{list(value.shape)}, not a batch of {padded}: batching "
                        "cannot split it; serve this signature without batching")
        except Exception as e:  # every request of the batch gets the error
            for t in tasks:
                t.finish(error=e)
            return
        start = 0
        for t in tasks:
            t.finish(result={n: outputs[n][start:start + t.size]
                             for n in t.output_names})
            start += t.size
        with self._cond:
            self.batches_run += 1
            self.tasks_run += len(tasks)

    def _padded_size(self, total: int) -> int:
        for allowed in self.params.allowed_batch_sizes:
            if allowed >= total:
                return allowed
        return total

    def _merge(self, inputs: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        merged = {}
        for name in inputs[0]:
            parts = [x[name] for x in inputs]
            tails = {p.shape[1:] for p in parts}
            if len(tails) > 1:
                if not self.params.pad_variable_length_inputs:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Tensors with name '{name}' from different tasks have "
                        "different shapes and padding is turned off. Set "
                        "pad_variable_length_inputs to true, or ensure that all "
                        "tensors with the same name have equal dimensions starting "
                        "with the first dim.")
                parts = _pad_to_common_shape(parts)
            merged[name] = np.concatenate(parts)
        return merged


def _pad_to_common_shape(parts: list[np.ndarray]) -> list[np.ndarray]:
    rank = parts[0].ndim
    if any(p.ndim != rank for p in parts):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           "tensors of different ranks cannot be batched")
    target = [max(p.shape[d] for p in parts) for d in range(1, rank)]
    out = []
    for p in parts:
        widths = [(0, 0)] + [(0, t - s) for t, s in zip(target, p.shape[1:])]
        fill = b"" if p.dtype.kind in "OSU" else 0
        out.append(np.pad(p, widths, constant_values=fill))
    return out
