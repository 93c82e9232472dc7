"""The sample builder's records and its per-request rules, free of Beam graph code.

The records (`Target`, `Request`, `Prepared`) travel between the Beam steps as plain
tuples (`to_plain`, `from_plain`). The rules of DATA.md §2 act on one request or one
user: assembling a request from its impression rows, deriving an empty trigger,
cutting the history, the splits' first seconds, and `prepare`, which serializes
a request's features and computes its trigger-target similarities (counting unknown
items and missing embeddings with `sample_report.inc_counter`).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Mapping, NamedTuple, Optional, Sequence, Tuple

from daian_tf.core import features as F
from daian_tf.core.config import SampleConfig
from daian_tf.core.errors import RawLogError
from daian_tf.core.names import EVAL, TRAIN, VALIDATION
from daian_tf.data import example_encoding as E
from daian_tf.data import intent_labels as IL
from daian_tf.data.catalog import Catalog
from daian_tf.data.raw_logs import Behavior, Impression
from daian_tf.data.sample_report import inc_counter

DAY_S = 86400


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

    request_id: str
    timestamp: int
    features: bytes  # serialized request-level feature entries (example_encoding)
    sims: Tuple[float, ...]  # cos(m_trigger, m_target) per target
    targets: Tuple[Target, ...]


def to_plain(record) -> tuple:
    """A Request or Prepared as nested plain tuples, which Beam encodes natively
    between steps (it pickles NamedTuples, several times slower)."""
    return record[:-1] + (tuple(map(tuple, record[-1])),)


def from_plain(record_type, plain: tuple):
    """The inverse of `to_plain`: `record_type` is Request or Prepared."""
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


def split_boundaries(max_timestamp: int, cfg: SampleConfig,
                     impressions_path: Optional[str] = None) -> Tuple[int, int]:
    """`(validation_start, eval_start)`: the first seconds of the validation and eval
    splits. Eval: `samples.eval_start` when given, else the last `eval_days` UTC days up
    to and including the day of the latest impression. Validation: `validation_start`
    when given, else the `validation_days` UTC days before the eval split.

    Raises:
      RawLogError: the validation split would start at or after the eval split.
    """
    eval_start = cfg.eval_start_timestamp()
    if eval_start is None:
        eval_start = (max_timestamp // DAY_S - cfg.eval_days + 1) * DAY_S
    validation_start = cfg.validation_start_timestamp()
    if validation_start is None:
        validation_start = eval_start - cfg.validation_days * DAY_S
    if validation_start >= eval_start:
        raise RawLogError(f"samples.validation_start ({cfg.validation_start}) is not "
                          f"before the eval split's first second ({eval_start}, from "
                          f"samples.eval_days={cfg.eval_days} and the latest impression "
                          f"{max_timestamp}): the validation split would be empty",
                          impressions_path)
    return validation_start, eval_start


def split_of(timestamp: int, boundaries: Tuple[int, int]) -> str:
    """The split of a request at `timestamp` (`split_boundaries`)."""
    validation_start, eval_start = boundaries
    if timestamp >= eval_start:
        return EVAL
    return VALIDATION if timestamp >= validation_start else TRAIN


# --- request-level features and similarities ----------------------------------------
def prepare(request: Request, trigger: str, history: Sequence[Behavior],
            profile: Sequence[str], catalog: Catalog, cfg: SampleConfig) -> Prepared:
    """The request-level features (ids, profile, trigger, history, diversity) and the
    trigger-target similarities of a request with its resolved trigger; counts the
    request's and its targets' unknown items and missing embeddings."""
    if trigger not in catalog.items:
        inc_counter("requests_unknown_trigger_item")
    if not catalog.has_embedding(trigger):
        inc_counter("requests_trigger_without_embedding")
    inc_counter("samples_unknown_target_item",
                sum(1 for t in request.targets if t.item_id not in catalog.items))
    inc_counter("samples_target_without_embedding",
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
    return Prepared(request.request_id, request.timestamp, features,
                    similarities(request, trigger, catalog), request.targets)


def similarities(request: Request, trigger: str, catalog: Catalog) -> Tuple[float, ...]:
    """cos(m_trigger, m_target) per target of `request`."""
    return tuple(catalog.cos(trigger, t.item_id) for t in request.targets)
