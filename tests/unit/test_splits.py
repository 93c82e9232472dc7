"""The split rules of the sample builder: `split_boundaries` and `split_of` against a
brute-force walk over the days, the refusals of impossible cuts, and the check that
every split holds a request."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

import pytest

from daian_tf.core.config import ConfigError, SampleConfig
from daian_tf.core.errors import DaianInputError, RawLogError
from daian_tf.core.names import EVAL, SPLITS, TRAIN, VALIDATION
from daian_tf.data.sample_report import check_splits_hold_requests
from daian_tf.data.sample_requests import split_boundaries, split_of

DAY = 86400
T0 = 1_700_006_400  # a UTC midnight


def _utc_day(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")


@pytest.mark.parametrize("eval_days, validation_days, last_hour",
                         itertools.product((1, 2), (1, 3), (0, 13, 23)))
def test_day_counts_cut_at_utc_midnights(eval_days, validation_days, last_hour):
    """Brute force: with requests on days 0..9, eval = the last `eval_days` calendar days
    (the latest request's day included), validation = the `validation_days` before."""
    latest = T0 + 9 * DAY + last_hour * 3600
    cfg = SampleConfig(eval_days=eval_days, validation_days=validation_days)
    bounds = split_boundaries(latest, cfg)
    days = sorted({_utc_day(T0 + d * DAY) for d in range(10)})
    want = {day: (EVAL if k >= 10 - eval_days else
                  VALIDATION if k >= 10 - eval_days - validation_days else TRAIN)
            for k, day in enumerate(days)}
    for d in range(10):
        for hour in (0, 12, 23):
            ts = T0 + d * DAY + hour * 3600
            assert split_of(ts, bounds) == want[_utc_day(ts)], (d, hour)


def test_starts_given_as_instants():
    cfg = SampleConfig(eval_start="2023-11-20T06:00:00",
                       validation_start="2023-11-18T12:00:00")
    validation_start, eval_start = split_boundaries(T0 + 30 * DAY, cfg)
    assert eval_start == T0 + 5 * DAY + 6 * 3600
    assert validation_start == T0 + 3 * DAY + 12 * 3600
    assert split_of(validation_start - 1, (validation_start, eval_start)) == TRAIN
    assert split_of(validation_start, (validation_start, eval_start)) == VALIDATION
    assert split_of(eval_start, (validation_start, eval_start)) == EVAL
    # validation_days counts back from a given eval_start
    assert split_boundaries(T0, SampleConfig(eval_start="2023-11-20T06:00:00",
                                             validation_days=2))[0] == eval_start - 2 * DAY


def test_impossible_cuts_are_refused_naming_the_keys():
    with pytest.raises(ConfigError, match="samples.validation_days must be > 0, got 0"):
        SampleConfig(validation_days=0)
    with pytest.raises(ConfigError, match=r"samples.validation_start \(2023-11-21\) "
                                          r"must be before samples.eval_start"):
        SampleConfig(eval_start="2023-11-20", validation_start="2023-11-21")
    with pytest.raises(ConfigError, match="samples.validation_start must be an ISO 8601"):
        SampleConfig(validation_start="yesterday")
    # a validation start after the eval days counted back from the latest request
    cfg = SampleConfig(validation_start="2023-11-25")
    with pytest.raises(RawLogError) as e:
        split_boundaries(T0 + 9 * DAY, cfg, "impressions.csv")
    assert str(e.value).startswith("impressions.csv: samples.validation_start "
                                   "(2023-11-25) is not before the eval split")


def test_a_split_without_a_request_is_refused():
    report = {"splits": {s: {"samples": 12, "requests": 1} for s in SPLITS},
              "validation_boundary_timestamp": T0, "split_boundary_timestamp": T0 + DAY}
    check_splits_hold_requests(report, "r.json")
    report["splits"][VALIDATION] = {"samples": 0, "requests": 0}
    with pytest.raises(DaianInputError, match=(
            r"^r.json: the validation split holds no request: train is before "
            r"2023-11-15T00:00:00Z, validation from then to 2023-11-16T00:00:00Z")):
        check_splits_hold_requests(report, "r.json")
    report["splits"][TRAIN] = {"samples": 0, "requests": 0}
    with pytest.raises(DaianInputError, match="the train and validation splits hold no"):
        check_splits_hold_requests(report, "r.json")
