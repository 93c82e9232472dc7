"""Beam pipeline options for the project's pipelines, with the runners it sets up.

Every Beam option passes through unchanged; the one thing added is the job server of
Beam's portable `FlinkRunner`. That runner starts a JVM (Beam's Flink job server) which
runs Flink embedded (`--flink_master=[local]`) or submits to a cluster
(`--flink_master=HOST:PORT`). Left to itself, Beam would download the job server jar
from Maven at run time; here `scripts/setup_flink.sh` (called by `scripts/env.sh`)
stages it once with Maven in a cache directory (`flink_job_server_jar()`), and
`pipeline_options` hands it to Beam as `--flink_job_server_jar` (with the matching
`--flink_version`) unless the arguments name a jar themselves. A run therefore never
downloads anything, and a missing set-up is one clear error, not a network failure
inside Beam.

The staged job server is Beam 2.62.0's Flink 1.19 runner and its dependencies,
published Maven artifacts assembled by Maven (`scripts/flink-job-server/pom.xml`):
Beam's own shaded job server (`beam-runners-flink-<v>-job-server`) is not served by
the registry this project reaches, at any version. It runs this Beam 2.74 SDK's
pipelines through the portable Runner API (docs/beam-on-flink.md: what was checked).

The runner, when the arguments name none, is Beam's `FnApiRunner` (`DEFAULT_RUNNER`),
not Beam's default `DirectRunner`. In Beam 2.74 the `DirectRunner` first tries Prism,
Beam's Go runner, whose binary it downloads from GitHub at run time
(`~/.apache_beam/cache/prism`): where the download works the pipeline runs on Prism,
a runner this project has not tested or measured; where it fails (no internet, a
Kubeflow pod without egress) it logs the failure, leaves an empty `beam-temp*`
directory in the temporary directory and falls back to the FnApiRunner, after about
0.4 s here. Naming the runner runs the FnApiRunner at once, with the same options
(`--direct_num_workers`, `--direct_running_mode`). `--runner=DirectRunner`, given, is
kept, and Beam chooses as it does.

Two more defaults, each only when the user does not set it:

- `--flink_conf_dir` for the embedded cluster (`[local]`, `[auto]`): the Flink settings
  of `flink_conf/config.yaml` (network memory for more than a few subtasks).
- `--parallelism` from the size of the pipeline's input (`input_bytes`): one subtask per
  `RAW_BYTES_PER_SUBTASK`. On Flink's batch mode the portable runner sends each
  subtask's whole partition to the Python worker as ONE bundle and reads the bundle's
  output only once all of its input is sent; when a stage's output outgrows the buffers
  between the two before that, both sides wait for each other for ever (measured: the
  builder at 1M impressions, 95 MB of raw logs, hangs at parallelism 1 and 2 and
  finishes at 4, 6 and 8). A parallelism the user sets below that is kept, with a
  warning.
- With `LOOPBACK` workers (the embedded cluster's default): one Python worker per
  subtask (`--sdk_worker_parallelism` = the parallelism) and workers kept for the
  whole job (`--environment_cache_millis=ENVIRONMENT_CACHE_MILLIS`). With one worker,
  every subtask's bundles share that worker's single data stream, and one bundle
  whose output backs up stalls them all: at 3M impressions the builder hung at
  parallelism 18 with one worker, and with the cache alone. More workers without the
  cache fail instead: each time a stage's last subtask ends, the runner tears down
  the LOOPBACK workers (`IllegalStateException: call already closed`, then
  `Channel closed prematurely`). With both, 3M impressions finish
  (docs/beam-on-flink.md has the runs). Values the user gives are kept.
- With `--streaming` (Flink's streaming mode, which bounds bundles by
  `--max_bundle_size`, so the deadlock above cannot form): the Java 17 module opens
  its serialization needs, on the job server's JVM (`STREAMING_JVM_OPENS`). Measured:
  the builder at 1M impressions finished in streaming mode at parallelism 2, where
  batch mode hung (docs/beam-on-flink.md).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Optional, Sequence

from daian_tf.core.errors import DaianInputError

# The staged job server; keep in step with scripts/flink-job-server/pom.xml
# (tests/unit/test_beam_runners.py checks it).
FLINK_JOB_SERVER_BEAM_VERSION = "2.62.0"
FLINK_VERSION = "1.19"

# the runner of a pipeline whose arguments name none (module docstring)
DEFAULT_RUNNER = "FnApiRunner"

# Where scripts/setup_flink.sh puts it: $DAIAN_FLINK_CACHE, else
# ${XDG_CACHE_HOME:-~/.cache}/daian-tf/flink-job-server; DAIAN_FLINK_JOB_SERVER_JAR
# names another jar.
JAR_ENV = "DAIAN_FLINK_JOB_SERVER_JAR"
CACHE_ENV = "DAIAN_FLINK_CACHE"
SETUP_SCRIPT = "scripts/setup_flink.sh"

# The embedded cluster's Flink settings (package data).
FLINK_CONF_DIR = Path(__file__).resolve().parent / "flink_conf"
_EMBEDDED_MASTERS = {"[local]", "[auto]"}
# Raw-log bytes one Flink subtask may take without the portable runner's bundle
# deadlock (module docstring): 24 MB per subtask finished and 47 MB hung at 1M
# impressions; docs/beam-on-flink.md has the runs.
RAW_BYTES_PER_SUBTASK = 16 << 20
MIN_FLINK_PARALLELISM = 2

# How long the portable runner keeps an SDK worker (environment) after its stages
# release it; Beam's default 0 tears LOOPBACK workers down between stages. A day:
# longer than any job here, and LOOPBACK workers end with the submitting process.
ENVIRONMENT_CACHE_MILLIS = 24 * 3600 * 1000

# Flink's streaming mode serializes JDK collections with Kryo, which Java 17 refuses
# without these (`InaccessibleObjectException: ... does not "opens java.util"`); the
# job server's JVM gets them with --streaming (docs/beam-on-flink.md).
STREAMING_JVM_OPENS = tuple(f"--add-opens=java.base/{m}=ALL-UNNAMED" for m in (
    "java.util", "java.lang", "java.util.concurrent", "java.lang.reflect", "java.io",
    "java.nio"))

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)  # the parallelism it chose is progress a run shows

_FLINK_RUNNER_NAMES = {"flink", "flinkrunner",
                       "apache_beam.runners.portability.flink_runner.flinkrunner"}


class FlinkSetupError(DaianInputError):
    """The FlinkRunner was asked for, but its job server is not staged."""


def flink_job_server_dir() -> Path:
    """The directory scripts/setup_flink.sh stages the job server in."""
    cache = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
        "daian-tf", "flink-job-server")
    return Path(cache) / f"beam-{FLINK_JOB_SERVER_BEAM_VERSION}-flink-{FLINK_VERSION}"


def flink_job_server_jar() -> Optional[str]:
    """The staged job server's launcher jar ($DAIAN_FLINK_JOB_SERVER_JAR if set), or
    None when it is not there."""
    path = os.environ.get(JAR_ENV) or str(flink_job_server_dir() / "job-server.jar")
    return path if os.path.isfile(path) else None


def is_flink_runner(runner) -> bool:
    """Whether a `--runner` value names Beam's FlinkRunner (as Beam resolves names)."""
    return isinstance(runner, str) and runner.lower() in _FLINK_RUNNER_NAMES


def flink_parallelism(input_bytes: int) -> int:
    """The parallelism that keeps every Flink subtask's share of `input_bytes` (raw
    logs) within `RAW_BYTES_PER_SUBTASK`, at least `MIN_FLINK_PARALLELISM`."""
    return max(MIN_FLINK_PARALLELISM, math.ceil(input_bytes / RAW_BYTES_PER_SUBTASK))


def _flink_parallelism_default(options, input_bytes: Optional[int]) -> None:
    """Sets the parallelism (module docstring) if the user left it unset; warns when
    the user's is below it."""
    from apache_beam.options.pipeline_options import FlinkRunnerOptions

    if input_bytes is None:
        return
    flink = options.view_as(FlinkRunnerOptions)
    needed = flink_parallelism(input_bytes)
    mb = input_bytes / 2**20
    if flink.parallelism is None or flink.parallelism < 1:  # Beam's default: -1
        flink.parallelism = needed
        logger.info("FlinkRunner: --parallelism=%d (%.0f MB of input, one subtask per "
                    "%d MB; docs/beam-on-flink.md)", needed, mb,
                    RAW_BYTES_PER_SUBTASK >> 20)
    elif flink.parallelism < needed:
        logger.warning("FlinkRunner: --parallelism=%d gives each subtask %.0f MB of the "
                       "%.0f MB input, over the %d MB per subtask this project sizes "
                       "by (larger partitions made Beam's portable Flink runner hang); "
                       "the default here would be %d (docs/beam-on-flink.md)",
                       flink.parallelism, mb / flink.parallelism, mb,
                       RAW_BYTES_PER_SUBTASK >> 20, needed)


def _loopback_worker_defaults(options, args: Sequence[str]) -> None:
    """One LOOPBACK worker per subtask, kept for the job (module docstring), where the
    user set neither."""
    from apache_beam.options.pipeline_options import (FlinkRunnerOptions,
                                                      PortableOptions)

    portable = options.view_as(PortableOptions)
    flink = options.view_as(FlinkRunnerOptions)
    loopback = (portable.environment_type or "").upper() == "LOOPBACK" or (
        not portable.environment_type and flink.flink_master in _EMBEDDED_MASTERS)
    if not loopback:
        return
    if not _flag_values(args, "--environment_cache_millis"):
        portable.environment_cache_millis = ENVIRONMENT_CACHE_MILLIS
    if not _flag_values(args, "--sdk_worker_parallelism") \
            and (flink.parallelism or 0) > 1:
        portable.sdk_worker_parallelism = flink.parallelism
        logger.info("FlinkRunner: --sdk_worker_parallelism=%d (one LOOPBACK worker "
                    "per subtask; docs/beam-on-flink.md)", flink.parallelism)


def _flag_values(args: Sequence[str], flag: str) -> list:
    """The values `args` gives `flag`, as `--flag=V` or `--flag V`, in order."""
    return [a.split("=", 1)[1] if "=" in a else args[i + 1]
            for i, a in enumerate(args) if a.split("=", 1)[0] == flag
            and ("=" in a or i + 1 < len(args))]


def with_default_runner(beam_args: Optional[Sequence[str]] = None) -> list:
    """`beam_args` as strings, with `--runner=DEFAULT_RUNNER` in front when they name no
    runner (module docstring)."""
    args = [str(a) for a in beam_args or ()]
    return args if _flag_values(args, "--runner") else [f"--runner={DEFAULT_RUNNER}"] + args


def pipeline_options(beam_args: Optional[Sequence[str]] = None,
                     input_bytes: Optional[int] = None):
    """`PipelineOptions` from `beam_args` (the FnApiRunner when they name no runner:
    `with_default_runner`), with the staged Flink job server when the
    runner is the FlinkRunner and no `--flink_job_server_jar` is given, and the Flink
    defaults of the module docstring (`input_bytes`: the size of the raw logs the
    pipeline reads, for the parallelism; None leaves the parallelism to the user).

    Raises:
      FlinkSetupError: the FlinkRunner without a jar given, and none staged (the message
        says how to stage it).
    """
    from apache_beam.options.pipeline_options import (FlinkRunnerOptions,
                                                      JobServerOptions, PipelineOptions,
                                                      StandardOptions)

    args = with_default_runner(beam_args)
    options = PipelineOptions(args)
    if not is_flink_runner(options.view_as(StandardOptions).runner):
        return options
    # not an option of Beam's Python SDK: passed through to the job server as given
    if (options.view_as(FlinkRunnerOptions).flink_master in _EMBEDDED_MASTERS
            and not _flag_values(args, "--flink_conf_dir")):
        options = PipelineOptions(args + [f"--flink_conf_dir={FLINK_CONF_DIR}"])
    if options.view_as(StandardOptions).streaming:
        jvm = options.view_as(JobServerOptions)
        props = list(jvm.job_server_jvm_properties or [])
        jvm.job_server_jvm_properties = props + [o for o in STREAMING_JVM_OPENS
                                                 if o not in props]
    _flink_parallelism_default(options, input_bytes)
    _loopback_worker_defaults(options, args)
    flink = options.view_as(FlinkRunnerOptions)
    if flink.flink_job_server_jar:
        return options  # the user's own job server (and --flink_version)
    asked = _flag_values(args, "--flink_version")
    if asked and asked[-1] != FLINK_VERSION:
        raise FlinkSetupError(
            f"--flink_version={asked[-1]}: the staged Flink job server is Flink "
            f"{FLINK_VERSION}; for another version pass its job server as "
            f"--flink_job_server_jar=PATH")
    jar = flink_job_server_jar()
    if jar is None:
        named = os.environ.get(JAR_ENV)
        where = (f"{JAR_ENV}={named} is not a file" if named else
                 f"nothing at {flink_job_server_dir() / 'job-server.jar'}")
        raise FlinkSetupError(
            f"--runner=FlinkRunner needs Beam's Flink job server, which is not staged "
            f"({where}). Stage it with `bash {SETUP_SCRIPT}` (Java and Maven; "
            f"scripts/env.sh runs it when both are there), or pass "
            f"--flink_job_server_jar=PATH (with its --flink_version).")
    flink.flink_job_server_jar = jar
    flink.flink_version = FLINK_VERSION
    return options
