"""The distinct requests of a batch (`layers.request_rows`), against a brute-force
grouping of the rows in Python."""

from __future__ import annotations

import numpy as np
import pytest

from daian_tf.layers.request_rows import distinct_rows, take_rows


def _batch(seed: int = 0, n: int = 40):
    """Rows drawn from 7 requests, a few near-copies that differ in one value only."""
    rng = np.random.default_rng(seed)
    req = rng.integers(0, 7, size=n)
    ids = rng.integers(1, 5, size=(7, 6))[req]
    hist = np.array([[f"h{v}" for v in row] for row in rng.integers(0, 3, (7, 4))],
                    object)[req]
    price = rng.random(7).astype(np.float32)[req]
    ids[3, 5] += 10  # int differs
    hist[5, 0] = "other"  # a string differs
    price[7] = np.nextafter(price[7], np.float32(2))  # one float bit differs
    return {"ids": ids, "hist": hist, "price": price,
            "target": rng.integers(0, 100, size=n)}  # not a request key


KEYS = ("ids", "hist", "price")


def _brute_force(x) -> list:
    return [(tuple(x["ids"][b]), tuple(x["hist"][b]), x["price"][b].tobytes())
            for b in range(len(x["ids"]))]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distinct_rows_match_a_brute_force_grouping(seed):
    x = _batch(seed)
    rows, inverse = (np.asarray(t) for t in distinct_rows(x, KEYS))
    keys = _brute_force(x)
    assert len(rows) == len(set(keys))
    assert len({keys[r] for r in rows}) == len(rows)
    for b, u in enumerate(inverse):  # every row maps to the first row of its request
        assert keys[rows[u]] == keys[b]
        assert rows[u] == keys.index(keys[b])


def test_take_rows_gathers_nested_structures():
    x = _batch()
    rows, inverse = distinct_rows(x, KEYS)
    back = take_rows(take_rows({"a": x["ids"], "b": [x["price"]]}, rows), inverse)
    np.testing.assert_array_equal(np.asarray(back["a"]), x["ids"])
    np.testing.assert_array_equal(np.asarray(back["b"][0]), x["price"])


def test_no_keys_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        distinct_rows(_batch(), ())
