"""Beam options with the staged Flink job server (daian_tf/data/beam_runners.py), and
its set-up's coordinates; no JVM is started here (tests/integration/test_flink_runner.py
runs the pipelines on Flink)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import (FlinkRunnerOptions, PipelineOptions,
                                                  StandardOptions)

from daian_tf.core.errors import DaianInputError
from daian_tf.data import beam_runners as BR

REPO = Path(__file__).resolve().parents[2]
POM = REPO / "scripts" / "flink-job-server" / "pom.xml"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty job-server cache of our own, whatever this machine has staged."""
    monkeypatch.delenv(BR.JAR_ENV, raising=False)
    monkeypatch.setenv(BR.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _stage(cache_dir: Path) -> str:
    d = cache_dir / f"beam-{BR.FLINK_JOB_SERVER_BEAM_VERSION}-flink-{BR.FLINK_VERSION}"
    d.mkdir(parents=True)
    (d / "job-server.jar").write_bytes(b"PK")
    return str(d / "job-server.jar")


def test_the_pom_stages_the_version_the_code_expects():
    pom = POM.read_text()
    prop = {k: re.search(f"<{k}>(.*?)</{k}>", pom).group(1)
            for k in ("beam.version", "flink.line")}
    assert prop == {"beam.version": BR.FLINK_JOB_SERVER_BEAM_VERSION,
                    "flink.line": BR.FLINK_VERSION}
    assert BR.FLINK_VERSION in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS


def test_other_runners_get_their_options_unchanged(cache):
    args = ["--runner=DirectRunner", "--direct_num_workers=2"]
    opts = BR.pipeline_options(args)
    assert opts.get_all_options(drop_default=True) == \
        PipelineOptions(args).get_all_options(drop_default=True)
    assert opts.view_as(FlinkRunnerOptions).flink_job_server_jar is None


@pytest.mark.parametrize("args", [None, [], ["--direct_num_workers=2",
                                               "--direct_running_mode=multi_processing"]])
def test_no_runner_named_is_the_fn_api_runner_not_the_direct_runners_prism(args, caplog):
    """Beam 2.74's DirectRunner would first try to download Prism and run on it: the
    default is the runner it falls back to, named, and a pipeline runs on it at once."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.testing.util import assert_that, equal_to

    opts = BR.pipeline_options(args)
    assert opts.view_as(StandardOptions).runner == BR.DEFAULT_RUNNER
    rest = opts.get_all_options(drop_default=True)
    rest.pop("runner")
    assert rest == PipelineOptions(args or []).get_all_options(drop_default=True)
    if args:
        return  # (the multi-processing workers would take a while to start)
    caplog.set_level(logging.INFO)
    with beam.Pipeline(options=opts) as p:
        assert isinstance(p.runner, FnApiRunner)
        assert_that(p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * x),
                    equal_to([1, 4, 9]))
    assert not [r for r in caplog.records if "prism" in r.getMessage().lower()]


@pytest.mark.parametrize("args", [["--runner=DirectRunner"], ["--runner", "DataflowRunner"],
                                  ["--runner=FlinkRunner", "--flink_job_server_jar=x.jar"]])
def test_a_runner_the_user_names_is_kept(args):
    assert BR.with_default_runner(args) == args


@pytest.mark.parametrize("runner", ["FlinkRunner", "flink", "flinkrunner",
                                    "apache_beam.runners.portability.flink_runner."
                                    "FlinkRunner"])
def test_the_flink_runner_gets_the_staged_job_server(cache, runner):
    jar = _stage(cache)
    flink = BR.pipeline_options([f"--runner={runner}", "--flink_master=[local]",
                                 "--parallelism=2"]).view_as(FlinkRunnerOptions)
    assert (flink.flink_job_server_jar, flink.flink_version) == (jar, BR.FLINK_VERSION)
    assert flink.parallelism == 2  # the user's options pass through


def test_a_job_server_named_by_the_user_wins(cache):
    flink = BR.pipeline_options(["--runner=FlinkRunner", "--flink_version=1.20",
                                 "--flink_job_server_jar=/opt/js.jar"]
                                ).view_as(FlinkRunnerOptions)
    assert (flink.flink_job_server_jar, flink.flink_version) == ("/opt/js.jar", "1.20")


def test_the_environment_can_name_the_jar(cache, tmp_path, monkeypatch):
    jar = tmp_path / "elsewhere.jar"
    jar.write_bytes(b"PK")
    monkeypatch.setenv(BR.JAR_ENV, str(jar))
    flink = BR.pipeline_options(["--runner=FlinkRunner"]).view_as(FlinkRunnerOptions)
    assert flink.flink_job_server_jar == str(jar)


def test_a_missing_job_server_is_one_clear_error(cache):
    with pytest.raises(BR.FlinkSetupError) as err:
        BR.pipeline_options(["--runner=FlinkRunner", "--flink_master=[local]"])
    assert isinstance(err.value, DaianInputError)  # the CLI prints it as one line
    message = str(err.value)
    assert "scripts/setup_flink.sh" in message and str(cache) in message
    assert "--flink_job_server_jar" in message


def test_a_jar_named_in_the_environment_must_exist(cache, monkeypatch):
    monkeypatch.setenv(BR.JAR_ENV, "/nowhere/js.jar")
    with pytest.raises(BR.FlinkSetupError, match="/nowhere/js.jar is not a file"):
        BR.pipeline_options(["--runner=FlinkRunner"])


def test_another_flink_version_needs_its_own_job_server(cache):
    _stage(cache)
    with pytest.raises(BR.FlinkSetupError, match="--flink_version=2.0.*Flink 1.19"):
        BR.pipeline_options(["--runner=FlinkRunner", "--flink_version=2.0"])
    with pytest.raises(BR.FlinkSetupError, match="--flink_version=1.20"):
        BR.pipeline_options(["--runner", "FlinkRunner", "--flink_version", "1.20"])
    BR.pipeline_options(["--runner=FlinkRunner", f"--flink_version={BR.FLINK_VERSION}"])


# --- the embedded cluster's settings and the parallelism by input size -------------

def _all(options) -> dict:
    return options.get_all_options(retain_unknown_options=True)


@pytest.mark.parametrize("master", [None, "[local]", "[auto]"])
def test_the_embedded_cluster_gets_the_shipped_flink_settings(cache, master):
    import yaml

    _stage(cache)
    args = ["--runner=FlinkRunner"] + ([f"--flink_master={master}"] if master else [])
    assert _all(BR.pipeline_options(args))["flink_conf_dir"] == str(BR.FLINK_CONF_DIR)
    conf = yaml.safe_load((BR.FLINK_CONF_DIR / "config.yaml").read_text())
    # the embedded TaskManager refuses network memory that is not one fixed size
    network = "taskmanager.memory.network"
    assert conf[f"{network}.min"] == conf[f"{network}.max"]


def test_a_cluster_or_the_users_own_settings_get_no_conf_dir(cache):
    _stage(cache)
    cluster = BR.pipeline_options(["--runner=FlinkRunner", "--flink_master=host:8081"])
    assert "flink_conf_dir" not in _all(cluster)
    own = BR.pipeline_options(["--runner=FlinkRunner", "--flink_conf_dir", "/etc/flink"])
    assert _all(own)["flink_conf_dir"] == "/etc/flink"


@pytest.mark.parametrize("mb,expected", [(1, 2), (32, 2), (33, 3), (95, 6), (285, 18),
                                         (95_000, 5938)])
def test_the_parallelism_follows_the_input_size(cache, mb, expected):
    _stage(cache)
    n = mb * 2**20
    # brute force: the smallest p >= 2 with every subtask's share within the bound
    p = 2
    while n / p > BR.RAW_BYTES_PER_SUBTASK:
        p += 1
    assert p == expected == BR.flink_parallelism(n)
    opts = BR.pipeline_options(["--runner=FlinkRunner"], input_bytes=n)
    assert opts.view_as(FlinkRunnerOptions).parallelism == expected


def test_a_parallelism_the_user_sets_is_kept_with_a_warning_when_too_low(cache, caplog):
    _stage(cache)
    n = 95 * 2**20
    low = BR.pipeline_options(["--runner=FlinkRunner", "--parallelism=2"], input_bytes=n)
    assert low.view_as(FlinkRunnerOptions).parallelism == 2
    assert "--parallelism=2" in caplog.text and "would be 6" in caplog.text
    caplog.clear()
    ok = BR.pipeline_options(["--runner=FlinkRunner", "--parallelism=8"], input_bytes=n)
    assert ok.view_as(FlinkRunnerOptions).parallelism == 8
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # without an input size the parallelism stays Beam's (-1: Flink's default)
    assert BR.pipeline_options(["--runner=FlinkRunner"]).view_as(
        FlinkRunnerOptions).parallelism == -1


def test_streaming_gets_the_java_module_opens_once(cache):
    from apache_beam.options.pipeline_options import JobServerOptions

    _stage(cache)
    own = "--add-opens=java.base/java.util=ALL-UNNAMED"
    opts = BR.pipeline_options(["--runner=FlinkRunner", "--streaming",
                                "--job_server_jvm_properties=-Xmx4g",
                                f"--job_server_jvm_properties={own}"])
    props = opts.view_as(JobServerOptions).job_server_jvm_properties
    assert props[:2] == ["-Xmx4g", own]  # the user's first, as given
    assert sorted(props[2:]) == sorted(set(BR.STREAMING_JVM_OPENS) - {own})
    batch = BR.pipeline_options(["--runner=FlinkRunner"])
    assert batch.view_as(JobServerOptions).job_server_jvm_properties == []


def _workers(options) -> tuple:
    from apache_beam.options.pipeline_options import PortableOptions

    portable = options.view_as(PortableOptions)
    return (int(portable.sdk_worker_parallelism),
            int(portable.environment_cache_millis))


@pytest.mark.parametrize("args", [
    [],                                                        # [local] by default
    ["--flink_master=[local]", "--environment_type=LOOPBACK"],
    ["--flink_master=localhost:8081", "--environment_type=LOOPBACK"],
])
def test_loopback_gets_one_worker_per_subtask_kept_for_the_job(cache, args):
    _stage(cache)
    opts = BR.pipeline_options(["--runner=FlinkRunner", *args], input_bytes=285 << 20)
    assert _workers(opts) == (18, BR.ENVIRONMENT_CACHE_MILLIS)
    # the cache outlives any job measured here (3M impressions: minutes)
    assert BR.ENVIRONMENT_CACHE_MILLIS >= 3600 * 1000


def test_worker_settings_the_user_gives_or_other_environments_are_left_alone(cache):
    _stage(cache)
    n = 285 << 20
    own = BR.pipeline_options(["--runner=FlinkRunner", "--sdk_worker_parallelism=3",
                               "--environment_cache_millis", "5"], input_bytes=n)
    assert _workers(own) == (3, 5)
    process = BR.pipeline_options(["--runner=FlinkRunner", "--flink_master=host:8081",
                                   "--environment_type=PROCESS"], input_bytes=n)
    assert _workers(process) == (1, 0)  # Beam's defaults
    # no parallelism known (Transform): one worker, still kept for the job
    assert _workers(BR.pipeline_options(["--runner=FlinkRunner"])) == \
        (1, BR.ENVIRONMENT_CACHE_MILLIS)
    direct = BR.pipeline_options(["--direct_num_workers=1"], input_bytes=n)
    assert _workers(direct) == (1, 0)
