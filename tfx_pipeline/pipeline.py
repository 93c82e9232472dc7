"""`create_pipeline(...)`: the DAIAN TFX pipeline as a plain function of its paths.

    TirSampleGen (the Beam sample builder) → StatisticsGen → SchemaGen (inferred, for review)
    ImportSchemaGen (the contract, DATA.md §2) → ExampleValidator (stops bad data)
    → Transform → Trainer_stage1 → Trainer_stage2 → Trainer_stage3  (DAIAN, by base_model)
                → Trainer_din                                    (the baseline)
    LatestBlessedModel (Resolver) ─ warm start of Trainer_stage1 and the second baseline
    Evaluator_vs_din, Evaluator_vs_blessed (TFMA) → PushGate ─┐
    InfraCheck (the SavedModel under TF's C++ loader, as in TF Serving) ─ Pusher (only
                                                                        if both bless)

DAIAN's three training stages are three Trainers of one module (`trainer_module`), each
starting from the previous one's `Model` artifact through `base_model`; the first one
(`pipeline.start_from_blessed`) from the latest blessed model, whose Resolver reads only
`PushGate`'s blessings (the models that passed the gate). Two Evaluators compare the
last stage with the baseline Trainer's model and with the latest blessed model
(`eval_config`); the gate joins their verdicts into the blessing the Pusher reads.

The I-2 similarity range travels as data: TirSampleGen's `Examples` artifact carries it
(`sim_range` property), Transform and Trainer read it there (`sim_range_executors`).
The imported schema is written from `daian_tf.data.transform.raw_feature_spec`, so the
Transform component parses exactly what `preprocessing_fn` expects, and ExampleValidator
checks the built examples against the contract rather than against themselves; Transform
waits for it, so examples that break the contract stop the run before any Trainer.
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
from daian_tf.core.names import DAIAN, EVAL, SPLITS, STAGES, TRAIN, VALIDATION
from daian_tf.data.transform import raw_schema, transform_custom_config
from tfx_pipeline.components.sample_gen import TirSampleGen
from tfx_pipeline.components.infra_check import InfraCheck
from tfx_pipeline.components.push_gate import PushGate
from tfx_pipeline.components.sim_range_executors import TrainerExecutor, TransformExecutor
from tfx_pipeline.components.validation import ExampleValidator
from tfx_pipeline.eval_config import eval_config
from tfx_pipeline.trainer_module import CONFIG_KEY, FULL, RAW_DIR_KEY, STAGE_KEY

PIPELINE_NAME = "daian"
LAST_STAGE = STAGES[-1]  # DAIAN's stage whose model is evaluated and pushed
PUSH_GATE_ID, LATEST_BLESSED_ID = "PushGate", "LatestBlessedModel"
INFRA_CHECK_ID = "InfraCheck"
TRAINER_SECTIONS = ("samples", "model", "train")  # of the config, in custom_config


def trainer_id(stage_or_model: str) -> str:
    """The component id of a DAIAN stage's Trainer or of the baseline's (by model name)."""
    return f"Trainer_{stage_or_model}"


def candidate_trainer_id(cfg: Config) -> str:
    """The Trainer whose model is evaluated and pushed: DAIAN's last stage, or the one
    Trainer of another `model.name`."""
    return trainer_id(LAST_STAGE if cfg.model.name == DAIAN else cfg.model.name)


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
    pcfg = cfg.pipeline
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
    example_validator = ExampleValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=contract.outputs["schema"])
    transform = Transform(
        examples=sample_gen.outputs["examples"],
        schema=contract.outputs["schema"],
        preprocessing_fn="tfx_pipeline.transform_module.preprocessing_fn",
        # vocabularies and statistics from train alone; every split transformed
        splits_config=tfx.proto.SplitsConfig(analyze=[TRAIN], transform=list(SPLITS)),
        # sim_range: filled in at run time from the Examples artifact
        custom_config={**transform_custom_config(cfg, None), "code_version": version},
    )
    transform.add_upstream_node(example_validator)  # bad data stops here

    def trainer(component_id: str, model_cfg: dict, stage: str, base_model=None):
        # raw_dir: DAIAN's frozen multimodal catalog is read from item_embeddings.parquet
        custom_config = {CONFIG_KEY: model_cfg, STAGE_KEY: stage,
                         "code_version": version, RAW_DIR_KEY: raw_dir}
        return tfx.components.Trainer(
            run_fn="tfx_pipeline.trainer_module.run_fn",
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=contract.outputs["schema"],
            base_model=base_model,
            # a Trainer chooses its epochs by its eval_args: the validation split;
            # the eval split is read by the Evaluators alone
            train_args=tfx.proto.TrainArgs(splits=[TRAIN]),
            eval_args=tfx.proto.EvalArgs(splits=[VALIDATION]),
            custom_config=custom_config,
            custom_executor_spec=executor_spec.ExecutorClassSpec(TrainerExecutor),
        ).with_id(component_id)

    latest_blessed = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model,
                              producer_component_id=candidate_trainer_id(cfg),
                              output_key="model"),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing,
                                       producer_component_id=PUSH_GATE_ID,
                                       output_key="blessing"),
    ).with_id(LATEST_BLESSED_ID)
    blessed_model = latest_blessed.outputs["model"]

    # the sections a Trainer reads: a change elsewhere (the gate, the world) keeps its cache
    trainer_dict = {key: config_dict[key] for key in TRAINER_SECTIONS}
    if cfg.model.name == DAIAN:  # a Trainer per stage, chained by base_model
        stages, base = [], None
        first = STAGES.index(pcfg.start_from_blessed) if pcfg.start_from_blessed else 0
        for stage in STAGES[first:]:
            if stage == pcfg.start_from_blessed:
                base = blessed_model
            stages.append(trainer(trainer_id(stage), trainer_dict, stage, base_model=base))
            base = stages[-1].outputs["model"]
    else:  # another model: one Trainer, from scratch
        stages = [trainer(candidate_trainer_id(cfg), trainer_dict, FULL)]
    candidate = stages[-1]
    baseline = None
    if pcfg.baseline != cfg.model.name:
        baseline_dict = {**trainer_dict, "model": dataclasses.asdict(
            dataclasses.replace(cfg.model, name=pcfg.baseline))}
        baseline = trainer(trainer_id(pcfg.baseline), baseline_dict, FULL)

    config = eval_config(pcfg)

    def evaluator(component_id: str, baseline_model):
        return tfx.components.Evaluator(
            examples=sample_gen.outputs["examples"],
            model=candidate.outputs["model"],
            baseline_model=baseline_model,
            schema=contract.outputs["schema"],
            eval_config=config,
            example_splits=[EVAL],
        ).with_id(component_id)

    evaluators, gate_inputs = [], {}
    if baseline is not None:
        vs_baseline = evaluator(f"Evaluator_vs_{pcfg.baseline}", baseline.outputs["model"])
        evaluators.append(vs_baseline)
        gate_inputs.update(baseline_blessing=vs_baseline.outputs["blessing"],
                           baseline_evaluation=vs_baseline.outputs["evaluation"])
    if pcfg.compare_with_blessed:
        vs_blessed = evaluator("Evaluator_vs_blessed", blessed_model)
        evaluators.append(vs_blessed)
        gate_inputs.update(blessed_blessing=vs_blessed.outputs["blessing"],
                           blessed_evaluation=vs_blessed.outputs["evaluation"])
    gate = PushGate(model=candidate.outputs["model"], baseline_name=pcfg.baseline,
                    **gate_inputs).with_id(PUSH_GATE_ID)
    infra = []
    if pcfg.infra_check:
        infra = [InfraCheck(model=candidate.outputs["model"],
                            examples=sample_gen.outputs["examples"]).with_id(INFRA_CHECK_ID)]
    pusher = tfx.components.Pusher(
        model=candidate.outputs["model"],
        model_blessing=gate.outputs["blessing"],
        infra_blessing=infra[0].outputs["blessing"] if infra else None,
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=serving_dir)),
    )
    uses_blessed = pcfg.compare_with_blessed or pcfg.start_from_blessed
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[sample_gen, statistics_gen, schema_gen, contract,
                    example_validator, transform]
        + ([latest_blessed] if uses_blessed else [])
        + stages + ([baseline] if baseline else []) + evaluators + infra + [gate, pusher],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )
