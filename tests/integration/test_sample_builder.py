"""The sample builder against a brute-force re-derivation straight from the raw files.

The reference below re-implements DATA.md §1 and DAIAN.md §3.1 from the CSV/parquet files
with plain Python and numpy (no builder helper), then compares a few hundred random
samples of the TFRecords field by field.
"""

from __future__ import annotations

import csv
import math
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from daian_tf.core import features as F
from daian_tf.core.names import SPLITS
from daian_tf.data.sample_builder import run_build_samples
from daian_tf.data.simulator import simulate
from daian_tf.core.config import SampleConfig, SimulationConfig

USER_COLUMNS = ("gender", "age_bucket", "segment")
N_CHECK = 300
EDGE_EPS = 1e-5  # float32 vs float64 cosines may fall either side of a level edge


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("raw")
    simulate(str(out), SimulationConfig(seed=3, num_users=60, num_items=300,
                                        num_categories=10, num_super_groups=3))
    add_edge_cases(str(out))
    return str(out)


def add_edge_cases(raw: str) -> None:
    """Append rows the simulator never writes: non-click behaviours and a click at the
    request time inside trigger windows, timestamp ties, unknown history items, and
    requests whose trigger cannot be derived."""
    rng = random.Random(7)
    with open(f"{raw}/{F.IMPRESSIONS_FILE}", newline="") as f:
        requests = {r["request_id"]: r for r in csv.DictReader(f)}
    extra = []
    for r in requests.values():
        ts, user = int(r["timestamp"]), r["user_id"]
        u = rng.random()
        if u < 0.3:
            extra.append((user, f"i{rng.randrange(300):06d}", ts - 1,
                          rng.choice(["cart", "fav", "buy"])))
        elif u < 0.4:
            extra.append((user, "i_unknown", ts - 2, "click"))
            extra.append((user, f"i{rng.randrange(300):06d}", ts - 2, "fav"))
        elif u < 0.5:
            extra.append((user, f"i{rng.randrange(300):06d}", ts, "click"))
    last = max(int(r["timestamp"]) for r in requests.values())
    extra.append(("u_orphan", "i000001", last - 5 * 3600, "click"))  # too old
    with open(f"{raw}/{F.BEHAVIORS_FILE}", "a", newline="") as f:
        csv.writer(f).writerows(extra)
    with open(f"{raw}/{F.IMPRESSIONS_FILE}", "a", newline="") as f:
        w = csv.writer(f)
        for user in ("u_orphan", "u_nobody"):
            for k in range(3):
                w.writerow([f"x_{user}", user, last, "", f"i{k:06d}", k % 2, k])
    with open(f"{raw}/{F.TRUTH_FILE}", "a", newline="") as f:
        csv.writer(f).writerows([f"x_{u}", f"i{k:06d}", 0.5]
                                for u in ("u_orphan", "u_nobody") for k in range(3))


def read_examples(out_dir: str):
    """[(split, {key: python values})] of every example written."""
    rows = []
    for split in SPLITS:
        for path in sorted(Path(out_dir, split).glob("data-*.tfrecord.gz")):
            for rec in tf.data.TFRecordDataset(str(path), compression_type="GZIP"):
                ex = tf.train.Example.FromString(rec.numpy())
                feats = {}
                for key, feat in ex.features.feature.items():
                    kind = feat.WhichOneof("kind")
                    feats[key] = (kind, list(getattr(feat, kind).value))
                rows.append((split, feats))
    return rows


class Reference:
    """Independent re-derivation of DATA.md §1 / DAIAN.md §3.1 from the raw files."""

    def __init__(self, raw: str, cfg: SampleConfig):
        self.cfg = cfg
        items = pd.read_csv(f"{raw}/{F.ITEMS_FILE}", dtype=str, keep_default_na=False)
        self.items = {r.item_id: r for r in items.itertuples()}
        emb = pd.read_parquet(f"{raw}/{F.EMBEDDINGS_FILE}")
        self.vec = {i: np.asarray(v, dtype=np.float64)
                    for i, v in zip(emb["item_id"], emb["embedding"])}
        users = pd.read_csv(f"{raw}/{F.USERS_FILE}", dtype=str, keep_default_na=False)
        self.users = {r["user_id"]: r for r in users.to_dict("records")}
        self.behaviors = defaultdict(list)  # user -> [(ts, file order, item, behavior)]
        with open(f"{raw}/{F.BEHAVIORS_FILE}", newline="") as f:
            for k, r in enumerate(csv.DictReader(f)):
                self.behaviors[r["user_id"]].append(
                    (int(r["timestamp"]), k, r["item_id"], r.get("behavior") or "click"))
        self.requests = defaultdict(list)
        with open(f"{raw}/{F.IMPRESSIONS_FILE}", newline="") as f:
            for r in csv.DictReader(f):
                self.requests[r["request_id"]].append(r)
        truth = pd.read_csv(f"{raw}/{F.TRUTH_FILE}", dtype={"request_id": str,
                                                            "item_id": str})
        self.truth = {(a, b): p for a, b, p in zip(truth.request_id, truth.item_id,
                                                   truth.p_click)}
        max_ts = max(int(r["timestamp"]) for rows in self.requests.values()
                     for r in rows)
        day = 86400
        self.boundary = (max_ts // day) * day - (cfg.eval_days - 1) * day
        self.validation_boundary = self.boundary - cfg.validation_days * day

    def split(self, ts: int) -> str:
        if ts >= self.boundary:
            return "eval"
        return "validation" if ts >= self.validation_boundary else "train"

    def cos(self, a: str, b: str) -> float:
        if a not in self.vec or b not in self.vec:
            return 0.0
        va, vb = self.vec[a], self.vec[b]
        na, nb = np.linalg.norm(va), np.linalg.norm(vb)
        return 0.0 if na == 0 or nb == 0 else float(va @ vb / (na * nb))

    def trigger(self, rid: str):
        r = self.requests[rid][0]
        if r["trigger_item_id"]:
            return r["trigger_item_id"]
        ts = int(r["timestamp"])
        clicks = [b for b in self.behaviors[r["user_id"]]
                  if b[3] == "click" and b[0] < ts and ts - b[0] <= self.cfg.trigger_window_s]
        return max(clicks)[2] if clicks else None

    def history(self, rid: str):
        r = self.requests[rid][0]
        ts = int(r["timestamp"])
        window = sorted(b for b in self.behaviors[r["user_id"]]
                        if ts - self.cfg.history_days * 86400 <= b[0] < ts)
        return window[len(window) - min(len(window), self.cfg.max_seq_len):]

    def train_similarities(self):
        sims = []
        for rid, rows in self.requests.items():
            trig = self.trigger(rid)
            if trig is not None and self.split(int(rows[0]["timestamp"])) == "train":
                sims += [self.cos(trig, r["item_id"]) for r in rows]
        return np.asarray(sims)

    def level(self, s: float, lo: float, hi: float) -> int:
        n = self.cfg.num_intent_levels
        width = (hi - lo) / n
        k = 0
        while k < n - 1 and s >= lo + (k + 1) * width:
            k += 1
        return k

    def near_edge(self, s: float, lo: float, hi: float) -> bool:
        n = self.cfg.num_intent_levels
        return any(abs(s - (lo + (hi - lo) * k / n)) < EDGE_EPS for k in range(1, n))

    def expected(self, rid: str, target: str, lo: float, hi: float) -> dict:
        rows = self.requests[rid]
        r0 = rows[0]
        ts = int(r0["timestamp"])
        trig = self.trigger(rid)
        own = [r for r in rows if r["item_id"] == target]
        assert len(own) == 1
        clicked_items = [r["item_id"] for r in rows if r["clicked"] == "1"]
        n = self.cfg.num_intent_levels

        def hist_of(items):
            h = np.zeros(n)
            for it in items:
                h[self.level(self.cos(trig, it), lo, hi)] += 1
            return (list(h / len(items)), 1) if items else ([0.0] * n, 0)

        loo_items = list(clicked_items)
        if own[0]["clicked"] == "1":
            loo_items.remove(target)
        hist = self.history(rid)
        cat = lambda i: self.items[i].category_id if i in self.items else ""  # noqa
        user = self.users.get(r0["user_id"], {})
        out = {
            F.TIMESTAMP: ts, F.USER_ID: r0["user_id"], F.TRIGGER_ITEM_ID: trig,
            F.TRIGGER_CATEGORY_ID: cat(trig),
            F.TRIGGER_PRICE: float(self.items[trig].price) if trig in self.items
            else 0.0,
            F.TARGET_CATEGORY_ID: cat(target),
            F.TARGET_BRAND_ID: self.items[target].brand_id,
            F.TARGET_SHOP_ID: self.items[target].shop_id,
            F.LABEL: int(own[0]["clicked"]),
            F.POSITION: int(own[0]["position"]),
            F.HIST_ITEM_ID: [b[2] for b in hist],
            F.HIST_CATEGORY_ID: [cat(b[2]) for b in hist],
            F.HIST_BEHAVIOR: [b[3] for b in hist],
            F.HIST_TIME_DELTA: [ts - b[0] for b in hist],
            F.TARGET_SIM: self.cos(trig, target),
            F.INTENT_DIVERSITY: len({cat(i) for i in clicked_items} - {cat(trig), ""}),
            F.P_TRUE: self.truth[(rid, target)],
            "split": self.split(ts),
            "ambiguous": any(self.near_edge(self.cos(trig, i), lo, hi)
                             for i in clicked_items),
        }
        for col in USER_COLUMNS:
            out[F.user_feature(col)] = user.get(col, "")
        out[F.INTENT_LABEL], out[F.INTENT_MASK] = hist_of(clicked_items)
        out[F.INTENT_LABEL_LOO], out[F.INTENT_MASK_LOO] = hist_of(loo_items)
        return out


def compare(raw_dir: str, out_dir: str, cfg: SampleConfig, report: dict) -> None:
    ref = Reference(raw_dir, cfg)
    examples = read_examples(out_dir)
    lo, hi = report["sim_range"]
    assert report["split_boundary_timestamp"] == ref.boundary
    assert report["validation_boundary_timestamp"] == ref.validation_boundary

    # every request with a derivable trigger yields all its impressions, no others
    kept = {rid for rid in ref.requests if ref.trigger(rid) is not None}
    assert len(ref.requests) - len(kept) == 2  # the two added underivable ones
    assert report["counts"]["requests_dropped_no_trigger"] == len(ref.requests) - len(kept)
    assert len(examples) == sum(len(ref.requests[rid]) for rid in kept)
    for split in SPLITS:
        n_split = sum(len(ref.requests[rid]) for rid in kept
                      if ref.split(int(ref.requests[rid][0]["timestamp"])) == split)
        assert report["splits"][split]["samples"] == n_split > 0
    # each file holds its requests sorted by id, a request's examples together
    for split in SPLITS:
        for path in Path(out_dir, split).glob("data-*.tfrecord.gz"):
            ids = [tf.train.Example.FromString(r.numpy()).features.feature[
                F.REQUEST_ID].bytes_list.value[0] for r in tf.data.TFRecordDataset(
                    str(path), compression_type="GZIP")]
            assert ids == sorted(ids)

    checked = ambiguous = 0
    for split, feats in random.Random(0).sample(examples, N_CHECK):
        text = lambda k: feats[k][1][0].decode()  # noqa: E731
        rid = text(F.REQUEST_ID)
        exp = ref.expected(rid, text(F.TARGET_ITEM_ID), lo, hi)
        assert split == exp["split"]
        for key in (F.USER_ID, F.TRIGGER_ITEM_ID, F.TRIGGER_CATEGORY_ID,
                    F.TARGET_CATEGORY_ID, F.TARGET_BRAND_ID, F.TARGET_SHOP_ID) + tuple(
                        F.user_feature(c) for c in USER_COLUMNS):
            assert text(key) == exp[key], key
        for key in (F.TIMESTAMP, F.LABEL, F.POSITION, F.INTENT_DIVERSITY):
            assert feats[key][1] == [exp[key]], key
        for key in (F.HIST_ITEM_ID, F.HIST_CATEGORY_ID, F.HIST_BEHAVIOR):
            assert [v.decode() for v in feats[key][1]] == exp[key], key
        assert feats[F.HIST_TIME_DELTA][1] == exp[F.HIST_TIME_DELTA]
        assert all(d > 0 for d in exp[F.HIST_TIME_DELTA])
        np.testing.assert_allclose(feats[F.TARGET_SIM][1], [exp[F.TARGET_SIM]],
                                   atol=1e-5)
        np.testing.assert_allclose(feats[F.TRIGGER_PRICE][1], [exp[F.TRIGGER_PRICE]],
                                   rtol=1e-6)
        np.testing.assert_allclose(feats[F.P_TRUE][1], [exp[F.P_TRUE]], rtol=1e-6)
        if exp["ambiguous"]:
            ambiguous += 1
            continue
        for key in (F.INTENT_LABEL, F.INTENT_LABEL_LOO):
            np.testing.assert_allclose(feats[key][1], exp[key], atol=1e-6)
        assert feats[F.INTENT_MASK][1] == [exp[F.INTENT_MASK]]
        assert feats[F.INTENT_MASK_LOO][1] == [exp[F.INTENT_MASK_LOO]]
        checked += 1
    assert checked >= N_CHECK - 5 and ambiguous <= 5


def test_fixed_sim_range_matches_brute_force(raw_dir, tmp_path):
    cfg = SampleConfig(sim_range=(0.0, 0.9), num_intent_levels=5,
                       user_columns=USER_COLUMNS, max_seq_len=20)
    report = run_build_samples(raw_dir, str(tmp_path), cfg)
    assert report["sim_range"] == [0.0, 0.9]
    assert report["raw_dir"] == str(raw_dir)  # where DAIAN's catalog comes from
    compare(raw_dir, str(tmp_path), cfg, report)


def test_percentile_sim_range_matches_brute_force(raw_dir, tmp_path):
    cfg = SampleConfig(user_columns=USER_COLUMNS, history_days=3)
    report = run_build_samples(raw_dir, str(tmp_path), cfg)
    sims = Reference(raw_dir, cfg).train_similarities()
    lo, hi = report["sim_range"]
    # each order statistic at its bin's centre: within half a bin (2 / 2**16 / 2)
    assert lo == pytest.approx(np.percentile(sims, 1), abs=2 ** -16)
    assert hi == pytest.approx(np.percentile(sims, 99), abs=2 ** -16)
    compare(raw_dir, str(tmp_path), cfg, report)


def expected_kinds(cfg: SampleConfig) -> dict:
    """DATA.md §2 as a table: key -> tf.train.Feature kind (simulated world: position
    and p_true are present)."""
    b, i, f = "bytes_list", "int64_list", "float_list"
    kinds = {F.REQUEST_ID: b, F.USER_ID: b, F.TIMESTAMP: i,
             F.TRIGGER_ITEM_ID: b, F.TRIGGER_CATEGORY_ID: b, F.TRIGGER_BRAND_ID: b,
             F.TRIGGER_SHOP_ID: b, F.TRIGGER_PRICE: f,
             F.TARGET_ITEM_ID: b, F.TARGET_CATEGORY_ID: b, F.TARGET_BRAND_ID: b,
             F.TARGET_SHOP_ID: b, F.TARGET_PRICE: f,
             F.HIST_ITEM_ID: b, F.HIST_CATEGORY_ID: b, F.HIST_BRAND_ID: b,
             F.HIST_BEHAVIOR: b, F.HIST_TIME_DELTA: i,
             F.LABEL: i, F.INTENT_LABEL: f, F.INTENT_MASK: i, F.INTENT_LABEL_LOO: f,
             F.INTENT_MASK_LOO: i, F.TARGET_SIM: f, F.INTENT_DIVERSITY: i,
             F.P_TRUE: f, F.POSITION: i}
    kinds.update({F.user_feature(c): b for c in cfg.user_columns})
    return kinds


def test_example_keys_and_types_match_data_md(raw_dir, tmp_path):
    cfg = SampleConfig(sim_range=(-1.0, 1.0), user_columns=USER_COLUMNS,
                       num_intent_levels=4)
    run_build_samples(raw_dir, str(tmp_path), cfg)
    kinds = expected_kinds(cfg)
    hist_len = {F.HIST_ITEM_ID, F.HIST_CATEGORY_ID, F.HIST_BRAND_ID, F.HIST_BEHAVIOR,
                F.HIST_TIME_DELTA}
    lengths = {F.INTENT_LABEL: 4, F.INTENT_LABEL_LOO: 4}
    examples = read_examples(str(tmp_path))
    assert examples
    for _, feats in examples:
        assert {k: kind for k, (kind, _) in feats.items()} == kinds
        n_hist = {len(feats[k][1]) for k in hist_len}
        assert len(n_hist) == 1 and n_hist.pop() <= cfg.max_seq_len
        for key, (_, values) in feats.items():
            if key not in hist_len:
                assert len(values) == lengths.get(key, 1), key
        assert math.isclose(sum(feats[F.INTENT_LABEL][1]), feats[F.INTENT_MASK][1][0],
                            abs_tol=1e-6)


@pytest.mark.slow
def test_two_workers_give_the_same_examples(raw_dir, tmp_path):
    cfg = SampleConfig(user_columns=USER_COLUMNS)
    one = run_build_samples(raw_dir, str(tmp_path / "one"), cfg)
    two = run_build_samples(raw_dir, str(tmp_path / "two"), cfg, beam_args=[
        "--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert one["counts"] == two["counts"]
    # the same range (a histogram's counts add up in any order) and the same files,
    # byte for byte (sorted output), however the two workers split the data
    assert one["sim_range"] == two["sim_range"]
    files = sorted(p.relative_to(tmp_path / "one")
                   for p in (tmp_path / "one").rglob("*.tfrecord.gz"))
    assert files
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes()
