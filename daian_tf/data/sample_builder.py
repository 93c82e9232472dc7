"""The sample builder: raw TIR logs (DATA.md §1) → `tf.Example` TFRecords (DATA.md §2).

One Apache Beam pipeline, run by the CLI (`run_build_samples`, DirectRunner unless the Beam
arguments say otherwise) and by the TFX example-gen component (`build_sample_pipeline` on
the component's own pipeline, then `finalize_report`). Every Beam pipeline option passes
through, so the same code runs on Dataflow, Flink or Spark; the CLI's runs on Flink get
the job server that scripts/setup_flink.sh stages (`beam_runners.pipeline_options`,
docs/beam-on-flink.md).

Data flow (memory per step is bounded by one request or one user, plus the catalog,
except the sorted write, which holds one output file's requests: `tfrecord_sink`):

    impressions.csv ─┬─ by request_id (CoGroupByKey with truth.csv) → Request
                     └─ max timestamp → the validation and eval splits' first seconds
                        (side input)
    Request, behaviors.csv, users.csv ── by user_id (CoGroupByKey) → Prepared
        (trigger derived if empty, history cut: strictly earlier, within history_days,
         last max_seq_len, chronological; request-level features serialized,
         trigger-target similarities)
    Request, behaviors.csv ── by user_id again (a grouping of its own) → triggers
        → train similarities → their histogram (2^16 bins; counts, so exact whatever
          the bundling)
        → sim_range [lo, hi] (I-2; side input), unless samples.sim_range fixes it
        (its own grouping, because the examples wait for it: fed from JoinUser, the
        DirectRunner held every Prepared until then, 1,362 vs 774 MiB peak at 1M
        impressions, bench/bench_sample_builder.py)
    Prepared → tf.Examples (intent labels, LOO labels, per-target features), by split
        (train | validation | eval, by the request's time)
        → by a hash of the request id into num_shards files, each sorted by request id
          (an external merge sort, `tfrecord_sink`; samples.sort_output: runner
          writes them as the runner delivers them)
        → <output_dirs[split]>/data-SSSSS-of-NNNNN.tfrecord.gz

Speed: the runner's cost is per element and per encode, so each file reader groups
its rows by key within chunks (one element per key and chunk, not per row), records
cross steps as plain tuples (encoded natively, never pickled), examples are
written as protobuf wire bytes (`example_encoding`) without importing tensorflow,
and each request's examples reach the file writer as one element, gzipped at
level 1 (`tfrecord_sink`). Sorted (the default), the files' order and bytes
follow from the examples alone, not from the order in which the runner delivers them.

The catalog (items.csv + item_embeddings.parquet) is one side input; its size is the
catalog's, not the logs'. Drops and fallbacks are Beam counters; `finalize_report`
gathers them with the in-pipeline statistics into `report.json`.

The code: the records and per-request rules are in `sample_requests`, the Beam steps
in `sample_steps`, the counters and `finalize_report` in `sample_report`; this module
wires the graph (`build_sample_pipeline`) and runs it (`run_build_samples`,
`run_pipeline`).
"""

from __future__ import annotations

from typing import List, Mapping, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from daian_tf.core import features as F
from daian_tf.core.config import SampleConfig
from daian_tf.core.names import (SAMPLES_PREFIX, SAMPLES_SUFFIX, SORT_SORTED,
                                  SPLITS)
from daian_tf.data.beam_runners import pipeline_options
from daian_tf.data.raw_log_errors import find_raw_log_error, quiet_runner_noise
from daian_tf.data.raw_logs import (inspect_raw_dir, read_behaviors, read_impressions,
                                    read_truth, read_users)
from daian_tf.data.sample_report import finalize_report, meta_path, write_json
from daian_tf.data.sample_requests import Request, from_plain
from daian_tf.data.sample_steps import (EmitExamples, SimilarityHistogram, boundaries,
                                        checked_sim_range,
                                        group_to_request, join_user,
                                        load_counted_catalog, read_grouped, surfacing,
                                        train_similarities)
from daian_tf.data.tfrecord_sink import TFRecordBatchSink, WriteSortedShards

GZIP_LEVEL = 1  # fastest; see tfrecord_sink


def build_sample_pipeline(pipeline: beam.Pipeline, raw_dir: str,
                          output_dirs: Mapping[str, str], cfg: SampleConfig,
                          meta_dir: str) -> None:
    """Apply the sample builder to `pipeline` (nothing runs until the pipeline does).

    Args:
      pipeline: any Beam pipeline (the CLI's, or the TFX component's).
      raw_dir: a raw-log directory (DATA.md §1); local or any Beam filesystem.
      output_dirs: split name ('train', 'validation', 'eval') -> directory for its
        TFRecord files.
      cfg: the sample rules.
      meta_dir: where the in-pipeline statistics go; `finalize_report` reads them.

    Raises:
      RawLogError: file-level problems, found before the pipeline is built.
    """
    missing = [s for s in SPLITS if s not in output_dirs]
    if missing:
        raise ValueError(f"output_dirs lacks split(s) {missing}; got {sorted(output_dirs)}")
    layout = inspect_raw_dir(raw_dir, cfg.user_columns)
    p = pipeline
    imp_path = layout.path(F.IMPRESSIONS_FILE)
    users_path = layout.path(F.USERS_FILE)

    catalog = beam.pvalue.AsSingleton(
        p | "Layout" >> beam.Create([layout])
        | "LoadCatalog" >> beam.FlatMap(surfacing(load_counted_catalog)))

    def read(name: str, reader, key, value=tuple, *args) -> beam.PCollection:
        return (p | f"Path{name}" >> beam.Create([layout.path(name)])
                | f"Read{name}" >> beam.FlatMap(surfacing(read_grouped), reader, key,
                                                value, *args))

    by_request = {"impressions": read(F.IMPRESSIONS_FILE, read_impressions,
                                      lambda r: r.request_id)}
    if layout.has_truth:
        by_request["truth"] = read(F.TRUTH_FILE, read_truth, lambda t: t.request_id,
                                   lambda t: (t.item_id, t.p_click))
    requests = (by_request | "GroupByRequest" >> beam.CoGroupByKey()
                | "Requests" >> beam.FlatMap(surfacing(group_to_request), imp_path))

    by_user = {
        "requests": requests,
        "behaviors": read(F.BEHAVIORS_FILE, read_behaviors, lambda b: b.user_id),
    }
    if layout.has(F.USERS_FILE):
        by_user["users"] = read(F.USERS_FILE, read_users, lambda u: u.user_id,
                                tuple, tuple(cfg.user_columns))
    users = by_user | "GroupByUser" >> beam.CoGroupByKey()
    contexts = users | "JoinUser" >> beam.FlatMap(
        surfacing(join_user), catalog, cfg, users_path, layout.has_truth)

    # every impression row belongs to a request with its timestamp, so the latest
    # request is the latest impression (one element per request, not per row)
    boundary = (requests
                | "Timestamps" >> beam.Map(lambda kv: from_plain(Request, kv[1])
                                           .timestamp)
                | "MaxTimestamp" >> beam.CombineGlobally(max).without_defaults()
                | "Boundary" >> beam.FlatMap(surfacing(boundaries), cfg, imp_path))
    if cfg.sim_range is not None:
        sim_range = p | "FixedSimRange" >> beam.Create(
            [(float(cfg.sim_range[0]), float(cfg.sim_range[1]))])
    else:
        # from a grouping of its own, not from `contexts` or `users`: the examples
        # wait for this side input, and a runner that fuses both consumers of one
        # grouping (the DirectRunner does) would hold every context until then
        sim_range = (
            by_user | "GroupByUserForSimRange" >> beam.CoGroupByKey()
            | "TrainSimilarities" >> beam.FlatMap(
                surfacing(train_similarities), catalog, cfg, users_path,
                beam.pvalue.AsSingleton(boundary))
            | "SimHistogram" >> beam.CombineGlobally(SimilarityHistogram())
            | "SimRange" >> beam.FlatMap(surfacing(checked_sim_range),
                                         tuple(cfg.sim_percentiles), imp_path))

    examples = contexts | "Examples" >> beam.ParDo(
        EmitExamples(layout.has_truth, layout.has_position, cfg.num_intent_levels),
        catalog,
        beam.pvalue.AsSingleton(boundary),
        beam.pvalue.AsSingleton(sim_range)).with_outputs(*SPLITS)
    for split in SPLITS:
        prefix = FileSystems.join(output_dirs[split], SAMPLES_PREFIX)
        if cfg.sort_output == SORT_SORTED:
            _ = examples[split] | f"Write{split}" >> WriteSortedShards(
                prefix, SAMPLES_SUFFIX, max(cfg.num_shards, 1), GZIP_LEVEL)
        else:
            _ = (examples[split] | f"Records{split}" >> beam.Map(lambda r: r[1])
                 | f"Write{split}" >> beam.io.Write(TFRecordBatchSink(
                     prefix, SAMPLES_SUFFIX, cfg.num_shards, GZIP_LEVEL)))

    _ = (boundary | "BoundaryList" >> beam.Map(list)
         | "WriteBoundary" >> beam.Map(write_json, meta_path(meta_dir, "split_boundary")))
    _ = (sim_range | "SimRangeList" >> beam.Map(list)
         | "WriteSimRange" >> beam.Map(write_json, meta_path(meta_dir, "sim_range")))
    _ = (p | "CatalogStats" >> beam.Create([None])
         | "GetCatalogStats" >> beam.Map(lambda _, c: c.stats, catalog)
         | "WriteCatalogStats" >> beam.Map(write_json, meta_path(meta_dir, "catalog")))


def output_order(cfg: SampleConfig) -> str:
    """The report's words for the order of the splits' records."""
    if cfg.sort_output == SORT_SORTED:
        return "sorted by request id"
    return "as the runner delivered them (samples.sort_output: runner)"


def _remove_old_shards(directory: str) -> None:
    pattern = FileSystems.join(directory, f"{SAMPLES_PREFIX}-*{SAMPLES_SUFFIX}")
    old = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
    if old:
        FileSystems.delete(old)


def run_build_samples(raw_dir: str, out_dir: str, cfg: SampleConfig,
                      beam_args: Optional[List[str]] = None) -> dict:
    """Build samples from `raw_dir` into `out_dir/{train,validation,eval}/` and
    `out_dir/report.json`.

    Args:
      raw_dir: raw-log directory (DATA.md §1).
      out_dir: output directory; earlier `data-*.tfrecord.gz` shards there are replaced.
      cfg: the sample rules.
      beam_args: Beam pipeline options, e.g. `["--runner=DataflowRunner", ...]`,
        `["--direct_num_workers=2", "--direct_running_mode=multi_processing"]` or
        `["--runner=FlinkRunner", "--flink_master=[local]", "--parallelism=2"]`.

    Returns:
      The report (see `finalize_report`).

    Raises:
      RawLogError: the raw logs break a rule of DATA.md §1 (re-raised from the worker
        with its file, row and column).
      FlinkSetupError: the FlinkRunner without a staged job server.
    """
    output_dirs = {s: FileSystems.join(out_dir, s) for s in SPLITS}
    for d in output_dirs.values():
        _remove_old_shards(d)
    pipeline = beam.Pipeline(options=pipeline_options(beam_args, raw_bytes(raw_dir)))
    build_sample_pipeline(pipeline, raw_dir, output_dirs, cfg, out_dir)
    return finalize_report(run_pipeline(pipeline), out_dir, cfg, output_dirs, raw_dir,
                           output_order(cfg))


def raw_bytes(raw_dir: str) -> int:
    """The size of the files in `raw_dir` (what the FlinkRunner's default parallelism
    is sized by: data/beam_runners.py)."""
    matched = FileSystems.match([FileSystems.join(raw_dir, "*")])
    return sum(m.size_in_bytes for r in matched for m in r.metadata_list)


def run_pipeline(pipeline: beam.Pipeline):
    """Run `pipeline` to the end; a raw-log error raised on a worker comes back clean.

    Returns:
      The finished `PipelineResult`.

    Raises:
      RawLogError: re-raised from the worker with its file, row and column.
    """
    try:
        with quiet_runner_noise():
            result = pipeline.run()
            result.wait_until_finish()
    except Exception as exc:  # noqa: BLE001 - re-raise the raw-log error inside
        err = find_raw_log_error(exc)
        if err is not None:
            raise err from None
        raise
    return result
