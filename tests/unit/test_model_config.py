"""TF Serving model configs: parsed with TF Serving's own protos, policies re-derived."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.model_config import (
    ModelConfigError,
    aspired_versions,
    list_version_dirs,
    parse_model_config,
    read_model_config,
    single_model_config,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "serving" / "config"


def _model(policy_text: str = "") -> model_server_config_pb2.ModelConfig:
    model = model_server_config_pb2.ModelConfig(name="m", base_path="/m")
    text_format.Parse(policy_text, model.model_version_policy)
    return model


def _brute_force(policy: str, arg, versions: set[int]) -> set[int]:
    """The policy's versions, by its definition, the slow way."""
    if policy == "all":
        return set(versions)
    if policy == "specific":
        return {v for v in versions if v in arg}
    # latest N: v is served iff fewer than N present versions are higher than v
    return {v for v in versions if sum(1 for w in versions if w > v) < arg}


@pytest.mark.parametrize("seed", range(30))
def test_aspired_versions_match_the_policy_definitions(seed):
    rng = random.Random(seed)
    versions = set(rng.sample(range(1, 40), rng.randint(0, 8)))
    n = rng.randint(1, 4)
    specific = set(rng.sample(range(1, 40), 3))
    cases = [
        ("latest", n, f"latest {{ num_versions: {n} }}"),
        ("all", None, "all {}"),
        ("specific", specific,
         "specific { " + " ".join(f"versions: {v}" for v in specific) + " }"),
        ("latest", 1, ""),  # no policy: TF Serving's default, the latest one
    ]
    for policy, arg, text in cases:
        assert aspired_versions(_model(text), versions) == \
            _brute_force(policy, arg, versions), (policy, arg, sorted(versions))


def test_every_packaged_model_config_parses_with_tf_serving_protos_and_here():
    files = sorted(CONFIG_DIR.glob("models*.pbtxt"))
    assert files, "no model config in serving/config/"
    for path in files:
        official = text_format.Parse(path.read_text(),
                                     model_server_config_pb2.ModelServerConfig())
        assert official.model_config_list.config, path
        assert read_model_config(path) == official


def test_parse_error_names_the_source_and_line():
    with pytest.raises(ModelConfigError, match=r"cfg\.pbtxt: .*2:"):
        parse_model_config("model_config_list {\n  config { nme: 'x' }\n}",
                           "cfg.pbtxt")


@pytest.mark.parametrize("text, message", [
    ("", "needs a model_config_list"),
    ("custom_model_config {}", "custom_model_config"),
    ("model_config_list { config { base_path: '/a' } }", r"config\[0\] has no name"),
    ("model_config_list { config { name: 'a' } }", "'a' has no base_path"),
    ("model_config_list { config { name: 'a' base_path: '/a' } "
     "config { name: 'a' base_path: '/b' } }", "configured twice"),
    ("model_config_list { config { name: 'a' base_path: '/a' "
     "model_platform: 'pytorch' } }", "model_platform 'pytorch'"),
    ("model_config_list { config { name: 'a' base_path: '/a' "
     "model_version_policy { specific {} } } }", "specific names no versions"),
    ("model_config_list { config { name: 'a' base_path: '/a' "
     "version_labels { key: 'stable' value: 0 } } }", "label 'stable'"),
])
def test_configs_tf_serving_refuses_are_refused_with_the_reason(text, message):
    with pytest.raises(ModelConfigError, match=message):
        parse_model_config(text)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pbtxt"):
        read_model_config(tmp_path / "nope.pbtxt")


def test_single_model_config_is_the_latest_version_of_one_model():
    config = single_model_config("/models/x", "x")
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path) == ("x", "/models/x")
    assert aspired_versions(model, [3, 10, 9]) == {10}


def test_only_numeric_directories_are_versions(tmp_path):
    for name in ("1", "10", "tmp-11", "2a"):
        (tmp_path / name).mkdir()
    (tmp_path / "3").write_text("a file, not a version")
    assert sorted(list_version_dirs(tmp_path)) == [1, 10]
    assert list_version_dirs(tmp_path / "missing") == {}


def test_latest_is_numeric_order_not_text_order():
    assert aspired_versions(_model("latest { num_versions: 2 }"),
                            [9, 10, 100, 11]) == {100, 11}
