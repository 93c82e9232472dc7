"""`data.transform.pad_recent`: the most recent steps of each history row, checked
against a re-derivation in Python on random rows (empty rows, rows shorter and longer
than the output, an empty batch, ids and raw bytes), eager and in a graph."""

import numpy as np
import pytest
import tensorflow as tf

from daian_tf.data.transform import pad_recent


def brute_force(rows, max_len, padding):
    return [row[-max_len:] + [padding] * (max_len - len(row[-max_len:])) for row in rows]


def sparse(rows, dtype, width):
    indices = [(b, j) for b, row in enumerate(rows) for j in range(len(row))]
    values = [v for row in rows for v in row]
    return tf.SparseTensor(tf.constant(np.array(indices, np.int64).reshape(-1, 2)),
                           tf.constant(values, dtype), [len(rows), width])


@pytest.mark.parametrize("raw", [False, True], ids=["ids", "raw bytes"])
def test_keeps_the_last_steps_oldest_first_then_padding(raw):
    rng = np.random.default_rng(7)
    padding = b"" if raw else 0
    dtype = tf.string if raw else tf.int64
    graph = tf.function(pad_recent, reduce_retracing=True)
    for _ in range(60):
        max_len = int(rng.integers(1, 7))
        lengths = rng.integers(0, 10, size=int(rng.integers(0, 6)))
        rows = [[f"i{b}.{j}".encode() if raw else int(rng.integers(1, 1000))
                 for j in range(n)] for b, n in enumerate(lengths)]
        ids = sparse(rows, dtype, width=int(max(lengths, default=0)) + 2)
        expected = brute_force(rows, max_len, padding)
        for result in (pad_recent(ids, max_len, padding), graph(ids, max_len, padding)):
            assert result.shape == (len(rows), max_len)
            assert result.numpy().tolist() == expected


def test_output_length_is_static():
    spec = tf.SparseTensorSpec([None, None], tf.int64)
    traced = tf.function(lambda ids: pad_recent(ids, 50)).get_concrete_function(spec)
    assert traced.structured_outputs.shape.as_list() == [None, 50]
