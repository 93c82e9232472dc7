"""The distinct requests of a batch, so that request-level blocks run once per request.

In trigger-induced recommendation one request (user, trigger, history) is shown several
candidates, and a training or scoring batch holds several samples of the same request.
UIM (Eq. 4–5), I2E (Eq. 6–8) and the explicit block's self-attention (Eq. 9) read the
request only (DAIAN.md §3.2: "computed once per request"), so DAIAN computes them on the
batch's distinct requests and gathers the results back to the samples
(`DAIAN.request_side`; the `rank` signature does the same for one request and N
candidates).

Requests are told apart by the content of their request-side features, not by a request
id: two rows are one request here exactly when every request-side input is equal
(strings by a 64-bit fingerprint, floats by their bits), so the result is the same
function with the same gradients (a gather's gradient sums what its duplicates receive),
whatever the batch holds and whether or not it carries a request id. With attention
dropout in training, the samples of one request share one dropout mask.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, Tuple

import tensorflow as tf

_HASH_BUCKETS = 2 ** 63 - 1


def row_fingerprints(inputs: Mapping[str, tf.Tensor], keys: Sequence[str]) -> tf.Tensor:
    """`(B, K)` int64: the features `keys` of each row, flattened side by side.

    Integers are kept as they are, floats by their bits, strings by
    `tf.strings.to_hash_bucket_fast` (64-bit FarmHash; ids also enter through their
    transformed integer, so two rows merge only if every id maps alike).
    """
    parts = []
    for key in keys:
        x = tf.convert_to_tensor(inputs[key])
        if x.dtype == tf.string:
            x = tf.strings.to_hash_bucket_fast(x, _HASH_BUCKETS)
        elif x.dtype.is_floating:
            x = tf.bitcast(tf.cast(x, tf.float32), tf.int32)
        elif x.dtype == tf.bool:
            x = tf.cast(x, tf.int8)
        x = tf.cast(x, tf.int64)
        parts.append(tf.reshape(x, [tf.shape(x)[0], -1]))
    return tf.concat(parts, axis=1)


def distinct_rows(inputs: Mapping[str, tf.Tensor],
                  keys: Sequence[str]) -> Tuple[tf.Tensor, tf.Tensor]:
    """The distinct requests of a batch.

    Args:
        inputs: a batch of features, `(B, ...)` each.
        keys: the request-side features: rows equal on all of them are one request.

    Returns:
        `(rows, inverse)`: `rows` int32 `(U,)`, the first row of each distinct request;
        `inverse` int32 `(B,)`, the distinct request of
        each row, so that `tf.gather(x[rows], inverse)` equals `x` on the request side.
    """
    if not keys:
        raise ValueError("distinct_rows needs at least one request-side key")
    fingerprints = row_fingerprints(inputs, keys)
    unique, inverse = tf.raw_ops.UniqueV2(x=fingerprints, axis=tf.constant([0], tf.int64),
                                          out_idx=tf.int32)
    rows = tf.math.unsorted_segment_min(
        tf.range(tf.shape(fingerprints)[0], dtype=tf.int32), inverse,
        num_segments=tf.shape(unique)[0])
    return rows, inverse


def take_rows(tree, rows: tf.Tensor):
    """`tf.gather(x, rows)` for every tensor of a (nested) dict or list."""
    return tf.nest.map_structure(lambda x: tf.gather(x, rows), tree)


def once_per_request(fn: Callable, inputs: Mapping[str, tf.Tensor],
                     keys: Sequence[str]):
    """`fn(inputs)` (a tensor or a nest of `(B, ...)` tensors) computed on one row per
    distinct request of the batch (`distinct_rows(inputs, keys)`) and gathered back to
    every row."""
    rows, inverse = distinct_rows(inputs, keys)
    return take_rows(fn(take_rows(dict(inputs), rows)), inverse)
