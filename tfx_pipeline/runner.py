"""Runners: the local run (LocalDagRunner, SQLite ML Metadata) and the Kubeflow compile.

Both read a `Config` and call `create_pipeline`; neither holds pipeline logic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

from daian_tf.core.config import Config
from tfx_pipeline.pipeline import PIPELINE_NAME, create_pipeline, write_schema
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


def latest_version_dir(serving_dir: str) -> str:
    """The highest numeric version under a model base path, as TF Serving picks it."""
    versions = [p for p in Path(serving_dir).iterdir() if p.name.isdigit()]
    if not versions:
        raise FileNotFoundError(f"no numeric version directory in {serving_dir}")
    return str(max(versions, key=lambda p: int(p.name)))


def latest_output_artifact(metadata_path: str, component_id: str, output_key: str,
                           pipeline_name: str = PIPELINE_NAME):
    """The MLMD artifact (`metadata_store_pb2.Artifact`: uri, custom properties) of
    `output_key` of the newest successful run of `component_id`."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = metadata_path
    connection.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READONLY)
    store = metadata_store.MetadataStore(connection)
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
    ids = [ev.artifact_id for ev in store.get_events_by_execution_ids([newest.id])
           if ev.type == metadata_store_pb2.Event.OUTPUT
           and any(step.key == output_key for step in ev.path.steps)]
    if not ids:
        raise LookupError(f"{component_id!r} has no output {output_key!r}")
    return store.get_artifacts_by_id(ids)[0]


def latest_output_uri(metadata_path: str, component_id: str, output_key: str,
                      pipeline_name: str = PIPELINE_NAME) -> str:
    """The URI of `output_key` of the newest successful run of `component_id`, from MLMD."""
    return latest_output_artifact(metadata_path, component_id, output_key,
                                  pipeline_name).uri


def run_local(raw_dir: str, root: str, cfg: Config,
              beam_args: Optional[List[str]] = None,
              enable_cache: bool = True) -> dict:
    """Runs the whole pipeline locally; returns the paths of what it produced."""
    from tfx import v1 as tfx

    paths = layout(root)
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
        beam_pipeline_args=beam_args,
        enable_cache=enable_cache,
    )
    with component_progress() as progress:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    return {**paths, "pushed_model": latest_version_dir(paths["serving_dir"]),
            "component_seconds": progress.seconds}


def compile_kubeflow(raw_dir: str, root: str, cfg: Config, output: str,
                     image: str, beam_args: Optional[List[str]] = None) -> dict:
    """Compiles the pipeline for Kubeflow Pipelines (v2 spec JSON); runs nothing.

    `root` is the pipeline root the cluster will use (e.g. gs://bucket/daian); the schema
    file must be readable there, so it is written under it when `root` is local and
    expected at `<root>/schema/schema.pbtxt` otherwise (write it with `write_schema`).
    """
    from tfx import v1 as tfx

    paths = layout(root)
    if "://" not in root:
        os.makedirs(os.path.dirname(paths["schema_file"]), exist_ok=True)
        write_schema(cfg, paths["schema_file"])
    pipeline = create_pipeline(
        raw_dir=raw_dir,
        pipeline_root=paths["pipeline_root"],
        serving_dir=paths["serving_dir"],
        schema_file=paths["schema_file"],
        cfg=cfg,
        beam_pipeline_args=beam_args,
    )
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=image),
        output_filename=output,
    )
    runner.run(pipeline, write_out=True)
    return {"pipeline_spec": os.path.abspath(output), **paths}
