"""tf.data input of the models: transformed gzipped TFRecords → (inputs, label).

Two ways to serve the same batches (`make_dataset(cache=...)`):

- `"none"` (streaming): records are read from the files (files interleaved in
  parallel), shuffled in a buffer of serialized examples, batched, and parsed with one
  vectorised `tf.io.parse_example` per batch (parallel calls), then prefetched. Memory
  stays flat whatever the split's size; every epoch decompresses and parses again.
- `"memory"`: the split is read and parsed once (`load_split`) into one tensor per
  feature, `(N, ...)`, and batches are served by gathering rows at shuffled indices:
  a full shuffle of the whole split each epoch (not a buffer), no parsing after the
  first pass. Integer features whose values fit in int32 are held as int32 and cast
  back to the spec's dtype per batch. Memory: about 4 bytes per int or float value
  held (8 for int64 values beyond int32), plus the strings; for the DIN inputs of
  `core/base.yaml` (3 histories of 50 ids, 15 scalar ids, the label) that is
  about 0.7 kB per example, 700 MB per million examples.

With `shuffle_unit="request"` (both modes) whole requests are shuffled instead of
examples (the order of the requests changes each epoch, a request's examples stay
together), so a batch holds all candidates of about `batch_size / candidates` requests,
and DAIAN's request side runs once per request (`layers/request_rows.py`). Streaming
finds the requests as runs of consecutive records (`request_runs`); the in-memory mode
groups the rows by request id, wherever they are stored.

Only the features the model reads are parsed (and held). In both modes a seeded
dataset gives the same batches, in the same order, on every run.

`make_dataset(shard=(num_shards, index))` serves one worker's part of a split, for
multi-worker training (`training/multi_worker.py`): the sorted file list is dealt out
file by file (`file_shard`) when there are at least as many files as shards, else every
worker reads every file and keeps every `num_shards`-th element of the interleaved
stream (a request run with `shuffle_unit="request"` while streaming, else a record).
Either way the shards are disjoint and together hold every example once.
"""

from __future__ import annotations

import logging
import random
from typing import Dict, Optional, Sequence, Tuple, Union

import tensorflow as tf

from daian_tf.core import features as F
from daian_tf.core.names import (CACHE_MEMORY, CACHE_MODES, CACHE_NONE, SHUFFLE_EXAMPLE,
                                  SHUFFLE_REQUEST, SHUFFLE_UNITS)

LABEL_XF = F.xf(F.LABEL)
_NON_INPUT_KEYS = frozenset({F.xf(k) for k in F.LABEL_KEYS} | set(F.PASSTHROUGH_KEYS))
_LOAD_BATCH = 8192  # records per `parse_example` call while loading a split
_RUN_CHUNK = 1024  # records read at a time to cut into request runs
_GROUPS_PER_GATHER = 256  # shuffled groups turned into row indices at a time
_INT32_MIN, _INT32_MAX = -2 ** 31, 2 ** 31 - 1

FilePattern = Union[str, Sequence[str]]
Shard = Tuple[int, int]  # (number of shards, this shard's index)

logger = logging.getLogger(__name__)


def model_input_keys(tf_transform_output) -> list:
    """Every transformed feature that may be a model input (no labels, no
    pass-through columns such as the user key)."""
    return sorted(set(tf_transform_output.transformed_feature_spec()) - _NON_INPUT_KEYS)


def _parse_spec(tf_transform_output, keys: Sequence[str],
                with_user_key: bool) -> dict:
    """The transformed spec of `keys`, the label and (optionally) the user key."""
    spec = tf_transform_output.transformed_feature_spec()
    unknown = sorted(set(keys) - set(spec))
    if unknown:
        raise ValueError(f"make_dataset: input_keys {unknown} are not transformed "
                         f"features; known: {sorted(spec)}")
    wanted = list(keys) + [LABEL_XF] + ([F.USER_KEY] if with_user_key else [])
    return {k: spec[k] for k in wanted}


def matching_files(file_pattern: FilePattern) -> list:
    """The files matching `file_pattern` (one glob or several), sorted, each once."""
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    return sorted({f for p in patterns for f in tf.io.gfile.glob(p)})


def file_shard(files: Sequence[str], shard: Shard) -> Tuple[list, bool]:
    """The files that shard `shard = (num_shards, index)` reads, and whether it must
    also keep only every `num_shards`-th element of them (data-level sharding).

    With at least `num_shards` files, shard `index` reads files `index`,
    `index + num_shards`, ... of the sorted list (file-level); with fewer, it reads
    them all and keeps its share of the elements.
    """
    num_shards, index = shard
    if num_shards < 1 or not 0 <= index < num_shards:
        raise ValueError(f"make_dataset: shard must be (num_shards >= 1, index in "
                         f"0..num_shards-1), got {shard}")
    files = sorted(files)
    if len(files) >= num_shards:
        return files[index::num_shards], False
    return files, num_shards > 1


def _records(file_pattern: FilePattern, shuffle: bool, seed: Optional[int],
             per_file=None, shard: Optional[Shard] = None) -> tf.data.Dataset:
    """Serialized examples of the files matching `file_pattern`.

    The files are read interleaved in parallel in a deterministic order (shuffled
    with `seed` when `shuffle`); `per_file` maps each file's records first (its
    elements are then what is interleaved). `shard`: only that shard's part
    (`file_shard`; data-level sharding keeps every n-th interleaved element).
    """
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = matching_files(patterns)
    if not files:
        raise FileNotFoundError(f"make_dataset: no file matches {patterns}")
    by_element, cycle_length = False, tf.data.AUTOTUNE
    if shard is None:
        names = tf.data.Dataset.list_files(patterns, shuffle=shuffle, seed=seed)
    else:
        files, by_element = file_shard(files, shard)
        names = tf.data.Dataset.from_tensor_slices(files)
        if by_element:
            # every shard must see the same element order before `shard`: the files
            # in sorted order, all interleaved at once (AUTOTUNE would follow the
            # machine's core count)
            cycle_length = len(files)
        elif shuffle:
            names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    per_file = per_file or (lambda records: records)
    records = names.interleave(
        lambda f: per_file(tf.data.TFRecordDataset(f, compression_type="GZIP")),
        cycle_length=cycle_length, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)  # seeded runs repeat: same seed, same example order
    if by_element:
        records = records.shard(*shard)
    return records


def _to_outputs(parsed: Dict[str, tf.Tensor], keys: Sequence[str],
                with_user_key: bool) -> Tuple[tf.Tensor, ...]:
    """`(inputs, label)` or `(inputs, label, user_key)` of a parsed batch."""
    inputs = {k: parsed[k] for k in keys}
    label = tf.cast(parsed[LABEL_XF], tf.float32)
    if with_user_key:
        return inputs, label, parsed[F.USER_KEY]
    return inputs, label


def load_split(file_pattern: FilePattern, tf_transform_output,
               keys: Sequence[str], shard: Optional[Shard] = None
               ) -> Dict[str, tf.Tensor]:
    """Read and parse a whole split of transformed examples into memory.

    Args:
        file_pattern: glob(s) of gzipped TFRecord files of transformed `tf.Example`s.
        tf_transform_output: `tft.TFTransformOutput`; gives the transformed spec.
        keys: the transformed features to load; each must be a `FixedLenFeature`
            of the transformed spec.
        shard: `(num_shards, index)`: load only that shard (`file_shard`; by record
            when it is data-level).

    Returns:
        One tensor per key, `(N, *shape)` with the spec's shape, rows in the order
        of `make_dataset(..., shuffle=False)`. Integer features whose values all fit
        in int32 are returned as int32 (half the memory of int64); the others keep
        the spec's dtype.

    Raises:
        FileNotFoundError: no file matches `file_pattern`.
        ValueError: a key is not a fixed-length feature, or the files hold no example.
    """
    spec = tf_transform_output.transformed_feature_spec()
    not_fixed = sorted(k for k in keys
                       if not isinstance(spec[k], tf.io.FixedLenFeature))
    if not_fixed:
        raise ValueError(f"load_split: cache='memory' needs fixed-length features; "
                         f"{not_fixed} are not FixedLenFeature")
    parse_spec = {k: spec[k] for k in keys}
    batches = (_records(file_pattern, shuffle=False, seed=None, shard=shard)
               .batch(_LOAD_BATCH)
               .map(lambda s: tf.io.parse_example(s, parse_spec),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .prefetch(tf.data.AUTOTUNE))
    parts: Dict[str, list] = {k: [] for k in keys}
    for parsed in batches:
        for k in keys:
            parts[k].append(parsed[k])
    if not parts[keys[0]]:
        raise ValueError(f"load_split: the files of {file_pattern} hold no example")
    tensors = {}
    for k in keys:
        t = tf.concat(parts[k], axis=0)
        if (t.dtype == tf.int64 and t.shape.num_elements() > 0
                and _INT32_MIN <= int(tf.reduce_min(t))
                and int(tf.reduce_max(t)) <= _INT32_MAX):
            t = tf.cast(t, tf.int32)
        tensors[k] = t
    return tensors


def _shuffled_rows(n: int, groups: Optional[tf.Tensor], seed: int,
                   num_epochs: Optional[int]) -> tf.data.Dataset:
    """Row indices `0..n-1` in a new order at every pass, and at every new iterator
    (Keras' `fit` makes one per epoch over a finite dataset), the sequence of orders
    fixed by `seed`.

    Args:
        groups: None, or `(n,)` a group key per row (the request id): then whole groups
            are shuffled, a group's rows staying together in their stored order.
    """
    if groups is None:
        return (tf.data.Dataset.range(n)
                .shuffle(n, seed=seed, reshuffle_each_iteration=True)
                .repeat(num_epochs))
    _, group = tf.unique(groups, out_idx=tf.int64)
    order = tf.cast(tf.argsort(group, stable=True), tf.int64)
    members = tf.RaggedTensor.from_value_rowids(order, tf.gather(group, order))
    num_groups = int(members.nrows())
    return (tf.data.Dataset.range(num_groups)
            .shuffle(num_groups, seed=seed, reshuffle_each_iteration=True)
            .repeat(num_epochs)
            .batch(_GROUPS_PER_GATHER)
            .map(lambda g: tf.gather(members, g).flat_values)
            .unbatch())


def _memory_dataset(file_pattern: FilePattern, tf_transform_output,
                    parse_spec: dict, keys: Sequence[str], batch_size: int,
                    shuffle: bool, seed: Optional[int], num_epochs: Optional[int],
                    with_user_key: bool, shuffle_unit: str,
                    shard: Optional[Shard]) -> tf.data.Dataset:
    """`make_dataset(cache="memory")`: batches gathered from the loaded split."""
    grouped = shuffle and shuffle_unit == SHUFFLE_REQUEST
    loaded = list(parse_spec)
    if grouped and F.REQUEST_KEY not in parse_spec:
        loaded.append(F.REQUEST_KEY)
    tensors = load_split(file_pattern, tf_transform_output, loaded, shard)
    requests = tensors[F.REQUEST_KEY] if grouped else None
    if F.REQUEST_KEY not in parse_spec:
        tensors.pop(F.REQUEST_KEY, None)
    n = int(tensors[LABEL_XF].shape[0])
    held = sum(t.shape.num_elements() * t.dtype.size for t in tensors.values()
               if t.dtype != tf.string)
    logger.info("make_dataset: %d examples of %s in memory, %.1f MiB (strings not "
                "counted)", n, file_pattern, held / 2 ** 20)
    if shuffle:
        seed = random.randrange(2 ** 31) if seed is None else seed
        indices = _shuffled_rows(n, requests, seed, num_epochs)
    else:
        indices = tf.data.Dataset.range(n).repeat(num_epochs)

    def gather(rows):
        parsed = {k: tf.cast(tf.gather(t, rows), parse_spec[k].dtype)
                  for k, t in tensors.items()}
        return _to_outputs(parsed, keys, with_user_key)

    return (indices.batch(batch_size)
            .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


def request_runs(records: tf.data.Dataset) -> tf.data.Dataset:
    """Runs of consecutive records with the same `features.REQUEST_KEY`, one element
    (a `(n,)` string tensor) per run: whole requests where a file stores a request's
    examples together, as the sample builder and Transform write them. Only the
    request key is parsed here; a run cut at a read chunk's edge becomes two elements.
    """
    spec = {F.REQUEST_KEY: tf.io.FixedLenFeature([], tf.string)}

    def split(serialized):
        key = tf.io.parse_example(serialized, spec)[F.REQUEST_KEY]
        starts = tf.concat([[True], tf.not_equal(key[1:], key[:-1])], axis=0)
        run = tf.cumsum(tf.cast(starts, tf.int64)) - 1
        return tf.RaggedTensor.from_value_rowids(serialized, run)

    return records.batch(_RUN_CHUNK).map(split).unbatch()


def _streaming_dataset(file_pattern: FilePattern, parse_spec: dict,
                       keys: Sequence[str], batch_size: int, shuffle: bool,
                       seed: Optional[int], num_epochs: Optional[int],
                       with_user_key: bool, shuffle_buffer: int,
                       shuffle_unit: str, shard: Optional[Shard]) -> tf.data.Dataset:
    """`make_dataset(cache="none")`: records read and parsed every epoch."""
    grouped = shuffle and shuffle_unit == SHUFFLE_REQUEST
    ds = _records(file_pattern, shuffle, seed,
                  per_file=request_runs if grouped else None, shard=shard)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat(num_epochs)
    if grouped:
        ds = ds.unbatch()
    ds = ds.batch(batch_size)

    def parse(serialized):
        return _to_outputs(tf.io.parse_example(serialized, parse_spec), keys,
                           with_user_key)

    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True).prefetch(tf.data.AUTOTUNE)


def make_dataset(file_pattern: FilePattern,
                 tf_transform_output,
                 batch_size: int,
                 shuffle: bool,
                 seed: Optional[int] = None,
                 num_epochs: Optional[int] = 1,
                 input_keys: Optional[Sequence[str]] = None,
                 with_user_key: bool = False,
                 shuffle_buffer: int = 10_000,
                 cache: str = CACHE_NONE,
                 shuffle_unit: str = SHUFFLE_EXAMPLE,
                 shard: Optional[Shard] = None) -> tf.data.Dataset:
    """Batches of transformed examples.

    Args:
        file_pattern: glob(s) of gzipped TFRecord files of transformed `tf.Example`s
            (a TFX Trainer passes a list).
        tf_transform_output: `tft.TFTransformOutput`; gives the transformed spec.
        batch_size: examples per batch (the last batch may be smaller).
        shuffle: shuffle (training); False keeps a fixed order, the same in both
            cache modes.
        seed: shuffling seed; None: a different order on every run.
        num_epochs: repetitions; None repeats forever.
        input_keys: the transformed features to return as inputs (e.g. a model's
            input names); None returns every `model_input_keys` feature.
        with_user_key: also return the raw user ids (`features.USER_KEY`), for GAUC.
        shuffle_buffer: examples (requests, with `shuffle_unit="request"`) in the
            shuffle buffer (`cache="none"` only; the in-memory mode shuffles the
            whole split).
        cache: `"none"` streams from the files every epoch; `"memory"` parses the
            split once into memory (`load_split`; see the module docstring for the
            memory cost) and serves batches by gathering shuffled rows.
        shuffle_unit: `"example"`, or `"request"`: shuffle whole requests (by
            `features.REQUEST_KEY`), so that a request's examples share a batch
            (streaming: the runs of a request's consecutive records, `request_runs`;
            `shuffle_buffer` then counts requests).
        shard: `(num_shards, index)`: serve only that part of the split (one
            worker's, in multi-worker training): whole files when there are at least
            `num_shards` files, else every `num_shards`-th request run (streaming
            with `shuffle_unit="request"`) or record (see `file_shard`). The shards
            are disjoint and together hold every example once. None: everything.

    Returns:
        A dataset of `(inputs, label)`, or `(inputs, label, user_key)` with
        `with_user_key` (for evaluation loops, not for `fit`): `inputs` a dict of
        `(B, ...)` tensors with the transformed spec's dtypes and shapes, `label`
        float32 `(B,)`, `user_key` string `(B,)`.

    Raises:
        FileNotFoundError: no file matches `file_pattern`.
        ValueError: an unknown input key or cache mode, or a non-positive batch size.
    """
    if cache not in CACHE_MODES:
        raise ValueError(f"make_dataset: cache must be one of {list(CACHE_MODES)}, "
                         f"got {cache!r}")
    if batch_size <= 0:
        raise ValueError(f"make_dataset: batch_size must be > 0, got {batch_size}")
    if shuffle_unit not in SHUFFLE_UNITS:
        raise ValueError(f"make_dataset: shuffle_unit must be one of "
                         f"{list(SHUFFLE_UNITS)}, got {shuffle_unit!r}")
    keys = list(model_input_keys(tf_transform_output) if input_keys is None
                else input_keys)
    parse_spec = _parse_spec(tf_transform_output, keys, with_user_key)
    if cache == CACHE_MEMORY:
        return _memory_dataset(file_pattern, tf_transform_output, parse_spec, keys,
                               batch_size, shuffle, seed, num_epochs, with_user_key,
                               shuffle_unit, shard)
    return _streaming_dataset(file_pattern, parse_spec, keys, batch_size, shuffle,
                              seed, num_epochs, with_user_key, shuffle_buffer,
                              shuffle_unit, shard)
