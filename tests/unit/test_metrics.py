"""AUC, GAUC and log loss against scikit-learn; the popularity baseline by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from daian_tf.metrics.ranking import auc, gauc, logloss
from daian_tf.models.popularity import PopularityBaseline


def _data(seed: int, n: int = 600, users: int = 40, ties: bool = True):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    scores = rng.random(n) + 0.3 * labels
    if ties:
        scores = np.round(scores, 1)  # many tied scores
    groups = np.array([f"u{i}" for i in rng.integers(users, size=n)])
    return labels, scores, groups


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_auc_matches_sklearn(seed, ties):
    labels, scores, _ = _data(seed, ties=ties)
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_of_constant_scores_is_half_and_one_class_raises():
    assert auc([0, 1, 0, 1], [0.5] * 4) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="both classes"):
        auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="0/1"):
        auc([0, 2], [0.1, 0.2])


def _sklearn_gauc(labels, scores, groups, weight):
    total, total_w, used, skipped = 0.0, 0.0, 0, 0
    for g in sorted(set(groups)):
        sel = groups == g
        y = labels[sel]
        if y.min() == y.max():
            skipped += 1
            continue
        w = sel.sum() if weight == "impressions" else y.sum()
        total += w * roc_auc_score(y, scores[sel])
        total_w += w
        used += 1
    return total / total_w, used, skipped


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("weight", ["impressions", "clicks"])
def test_gauc_matches_per_user_sklearn(seed, weight):
    labels, scores, groups = _data(seed, n=300, users=60)  # ~5 samples a user
    value, used, skipped = _sklearn_gauc(labels, scores, groups, weight)
    assert skipped > 0 and used > 0  # the data exercises both cases
    result = gauc(labels, scores, groups, weight=weight)
    assert result.value == pytest.approx(value, abs=1e-12)
    assert (result.num_groups, result.num_skipped) == (used, skipped)


def test_gauc_with_no_usable_user_is_nan_and_bad_weight_raises():
    result = gauc([1, 1, 0], [0.1, 0.2, 0.3], ["a", "a", "b"])
    assert np.isnan(result.value) and result.num_groups == 0 and result.num_skipped == 2
    with pytest.raises(ValueError, match="weight"):
        gauc([0, 1], [0.1, 0.2], ["a", "a"], weight="users")
    with pytest.raises(ValueError, match="same length"):
        gauc([0, 1], [0.1, 0.2], ["a"])


def test_logloss_matches_sklearn():
    rng = np.random.default_rng(3)
    labels = (rng.random(500) < 0.4).astype(int)
    probs = rng.uniform(0.01, 0.99, 500)
    assert logloss(labels, probs) == pytest.approx(log_loss(labels, probs), rel=1e-12)
    # Extreme probabilities are clipped, so the loss stays finite.
    assert np.isfinite(logloss([1, 0], [0.0, 1.0]))


def test_popularity_baseline_smoothed_ctr_and_fallback():
    items = np.array([1, 1, 1, 1, 2, 2, 3])
    labels = np.array([1, 1, 0, 0, 0, 0, 1])
    model = PopularityBaseline(prior_strength=2.0).fit(items, labels)
    ctr = 3 / 7
    expected = [(2 + 2 * ctr) / (4 + 2), (0 + 2 * ctr) / (2 + 2), (1 + 2 * ctr) / (1 + 2),
                ctr]
    np.testing.assert_allclose(model.predict([1, 2, 3, 99]), expected)
    raw = PopularityBaseline(prior_strength=0.0).fit(items, labels)
    np.testing.assert_allclose(raw.predict([1, 2, 3]), [0.5, 0.0, 1.0])
    with pytest.raises(RuntimeError, match="before fit"):
        PopularityBaseline().predict([1])
    with pytest.raises(ValueError, match="prior_strength"):
        PopularityBaseline(prior_strength=-1)
