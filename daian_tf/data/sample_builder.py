"""The sample builder: raw TIR logs (DATA.md §1) → `tf.Example` TFRecords (DATA.md §2).

One Apache Beam pipeline, run by the CLI (`run_build_samples`, DirectRunner unless the Beam
arguments say otherwise) and by the TFX example-gen component (`build_sample_pipeline` on
the component's own pipeline, then `finalize_report`). Every Beam pipeline option passes
through, so the same code runs on Dataflow, Flink or Spark.

Data flow (memory per step is bounded by one request or one user, plus the catalog):

    impressions.csv ─┬─ by request_id (CoGroupByKey with truth.csv) → Request
                     └─ max timestamp → split boundary (side input)
    Request, behaviors.csv, users.csv ── by user_id (CoGroupByKey) → Prepared
        (trigger derived if empty, history cut: strictly earlier, within history_days,
         last max_seq_len, chronological; request-level features serialized,
         trigger-target similarities)
    Request, behaviors.csv ── by user_id again (a grouping of its own) → triggers
        → train similarities → approximate quantiles
        → sim_range [lo, hi] (I-2; side input), unless samples.sim_range fixes it
        (its own grouping, because the examples wait for it: fed from JoinUser, the
        DirectRunner held every Prepared until then, 1,362 vs 774 MiB peak at 1M
        impressions, bench/bench_sample_builder.py)
    Prepared → tf.Examples (intent labels, LOO labels, per-target features)
        → <output_dirs[split]>/data-SSSSS-of-NNNNN.tfrecord.gz

Speed: the runner's cost is per element and per encode, so each file reader groups
its rows by key within chunks (one element per key and chunk, not per row), records
cross steps as plain tuples (encoded natively, never pickled), examples are
written as protobuf wire bytes (`example_encoding`) without importing tensorflow,
and each request's examples reach the file writer as one element, gzipped at
level 1 (`tfrecord_sink`).

The catalog (items.csv + item_embeddings.parquet) is one side input; its size is the
catalog's, not the logs'. Drops and fallbacks are Beam counters; `finalize_report`
gathers them with the in-pipeline statistics into `report.json`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from bisect import bisect_left
from itertools import chain
from typing import Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional
from typing import Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.stats import ApproximateQuantilesCombineFn

from daian_tf.data import example_encoding as E
from daian_tf.data import features as F
from daian_tf.data import intent_labels as IL
from daian_tf.data.raw_logs import (Behavior, Catalog, Impression, RawLayout,
                                    RawLogErrorLogFilter, UserProfile,
                                    encode_error, find_raw_log_error,
                                    inspect_raw_dir, load_catalog, read_behaviors,
                                    read_impressions, read_truth, read_users)
from daian_tf.data.tfrecord_sink import TFRecordBatchSink
from daian_tf.errors import RawLogError
from daian_tf.training.config import SampleConfig

TRAIN, EVAL = "train", "eval"
SPLITS = (TRAIN, EVAL)
FILE_PREFIX, FILE_SUFFIX = "data", ".tfrecord.gz"
GZIP_LEVEL = 1  # fastest; see tfrecord_sink
REPORT_FILE = "report.json"
DAY_S = 86400
# Evenly spaced quantiles (0.1 % apart) and their rank error bound for I-2.
NUM_QUANTILES, QUANTILE_EPSILON = 1001, 1e-3
# Rows read before a file's rows are grouped by key and emitted (see _read_grouped):
# the reader's only buffer, a constant independent of the logs' size.
CHUNK_ROWS = 100_000

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
    "samples_train": "", "samples_eval": "", "requests_train": "", "requests_eval": "",
    "requests_with_clicks": "requests with >= 1 click (intent_mask = 1)",
}
_META_FILES = {"split_boundary": "split_boundary.json", "sim_range": "sim_range.json",
               "catalog": "catalog.json"}
_META_DIR = "pipeline_stats"


_COUNTER_OBJECTS: Dict[str, object] = {}


def _count(name: str, n: int = 1) -> None:
    counter = _COUNTER_OBJECTS.get(name)
    if counter is None:  # a Beam counter delegates to the current step's container
        counter = _COUNTER_OBJECTS[name] = Metrics.counter(NAMESPACE, name)
    counter.inc(n)


# --- records between steps ----------------------------------------------------------
class Target(NamedTuple):
    item_id: str
    clicked: int
    position: Optional[int]
    p_true: Optional[float]


class Request(NamedTuple):
    """All impression rows of one request_id, checked to agree."""

    request_id: str
    user_id: str
    timestamp: int
    trigger_item_id: str  # "" when to be derived
    targets: Tuple[Target, ...]


class Prepared(NamedTuple):
    """A kept request with everything its examples need except the intent labels,
    which wait for sim_range (a statistic over all train requests, I-2)."""

    timestamp: int
    features: bytes  # serialized request-level feature entries (example_encoding)
    sims: Tuple[float, ...]  # cos(m_trigger, m_target) per target
    targets: Tuple[Target, ...]


def _to_plain(record) -> tuple:
    """A Request or Prepared as nested plain tuples, which Beam encodes natively
    between steps (it pickles NamedTuples, several times slower)."""
    return record[:-1] + (tuple(map(tuple, record[-1])),)


def _from_plain(record_type, plain: tuple):
    """The inverse of `_to_plain`: `record_type` is Request or Prepared."""
    return record_type(*plain[:-1], tuple(map(Target._make, plain[-1])))


# --- per-request / per-user logic (pure) --------------------------------------------
def assemble_request(rows: Sequence[Impression], truth: Mapping[str, float],
                     path: str) -> Request:
    """One Request from its impression rows; rows disagreeing on user, timestamp or
    trigger are a RawLogError naming the request id and both rows."""
    rows = sorted(rows, key=lambda r: r.row)
    first = rows[0]
    for r in rows[1:]:
        for col in ("user_id", "timestamp", "trigger_item_id"):
            a, b = getattr(first, col), getattr(r, col)
            if a != b:
                raise RawLogError(
                    f"request_id {first.request_id!r}: rows {first.row} and {r.row} "
                    f"disagree on {col} ({a!r} vs {b!r}); a request has one user, one "
                    f"timestamp and one trigger", path, r.row, col)
    targets = tuple(Target(r.item_id, r.clicked, r.position, truth.get(r.item_id))
                    for r in rows)
    return Request(first.request_id, first.user_id, first.timestamp,
                   first.trigger_item_id, targets)


def cut_history(behaviors: Sequence[Behavior], times: Sequence[int], timestamp: int,
                cfg: SampleConfig) -> Tuple[Behavior, ...]:
    """Behaviours with `timestamp - history_days*86400 <= ts < timestamp`, the last
    `max_seq_len` of them, chronological. `behaviors` is sorted by (ts, row) and
    `times` holds their timestamps."""
    end = bisect_left(times, timestamp)
    start = max(bisect_left(times, timestamp - cfg.history_days * DAY_S),
                end - cfg.max_seq_len)
    return tuple(behaviors[start:end])


def derive_trigger(behaviors: Sequence[Behavior], times: Sequence[int], timestamp: int,
                   window_s: int) -> Optional[str]:
    """The item of the user's most recent click strictly before `timestamp` and at most
    `window_s` seconds before it; None if there is none."""
    k = bisect_left(times, timestamp) - 1
    while k >= 0 and timestamp - times[k] <= window_s:
        if behaviors[k].behavior == F.DEFAULT_BEHAVIOR:
            return behaviors[k].item_id
        k -= 1
    return None


def split_boundary(max_timestamp: int, eval_days: int) -> int:
    """First second of the eval split: the last `eval_days` UTC days up to and
    including the day of the latest impression."""
    return (max_timestamp // DAY_S - eval_days + 1) * DAY_S


# --- Beam steps --------------------------------------------------------------------
def _surfacing(fn):
    """Wrap a generator step so that a RawLogError keeps its file/row/column through
    the runner's wrapping (see raw_logs.find_raw_log_error)."""

    def step(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except RawLogError as e:
            raise RuntimeError(encode_error(e)) from e

    step.__name__ = fn.__name__
    return step


def _read_grouped(path: str, reader, key, value, *args
                  ) -> Iterator[Tuple[str, List[tuple]]]:
    """Rows of one file as `(key, [value(row), ...])`, grouped by key within chunks of
    CHUNK_ROWS rows: reading, keying and batching in one step, so the shuffles carry
    one element per key and chunk instead of one per row. `value` must give a plain
    tuple of str/int/float/None, which Beam encodes natively (no pickling)."""
    groups: Dict[str, List[tuple]] = {}
    n = 0
    for row in reader(path, *args):
        groups.setdefault(key(row), []).append(value(row))
        n += 1
        if n == CHUNK_ROWS:
            yield from groups.items()
            groups, n = {}, 0
    yield from groups.items()


def _ungroup(batches: Iterable[List[tuple]], record) -> List:
    """The rows of the batches of `_read_grouped`, as `record` NamedTuples again."""
    return [record._make(t) for t in chain.from_iterable(batches)]


def _load_catalog(layout: RawLayout) -> Iterator[Catalog]:
    catalog = load_catalog(layout)
    for name in ("items_without_embedding", "embeddings_for_unknown_items"):
        _count(name, catalog.stats[name])
    yield catalog


def _request(kv, path: str) -> Iterator[Tuple[str, tuple]]:
    request_id, groups = kv
    rows = _ungroup(groups["impressions"], Impression)
    truth = dict(chain.from_iterable(groups.get("truth", ())))
    if not rows:
        _count("truth_rows_without_impression", len(truth))
        return
    _count("requests")
    _count("impressions", len(rows))
    request = assemble_request(rows, truth, path)
    yield request.user_id, _to_plain(request)


def _join_user(kv, catalog: Catalog, cfg: SampleConfig, users_path: str,
               has_truth: bool) -> Iterator[tuple]:
    """Per user: resolve triggers and cut histories for each of the user's requests;
    yields each kept request as a plain Prepared."""
    for request, trigger, history, profile in _resolve_user(kv, catalog, cfg,
                                                            users_path, has_truth):
        yield _to_plain(_prepare(request, trigger, history, profile, catalog, cfg))


def _train_similarities(kv, catalog: Catalog, cfg: SampleConfig, users_path: str,
                        boundary: int) -> Iterator[Tuple[float, ...]]:
    """Per user, one batch per train request: its trigger-target similarities (the
    batched input of the quantiles combine). The same trigger resolution as
    `_join_user`, without counting (JoinUser counts) and without the features."""
    for request, trigger, _, _ in _resolve_user(kv, catalog, cfg, users_path,
                                                has_truth=False, count=False):
        if request.timestamp < boundary:
            yield _similarities(request, trigger, catalog)


def _resolve_user(kv, catalog: Catalog, cfg: SampleConfig, users_path: str,
                  has_truth: bool, count: bool = True
                  ) -> Iterator[Tuple[Request, str, Tuple[Behavior, ...], tuple]]:
    """Per user: each kept request with its resolved trigger, its cut history and
    the user's profile; drops and fallbacks are counted when `count`."""
    tally = _count if count else (lambda name, n=1: None)
    user_id, groups = kv
    requests = [_from_plain(Request, r) for r in groups["requests"]]
    behaviors = sorted(_ungroup(groups["behaviors"], Behavior),
                       key=lambda b: (b.timestamp, b.row))
    profiles = sorted(_ungroup(groups.get("users", ()), UserProfile),
                      key=lambda u: u.row)
    tally("behaviors", len(behaviors))
    tally("behaviors_unknown_item",
          sum(1 for b in behaviors if b.item_id not in catalog.items))
    if len(profiles) > 1:
        raise RawLogError(f"duplicate user_id {user_id!r} (first at row "
                          f"{profiles[0].row})", users_path, profiles[1].row, "user_id")
    if not requests:
        if behaviors:
            tally("users_without_impressions")
            tally("behaviors_of_users_without_impressions", len(behaviors))
        return
    if profiles:
        profile = profiles[0].values
    else:
        profile = ("",) * len(cfg.user_columns)
        tally("users_without_profile")
    times = [b.timestamp for b in behaviors]
    for request in requests:
        trigger = request.trigger_item_id
        if not trigger:
            trigger = derive_trigger(behaviors, times, request.timestamp,
                                     cfg.trigger_window_s)
            if trigger is None:
                tally("requests_dropped_no_trigger")
                tally("impressions_dropped_no_trigger", len(request.targets))
                continue
            tally("requests_trigger_derived")
        if has_truth:
            tally("samples_without_truth",
                  sum(1 for t in request.targets if t.p_true is None))
        yield (request, trigger, cut_history(behaviors, times, request.timestamp, cfg),
               profile)


def _prepare(request: Request, trigger: str, history: Sequence[Behavior],
            profile: Sequence[str], catalog: Catalog, cfg: SampleConfig) -> Prepared:
    """The request-level features (ids, profile, trigger, history, diversity) and the
    trigger-target similarities of a request with its resolved trigger; counts the
    request's and its targets' unknown items and missing embeddings."""
    if trigger not in catalog.items:
        _count("requests_unknown_trigger_item")
    if not catalog.has_embedding(trigger):
        _count("requests_trigger_without_embedding")
    _count("samples_unknown_target_item",
           sum(1 for t in request.targets if t.item_id not in catalog.items))
    _count("samples_target_without_embedding",
           sum(1 for t in request.targets if not catalog.has_embedding(t.item_id)))
    trig = catalog.side(trigger)
    hist_sides = [catalog.side(b.item_id) for b in history]
    diversity = IL.intent_diversity(
        (catalog.side(t.item_id).category_id for t in request.targets if t.clicked),
        trig.category_id)
    features = b"".join([
        E.bytes_feature(F.REQUEST_ID, [request.request_id]),
        E.bytes_feature(F.USER_ID, [request.user_id]),
        E.int64_feature(F.TIMESTAMP, [request.timestamp]),
        *(E.bytes_feature(F.user_feature(col), [value])
          for col, value in zip(cfg.user_columns, profile)),
        E.bytes_feature(F.TRIGGER_ITEM_ID, [trigger]),
        E.bytes_feature(F.TRIGGER_CATEGORY_ID, [trig.category_id]),
        E.bytes_feature(F.TRIGGER_BRAND_ID, [trig.brand_id]),
        E.bytes_feature(F.TRIGGER_SHOP_ID, [trig.shop_id]),
        E.float_feature(F.TRIGGER_PRICE, [trig.price]),
        E.bytes_feature(F.HIST_ITEM_ID, [b.item_id for b in history]),
        E.bytes_feature(F.HIST_CATEGORY_ID, [s.category_id for s in hist_sides]),
        E.bytes_feature(F.HIST_BRAND_ID, [s.brand_id for s in hist_sides]),
        E.bytes_feature(F.HIST_BEHAVIOR, [b.behavior for b in history]),
        E.int64_feature(F.HIST_TIME_DELTA,
                        [request.timestamp - b.timestamp for b in history]),
        E.int64_feature(F.INTENT_DIVERSITY, [diversity]),
    ])
    return Prepared(request.timestamp, features, _similarities(request, trigger, catalog),
                    request.targets)


def _similarities(request: Request, trigger: str, catalog: Catalog) -> Tuple[float, ...]:
    """cos(m_trigger, m_target) per target of `request`."""
    return tuple(catalog.cos(trigger, t.item_id) for t in request.targets)


def _sim_range(quantiles: Sequence[float], percentiles: Sequence[float],
               path: str) -> Iterator[Tuple[float, float]]:
    if not quantiles:
        raise RawLogError("no train-split impressions to derive sim_range from (I-2); "
                          "set samples.sim_range or lower samples.eval_days", path)
    lo, hi = IL.range_from_quantiles(quantiles, percentiles)
    if not hi > lo:
        raise RawLogError(f"train trigger-target similarities have no spread "
                          f"(percentiles {list(percentiles)} are both {lo}); set "
                          f"samples.sim_range", path)
    yield lo, hi


class _EmitExamples(beam.DoFn):
    """Prepared (plain) → the list of its serialized tf.Examples (one per target),
    tagged with the request's split.

    An example is the request's features + its intent label + the target item's
    features (cached per item) + the target's own scalars.
    """

    def __init__(self, has_truth: bool, has_position: bool, num_levels: int):
        self._has_truth, self._has_position = has_truth, has_position
        self._n = num_levels

    def setup(self):
        # item id -> serialized target-item features; bounded by the catalog size
        self._item_bytes: Dict[str, bytes] = {}

    def _item_part(self, item_id: str, catalog: Catalog) -> bytes:
        """The target-item feature entries of `item_id`, built once per item."""
        cached = self._item_bytes.get(item_id)
        if cached is None:
            side = catalog.side(item_id)
            cached = self._item_bytes[item_id] = b"".join([
                E.bytes_feature(F.TARGET_ITEM_ID, [item_id]),
                E.bytes_feature(F.TARGET_CATEGORY_ID, [side.category_id]),
                E.bytes_feature(F.TARGET_BRAND_ID, [side.brand_id]),
                E.bytes_feature(F.TARGET_SHOP_ID, [side.shop_id]),
                E.float_feature(F.TARGET_PRICE, [side.price])])
        return cached

    def process(self, plain: tuple, catalog: Catalog, boundary: int,
                sim_range: Tuple[float, float]):
        n, (lo, hi) = self._n, sim_range
        prepared = _from_plain(Prepared, plain)
        split = EVAL if prepared.timestamp >= boundary else TRAIN
        _count(f"requests_{split}")
        _count(f"samples_{split}", len(prepared.targets))
        levels = [IL.intent_level(s, lo, hi, n) for s in prepared.sims]
        click_levels = [lv for lv, t in zip(levels, prepared.targets) if t.clicked]
        label, mask = IL.intent_histogram(click_levels, n)
        if mask:
            _count("requests_with_clicks")
        request_part = b"".join([prepared.features,
                                 E.float_feature(F.INTENT_LABEL, label),
                                 E.int64_feature(F.INTENT_MASK, [mask])])
        # label and leave-one-out features depend on the target only through
        # (clicked, level): built once per distinct pair of the request
        label_parts: Dict[Tuple[int, int], bytes] = {}
        examples = []
        for target, sim, level in zip(prepared.targets, prepared.sims, levels):
            key = (target.clicked, level if target.clicked else -1)
            label_part = label_parts.get(key)
            if label_part is None:
                loo, loo_mask = IL.leave_one_out(click_levels, level,
                                                 bool(target.clicked), n)
                label_part = label_parts[key] = b"".join([
                    E.int64_feature(F.LABEL, [target.clicked]),
                    E.float_feature(F.INTENT_LABEL_LOO, loo),
                    E.int64_feature(F.INTENT_MASK_LOO, [loo_mask])])
            parts = [request_part, self._item_part(target.item_id, catalog),
                     label_part,
                     E.float_feature(F.TARGET_SIM, [sim])]
            if self._has_position:
                parts.append(E.int64_feature(F.POSITION, [target.position]))
            if self._has_truth and target.p_true is not None:
                parts.append(E.float_feature(F.P_TRUE, [target.p_true]))
            examples.append(E.example(*parts))
        yield beam.pvalue.TaggedOutput(split, examples)


def _write_json(value, path: str) -> None:
    with FileSystems.create(path) as f:
        f.write(json.dumps(value).encode("utf-8"))


def _meta_path(meta_dir: str, what: str) -> str:
    return FileSystems.join(meta_dir, _META_DIR, _META_FILES[what])


def build_sample_pipeline(pipeline: beam.Pipeline, raw_dir: str,
                          output_dirs: Mapping[str, str], cfg: SampleConfig,
                          meta_dir: str) -> None:
    """Apply the sample builder to `pipeline` (nothing runs until the pipeline does).

    Args:
      pipeline: any Beam pipeline (the CLI's, or the TFX component's).
      raw_dir: a raw-log directory (DATA.md §1); local or any Beam filesystem.
      output_dirs: split name ('train', 'eval') -> directory for its TFRecord files.
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
        | "LoadCatalog" >> beam.FlatMap(_surfacing(_load_catalog)))

    def read(name: str, reader, key, value=tuple, *args) -> beam.PCollection:
        return (p | f"Path{name}" >> beam.Create([layout.path(name)])
                | f"Read{name}" >> beam.FlatMap(_surfacing(_read_grouped), reader, key,
                                                value, *args))

    by_request = {"impressions": read(F.IMPRESSIONS_FILE, read_impressions,
                                      lambda r: r.request_id)}
    if layout.has_truth:
        by_request["truth"] = read(F.TRUTH_FILE, read_truth, lambda t: t.request_id,
                                   lambda t: (t.item_id, t.p_click))
    requests = (by_request | "GroupByRequest" >> beam.CoGroupByKey()
                | "Requests" >> beam.FlatMap(_surfacing(_request), imp_path))

    by_user = {
        "requests": requests,
        "behaviors": read(F.BEHAVIORS_FILE, read_behaviors, lambda b: b.user_id),
    }
    if layout.has(F.USERS_FILE):
        by_user["users"] = read(F.USERS_FILE, read_users, lambda u: u.user_id,
                                tuple, tuple(cfg.user_columns))
    users = by_user | "GroupByUser" >> beam.CoGroupByKey()
    contexts = users | "JoinUser" >> beam.FlatMap(
        _surfacing(_join_user), catalog, cfg, users_path, layout.has_truth)

    # every impression row belongs to a request with its timestamp, so the latest
    # request is the latest impression (one element per request, not per row)
    boundary = (requests
                | "Timestamps" >> beam.Map(lambda kv: _from_plain(Request, kv[1])
                                           .timestamp)
                | "MaxTimestamp" >> beam.CombineGlobally(max).without_defaults()
                | "Boundary" >> beam.Map(split_boundary, cfg.eval_days))
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
                _surfacing(_train_similarities), catalog, cfg, users_path,
                beam.pvalue.AsSingleton(boundary))
            | "SimQuantiles" >> beam.CombineGlobally(
                ApproximateQuantilesCombineFn.create(NUM_QUANTILES, QUANTILE_EPSILON,
                                                     input_batched=True))
            | "SimRange" >> beam.FlatMap(_surfacing(_sim_range),
                                         tuple(cfg.sim_percentiles), imp_path))

    examples = contexts | "Examples" >> beam.ParDo(
        _EmitExamples(layout.has_truth, layout.has_position, cfg.num_intent_levels),
        catalog,
        beam.pvalue.AsSingleton(boundary),
        beam.pvalue.AsSingleton(sim_range)).with_outputs(*SPLITS)
    for split in SPLITS:
        _ = examples[split] | f"Write{split}" >> beam.io.Write(TFRecordBatchSink(
            FileSystems.join(output_dirs[split], FILE_PREFIX), FILE_SUFFIX,
            cfg.num_shards, GZIP_LEVEL))

    _ = boundary | "WriteBoundary" >> beam.Map(
        _write_json, _meta_path(meta_dir, "split_boundary"))
    _ = (sim_range | "SimRangeList" >> beam.Map(list)
         | "WriteSimRange" >> beam.Map(_write_json, _meta_path(meta_dir, "sim_range")))
    _ = (p | "CatalogStats" >> beam.Create([None])
         | "GetCatalogStats" >> beam.Map(lambda _, c: c.stats, catalog)
         | "WriteCatalogStats" >> beam.Map(_write_json, _meta_path(meta_dir, "catalog")))


def _read_json(path: str):
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def finalize_report(result, meta_dir: str, cfg: SampleConfig,
                    output_dirs: Optional[Mapping[str, str]] = None,
                    raw_dir: Optional[str] = None) -> dict:
    """Gather the Beam counters and in-pipeline statistics into `meta_dir/report.json`.

    Args:
      result: the finished pipeline's `PipelineResult` (`pipeline.result` after a
        `with beam.Pipeline() as pipeline:` block).
      meta_dir: the directory given to `build_sample_pipeline`.
      cfg: the SampleConfig the pipeline ran with (recorded in the report).
      output_dirs: recorded in the report when given.
      raw_dir: the raw-log directory the samples came from, recorded as given (a
        string) under `raw_dir` when given.

    Returns:
      The report: `counts` (every counter of COUNTERS, zeros included),
      `splits` ({split: {samples, requests}}), `split_boundary_timestamp`,
      `sim_range` [lo, hi], `sim_range_source`, `catalog` stats (incl. embedding_dim),
      `num_intent_levels`, `intent_level_edges`, and the config.
    """
    counts = {name: 0 for name in COUNTERS}
    for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))[
            "counters"]:
        value = c.committed if c.committed is not None else c.attempted
        counts[c.key.metric.name] = counts.get(c.key.metric.name, 0) + int(value or 0)
    lo, hi = _read_json(_meta_path(meta_dir, "sim_range"))
    report = {
        "counts": counts,
        "splits": {s: {"samples": counts[f"samples_{s}"],
                       "requests": counts[f"requests_{s}"]} for s in SPLITS},
        "split_boundary_timestamp": _read_json(_meta_path(meta_dir, "split_boundary")),
        "sim_range": [lo, hi],
        "sim_range_source": ("config" if cfg.sim_range is not None else
                             f"percentiles {list(cfg.sim_percentiles)} of train "
                             f"trigger-target similarity"),
        "num_intent_levels": cfg.num_intent_levels,
        "intent_level_edges": IL.level_edges(lo, hi, cfg.num_intent_levels),
        "catalog": _read_json(_meta_path(meta_dir, "catalog")),
        "counter_meanings": {k: v for k, v in COUNTERS.items() if v},
        "config": dataclasses.asdict(cfg),
    }
    if output_dirs is not None:
        report["output_dirs"] = dict(output_dirs)
    if raw_dir is not None:
        report["raw_dir"] = str(raw_dir)
    _write_json(report, FileSystems.join(meta_dir, REPORT_FILE))
    return report


def _remove_old_shards(directory: str) -> None:
    pattern = FileSystems.join(directory, f"{FILE_PREFIX}-*{FILE_SUFFIX}")
    old = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
    if old:
        FileSystems.delete(old)


def run_build_samples(raw_dir: str, out_dir: str, cfg: SampleConfig,
                      beam_args: Optional[List[str]] = None) -> dict:
    """Build samples from `raw_dir` into `out_dir/{train,eval}/` and `out_dir/report.json`.

    Args:
      raw_dir: raw-log directory (DATA.md §1).
      out_dir: output directory; earlier `data-*.tfrecord.gz` shards there are replaced.
      cfg: the sample rules.
      beam_args: Beam pipeline options, e.g. `["--runner=DataflowRunner", ...]` or
        `["--direct_num_workers=2", "--direct_running_mode=multi_processing"]`.

    Returns:
      The report (see `finalize_report`).

    Raises:
      RawLogError: the raw logs break a rule of DATA.md §1 (re-raised from the worker
        with its file, row and column).
    """
    output_dirs = {s: FileSystems.join(out_dir, s) for s in SPLITS}
    for d in output_dirs.values():
        _remove_old_shards(d)
    pipeline = beam.Pipeline(options=PipelineOptions(list(beam_args or [])))
    build_sample_pipeline(pipeline, raw_dir, output_dirs, cfg, out_dir)
    return finalize_report(run_pipeline(pipeline), out_dir, cfg, output_dirs, raw_dir)


def run_pipeline(pipeline: beam.Pipeline):
    """Run `pipeline` to the end; a raw-log error raised on a worker comes back clean.

    Returns:
      The finished `PipelineResult`.

    Raises:
      RawLogError: re-raised from the worker with its file, row and column.
    """
    runner_log = logging.getLogger("apache_beam.runners.common")
    quiet = RawLogErrorLogFilter()
    runner_log.addFilter(quiet)
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as exc:  # noqa: BLE001 - re-raise the raw-log error inside
        err = find_raw_log_error(exc)
        if err is not None:
            raise err from None
        raise
    finally:
        runner_log.removeFilter(quiet)
    return result
