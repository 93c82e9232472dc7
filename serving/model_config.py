"""TF Serving's model server config (`--model_config_file`), read with its own protos.

A config file is a `tensorflow.serving.ModelServerConfig` in protobuf text format,
the file `tensorflow_model_server --model_config_file` reads (serving/config/
models.config.pbtxt is one). This module parses it with the message classes of the
`tensorflow-serving-api` package, checks what TF Serving checks before it loads
anything, and answers the one question its version policy asks: given the numeric
version directories under a `base_path`, which versions should be served.

Nothing here loads a model; `serving/model_manager.py` does, from what this module
decides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig

# The model platforms this server loads (TF Serving's `tensorflow` platform, a
# SavedModel); an empty `model_platform` means it too, as in TF Serving.
SUPPORTED_PLATFORMS = ("", "tensorflow")


class ModelConfigError(ValueError):
    """A model server config TF Serving would refuse, with the reason."""


def parse_model_config(text: str, source: str = "<string>") -> ModelServerConfig:
    """Parses and checks a `ModelServerConfig` in protobuf text format.

    Args:
        text: the config (e.g. the content of a `--model_config_file`).
        source: where it came from, for error messages.

    Raises:
        ModelConfigError: not valid text format (the parser's line and column are
            named), or a config `check_model_config` refuses.
    """
    config = ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ModelConfigError(
            f"{source}: not a tensorflow.serving.ModelServerConfig in text format: "
            f"{e}") from e
    check_model_config(config, source)
    return config


def read_model_config(path: str | Path) -> ModelServerConfig:
    """Reads `path` (a `--model_config_file`): see `parse_model_config`.

    Raises:
        FileNotFoundError: no such file.
        ModelConfigError: see `parse_model_config`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model config file {str(path)!r} does not exist")
    return parse_model_config(path.read_text(), str(path))


def single_model_config(base_path: str | Path, name: str) -> ModelServerConfig:
    """The config `tensorflow_model_server --model_base_path=P --model_name=N` uses:
    one model, the latest version."""
    config = ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = str(base_path)
    model.model_platform = "tensorflow"
    return config


def check_model_config(config: ModelServerConfig, source: str = "config") -> None:
    """Refuses what TF Serving refuses before loading (or this server cannot serve).

    A `model_config_list` is required (a `custom_model_config` needs TF Serving's
    C++ plugins); each model needs a unique non-empty name and a `base_path`, a
    `tensorflow` platform, a `specific` policy needs versions, and version labels
    need positive versions.

    Raises:
        ModelConfigError: naming the model and the field.
    """
    if config.WhichOneof("config") != "model_config_list":
        raise ModelConfigError(
            f"{source}: needs a model_config_list (a custom_model_config is served "
            "only by TF Serving's own C++ plugins)")
    seen: set[str] = set()
    for index, model in enumerate(config.model_config_list.config):
        where = f"{source}: model_config_list.config[{index}]"
        if not model.name:
            raise ModelConfigError(f"{where} has no name")
        where = f"{source}: model {model.name!r}"
        if model.name in seen:
            raise ModelConfigError(f"{where} is configured twice")
        seen.add(model.name)
        if not model.base_path:
            raise ModelConfigError(f"{where} has no base_path")
        if model.model_platform not in SUPPORTED_PLATFORMS:
            raise ModelConfigError(
                f"{where} has model_platform {model.model_platform!r}; this server "
                "serves 'tensorflow' (SavedModel) only")
        policy = model.model_version_policy
        if policy.WhichOneof("policy_choice") == "specific" \
                and not policy.specific.versions:
            raise ModelConfigError(
                f"{where}: model_version_policy.specific names no versions")
        if policy.WhichOneof("policy_choice") == "latest" \
                and policy.latest.num_versions < 0:
            raise ModelConfigError(
                f"{where}: model_version_policy.latest.num_versions must be >= 1")
        for label, version in model.version_labels.items():
            if version <= 0:
                raise ModelConfigError(
                    f"{where}: version label {label!r} maps to version {version}; "
                    "versions are positive")


def model_configs(config: ModelServerConfig) -> Mapping[str, ModelConfig]:
    """Model name → its `ModelConfig`, in config order."""
    return {model.name: model for model in config.model_config_list.config}


def list_version_dirs(base_path: str | Path) -> dict[int, Path]:
    """Version → directory, for every numeric directory under `base_path`.

    Non-numeric entries (a `tmp-...` directory a pusher is writing) are skipped, as
    TF Serving skips them. A missing `base_path` has no versions (TF Serving logs it
    and keeps polling: a model may be configured before its first push).
    """
    base = Path(base_path)
    if not base.is_dir():
        return {}
    return {int(p.name): p for p in base.iterdir() if p.is_dir() and p.name.isdigit()}


def aspired_versions(model: ModelConfig, versions: Iterable[int]) -> set[int]:
    """The versions `model`'s `model_version_policy` serves out of `versions`.

    `latest { num_versions: N }` (the default, N = 1 when unset): the N highest;
    `all {}`: every one; `specific { versions: [...] }`: those of them present.
    """
    present = sorted(set(versions))
    policy = model.model_version_policy
    choice = policy.WhichOneof("policy_choice") or "latest"
    if choice == "all":
        return set(present)
    if choice == "specific":
        return set(present) & set(policy.specific.versions)
    count = policy.latest.num_versions or 1
    return set(present[-count:])
