"""Intent and relative metrics against independent references (scipy, hand values)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import roc_auc_score

from daian_tf.metrics.intent import js_divergence, mean_js_divergence
from daian_tf.metrics.ranking import gauc_by_group, rela_impr


def _random_distributions(rng, n_rows, n, zeros=True):
    x = rng.gamma(0.5, size=(n_rows, n))
    if zeros:
        x[rng.random((n_rows, n)) < 0.3] = 0.0
        x[np.arange(n_rows), rng.integers(n, size=n_rows)] += 0.1  # no all-zero row
    return x / x.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("base", [np.e, 2.0])
def test_js_divergence_matches_scipy(base):
    rng = np.random.default_rng(0)
    p, q = _random_distributions(rng, 50, 6), _random_distributions(rng, 50, 6)
    # scipy returns the JS *distance*, the square root of the divergence
    expected = np.array([jensenshannon(a, b, base=base) ** 2 for a, b in zip(p, q)])
    np.testing.assert_allclose(js_divergence(p, q, base=base), expected, atol=1e-12)


def test_js_divergence_bounds_and_identity():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    q = np.array([[0.0, 1.0], [0.5, 0.5]])
    np.testing.assert_allclose(js_divergence(p, q), [np.log(2), 0.0], atol=1e-12)
    np.testing.assert_allclose(js_divergence(p, q, base=2), [1.0, 0.0], atol=1e-12)


def test_mean_js_divergence_uses_only_masked_rows():
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])
    q = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    assert mean_js_divergence(p, q, mask=[0, 1, 0]) == pytest.approx(0.0)
    assert mean_js_divergence(p, q, mask=[1, 1, 0]) == pytest.approx(np.log(2) / 2)


@pytest.mark.parametrize("p, q, phrase", [
    ([[0.5, 0.6]], [[0.5, 0.5]], "sum to 1"),
    ([[1.0]], [[1.0]], "n >= 2"),
    ([[np.nan, 1.0]], [[0.5, 0.5]], "finite"),
    ([[0.5, 0.5]], [[0.2, 0.3, 0.5]], "same shape"),
])
def test_js_divergence_rejects_bad_input(p, q, phrase):
    with pytest.raises(ValueError, match=phrase):
        js_divergence(p, q)


def test_rela_impr_hand_values():
    # the paper's definition: ((AUC_model - 0.5) / (AUC_base - 0.5) - 1) * 100
    assert rela_impr(0.6, 0.55) == pytest.approx(100.0)
    assert rela_impr(0.55, 0.6) == pytest.approx(-50.0)
    with pytest.raises(ValueError, match="above 0.5"):
        rela_impr(0.6, 0.5)


def test_gauc_by_group_matches_per_group_sklearn():
    rng = np.random.default_rng(1)
    n = 3000
    users = rng.integers(0, 60, n)
    groups = rng.integers(0, 3, n)
    labels = (rng.random(n) < 0.3).astype(int)
    scores = np.round(rng.random(n) + 0.3 * labels, 2)  # rounding makes ties
    result = gauc_by_group(labels, scores, users, groups)
    assert sorted(result) == [0, 1, 2]
    for g, res in result.items():
        sel = groups == g
        num, den, skipped = 0.0, 0.0, 0
        for u in np.unique(users[sel]):
            rows = sel & (users == u)
            if labels[rows].min() == labels[rows].max():
                skipped += 1
                continue
            num += rows.sum() * roc_auc_score(labels[rows], scores[rows])
            den += rows.sum()
        assert res.value == pytest.approx(num / den, abs=1e-12)
        assert res.num_skipped == skipped
