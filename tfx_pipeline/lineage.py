"""Reading a pipeline's ML Metadata: runs, executions and the artifacts they used.

What a person (or a test) asks after a run: which executions ran in it and in which
state (complete, cached, still "running" after a kill), what a Trainer started from
(`base_model`), what an Evaluator compared against. Read-only; SQLite ML Metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from tfx_pipeline.pipeline import PIPELINE_NAME

NODE_CONTEXT, RUN_CONTEXT = "node", "pipeline_run"  # TFX's context types


def open_store(metadata_path: str):
    """A read-only `MetadataStore` on a SQLite ML Metadata file."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = metadata_path
    connection.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READONLY)
    return metadata_store.MetadataStore(connection)


def state_name(execution) -> str:
    """"COMPLETE", "CACHED", "RUNNING", "FAILED", ... of an MLMD execution."""
    from ml_metadata.proto import metadata_store_pb2

    return metadata_store_pb2.Execution.State.Name(execution.last_known_state)


@dataclass
class Step:
    """One execution of one component in one run."""

    component: str
    state: str
    execution_id: int
    seconds: Optional[float]  # from creation to the last update


def runs(store, pipeline_name: str = PIPELINE_NAME) -> List[str]:
    """The pipeline's run ids, oldest first."""
    contexts = [c for c in store.get_contexts_by_type(RUN_CONTEXT)]
    contexts.sort(key=lambda c: (c.create_time_since_epoch, c.id))
    return [c.name for c in contexts]


def _component_of(store, execution_id: int, pipeline_name: str) -> str:
    prefix = f"{pipeline_name}."
    for context in store.get_contexts_by_execution(execution_id):
        if context.type_id == store.get_context_type(NODE_CONTEXT).id:
            return context.name[len(prefix):] if context.name.startswith(prefix) \
                else context.name
    return "?"


def steps_of_run(store, run_id: str, pipeline_name: str = PIPELINE_NAME
                 ) -> Dict[str, Step]:
    """{component id: Step} of the executions of run `run_id`."""
    context = store.get_context_by_type_and_name(RUN_CONTEXT, run_id)
    if context is None:
        raise LookupError(f"no pipeline run {run_id!r}")
    out = {}
    for execution in store.get_executions_by_context(context.id):
        component = _component_of(store, execution.id, pipeline_name)
        seconds = (execution.last_update_time_since_epoch
                   - execution.create_time_since_epoch) / 1000.0
        out[component] = Step(component, state_name(execution), execution.id, seconds)
    return out


def artifacts_of(store, execution_id: int, key: str, inputs: bool = True) -> list:
    """The input (or output) artifacts of an execution under `key` (e.g. "base_model")."""
    from ml_metadata.proto import metadata_store_pb2

    kinds = ((metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
             if inputs else (metadata_store_pb2.Event.OUTPUT,
                             metadata_store_pb2.Event.DECLARED_OUTPUT))
    ids = [event.artifact_id for event in store.get_events_by_execution_ids([execution_id])
           if event.type in kinds and any(s.key == key for s in event.path.steps)]
    return store.get_artifacts_by_id(ids) if ids else []
