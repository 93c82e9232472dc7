"""`daian pipeline compile`: the Kubeflow spec is a KFP `PipelineSpec` whose every task
runs the configured pipeline image, with the root and the Beam options of the config
(configs/kubeflow.yaml) and the command line's overrides."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daian_tf.core.config import DEFAULT_CONFIG_FILE, load_config

pytestmark = pytest.mark.slow  # two compiles, ~20 s each

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [REPO / "configs" / "pipeline.yaml", REPO / "configs" / "kubeflow.yaml"]
IMAGE = "registry.example.com/ml/daian-tf-pipeline:test"
ROOT = "gs://test-bucket/daian"
# components that run Beam pipelines (BaseBeamExecutor subclasses or use_beam=True)
BEAM_TASKS = ("TirSampleGen", "StatisticsGen", "ExampleValidator", "Transform",
              "Evaluator_vs_din", "Evaluator_vs_blessed")
CUSTOM_CODE = {
    ("class", "tfx_pipeline.components.sample_gen.TirSampleGen_Executor"),
    ("class", "tfx_pipeline.components.validation.ExampleValidatorExecutor"),
    ("class", "tfx_pipeline.components.sim_range_executors.TransformExecutor"),
    ("class", "tfx_pipeline.components.sim_range_executors.TrainerExecutor"),
    ("class", "tfx_pipeline.components.push_gate.PushGate_Executor"),
    ("class", "tfx_pipeline.components.infra_check.InfraCheck_Executor"),
    ("function", "tfx_pipeline.transform_module.preprocessing_fn"),
    ("function", "tfx_pipeline.trainer_module.run_fn"),
    ("metric", "tfx_pipeline.tfma_metrics.GAUC"),
}


@pytest.fixture(scope="module")
def cli_compile(tmp_path_factory):
    """The README's command: configs/pipeline.yaml + configs/kubeflow.yaml, with --image,
    --root and one more Beam flag on the command line."""
    out = tmp_path_factory.mktemp("kfp") / "daian.json"
    run = subprocess.run(
        [sys.executable, "-m", "daian_tf.cli", "pipeline", "compile", *map(str, CONFIGS),
         "--image", IMAGE, "--root", ROOT, "--output", str(out), "--num_workers=4"],
        capture_output=True, text=True, timeout=600, cwd=out.parent,
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.returncode == 0, run.stderr[-3000:]
    printed = json.loads(run.stdout[run.stdout.index("{"):])
    return out, printed


def _job(path):
    from tfx_pipeline.spec_check import load_pipeline_job

    return load_pipeline_job(str(path))


def test_the_spec_is_a_kfp_pipeline_spec_with_every_component(cli_compile):
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx_pipeline.spec_check import pipeline_spec, tasks

    path, printed = cli_compile
    job = _job(path)
    spec = pipeline_spec(job)
    assert isinstance(spec, pipeline_spec_pb2.PipelineSpec)
    assert spec.pipeline_info.name == "daian" and spec.schema_version
    assert {"TirSampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
            "Transform", "Trainer_stage1", "Trainer_stage2", "Trainer_stage3",
            "Trainer_din", "Evaluator_vs_din", "Evaluator_vs_blessed", "PushGate",
            "InfraCheck", "Pusher"} <= set(tasks(spec))
    assert printed["pipeline_spec"] == str(path)


def test_every_task_runs_the_image_with_the_tfx_v2_entrypoint(cli_compile):
    from tfx.orchestration.kubeflow.v2.kubeflow_v2_dag_runner import KUBEFLOW_TFX_CMD
    from tfx_pipeline.spec_check import deployment_config, pipeline_spec, tasks

    spec = pipeline_spec(_job(cli_compile[0]))
    executors = deployment_config(spec).executors
    kinds = {}
    for name, task in tasks(spec).items():
        component = spec.components[task.component_ref.name]
        if not component.executor_label:  # a sub-DAG
            continue
        executor = executors[component.executor_label]
        kinds[name] = executor.WhichOneof("spec")
        if kinds[name] == "container":
            assert executor.container.image == IMAGE, name
            assert list(executor.container.command) == list(KUBEFLOW_TFX_CMD), name
    # only the Resolver's two queries run no container
    assert sorted(n for n, k in kinds.items() if k != "container") == [
        "LatestBlessedModel-model-blessing-resolver", "LatestBlessedModel-model-resolver"]
    assert sum(k == "container" for k in kinds.values()) == 15


def test_the_pusher_reads_the_gate_and_infra_check_blessings(cli_compile, tmp_path):
    """TFX's Pusher pushes only when both its model_blessing (PushGate) and its
    infra_blessing (InfraCheck: the model under TF's C++ loader) say blessed;
    `pipeline.infra_check: false` drops InfraCheck and the Pusher's infra input."""
    from tfx_pipeline.runner import compile_kubeflow
    from tfx_pipeline.spec_check import pipeline_spec, tasks

    def producers(path):
        pusher = tasks(pipeline_spec(_job(path)))["Pusher"]
        return {key: a.task_output_artifact.producer_task
                for key, a in pusher.inputs.artifacts.items()}

    assert producers(cli_compile[0]) == {"model": "Trainer_stage3",
                                         "model_blessing": "PushGate",
                                         "infra_blessing": "InfraCheck"}
    cfg = load_config(DEFAULT_CONFIG_FILE, *CONFIGS)
    off = dataclasses.replace(cfg, pipeline=dataclasses.replace(cfg.pipeline,
                                                                infra_check=False))
    out = compile_kubeflow(None, str(tmp_path / "root"), off, str(tmp_path / "p.json"))
    assert producers(out["pipeline_spec"]) == {"model": "Trainer_stage3",
                                               "model_blessing": "PushGate"}
    assert "InfraCheck" not in tasks(pipeline_spec(_job(out["pipeline_spec"])))


def test_the_root_raw_logs_and_serving_dir_come_from_config_and_command_line(cli_compile):
    from tfx_pipeline.spec_check import constant_parameters, pipeline_spec, tasks

    path, printed = cli_compile
    job = _job(path)
    cfg = load_config(DEFAULT_CONFIG_FILE, *CONFIGS)
    assert job.runtime_config.gcs_output_directory == f"{ROOT}/artifacts"  # --root
    t = tasks(pipeline_spec(job))
    assert constant_parameters(t["TirSampleGen"])["raw_dir"] == cfg.pipeline.raw_dir
    assert constant_parameters(t["ImportSchemaGen"])["schema_file"] == \
        f"{ROOT}/schema/schema.pbtxt"
    push = json.loads(constant_parameters(t["Pusher"])["push_destination"])
    assert push["filesystem"]["base_directory"] == cfg.pipeline.serving_dir
    # the schema to copy to the root, written beside the spec
    local = Path(printed["schema_local"])
    assert local.parent == path.parent and "feature {" in local.read_text()


def test_trainers_choose_by_validation_and_evaluators_report_on_eval(cli_compile):
    """Transform analyses train; each Trainer fits on train and chooses its epochs by
    validation (its eval_args); only the Evaluators read the eval split."""
    from tfx_pipeline.spec_check import constant_parameters, pipeline_spec, tasks

    def value(v):
        return json.loads(v) if isinstance(v, str) else v

    t = tasks(pipeline_spec(_job(cli_compile[0])))
    trainers = sorted(n for n in t if n.startswith("Trainer_"))
    assert trainers == ["Trainer_din", "Trainer_stage1", "Trainer_stage2",
                        "Trainer_stage3"]
    for name in trainers:
        params = constant_parameters(t[name])
        assert value(params["train_args"])["splits"] == ["train"], name
        assert value(params["eval_args"])["splits"] == ["validation"], name
    for name in ("Evaluator_vs_din", "Evaluator_vs_blessed"):
        assert value(constant_parameters(t[name])["example_splits"]) == ["eval"], name
    # Transform's vocabularies and statistics come from train alone
    assert value(constant_parameters(t["Transform"])["splits_config"]) == {
        "analyze": ["train"], "transform": ["train", "validation", "eval"]}


def test_the_beam_options_reach_the_beam_components(cli_compile):
    from tfx_pipeline.spec_check import container_arguments, containers, pipeline_spec

    cfg = load_config(DEFAULT_CONFIG_FILE, *CONFIGS)
    expected = [a.replace("{image}", IMAGE) for a in cfg.pipeline.beam_args] + \
        ["--num_workers=4"]
    assert f"--sdk_container_image={IMAGE}" in expected
    found = containers(pipeline_spec(_job(cli_compile[0])))
    for task in BEAM_TASKS:
        executor, beam = container_arguments(found[f"{task}_executor"])
        assert executor and beam == expected, task


def test_the_spec_names_the_custom_code_by_package_path(cli_compile):
    from tfx_pipeline.spec_check import code_versions, module_files, references
    from tfx_pipeline.pipeline import code_version

    job = _job(cli_compile[0])
    refs = references(job)
    assert CUSTOM_CODE <= {(r.kind, r.name) for r in refs}
    assert not [r for r in refs if r.kind == "name"]  # nothing project-named unchecked
    assert module_files(job) == []
    assert code_versions(job) == {code_version()}


def test_without_image_flag_the_config_image_is_used(tmp_path):
    from tfx_pipeline.runner import compile_kubeflow
    from tfx_pipeline.spec_check import containers, pipeline_spec

    cfg = load_config(DEFAULT_CONFIG_FILE, *CONFIGS)
    out = compile_kubeflow(None, str(tmp_path / "root"), cfg, str(tmp_path / "p.json"))
    assert out["image"] == cfg.pipeline.image
    spec = pipeline_spec(_job(out["pipeline_spec"]))
    assert {c.image for c in containers(spec).values()} == {cfg.pipeline.image}
    assert (tmp_path / "root" / "schema" / "schema.pbtxt").exists()  # a local root


def test_the_check_names_what_an_environment_cannot_run(cli_compile):
    """spec_check on the compiled spec with a wrong executor path, a loose module file,
    another image and another code version: each one is named."""
    from tfx_pipeline.spec_check import check, load_pipeline_job

    job = json.loads(Path(cli_compile[0]).read_text())
    spec = job["pipelineSpec"]
    container = spec["deploymentSpec"]["executors"]["PushGate_executor"]["container"]
    i = container["args"].index("--executor_class_path")
    container["args"][i + 1] = "tfx_pipeline.components.gone.Executor"
    container["image"] = "elsewhere/daian:1"
    params = spec["root"]["dag"]["tasks"]["TirSampleGen"]["inputs"]["parameters"]
    params["code_version"]["runtimeValue"]["constantValue"]["stringValue"] = "0" * 16
    params["module_file"] = {"runtimeValue": {"constantValue": {"stringValue": "m.py"}}}
    problems = check(load_pipeline_job(json.dumps(job)), image=IMAGE)["problems"]
    text = "\n".join(problems)
    assert "class tfx_pipeline.components.gone.Executor (PushGate_executor: " \
        "--executor_class_path): ImportError" in text
    assert "PushGate_executor: image 'elsewhere/daian:1', not" in text
    assert "task TirSampleGen: module_file 'm.py'" in text
    assert "different code versions" in text
    assert len(problems) == 4
