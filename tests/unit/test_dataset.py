"""`make_dataset` and `load_split` on tiny transformed TFRecords written here.

Every example `i` is a pure function of `i` (`_row`), and carries `i` itself as the
target item id, so each returned row can be checked field by field against the
data that was written, whatever the order the dataset serves it in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from daian_tf.core import features as F
from daian_tf.core.names import CACHE_MEMORY, CACHE_NONE, SHUFFLE_REQUEST
from daian_tf.data.dataset import (LABEL_XF, file_shard, load_split, make_dataset,
                                   matching_files, model_input_keys)

N = 50  # examples, over 3 files of 17, 17, 16
T = 4  # history length
LEVELS = 3  # width of the float vector feature
BIG = 2 ** 40  # an int64 value beyond int32

ROW = F.xf(F.TARGET_ITEM_ID)  # int64 (), the row number i
HIST = F.xf(F.HIST_ITEM_ID)  # int64 (T,)
WIDE = F.xf(F.TARGET_SHOP_ID)  # int64 (), values beyond int32
VEC = F.xf(F.INTENT_LABEL)  # float32 (LEVELS,)
RAW_ID = F.raw(F.TARGET_ITEM_ID)  # string ()
RAW_HIST = F.raw(F.HIST_ITEM_ID)  # string (T,)
INPUTS = [ROW, HIST, WIDE, VEC, RAW_ID, RAW_HIST]

SPEC = {
    ROW: tf.io.FixedLenFeature([], tf.int64),
    HIST: tf.io.FixedLenFeature([T], tf.int64),
    WIDE: tf.io.FixedLenFeature([], tf.int64),
    VEC: tf.io.FixedLenFeature([LEVELS], tf.float32),
    RAW_ID: tf.io.FixedLenFeature([], tf.string),
    RAW_HIST: tf.io.FixedLenFeature([T], tf.string),
    LABEL_XF: tf.io.FixedLenFeature([], tf.int64),
    F.USER_KEY: tf.io.FixedLenFeature([], tf.string),
    F.REQUEST_KEY: tf.io.FixedLenFeature([], tf.string),
}
REQUEST_SIZE = 4  # example i belongs to request i // 4, stored together; requests 4
REQUESTS = 13  # and 8 are cut by a file's end (rows 16-19 and 32-35)
FILE_RUNS = 15  # (request, file) pairs


class FakeTransformOutput:
    """The one method of `tft.TFTransformOutput` that the dataset code calls."""

    def __init__(self, spec: dict):
        self._spec = spec

    def transformed_feature_spec(self) -> dict:
        return dict(self._spec)


def _row(i: int) -> dict:
    """The values of example i, as numpy arrays (the reference)."""
    return {
        ROW: np.int64(i),
        HIST: np.arange(i, i + T, dtype=np.int64),
        WIDE: np.int64(BIG + i),
        VEC: (i / 8.0 + np.arange(LEVELS)).astype(np.float32),
        RAW_ID: f"item{i}".encode(),
        RAW_HIST: np.array([f"h{i}_{t}".encode() for t in range(T)], dtype=object),
        LABEL_XF: np.int64(i % 3 == 0),
        F.USER_KEY: f"user{i % 7}".encode(),
        F.REQUEST_KEY: f"request{i // REQUEST_SIZE}".encode(),
    }


def _example(i: int) -> bytes:
    feats = {}
    for key, value in _row(i).items():
        values = np.atleast_1d(value).tolist()
        if SPEC[key].dtype == tf.int64:
            feats[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        elif SPEC[key].dtype == tf.float32:
            feats[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        else:
            feats[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    return tf.train.Example(
        features=tf.train.Features(feature=feats)).SerializeToString()


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> str:
    """N examples over 3 gzipped files; returns their glob."""
    folder = tmp_path_factory.mktemp("transformed")
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for shard, rows in enumerate(np.array_split(np.arange(N), 3)):
        with tf.io.TFRecordWriter(str(folder / f"data-{shard}.tfrecord.gz"),
                                  options) as writer:
            for i in rows:
                writer.write(_example(int(i)))
    return str(folder / "data-*.tfrecord.gz")


@pytest.fixture(scope="module")
def tfo() -> FakeTransformOutput:
    return FakeTransformOutput(SPEC)


def _collect(ds) -> list:
    """Every batch of `ds` as numpy: a list of (inputs, label[, user]) tuples."""
    return [tuple({k: v.numpy() for k, v in part.items()} if isinstance(part, dict)
                  else part.numpy() for part in batch) for batch in ds]


def _rows_of(batches) -> np.ndarray:
    return np.concatenate([inputs[ROW] for inputs, *_ in batches])


def _check_against_reference(batches, with_user_key: bool) -> None:
    """Each row's every field equals what was written for that row."""
    for batch in batches:
        inputs, label = batch[0], batch[1]
        for j, i in enumerate(inputs[ROW]):
            ref = _row(int(i))
            for key in INPUTS:
                np.testing.assert_array_equal(inputs[key][j], ref[key], err_msg=key)
            assert label[j] == float(ref[LABEL_XF])
            if with_user_key:
                assert batch[2][j] == ref[F.USER_KEY]


@pytest.mark.parametrize("cache", [CACHE_NONE, CACHE_MEMORY])
def test_rows_dtypes_and_shapes_match_the_spec(split, tfo, cache):
    batches = _collect(make_dataset(split, tfo, 16, shuffle=False, input_keys=INPUTS,
                                    with_user_key=True, cache=cache))
    assert [len(b[1]) for b in batches] == [16, 16, 16, 2]
    assert sorted(_rows_of(batches)) == list(range(N))
    _check_against_reference(batches, with_user_key=True)
    spec_ds = make_dataset(split, tfo, 16, shuffle=False, input_keys=INPUTS,
                           cache=cache).element_spec
    inputs_spec, label_spec = spec_ds
    assert label_spec.dtype == tf.float32 and label_spec.shape.as_list() == [None]
    for key in INPUTS:
        assert inputs_spec[key].dtype == SPEC[key].dtype, key
        assert inputs_spec[key].shape.as_list() == [None] + list(SPEC[key].shape), key


def test_memory_and_streaming_agree_without_shuffle(split, tfo):
    streamed = _collect(make_dataset(split, tfo, 8, shuffle=False, input_keys=INPUTS,
                                     cache=CACHE_NONE))
    held = _collect(make_dataset(split, tfo, 8, shuffle=False, input_keys=INPUTS,
                                 cache=CACHE_MEMORY))
    np.testing.assert_array_equal(_rows_of(streamed), _rows_of(held))


@pytest.mark.parametrize("cache", [CACHE_NONE, CACHE_MEMORY])
def test_seeded_shuffle_is_a_repeatable_permutation_per_epoch(split, tfo, cache):
    def order(seed):
        ds = make_dataset(split, tfo, 7, shuffle=True, seed=seed, num_epochs=2,
                          input_keys=INPUTS, shuffle_buffer=N, cache=cache)
        batches = _collect(ds)
        _check_against_reference(batches, with_user_key=False)
        return _rows_of(batches)

    first = order(seed=3)
    assert len(first) == 2 * N
    epoch1, epoch2 = first[:N], first[N:]
    assert sorted(epoch1) == sorted(epoch2) == list(range(N))  # each row once a epoch
    assert not np.array_equal(epoch1, np.arange(N))  # shuffled
    assert not np.array_equal(epoch1, epoch2)  # reshuffled each epoch
    np.testing.assert_array_equal(order(seed=3), first)  # same seed, same order
    assert not np.array_equal(order(seed=4), first)


def test_memory_mode_repeats_forever_with_no_epoch_count(split, tfo):
    ds = make_dataset(split, tfo, 32, shuffle=True, seed=0, num_epochs=None,
                      input_keys=[ROW], cache=CACHE_MEMORY)
    rows = _rows_of(_collect(ds.take(5)))  # 160 rows: 3 epochs and a part
    assert len(rows) == 160
    for epoch in range(3):
        assert sorted(rows[epoch * N:(epoch + 1) * N]) == list(range(N))


def test_load_split_narrows_small_ints_and_keeps_the_rest(split, tfo):
    tensors = load_split(split, tfo, [ROW, HIST, WIDE, VEC, RAW_HIST])
    assert tensors[ROW].dtype == tf.int32 and tensors[HIST].dtype == tf.int32
    assert tensors[WIDE].dtype == tf.int64  # beyond int32: kept exact
    assert tensors[VEC].dtype == tf.float32 and tensors[RAW_HIST].dtype == tf.string
    assert tensors[HIST].shape == (N, T) and tensors[VEC].shape == (N, LEVELS)
    assert sorted(tensors[WIDE].numpy() - BIG) == list(range(N))


def test_model_input_keys_leave_out_labels_and_pass_through_columns(tfo):
    keys = model_input_keys(tfo)
    assert LABEL_XF not in keys and F.USER_KEY not in keys and VEC not in keys
    assert F.REQUEST_KEY not in keys
    assert set(keys) == {ROW, HIST, WIDE, RAW_ID, RAW_HIST}


def test_errors_name_what_is_wrong(split, tfo, tmp_path: Path):
    with pytest.raises(ValueError, match="cache must be one of"):
        make_dataset(split, tfo, 4, shuffle=False, cache="disk")
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(split, tfo, 0, shuffle=False)
    with pytest.raises(ValueError, match="shuffle_unit must be one of"):
        make_dataset(split, tfo, 4, shuffle=True, shuffle_unit="user")
    with pytest.raises(ValueError, match="not_a_feature"):
        make_dataset(split, tfo, 4, shuffle=False, input_keys=["not_a_feature"])
    with pytest.raises(FileNotFoundError, match="no file matches"):
        make_dataset(str(tmp_path / "none-*.gz"), tfo, 4, shuffle=False,
                     cache=CACHE_MEMORY)
    varlen = FakeTransformOutput({**SPEC, HIST: tf.io.VarLenFeature(tf.int64)})
    with pytest.raises(ValueError, match="fixed-length"):
        make_dataset(split, varlen, 4, shuffle=False, input_keys=[HIST],
                     cache=CACHE_MEMORY)
    empty = tmp_path / "empty-0.tfrecord.gz"
    tf.io.TFRecordWriter(str(empty), "GZIP").close()
    with pytest.raises(ValueError, match="no example"):
        make_dataset(str(empty), tfo, 4, shuffle=False, cache=CACHE_MEMORY)


@pytest.mark.parametrize("cache", [CACHE_NONE, CACHE_MEMORY])
def test_request_shuffle_keeps_each_request_together(split, tfo, cache):
    """`shuffle_unit="request"`: each epoch serves every row once, a request's rows
    next to each other (streaming: those stored in one file), the requests in a new
    seeded order each epoch."""
    def order(seed):
        ds = make_dataset(split, tfo, 7, shuffle=True, seed=seed, num_epochs=2,
                          input_keys=INPUTS, cache=cache, shuffle_buffer=N,
                          shuffle_unit=SHUFFLE_REQUEST)
        batches = _collect(ds)
        _check_against_reference(batches, with_user_key=False)
        assert F.REQUEST_KEY not in batches[0][0]  # read for grouping, not served
        return _rows_of(batches)

    first = order(seed=3)
    requests = []
    for rows in (first[:N], first[N:]):
        assert sorted(rows) == list(range(N))
        request = rows // REQUEST_SIZE
        runs = [request[0]] + [r for a, r in zip(request, request[1:]) if a != r]
        assert set(runs) == set(range(REQUESTS))
        if cache == CACHE_MEMORY:
            assert len(runs) == REQUESTS  # one run per request
        else:  # one per request and file (two may meet by chance)
            assert REQUESTS <= len(runs) <= FILE_RUNS
        requests.append(runs)
    assert requests[0] != requests[1]  # reshuffled each epoch
    assert requests[0] != sorted(requests[0])
    np.testing.assert_array_equal(order(seed=3), first)
    assert not np.array_equal(order(seed=4), first)


@pytest.mark.parametrize("cache", [CACHE_NONE, CACHE_MEMORY])
@pytest.mark.parametrize("unit", ["example", SHUFFLE_REQUEST])
def test_each_new_iteration_is_a_new_order(split, tfo, cache, unit):
    """Keras' fit iterates a one-epoch dataset anew every epoch: each pass must be a
    new order (a memory-mode bug once served the same order every epoch), and a
    dataset built with the same seed repeats the same sequence of orders."""
    def passes(count):
        ds = make_dataset(split, tfo, 8, shuffle=True, seed=5, num_epochs=1,
                          input_keys=[ROW], cache=cache, shuffle_buffer=N,
                          shuffle_unit=unit)
        return [_rows_of(_collect(ds)) for _ in range(count)]

    first, second, third = passes(3)
    for rows in (first, second, third):
        assert sorted(rows) == list(range(N))
    assert not np.array_equal(first, second) and not np.array_equal(second, third)
    again = passes(2)
    np.testing.assert_array_equal(again[0], first)
    np.testing.assert_array_equal(again[1], second)


def test_file_shard_deals_whole_files_or_falls_back_to_elements():
    files = ["c", "a", "b"]
    assert file_shard(files, (2, 0)) == (["a", "c"], False)
    assert file_shard(files, (2, 1)) == (["b"], False)
    assert file_shard(files, (3, 2)) == (["c"], False)
    assert file_shard(files, (4, 1)) == (["a", "b", "c"], True)  # fewer files: elements
    assert file_shard(files, (1, 0)) == (["a", "b", "c"], False)
    for bad in ((0, 0), (2, 2), (2, -1)):
        with pytest.raises(ValueError, match="shard must be"):
            file_shard(files, bad)


def _shard_rows(split, tfo, shards, cache, unit, shuffle):
    """Rows of every shard of `shards`, one epoch each, and (streaming, requests) the
    request runs of each."""
    out = []
    for index in range(shards):
        ds = make_dataset(split, tfo, 5, shuffle=shuffle, seed=7, input_keys=[ROW],
                          cache=cache, shuffle_buffer=N, shuffle_unit=unit,
                          shard=(shards, index))
        out.append(_rows_of(_collect(ds)))
    return out


@pytest.mark.parametrize("cache", [CACHE_NONE, CACHE_MEMORY])
@pytest.mark.parametrize("unit", ["example", SHUFFLE_REQUEST])
@pytest.mark.parametrize("shards", [2, 3, 4])  # file-level (2, 3), by element (4)
@pytest.mark.parametrize("shuffle", [False, True])
def test_shards_are_disjoint_and_hold_every_example_once(split, tfo, cache, unit,
                                                         shards, shuffle):
    parts = _shard_rows(split, tfo, shards, cache, unit, shuffle)
    assert all(len(rows) > 0 for rows in parts)
    every = np.concatenate(parts)
    assert sorted(every) == list(range(N))  # no row twice, none missing
    files = matching_files(split)
    assert len(files) == 3
    if shards <= len(files):  # file-level: shard i holds exactly the rows of its files
        bounds = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(N), 3)])
        for index, rows in enumerate(parts):
            mine = file_shard(files, (shards, index))[0]
            expected = np.concatenate([np.arange(bounds[files.index(f)],
                                                 bounds[files.index(f) + 1])
                                       for f in mine])
            assert sorted(rows) == sorted(expected)


def test_request_runs_stay_whole_within_a_data_level_shard(split, tfo):
    """Streaming with `shuffle_unit="request"` keeps every n-th request run (not every
    n-th record): a request's rows stored together in a file land in one shard."""
    parts = _shard_rows(split, tfo, 4, CACHE_NONE, SHUFFLE_REQUEST, shuffle=True)
    owner = {}
    for index, rows in enumerate(parts):
        for i in rows:
            file_of = int(np.searchsorted(
                np.cumsum([len(a) for a in np.array_split(np.arange(N), 3)]), i,
                side="right"))
            key = (int(i) // REQUEST_SIZE, file_of)  # one run per (request, file)
            assert owner.setdefault(key, index) == index
    assert len(owner) == FILE_RUNS
