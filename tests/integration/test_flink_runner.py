"""The sample builder and Transform on Apache Flink (Beam's portable FlinkRunner) give
what they give on the DirectRunner.

Real components: the job server staged by scripts/setup_flink.sh (a JVM running Flink
embedded, `--flink_master=[local]`, two parallel subtasks per step), the Python SDK
workers in this process (LOOPBACK). On a small simulated world with the edge cases of
test_sample_builder (dropped requests, unknown items, users without profile, ...):

- the builder's splits are the same records (sorted serialized tf.Examples) and its
  report the same counts, split boundary, similarity range and catalog statistics;
- a broken raw-log row stops the Flink run with the same one-line RawLogError;
- Transform's vocabularies and schema are the same files, and its transformed
  examples the same examples, each request's records still together.

Skipped only where there is no Java; without the staged job server it fails and says
how to stage it. About 3.5 minutes on the 2-core machine (each Flink run starts a JVM,
about 10 s; most of the rest is TF-Transform's own fixed cost, on both runners).
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import shutil
from pathlib import Path

import pytest

from daian_tf.core.config import DEFAULT_CONFIG_FILE, SampleConfig, SimulationConfig, \
    load_config
from daian_tf.core.errors import RawLogError
from daian_tf.core.names import SPLITS
from daian_tf.data.sample_builder import run_build_samples
from daian_tf.data.simulator import simulate
from tests.integration.test_sample_builder import USER_COLUMNS, add_edge_cases



def _java():
    """The java Beam starts (apache_beam.utils.subprocess_server.JavaHelper)."""
    home = os.environ.get("JAVA_HOME")
    return shutil.which(os.path.join(home, "bin", "java") if home else "java")


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_java() is None, reason="no Java (java on PATH or JAVA_HOME): "
                       "Beam's Flink job server is a JVM"),
]

# Flink embedded in the job server's JVM, two subtasks per step, workers in this process
FLINK = ["--runner=FlinkRunner", "--flink_master=[local]", "--environment_type=LOOPBACK",
         "--parallelism=2"]
# the job server's log lines come through this logger (apache_beam/runners/portability)
JOB_SERVER_LOGGER = "FlinkJarJobServer"


def tfrecords(directory) -> list:
    """The serialized records of every data-*.tfrecord.gz in `directory`, in file order."""
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(directory, "data-*.tfrecord.gz")))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("raw")
    simulate(str(out), SimulationConfig(seed=5, num_users=30, num_items=300,
                                        num_categories=10, num_super_groups=3))
    add_edge_cases(str(out))
    return str(out)


@pytest.fixture(scope="module")
def direct(raw_dir, tmp_path_factory):
    """The builder's output on the DirectRunner: (directory, report)."""
    out = tmp_path_factory.mktemp("direct")
    # percentile sim_range: fewer train similarities than one quantile buffer holds
    # (15,259 at epsilon 1e-3), so the approximate quantiles are exact on any runner
    return str(out), run_build_samples(raw_dir, str(out), SampleConfig(
        user_columns=USER_COLUMNS))


def test_the_builder_on_flink_writes_the_direct_runners_records(raw_dir, direct,
                                                                tmp_path, caplog):
    direct_dir, direct_report = direct
    with caplog.at_level(logging.INFO, logger=JOB_SERVER_LOGGER):
        report = run_build_samples(raw_dir, str(tmp_path), SampleConfig(
            user_columns=USER_COLUMNS), beam_args=FLINK)
    # it ran on Flink: the job server's JVM logged Flink's execution of our steps
    flink_lines = [r.getMessage() for r in caplog.records
                   if r.name == JOB_SERVER_LOGGER]
    assert any("org.apache.flink.runtime.executiongraph" in line
               and "GroupByUser" in line for line in flink_lines)

    for split in SPLITS:
        records = sorted(tfrecords(tmp_path / split))
        assert records and records == sorted(tfrecords(Path(direct_dir) / split)), split
    assert report["counts"]["samples_train"] > 0 and report["counts"][
        "requests_dropped_no_trigger"] > 0  # the edge cases are there
    for key in direct_report:
        if key != "output_dirs":
            assert report[key] == direct_report[key], key


def test_a_raw_log_error_on_flink_is_the_same_one_line_error(raw_dir, tmp_path,
                                                            capfd):
    bad = tmp_path / "raw"
    shutil.copytree(raw_dir, bad)
    path = bad / "impressions.csv"
    lines = path.read_text().splitlines(keepends=True)
    fields = lines[6].split(",")
    fields[2] = "notatime"  # row 7 (header = 1), column timestamp
    lines[6] = ",".join(fields)
    path.write_text("".join(lines))

    with pytest.raises(RawLogError) as err:
        run_build_samples(str(bad), str(tmp_path / "out"), SampleConfig(
            user_columns=USER_COLUMNS), beam_args=FLINK)
    assert (Path(err.value.file).name, err.value.row, err.value.column) == (
        "impressions.csv", 7, "timestamp")
    assert "notatime" in str(err.value)
    # the worker's traceback and the runner's copies of it stay off the console
    assert "Traceback" not in capfd.readouterr().err


def test_transform_on_flink_gives_the_direct_runners_output(direct, tmp_path):
    import tensorflow as tf

    from daian_tf.data.transform_beam import TRANSFORM_OUTPUT_DIR, TRANSFORMED_DIR, \
        transform_samples

    samples_dir, report = direct
    cfg = dataclasses.replace(load_config(DEFAULT_CONFIG_FILE),
                              samples=SampleConfig(user_columns=USER_COLUMNS))
    outputs = {}
    for name, args in (("direct", []), ("flink", FLINK)):
        transform_samples(samples_dir, str(tmp_path / name), cfg, report["sim_range"],
                          beam_args=args)
        outputs[name] = tmp_path / name

    def files(root):  # vocabularies (assets) and the transformed schema
        base = root / TRANSFORM_OUTPUT_DIR
        return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*")
                if p.is_file() and ("assets" in p.parts
                                    or "transformed_metadata" in p.parts)}

    direct_files, flink_files = files(outputs["direct"]), files(outputs["flink"])
    assert any("vocab_item" in f for f in direct_files)
    assert flink_files == direct_files

    def examples(root, split):
        # tf.Example's feature map serializes in no fixed order: compare canonical bytes
        return [tf.train.Example.FromString(r).SerializeToString(deterministic=True)
                for r in tfrecords(root / TRANSFORMED_DIR / split)]

    for split in SPLITS:
        flink = examples(outputs["flink"], split)
        assert flink and sorted(flink) == sorted(examples(outputs["direct"], split))
        # each request's records stay together (request-level shuffling relies on it)
        keys = [tf.train.Example.FromString(r).features.feature["request_key"]
                .bytes_list.value[0]
                for r in tfrecords(outputs["flink"] / TRANSFORMED_DIR / split)]
        runs = sum(1 for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k)
        assert runs == len(set(keys)), split
