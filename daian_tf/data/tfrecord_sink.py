"""Gzipped TFRecord files of a split, written in an order fixed by their content.

The sample builder emits each request's examples as one element `(request_id,
[serialized examples])`. `WriteSortedShards` deals the requests into `num_shards`
files by a hash of the request id, sorts each file's requests by id, and writes it
as `<prefix>-SSSSS-of-NNNNN<suffix>` (the names `WriteToTFRecord` gives): the files
and their bytes are a function of the examples alone, never of the order in which
the runner delivered them (Beam's local runner orders its stages by object identity,
so two runs of the same pipeline may emit the users in two orders). Training reads
the files in that order and shuffles with its seed (`data/dataset.py`), so the same
samples and seed give the same batches.

The sort is an external merge sort, so that memory does not grow with the split:
each worker buffers the requests of its bundle up to `RUN_BYTES` of framed records,
sorts them by file and id, and spills them as one sorted *run* file per output file
into a temporary directory beside the output; the runner then groups the run files'
paths (not the records) by output file, and one worker per file merges its runs
(`heapq.merge`, one request of each run in memory, at most `MAX_FAN_IN` runs open:
more are merged in passes) into the gzipped file, and deletes them. Only the paths travel through the runner's grouping. `TFRecordBatchSink` writes
the same records as they come, in the runner's order, without the temporary runs
(`samples.sort_output: runner`).

Each file is framed and gzipped here, a request's records in one write: gzip level 1
(Beam's own GZIP writer uses zlib's default level 6, which at 1M examples costs about
as much CPU as the whole history join; level 1 takes half of that for files about
1.5x as large). The gzip header holds no time and no name, so the same records give
the same bytes.

TFRecord framing (tensorflow/core/lib/io/record_writer.cc), per record:

    uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)

all little-endian; masked_crc(x) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 mod 2**32.
"""

from __future__ import annotations

import gzip
import heapq
import struct
import uuid
from collections import defaultdict
from typing import Iterable, Iterator, List, Sequence, Tuple

import apache_beam as beam
import google_crc32c
from apache_beam.coders import coders
from apache_beam.io.filebasedsink import FileBasedSink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

_MASK_DELTA = 0xA282EAD8
_UINT32 = 0xFFFFFFFF
RUN_BYTES = 64 * 2 ** 20  # framed records a worker buffers before it spills a run
MAX_FAN_IN = 128  # runs merged at once (open files); more are merged in passes
_RUN_HEAD = struct.Struct("<IQ")  # a run's entry: id length, framed length, id, framed


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _UINT32)


def frame_records(records: Sequence[bytes]) -> bytes:
    """The TFRecord framing of `records`, concatenated."""
    parts = []
    for data in records:
        length = struct.pack("<Q", len(data))
        parts += (length, _masked_crc(length), data, _masked_crc(data))
    return b"".join(parts)


class TFRecordBatchSink(FileBasedSink):
    """Sink for `beam.io.Write`: each element is a sequence of serialized records.

    Args:
      file_path_prefix: path prefix of the shards (e.g. `.../train/data`).
      file_name_suffix: e.g. `.tfrecord.gz`.
      num_shards: number of shards; 0 lets the runner decide.
      compress_level: gzip level, 1 (fastest) to 9 (smallest).
    """

    def __init__(self, file_path_prefix: str, file_name_suffix: str, num_shards: int,
                 compress_level: int):
        if not 1 <= compress_level <= 9:
            raise ValueError(f"compress_level must be in 1..9, got {compress_level}")
        # the file system writes the bytes as they come; this sink gzips them
        super().__init__(file_path_prefix, coders.BytesCoder(),
                         file_name_suffix=file_name_suffix, num_shards=num_shards,
                         compression_type=CompressionTypes.UNCOMPRESSED)
        self.compress_level = compress_level

    def open(self, temp_path: str) -> gzip.GzipFile:
        # no time and no name in the gzip header (GzipFile would take the name of
        # Beam's temporary file): the same records give the same bytes on every run
        return gzip.GzipFile(fileobj=super().open(temp_path), mode="wb", filename="",
                             compresslevel=self.compress_level, mtime=0)

    def write_record(self, file_handle: gzip.GzipFile,
                     value: Sequence[bytes]) -> None:
        file_handle.write(frame_records(value))

    def close(self, file_handle: gzip.GzipFile) -> None:
        raw = file_handle.fileobj  # GzipFile.close leaves a given file object open
        file_handle.close()
        raw.close()


def shard_of(request_id: str, num_shards: int) -> int:
    """The file of a request: a stable hash of its id (crc32c), modulo `num_shards`."""
    return google_crc32c.value(request_id.encode("utf-8")) % num_shards


def write_gzipped(path: str, framed: Iterable[bytes], compress_level: int) -> None:
    """Write `framed` (TFRecord-framed bytes, `frame_records`) gzipped to `path` (any
    Beam filesystem) through a temporary file renamed at the end."""
    temp = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(temp) as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", filename="",
                          compresslevel=compress_level, mtime=0) as out:
        for chunk in framed:
            out.write(chunk)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temp], [path])


def write_run(path: str, entries: Iterable[Tuple[str, bytes]]) -> None:
    """A run file: `(request_id, framed)` entries, in the order given (sorted)."""
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        for rid, framed in entries:
            key = rid.encode("utf-8")
            f.write(_RUN_HEAD.pack(len(key), len(framed)) + key + framed)


def read_run(path: str) -> Iterator[Tuple[str, bytes]]:
    """The entries of a run file, as written."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        while True:
            head = f.read(_RUN_HEAD.size)
            if not head:
                return
            n_key, n_framed = _RUN_HEAD.unpack(head)
            yield f.read(n_key).decode("utf-8"), f.read(n_framed)


def merge_passes(runs: Sequence[str], temp_dir: str,
                 fan_in: int = MAX_FAN_IN) -> Tuple[List[str], List[str]]:
    """At most `fan_in` sorted runs holding the entries of sorted `runs`: groups of
    `fan_in` are merged into new runs in `temp_dir`, pass after pass, so that no more
    than `fan_in` files are ever open. Returns (the runs to merge last, every run
    written here); nothing is deleted, so that a retried write finds its inputs."""
    runs, written = list(runs), []
    while len(runs) > fan_in:
        merged = []
        for i in range(0, len(runs), fan_in):
            path = FileSystems.join(temp_dir, f"merged-{uuid.uuid4().hex}.run")
            write_run(path, heapq.merge(*(read_run(r) for r in runs[i:i + fan_in])))
            merged.append(path)
        written += merged
        runs = merged
    return runs, written


class _SpillRuns(beam.DoFn):
    """`(request_id, [records])` → `(file index, run path)`: each bundle's requests,
    buffered up to `run_bytes` and spilled as one sorted run file per output file."""

    def __init__(self, temp_dir: str, num_shards: int, run_bytes: int):
        self.temp_dir, self.num_shards, self.run_bytes = temp_dir, num_shards, run_bytes

    def start_bundle(self):
        self.buffer, self.size = defaultdict(list), 0

    def process(self, request):
        rid, records = request
        framed = frame_records(records)
        self.buffer[shard_of(rid, self.num_shards)].append((rid, framed))
        self.size += len(framed)
        if self.size >= self.run_bytes:
            yield from self._spill()

    def finish_bundle(self):
        for shard, path in self._spill():
            yield WindowedValue((shard, path), GlobalWindow().max_timestamp(),
                                [GlobalWindow()])

    def _spill(self):
        for shard, entries in sorted(self.buffer.items()):
            entries.sort()  # by id, then by the records: equal ids in a fixed order
            path = FileSystems.join(self.temp_dir, f"{shard:05d}-{uuid.uuid4().hex}.run")
            write_run(path, entries)
            yield shard, path
        self.buffer, self.size = defaultdict(list), 0


class WriteSortedShards(beam.PTransform):
    """`(request_id, [serialized records])` elements → `num_shards` gzipped TFRecord
    files, each holding its requests sorted by id, in bounded memory; returns the
    written paths.

    Args:
      file_path_prefix: path prefix of the files (e.g. `.../train/data`).
      file_name_suffix: e.g. `.tfrecord.gz`.
      num_shards: files to write (>= 1); a file no request hashes to is written empty.
      compress_level: gzip level, 1 (fastest) to 9 (smallest).
      run_bytes: framed records a worker holds before it spills a sorted run.
    """

    def __init__(self, file_path_prefix: str, file_name_suffix: str, num_shards: int,
                 compress_level: int, run_bytes: int = RUN_BYTES):
        super().__init__()
        if not 1 <= compress_level <= 9:
            raise ValueError(f"compress_level must be in 1..9, got {compress_level}")
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        if run_bytes < 1:
            raise ValueError(f"run_bytes must be >= 1, got {run_bytes}")
        self.prefix, self.suffix = file_path_prefix, file_name_suffix
        self.num_shards, self.compress_level = num_shards, compress_level
        self.run_bytes = run_bytes
        # beside the output, so that every worker of a distributed runner reaches it
        self.temp_dir = f"{file_path_prefix}.sort-runs-{uuid.uuid4().hex}"

    def path(self, shard: int) -> str:
        return f"{self.prefix}-{shard:05d}-of-{self.num_shards:05d}{self.suffix}"

    def expand(self, pcoll):
        n = self.num_shards

        def write(kv):
            shard, runs = kv
            runs = sorted(r for r in runs if r is not None)
            last, written = merge_passes(runs, self.temp_dir)
            merged = heapq.merge(*(read_run(r) for r in last))
            path = self.path(shard)
            write_gzipped(path, (framed for _, framed in merged), self.compress_level)
            if runs:
                FileSystems.delete(runs + written)
            return path

        def remove_temp_dir(paths):
            if FileSystems.exists(self.temp_dir):  # left by a retried bundle, if any
                FileSystems.delete([self.temp_dir])
            return paths

        runs = pcoll | "SpillRuns" >> beam.ParDo(_SpillRuns(self.temp_dir, n,
                                                            self.run_bytes))
        # every file gets a key, so that a file without requests is written empty
        empty = (pcoll.pipeline | "Shards" >> beam.Create(list(range(n)))
                 | "EmptyShards" >> beam.Map(lambda k: (k, None)))
        return ((runs, empty) | "Merge" >> beam.Flatten()
                | "GroupRunsByShard" >> beam.GroupByKey()
                | "MergeRuns" >> beam.Map(write)
                | "AllWritten" >> beam.combiners.ToList()
                | "RemoveRuns" >> beam.FlatMap(remove_temp_dir))
