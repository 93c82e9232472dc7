"""Runners: the local run (LocalDagRunner, SQLite ML Metadata) and the Kubeflow compile.

Both read a `Config` and call `create_pipeline`; neither holds pipeline logic.
"""

from __future__ import annotations

import json
import os
from typing import List, Optional, Tuple

from daian_tf.core.config import Config, ConfigError, check_pipeline_image
from daian_tf.data.beam_runners import with_default_runner
from tfx_pipeline.components.push_gate import BLESSED_KEY, REASON_KEY, SUMMARY_KEY
from tfx_pipeline.lineage import artifacts_of, open_store
from tfx_pipeline.pipeline import (INFRA_CHECK_ID, PIPELINE_NAME, PUSH_GATE_ID,
                                   create_pipeline, write_schema)
from tfx_pipeline.progress import component_progress


def layout(root: str) -> dict:
    """Where a pipeline root keeps its parts."""
    root = os.path.abspath(root) if "://" not in root else root
    return {
        "pipeline_root": os.path.join(root, "artifacts"),
        "metadata": os.path.join(root, "metadata.sqlite"),
        "serving_dir": os.path.join(root, "serving"),
        "schema_file": os.path.join(root, "schema", "schema.pbtxt"),
    }


IMAGE_PLACEHOLDER = "{image}"  # in a Beam option: the pipeline image


def pipeline_beam_args(cfg: Config, beam_args: Optional[List[str]] = None,
                       image: Optional[str] = None) -> List[str]:
    """The Beam options of a run: the config's, then `beam_args`, with `{image}` replaced
    by the pipeline image (`image`, else `pipeline.image`), e.g.
    `--sdk_container_image={image}`, so that Beam's workers run the tasks' image; when
    they name no runner, Beam's FnApiRunner (`beam_runners.with_default_runner`: the
    DirectRunner would first try to download Prism)."""
    image = image or cfg.pipeline.image
    return with_default_runner(
        [arg.replace(IMAGE_PLACEHOLDER, image)
         for arg in list(cfg.pipeline.beam_args) + list(beam_args or [])])


def latest_output_artifact(metadata_path: str, component_id: str, output_key: str,
                           pipeline_name: str = PIPELINE_NAME):
    """The MLMD artifact (`metadata_store_pb2.Artifact`: uri, custom properties) of
    `output_key` of the newest successful run of `component_id`."""
    from ml_metadata.proto import metadata_store_pb2

    store = open_store(metadata_path)
    node = store.get_context_by_type_and_name("node", f"{pipeline_name}.{component_id}")
    if node is None:
        raise LookupError(f"no component {component_id!r} in {metadata_path}")
    done = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
    executions = [e for e in store.get_executions_by_context(node.id)
                  if e.last_known_state in done]
    if not executions:
        raise LookupError(f"{component_id!r} has no completed execution in "
                          f"{metadata_path}")
    newest = max(executions, key=lambda e: (e.create_time_since_epoch, e.id))
    artifacts = artifacts_of(store, newest.id, output_key, inputs=False)
    if not artifacts:
        raise LookupError(f"{component_id!r} has no output {output_key!r}")
    return artifacts[0]


def latest_output_uri(metadata_path: str, component_id: str, output_key: str,
                      pipeline_name: str = PIPELINE_NAME) -> str:
    """The URI of `output_key` of the newest successful run of `component_id`, from MLMD."""
    return latest_output_artifact(metadata_path, component_id, output_key,
                                  pipeline_name).uri


def paths_of(cfg: Config, raw_dir: Optional[str] = None,
             root: Optional[str] = None) -> Tuple[str, dict]:
    """(raw_dir, layout) of a run: the arguments, else the config's `pipeline:` paths."""
    raw_dir = raw_dir or cfg.pipeline.raw_dir
    root = root or cfg.pipeline.root
    missing = [name for name, value in (("raw_dir", raw_dir), ("root", root)) if not value]
    if missing:
        raise ConfigError(f"pipeline.{' and pipeline.'.join(missing)} not set: give "
                          f"them in the config's pipeline: section or on the command "
                          f"line (--raw, --root)")
    paths = layout(root)
    if cfg.pipeline.serving_dir:
        paths["serving_dir"] = cfg.pipeline.serving_dir
    return raw_dir, paths


def push_outcome(metadata_path: str, pipeline_name: str = PIPELINE_NAME,
                 infra_check: bool = True) -> dict:
    """What the newest run decided: the gate's verdict and reason, InfraCheck's reason
    (None when `infra_check` is off: the run had none), the pushed version."""
    gate = latest_output_artifact(metadata_path, PUSH_GATE_ID, "blessing", pipeline_name)
    infra = (latest_output_artifact(metadata_path, INFRA_CHECK_ID, "blessing",
                                    pipeline_name) if infra_check else None)
    pushed = latest_output_artifact(metadata_path, "Pusher", "pushed_model",
                                    pipeline_name)

    def prop(artifact, key):
        value = artifact.custom_properties.get(key)
        if value is None:
            return None
        return value.int_value if value.HasField("int_value") else value.string_value

    return {"blessed": bool(prop(gate, BLESSED_KEY)),
            "reason": prop(gate, REASON_KEY),
            "metrics": json.loads(prop(gate, SUMMARY_KEY) or "{}"),
            "infra_reason": prop(infra, REASON_KEY) if infra is not None else None,
            "pushed": bool(prop(pushed, "pushed")),
            "pushed_model": prop(pushed, "pushed_destination") or None}


def run_local(raw_dir: Optional[str], root: Optional[str], cfg: Config,
              beam_args: Optional[List[str]] = None,
              enable_cache: Optional[bool] = None) -> dict:
    """Runs the whole pipeline locally; returns the paths of what it produced and the
    push decision (`push_outcome`). `raw_dir`/`root`/`enable_cache` None: the config's
    `pipeline:` values; `beam_args` are added to the config's."""
    from tfx import v1 as tfx

    raw_dir, paths = paths_of(cfg, raw_dir, root)
    os.makedirs(os.path.dirname(paths["schema_file"]), exist_ok=True)
    write_schema(cfg, paths["schema_file"])
    pipeline = create_pipeline(
        raw_dir=os.path.abspath(raw_dir),
        pipeline_root=paths["pipeline_root"],
        serving_dir=paths["serving_dir"],
        schema_file=paths["schema_file"],
        cfg=cfg,
        metadata_connection_config=tfx.orchestration.metadata
        .sqlite_metadata_connection_config(paths["metadata"]),
        beam_pipeline_args=pipeline_beam_args(cfg, beam_args),
        enable_cache=cfg.pipeline.enable_cache if enable_cache is None else enable_cache,
    )
    with component_progress() as progress:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    return {**paths, **push_outcome(paths["metadata"],
                                    infra_check=cfg.pipeline.infra_check),
            "component_seconds": progress.seconds}


def compile_kubeflow(raw_dir: Optional[str], root: Optional[str], cfg: Config,
                     output: str, image: Optional[str] = None,
                     beam_args: Optional[List[str]] = None) -> dict:
    """Compiles the pipeline for Kubeflow Pipelines (a v2 `PipelineJob` JSON whose
    `pipelineSpec` is the pipeline); runs nothing.

    Every component runs in `image` (default `pipeline.image`), which must hold this
    package: the Dockerfile's image (docs/pipeline.md, Kubeflow); the stock TFX image is
    refused. Beam components get `pipeline_beam_args`. `root` (default `pipeline.root`)
    is the pipeline root the cluster uses (e.g. gs://bucket/daian): artifacts go to
    `<root>/artifacts`, the Pusher to `pipeline.serving_dir` (default `<root>/serving`),
    and ImportSchemaGen reads `<root>/schema/schema.pbtxt`. The schema is written there
    when `root` is local; otherwise it is written beside `output` (`schema_local` in the
    result) for you to copy to `schema_file`.
    """
    image = check_pipeline_image(image or cfg.pipeline.image,
                                 "--image" if image else "pipeline.image")
    from tfx import v1 as tfx

    raw_dir, paths = paths_of(cfg, raw_dir, root)
    schema_local = paths["schema_file"]
    if "://" in paths["pipeline_root"]:
        schema_local = os.path.splitext(os.path.abspath(output))[0] + ".schema.pbtxt"
    os.makedirs(os.path.dirname(schema_local), exist_ok=True)
    write_schema(cfg, schema_local)
    args = pipeline_beam_args(cfg, beam_args, image)
    pipeline = create_pipeline(
        raw_dir=raw_dir,
        pipeline_root=paths["pipeline_root"],
        serving_dir=paths["serving_dir"],
        schema_file=paths["schema_file"],
        cfg=cfg,
        beam_pipeline_args=args,
    )
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=image),
        output_filename=output,
    )
    runner.run(pipeline, write_out=True)
    return {"pipeline_spec": os.path.abspath(output), "image": image, "beam_args": args,
            "raw_dir": raw_dir, "pipeline_root": paths["pipeline_root"],
            "serving_dir": paths["serving_dir"], "schema_file": paths["schema_file"],
            "schema_local": schema_local}
