"""Config checks that training depends on."""

from __future__ import annotations

import pytest

from daian_tf.core.config import ConfigError, TrainConfig


def test_requests_are_the_default_shuffle_unit():
    assert TrainConfig().shuffle_unit == "request"
    assert TrainConfig(shuffle_unit="example").shuffle_unit == "example"


def test_unknown_shuffle_unit_is_named():
    with pytest.raises(ConfigError, match="train.shuffle_unit"):
        TrainConfig(shuffle_unit="user")
