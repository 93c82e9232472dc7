"""What the pipeline image holds, rebuilt without Docker (tests/_image.py): the wheel
the Dockerfile builds from its build context, in a fresh virtual environment with the
pinned set and nothing else. Every module, class and function the compiled Kubeflow
spec names must import there, and TirSampleGen runs there as its container runs it
(the KFP v2 entrypoint with the spec's arguments and an ExecutorInput).

The pinned set the wheel needs is linked once per set of versions into
~/.cache/daian-tf/image-site-<hash> from the test run's environment, which the same lock
installed (tests/_image.py: `base_site`); it is not downloaded again."""

from __future__ import annotations

import json
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from tests import _image as I
from daian_tf.core.names import SPLITS

pytestmark = pytest.mark.slow

IMAGE = "registry.example.com/ml/daian-tf-pipeline:test"
# the Beam options of the spec: the DirectRunner of the task's own container
BEAM_ARGS = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
TIMINGS: dict = {}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel of the Dockerfile's wheel stage (its COPYs of the build context)."""
    t0 = time.monotonic()
    root = tmp_path_factory.mktemp("wheel")
    wheel = I.build_wheel(I.stage_sources(root / "src"), root / "dist")
    TIMINGS["wheel_s"] = round(time.monotonic() - t0, 1)
    return wheel


@pytest.fixture(scope="module")
def image_python(wheel, tmp_path_factory):
    """The python of a fresh venv with the wheel and the pinned set only."""
    base, made_s = I.base_site(I.wheel_requirements(wheel))
    t0 = time.monotonic()
    python = I.image_venv(wheel, tmp_path_factory.mktemp("image") / "venv", base)
    TIMINGS.update(base_site_made_s=round(made_s, 1),
                   fresh_venv_s=round(time.monotonic() - t0, 1))
    print(f"\n[image] timings: {TIMINGS}")
    return python


def _run(python, *args, cwd, timeout=900, **env):
    return subprocess.run([str(python), "-I", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=I.clean_env(**env))


def test_the_wheel_holds_every_file_of_the_packages(wheel):
    """Every tracked file of the packages (modules and data: base.yaml, the serving
    configs) is in the wheel; only the serving README is not."""
    tracked = subprocess.run(["git", "ls-files", "daian_tf", "tfx_pipeline", "serving"],
                             cwd=I.REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    missing = [f for f in tracked if f not in names and not f.endswith(".md")]
    assert not missing, f"not in the wheel (setup.py packages/package_data): {missing}"
    assert "daian_tf/core/base.yaml" in names
    import daian_tf

    assert wheel.name.startswith(f"daian_tf-{daian_tf.__version__}-")  # the image's tag


def test_the_environment_holds_the_wheel_and_the_pinned_set_only(image_python, wheel):
    found = I.installed(image_python)
    pins = I.requirement_pins()
    assert found.pop("daian-tf") == I.wheel_metadata(wheel)["Version"]
    off = {name: version for name, version in found.items()
           if name not in I.VENV_SEEDS and pins.get(name) != version}
    assert not off, f"not the lock's versions: {off}"
    assert "pytest" not in found  # not the test run's environment
    check = _run(image_python, "-m", "pip", "check", cwd=wheel.parent)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    """The pipeline compiled here (the checkout), on a local root; its raw-log directory
    is made only by the test that runs TirSampleGen."""
    from daian_tf.core.config import DEFAULT_CONFIG_FILE, load_config
    from tfx_pipeline.runner import compile_kubeflow

    root = tmp_path_factory.mktemp("compiled")
    cfg = load_config(DEFAULT_CONFIG_FILE)
    return compile_kubeflow(str(root / "raw"), str(root / "root"), cfg,
                            str(root / "daian.json"), image=IMAGE, beam_args=BEAM_ARGS)


@pytest.fixture(scope="module")
def raw_dir(image_python, spec):
    """A small simulated world at the spec's raw_dir, made by the image environment's
    `daian`."""
    raw = Path(spec["raw_dir"])
    run = _run(image_python, "-m", "daian_tf.cli", "simulate", str(raw), "--scale", "0.05",
               cwd=raw.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    return raw


def test_every_reference_of_the_spec_imports_in_the_image_environment(image_python, spec):
    from tfx_pipeline.spec_check import code_versions, load_pipeline_job

    path = spec["pipeline_spec"]
    run = _run(image_python, "-m", "tfx_pipeline.spec_check", path, "--image", IMAGE,
               "--json", cwd=Path(path).parent)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["problems"] == []
    kinds = {(r["kind"], r["name"]) for r in result["references"]}
    assert ("class", "tfx_pipeline.components.sample_gen.TirSampleGen_Executor") in kinds
    assert ("function", "tfx_pipeline.trainer_module.run_fn") in kinds
    assert ("metric", "tfx_pipeline.tfma_metrics.GAUC") in kinds
    # the image environment's code is the code the spec was compiled from
    assert {result["code_version"]} == code_versions(load_pipeline_job(path))
    where = _run(image_python, "-c", "import daian_tf, tfx_pipeline; "
                 "print(daian_tf.__file__); print(tfx_pipeline.__file__)",
                 cwd=Path(path).parent)
    venv = image_python.parent.parent
    assert all(Path(p).is_relative_to(venv) for p in where.stdout.split()), where.stdout


def _executor_input(spec_path: str, task_name: str, out_root: Path) -> tuple:
    """(container, ExecutorInput JSON) of a task whose inputs are constants: what KFP's
    launcher hands the container in place of `{{$}}`."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx_pipeline.spec_check import containers, load_pipeline_job, pipeline_spec, tasks

    spec = pipeline_spec(load_pipeline_job(spec_path))
    task = tasks(spec)[task_name]
    component = spec.components[task.component_ref.name]
    container = containers(spec)[component.executor_label]
    executor_input = pipeline_spec_pb2.ExecutorInput()
    for name, parameter in task.inputs.parameters.items():  # constants: as the spec gives
        executor_input.inputs.parameters[name].CopyFrom(
            parameter.runtime_value.constant_value)
    for i, (key, output) in enumerate(component.output_definitions.artifacts.items()):
        artifact = executor_input.outputs.artifacts[key].artifacts.add()
        artifact.name = f"projects/test/locations/here/metadataStores/default/artifacts/{i}"
        artifact.uri = str(out_root / task_name / key)
        artifact.type.CopyFrom(output.artifact_type)
    executor_input.outputs.output_file = str(out_root / task_name / "executor_output.json")
    return container, json_format.MessageToJson(executor_input)


def test_tir_sample_gen_runs_in_the_image_environment_as_its_container_does(
        image_python, spec, raw_dir, tmp_path):
    """The spec's command and arguments for TirSampleGen (the KFP v2 entrypoint, the
    executor class, the Beam options), run by the image environment's python."""
    import tensorflow as tf
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    container, invocation = _executor_input(spec["pipeline_spec"], "TirSampleGen", tmp_path)
    assert container.command[0] == "python"  # the image's PATH makes it the venv's
    args = [invocation if a == "{{$}}" else a for a in container.args]
    assert args[-len(BEAM_ARGS):] == BEAM_ARGS
    t0 = time.monotonic()
    run = _run(image_python, *container.command[1:], *args, cwd=tmp_path)
    TIMINGS["tir_sample_gen_s"] = round(time.monotonic() - t0, 1)
    print(f"\n[image] timings: {TIMINGS}")
    assert run.returncode == 0, run.stderr[-5000:]
    output = json_format.Parse((tmp_path / "TirSampleGen" / "executor_output.json")
                               .read_text(), pipeline_spec_pb2.ExecutorOutput())
    examples = output.artifacts["examples"].artifacts[0]
    assert examples.uri == str(tmp_path / "TirSampleGen" / "examples")
    assert json.loads(examples.metadata["split_names"]) == list(SPLITS)
    assert "sim_range" in examples.metadata  # what Transform and the Trainers read
    for split in SPLITS:
        files = sorted((Path(examples.uri) / f"Split-{split}").glob("*.gz"))
        assert files, split
        first = next(iter(tf.data.TFRecordDataset([str(f) for f in files],
                                                  compression_type="GZIP")))
        assert "label" in tf.train.Example.FromString(first.numpy()).features.feature
