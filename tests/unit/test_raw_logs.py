"""Malformed raw logs (spec/DATA.md §1): each is an error naming file, row and column,
or a counted drop/fallback in the sample builder's report."""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from daian_tf.core import features as F
from daian_tf.data.catalog import read_embeddings, read_items
from daian_tf.data.raw_logs import (inspect_raw_dir, read_behaviors, read_impressions,
                                    read_users)
from daian_tf.data.sample_builder import run_build_samples
from daian_tf.core.errors import RawLogError
from daian_tf.core.config import SampleConfig
from daian_tf.core.names import SPLITS

DAY = 86400
T0 = 1_700_006_400 + 20 * DAY  # a UTC day boundary

ITEMS = ("item_id,category_id,brand_id,shop_id,price\n"
         "a,c1,b1,s1,1.5\n"
         "b,c1,b1,s1,2.0\n"
         "c,c2,b2,s2,3.0\n"
         "d,c3,b3,s1,4.0\n")
BEHAVIORS = ("user_id,item_id,timestamp,behavior\n"
             f"u1,a,{T0 - 100},click\n"
             f"u1,b,{T0 - 50},cart\n"
             f"u2,c,{T0 - 10},click\n")
IMPRESSIONS = ("request_id,user_id,timestamp,trigger_item_id,item_id,clicked\n"
               f"r1,u1,{T0},a,b,1\n"
               f"r1,u1,{T0},a,c,0\n"
               f"r2,u2,{T0 + 5},c,d,0\n")


def write_raw(root: Path, **files) -> str:
    """A small valid raw-log directory; keyword arguments replace files (text) or
    `embeddings` (dict id -> vector); None deletes the file."""
    texts = {F.ITEMS_FILE: ITEMS, F.BEHAVIORS_FILE: BEHAVIORS,
             F.IMPRESSIONS_FILE: IMPRESSIONS}
    for key, value in files.items():
        if key != "embeddings":
            texts[{"items": F.ITEMS_FILE, "behaviors": F.BEHAVIORS_FILE,
                   "impressions": F.IMPRESSIONS_FILE, "users": F.USERS_FILE}[key]] = value
    root.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        if text is not None:
            (root / name).write_text(text)
    emb = files.get("embeddings", {k: [1.0, 0.0, float(i)] for i, k in enumerate("abcd")})
    pq.write_table(pa.table({"item_id": list(emb),
                             "embedding": [list(map(float, v)) for v in emb.values()]}),
                   root / F.EMBEDDINGS_FILE)
    return str(root)


def assert_names(err: RawLogError, file: str, row, column, *phrases: str) -> None:
    msg = str(err)
    assert file in msg and err.file.endswith(file)
    assert err.row == row
    if row is not None:
        assert f"row {row}" in msg
    assert err.column == column
    if column is not None:
        assert repr(column) in msg
    for phrase in phrases:
        assert phrase in msg, msg


# --- file level (eager) ---------------------------------------------------------------
def test_missing_file(tmp_path):
    raw = write_raw(tmp_path, behaviors=None)
    with pytest.raises(RawLogError) as e:
        inspect_raw_dir(raw)
    assert_names(e.value, F.BEHAVIORS_FILE, None, None, "missing")


def test_empty_file(tmp_path):
    raw = write_raw(tmp_path, items="")
    with pytest.raises(RawLogError) as e:
        inspect_raw_dir(raw)
    assert_names(e.value, F.ITEMS_FILE, 1, None, "empty")


def test_header_only_impressions(tmp_path):
    raw = write_raw(tmp_path, impressions=IMPRESSIONS.splitlines()[0] + "\n")
    with pytest.raises(RawLogError, match="no data rows"):
        inspect_raw_dir(raw)


def test_missing_required_column(tmp_path):
    text = "\n".join(",".join(line.split(",")[:-1]) for line in IMPRESSIONS.splitlines())
    raw = write_raw(tmp_path, impressions=text + "\n")
    with pytest.raises(RawLogError) as e:
        inspect_raw_dir(raw)
    assert_names(e.value, F.IMPRESSIONS_FILE, 1, "clicked", "missing required column")


def test_configured_user_column_missing(tmp_path):
    raw = write_raw(tmp_path, users="user_id,gender\nu1,F\n")
    with pytest.raises(RawLogError) as e:
        inspect_raw_dir(raw, ["gender", "segment"])
    assert_names(e.value, F.USERS_FILE, 1, "segment", "samples.user_columns")


# --- row level ---------------------------------------------------------------------
@pytest.mark.parametrize("value, phrase", [("12.5", "non-negative integer"),
                                           ("-7", "non-negative integer"),
                                           ("", "non-negative integer"),
                                           ("noon", "'noon'")])
def test_bad_timestamp(tmp_path, value, phrase):
    raw = write_raw(tmp_path, behaviors=BEHAVIORS + f"u2,a,{value},click\n")
    with pytest.raises(RawLogError) as e:
        list(read_behaviors(os.path.join(raw, F.BEHAVIORS_FILE)))
    assert_names(e.value, F.BEHAVIORS_FILE, 5, "timestamp", phrase)


def test_clicked_not_binary(tmp_path):
    raw = write_raw(tmp_path, impressions=IMPRESSIONS.replace(",c,0\n", ",c,2\n"))
    with pytest.raises(RawLogError) as e:
        list(read_impressions(os.path.join(raw, F.IMPRESSIONS_FILE)))
    assert_names(e.value, F.IMPRESSIONS_FILE, 3, "clicked", "0 or 1", "'2'")


def test_empty_ids(tmp_path):
    raw = write_raw(tmp_path, impressions=IMPRESSIONS + f",u2,{T0},c,d,0\n")
    with pytest.raises(RawLogError) as e:
        list(read_impressions(os.path.join(raw, F.IMPRESSIONS_FILE)))
    assert_names(e.value, F.IMPRESSIONS_FILE, 5, "request_id", "empty")
    raw = write_raw(tmp_path / "b", behaviors=BEHAVIORS + f",a,{T0},click\n")
    with pytest.raises(RawLogError) as e:
        list(read_behaviors(os.path.join(raw, F.BEHAVIORS_FILE)))
    assert_names(e.value, F.BEHAVIORS_FILE, 5, "user_id", "empty")


def test_ragged_row(tmp_path):
    raw = write_raw(tmp_path, impressions=IMPRESSIONS + f"r3,u2,{T0},c,d\n")
    with pytest.raises(RawLogError) as e:
        list(read_impressions(os.path.join(raw, F.IMPRESSIONS_FILE)))
    assert_names(e.value, F.IMPRESSIONS_FILE, 5, None, "expected 6 fields", "got 5")


def test_quoted_multiline_field_counts_lines(tmp_path):
    # The title spans two physical lines, so the bad price sits on line 4.
    items = ("item_id,category_id,price,title\n"
             'a,c1,1.0,"two\nlines"\n'
             "b,c1,cheap,x\n")
    raw = write_raw(tmp_path, items=items)
    with pytest.raises(RawLogError) as e:
        read_items(os.path.join(raw, F.ITEMS_FILE))
    assert_names(e.value, F.ITEMS_FILE, 4, "price", "not a number", "'cheap'")


def test_duplicate_item(tmp_path):
    raw = write_raw(tmp_path, items=ITEMS + "b,c9,b9,s9,9.0\n")
    with pytest.raises(RawLogError) as e:
        read_items(os.path.join(raw, F.ITEMS_FILE))
    assert_names(e.value, F.ITEMS_FILE, 6, "item_id", "duplicate", "'b'",
                 "first at row 3")


def test_non_numeric_and_infinite_price(tmp_path):
    raw = write_raw(tmp_path, items=ITEMS + "e,c1,b1,s1,inf\n")
    with pytest.raises(RawLogError) as e:
        read_items(os.path.join(raw, F.ITEMS_FILE))
    assert_names(e.value, F.ITEMS_FILE, 6, "price", "finite")


def test_missing_optional_item_columns_default(tmp_path):
    raw = write_raw(tmp_path, items="item_id,category_id\na,c1\nb,c2\n")
    items = read_items(os.path.join(raw, F.ITEMS_FILE))
    assert (items["b"].category_id, items["b"].brand_id, items["b"].shop_id,
            items["b"].price) == ("c2", "", "", 0.0)


def test_embedding_wrong_length(tmp_path):
    raw = write_raw(tmp_path, embeddings={"a": [1, 0, 0], "b": [0, 1, 0],
                                          "c": [1, 1], "d": [0, 0, 1]})
    with pytest.raises(RawLogError) as e:
        read_embeddings(os.path.join(raw, F.EMBEDDINGS_FILE))
    assert_names(e.value, F.EMBEDDINGS_FILE, 3, "embedding", "length 2", "expected 3")


def test_embedding_nan(tmp_path):
    raw = write_raw(tmp_path, embeddings={"a": [1, 0, 0], "b": [0, math.nan, 0]})
    with pytest.raises(RawLogError) as e:
        read_embeddings(os.path.join(raw, F.EMBEDDINGS_FILE))
    assert_names(e.value, F.EMBEDDINGS_FILE, 2, "embedding", "NaN")


def test_duplicate_embedding_rows(tmp_path):
    root = tmp_path / "raw"
    raw = write_raw(root)
    pq.write_table(pa.table({"item_id": ["a", "b", "a"],
                             "embedding": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]}),
                   root / F.EMBEDDINGS_FILE)
    with pytest.raises(RawLogError) as e:
        read_embeddings(os.path.join(raw, F.EMBEDDINGS_FILE))
    assert_names(e.value, F.EMBEDDINGS_FILE, 3, "item_id", "duplicate", "first at row 1")


def test_unknown_behavior_type_and_default(tmp_path):
    raw = write_raw(tmp_path, behaviors=BEHAVIORS + f"u1,c,{T0 - 5},share\n")
    with pytest.raises(RawLogError) as e:
        list(read_behaviors(os.path.join(raw, F.BEHAVIORS_FILE)))
    assert_names(e.value, F.BEHAVIORS_FILE, 5, "behavior", "'share'")
    # absent column and empty value both mean 'click'
    raw = write_raw(tmp_path / "b", behaviors=f"user_id,item_id,timestamp\nu1,a,{T0}\n")
    assert [b.behavior for b in read_behaviors(os.path.join(raw, F.BEHAVIORS_FILE))] \
        == ["click"]
    raw = write_raw(tmp_path / "c", behaviors=BEHAVIORS + f"u1,c,{T0 - 5},\n")
    assert [b.behavior for b in read_behaviors(os.path.join(raw, F.BEHAVIORS_FILE))][-1] \
        == "click"


def test_gzipped_csv_is_read(tmp_path):
    path = tmp_path / "behaviors.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write(BEHAVIORS)
    assert [b.item_id for b in read_behaviors(str(path))] == ["a", "b", "c"]


def test_users_csv_columns(tmp_path):
    raw = write_raw(tmp_path, users="user_id,gender,segment\nu1,F,broad\nu2,,specific\n")
    users = list(read_users(os.path.join(raw, F.USERS_FILE), ("segment", "gender")))
    assert [(u.user_id, u.values, u.row) for u in users] == [
        ("u1", ("broad", "F"), 2), ("u2", ("specific", ""), 3)]


# --- through the pipeline ------------------------------------------------------------
def test_disagreeing_request_rows_raise_clean_error(tmp_path):
    bad = IMPRESSIONS + f"r1,u1,{T0 + 1},a,d,0\n"
    raw = write_raw(tmp_path / "raw", impressions=bad)
    with pytest.raises(RawLogError) as e:
        run_build_samples(raw, str(tmp_path / "out"), SampleConfig(sim_range=(-1, 1)))
    assert type(e.value) is RawLogError  # not Beam's wrapper
    assert_names(e.value, F.IMPRESSIONS_FILE, 5, "timestamp", "'r1'", "rows 2 and 5",
                 "disagree")


def _read_examples(out: Path):
    records = []
    for split in SPLITS:
        for path in sorted((out / split).glob("data-*.tfrecord.gz")):
            for rec in tf.data.TFRecordDataset(str(path), compression_type="GZIP"):
                ex = tf.train.Example.FromString(rec.numpy())
                records.append((split, ex.features.feature))
    return records


def test_counted_drops_and_fallbacks(tmp_path):
    behaviors = ("user_id,item_id,timestamp,behavior\n"
                 f"u1,a,{T0 - 100},click\n"      # trigger of r1 (derived)
                 f"u1,zz,{T0 - 50},cart\n"       # unknown item in history
                 f"u2,c,{T0 - 5 * 3600},click\n"  # too old for r2's trigger window
                 f"u3,b,{T0 - 10},fav\n"          # user without impressions
                 f"u3,c,{T0 - 9},buy\n")
    impressions = ("request_id,user_id,timestamp,trigger_item_id,item_id,clicked\n"
                   f"r1,u1,{T0},,b,1\n"
                   f"r1,u1,{T0},,yy,0\n"          # unknown target (OOV)
                   f"r1,u1,{T0},,d,1\n"           # d has no embedding
                   f"r2,u2,{T0},,a,0\n"           # no derivable trigger: dropped
                   f"r2,u2,{T0},,b,1\n")
    raw = write_raw(tmp_path / "raw", behaviors=behaviors, impressions=impressions,
                    embeddings={"a": [1.0, 0.0], "b": [1.0, 1.0], "c": [0.0, 1.0],
                                "x": [1.0, 1.0]})
    out = tmp_path / "out"
    report = run_build_samples(raw, str(out), SampleConfig(sim_range=(-1.0, 1.0),
                                                           num_intent_levels=4))
    c = report["counts"]
    assert c["requests_dropped_no_trigger"] == 1
    assert c["impressions_dropped_no_trigger"] == 2
    assert c["requests_trigger_derived"] == 1
    assert c["samples_unknown_target_item"] == 1
    assert c["samples_target_without_embedding"] == 2  # yy and d
    assert c["behaviors_unknown_item"] == 1
    assert c["items_without_embedding"] == 1  # d
    assert c["embeddings_for_unknown_items"] == 1  # x
    assert c["users_without_impressions"] == 1
    assert c["behaviors_of_users_without_impressions"] == 2
    assert report["splits"]["eval"] == {"samples": 3, "requests": 1}
    assert report["sim_range"] == [-1.0, 1.0]
    assert (out / "report.json").exists()

    examples = {fm[F.TARGET_ITEM_ID].bytes_list.value[0].decode(): fm
                for _, fm in _read_examples(out)}
    assert sorted(examples) == ["b", "d", "yy"]
    yy, d, b = examples["yy"], examples["d"], examples["b"]
    assert yy[F.TARGET_CATEGORY_ID].bytes_list.value == [b""]  # OOV: empty side
    assert yy[F.TARGET_PRICE].float_list.value == [0.0]
    assert d[F.TARGET_SIM].float_list.value == [0.0]  # zero vector
    assert b[F.TARGET_SIM].float_list.value[0] == pytest.approx(1 / math.sqrt(2))
    assert b[F.TRIGGER_ITEM_ID].bytes_list.value == [b"a"]
    assert list(b[F.HIST_ITEM_ID].bytes_list.value) == [b"a", b"zz"]
    assert list(b[F.HIST_TIME_DELTA].int64_list.value) == [100, 50]
    # clicks: b (cos .707 -> level 3 of 4 over [-1, 1]) and d (cos 0 -> level 2)
    np.testing.assert_allclose(b[F.INTENT_LABEL].float_list.value, [0, 0, .5, .5])
    np.testing.assert_allclose(b[F.INTENT_LABEL_LOO].float_list.value, [0, 0, 1, 0])
    np.testing.assert_allclose(yy[F.INTENT_LABEL_LOO].float_list.value, [0, 0, .5, .5])
    # categories of the clicks: c1 (b) = trigger's c1, c3 (d) differs -> 1
    assert b[F.INTENT_DIVERSITY].int64_list.value == [1]


def test_cli_reports_a_bad_row_in_one_line_with_exit_code_2(tmp_path):
    """Through the real `daian build-samples` command: no traceback, exit code 2, and a
    message naming the file, the row and the column."""
    import os
    import subprocess
    import sys

    bad = IMPRESSIONS + f"r9,u1,{T0 + 60},a,b,yes\n"
    raw = write_raw(tmp_path / "raw", impressions=bad)
    bad_row = bad.count("\n")
    proc = subprocess.run(
        [sys.executable, "-m", "daian_tf.cli", "build-samples", raw,
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines()
              if line.startswith("daian build-samples: error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert F.IMPRESSIONS_FILE in errors[0] and f"row {bad_row}" in errors[0]
    assert "'clicked'" in errors[0]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
