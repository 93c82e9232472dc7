"""`create_pipeline(...)`: the DAIAN/DIN TFX pipeline as a plain function of its paths.

    TirSampleGen (Beam sample builder) → StatisticsGen → SchemaGen (inferred, for review)
                                        ↘ ImportSchemaGen (the contract: DATA.md §2)
                                          → ExampleValidator → Transform → Trainer → Pusher

The I-2 similarity range travels as data: TirSampleGen's `Examples` artifact carries it
(`sim_range` property), Transform and Trainer read it there (`sim_range_executors`).

The imported schema is written from `daian_tf.data.transform.raw_feature_spec`, so the
Transform component parses exactly what `preprocessing_fn` expects, and ExampleValidator
checks the built examples against the contract rather than against themselves.
Runners (`tfx_pipeline/runner.py`) read the config and call this function.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import List, Optional

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from daian_tf.core.config import Config
from daian_tf.core.names import EVAL, TRAIN
from daian_tf.data.transform import raw_schema, transform_custom_config
from tfx_pipeline.components.sample_gen import TirSampleGen
from tfx_pipeline.components.sim_range_executors import TrainerExecutor, TransformExecutor
from tfx_pipeline.trainer_module import CONFIG_KEY, RAW_DIR_KEY

PIPELINE_NAME = "daian"


class Transform(tfx.components.Transform):
    """TFX's Transform with the executor that reads the I-2 range from its input."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(TransformExecutor)


def code_version() -> str:
    """A hash of the installed library's source: part of every component's cache key."""
    import daian_tf

    digest = hashlib.sha256(daian_tf.__version__.encode())
    roots = [Path(daian_tf.__file__).parent, Path(__file__).parent]
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def write_schema(cfg: Config, path: str) -> str:
    """Writes the example schema (DATA.md §2) as a text proto; returns its path."""
    from tfx.utils import io_utils

    io_utils.write_pbtxt_file(path, raw_schema(cfg.samples))
    return path


def create_pipeline(
    *,
    raw_dir: str,
    pipeline_root: str,
    serving_dir: str,
    schema_file: str,
    cfg: Config,
    metadata_connection_config=None,
    beam_pipeline_args: Optional[List[str]] = None,
    enable_cache: bool = True,
    pipeline_name: str = PIPELINE_NAME,
) -> tfx.dsl.Pipeline:
    """Builds the pipeline. Every path is a parameter; nothing is read from globals."""
    version = code_version()
    config_dict = dataclasses.asdict(cfg)
    sample_gen = TirSampleGen(
        raw_dir=raw_dir,
        sample_config=json.dumps(config_dict["samples"], sort_keys=True),
        code_version=version,
    )
    statistics_gen = tfx.components.StatisticsGen(
        examples=sample_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=False)
    contract = tfx.components.ImportSchemaGen(
        schema_file=schema_file).with_id("ImportSchemaGen")
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=contract.outputs["schema"])
    # raw_dir: DAIAN's frozen multimodal catalog is read from item_embeddings.parquet
    custom_config = {CONFIG_KEY: config_dict, "code_version": version,
                     RAW_DIR_KEY: raw_dir}
    transform = Transform(
        examples=sample_gen.outputs["examples"],
        schema=contract.outputs["schema"],
        preprocessing_fn="tfx_pipeline.transform_module.preprocessing_fn",
        # sim_range: filled in at run time from the Examples artifact
        custom_config={**transform_custom_config(cfg, None), "code_version": version},
    )
    trainer = tfx.components.Trainer(
        run_fn="tfx_pipeline.trainer_module.run_fn",
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=contract.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=[TRAIN]),
        eval_args=tfx.proto.EvalArgs(splits=[EVAL]),
        custom_config=custom_config,
        custom_executor_spec=executor_spec.ExecutorClassSpec(TrainerExecutor),
    )
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=serving_dir)),
    )
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[sample_gen, statistics_gen, schema_gen, contract,
                    example_validator, transform, trainer, pusher],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )
