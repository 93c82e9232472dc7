"""The sample builder's Beam steps: the functions and DoFns its graph applies.

Each step turns one element into the next record of the data flow described in
`sample_builder`: file rows grouped by key (`read_grouped`), the counted catalog,
a request id's rows into a Request (`group_to_request`), a user's group into
Prepared requests (`join_user`) or train similarities (`train_similarities`), the
similarities' histogram into a checked sim_range, and a Prepared request into its
serialized tf.Examples tagged with their split (`EmitExamples`). `surfacing` keeps
a RawLogError's file, row and column through the runner.
"""

from __future__ import annotations

from itertools import chain
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np

from daian_tf.core import features as F
from daian_tf.core import similarity_range as SR
from daian_tf.core.config import SampleConfig
from daian_tf.core.errors import RawLogError
from daian_tf.core.names import TRAIN
from daian_tf.data import example_encoding as E
from daian_tf.data import intent_labels as IL
from daian_tf.data.catalog import Catalog, load_catalog
from daian_tf.data.raw_log_errors import encode_error
from daian_tf.data.raw_logs import Behavior, Impression, RawLayout, UserProfile
from daian_tf.data.sample_report import inc_counter
from daian_tf.data.sample_requests import (Prepared, Request, assemble_request,
                                           cut_history, derive_trigger, from_plain,
                                           prepare, similarities, split_boundaries,
                                           split_of, to_plain)

# Rows read before a file's rows are grouped by key and emitted (see read_grouped):
# the reader's only buffer, a constant independent of the logs' size.
CHUNK_ROWS = 100_000


def surfacing(fn):
    """Wrap a generator step so that a RawLogError keeps its file/row/column through
    the runner's wrapping (see raw_log_errors.find_raw_log_error)."""

    def step(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except RawLogError as e:
            raise RuntimeError(encode_error(e)) from e

    step.__name__ = fn.__name__
    return step


def read_grouped(path: str, reader, key, value, *args
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
    """The rows of the batches of `read_grouped`, as `record` NamedTuples again."""
    return [record._make(t) for t in chain.from_iterable(batches)]


def load_counted_catalog(layout: RawLayout) -> Iterator[Catalog]:
    """The catalog of `layout` as the one element of a step; its drops counted."""
    catalog = load_catalog(layout)
    for name in ("items_without_embedding", "embeddings_for_unknown_items"):
        inc_counter(name, catalog.stats[name])
    yield catalog


def group_to_request(kv, path: str) -> Iterator[Tuple[str, tuple]]:
    """A request id's grouped impression and truth rows as (user_id, plain Request)."""
    request_id, groups = kv
    rows = _ungroup(groups["impressions"], Impression)
    truth = dict(chain.from_iterable(groups.get("truth", ())))
    if not rows:
        inc_counter("truth_rows_without_impression", len(truth))
        return
    inc_counter("requests")
    inc_counter("impressions", len(rows))
    request = assemble_request(rows, truth, path)
    yield request.user_id, to_plain(request)


def join_user(kv, catalog: Catalog, cfg: SampleConfig, users_path: str,
              has_truth: bool) -> Iterator[tuple]:
    """Per user: resolve triggers and cut histories for each of the user's requests;
    yields each kept request as a plain Prepared."""
    for request, trigger, history, profile in _resolve_user(kv, catalog, cfg,
                                                            users_path, has_truth):
        yield to_plain(prepare(request, trigger, history, profile, catalog, cfg))


def boundaries(max_timestamp: int, cfg: SampleConfig,
               impressions_path: str) -> Iterator[Tuple[int, int]]:
    """The one element `split_boundaries` (a generator, for `surfacing`)."""
    yield split_boundaries(max_timestamp, cfg, impressions_path)


def train_similarities(kv, catalog: Catalog, cfg: SampleConfig, users_path: str,
                       boundaries: Tuple[int, int]) -> Iterator[Tuple[float, ...]]:
    """Per user, one batch per train request: its trigger-target similarities (the
    batched input of `SimilarityHistogram`). The same trigger resolution as
    `join_user`, without counting (JoinUser counts) and without the features."""
    for request, trigger, _, _ in _resolve_user(kv, catalog, cfg, users_path,
                                                has_truth=False, count=False):
        if split_of(request.timestamp, boundaries) == TRAIN:
            yield similarities(request, trigger, catalog)


def _resolve_user(kv, catalog: Catalog, cfg: SampleConfig, users_path: str,
                  has_truth: bool, count: bool = True
                  ) -> Iterator[Tuple[Request, str, Tuple[Behavior, ...], tuple]]:
    """Per user: each kept request with its resolved trigger, its cut history and
    the user's profile; drops and fallbacks are counted when `count`."""
    tally = inc_counter if count else (lambda name, n=1: None)
    user_id, groups = kv
    requests = [from_plain(Request, r) for r in groups["requests"]]
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


class SimilarityHistogram(beam.CombineFn):
    """Batches of train similarities → their counts in `IL.SIM_BINS` bins over [-1, 1]
    (None when there are none). Counts are summed, so the result, unlike approximate
    quantiles, is the same however the runner bundles and merges."""

    def create_accumulator(self):
        return None  # no similarities yet; the 512 kB array only once there are

    def add_input(self, acc, batch):
        if not len(batch):
            return acc
        if acc is None:
            acc = np.zeros(IL.SIM_BINS, dtype=np.int64)
        np.add.at(acc, IL.similarity_bins(batch), 1)
        return acc

    def merge_accumulators(self, accs):
        merged = None
        for acc in accs:
            if acc is None:
                continue
            if merged is None:
                merged = acc.copy()
            else:
                merged += acc
        return merged

    def extract_output(self, acc):
        return acc


def checked_sim_range(counts: Optional[np.ndarray], percentiles: Sequence[float],
                      path: str) -> Iterator[Tuple[float, float]]:
    """The sim_range [lo, hi] from the train similarities' histogram (one element);
    no train impressions or no spread between the percentiles is a RawLogError."""
    if counts is None:
        raise RawLogError("no train-split impressions to derive sim_range from (I-2); "
                          "set samples.sim_range, or lower samples.eval_days or "
                          "samples.validation_days (or move eval_start / "
                          "validation_start later)", path)
    lo, hi = IL.range_from_histogram(counts, percentiles)
    if not hi > lo:
        raise RawLogError(f"train trigger-target similarities have no spread "
                          f"(percentiles {list(percentiles)} are both {lo}); set "
                          f"samples.sim_range", path)
    yield lo, hi


class EmitExamples(beam.DoFn):
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

    def process(self, plain: tuple, catalog: Catalog, boundaries: Tuple[int, int],
                sim_range: Tuple[float, float]):
        n, (lo, hi) = self._n, sim_range
        prepared = from_plain(Prepared, plain)
        split = split_of(prepared.timestamp, boundaries)
        inc_counter(f"requests_{split}")
        inc_counter(f"samples_{split}", len(prepared.targets))
        levels = [int(SR.level_index(s, lo, hi, n, xp=SR.SCALAR)) for s in prepared.sims]
        click_levels = [lv for lv, t in zip(levels, prepared.targets) if t.clicked]
        label, mask = IL.intent_histogram(click_levels, n)
        if mask:
            inc_counter("requests_with_clicks")
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
        yield beam.pvalue.TaggedOutput(split, (prepared.request_id, examples))
