"""`convert_taobao(src_dir, out_dir, cfg)`: the Taobao/Alimama display-ad data set ("Ad
Display/Click Data on Taobao.com", Tianchi 56) as raw TIR logs (spec/DATA.md §1, §4).
docs/real-data.md ("Taobao / Alimama") explains the choices below at more length.

Input, in `src_dir` (the public files, never downloaded here):
- `raw_sample.csv` `user,time_stamp,adgroup_id,pid,nonclk,clk`: one row per ad
  impression, 8 days 2017-05-06..13 (Beijing time, UTC+8), not sorted;
- `ad_feature.csv` `adgroup_id,cate_id,campaign_id,customer,brand,price` (brand may be
  `NULL`);
- `user_profile.csv` `userid,cms_segid,cms_group_id,final_gender_code,age_level,
  pvalue_level,shopping_level,occupation,new_user_class_level ` (the last header name
  ends with a space; header names are stripped; empty values are common);
- `behavior_log.csv` `user,time_stamp,btag,cate,brand` (no item id).
Each file must exist with those columns (else a RawLogError naming the file and the
column); a bad value is a RawLogError naming the file, the line (header = 1) and the
column. Nothing is dropped silently: every drop is counted in the returned report, which
is also written to `OUT/conversion.json`.

Output, in `out_dir` (file names from `core.features`; ids as decimal integers):
- `items.csv`: one item per ad group of ad_feature.csv: `item_id` = adgroup_id,
  `category_id` = cate_id, `brand_id` = brand (`NULL` → empty: unknown), `shop_id` =
  customer (the advertiser), `price`, and `campaign_id` as an extra column. Ad groups
  shown in raw_sample.csv but absent from ad_feature.csv have no category (a required
  column), so they are not catalog items: their impressions and clicks are kept, the
  sample builder counts them as unknown (out-of-vocabulary) items with the zero vector,
  and the report counts them (`items.adgroups_not_in_ad_feature`, with their
  impression, click and trigger rows).
- `impressions.csv`: a request is one (user, time_stamp) group of raw_sample.csv, all
  ads shown to a user in the same second (the data has no page or session id; this is
  the closest thing to a page); `request_id` = `<user>_<time_stamp>`, deterministic.
  `clicked` = clk. `position` is omitted: `pid` names one of two ad slots, not a rank
  on the page (the report counts rows per pid). The trigger is written explicitly, as
  DIHN (Shen et al. 2022) and DAIAN process Alimama: the user's latest clicked
  impression at least `trigger_min_gap_s` (default 1: strictly earlier) and at most
  `trigger_window_s` (4 h) before the request; among clicks of one second, the largest
  adgroup_id (arbitrary but deterministic; counted as `requests.triggers_tied`).
  raw_sample.csv logs the impression time, not the click time, so a click's time is its
  impression's. Requests without a trigger are dropped here and counted
  (`requests.dropped_no_trigger`, `impressions.dropped_no_trigger`): the sample builder
  would drop them anyway, and impressions.csv shrinks to what becomes examples. The
  builder's own derivation (an empty trigger) would pick the same click: behaviors.csv
  is sorted by time and, within a second, by adgroup_id.
- `behaviors.csv`: every clicked impression of raw_sample.csv (all 8 days; the builder
  keeps only what precedes each request) as behaviour `click`. behavior_log.csv has
  only (category, brand), no item, and DATA.md's history is item-level, so it is
  dropped: its rows are counted per btag (`count_behavior_log`; False: header only).
  Histories are therefore thin (the ad clicks of the 8 days).
- `users.csv`: `user_id` + the eight profile columns (names stripped, `userid` →
  `user_id`); an empty value stays empty, the project's unknown value (the builder
  gives users without a profile row "" too, and Transform maps "" to the
  out-of-vocabulary id). The report lists the columns for `samples.user_columns`.
- `item_embeddings.parquet` (`catalog.write_embeddings`): no text or image exists, so
  item vectors come from co-occurrence and side features (`taobao_vectors`); the
  co-occurrence part counts only impressions of the train period, before the validation
  split's first instant (`samples.validation_start`, else `validation_days` before
  `samples.eval_start`, as the sample builder cuts; eval_start unset: the start of the
  last local day, which the report gives), so that nothing of the validation or eval
  period leaks into the vectors (configs/taobao.yaml: eval from 2017-05-12T16:00:00 UTC
  = 2017-05-13 00:00 Beijing, validation the Beijing day before, 6 train days).

Streaming: no file is read whole. raw_sample.csv and behavior_log.csv are read in
chunks of `chunk_rows` rows (pandas, explicit dtypes; on a parse error or a bad value
the chunk is re-read with the csv module to name the line and column); ad_feature.csv
and user_profile.csv (about 1M rows each) row by row with the csv module, which also
catches short rows (pandas pads them with empty strings). raw_sample.csv is not
sorted, so pass 1 partitions its rows by a hash of the user into `num_shards` binary
files (25 bytes a row); pass 2 loads one shard at a time, sorts it by (user, time,
adgroup) and groups requests, derives triggers (one `searchsorted` over the shard's
clicks) and writes the rows. Memory is one chunk, one shard, the catalog and the
train-period (item, user) pairs of the co-occurrence matrix (12 bytes each) with the
SVD's work arrays; bench/bench_convert_taobao.py measures it. The output order depends
only on the data and `num_shards`, not on the input row order.
"""

from __future__ import annotations

import csv
import json
import os
import re
import resource
import shutil
import tempfile
import time
from array import array
from datetime import datetime, timezone
from typing import Callable, Dict, Iterator, List, NoReturn, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from daian_tf.core import features as F
from daian_tf.core.config import TaobaoConfig
from daian_tf.core.errors import DaianInputError, RawLogError
from daian_tf.data.catalog import write_embeddings
from daian_tf.data.convert.taobao_vectors import item_vectors
from daian_tf.data.raw_logs import iter_csv

RAW_SAMPLE_FILE = "raw_sample.csv"
AD_FEATURE_FILE = "ad_feature.csv"
USER_PROFILE_FILE = "user_profile.csv"
BEHAVIOR_LOG_FILE = "behavior_log.csv"

RAW_SAMPLE_COLUMNS = ("user", "time_stamp", "adgroup_id", "pid", "nonclk", "clk")
AD_FEATURE_COLUMNS = ("adgroup_id", "cate_id", "campaign_id", "customer", "brand",
                      "price")
PROFILE_ID = "userid"
PROFILE_COLUMNS = ("cms_segid", "cms_group_id", "final_gender_code", "age_level",
                   "pvalue_level", "shopping_level", "occupation",
                   "new_user_class_level")
BEHAVIOR_LOG_COLUMNS = ("user", "time_stamp", "btag", "cate", "brand")
BRAND_NULL = "NULL"
CAMPAIGN_COLUMN = "campaign_id"  # the extra column of items.csv
ITEM_COLUMNS = F.ITEMS_REQUIRED + ("brand_id", "shop_id", "price", CAMPAIGN_COLUMN)
SHARD_DIR = "_taobao_shards"  # under OUT unless taobao.tmp_dir is set

DAY_S = 86400
MAX_TIMESTAMP = 2**32  # times are packed with a user index into one int64 key
GAP_EDGES_S = (0, 10, 60, 600, 3600)  # trigger-gap histogram of the report
# one raw_sample.csv row in a shard file (pass 1 → pass 2)
_SHARD_ROW = np.dtype([("user", "<i8"), ("ts", "<i8"), ("item", "<i8"), ("clk", "i1")])
_UINT = re.compile(r"^[0-9]+$")
CATEGORY = "category"  # pandas dtype of the string columns read in chunks
WRITE_BLOCK = 100_000  # output lines written at once by the row-by-row converters
_HASH = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing of user ids into shards


def convert_taobao(src_dir: str, out_dir: str, cfg: TaobaoConfig,
                   eval_start: Optional[int] = None,
                   validation_start: Optional[int] = None,
                   validation_days: int = 1) -> dict:
    """Write the raw TIR logs of the Taobao/Alimama files in `src_dir` into `out_dir`.

    `eval_start` (unix seconds; `samples.eval_start`, the sample builder's cut) starts
    the eval split; None: the start of the last local day. The co-occurrence embedding
    counts the train period only, up to the validation split's start, as the builder
    cuts it: `validation_start` (`samples.validation_start`), else `validation_days`
    days before `eval_start`.

    Returns:
      The report (also `out_dir/conversion.json`): what was read, written and dropped, the
      eval cut, the embedding's layout, and the `samples` settings to use.

    Raises:
      RawLogError: a file or column is missing, or a value is bad (file, line, column).
    """
    paths = {name: os.path.join(src_dir, name) for name in
             (RAW_SAMPLE_FILE, AD_FEATURE_FILE, USER_PROFILE_FILE, BEHAVIOR_LOG_FILE)}
    headers = {
        RAW_SAMPLE_FILE: _checked_header(paths[RAW_SAMPLE_FILE], RAW_SAMPLE_COLUMNS),
        AD_FEATURE_FILE: _checked_header(paths[AD_FEATURE_FILE], AD_FEATURE_COLUMNS),
        USER_PROFILE_FILE: _checked_header(paths[USER_PROFILE_FILE],
                                           (PROFILE_ID,) + PROFILE_COLUMNS),
        BEHAVIOR_LOG_FILE: _checked_header(paths[BEHAVIOR_LOG_FILE],
                                           BEHAVIOR_LOG_COLUMNS),
    }
    os.makedirs(out_dir, exist_ok=True)
    clock = _Clock()
    catalog = _convert_items(paths[AD_FEATURE_FILE], headers[AD_FEATURE_FILE],
                             os.path.join(out_dir, F.ITEMS_FILE))
    clock.lap("items")
    profiles = _convert_users(paths[USER_PROFILE_FILE], headers[USER_PROFILE_FILE],
                              os.path.join(out_dir, F.USERS_FILE))
    clock.lap("users")
    shard_root = tempfile.mkdtemp(prefix=SHARD_DIR, dir=cfg.tmp_dir or out_dir)
    try:
        sharded = _shard_raw_sample(paths[RAW_SAMPLE_FILE], headers[RAW_SAMPLE_FILE],
                                    shard_root, cfg)
        clock.lap("raw_sample_pass1_shards")
        cut = eval_start
        if cut is None:
            cut = _local_day_start(sharded["last_timestamp"], cfg.utc_offset_s)
        cooc_cut = (validation_start if validation_start is not None
                    else cut - validation_days * DAY_S)
        if cooc_cut >= cut:
            raise DaianInputError(f"the validation split's start ({_iso(cooc_cut)}) "
                                  f"must be before the eval split's ({_iso(cut)})")
        joined = _convert_requests(sharded, catalog, profiles, cut, cooc_cut, out_dir,
                                   cfg)
        clock.lap("raw_sample_pass2_requests")
    finally:
        shutil.rmtree(shard_root, ignore_errors=True)
    vectors, embedding_stats = item_vectors(
        cfg, catalog.categories, catalog.brands, catalog.prices, joined.pop("cooc"))
    write_embeddings(os.path.join(out_dir, F.EMBEDDINGS_FILE),
                     [str(i) for i in catalog.ids.tolist()], vectors)
    clock.lap("embeddings")
    behavior_log = _count_behavior_log(paths[BEHAVIOR_LOG_FILE],
                                       headers[BEHAVIOR_LOG_FILE], cfg)
    clock.lap("behavior_log")
    report = _report(src_dir, out_dir, cfg, catalog, profiles, sharded, joined, cut,
                     cooc_cut, embedding_stats, behavior_log)
    report["timing_s"] = clock.laps
    report["peak_rss_mib_by_phase_end"] = clock.peak_rss_mib
    with open(os.path.join(out_dir, F.CONVERSION_REPORT_FILE), "w") as f:
        json.dump(report, f, indent=2)
    return report


class _Clock:
    """Seconds per phase and the process's peak RSS at each phase's end (MiB; Linux
    getrusage), for the report."""

    def __init__(self):
        self.laps: Dict[str, float] = {}
        self.peak_rss_mib: Dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 2)
        self.peak_rss_mib[name] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        self._last = now


# --- reading CSV files in checked chunks -------------------------------------------
def _checked_header(path: str, required: Sequence[str]) -> Tuple[str, ...]:
    """The stripped header of `path`; a missing file, an empty one, a duplicate or a
    missing required column is a RawLogError."""
    if not os.path.exists(path):
        raise RawLogError("required file is missing", path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), None)
    if not header or not any(h.strip() for h in header):
        raise RawLogError("the file is empty (no header line)", path, 1)
    header = tuple(h.strip() for h in header)
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise RawLogError(f"duplicate column name(s) {dupes} in the header", path, 1)
    missing = [c for c in required if c not in header]
    if missing:
        raise RawLogError(f"missing required column(s) {missing}; the header has "
                          f"{list(header)}", path, 1, missing[0])
    return header


def _chunks(path: str, header: Sequence[str], dtype: dict, chunk_rows: int,
            check_row: Callable) -> Iterator[Tuple[int, pd.DataFrame]]:
    """(index of its first data row, chunk) of `path`, the columns of `dtype` only
    (numbers, or "category": strings stored once per distinct value, whose empty value
    stays ""; `labels` reads them); a chunk pandas cannot parse is re-read by
    `find_bad_row` to name the line."""
    reader = pd.read_csv(path, header=0, names=list(header), usecols=list(dtype),
                         dtype=dtype, chunksize=chunk_rows, encoding="utf-8-sig",
                         keep_default_na=False,
                         na_values={c: [""] for c, t in dtype.items()
                                    if t != CATEGORY})
    start = 0
    with reader:
        while True:
            try:
                chunk = next(reader)
            except StopIteration:
                return
            except ValueError as e:  # pandas' ParserError is a ValueError too
                find_bad_row(path, header, start, None, check_row, str(e))
            yield start, chunk
            start += len(chunk)


def find_bad_row(path: str, header: Sequence[str], first: int, count, check_row,
                 why: str) -> NoReturn:
    """Re-read data rows [first, first + count) of `path` (all from `first` when
    `count` is None; blank lines skipped, as pandas does) with the csv module and raise
    the RawLogError of the first bad one (`check_row(fields: dict, line)` raises it);
    if every row passes, a RawLogError with `why` and the row range."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        next(reader)
        k = -1
        for fields in reader:
            if not fields:
                continue
            k += 1
            if k < first:
                continue
            if count is not None and k >= first + count:
                break
            if len(fields) != len(header):
                raise RawLogError(f"expected {len(header)} fields (header "
                                  f"{list(header)}), got {len(fields)}", path,
                                  reader.line_num)
            check_row(dict(zip(header, (v.strip() for v in fields))), reader.line_num)
    raise RawLogError(f"unreadable rows from data row {first + 1}: {why}", path)


def _uint(value: str, path: str, line: int, col: str, what: str = "") -> int:
    if not _UINT.match(value):
        raise RawLogError(f"{what or col} must be a non-negative integer, got "
                          f"{value!r}", path, line, col)
    return int(value)


def labels(column: pd.Series) -> Tuple[np.ndarray, np.ndarray]:
    """The stripped distinct values (object array) of a "category" column and each
    row's index into them (-1 where pandas filled in a missing field)."""
    return (column.cat.categories.astype(str).str.strip().to_numpy(object),
            column.cat.codes.to_numpy(np.int64))


def _duplicate_error(path: str, header: Sequence[str], column: str,
                     value: int) -> NoReturn:
    """The RawLogError naming the first repeat of integer `value` in `column`."""
    first = None
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        index = list(header).index(column)
        next(reader)
        for fields in reader:
            if fields and _UINT.match(fields[index].strip()) and \
                    int(fields[index]) == value:
                if first is not None:
                    raise RawLogError(f"duplicate {column} {value} (first at row "
                                      f"{first})", path, reader.line_num, column)
                first = reader.line_num
    raise RawLogError(f"duplicate {column} {value}", path, None, column)


# --- ad_feature.csv → items.csv -----------------------------------------------------
class AdCatalog:
    """The ad groups of ad_feature.csv, in file order, with a sorted index."""

    def __init__(self, ids, categories, brands, prices, brand_null: int):
        self.ids, self.categories, self.brands, self.prices = (ids, categories, brands,
                                                               prices)
        self.brand_null = brand_null
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    def index(self, item_ids: np.ndarray) -> np.ndarray:
        """Catalog index of each id, -1 for ids not in ad_feature.csv."""
        if len(self._sorted) == 0:
            return np.full(len(item_ids), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, item_ids), len(self._sorted) - 1)
        return np.where(self._sorted[pos] == item_ids, self._order[pos], -1)


def _check_ad_row(path: str) -> Callable:
    def check(row: dict, line: int) -> None:
        for col in ("adgroup_id", "cate_id", "campaign_id", "customer"):
            _uint(row[col], path, line, col)
        if row["brand"] not in (BRAND_NULL, "") and not _UINT.match(row["brand"]):
            raise RawLogError(f"brand must be a non-negative integer or {BRAND_NULL}, "
                              f"got {row['brand']!r}", path, line, "brand")
        try:
            price = float(row["price"])
        except ValueError:
            price = float("nan")
        if not np.isfinite(price) or price < 0:
            raise RawLogError(f"price must be a finite number >= 0, got "
                              f"{row['price']!r}", path, line, "price")
    return check


def _convert_items(path: str, header, out_path: str) -> AdCatalog:
    """ad_feature.csv → items.csv, row by row (the csv module: exact field counts and
    line numbers; the file is small), and the catalog arrays."""
    check = _check_ad_row(path)
    ids, cats, brands, prices = (array("q"), array("q"), array("q"), array("d"))
    lines: List[str] = []
    with open(out_path, "w", newline="") as out:
        out.write(",".join(ITEM_COLUMNS) + "\n")
        for line, index, fields in iter_csv(path):
            row = {c: fields[index[c]].strip() for c in AD_FEATURE_COLUMNS}
            check(row, line)
            item, cat = int(row["adgroup_id"]), int(row["cate_id"])
            brand = -1 if row["brand"] in (BRAND_NULL, "") else int(row["brand"])
            price = float(row["price"])
            lines.append(f"{item},{cat},{'' if brand < 0 else brand},"
                         f"{int(row['customer'])},{row['price']},"
                         f"{int(row['campaign_id'])}\n")
            ids.append(item)
            cats.append(cat)
            brands.append(brand)
            prices.append(price)
            if len(lines) == WRITE_BLOCK:
                out.write("".join(lines))
                lines.clear()
        out.write("".join(lines))
    ids = np.frombuffer(ids, dtype=np.int64) if len(ids) else np.zeros(0, np.int64)
    if len(ids) == 0:
        raise RawLogError("the file has a header but no data rows", path)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        _duplicate_error(path, header, "adgroup_id", int(uniq[counts > 1][0]))
    brands = np.frombuffer(brands, dtype=np.int64)
    return AdCatalog(ids, np.frombuffer(cats, dtype=np.int64), brands,
                     np.frombuffer(prices, dtype=np.float64), int((brands < 0).sum()))


def _concat(parts: List[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


# --- user_profile.csv → users.csv ---------------------------------------------------
def _convert_users(path: str, header, out_path: str) -> dict:
    """user_profile.csv → users.csv, row by row (the csv module, as for items)."""
    ids = array("q")
    empty = dict.fromkeys(PROFILE_COLUMNS, 0)
    lines: List[str] = []
    with open(out_path, "w", newline="") as out:
        out.write(",".join(F.USERS_REQUIRED + PROFILE_COLUMNS) + "\n")
        for line, index, fields in iter_csv(path):
            user = _uint(fields[index[PROFILE_ID]].strip(), path, line, PROFILE_ID)
            values = [fields[index[c]].strip() for c in PROFILE_COLUMNS]
            for col, value in zip(PROFILE_COLUMNS, values):
                if not value:
                    empty[col] += 1
            lines.append(f"{user}," + ",".join(values) + "\n")
            ids.append(user)
            if len(lines) == WRITE_BLOCK:
                out.write("".join(lines))
                lines.clear()
        out.write("".join(lines))
    ids = np.frombuffer(ids, dtype=np.int64) if len(ids) else np.zeros(0, np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        _duplicate_error(path, header, PROFILE_ID, int(uniq[counts > 1][0]))
    return {"ids": uniq, "rows": int(len(ids)), "empty_values": empty}


# --- raw_sample.csv, pass 1: shards by user -----------------------------------------
def _check_sample_row(path: str) -> Callable:
    def check(row: dict, line: int) -> None:
        _uint(row["user"], path, line, "user")
        ts = _uint(row["time_stamp"], path, line, "time_stamp",
                   "time_stamp (unix seconds)")
        if ts >= MAX_TIMESTAMP:
            raise RawLogError(f"time_stamp must be below 2**32, got {ts}", path, line,
                              "time_stamp")
        _uint(row["adgroup_id"], path, line, "adgroup_id")
        if not row["pid"]:
            raise RawLogError("empty value", path, line, "pid")
        for col in ("clk", "nonclk"):
            if row[col] not in ("0", "1"):
                raise RawLogError(f"{col} must be 0 or 1, got {row[col]!r}", path,
                                  line, col)
        if int(row["nonclk"]) != 1 - int(row["clk"]):
            raise RawLogError(f"nonclk must be 1 - clk, got nonclk={row['nonclk']} "
                              f"clk={row['clk']}", path, line, "nonclk")
    return check


def _shard_of(users: np.ndarray, num_shards: int) -> np.ndarray:
    return ((users.astype(np.uint64) * _HASH) >> np.uint64(32)) % np.uint64(num_shards)


def _shard_raw_sample(path: str, header, shard_root: str, cfg: TaobaoConfig) -> dict:
    """Pass 1: checked rows of raw_sample.csv appended to `num_shards` binary files by
    user hash. Returns the shard paths and the file's counts and time range."""
    check = _check_sample_row(path)
    dtype = {"user": np.int64, "time_stamp": np.int64, "adgroup_id": np.int64,
             "pid": CATEGORY, "nonclk": np.int64, "clk": np.int64}
    shard_paths = [os.path.join(shard_root, f"shard-{k:05d}.bin")
                   for k in range(cfg.num_shards)]
    files = [open(p, "wb") for p in shard_paths]
    rows, clicks, first_ts, last_ts = 0, 0, None, None
    pids: Dict[str, int] = {}
    try:
        for start, chunk in _chunks(path, header, dtype, cfg.chunk_rows, check):
            user = chunk["user"].to_numpy()
            ts = chunk["time_stamp"].to_numpy()
            item = chunk["adgroup_id"].to_numpy()
            clk = chunk["clk"].to_numpy()
            pid_labels, pid = labels(chunk["pid"])
            ok = ((user >= 0) & (ts >= 0) & (ts < MAX_TIMESTAMP) & (item >= 0)
                  & ((clk == 0) | (clk == 1))
                  & (chunk["nonclk"].to_numpy() == 1 - clk)
                  & (pid >= 0) & (pid_labels != "")[pid])
            if not ok.all():
                find_bad_row(path, header, start, len(chunk), check, "bad value")
            rec = np.empty(len(chunk), dtype=_SHARD_ROW)
            rec["user"], rec["ts"], rec["item"], rec["clk"] = user, ts, item, clk
            shard = _shard_of(user, cfg.num_shards)
            order = np.argsort(shard, kind="stable")
            bounds = np.searchsorted(shard[order], np.arange(cfg.num_shards + 1))
            for k in np.flatnonzero(np.diff(bounds)):
                rec[order[bounds[k]:bounds[k + 1]]].tofile(files[k])
            for label, n in zip(pid_labels, np.bincount(pid, minlength=len(pid_labels))):
                pids[label] = pids.get(label, 0) + int(n)
            rows += len(chunk)
            clicks += int(clk.sum())
            lo, hi = int(ts.min()), int(ts.max())
            first_ts = lo if first_ts is None else min(first_ts, lo)
            last_ts = hi if last_ts is None else max(last_ts, hi)
    finally:
        for f in files:
            f.close()
    if rows == 0:
        raise RawLogError("the file has a header but no data rows", path)
    return {"paths": shard_paths, "rows": rows, "clicks": clicks, "pids": pids,
            "first_timestamp": first_ts, "last_timestamp": last_ts}


def _local_day_start(ts: int, offset_s: int) -> int:
    """First second (UTC) of the local day (UTC + offset_s) holding `ts`."""
    return (ts + offset_s) // DAY_S * DAY_S - offset_s


# --- raw_sample.csv, pass 2: requests, triggers, impressions, behaviours ------------
def _convert_requests(sharded: dict, catalog: AdCatalog, profiles: dict, cut: int,
                      cooc_cut: int, out_dir: str, cfg: TaobaoConfig) -> dict:
    """Pass 2, one shard at a time: write impressions.csv and behaviors.csv; return
    the counts (train/eval by `cut`) and the train-period (before `cooc_cut`)
    (item, user, weight) co-occurrence triples."""
    day0 = _local_day_start(sharded["first_timestamp"], cfg.utc_offset_s)
    n_days = (_local_day_start(sharded["last_timestamp"], cfg.utc_offset_s)
              - day0) // DAY_S + 1
    c = _Counts(n_days)
    cooc: Tuple[List[np.ndarray], ...] = ([], [], [])  # items, users, weights
    user_offset = 0
    imp_cols = F.IMPRESSIONS_REQUIRED
    beh_cols = F.BEHAVIORS_REQUIRED + F.BEHAVIORS_OPTIONAL
    with open(os.path.join(out_dir, F.IMPRESSIONS_FILE), "w", newline="") as fi, \
            open(os.path.join(out_dir, F.BEHAVIORS_FILE), "w", newline="") as fb:
        fi.write(",".join(imp_cols) + "\n")
        fb.write(",".join(beh_cols) + "\n")
        for path in sharded["paths"]:
            rec = np.fromfile(path, dtype=_SHARD_ROW)
            os.remove(path)
            if len(rec) == 0:
                continue
            shard = _Shard(rec, catalog, cfg)
            shard.count(c, profiles["ids"], cut, cooc_cut, day0)
            shard.write(fi, fb)
            for parts, array_ in zip(cooc, shard.cooccurrence(cooc_cut, user_offset,
                                                              cfg)):
                parts.append(array_)
            user_offset += shard.num_users
    out = c.as_dict(day0, cfg.utc_offset_s)
    # a list, which item_vectors empties; each array joined, then its parts freed
    out["cooc"] = []
    for parts, dtype in zip(cooc, (np.int32, np.int32, np.float32)):
        out["cooc"].append(np.concatenate(parts) if parts else np.zeros(0, dtype))
        parts.clear()
    return out


class _Counts:
    """What pass 2 counts, summed over the shards."""

    def __init__(self, n_days: int):
        self.n = dict.fromkeys((
            "users", "requests", "requests_kept", "requests_train", "requests_eval",
            "triggers_tied", "impressions_kept", "clicks_kept", "target_is_trigger",
            "clicks", "unknown_item_impressions", "unknown_item_clicks",
            "unknown_item_triggers", "users_kept", "users_kept_without_profile",
            "impressions_train_period"), 0)
        self.gap = np.zeros(len(GAP_EDGES_S), dtype=np.int64)
        self.impressions_per_day = np.zeros(n_days, dtype=np.int64)
        self.requests_kept_per_day = np.zeros(n_days, dtype=np.int64)
        self.unknown_items: List[np.ndarray] = []

    def as_dict(self, day0: int, offset_s: int) -> dict:
        days = [datetime.fromtimestamp(day0 + offset_s + d * DAY_S, timezone.utc)
                .date().isoformat() for d in range(len(self.impressions_per_day))]
        unknown = (np.unique(np.concatenate(self.unknown_items)) if self.unknown_items
                   else np.zeros(0))
        edges = list(GAP_EDGES_S)
        bins = [f"[{a}, {b})" for a, b in zip(edges[:-1], edges[1:])] + [
            f"[{edges[-1]}, window]"]
        return dict(self.n, unknown_items=int(len(unknown)),
                    trigger_gap_s=dict(zip(bins, self.gap.tolist())),
                    impressions_per_local_day=dict(zip(
                        days, self.impressions_per_day.tolist())),
                    requests_kept_per_local_day=dict(zip(
                        days, self.requests_kept_per_day.tolist())))


class _Shard:
    """One shard's rows sorted by (user, time, adgroup, clk), grouped into requests,
    with each request's trigger (the user's latest click between trigger_window_s and
    trigger_min_gap_s before it; ties in a second: the largest adgroup_id)."""

    def __init__(self, rec: np.ndarray, catalog: AdCatalog, cfg: TaobaoConfig):
        rec = rec[np.lexsort((rec["clk"], rec["item"], rec["ts"], rec["user"]))]
        self.user, self.ts, self.item = rec["user"], rec["ts"], rec["item"]
        self.clk = rec["clk"].astype(np.int64)
        uidx = np.cumsum(np.r_[True, self.user[1:] != self.user[:-1]]) - 1
        self.uidx, self.num_users = uidx, int(uidx[-1]) + 1
        key = (uidx << 32) | self.ts
        first = np.r_[True, key[1:] != key[:-1]]
        self.req_of_row = np.cumsum(first) - 1
        req = np.flatnonzero(first)
        self.req_ts, req_user = self.ts[req], uidx[req]
        clicked = self.clk == 1
        ckey, cuser, cts, citem = key[clicked], uidx[clicked], self.ts[clicked], \
            self.item[clicked]
        # the last click with (same user and) ts' <= ts - min_gap, then the window
        j = np.searchsorted(ckey, key[req] - (cfg.trigger_min_gap_s - 1), "left") - 1
        jj = np.maximum(j, 0)
        if len(ckey):
            self.gap = self.req_ts - cts[jj]
            self.has = (j >= 0) & (cuser[jj] == req_user) & (
                self.gap <= cfg.trigger_window_s)
            self.trigger = citem[jj]
            # another ad clicked in the trigger's second: the first click of that key
            first_of_key = np.searchsorted(ckey, ckey[jj], "left")
            self.tied = self.has & (citem[first_of_key] != citem[jj])
        else:
            self.gap = np.zeros(len(req), np.int64)
            self.has = self.tied = np.zeros(len(req), bool)
            self.trigger = np.zeros(len(req), np.int64)
        self.keep = self.has[self.req_of_row]
        self.cat = catalog.index(self.item)
        self.trigger_cat = catalog.index(self.trigger)

    def count(self, c: _Counts, profile_ids: np.ndarray, cut: int, cooc_cut: int,
              day0: int) -> None:
        n, has, keep = c.n, self.has, self.keep
        trig_row = self.trigger[self.req_of_row]
        n["users"] += self.num_users
        n["requests"] += len(has)
        n["requests_kept"] += int(has.sum())
        n["requests_eval"] += int((has & (self.req_ts >= cut)).sum())
        n["requests_train"] += int((has & (self.req_ts < cut)).sum())
        n["triggers_tied"] += int(self.tied.sum())
        n["impressions_kept"] += int(keep.sum())
        n["clicks_kept"] += int(self.clk[keep].sum())
        n["clicks"] += int(self.clk.sum())
        n["target_is_trigger"] += int((keep & (self.item == trig_row)).sum())
        n["impressions_train_period"] += int((self.ts < cooc_cut).sum())
        unknown = self.cat < 0
        n["unknown_item_impressions"] += int(unknown.sum())
        n["unknown_item_clicks"] += int(self.clk[unknown].sum())
        n["unknown_item_triggers"] += int((has & (self.trigger_cat < 0)).sum())
        if unknown.any():
            c.unknown_items.append(np.unique(self.item[unknown]))
        kept_users = np.unique(self.user[keep])
        n["users_kept"] += len(kept_users)
        if len(profile_ids):
            pos = np.minimum(np.searchsorted(profile_ids, kept_users),
                             len(profile_ids) - 1)
            n["users_kept_without_profile"] += int(
                (profile_ids[pos] != kept_users).sum())
        else:
            n["users_kept_without_profile"] += len(kept_users)
        bins = np.searchsorted(np.asarray(GAP_EDGES_S), self.gap[has], "right") - 1
        c.gap += np.bincount(bins, minlength=len(GAP_EDGES_S))
        c.impressions_per_day += np.bincount((self.ts - day0) // DAY_S,
                                             minlength=len(c.impressions_per_day))
        c.requests_kept_per_day += np.bincount(
            (self.req_ts[has] - day0) // DAY_S, minlength=len(c.requests_kept_per_day))

    def write(self, fi, fb) -> None:
        """Append the kept impressions and all clicks (as behaviours)."""
        keep = self.keep
        u, t = self.user[keep], self.ts[keep]
        _write_rows(fi, "%d_%d,%d,%d,%d,%d,%d\n", (
            u, t, u, t, self.trigger[self.req_of_row][keep], self.item[keep],
            self.clk[keep]))
        clicked = self.clk == 1
        _write_rows(fb, "%d,%d,%d," + F.DEFAULT_BEHAVIOR + "\n", (
            self.user[clicked], self.item[clicked], self.ts[clicked]))

    def cooccurrence(self, cut: int, user_offset: int, cfg: TaobaoConfig
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Train-period (catalog index, global user index, weight) per distinct
        (item, user) pair: weight = impression_weight * impressions + click_weight *
        clicks."""
        m = (self.ts < cut) & (self.cat >= 0)
        key = (self.uidx[m] << 32) | self.cat[m]
        pairs, inverse = np.unique(key, return_inverse=True)
        weight = np.bincount(inverse, weights=cfg.impression_weight
                             + cfg.click_weight * self.clk[m], minlength=len(pairs))
        return ((pairs & 0xFFFFFFFF).astype(np.int32),
                ((pairs >> 32) + user_offset).astype(np.int32), weight.astype(np.float32))


def _write_rows(f, fmt: str, columns: Sequence[np.ndarray], block: int = 100_000
                ) -> None:
    """Write int columns as CSV lines formatted by `fmt`, `block` rows at a time."""
    n = len(columns[0])
    for s in range(0, n, block):
        rows = np.column_stack([c[s:s + block] for c in columns]).tolist()
        f.write("".join(fmt % tuple(r) for r in rows))


# --- behavior_log.csv: counted, not converted ---------------------------------------
def _count_behavior_log(path: str, header, cfg: TaobaoConfig) -> dict:
    if not cfg.count_behavior_log:
        return {"rows": None, "rows_per_btag": None,
                "note": "not read (taobao.count_behavior_log: false)"}

    def check(row: dict, line: int) -> None:
        if not row["btag"]:
            raise RawLogError("empty value", path, line, "btag")

    per_btag: Dict[str, int] = {}
    rows = 0
    for start, chunk in _chunks(path, header, {"btag": CATEGORY}, cfg.chunk_rows,
                                check):
        tags, codes = labels(chunk["btag"])
        if not ((codes >= 0) & (tags != "")[codes]).all():
            find_bad_row(path, header, start, len(chunk), check, "empty btag")
        for tag, k in zip(tags, np.bincount(codes, minlength=len(tags))):
            per_btag[tag] = per_btag.get(tag, 0) + int(k)
        rows += len(chunk)
    return {"rows": rows, "rows_per_btag": dict(sorted(per_btag.items()))}


# --- the report ---------------------------------------------------------------------
def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None).isoformat()


def _report(src_dir, out_dir, cfg: TaobaoConfig, catalog: AdCatalog, profiles: dict,
            sharded: dict, j: dict, cut: int, cooc_cut: int, embedding: dict,
            behavior_log: dict) -> dict:
    dropped_requests = j["requests"] - j["requests_kept"]
    return {
        "source_dir": os.path.abspath(src_dir),
        "out_dir": os.path.abspath(out_dir),
        "raw_sample": {
            "rows": sharded["rows"], "clicks": sharded["clicks"],
            "ctr": sharded["clicks"] / sharded["rows"], "users": j["users"],
            "first_timestamp": sharded["first_timestamp"],
            "last_timestamp": sharded["last_timestamp"],
            "rows_per_pid": dict(sorted(sharded["pids"].items())),
            "impressions_per_local_day": j["impressions_per_local_day"],
        },
        "requests": {
            "total": j["requests"], "kept": j["requests_kept"],
            "dropped_no_trigger": dropped_requests,
            "train": j["requests_train"], "eval": j["requests_eval"],
            "triggers_tied": j["triggers_tied"],
            "trigger_gap_s": j["trigger_gap_s"],
            "kept_per_local_day": j["requests_kept_per_local_day"],
        },
        "impressions": {
            "written": j["impressions_kept"],
            "dropped_no_trigger": sharded["rows"] - j["impressions_kept"],
            "clicks_written": j["clicks_kept"],
            "clicks_dropped_no_trigger": j["clicks"] - j["clicks_kept"],
            "target_is_trigger": j["target_is_trigger"],
        },
        "behaviors": {
            "clicks_written": j["clicks"],
            "behavior_log_dropped": behavior_log,
        },
        "items": {
            "written": int(len(catalog.ids)),
            "brand_unknown": catalog.brand_null,
            "adgroups_not_in_ad_feature": j["unknown_items"],
            "impressions_of_those": j["unknown_item_impressions"],
            "clicks_of_those": j["unknown_item_clicks"],
            "kept_requests_with_such_trigger": j["unknown_item_triggers"],
        },
        "users": {
            "profiles_written": profiles["rows"],
            "user_columns": list(PROFILE_COLUMNS),
            "empty_values_per_column": profiles["empty_values"],
            "users_with_kept_requests": j["users_kept"],
            "users_with_kept_requests_without_profile": j["users_kept_without_profile"],
        },
        "embedding": dict(embedding, dim=cfg.embedding_dim,
                          train_period_impressions=j["impressions_train_period"]),
        "cooccurrence_until": _iso(cooc_cut),
        "cooccurrence_until_timestamp": cooc_cut,
        # what configs/taobao.yaml sets: the cut as the eval split's start, a history
        # window covering the whole data
        "samples": {"user_columns": list(PROFILE_COLUMNS), "eval_start": _iso(cut),
                    "history_days": len(j["impressions_per_local_day"]),
                    "trigger_window_s": cfg.trigger_window_s},
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
    }
