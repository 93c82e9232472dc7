"""The quiet console (daian_tf/core/console.py) and the pipeline's progress lines
(tfx_pipeline/progress.py), without running anything heavy."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

from daian_tf.core.console import NoiseFilter, is_noise_line
from tfx_pipeline.progress import PipelineProgress, component_progress

REPO = Path(__file__).resolve().parents[2]


def _record(name, level, msg, *args):
    return logging.LogRecord(name, level, __file__, 1, msg, args or None, None)


def test_the_filter_drops_known_noise_and_library_info_and_keeps_the_rest():
    f = NoiseFilter()
    drop = [
        _record("absl", logging.WARNING, "ArtifactQuery.property_predicate is not "
                "supported."),
        _record("absl", logging.INFO, "Component %s is running.", "Transform"),
        _record("tensorflow", logging.INFO, "Assets written to: %s", "/tmp/x"),
        _record("some_other_library", logging.INFO, "connected"),
        _record("py.warnings", logging.WARNING, "%s", "/x/y.py:246: FutureWarning: "
                "You are using a non-supported Python version (3.10.13)."),
        _record("root", logging.WARNING, "Waiting for grpc channel to be ready at %s.",
                "localhost:41737"),  # the FlinkRunner's job server starting
        _record("apache_beam.options.pipeline_options", logging.WARNING,
                "Unparseable argument: %s. Did you mean '--flink_version'?'",
                "--flink_conf_dir=/x/flink_conf"),  # ours, for the job server
    ]
    keep = [
        _record("absl", logging.WARNING, "something nobody has seen before"),
        _record("absl", logging.ERROR, "ArtifactQuery.property_predicate is not "
                "supported."),  # an ERROR is never noise
        _record("daian_tf.data", logging.INFO, "ours"),
        _record("__main__", logging.WARNING, "ours"),
        _record("py.warnings", logging.WARNING, "%s", "/x.py:1: UserWarning: new"),
        _record("root", logging.WARNING, "a warning through logging.warning()"),
        _record("apache_beam.options.pipeline_options", logging.WARNING,
                "Unparseable argument: %s", "--num_wrokers=2"),  # a user's typo
    ]
    assert [f.filter(r) for r in drop] == [False] * len(drop)
    assert [f.filter(r) for r in keep] == [True] * len(keep)


def test_noise_lines_of_the_cxx_log_are_recognised():
    assert is_noise_line("2026-12-01 17:38:30.916712: E external/local_xla/xla/"
                         "stream_executor/cuda/cuda_fft.cc:479] Unable to register "
                         "cuFFT factory: Attempting to register factory for plugin")
    assert not is_noise_line("Traceback (most recent call last):")


def test_progress_lines_durations_cache_and_table():
    ticks = iter([0.0, 2.5, 3.0, 3.2, 4.0, 10.0])
    out = io.StringIO()
    p = PipelineProgress(stream=out, clock=lambda: next(ticks))
    log = logging.getLogger("absl-test-progress")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addFilter(p)
    try:
        log.info("Component %s is running.", "Transform")
        log.info("Publishing output artifacts %s for execution %s",
                 {"transform_graph": [], "transformed_examples": []}, 3)
        log.info("Component %s is finished.", "Transform")
        log.info("Component %s is running.", "Pusher")
        log.info("A cached execution %d is used.", 7)
        log.info("Component %s is finished.", "Pusher")
        log.info("Skipping component %s.", "Gate")
        log.info("Component %s is running.", "Evaluator")
        p.fail()
    finally:
        log.removeFilter(p)
    text = out.getvalue()
    assert "Transform: started" in text
    assert "Transform: done in 2.5 s → transform_graph, transformed_examples" in text
    assert "Pusher: cached (0.2 s)" in text
    assert "Gate: skipped" in text
    assert "Evaluator: FAILED after 6.0 s" in text
    assert p.seconds == {"Transform": 2.5, "Pusher": 0.2}
    assert p.cached == ["Pusher"]
    table = p.table()
    for row in ("Transform  ran", "Pusher     cached", "Gate       skipped",
                "Evaluator  FAILED", "total"):
        assert row in table, table


def test_component_progress_restores_absl_and_passes_no_info_on():
    from absl import logging as absl_logging

    absl_logger = logging.getLogger("absl")
    absl_logging.set_verbosity(absl_logging.WARNING)
    before = absl_logger.level
    seen = []

    class Catch(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    catch = Catch()
    absl_logger.addHandler(catch)
    out = io.StringIO()
    try:
        with component_progress(stream=out) as progress:
            absl_logging.info("Component %s is running.", "StatisticsGen")
            absl_logging.info("Component %s is finished.", "StatisticsGen")
    finally:
        absl_logger.removeHandler(catch)
    assert absl_logger.level == before
    assert list(progress.seconds) == ["StatisticsGen"]
    assert "StatisticsGen: done in" in out.getvalue()
    assert "total" in out.getvalue()  # the summary table
    assert seen == []  # the INFO records made for the progress lines go no further


def test_the_cli_sets_up_the_console_before_tensorflow_is_imported():
    code = ("import sys\n"
            "from daian_tf.cli import build_parser\n"
            "import daian_tf.core.console as c\n"
            "build_parser()\n"
            "c.setup_console(False, None)\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'apache_beam', 'tfx') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "import os\n"
            "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO),
                                                      env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "3"


def test_result_properties_of_the_output_artifacts_are_shown(tmp_path):
    from ml_metadata.proto import metadata_store_pb2

    class Artifact:  # what TFX's Artifact exposes to us
        def __init__(self, uri="", **props):
            self.uri = uri
            self.mlmd_artifact = metadata_store_pb2.Artifact()
            for key, value in props.items():
                field = {int: "int_value", float: "double_value", str: "string_value"}
                setattr(self.mlmd_artifact.custom_properties[key],
                        field[type(value)], value)

    blessing = tmp_path / "blessing"
    blessing.mkdir()
    (blessing / "NOT_BLESSED").touch()
    ticks = iter([0.0, 1.0])
    out = io.StringIO()
    p = PipelineProgress(stream=out, clock=lambda: next(ticks))
    for msg, args in [("Component %s is running.", ("Evaluator",)),
                      ("Publishing output artifacts %s for execution %s",
                       ({"blessing": [Artifact(str(blessing), blessed=0,
                                               tfx_version="1.16.0")],
                         "evaluation": [Artifact()]}, 5)),
                      ("Component %s is finished.", ("Evaluator",))]:
        p.filter(_record("absl", logging.INFO, msg, *args))
    assert "Evaluator: done in 1.0 s → blessing (NOT blessed, blessed=0), evaluation" \
        in out.getvalue()
    infra = tmp_path / "infra"  # InfraCheck's (InfraValidator's) marker files
    infra.mkdir()
    (infra / "INFRA_NOT_BLESSED").touch()
    ticks = iter([0.0, 2.0])
    p = PipelineProgress(stream=out, clock=lambda: next(ticks))
    for msg, args in [("Component %s is running.", ("InfraCheck",)),
                      ("Publishing output artifacts %s for execution %s",
                       ({"blessing": [Artifact(str(infra))]}, 6)),
                      ("Component %s is finished.", ("InfraCheck",))]:
        p.filter(_record("absl", logging.INFO, msg, *args))
    assert "InfraCheck: done in 2.0 s → blessing (INFRA NOT blessed)" in out.getvalue()


def test_the_stderr_filter_drops_cxx_noise_and_passes_the_rest(tmp_path):
    """File descriptor 2 through the filter: C++ noise (also from a child process) goes
    to the log file, our lines, an unfinished line and a traceback reach stderr."""
    code = (
        "import os, subprocess, sys\n"
        "from daian_tf.core.console import setup_console\n"
        "setup_console(False, sys.argv[1])\n"
        "os.write(2, b'W0000 00:00:1796147176.087680    3335 op_level_cost_estimator"
        ".cc:699] Error in PredictCost() for the op\\n')\n"
        "sys.stderr.write('our line\\nno newline'); sys.stderr.flush()\n"
        # an unfinished line and a C++ log line in one write, as a slow reader sees them
        "os.write(2, b'half a line2026-12-01 17:38:30.916712: E external/x/cuda_fft.cc"
        ":479] Unable to register cuDNN factory: y\\n')\n"
        "subprocess.run(['sh', '-c', 'echo \"2026-12-01 17:38:30.916712: E external/"
        "x/cuda_fft.cc:479] Unable to register cuFFT factory: x\" >&2; "
        "echo child >&2'])\n"
        "raise RuntimeError('boom')\n")
    log = tmp_path / "log.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("DAIAN_STDERR_FILTER", None)
    run = subprocess.run([sys.executable, "-c", code, str(log)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "PredictCost" not in run.stderr and "cuFFT" not in run.stderr
    assert "our line\n" in run.stderr and "no newline" in run.stderr
    assert "half a line" in run.stderr and "cuDNN" not in run.stderr
    assert "child\n" in run.stderr
    assert "RuntimeError: boom" in run.stderr and "Traceback" in run.stderr
    assert "PredictCost" in log.read_text() and "cuFFT" in log.read_text()
    assert "cuDNN" in log.read_text() and "half a line" not in log.read_text()


def test_progress_survives_absl_flag_parsing_in_the_middle_of_the_run():
    """TFX's Beam executors parse absl's flags, which resets the absl logger's level."""
    from absl import flags
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    out = io.StringIO()
    with component_progress(stream=out) as progress:
        absl_logging.info("Component %s is running.", "Transform")
        flags.FLAGS(["prog"], known_only=True)  # what base_beam_executor does
        absl_logging.info("Component %s is finished.", "Transform")
    assert list(progress.seconds) == ["Transform"]
    assert logging.getLogger("absl").level == logging.WARNING
    assert "setLevel" not in logging.getLogger("absl").__dict__
