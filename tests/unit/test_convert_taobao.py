"""The Taobao/Alimama converter on a small fixture in the public files' exact format.

The fixture (`write_fixture`) keeps the quirks of the real files: the trailing space of
user_profile.csv's last header name, `NULL` brands, empty profile fields, several
impressions in one second, unsorted rows, behavior_log rows; and hand-made cases: a
click with requests 4 h and 4 h + 1 s later, a click in the request's own second, two
clicks in one second, a click on an ad group missing from ad_feature.csv, a user with
no profile, and an item pair shown and clicked only on the eval day. Triggers and
request grouping are checked against a brute-force re-derivation written here; the
output goes through the Beam sample builder.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from daian_tf.core import features as F
from daian_tf.core.config import (DEFAULT_CONFIG_FILE, ConfigError, TaobaoConfig,
                                  iso_utc_seconds,
                                  load_config)
from daian_tf.core.errors import DaianInputError, RawLogError
from daian_tf.core.names import SPLITS
from daian_tf.data.convert.taobao import (AD_FEATURE_FILE, BEHAVIOR_LOG_FILE,
                                          PROFILE_COLUMNS, RAW_SAMPLE_FILE,
                                          USER_PROFILE_FILE, convert_taobao)

REPO = Path(__file__).resolve().parents[2]
DAY0 = 1494000000  # 2017-05-06 00:00 Beijing (UTC+8) = 2017-05-05T16:00:00 UTC
EVAL_START = "2017-05-12T16:00:00"  # 2017-05-13 00:00 Beijing, the last local day
VALIDATION_START = "2017-05-11T16:00:00"  # the Beijing day before
EVAL_TS = DAY0 + 7 * 86400
WINDOW = 4 * 3600
UNKNOWN_AD = 999999  # clicked, not in ad_feature.csv
EVAL_PAIR = (901, 902)  # shown and clicked only on the eval day
FILLER_ADS = list(range(1000, 1040))


def t(day: int, h: int = 0, m: int = 0, s: int = 0) -> int:
    """Unix seconds of 2017-05-<day> h:m:s Beijing time."""
    return DAY0 + (day - 6) * 86400 + h * 3600 + m * 60 + s


def sample_rows(seed: int = 0):
    """(user, time_stamp, adgroup_id, pid, clk) rows of raw_sample.csv, unsorted."""
    pids = ("430548_1007", "430539_1007")
    rows = [
        # user 1: a click at 10:00 on day 7; requests exactly 4 h and 4 h + 1 s later
        (1, t(7, 10), 101, pids[0], 1), (1, t(7, 10), 102, pids[0], 0),
        (1, t(7, 10), 103, pids[1], 0),
        (1, t(7, 14), 104, pids[0], 0), (1, t(7, 14), 105, pids[0], 0),
        (1, t(7, 14, 0, 1), 106, pids[0], 0),
        # user 2: a click in the request's own second is not its trigger
        (2, t(8, 9), 201, pids[0], 1), (2, t(8, 9), 202, pids[0], 0),
        (2, t(8, 9, 0, 5), 203, pids[0], 0), (2, t(8, 9, 0, 5), 204, pids[0], 1),
        # user 3: two clicks in one second, then a request: the larger id wins
        (3, t(9, 8), 305, pids[0], 1), (3, t(9, 8), 301, pids[0], 1),
        (3, t(9, 8, 30), 302, pids[0], 0), (3, t(9, 8, 30), 303, pids[1], 1),
        # user 4: a click on an ad group without ad_feature row
        (4, t(10, 20), UNKNOWN_AD, pids[0], 1), (4, t(10, 21), 401, pids[0], 0),
        # user 5: no profile row
        (5, t(11, 7), 501, pids[0], 1), (5, t(11, 7, 5), 502, pids[0], 0),
        (5, t(11, 7, 5), 503, pids[0], 0),
    ]
    # users 6-8: the eval-only pair, clicked together, then a request
    for user in (6, 7, 8):
        rows += [(user, t(13, 9), EVAL_PAIR[0], pids[0], 1),
                 (user, t(13, 9), EVAL_PAIR[1], pids[0], 1),
                 (user, t(13, 9, 10), 1000, pids[0], 0),
                 (user, t(13, 9, 10), 1001, pids[0], 1)]
    rng = random.Random(seed)
    for user in range(100, 160):
        for _ in range(rng.randint(3, 6)):  # sessions of a few requests
            ts = t(rng.randint(6, 13), rng.randint(0, 23), rng.randint(0, 59))
            for _ in range(rng.randint(2, 4)):
                for ad in rng.sample(FILLER_ADS, rng.randint(1, 3)):
                    rows.append((user, ts, ad, rng.choice(pids),
                                 int(rng.random() < 0.3)))
                ts += rng.randint(1, 2000)
    rng.shuffle(rows)
    return rows


def ad_rows():
    ads = [101, 102, 103, 104, 105, 106, 201, 202, 203, 204, 301, 302, 303, 305, 401,
           501, 502, 503, *EVAL_PAIR, *FILLER_ADS, 7001, 7002]  # 7001/2: never shown
    out = []
    for k, ad in enumerate(ads):
        brand = "NULL" if k % 5 == 0 else str(3000 + k % 7)
        out.append((ad, 6000 + k % 6, 50000 + k, 80000 + k % 9, brand,
                    f"{(k * 37) % 500 + 0.5:.1f}"))
    return out


def write_fixture(src: Path, seed: int = 0, rows=None) -> Path:
    src.mkdir(parents=True, exist_ok=True)
    with open(src / RAW_SAMPLE_FILE, "w", newline="") as f:
        f.write("user,time_stamp,adgroup_id,pid,nonclk,clk\n")
        for user, ts, ad, pid, clk in (rows if rows is not None else sample_rows(seed)):
            f.write(f"{user},{ts},{ad},{pid},{1 - clk},{clk}\n")
    with open(src / AD_FEATURE_FILE, "w", newline="") as f:
        f.write("adgroup_id,cate_id,campaign_id,customer,brand,price\n")
        f.writelines(",".join(map(str, r)) + "\n" for r in ad_rows())
    with open(src / USER_PROFILE_FILE, "w", newline="") as f:
        f.write("userid,cms_segid,cms_group_id,final_gender_code,age_level,"
                "pvalue_level,shopping_level,occupation,new_user_class_level \n")
        for user in [1, 2, 3, 4, 6, 7, 8, *range(100, 160)]:  # not user 5
            pvalue = "" if user % 3 == 0 else str(1 + user % 3)
            new_class = "" if user % 4 == 0 else str(1 + user % 4)
            f.write(f"{user},0,{user % 13},{1 + user % 2},{user % 7},{pvalue},3,0,"
                    f"{new_class}\n")
    with open(src / BEHAVIOR_LOG_FILE, "w", newline="") as f:
        f.write("user,time_stamp,btag,cate,brand\n")
        for k, tag in enumerate(["pv", "pv", "cart", "fav", "buy", "pv", "pv"]):
            brand = "NULL" if k % 3 == 0 else str(300 + k)
            f.write(f"{100 + k},{t(5 + k % 3, k)},{tag},{6000 + k},{brand}\n")
    return src


def expected_requests(src: Path):
    """Brute force from raw_sample.csv: {request_id: (trigger or None, sorted rows)}."""
    with open(src / RAW_SAMPLE_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    requests = defaultdict(list)
    clicks = defaultdict(list)
    for r in rows:
        user, ts = int(r["user"]), int(r["time_stamp"])
        requests[(user, ts)].append((int(r["adgroup_id"]), int(r["clk"])))
        if r["clk"] == "1":
            clicks[user].append((ts, int(r["adgroup_id"])))
    out = {}
    for (user, ts), targets in requests.items():
        earlier = [c for c in clicks[user] if 1 <= ts - c[0] <= WINDOW]
        trigger = max(earlier)[1] if earlier else None  # latest second, then largest id
        out[f"{user}_{ts}"] = (trigger, sorted(targets))
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    base = tmp_path_factory.mktemp("taobao")
    src = write_fixture(base / "src")
    out = base / "raw"
    report = convert_taobao(str(src), str(out), TaobaoConfig(num_shards=3,
                                                             chunk_rows=50))
    return src, out, report


def read(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / name, dtype=str, keep_default_na=False)


def test_requests_and_triggers_match_a_brute_force_derivation(converted):
    src, out, report = converted
    expected = expected_requests(src)
    imp = read(out, F.IMPRESSIONS_FILE)
    assert list(imp.columns) == list(F.IMPRESSIONS_REQUIRED)  # no position
    got = {}
    for rid, g in imp.groupby("request_id"):
        assert g["user_id"].nunique() == 1 and g["timestamp"].nunique() == 1
        assert g["trigger_item_id"].nunique() == 1
        assert rid == f"{g['user_id'].iloc[0]}_{g['timestamp'].iloc[0]}"
        got[rid] = (int(g["trigger_item_id"].iloc[0]),
                    sorted(zip(g["item_id"].astype(int), g["clicked"].astype(int))))
    kept = {rid: v for rid, v in expected.items() if v[0] is not None}
    assert got == kept
    r = report["requests"]
    assert r["total"] == len(expected) and r["kept"] == len(kept)
    assert r["dropped_no_trigger"] == len(expected) - len(kept)
    assert report["impressions"]["written"] == len(imp)
    assert report["impressions"]["written"] + report["impressions"][
        "dropped_no_trigger"] == report["raw_sample"]["rows"]
    assert r["train"] == sum(int(k.split("_")[1]) < EVAL_TS for k in kept)
    assert r["train"] + r["eval"] == r["kept"]


def test_the_hand_made_cases(converted):
    _, out, report = converted
    imp = read(out, F.IMPRESSIONS_FILE)
    trig = dict(zip(imp["request_id"], imp["trigger_item_id"].astype(int)))
    assert trig[f"1_{t(7, 14)}"] == 101  # exactly 4 h after the click
    assert f"1_{t(7, 14, 0, 1)}" not in trig  # 4 h + 1 s: no trigger, dropped
    assert f"2_{t(8, 9)}" not in trig  # its own click is not its trigger
    assert trig[f"2_{t(8, 9, 0, 5)}"] == 201
    assert trig[f"3_{t(9, 8, 30)}"] == 305  # tie in one second: the larger id
    assert report["requests"]["triggers_tied"] >= 1
    assert trig[f"4_{t(10, 21)}"] == UNKNOWN_AD
    items = report["items"]
    assert items["adgroups_not_in_ad_feature"] == 1
    assert items["impressions_of_those"] == 1 and items["clicks_of_those"] == 1
    assert items["kept_requests_with_such_trigger"] >= 1
    assert report["users"]["users_with_kept_requests_without_profile"] == 1  # user 5


def test_behaviors_are_all_clicks_sorted_by_user_and_time(converted):
    src, out, report = converted
    beh = read(out, F.BEHAVIORS_FILE)
    assert list(beh.columns) == list(F.BEHAVIORS_REQUIRED + F.BEHAVIORS_OPTIONAL)
    raw = pd.read_csv(src / RAW_SAMPLE_FILE)
    clicks = raw[raw["clk"] == 1]
    assert len(beh) == len(clicks) == report["behaviors"]["clicks_written"]
    assert (beh["behavior"] == "click").all()
    assert sorted(zip(beh["user_id"].astype(int), beh["item_id"].astype(int),
                      beh["timestamp"].astype(int))) == sorted(zip(
                          clicks["user"], clicks["adgroup_id"], clicks["time_stamp"]))
    for _, g in beh.groupby("user_id", sort=False):
        key = list(zip(g["timestamp"].astype(int), g["item_id"].astype(int)))
        assert key == sorted(key)
    dropped = report["behaviors"]["behavior_log_dropped"]
    assert dropped["rows"] == 7
    assert dropped["rows_per_btag"] == {"buy": 1, "cart": 1, "fav": 1, "pv": 4}


def test_items_and_users(converted):
    _, out, report = converted
    items = read(out, F.ITEMS_FILE)
    assert list(items.columns) == ["item_id", "category_id", "brand_id", "shop_id",
                                   "price", "campaign_id"]
    ads = ad_rows()
    assert items["item_id"].astype(int).tolist() == [a[0] for a in ads]
    null = [a[4] == "NULL" for a in ads]
    assert (items["brand_id"] == "").tolist() == null
    assert report["items"]["brand_unknown"] == sum(null)
    assert items["shop_id"].astype(int).tolist() == [a[3] for a in ads]
    users = read(out, F.USERS_FILE)
    assert list(users.columns) == ["user_id", *PROFILE_COLUMNS]
    assert report["users"]["user_columns"] == list(PROFILE_COLUMNS)
    assert "new_user_class_level" in users.columns  # header's trailing space stripped
    assert (users["pvalue_level"] == "").sum() == report["users"][
        "empty_values_per_column"]["pvalue_level"] > 0


def test_embeddings_cover_the_catalog_without_eval_leakage(converted, tmp_path):
    src, out, report = converted
    emb = pq.read_table(out / F.EMBEDDINGS_FILE).to_pandas()
    items = read(out, F.ITEMS_FILE)
    assert emb["item_id"].tolist() == items["item_id"].tolist()
    vec = np.stack(emb["embedding"].to_numpy())
    assert vec.shape == (len(items), TaobaoConfig().embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    lo, hi = report["embedding"]["layout"]["cooccurrence"]
    row = dict(zip(emb["item_id"], range(len(emb))))
    # the train period only: up to the validation split, the Beijing day before eval
    assert report["cooccurrence_until"] == VALIDATION_START
    # shown and clicked together only on the eval day: no co-occurrence part
    for ad in EVAL_PAIR:
        assert not vec[row[str(ad)], lo:hi].any()
    assert report["embedding"]["items_with_cooccurrence"] > 10
    # ... which they get once the validation cut moves past the eval day
    later = convert_taobao(str(src), str(tmp_path / "later"), TaobaoConfig(
        num_shards=2, count_behavior_log=False), iso_utc_seconds("2017-05-15", "cut"))
    assert later["cooccurrence_until"] == "2017-05-14T00:00:00"
    emb2 = pq.read_table(tmp_path / "later" / F.EMBEDDINGS_FILE).to_pandas()
    vec2 = np.stack(emb2["embedding"].to_numpy())
    a, b = (vec2[row[str(ad)], lo:hi] for ad in EVAL_PAIR)
    assert a.any() and b.any()
    assert later["behaviors"]["behavior_log_dropped"]["rows"] is None
    # the same category: a positive share of the cosine
    c0, c1 = report["embedding"]["layout"]["category"]
    same = items.groupby("category_id").indices
    i, j = next(v for v in same.values() if len(v) > 1)[:2]
    np.testing.assert_allclose(vec[i, c0:c1] @ vec[j, c0:c1],
                               np.linalg.norm(vec[i, c0:c1]) *
                               np.linalg.norm(vec[j, c0:c1]), rtol=1e-5)


def test_output_does_not_depend_on_the_input_row_order(converted, tmp_path):
    src, out, _ = converted
    rows = sample_rows()
    rows.sort()
    other = write_fixture(tmp_path / "src", rows=rows)
    convert_taobao(str(other), str(tmp_path / "raw"),
                   TaobaoConfig(num_shards=3, chunk_rows=7))
    for name in (F.IMPRESSIONS_FILE, F.BEHAVIORS_FILE, F.ITEMS_FILE, F.USERS_FILE):
        assert (tmp_path / "raw" / name).read_bytes() == (out / name).read_bytes(), name
    a = pq.read_table(out / F.EMBEDDINGS_FILE).to_pandas()
    b = pq.read_table(tmp_path / "raw" / F.EMBEDDINGS_FILE).to_pandas()
    np.testing.assert_allclose(np.stack(a["embedding"]), np.stack(b["embedding"]),
                               atol=1e-6)


def test_the_sample_builder_reads_the_output(converted, tmp_path):
    from daian_tf.data.sample_builder import run_build_samples

    _, out, report = converted
    cfg = load_config(DEFAULT_CONFIG_FILE, REPO / "configs" / "taobao.yaml",
                      overrides={"samples": {"sim_range": [-1.0, 1.0]}}).samples
    assert cfg.eval_start == report["samples"]["eval_start"] == EVAL_START
    assert tuple(cfg.user_columns) == PROFILE_COLUMNS
    built = run_build_samples(str(out), str(tmp_path / "samples"), cfg)
    counts = built["counts"]
    imp = read(out, F.IMPRESSIONS_FILE)
    assert counts["impressions"] == len(imp)
    assert counts["requests"] == report["requests"]["kept"]
    assert counts["requests_dropped_no_trigger"] == 0
    assert counts["requests_trigger_derived"] == 0
    # the converter's train period is the builder's train and validation splits
    assert (built["splits"]["train"]["requests"]
            + built["splits"]["validation"]["requests"] == report["requests"]["train"])
    assert built["splits"]["eval"]["requests"] == report["requests"]["eval"] > 0
    assert sum(built["splits"][s]["samples"] for s in SPLITS) == len(imp)
    assert built["split_boundary_timestamp"] == EVAL_TS
    assert counts["users_without_profile"] == 1
    unknown = imp["item_id"].astype(int) == UNKNOWN_AD
    assert counts["samples_unknown_target_item"] == unknown.sum()
    assert counts["requests_unknown_trigger_item"] == report["items"][
        "kept_requests_with_such_trigger"]


def _rewrite(src: Path, name: str, fn) -> None:
    path = src / name
    path.write_text(fn(path.read_text()))


@pytest.mark.parametrize("name,edit,match", [
    (RAW_SAMPLE_FILE, lambda s: s.replace("time_stamp", "ts", 1), "'time_stamp'"),
    (AD_FEATURE_FILE, lambda s: s.replace("cate_id", "category", 1), "'cate_id'"),
    (USER_PROFILE_FILE, lambda s: s.replace("userid", "uid", 1), "'userid'"),
    (BEHAVIOR_LOG_FILE, lambda s: s.replace("btag", "tag", 1), "'btag'"),
])
def test_a_missing_column_is_named(tmp_path, name, edit, match):
    src = write_fixture(tmp_path / "src")
    _rewrite(src, name, edit)
    with pytest.raises(RawLogError, match=f"{name}.*{match}"):
        convert_taobao(str(src), str(tmp_path / "out"), TaobaoConfig())


def test_a_missing_file_is_named(tmp_path):
    src = write_fixture(tmp_path / "src")
    os.remove(src / BEHAVIOR_LOG_FILE)
    with pytest.raises(RawLogError, match=f"{BEHAVIOR_LOG_FILE}: required file"):
        convert_taobao(str(src), str(tmp_path / "out"), TaobaoConfig())


@pytest.mark.parametrize("bad,column", [
    ("5,14940x0000,101,430548_1007,1,0", "time_stamp"),
    ("5,1494000000.5,101,430548_1007,1,0", "time_stamp"),
    ("5,,101,430548_1007,1,0", "time_stamp"),
    ("5,1494000000,101,430548_1007,0,2", "clk"),
    ("5,1494000000,101,430548_1007,1,1", "nonclk"),
    ("-5,1494000000,101,430548_1007,1,0", "user"),
    ("5,1494000000,101,,1,0", "pid"),
    ("5,1494000000,101", None),  # a short row: the field count is named
])
def test_a_bad_raw_sample_row_is_named_by_line_and_column(tmp_path, bad, column):
    src = write_fixture(tmp_path / "src")
    lines = (src / RAW_SAMPLE_FILE).read_text().splitlines(keepends=True)
    lines.insert(40, bad + "\n")  # data row 39 of a chunk that starts at row 20
    (src / RAW_SAMPLE_FILE).write_text("".join(lines))
    with pytest.raises(RawLogError) as err:
        convert_taobao(str(src), str(tmp_path / "out"), TaobaoConfig(chunk_rows=20))
    assert (err.value.file, err.value.row, err.value.column) == (
        str(src / RAW_SAMPLE_FILE), 41, column), str(err.value)


def test_bad_ad_feature_and_profile_rows_are_named(tmp_path):
    src = write_fixture(tmp_path / "src")
    _rewrite(src, AD_FEATURE_FILE, lambda s: s.replace(",NULL,", ",none,", 1))
    with pytest.raises(RawLogError, match=r"ad_feature.csv, row 2, column 'brand'"):
        convert_taobao(str(src), str(tmp_path / "out"), TaobaoConfig())
    src = write_fixture(tmp_path / "src2")
    _rewrite(src, AD_FEATURE_FILE, lambda s: s + "101,1,1,1,NULL,3.0\n")
    with pytest.raises(RawLogError, match=r"row \d+, column 'adgroup_id'.*duplicate "
                       r"adgroup_id 101 \(first at row 2\)"):
        convert_taobao(str(src), str(tmp_path / "out"), TaobaoConfig())
    src = write_fixture(tmp_path / "src3")
    _rewrite(src, USER_PROFILE_FILE, lambda s: s + "u9,1,1,1,1,,1,1,\n")
    with pytest.raises(RawLogError, match=r"user_profile.csv, row \d+, column 'userid'"):
        convert_taobao(str(src), str(tmp_path / "out"), TaobaoConfig())
    src = write_fixture(tmp_path / "src4")
    _rewrite(src, USER_PROFILE_FILE, lambda s: s.replace("\n", "\n9,1,1\n", 1))
    with pytest.raises(RawLogError, match=r"user_profile.csv, row 2: expected 9 fields"):
        convert_taobao(str(src), str(tmp_path / "out"), TaobaoConfig())
    src = write_fixture(tmp_path / "src5")
    _rewrite(src, AD_FEATURE_FILE, lambda s: s.replace("\n", "\n7,1,1,1,NULL,abc\n", 1))
    with pytest.raises(RawLogError, match=r"ad_feature.csv, row 2, column 'price'"):
        convert_taobao(str(src), str(tmp_path / "out"), TaobaoConfig())


def test_config_checks_its_values():
    assert TaobaoConfig().embedding_dim == 32
    for bad, match in [({"trigger_min_gap_s": 0}, "trigger_min_gap_s"),
                       ({"num_shards": 0}, "num_shards"),
                       ({"brand_weight": -1.0}, "brand_weight"),
                       ({"cooccurrence_dim": 0, "category_dim": 0, "brand_dim": 0,
                         "price_dim": 0}, "must be > 0")]:
        with pytest.raises(ConfigError, match=match):
            TaobaoConfig(**bad)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "daian_tf.cli", *args],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def test_cli_converts_and_prints_the_report(tmp_path):
    src = write_fixture(tmp_path / "src")
    proc = _cli("convert", "taobao", str(src), str(tmp_path / "out"),
                "--config", str(REPO / "configs" / "taobao.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["requests"]["kept"] > 0
    assert json.loads((tmp_path / "out" / "conversion.json").read_text()) == report


def test_cli_names_a_missing_file_in_one_line(tmp_path):
    src = write_fixture(tmp_path / "src")
    os.remove(src / AD_FEATURE_FILE)
    proc = _cli("convert", "taobao", str(src), str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert errors == [f"daian convert: error: {src / AD_FEATURE_FILE}: required file "
                      f"is missing"], proc.stderr[-3000:]


def test_a_validation_start_not_before_eval_is_refused(tmp_path):
    src = write_fixture(tmp_path / "src")
    cut = iso_utc_seconds(EVAL_START, "cut")
    with pytest.raises(DaianInputError, match=r"the validation split's start "
                                              r"\(2017-05-12T16:00:00\) must be before"):
        convert_taobao(str(src), str(tmp_path / "out"), TaobaoConfig(num_shards=2),
                       cut, validation_start=cut)
