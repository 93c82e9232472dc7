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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from daian_tf.core.errors import DaianInputError

# The staged job server; keep in step with scripts/flink-job-server/pom.xml
# (tests/unit/test_beam_runners.py checks it).
FLINK_JOB_SERVER_BEAM_VERSION = "2.62.0"
FLINK_VERSION = "1.19"
# Where scripts/setup_flink.sh puts it: $DAIAN_FLINK_CACHE, else
# ${XDG_CACHE_HOME:-~/.cache}/daian-tf/flink-job-server; DAIAN_FLINK_JOB_SERVER_JAR
# names another jar.
JAR_ENV = "DAIAN_FLINK_JOB_SERVER_JAR"
CACHE_ENV = "DAIAN_FLINK_CACHE"
SETUP_SCRIPT = "scripts/setup_flink.sh"

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


def pipeline_options(beam_args: Optional[Sequence[str]] = None):
    """`PipelineOptions` from `beam_args`, with the staged Flink job server when the
    runner is the FlinkRunner and no `--flink_job_server_jar` is given.

    Raises:
      FlinkSetupError: the FlinkRunner without a jar given, and none staged (the message
        says how to stage it).
    """
    from apache_beam.options.pipeline_options import (FlinkRunnerOptions,
                                                      PipelineOptions, StandardOptions)

    options = PipelineOptions(list(beam_args or []))
    if not is_flink_runner(options.view_as(StandardOptions).runner):
        return options
    flink = options.view_as(FlinkRunnerOptions)
    if flink.flink_job_server_jar:
        return options  # the user's own job server (and --flink_version)
    args = [str(a) for a in beam_args or ()]
    asked = [a.split("=", 1)[1] if "=" in a else args[i + 1]
             for i, a in enumerate(args) if a.split("=", 1)[0] == "--flink_version"
             and ("=" in a or i + 1 < len(args))]
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
