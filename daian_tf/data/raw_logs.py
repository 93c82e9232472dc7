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

The behaviour type defaults to `click` when its column is absent or empty. The item
catalog (items.csv, item_embeddings.parquet) is read by `catalog`, with the field
helpers below; `raw_log_errors` carries a RawLogError across Beam workers.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems

from daian_tf.core import features as F
from daian_tf.core.errors import RawLogError

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


def nonempty(fields, index, col, path, line) -> str:
    """The stripped value of column `col`; an empty one is a RawLogError."""
    value = fields[index[col]].strip()
    if not value:
        raise RawLogError("empty value", path, line, col)
    return value


def optional(fields, index, col) -> str:
    """The stripped value of column `col`, or "" when the file has no such column."""
    return fields[index[col]].strip() if col in index else ""


def _timestamp(fields, index, col, path, line) -> int:
    value = fields[index[col]].strip()
    if not _UINT.match(value):
        raise RawLogError(f"timestamp must be a non-negative integer (unix seconds), "
                          f"got {value!r}", path, line, col)
    return int(value)


def finite_float(value: str, path, line, col) -> float:
    """`value` as a finite float; anything else is a RawLogError."""
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
            request_id=nonempty(fields, index, "request_id", path, line),
            user_id=nonempty(fields, index, "user_id", path, line),
            timestamp=_timestamp(fields, index, "timestamp", path, line),
            trigger_item_id=fields[index["trigger_item_id"]].strip(),
            item_id=nonempty(fields, index, "item_id", path, line),
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
            user_id=nonempty(fields, index, "user_id", path, line),
            item_id=nonempty(fields, index, "item_id", path, line),
            timestamp=_timestamp(fields, index, "timestamp", path, line),
            behavior=behavior, row=line)


def read_users(path: str, columns: Sequence[str]) -> Iterator[UserProfile]:
    """Parse users.csv, keeping `columns` (already checked to exist)."""
    for line, index, fields in iter_csv(path):
        yield UserProfile(nonempty(fields, index, "user_id", path, line),
                          tuple(fields[index[c]].strip() for c in columns), line)


def read_truth(path: str) -> Iterator[Truth]:
    """Parse truth.csv (simulator only)."""
    for line, index, fields in iter_csv(path):
        p = finite_float(fields[index["p_click"]].strip(), path, line, "p_click")
        if not 0.0 <= p <= 1.0:
            raise RawLogError(f"p_click must be in [0, 1], got {p}", path, line,
                              "p_click")
        yield Truth(nonempty(fields, index, "request_id", path, line),
                    nonempty(fields, index, "item_id", path, line), p, line)
