"""The sample builder's Beam counters and its report (`report.json`).

Every drop and fallback of the builder is a Beam counter of `NAMESPACE`, named and
explained in `COUNTERS` and incremented with `inc_counter` from any step. The
pipeline writes its in-pipeline statistics (split boundary, sim_range, catalog
stats) as small JSON files under `meta_dir/pipeline_stats/` (`meta_path`,
`write_json`); once it has run, `finalize_report` gathers them with the counters
into `meta_dir/report.json`.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from typing import Dict, Mapping, Optional

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from daian_tf.core import similarity_range as SR
from daian_tf.core.config import SampleConfig
from daian_tf.core.errors import DaianInputError
from daian_tf.core.names import REPORT_FILE, SPLITS

NAMESPACE = "daian_samples"
COUNTERS = {
    "impressions": "impression rows read",
    "behaviors": "behaviour rows read",
    "requests": "distinct request ids",
    "requests_trigger_derived": "empty trigger replaced by the most recent click",
    "requests_dropped_no_trigger": "dropped: empty trigger and no click within "
                                   "trigger_window_s before the request",
    "impressions_dropped_no_trigger": "impression rows of those dropped requests",
    "requests_unknown_trigger_item": "trigger not in items.csv (kept, OOV)",
    "requests_trigger_without_embedding": "trigger has no embedding (zero vector)",
    "samples_unknown_target_item": "target not in items.csv (kept, OOV)",
    "samples_target_without_embedding": "target has no embedding (zero vector)",
    "behaviors_unknown_item": "behaviour item not in items.csv (kept, OOV)",
    "users_without_impressions": "users with behaviours but no impressions",
    "behaviors_of_users_without_impressions": "their behaviour rows (unused)",
    "users_without_profile": "users with requests but no users.csv row "
                             "(profile columns become '')",
    "samples_without_truth": "samples with no truth.csv row (no p_true)",
    "truth_rows_without_impression": "truth.csv rows of unknown requests (unused)",
    "items_without_embedding": "catalog items with no embedding (zero vector)",
    "embeddings_for_unknown_items": "embedding rows of ids not in items.csv",
    **{f"{what}_{split}": "" for what in ("samples", "requests") for split in SPLITS},
    "requests_with_clicks": "requests with >= 1 click (intent_mask = 1)",
}
_META_FILES = {"split_boundary": "split_boundary.json", "sim_range": "sim_range.json",
               "catalog": "catalog.json"}
_META_DIR = "pipeline_stats"


_COUNTER_OBJECTS: Dict[str, object] = {}


def inc_counter(name: str, n: int = 1) -> None:
    """Add `n` to the builder counter `name` (one of COUNTERS) of the current step."""
    counter = _COUNTER_OBJECTS.get(name)
    if counter is None:  # a Beam counter delegates to the current step's container
        counter = _COUNTER_OBJECTS[name] = Metrics.counter(NAMESPACE, name)
    counter.inc(n)


def write_json(value, path: str) -> None:
    """Write `value` as JSON to `path` (local or any Beam filesystem)."""
    with FileSystems.create(path) as f:
        f.write(json.dumps(value).encode("utf-8"))


def meta_path(meta_dir: str, what: str) -> str:
    """Path of the in-pipeline statistic `what` (see _META_FILES) under `meta_dir`."""
    return FileSystems.join(meta_dir, _META_DIR, _META_FILES[what])


def _read_json(path: str):
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def finalize_report(result, meta_dir: str, cfg: SampleConfig,
                    output_dirs: Optional[Mapping[str, str]] = None,
                    raw_dir: Optional[str] = None,
                    output_order: Optional[str] = None) -> dict:
    """Gather the Beam counters and in-pipeline statistics into `meta_dir/report.json`.

    Args:
      result: the finished pipeline's `PipelineResult` (`pipeline.result` after a
        `with beam.Pipeline() as pipeline:` block).
      meta_dir: the directory given to `build_sample_pipeline`.
      cfg: the SampleConfig the pipeline ran with (recorded in the report).
      output_dirs: recorded in the report when given.
      raw_dir: the raw-log directory the samples came from, recorded as given (a
        string) under `raw_dir` when given.
      output_order: how the splits' records are ordered (`sample_builder.output_order`),
        recorded under `output_order` when given.

    Returns:
      The report: `counts` (every counter of COUNTERS, zeros included),
      `splits` ({split: {samples, requests}}), `validation_boundary_timestamp` and
      `split_boundary_timestamp` (the first seconds of validation and eval),
      `sim_range` [lo, hi], `sim_range_source`, `catalog` stats (incl. embedding_dim),
      `num_intent_levels`, `intent_level_edges`, and the config.
    """
    counts = {name: 0 for name in COUNTERS}
    for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))[
            "counters"]:
        value = c.committed if c.committed is not None else c.attempted
        counts[c.key.metric.name] = counts.get(c.key.metric.name, 0) + int(value or 0)
    lo, hi = _read_json(meta_path(meta_dir, "sim_range"))
    validation_start, eval_start = _read_json(meta_path(meta_dir, "split_boundary"))
    report = {
        "counts": counts,
        "splits": {s: {"samples": counts[f"samples_{s}"],
                       "requests": counts[f"requests_{s}"]} for s in SPLITS},
        # the first seconds of the validation and the eval split
        "validation_boundary_timestamp": validation_start,
        "split_boundary_timestamp": eval_start,
        SR.REPORT_KEY: [lo, hi],
        "sim_range_source": ("config" if cfg.sim_range is not None else
                             f"percentiles {list(cfg.sim_percentiles)} of train "
                             f"trigger-target similarity"),
        "num_intent_levels": cfg.num_intent_levels,
        "intent_level_edges": SR.level_edges(lo, hi, cfg.num_intent_levels),
        "catalog": _read_json(meta_path(meta_dir, "catalog")),
        "counter_meanings": {k: v for k, v in COUNTERS.items() if v},
        "config": dataclasses.asdict(cfg),
    }
    if output_order is not None:
        report["output_order"] = output_order
    if output_dirs is not None:
        report["output_dirs"] = dict(output_dirs)
    if raw_dir is not None:
        report["raw_dir"] = str(raw_dir)
    write_json(report, FileSystems.join(meta_dir, REPORT_FILE))
    return report


def check_splits_hold_requests(report: dict, where: str) -> None:
    """Refuse samples that cannot be trained and reported on: every split (train,
    validation, eval) must hold a request.

    Raises:
      DaianInputError: naming the empty splits, the boundaries and `where`.
    """
    empty = [s for s in SPLITS if report["splits"][s]["requests"] == 0]
    if empty:
        raise DaianInputError(
            f"{where}: the {' and '.join(empty)} "
            f"{'split holds' if len(empty) == 1 else 'splits hold'} no request: train is "
            f"before {_utc(report['validation_boundary_timestamp'])}, validation from "
            f"then to {_utc(report['split_boundary_timestamp'])}, eval from then on "
            f"(samples.validation_days or validation_start, samples.eval_days or "
            f"eval_start)")


def _utc(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
