"""TFRecordBatchSink: batches of records become gzipped TFRecord files that
TensorFlow's own reader reads back, record for record."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pytest
import tensorflow as tf

from daian_tf.data.beam_runners import pipeline_options
from daian_tf.data.tfrecord_sink import TFRecordBatchSink, frame_records


def test_tensorflow_reads_the_framing_back(tmp_path):
    records = [b"", b"a", b"\x00\xff" * 1000, "\u00e9".encode("utf-8")]
    path = tmp_path / "plain.tfrecord"
    path.write_bytes(frame_records(records[:2]) + frame_records(records[2:]))
    # TFRecordDataset checks both CRCs of each record and fails on a mismatch
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records


def test_pipeline_writes_gzipped_shards(tmp_path):
    batches = [[f"r{i}-{k}".encode() for k in range(i)] for i in range(1, 30)]
    with beam.Pipeline(options=pipeline_options()) as p:  # the project's runner
        _ = (p | beam.Create(batches)
             | beam.io.Write(TFRecordBatchSink(str(tmp_path / "data"), ".tfrecord.gz",
                                               num_shards=2, compress_level=1)))
    shards = sorted(Path(tmp_path).glob("data-*-of-00002.tfrecord.gz"))
    assert len(shards) == 2
    read = [r.numpy() for r in tf.data.TFRecordDataset(
        [str(s) for s in shards], compression_type="GZIP")]
    assert sorted(read) == sorted(r for b in batches for r in b)


def test_the_same_records_give_the_same_bytes(tmp_path):
    """No run-specific header field (gzip's time, Beam's temporary file name)."""
    files = []
    for run in ("a", "b"):
        with beam.Pipeline(options=pipeline_options()) as p:
            _ = (p | beam.Create([[b"x", b"yz"]])
                 | beam.io.Write(TFRecordBatchSink(str(tmp_path / run / "data"),
                                                   ".tfrecord.gz", num_shards=1,
                                                   compress_level=1)))
        files += list((tmp_path / run).glob("data-*.tfrecord.gz"))
    assert len(files) == 2
    assert files[0].read_bytes() == files[1].read_bytes()


def test_bad_compress_level():
    with pytest.raises(ValueError, match="compress_level must be in 1..9, got 0"):
        TFRecordBatchSink("/tmp/x", ".gz", 0, compress_level=0)
