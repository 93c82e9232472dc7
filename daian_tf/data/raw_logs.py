"""Reading and validating the raw TIR logs of spec/DATA.md §1.

Two kinds of checks:
- file level (`inspect_raw_dir`), run eagerly before any pipeline starts: a missing or
  empty file, a missing required column, a configured user column that users.csv lacks;
- row level (`read_*`), streamed row by row inside the Beam pipeline: each bad value is
  a `RawLogError` naming the file, the row and the column.

CSV rows are numbered by line (header = 1; `csv.reader.line_num`, so a quoted multi-line
field counts its lines); parquet rows by their 1-based record index. Files are opened
through `apache_beam.io.filesystems.FileSystems`, so `gs://`, `s3://` and `hdfs://`
directories work as local ones do, and `.gz` files are decompressed on the fly.

Values of optional item columns that are absent or empty become `""` (brand, shop) or
`0.0` (price). The behaviour type defaults to `click` when its column is absent or empty.
"""

from __future__ import annotations

import base64
import csv
import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from apache_beam.io.filesystems import FileSystems

from daian_tf.data import features as F
from daian_tf.errors import RawLogError

_UINT = re.compile(r"^[0-9]+$")


# --- records ----------------------------------------------------------------------
class Impression(NamedTuple):
    """One row of impressions.csv (`row` is its line number)."""

    request_id: str
    user_id: str
    timestamp: int
    trigger_item_id: str  # "" when the trigger is to be derived
    item_id: str
    clicked: int
    position: Optional[int]
    row: int


class Behavior(NamedTuple):
    """One row of behaviors.csv."""

    user_id: str
    item_id: str
    timestamp: int
    behavior: str
    row: int


class UserProfile(NamedTuple):
    """One row of users.csv: the configured profile columns, in config order."""

    user_id: str
    values: Tuple[str, ...]
    row: int


class Truth(NamedTuple):
    """One row of truth.csv (simulator only)."""

    request_id: str
    item_id: str
    p_click: float
    row: int


class ItemSide(NamedTuple):
    """Side features of one catalog item (items.csv)."""

    category_id: str
    brand_id: str
    shop_id: str
    price: float


UNKNOWN_ITEM = ItemSide("", "", "", 0.0)


# --- file-level checks ------------------------------------------------------------
@dataclass(frozen=True)
class RawLayout:
    """What `inspect_raw_dir` found: the files present and their headers."""

    raw_dir: str
    headers: Dict[str, Tuple[str, ...]]  # csv file name -> header
    user_columns: Tuple[str, ...]

    def path(self, name: str) -> str:
        return FileSystems.join(self.raw_dir, name)

    def has(self, name: str) -> bool:
        return name in self.headers or (
            name == F.EMBEDDINGS_FILE and FileSystems.exists(self.path(name)))

    @property
    def has_position(self) -> bool:
        return F.POSITION in self.headers[F.IMPRESSIONS_FILE]

    @property
    def has_truth(self) -> bool:
        return F.TRUTH_FILE in self.headers


_CSV_FILES = (
    # name, required columns, required?, may it have no data rows?
    (F.ITEMS_FILE, F.ITEMS_REQUIRED, True, False),
    (F.IMPRESSIONS_FILE, F.IMPRESSIONS_REQUIRED, True, False),
    (F.BEHAVIORS_FILE, F.BEHAVIORS_REQUIRED, True, True),
    (F.USERS_FILE, F.USERS_REQUIRED, False, True),
    (F.TRUTH_FILE, F.TRUTH_REQUIRED, False, True),
)


def _lines(handle, path: str) -> Iterator[str]:
    """Decoded lines of a binary file handle (plain or FileSystems' CompressedFile,
    which io.TextIOWrapper cannot wrap); a UTF-8 byte-order mark is dropped."""
    for k, line in enumerate(iter(handle.readline, b"")):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RawLogError(f"not UTF-8 text: {e}", path, k + 1) from None
        yield text.lstrip("\ufeff") if k == 0 else text


def _csv_reader(path: str):
    """A csv.reader streaming `path` line by line, and the open file to close."""
    handle = FileSystems.open(path)
    return csv.reader(_lines(handle, path)), handle


def _read_header(path: str, allow_no_rows: bool) -> Tuple[str, ...]:
    reader, text = _csv_reader(path)
    with text:
        try:
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise RawLogError("the file is empty (no header line)", path, 1)
            if not allow_no_rows and not any(row for row in reader):
                raise RawLogError("the file has a header but no data rows", path)
        except csv.Error as e:
            raise RawLogError(f"unparseable CSV: {e}", path, reader.line_num) from None
    header = tuple(h.strip() for h in header)
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise RawLogError(f"duplicate column name(s) {dupes} in the header", path, 1)
    return header


def inspect_raw_dir(raw_dir: str, user_columns: Sequence[str] = ()) -> RawLayout:
    """Eager file-level checks of a raw-log directory (DATA.md §1).

    Raises:
      RawLogError: a required file is missing or empty, a required column is missing,
        the embeddings file lacks its columns or rows, or a configured user column is
        not in users.csv.
    """
    headers: Dict[str, Tuple[str, ...]] = {}
    for name, required, must_exist, allow_no_rows in _CSV_FILES:
        path = FileSystems.join(raw_dir, name)
        if not FileSystems.exists(path):
            if must_exist:
                raise RawLogError("required file is missing", path)
            continue
        header = _read_header(path, allow_no_rows)
        missing = [c for c in required if c not in header]
        if missing:
            raise RawLogError(f"missing required column(s) {missing}; the header has "
                              f"{list(header)}", path, 1, missing[0])
        headers[name] = header
    user_columns = tuple(user_columns)
    if user_columns and F.USERS_FILE in headers:
        missing = [c for c in user_columns if c not in headers[F.USERS_FILE]]
        if missing:
            raise RawLogError(
                f"configured user column(s) {missing} (samples.user_columns) are not in "
                f"the header {list(headers[F.USERS_FILE])}",
                FileSystems.join(raw_dir, F.USERS_FILE), 1, missing[0])
    _check_embeddings_file(FileSystems.join(raw_dir, F.EMBEDDINGS_FILE))
    return RawLayout(raw_dir, headers, user_columns)


def _check_embeddings_file(path: str) -> None:
    import pyarrow.parquet as pq

    if not FileSystems.exists(path):
        raise RawLogError("required file is missing", path)
    with FileSystems.open(path) as f:
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:  # noqa: BLE001 - any pyarrow failure means unreadable
            raise RawLogError(f"not a readable parquet file: {e}", path) from None
        names = pf.schema_arrow.names
        num_rows = pf.metadata.num_rows
    missing = [c for c in F.EMBEDDINGS_COLUMNS if c not in names]
    if missing:
        raise RawLogError(f"missing required column(s) {missing}; the file has {names}",
                          path, None, missing[0])
    if num_rows == 0:
        raise RawLogError("the file has no rows", path)


# --- row-level reading ------------------------------------------------------------
def iter_csv(path: str) -> Iterator[Tuple[int, Dict[str, int], List[str]]]:
    """Yield `(line, column_index, fields)` per data row of a CSV file.

    Blank lines are skipped. A row with the wrong number of fields, or one the csv
    module cannot parse, is a RawLogError naming its line.
    """
    reader, text = _csv_reader(path)
    with text:
        try:
            header = [h.strip() for h in next(reader)]
            index = {h: i for i, h in enumerate(header)}
            for fields in reader:
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise RawLogError(
                        f"expected {len(header)} fields (header {header}), got "
                        f"{len(fields)}", path, reader.line_num)
                yield reader.line_num, index, fields
        except csv.Error as e:
            raise RawLogError(f"unparseable CSV: {e}", path, reader.line_num) from None


def _nonempty(fields, index, col, path, line) -> str:
    value = fields[index[col]].strip()
    if not value:
        raise RawLogError("empty value", path, line, col)
    return value


def _optional(fields, index, col) -> str:
    return fields[index[col]].strip() if col in index else ""


def _timestamp(fields, index, col, path, line) -> int:
    value = fields[index[col]].strip()
    if not _UINT.match(value):
        raise RawLogError(f"timestamp must be a non-negative integer (unix seconds), "
                          f"got {value!r}", path, line, col)
    return int(value)


def _finite_float(value: str, path, line, col) -> float:
    try:
        x = float(value)
    except ValueError:
        raise RawLogError(f"not a number: {value!r}", path, line, col) from None
    if not math.isfinite(x):
        raise RawLogError(f"not a finite number: {value!r}", path, line, col)
    return x


def read_impressions(path: str) -> Iterator[Impression]:
    """Parse impressions.csv row by row (DATA.md §1)."""
    for line, index, fields in iter_csv(path):
        clicked = fields[index["clicked"]].strip()
        if clicked not in ("0", "1"):
            raise RawLogError(f"clicked must be 0 or 1, got {clicked!r}", path, line,
                              "clicked")
        position = None
        if F.POSITION in index:
            value = fields[index[F.POSITION]].strip()
            if not _UINT.match(value):
                raise RawLogError(f"position must be a non-negative integer, got "
                                  f"{value!r}", path, line, F.POSITION)
            position = int(value)
        yield Impression(
            request_id=_nonempty(fields, index, "request_id", path, line),
            user_id=_nonempty(fields, index, "user_id", path, line),
            timestamp=_timestamp(fields, index, "timestamp", path, line),
            trigger_item_id=fields[index["trigger_item_id"]].strip(),
            item_id=_nonempty(fields, index, "item_id", path, line),
            clicked=int(clicked), position=position, row=line)


def read_behaviors(path: str) -> Iterator[Behavior]:
    """Parse behaviors.csv row by row; `behavior` defaults to `click`."""
    for line, index, fields in iter_csv(path):
        behavior = F.DEFAULT_BEHAVIOR
        if "behavior" in index:
            behavior = fields[index["behavior"]].strip() or F.DEFAULT_BEHAVIOR
            if behavior not in F.BEHAVIOR_TYPES:
                raise RawLogError(f"unknown behavior type {behavior!r}; known: "
                                  f"{list(F.BEHAVIOR_TYPES)}", path, line, "behavior")
        yield Behavior(
            user_id=_nonempty(fields, index, "user_id", path, line),
            item_id=_nonempty(fields, index, "item_id", path, line),
            timestamp=_timestamp(fields, index, "timestamp", path, line),
            behavior=behavior, row=line)


def read_users(path: str, columns: Sequence[str]) -> Iterator[UserProfile]:
    """Parse users.csv, keeping `columns` (already checked to exist)."""
    for line, index, fields in iter_csv(path):
        yield UserProfile(_nonempty(fields, index, "user_id", path, line),
                          tuple(fields[index[c]].strip() for c in columns), line)


def read_truth(path: str) -> Iterator[Truth]:
    """Parse truth.csv (simulator only)."""
    for line, index, fields in iter_csv(path):
        p = _finite_float(fields[index["p_click"]].strip(), path, line, "p_click")
        if not 0.0 <= p <= 1.0:
            raise RawLogError(f"p_click must be in [0, 1], got {p}", path, line,
                              "p_click")
        yield Truth(_nonempty(fields, index, "request_id", path, line),
                    _nonempty(fields, index, "item_id", path, line), p, line)


# --- the catalog ------------------------------------------------------------------
class Catalog:
    """Items' side features and unit-normalised multimodal vectors, keyed by item id.

    Its size is the catalog's (items.csv and item_embeddings.parquet), never the logs';
    the sample builder passes it to its workers as a Beam side input.

    Attributes:
      items: item id -> ItemSide.
      stats: counts found while loading (items, embeddings, items_without_embedding,
        embeddings_for_unknown_items) and `embedding_dim`.
    """

    def __init__(self, items: Dict[str, ItemSide], embedding_ids: Sequence[str],
                 embeddings: np.ndarray):
        self.items = items
        self._row = {item: i for i, item in enumerate(embedding_ids)}
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        # (N, d_m) unit vectors; a zero vector stays zero, so its cosine is 0.
        self._unit = np.divide(embeddings, norms, out=np.zeros_like(embeddings),
                               where=norms > 0).astype(np.float32)
        self.stats = {
            "items": len(items),
            "embeddings": len(embedding_ids),
            "embedding_dim": int(embeddings.shape[1]),
            "items_without_embedding": sum(1 for i in items if i not in self._row),
            "embeddings_for_unknown_items": sum(1 for i in embedding_ids
                                                if i not in items),
        }

    def side(self, item_id: str) -> ItemSide:
        """Side features of `item_id`; an unknown item gets empty strings and 0.0."""
        return self.items.get(item_id, UNKNOWN_ITEM)

    def has_embedding(self, item_id: str) -> bool:
        return item_id in self._row

    def cos(self, a: str, b: str) -> float:
        """cos(m_a, m_b); 0.0 when either item has no (or a zero) vector."""
        ia, ib = self._row.get(a), self._row.get(b)
        if ia is None or ib is None:
            return 0.0
        return float(np.dot(self._unit[ia], self._unit[ib]))


def read_items(path: str) -> Dict[str, ItemSide]:
    """Parse items.csv into item id -> ItemSide; a duplicate id names both rows."""
    items: Dict[str, ItemSide] = {}
    first_row: Dict[str, int] = {}
    for line, index, fields in iter_csv(path):
        item = _nonempty(fields, index, "item_id", path, line)
        if item in items:
            raise RawLogError(f"duplicate item_id {item!r} (first at row "
                              f"{first_row[item]})", path, line, "item_id")
        price = _optional(fields, index, "price")
        items[item] = ItemSide(
            category_id=_nonempty(fields, index, "category_id", path, line),
            brand_id=_optional(fields, index, "brand_id"),
            shop_id=_optional(fields, index, "shop_id"),
            price=_finite_float(price, path, line, "price") if price else 0.0)
        first_row[item] = line
    return items


def read_embeddings(path: str) -> Tuple[List[str], np.ndarray]:
    """Parse item_embeddings.parquet into (ids, (N, d_m) float32), by record batches.

    Errors name the 1-based record index as the row: a null or empty id, a null vector,
    a vector whose length differs from the first row's, a NaN/inf entry, a duplicate id.
    """
    import pyarrow.parquet as pq

    ids: List[str] = []
    first_row: Dict[str, int] = {}
    chunks: List[np.ndarray] = []
    dim: Optional[int] = None
    with FileSystems.open(path) as f:
        pf = pq.ParquetFile(f)
        offset = 0
        for batch in pf.iter_batches(columns=list(F.EMBEDDINGS_COLUMNS)):
            batch_ids = batch.column(0).to_pylist()
            vectors = batch.column(1).to_pylist()
            for k, (item, vec) in enumerate(zip(batch_ids, vectors)):
                row = offset + k + 1
                item = "" if item is None else str(item).strip()
                if not item:
                    raise RawLogError("empty item_id", path, row, "item_id")
                if item in first_row:
                    raise RawLogError(f"duplicate embedding row for item_id {item!r} "
                                      f"(first at row {first_row[item]})", path, row,
                                      "item_id")
                if vec is None or len(vec) == 0:
                    raise RawLogError(f"missing embedding for item_id {item!r}", path,
                                      row, "embedding")
                if dim is None:
                    dim = len(vec)
                if len(vec) != dim:
                    raise RawLogError(f"embedding of item_id {item!r} has length "
                                      f"{len(vec)}, expected {dim} (the first row's)",
                                      path, row, "embedding")
                arr = np.asarray([np.nan if v is None else v for v in vec],
                                 dtype=np.float64)
                if not np.all(np.isfinite(arr)):
                    raise RawLogError(f"embedding of item_id {item!r} has NaN/inf/null "
                                      f"entries", path, row, "embedding")
                first_row[item] = row
                ids.append(item)
                chunks.append(arr.astype(np.float32))
            offset += batch.num_rows
    return ids, np.stack(chunks)


def load_catalog(layout: RawLayout) -> Catalog:
    """items.csv and item_embeddings.parquet of a checked raw directory."""
    items = read_items(layout.path(F.ITEMS_FILE))
    ids, vectors = read_embeddings(layout.path(F.EMBEDDINGS_FILE))
    return Catalog(items, ids, vectors)


# --- carrying a RawLogError through a Beam runner ----------------------------------
_MARK = re.compile(r"\[raw-log-error ([A-Za-z0-9+/=]+)\]")


def encode_error(err: RawLogError) -> str:
    """Text of `err` with a machine-readable tag that survives Beam's wrapping."""
    payload = json.dumps({"message": err.args[0], "file": err.file, "row": err.row,
                          "column": err.column}, sort_keys=True)
    tag = base64.b64encode(payload.encode("utf-8")).decode("ascii")
    return f"RawLogError: {err} [raw-log-error {tag}]"


def find_raw_log_error(exc: BaseException) -> Optional[RawLogError]:
    """The RawLogError at the root of an exception raised by a Beam runner, if any.

    Walks the cause/context chain; a worker error arrives as text (multi-process and
    remote runners), so the tag written by `encode_error` is parsed back.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        match = _MARK.search(str(exc))
        if match:
            return _rebuild(json.loads(base64.b64decode(match.group(1))))
        if isinstance(exc, RawLogError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


class RawLogErrorLogFilter(logging.Filter):
    """Drops the runner's own log record of a worker's RawLogError.

    Beam logs a failing element with its traceback before the error reaches the
    caller; for a raw-log error the caller re-raises it as one clear message
    (`find_raw_log_error`), so the traceback is noise. Other errors pass untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return _MARK.search(record.getMessage()) is None


def _rebuild(d: dict) -> RawLogError:
    err = RawLogError.__new__(RawLogError)
    err.file, err.row, err.column = d["file"], d["row"], d["column"]
    Exception.__init__(err, d["message"])
    return err
