"""The simulated TIR world: file format, determinism, and the properties DAIAN needs."""

from __future__ import annotations

import csv
import dataclasses
import filecmp
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from daian_tf.core import features as F
from daian_tf.data import sim_days as D
from daian_tf.data import sim_world as W
from daian_tf.data import simulator as S
from daian_tf.core.config import ConfigError, SimulationConfig, load_config

TRIGGER_WINDOW_S = 4 * 3600
DAY = 86_400

# Small, but with enough clicks per user (about 25) to see intent mixtures.
CFG = SimulationConfig(
    seed=7, num_users=300, num_items=480, num_categories=12, num_super_groups=3,
    history_days=2, request_days=4, requests_per_user_day=3.0,
    background_per_user_day=3.0, candidates_per_request=10, cold_item_fraction=0.05,
    target_ctr=0.2, embedding_dim=32)
TINY = dataclasses.replace(CFG, num_users=40, history_days=1, request_days=2)


def _read(raw: str, name: str) -> pd.DataFrame:
    return pd.read_csv(os.path.join(raw, name), dtype=str, keep_default_na=False)


def _header(path: str) -> list:
    with open(path, newline="") as f:
        return next(csv.reader(f))


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sim") / "raw")
    summary = S.simulate(out, CFG)
    return out, summary


@pytest.fixture(scope="module")
def tables(raw):
    out, _ = raw
    imp = _read(out, F.IMPRESSIONS_FILE)
    beh = _read(out, F.BEHAVIORS_FILE)
    for df in (imp, beh):
        df["timestamp"] = df["timestamp"].astype(np.int64)
    imp["clicked"] = imp["clicked"].astype(int)
    imp["position"] = imp["position"].astype(int)
    return imp, beh


@pytest.fixture(scope="module")
def derived(tables):
    """Trigger per request id, derived from behaviors.csv by brute force."""
    return _derived_triggers(*tables)


@pytest.fixture(scope="module")
def world():
    return S.build_world(CFG)


def _embeddings(out: str) -> dict:
    t = pq.read_table(os.path.join(out, F.EMBEDDINGS_FILE))
    return dict(zip(t.column("item_id").to_pylist(),
                    np.array(t.column("embedding").to_pylist(), dtype=np.float64)))


def _derived_triggers(imp: pd.DataFrame, beh: pd.DataFrame) -> pd.Series:
    """Brute force, per request: the user's most recent click strictly before the
    request within 4 h (None if absent; an error if two items tie)."""
    clicks = beh[beh["behavior"] == "click"].groupby("user_id")
    requests = imp.drop_duplicates("request_id").set_index("request_id")
    out = {}
    for rid, row in requests.iterrows():
        c = clicks.get_group(row["user_id"])
        c = c[(c["timestamp"] < row["timestamp"])
              & (c["timestamp"] >= row["timestamp"] - TRIGGER_WINDOW_S)]
        if c.empty:
            out[rid] = None
            continue
        last = c[c["timestamp"] == c["timestamp"].max()]
        assert last["item_id"].nunique() == 1, f"{rid}: tied most recent clicks"
        out[rid] = last["item_id"].iloc[0]
    return pd.Series(out)


def test_files_and_columns_follow_data_md(raw):
    out, _ = raw
    assert sorted(os.listdir(out)) == sorted([
        F.ITEMS_FILE, F.EMBEDDINGS_FILE, F.USERS_FILE, F.BEHAVIORS_FILE,
        F.IMPRESSIONS_FILE, F.TRUTH_FILE])
    assert _header(os.path.join(out, F.ITEMS_FILE)) == list(
        F.ITEMS_REQUIRED + F.ITEMS_OPTIONAL)
    assert _header(os.path.join(out, F.USERS_FILE)) == list(
        F.USERS_REQUIRED) + ["gender", "age_bucket", "segment"]
    assert _header(os.path.join(out, F.BEHAVIORS_FILE)) == list(
        F.BEHAVIORS_REQUIRED + F.BEHAVIORS_OPTIONAL)
    assert _header(os.path.join(out, F.IMPRESSIONS_FILE)) == list(
        F.IMPRESSIONS_REQUIRED + F.IMPRESSIONS_OPTIONAL)
    assert _header(os.path.join(out, F.TRUTH_FILE)) == list(F.TRUTH_REQUIRED)
    schema = pq.read_schema(os.path.join(out, F.EMBEDDINGS_FILE))
    assert schema.names == list(F.EMBEDDINGS_COLUMNS)
    assert str(schema.field("embedding").type) == "list<item: float>"


def test_base_yaml_profile_columns_match_users_csv():
    from daian_tf.core.config import DEFAULT_CONFIG_FILE

    base = DEFAULT_CONFIG_FILE
    assert tuple(load_config(base).samples.user_columns) == S.USER_COLUMNS


def test_ids_values_and_counts(raw, tables):
    out, summary = raw
    imp, beh = tables
    items = _read(out, F.ITEMS_FILE)
    users = _read(out, F.USERS_FILE)
    truth = _read(out, F.TRUTH_FILE)
    assert items["item_id"].is_unique and users["user_id"].is_unique
    assert items["item_id"].str.fullmatch(r"i\d{6}").all()
    assert items["category_id"].str.fullmatch(r"c\d{3}").all()
    assert items["brand_id"].str.fullmatch(r"b\d{4}").all()
    assert items["shop_id"].str.fullmatch(r"s\d{3}").all()
    assert (items["price"].astype(float) > 0).all()
    assert users["user_id"].str.fullmatch(r"u\d{6}").all()
    assert set(users["segment"]) == set(W.SEGMENTS)
    assert set(beh["behavior"]) == set(F.BEHAVIOR_TYPES)
    assert set(imp["item_id"]) | set(beh["item_id"]) <= set(items["item_id"])
    assert set(imp["user_id"]) | set(beh["user_id"]) <= set(users["user_id"])
    assert summary["num_items"] == len(items) == CFG.num_items
    assert summary["num_users"] == len(users) == CFG.num_users
    assert summary["num_behaviors"] == len(beh)
    assert summary["num_impressions"] == len(imp) == len(truth)
    assert summary["num_requests"] == imp["request_id"].nunique()
    assert abs(summary["ctr"] - imp["clicked"].mean()) < 1e-12
    assert abs(imp["clicked"].mean() - CFG.target_ctr) < 0.03
    empty = imp.drop_duplicates("request_id")["trigger_item_id"].eq("").mean()
    assert abs(empty - CFG.empty_trigger_fraction) < 0.04


def test_requests_are_consistent_and_aligned_to_days(tables, raw):
    imp, _ = tables
    out, summary = raw
    per_request = imp.groupby("request_id")
    keys = ["user_id", "timestamp", "trigger_item_id"]
    assert (per_request[keys].nunique() == 1).all().all()
    C = CFG.candidates_per_request
    assert (per_request.size() == C).all()
    assert (per_request["position"].apply(sorted) == pd.Series(
        [list(range(C))] * per_request.ngroups, index=per_request.size().index)).all()
    assert (per_request["item_id"].nunique() == C).all()
    truth = _read(out, F.TRUTH_FILE)
    merged = imp.merge(truth, on=["request_id", "item_id"], validate="one_to_one")
    assert len(merged) == len(imp)
    p = merged["p_click"].astype(float)
    assert ((p > 0) & (p < 1)).all()
    day = (imp["timestamp"] - CFG.start_timestamp) // DAY
    assert set(day) == set(range(CFG.history_days, CFG.history_days + CFG.request_days))
    eval_start = CFG.start_timestamp + D.eval_day(CFG) * DAY
    assert summary["eval_day_start_timestamp"] == eval_start
    assert summary["num_eval_requests"] == imp.loc[
        imp["timestamp"] >= eval_start, "request_id"].nunique()


def test_same_seed_same_bytes_other_seed_other_files(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    S.simulate(a, TINY)
    S.simulate(b, TINY)
    S.simulate(c, dataclasses.replace(TINY, seed=TINY.seed + 1))
    names = sorted(os.listdir(a))
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert match == names and not mismatch and not errors
    for name in (F.IMPRESSIONS_FILE, F.BEHAVIORS_FILE, F.ITEMS_FILE):
        assert not filecmp.cmp(os.path.join(a, name), os.path.join(c, name),
                               shallow=False)


def test_embeddings_have_configured_length_and_are_finite(raw):
    out, _ = raw
    emb = _embeddings(out)
    m = np.stack(list(emb.values()))
    assert m.shape == (CFG.num_items, CFG.embedding_dim)
    assert np.isfinite(m).all()
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-5)


def test_empty_triggers_are_recovered_by_the_derivation_rule(tables, derived, world):
    imp, _ = tables
    intended = {}
    for day in range(CFG.history_days, D.eval_day(CFG) + 1):
        log = D.simulate_day(world, CFG, day)
        ids = S.item_ids(world)[log.trigger]
        users = S.user_ids(world)[log.user]
        intended.update(zip(zip(users, log.request_ts.tolist()), ids))
    requests = imp.drop_duplicates("request_id").set_index("request_id")
    empty = requests["trigger_item_id"] == ""
    assert empty.sum() > 100
    for rid, row in requests.iterrows():
        want = intended[(row["user_id"], row["timestamp"])]
        assert derived[rid] == want, rid  # empty or not, the rule recovers it
        if not empty[rid]:
            assert row["trigger_item_id"] == want


def test_candidate_clicks_enter_behaviors_only_after_the_request(tables):
    imp, beh = tables
    clicked = imp[imp["clicked"] == 1]
    later = clicked.merge(beh[beh["behavior"] == "click"], on=["user_id", "item_id"],
                          suffixes=("_req", "_beh"))
    later = later[(later["timestamp_beh"] > later["timestamp_req"])
                  & (later["timestamp_beh"] <= later["timestamp_req"] + 3600)]
    assert later["request_id"].nunique() == clicked["request_id"].nunique()
    assert len(later.drop_duplicates(["request_id", "item_id"])) == len(clicked)


def test_cold_items_appear_only_on_the_eval_day(tables, world):
    imp, beh = tables
    cold = set(S.item_ids(world)[world.cold])
    assert len(cold) == round(CFG.cold_item_fraction * CFG.num_items)
    eval_start = CFG.start_timestamp + D.eval_day(CFG) * DAY
    assert not cold & set(imp.loc[imp["timestamp"] < eval_start, "item_id"])
    assert not cold & set(beh.loc[beh["timestamp"] < eval_start, "item_id"])
    assert cold & set(imp.loc[imp["timestamp"] >= eval_start, "item_id"])


def test_similarity_levels_are_separated(raw, world):
    out, _ = raw
    emb = _embeddings(out)
    m = np.stack([emb[i] for i in S.item_ids(world)])
    rng = np.random.default_rng(0)
    a, b = rng.integers(len(m), size=(2, 200_000))
    keep = a != b
    a, b = a[keep], b[keep]
    cos = np.einsum("ij,ij->i", m[a], m[b])
    same_cluster = world.item_cluster[a] == world.item_cluster[b]
    same_cat = world.item_category[a] == world.item_category[b]
    same_group = world.item_group[a] == world.item_group[b]
    near = cos[same_cluster].mean()
    category = cos[same_cat & ~same_cluster].mean()
    complement = cos[same_group & ~same_cat].mean()
    unrelated = cos[~same_group].mean()
    assert near > 0.9 and 0.55 < category < 0.85
    assert 0.15 < complement < 0.5 and abs(unrelated) < 0.1
    assert near > category + 0.1 > complement + 0.2 > unrelated + 0.3


def test_truth_is_an_informative_oracle(raw, tables):
    out, _ = raw
    imp, _ = tables
    truth = _read(out, F.TRUTH_FILE)
    merged = imp.merge(truth, on=["request_id", "item_id"])
    auc = roc_auc_score(merged["clicked"], merged["p_click"].astype(float))
    assert auc > 0.72
    # a position-only score is far weaker than the oracle, but not useless
    assert 0.5 < roc_auc_score(merged["clicked"], -merged["position"]) < auc - 0.1


def test_specific_users_concentrate_clicks_on_one_relation_level(raw, tables,
                                                                 derived):
    """Levels re-derived from the files alone: near-copy if cos >= 0.85, same category
    from items.csv, complement if the category mean vectors have cos >= 0.2. A user's
    concentration is the top share of their per-level CTRs (normalised to sum 1), so
    that the candidate mix does not count as intent."""
    out, _ = raw
    imp, _ = tables
    emb = _embeddings(out)
    items = _read(out, F.ITEMS_FILE).set_index("item_id")
    ids = items.index.to_numpy()
    m = np.stack([emb[i] for i in ids])
    cat = items["category_id"].to_numpy()
    cats = np.unique(cat)
    cat_mean = np.stack([m[cat == c].mean(axis=0) for c in cats])
    cat_mean /= np.linalg.norm(cat_mean, axis=1, keepdims=True)
    cat_cos = cat_mean @ cat_mean.T

    t = items.index.get_indexer(imp["request_id"].map(derived))
    i = items.index.get_indexer(imp["item_id"])
    assert (t >= 0).all() and (i >= 0).all()
    cos = np.einsum("ij,ij->i", m[t], m[i])
    tc, ic = np.searchsorted(cats, cat[t]), np.searchsorted(cats, cat[i])
    level = np.select([cos >= 0.85, tc == ic, cat_cos[tc, ic] >= 0.2], [0, 1, 2], 3)

    shown = pd.crosstab(imp["user_id"], level)
    clicks = pd.crosstab(imp["user_id"], level, values=imp["clicked"], aggfunc="sum")
    rate = clicks / shown
    top = (rate.max(axis=1) / rate.sum(axis=1))[clicks.sum(axis=1) >= 10]
    segment = _read(out, F.USERS_FILE).set_index("user_id").loc[top.index, "segment"]
    specific, broad = top[segment == "specific"], top[segment == "broad"]
    assert len(specific) > 30 and len(broad) > 30
    assert specific.mean() > broad.mean() + 0.12


@pytest.mark.parametrize("change, field", [
    (dict(num_items=50), "num_items"),
    (dict(num_categories=3), "num_categories"),
    (dict(candidate_level_mix=(1.0, 0.0)), "candidate_level_mix"),
    (dict(start_timestamp=1_700_006_401), "start_timestamp"),
    (dict(target_ctr=1.0), "target_ctr"),
    (dict(request_days=1), "request_days"),
])
def test_bad_simulation_config_names_the_field(change, field):
    with pytest.raises(ConfigError, match=f"simulation.{field}"):
        dataclasses.replace(CFG, **change)
