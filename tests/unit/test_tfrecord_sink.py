"""WriteSortedShards: requests' records become gzipped TFRecord files that TensorFlow's
own reader reads back, record for record, in an order and with bytes fixed by the
records alone."""

from __future__ import annotations

import random
from pathlib import Path

import apache_beam as beam
import pytest
import tensorflow as tf

from daian_tf.data.beam_runners import pipeline_options
from daian_tf.data.tfrecord_sink import (TFRecordBatchSink, WriteSortedShards,
                                        frame_records, shard_of)


def test_tensorflow_reads_the_framing_back(tmp_path):
    records = [b"", b"a", b"\x00\xff" * 1000, "\u00e9".encode("utf-8")]
    path = tmp_path / "plain.tfrecord"
    path.write_bytes(frame_records(records[:2]) + frame_records(records[2:]))
    # TFRecordDataset checks both CRCs of each record and fails on a mismatch
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records


REQUESTS = [(f"r{i:03d}", [f"r{i:03d}-{k}".encode() for k in range(i % 4 + 1)])
            for i in range(60)]


def _write(directory: Path, requests, num_shards: int, **kwargs) -> list:
    with beam.Pipeline(options=pipeline_options()) as p:  # the project's runner
        _ = (p | beam.Create(requests)
             | WriteSortedShards(str(directory / "data"), ".tfrecord.gz", num_shards,
                                 compress_level=1, **kwargs))
    return sorted(directory.glob("data-*.tfrecord.gz"))


def _read(path: Path) -> list:
    return [r.numpy() for r in tf.data.TFRecordDataset(str(path), compression_type="GZIP")]


@pytest.mark.parametrize("run_bytes", [2 ** 26, 40])
def test_each_file_holds_its_hash_shard_sorted_by_request(tmp_path, run_bytes):
    """Brute force: file k holds exactly the requests whose crc32c is k mod n, in id
    order, each request's records in their own order; a file no request reaches is
    written empty. With 40-byte runs a worker spills every request or two, and the
    files are merged from dozens of runs; no run file is left behind."""
    files = _write(tmp_path, REQUESTS, 3, run_bytes=run_bytes)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f.name for f in files]
    assert [f.name for f in files] == [f"data-0000{k}-of-00003.tfrecord.gz"
                                       for k in range(3)]
    for k, path in enumerate(files):
        want = [rec for rid, recs in sorted(REQUESTS) if shard_of(rid, 3) == k
                for rec in recs]
        assert _read(path) == want
    few = _write(tmp_path / "few", REQUESTS[:1], 4, run_bytes=run_bytes)
    assert len(few) == 4 and sum(len(_read(f)) for f in few) == 1


def test_the_order_of_arrival_changes_no_byte(tmp_path):
    """Two runs whose requests arrive in different orders write the same bytes (no
    time, no temporary name in the gzip header; sorted by request id)."""
    shuffled = list(REQUESTS)
    random.Random(1).shuffle(shuffled)
    a = _write(tmp_path / "a", REQUESTS, 2)
    b = _write(tmp_path / "b", shuffled, 2, run_bytes=100)
    assert [f.read_bytes() for f in a] == [f.read_bytes() for f in b]


@pytest.mark.parametrize("kwargs, message", [
    ({"num_shards": 1, "compress_level": 0}, "compress_level must be in 1..9, got 0"),
    ({"num_shards": 0, "compress_level": 1}, "num_shards must be >= 1, got 0"),
    ({"num_shards": 1, "compress_level": 1, "run_bytes": 0}, "run_bytes must be >= 1"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WriteSortedShards("/tmp/x", ".gz", **kwargs)


def test_the_streaming_sink_writes_gzipped_shards(tmp_path):
    """`TFRecordBatchSink` (samples.sort_output: runner): the same records, in bounded
    memory, in the order the runner delivers them."""
    batches = [records for _, records in REQUESTS]
    with beam.Pipeline(options=pipeline_options()) as p:
        _ = (p | beam.Create(batches)
             | beam.io.Write(TFRecordBatchSink(str(tmp_path / "data"), ".tfrecord.gz",
                                               num_shards=2, compress_level=1)))
    shards = sorted(Path(tmp_path).glob("data-*-of-00002.tfrecord.gz"))
    assert len(shards) == 2
    read = [r for s in shards for r in _read(s)]
    assert sorted(read) == sorted(r for b in batches for r in b)


def test_the_builder_sorts_unless_told_to_stream():
    from daian_tf.core.config import SampleConfig
    from daian_tf.data.sample_builder import output_order

    assert SampleConfig().sort_output == "sorted"
    assert output_order(SampleConfig()) == "sorted by request id"
    assert output_order(SampleConfig(sort_output="runner")).startswith(
        "as the runner delivered")
    with pytest.raises(ValueError, match="samples.sort_output must be one of"):
        SampleConfig(sort_output="auto")


def test_many_runs_are_merged_in_passes_of_bounded_fan_in(tmp_path):
    """Brute force: 23 sorted runs merged two at a time end as at most two runs holding
    every entry in order; the inputs are kept (a retried write needs them)."""
    import heapq

    from daian_tf.data.tfrecord_sink import merge_passes, read_run, write_run

    rng = random.Random(0)
    runs, entries = [], []
    for k in range(23):
        run = sorted((f"r{rng.randrange(10 ** 6):07d}", bytes([k]) * rng.randrange(5))
                     for _ in range(rng.randrange(0, 9)))
        entries += run
        runs.append(str(tmp_path / f"in-{k:02d}.run"))
        write_run(runs[-1], run)
    last, written = merge_passes(runs, str(tmp_path / "tmp"), fan_in=2)
    assert len(last) <= 2 and set(last) <= set(written) and len(written) > 11
    assert list(heapq.merge(*(read_run(r) for r in last))) == sorted(entries)
    assert all(Path(r).exists() for r in runs + written)
