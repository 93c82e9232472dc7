"""Checks that an environment can run a compiled Kubeflow pipeline spec.

`daian pipeline compile` writes a Kubeflow Pipelines `PipelineJob` JSON (TFX's
`KubeflowV2DagRunner`) whose `pipelineSpec` names, as strings, the code every task runs:
the container's entry module (`python -m tfx.orchestration.kubeflow.v2.container.
kubeflow_v2_run_executor`), each executor class (`--executor_class_path`), the module
functions (`preprocessing_fn`, `run_fn`), the TFMA metrics of the Evaluators'
`eval_config` (`module` + `class_name`), and the package's code hash (`code_version`).
This module reads them with kfp's protos (`references`, in any environment) and resolves
each one the way TFX does at run time (`check`, in the environment under test): run it
inside the pipeline image before submitting a spec,

    docker run --rm -i --entrypoint python IMAGE -m tfx_pipeline.spec_check - < spec.json

It exits 1 and names every reference that does not import, a task whose image is not
`--image`, and a `code_version` other than the one of the code it finds, i.e. an image
built from other sources than the spec.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import re
import sys
from typing import Iterator, List, Optional

# the packages of this project: any dotted name of theirs in a spec must resolve
PROJECT_PACKAGES = ("daian_tf", "tfx_pipeline", "serving")
# (not inside a path or a longer name)
_PROJECT_NAME = re.compile(r"(?<![\w/.-])(?:%s)(?:\.[A-Za-z_]\w*)+"
                           % "|".join(PROJECT_PACKAGES))
EXECUTOR_FLAG = "--executor_class_path"
# TFX task parameters that name a function by its dotted path (udf_utils.get_fn)
FUNCTION_PARAMETERS = ("preprocessing_fn", "stats_options_updater_fn", "run_fn",
                       "trainer_fn", "tuner_fn", "custom_extractors")
CODE_VERSION_KEY = "code_version"


@dataclasses.dataclass(frozen=True)
class Reference:
    """Something a spec makes a container import: `kind` is `module`, `class` (TFX's
    `import_class_by_path`), `function` (a module function), `metric` (a TFMA metric
    class) or `name` (a project dotted name found elsewhere: the longest importable
    module, then attributes); `where` says where the spec names it."""

    kind: str
    name: str
    where: str


def load_pipeline_job(path_or_text: str):
    """The `PipelineJob` proto of a spec file (or JSON text); ValueError names what is
    wrong with it."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    text = path_or_text
    if not path_or_text.lstrip().startswith("{"):
        with open(path_or_text) as f:
            text = f.read()
    job = pipeline_spec_pb2.PipelineJob()
    try:
        json_format.Parse(text, job)
    except json_format.ParseError as e:
        raise ValueError(f"not a Kubeflow PipelineJob JSON: {e}") from None
    if not job.pipeline_spec.fields:
        raise ValueError("the PipelineJob has no pipelineSpec")
    return job


def pipeline_spec(job):
    """The job's `PipelineSpec` (kfp's proto), parsed strictly."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    return json_format.ParseDict(json_format.MessageToDict(job.pipeline_spec),
                                 pipeline_spec_pb2.PipelineSpec())


def deployment_config(spec):
    """The spec's `PipelineDeploymentConfig` (executors: containers, resolvers)."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    return json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec),
                                 pipeline_spec_pb2.PipelineDeploymentConfig())


def containers(spec) -> dict:
    """{executor label: `PipelineContainerSpec`} of the executors that run a container."""
    return {label: executor.container
            for label, executor in deployment_config(spec).executors.items()
            if executor.HasField("container")}


def tasks(spec) -> dict:
    """{task name: `PipelineTaskSpec`} of the root DAG and of every sub-DAG."""
    out = dict(spec.root.dag.tasks)
    for component in spec.components.values():
        if component.HasField("dag"):
            out.update(component.dag.tasks)
    return out


def constant_parameters(task) -> dict:
    """{parameter: Python value} of a task's constant input parameters."""
    from google.protobuf import json_format

    out = {}
    for name, spec in task.inputs.parameters.items():
        value = spec.runtime_value
        if value.HasField("constant"):
            out[name] = json_format.MessageToDict(value.constant)
        elif value.HasField("constant_value"):
            which = value.constant_value.WhichOneof("value")
            out[name] = getattr(value.constant_value, which) if which else None
    return out


def container_arguments(container) -> tuple:
    """(executor class path or None, the other arguments: Beam's) of a container,
    without the `{{$}}`-style placeholders that KFP fills in."""
    args, executor, rest = list(container.args), None, []
    i = 0
    while i < len(args):
        if args[i] == EXECUTOR_FLAG and i + 1 < len(args):
            executor, i = args[i + 1], i + 2
        elif args[i].startswith("--json_serialized_") and i + 1 < len(args):
            i += 2
        else:
            rest.append(args[i])
            i += 1
    return executor, rest


def _entry_module(command) -> Optional[str]:
    command = list(command)
    return command[command.index("-m") + 1] if "-m" in command[:-1] else None


def _strings(value) -> Iterator[str]:
    """Every string in a JSON value, and in JSON-encoded strings inside it."""
    if isinstance(value, str):
        yield value
        try:
            inner = json.loads(value)
        except ValueError:
            return
        if isinstance(inner, (dict, list)):
            yield from _strings(inner)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def references(job) -> List[Reference]:
    """Everything the spec makes a container import, in a stable order; any dotted name
    of the project packages found anywhere else in the spec is added as a `name`."""
    from google.protobuf import json_format
    from tensorflow_model_analysis.proto import config_pb2

    spec = pipeline_spec(job)
    refs: List[Reference] = []
    for label, container in sorted(containers(spec).items()):
        module = _entry_module(container.command)
        if module:
            refs.append(Reference("module", module, f"{label}: command"))
        hook = container.lifecycle.pre_cache_check
        if _entry_module(hook.command):
            refs.append(Reference("module", _entry_module(hook.command),
                                  f"{label}: pre_cache_check command"))
        executor, _ = container_arguments(container)
        if executor:
            refs.append(Reference("class", executor, f"{label}: {EXECUTOR_FLAG}"))
    for name, task in sorted(tasks(spec).items()):
        for parameter, value in sorted(constant_parameters(task).items()):
            if parameter in FUNCTION_PARAMETERS and value:
                refs.append(Reference("function", value, f"task {name}: {parameter}"))
            elif parameter == "eval_config" and value:
                config = json_format.Parse(value, config_pb2.EvalConfig())
                for metrics_spec in config.metrics_specs:
                    for metric in metrics_spec.metrics:
                        if metric.module:
                            refs.append(Reference(
                                "metric", f"{metric.module}.{metric.class_name}",
                                f"task {name}: eval_config"))
    named = {r.name for r in refs}
    covered = named | {n.rsplit(".", 1)[0] for n in named}
    spec_dict = json_format.MessageToDict(job.pipeline_spec)
    for found in sorted({m for s in _strings(spec_dict) for m in _PROJECT_NAME.findall(s)}):
        if found not in covered:
            refs.append(Reference("name", found, "elsewhere in the spec"))
    return refs


def module_files(job) -> List[str]:
    """Tasks with a `module_file` parameter: loose files the image does not hold (on a
    cluster they fail with `No module named 'user_module_0'`, tfx #4764)."""
    return [f"task {name}: module_file {params['module_file']!r}"
            for name, task in sorted(tasks(pipeline_spec(job)).items())
            for params in [constant_parameters(task)] if params.get("module_file")]


def code_versions(job) -> set:
    """The `code_version` values the spec's tasks carry (a hash of the package's
    sources at compile time, `tfx_pipeline.pipeline.code_version`)."""
    out = set()
    for task in tasks(pipeline_spec(job)).values():
        for parameter, value in constant_parameters(task).items():
            if parameter == CODE_VERSION_KEY and value:
                out.add(value)
            elif parameter == "custom_config" and value:
                config = json.loads(value)
                if isinstance(config, dict) and config.get(CODE_VERSION_KEY):
                    out.add(config[CODE_VERSION_KEY])
    return out


def resolve(ref: Reference):
    """Imports what `ref` names the way TFX does at run time; returns it."""
    from tfx.utils import import_utils

    if ref.kind == "module":
        return importlib.import_module(ref.name)
    if ref.kind == "class":
        return import_utils.import_class_by_path(ref.name)
    if ref.kind == "function":
        module, function = ref.name.rsplit(".", 1)
        return import_utils.import_func_from_module(module, function)
    if ref.kind == "metric":
        from tensorflow_model_analysis.metrics import metric_types

        module, name = ref.name.rsplit(".", 1)
        metric = getattr(importlib.import_module(module), name)
        if not (isinstance(metric, type) and issubclass(metric, metric_types.Metric)):
            raise TypeError(f"{ref.name} is not a TFMA Metric class")
        return metric
    if ref.kind == "name":  # the longest module, then attributes
        parts = ref.name.split(".")
        for i in range(len(parts), 0, -1):
            module = ".".join(parts[:i])
            try:
                obj = importlib.import_module(module)
            except ModuleNotFoundError as e:
                if e.name == module and i > 1:  # not a module: try a shorter one
                    continue
                raise
            for attribute in parts[i:]:
                obj = getattr(obj, attribute)
            return obj
    raise ValueError(f"unknown reference kind {ref.kind!r}")


def check(job, image: Optional[str] = None) -> dict:
    """Resolves every reference of the spec here; checks the images, the module files
    and the code version. Returns {"references": [...], "problems": [...]}; no problem
    means this environment can run every task of the spec."""
    spec = pipeline_spec(job)
    problems, results = [], []
    if image is not None:
        for label, container in sorted(containers(spec).items()):
            if container.image != image:
                problems.append(f"{label}: image {container.image!r}, not {image!r}")
    problems += [f"{m}: name the function by its package path instead"
                 for m in module_files(job)]
    for ref in references(job):
        try:
            resolve(ref)
            error = None
        except Exception as e:  # noqa: BLE001 - every failure is reported
            error = f"{type(e).__name__}: {e}"
            problems.append(f"{ref.kind} {ref.name} ({ref.where}): {error}")
        results.append({**dataclasses.asdict(ref), "error": error})
    versions = code_versions(job)
    try:
        from tfx_pipeline.pipeline import code_version

        here = code_version()
    except Exception as e:  # noqa: BLE001
        here = None
        problems.append(f"code_version: cannot compute it here: {type(e).__name__}: {e}")
    if len(versions) > 1:
        problems.append(f"the spec's tasks carry different code versions "
                        f"{sorted(versions)}")
    elif versions and here is not None and versions != {here}:
        problems.append(f"code_version: the spec was compiled from code {versions.pop()}, "
                        f"this environment holds {here}: build the image from the sources "
                        f"the spec was compiled from, or compile again")
    return {"references": results, "code_version": here, "problems": problems}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tfx_pipeline.spec_check",
        description="Resolve, in this environment, every module, class and function a "
        "compiled Kubeflow pipeline spec names (run it inside the pipeline image).")
    p.add_argument("spec", help="the PipelineJob JSON of `daian pipeline compile`; - reads "
                   "standard input")
    p.add_argument("--image", help="also require every task to run this image")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    from daian_tf.core.console import quiet_libraries

    quiet_libraries()  # TensorFlow's C++ start-up lines; set before it is imported
    try:
        job = load_pipeline_job(sys.stdin.read() if args.spec == "-" else args.spec)
    except (OSError, ValueError) as e:
        print(f"error: {args.spec}: {e}", file=sys.stderr)
        return 2
    result = check(job, image=args.image)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for ref in result["references"]:
            status = "ok  " if ref["error"] is None else "FAIL"
            print(f"{status} {ref['kind']:8} {ref['name']}  ({ref['where']})")
        for problem in result["problems"]:
            print(f"problem: {problem}", file=sys.stderr)
        print(f"{len(result['references'])} references, {len(result['problems'])} "
              f"problems; code_version {result['code_version']}")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
