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


def test_the_pipeline_image_defaults_to_this_projects_and_refuses_the_stock_tfx_one():
    import daian_tf
    from daian_tf.core.config import PipelineConfig

    assert PipelineConfig().image == f"daian-tf-pipeline:{daian_tf.__version__}"
    for ok in ("registry.example.com:5000/ml/daian-tf-pipeline:0.1.0",
               "daian-tf-pipeline@sha256:" + "0" * 64, "gcr.io/tfx-oss-public/tfx-extended:1"):
        assert PipelineConfig(image=ok).image == ok
    for stock in ("gcr.io/tfx-oss-public/tfx:1.16.0", "tensorflow/tfx:1.16.0",
                  "tensorflow/tfx", "gcr.io/tfx-oss-public/tfx@sha256:" + "0" * 64):
        with pytest.raises(ConfigError, match="pipeline.image .*stock TFX image.*daian_tf"):
            PipelineConfig(image=stock)
    with pytest.raises(ConfigError, match="pipeline.image must name the pipeline image"):
        PipelineConfig(image="")


def test_compile_refuses_a_stock_image_given_on_the_command_line(tmp_path):
    from tfx_pipeline.runner import compile_kubeflow

    cfg = load_config(DEFAULT_CONFIG_FILE)
    with pytest.raises(ConfigError, match="--image is 'tensorflow/tfx:1.16.0', the stock"):
        compile_kubeflow("gs://b/raw", "gs://b/root", cfg, str(tmp_path / "p.json"),
                         image="tensorflow/tfx:1.16.0")
    assert not (tmp_path / "p.json").exists()


def test_the_cluster_config_names_an_image_a_gs_root_and_a_distributed_runner():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(DEFAULT_CONFIG_FILE, repo / "configs" / "pipeline.yaml",
                      repo / "configs" / "kubeflow.yaml")
    assert "/daian-tf-pipeline:" in cfg.pipeline.image
    assert cfg.pipeline.root.startswith("gs://") and cfg.pipeline.raw_dir.startswith("gs://")
    assert "--runner=DataflowRunner" in cfg.pipeline.beam_args
    assert "--sdk_container_image={image}" in cfg.pipeline.beam_args


def test_beam_options_are_the_configs_then_the_command_lines_with_the_image_filled_in():
    from tfx_pipeline.runner import pipeline_beam_args

    cfg = load_config(DEFAULT_CONFIG_FILE, overrides={"pipeline": {
        "image": "r.example.com/daian-tf-pipeline:1",
        "beam_args": ["--runner=DataflowRunner", "--sdk_container_image={image}"]}})
    assert pipeline_beam_args(cfg, ["--num_workers=2"]) == [
        "--runner=DataflowRunner", "--sdk_container_image=r.example.com/daian-tf-pipeline:1",
        "--num_workers=2"]
    assert pipeline_beam_args(cfg, image="other:2")[1] == "--sdk_container_image=other:2"
    # no runner named (the local config): Beam's FnApiRunner, not the DirectRunner
    # that would first try to download Prism (daian_tf/data/beam_runners.py)
    local = load_config(DEFAULT_CONFIG_FILE)
    assert pipeline_beam_args(local, ["--direct_num_workers=2"]) == [
        "--runner=FnApiRunner", "--direct_num_workers=2"]


def test_distribution_defaults_to_one_process_and_names_bad_values():
    assert TrainConfig().distribution == "single"
    assert load_config(DEFAULT_CONFIG_FILE).train.distribution == "single"
    assert TrainConfig(distribution="multi_worker").distribution == "multi_worker"
    with pytest.raises(ConfigError, match=r"train.distribution must be one of "
                       r"\['single', 'multi_worker'\], got 'mirrored'"):
        TrainConfig(distribution="mirrored")


def test_every_shipped_config_loads_over_the_default():
    """A key misspelt or a value out of range in configs/*.yaml fails here, not an hour
    into an experiment; the experiment configs give every fit the same early-stopped
    budget."""
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert len(configs) >= 8
    for path in configs:
        load_config(DEFAULT_CONFIG_FILE, path)
    for name in ("experiment", "experiment_models", "experiment_levels"):
        train = load_config(DEFAULT_CONFIG_FILE, path.parent / f"{name}.yaml").train
        assert (train.epochs, train.stage2_epochs, train.patience) == (20, 20, 3), name
        assert train.restore_best_epoch
