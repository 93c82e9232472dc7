"""The I-2 range and its one rule (core.similarity_range), on every backend that uses it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from daian_tf.core import similarity_range as SR


def _brute_force(sim: float, lo: float, hi: float, n: int) -> int:
    """The level by walking the edges: the last edge at or below `sim`."""
    edges = [lo + (hi - lo) * i / n for i in range(n + 1)]
    level = 0
    for i in range(1, n):
        if sim >= edges[i]:
            level = i
    return level


def test_level_index_against_the_edges():
    lo, hi, n = -0.3, 0.9, 6
    rng = np.random.default_rng(0)
    sims = np.concatenate([[-5.0, lo, hi, 5.0], rng.uniform(-0.5, 1.1, 500)])
    edges = np.asarray(SR.level_edges(lo, hi, n))
    clear = np.abs(sims[:, None] - edges[1:-1]).min(axis=1) > 1e-9
    got = SR.level_index(sims, lo, hi, n).astype(int)
    expected = np.array([_brute_force(s, lo, hi, n) for s in sims])
    np.testing.assert_array_equal(got[clear], expected[clear])
    assert got[0] == 0 and got[3] == n - 1 and got[2] == n - 1  # outside and hi: ends
    assert int(SR.level_index(0.31, lo, hi, n)) == _brute_force(0.31, lo, hi, n)
    floats = [int(SR.level_index(float(s), lo, hi, n, xp=SR.SCALAR)) for s in sims]
    np.testing.assert_array_equal(np.asarray(floats)[clear], expected[clear])


def test_the_backends_agree():
    """Python floats (the sample builder's intent levels), numpy, keras.ops (the model's
    similarity bins) and tf.experimental.numpy (Transform's `target_sim_xf`) give the
    same bins."""
    import keras
    import tensorflow as tf

    from daian_tf.data.transform import sim_bin
    from daian_tf.layers.similarity import similarity_bin

    lo, hi, n = -0.2, 0.8, 10
    sims = np.random.default_rng(1).uniform(-0.4, 1.0, 1000).astype(np.float32)
    as_numpy = SR.level_index(sims, lo, hi, n).astype(np.int64)
    as_floats = [int(SR.level_index(float(s), lo, hi, n, xp=SR.SCALAR)) for s in sims]
    as_keras = np.asarray(similarity_bin(keras.ops.convert_to_tensor(sims), lo, hi, n))
    as_transform = sim_bin(tf.constant(sims), (lo, hi), n).numpy()
    np.testing.assert_array_equal(as_keras, as_transform)
    np.testing.assert_array_equal(as_numpy, as_transform)
    np.testing.assert_array_equal(as_floats, as_numpy)


def test_lower_edge_of_top_is_the_explicit_threshold():
    # 6 levels over [-1, 1]: edges -1, -2/3, -1/3, 0, 1/3, 2/3, 1.
    edges = np.linspace(-1.0, 1.0, 7)
    assert SR.lower_edge_of_top(-1.0, 1.0, 6, 2) == pytest.approx(edges[4])
    assert SR.lower_edge_of_top(-1.0, 1.0, 6, 1) == pytest.approx(edges[5])
    assert SR.lower_edge_of_top(-1.0, 1.0, 6, 6) == pytest.approx(edges[0])
    assert SR.lower_edge_of_top(0.2, 0.6, 4, 2) == pytest.approx(0.4)
    for bad in (0, 7):
        with pytest.raises(ValueError, match="top_levels"):
            SR.lower_edge_of_top(-1.0, 1.0, 6, bad)


def test_bad_ranges_are_named():
    for bad in ((1.0, -1.0), (0.5, 0.5), (0.1,), None, ("a", "b")):
        with pytest.raises(ValueError, match="my source"):
            SR.check_range(bad, "my source")
    with pytest.raises(ValueError, match="has no 'sim_range'"):
        SR.from_json(None, "Examples artifact x")
    assert SR.from_json(SR.to_json([-0.25, 0.75]), "x") == (-0.25, 0.75)
    assert not math.isnan(SR.level_edges(0.0, 1.0, 4)[2])
