"""Config checks that training depends on."""

from __future__ import annotations

import pytest

from daian_tf.core.config import DEFAULT_CONFIG_FILE, ConfigError, TrainConfig, load_config


def test_requests_are_the_default_shuffle_unit():
    assert TrainConfig().shuffle_unit == "request"
    assert TrainConfig(shuffle_unit="example").shuffle_unit == "example"


def test_unknown_shuffle_unit_is_named():
    with pytest.raises(ConfigError, match="train.shuffle_unit"):
        TrainConfig(shuffle_unit="user")


def test_pipeline_section_checks_its_values():
    from daian_tf.core.config import PipelineConfig

    assert PipelineConfig().start_from_blessed == "stage1"
    for bad, match in [({"start_from_blessed": "stage4"}, "start_from_blessed"),
                       ({"baseline": "daian"}, "baseline"),
                       ({"auc_tolerance": -0.01}, "auc_tolerance")]:
        with pytest.raises(ConfigError, match=match):
            PipelineConfig(**bad)
    with pytest.raises(ConfigError, match="patience"):
        load_config(DEFAULT_CONFIG_FILE, overrides={"train": {"patience": -1}})


def test_the_pipeline_needs_its_paths_from_the_config_or_the_command_line(tmp_path):
    from tfx_pipeline.runner import paths_of

    cfg = load_config(DEFAULT_CONFIG_FILE)
    with pytest.raises(ConfigError, match="pipeline.raw_dir and pipeline.root"):
        paths_of(cfg)
    cfg = load_config(DEFAULT_CONFIG_FILE, overrides={"pipeline": {
        "raw_dir": "raw", "root": str(tmp_path), "serving_dir": "/srv/models/daian"}})
    raw, paths = paths_of(cfg)
    assert raw == "raw" and paths["serving_dir"] == "/srv/models/daian"
    assert paths["metadata"] == str(tmp_path / "metadata.sqlite")
    assert paths_of(cfg, raw_dir="other")[0] == "other"


def test_distribution_defaults_to_one_process_and_names_bad_values():
    assert TrainConfig().distribution == "single"
    assert load_config(DEFAULT_CONFIG_FILE).train.distribution == "single"
    assert TrainConfig(distribution="multi_worker").distribution == "multi_worker"
    with pytest.raises(ConfigError, match=r"train.distribution must be one of "
                       r"\['single', 'multi_worker'\], got 'mirrored'"):
        TrainConfig(distribution="mirrored")
