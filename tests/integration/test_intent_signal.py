"""`daian inspect`: the signal report of built samples, recomputed independently from
the TFRecords with pandas and scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from daian_tf.cli import main
from daian_tf.core import features as F
from daian_tf.core.config import SampleConfig, SimulationConfig
from daian_tf.data.sample_builder import run_build_samples
from daian_tf.data.simulator import simulate
from daian_tf.evaluation.intent_signal import USER_PRIOR, inspect_samples

N = 6


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> str:
    raw = str(tmp_path_factory.mktemp("raw"))
    simulate(raw, SimulationConfig(seed=5, num_users=80, num_items=300,
                                   num_categories=10, num_super_groups=3))
    out = str(tmp_path_factory.mktemp("samples"))
    run_build_samples(raw, out, SampleConfig(num_intent_levels=N))
    return out


def _frame(samples: str, split: str) -> pd.DataFrame:
    rows = []
    for path in tf.io.gfile.glob(f"{samples}/{split}/*.tfrecord.gz"):
        for rec in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            f = tf.train.Example.FromString(rec.numpy()).features.feature
            rows.append({"user": f[F.USER_ID].bytes_list.value[0],
                         "item": f[F.TARGET_ITEM_ID].bytes_list.value[0],
                         "label": f[F.LABEL].int64_list.value[0],
                         "sim": f[F.TARGET_SIM].float_list.value[0]})
    return pd.DataFrame(rows)


def _gauc(df: pd.DataFrame, col: str) -> float:
    num = den = 0.0
    for _, g in df.groupby("user"):
        if 0 < g.label.sum() < len(g):
            num += len(g) * roc_auc_score(g.label, g[col])
            den += len(g)
    return num / den


def test_report_matches_an_independent_recomputation(samples):
    report = inspect_samples(samples)
    lo, hi = report["sim_range"]
    with open(f"{samples}/report.json") as f:
        assert [lo, hi] == json.load(f)["sim_range"]
    tr, ev = _frame(samples, "train"), _frame(samples, "eval")
    edges = lo + (hi - lo) * np.arange(1, N) / N  # the I-2 level edges, walked by hand
    for df in (tr, ev):
        df["level"] = [int(np.sum(s >= edges)) for s in df.sim.astype(np.float64)]
    for name, df in (("train", tr), ("eval", ev)):
        assert report["splits"][name]["samples"] == len(df)
        ctr = df.groupby("level").label.mean().reindex(range(N)).fillna(0).to_numpy()
        np.testing.assert_allclose(report["level_ctr"][name]["ctr"], ctr, atol=1e-4)

    level_ctr = tr.groupby("level").label.mean().reindex(range(N)).fillna(0)
    ev["level_ctr"] = ev.level.map(level_ctr)
    ev["popularity"] = ev["item"].map(tr[tr.label == 1]["item"].value_counts()).fillna(0)
    cells = tr.groupby(["user", "level"]).label.agg(["sum", "size"])
    ev["user_level_ctr"] = [
        (cells.loc[(u, k), "sum"] + USER_PRIOR * level_ctr[k])
        / (cells.loc[(u, k), "size"] + USER_PRIOR) if (u, k) in cells.index
        else level_ctr[k] for u, k in zip(ev.user, ev.level)]
    ev["similarity"] = ev.sim
    for name in ("similarity", "level_ctr", "user_level_ctr", "popularity"):
        got = report["eval_rankers"][name]
        assert got["auc"] == pytest.approx(roc_auc_score(ev.label, ev[name]), abs=1e-4), name
        assert got["gauc"] == pytest.approx(_gauc(ev, name), abs=1e-4), name
    # the simulated world decides clicks by the similarity level: the level ranker beats
    # the raw similarity and chance
    assert report["eval_rankers"]["level_ctr"]["gauc"] > 0.55


def test_cli_prints_the_tables_and_writes_json(samples, tmp_path, capsys):
    out = tmp_path / "signal.json"
    assert main(["inspect", samples, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "CTR by level" in text and "user_level_ctr" in text
    assert json.loads(out.read_text())["num_levels"] == N
