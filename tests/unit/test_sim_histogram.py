"""I-2's range from a histogram of train similarities: numpy's percentiles within half a
bin, and the same counts however the data are split and merged (what makes the sample
files independent of the runner's bundling)."""

from __future__ import annotations

import numpy as np
import pytest

from daian_tf.data import intent_labels as IL
from daian_tf.data.sample_steps import SimilarityHistogram


def _histogram(batches, order=None):
    fn = SimilarityHistogram()
    parts = []
    for chunk in np.array_split(np.arange(len(batches)), 3):
        acc = fn.create_accumulator()
        for i in chunk:
            acc = fn.add_input(acc, batches[i])
        parts.append(acc)
    if order is not None:
        parts = [parts[i] for i in order]
    return fn.extract_output(fn.merge_accumulators(parts))


@pytest.mark.parametrize("seed", range(5))
def test_the_range_is_numpys_percentiles_within_half_a_bin(seed):
    rng = np.random.default_rng(seed)
    sims = np.clip(rng.normal(rng.uniform(-0.5, 0.5), rng.uniform(0.01, 0.4),
                              rng.integers(2, 5000)), -1, 1).astype(np.float32)
    batches = np.array_split(sims, max(1, len(sims) // 7))
    counts = _histogram(batches)
    assert counts.sum() == len(sims)
    for p in ((1, 99), (0, 100), (5, 50)):
        lo, hi = IL.range_from_histogram(counts, p)
        assert lo == pytest.approx(np.percentile(sims, p[0]), abs=2 ** -16)
        assert hi == pytest.approx(np.percentile(sims, p[1]), abs=2 ** -16)


def test_the_counts_do_not_depend_on_bundling():
    rng = np.random.default_rng(0)
    batches = [rng.uniform(-1, 1, rng.integers(0, 12)) for _ in range(300)]
    a = _histogram(batches)
    b = _histogram(batches[::-1], order=[2, 0, 1])
    assert np.array_equal(a, b)


def test_no_similarities_and_edges():
    assert _histogram([[], []]) is None
    with pytest.raises(ValueError, match="no similarities"):
        IL.range_from_histogram(np.zeros(IL.SIM_BINS, np.int64), (1, 99))
    # rounding past ±1 lands in the end bins
    assert IL.similarity_bins([-1.0000001, 1.0000001, 1.0]).tolist() == [
        0, IL.SIM_BINS - 1, IL.SIM_BINS - 1]
