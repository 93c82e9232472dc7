"""Config checks that training depends on."""

from __future__ import annotations

import pytest

from daian_tf.training.config import ConfigError, TrainConfig


def test_auto_shuffle_unit_groups_requests_for_daian_only():
    auto = TrainConfig()
    assert auto.shuffle_unit == "auto"
    assert auto.shuffle_unit_for("daian") == "request"
    assert auto.shuffle_unit_for("din") == "example"
    for unit in ("example", "request"):
        fixed = TrainConfig(shuffle_unit=unit)
        assert fixed.shuffle_unit_for("daian") == fixed.shuffle_unit_for("din") == unit


def test_unknown_shuffle_unit_is_named():
    with pytest.raises(ConfigError, match="train.shuffle_unit"):
        TrainConfig(shuffle_unit="user")
