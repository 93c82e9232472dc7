"""Benchmark: `daian convert taobao` on synthetic files in the public format.

Generates, under a work folder (default /tmp/daian_bench_taobao, deleted afterwards
unless --keep), a raw_sample.csv of N rows (default 26,000,000, the real file's size)
with the real file's columns and shape, and matching ad_feature.csv, user_profile.csv
and a modest behavior_log.csv (N/10 rows; the real one has 700M). Users and ad groups
scale with N, to the real counts at the default N (1.14M users, 847k ad groups):

- per user, a heavy-tailed number of impressions (gamma-Poisson, mean N/users ~ 23),
  in requests of 1-4 ads sharing one second, in sessions (requests ~2 min apart) at
  random times of 8 days (2017-05-06..13 Beijing time);
- ad groups by a power-law popularity, clk ~ Bernoulli(5 %), pid one of two slots;
- rows shuffled within blocks of 50k users (the real file is not sorted);
- ad_feature: about 6.7k categories, 255k advertisers, 30 % `NULL` brands, log-normal
  prices; user_profile: 93 % of the users, pvalue_level / new_user_class_level
  (the header's trailing space included) often empty.

Then runs the converter (base config + configs/taobao.yaml) in a subprocess, measuring
wall time, rows/s of raw_sample.csv and the peak RSS of its process tree (psutil,
polled every 0.1 s; the converter's own getrusage maximum, from its report, as a
cross-check), and prints the converter's phase times and main counts. The files are
generated in a child process of their own, so that this process stays small (on Linux
a child's getrusage maximum starts from its parent's RSS at the fork).

usage: python bench/bench_convert_taobao.py [--rows 26000000] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench_sample_builder import measure  # wall time and peak RSS of a process tree

REPO = Path(__file__).resolve().parents[1]
REAL_ROWS, REAL_USERS, REAL_ADS = 26_557_961, 1_141_729, 846_811
DAY0 = 1_494_000_000  # 2017-05-06 00:00 Beijing
DAYS = 8
USER_BLOCK = 50_000
PIDS = np.array(["430548_1007", "430539_1007"])


def generate(work: Path, rows: int, seed: int = 0) -> dict:
    """Write the four files into `work`; returns their sizes."""
    rng = np.random.default_rng(seed)
    n_users = max(100, round(REAL_USERS * rows / REAL_ROWS))
    n_ads = max(100, round(REAL_ADS * rows / REAL_ROWS))
    _ad_feature(work / "ad_feature.csv", n_ads, rng)
    _user_profile(work / "user_profile.csv", n_users, rng)
    written = _raw_sample(work / "raw_sample.csv", rows, n_users, n_ads, rng)
    _behavior_log(work / "behavior_log.csv", rows // 10, n_users, rng)
    return {"raw_sample_rows": written, "users": n_users, "ad_groups": n_ads,
            "behavior_log_rows": rows // 10}


def _ad_feature(path: Path, n: int, rng) -> None:
    brand = rng.integers(1, 460_000, n).astype(str).astype(object)
    brand[rng.random(n) < 0.3] = "NULL"
    pd.DataFrame({
        "adgroup_id": np.arange(1, n + 1),
        "cate_id": (6_769 * rng.random(n) ** 2).astype(np.int64) + 1,
        "campaign_id": rng.integers(1, 423_437, n),
        "customer": rng.integers(1, 255_876, n),
        "brand": brand,
        "price": np.round(np.exp(rng.normal(5.0, 1.5, n)), 2),
    }).to_csv(path, index=False, lineterminator="\n")


def _user_profile(path: Path, n_users: int, rng) -> None:
    users = np.flatnonzero(rng.random(n_users) < 0.93) + 1
    n = len(users)

    def maybe_empty(values, p_empty):
        out = values.astype(str).astype(object)
        out[rng.random(n) < p_empty] = ""
        return out

    df = pd.DataFrame({
        "userid": users, "cms_segid": rng.integers(0, 97, n),
        "cms_group_id": rng.integers(0, 13, n),
        "final_gender_code": rng.integers(1, 3, n), "age_level": rng.integers(0, 7, n),
        "pvalue_level": maybe_empty(rng.integers(1, 4, n), 0.54),
        "shopping_level": rng.integers(1, 4, n), "occupation": rng.integers(0, 2, n),
        "new_user_class_level ": maybe_empty(rng.integers(1, 5, n), 0.32),
    })
    df.to_csv(path, index=False, lineterminator="\n")


def _raw_sample(path: Path, rows: int, n_users: int, n_ads: int, rng) -> int:
    mean = rows / n_users
    lam = rng.gamma(0.7, mean / 0.7, n_users)
    per_user = np.maximum(1, rng.poisson(lam))
    per_user = np.maximum(1, np.round(per_user * rows / per_user.sum())).astype(np.int64)
    written = 0
    with open(path, "w", newline="") as f:
        f.write("user,time_stamp,adgroup_id,pid,nonclk,clk\n")
        for lo in range(0, n_users, USER_BLOCK):
            block = _block(lo, per_user[lo:lo + USER_BLOCK], n_ads, rng)
            block = block.iloc[: rows - written]
            block.to_csv(f, header=False, index=False, lineterminator="\n")
            written += len(block)
            if written >= rows:
                break
    return written


def _block(first_user: int, counts: np.ndarray, n_ads: int, rng) -> pd.DataFrame:
    """Impressions of users first_user + 1 ..., `counts` each, shuffled."""
    n = int(counts.sum())
    user = np.repeat(np.arange(first_user + 1, first_user + 1 + len(counts)), counts)
    # requests of 1-4 ads: a new request starts where a uniform draw says so
    new_req = (rng.random(n) < 0.55) | np.r_[True, user[1:] != user[:-1]]
    req = np.cumsum(new_req) - 1
    req_user = user[new_req]
    # sessions: a new one every ~4 requests, at a random second of the 8 days
    new_sess = (rng.random(len(req_user)) < 0.25) | np.r_[True, req_user[1:]
                                                           != req_user[:-1]]
    sess = np.cumsum(new_sess) - 1
    start = DAY0 + rng.integers(0, DAYS * 86400 - 3 * 3600, sess[-1] + 1)
    step = rng.exponential(120.0, len(req_user)).astype(np.int64) + 1
    step[new_sess] = 0
    elapsed = np.cumsum(step)
    req_ts = start[sess] + elapsed - elapsed[np.flatnonzero(new_sess)][sess]
    ad = (n_ads * rng.random(n) ** 3).astype(np.int64) + 1
    clk = (rng.random(n) < 0.05).astype(np.int64)
    df = pd.DataFrame({"user": user, "time_stamp": req_ts[req], "adgroup_id": ad,
                       "pid": PIDS[rng.integers(0, 2, n)], "nonclk": 1 - clk,
                       "clk": clk})
    return df.iloc[rng.permutation(n)]


def _behavior_log(path: Path, n: int, n_users: int, rng) -> None:
    with open(path, "w", newline="") as f:
        f.write("user,time_stamp,btag,cate,brand\n")
        for lo in range(0, n, 1_000_000):
            m = min(1_000_000, n - lo)
            brand = rng.integers(1, 460_000, m).astype(str).astype(object)
            brand[rng.random(m) < 0.3] = "NULL"
            pd.DataFrame({
                "user": rng.integers(1, n_users + 1, m),
                "time_stamp": DAY0 - 14 * 86400 + rng.integers(0, 22 * 86400, m),
                "btag": np.array(["pv", "cart", "fav", "buy"])[
                    rng.choice(4, m, p=[0.9, 0.04, 0.03, 0.03])],
                "cate": rng.integers(1, 12_000, m), "brand": brand,
            }).to_csv(f, header=False, index=False, lineterminator="\n")


CONVERT = """
import json, sys
from daian_tf.core.config import DEFAULT_CONFIG_FILE, load_config
from daian_tf.data.convert.taobao import convert_taobao
cfg = load_config(DEFAULT_CONFIG_FILE, sys.argv[3]).taobao
print(json.dumps(convert_taobao(sys.argv[1], sys.argv[2], cfg)))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=26_000_000)
    ap.add_argument("--workdir", default="/tmp/daian_bench_taobao")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.workdir)
    if args.generate_only:  # the child of the run below
        print(json.dumps(generate(work / "src", args.rows)))
        return
    shutil.rmtree(work, ignore_errors=True)
    (work / "src").mkdir(parents=True)
    try:
        # generated in a child process, so that this one stays small: on Linux a
        # child's getrusage maximum starts from its parent's RSS at the fork
        t0 = time.perf_counter()
        sizes = json.loads(subprocess.run(
            [sys.executable, __file__, "--rows", str(args.rows), "--workdir",
             str(work), "--generate-only"], check=True, capture_output=True,
            text=True).stdout.splitlines()[-1])
        gen_s = time.perf_counter() - t0
        mib = {p.name: round(p.stat().st_size / 2**20, 1)
               for p in sorted((work / "src").iterdir())}
        print(f"generated in {gen_s:.0f} s: {sizes}; MiB {mib}", flush=True)
        m = measure([sys.executable, "-c", CONVERT, str(work / "src"), str(work / "raw"),
                     str(REPO / "configs" / "taobao.yaml")])
        report = json.loads(m["stdout"])
        out_mib = {p.name: round(p.stat().st_size / 2**20, 1)
                   for p in sorted((work / "raw").iterdir())}
        n = sizes["raw_sample_rows"]
        own_peak = max(report["peak_rss_mib_by_phase_end"].values())
        print(f"raw_sample rows: {n:,}  wall: {m['seconds']:.1f} s  "
              f"rows/s: {n / m['seconds']:,.0f}  peak RSS (tree, polled): "
              f"{m['peak_rss_mib']:,.0f} MiB  (the converter's own getrusage "
              f"maximum: {own_peak:,.0f} MiB)")
        own = sum(report["timing_s"].values())
        print(f"converter's own time (phases, without Python start-up and imports): "
              f"{own:.1f} s, {n / own:,.0f} rows/s; phases (s):",
              json.dumps(report["timing_s"]))
        print("peak RSS (MiB) at the end of each phase:",
              json.dumps(report["peak_rss_mib_by_phase_end"]))
        print("requests:", json.dumps({k: report["requests"][k] for k in (
            "total", "kept", "dropped_no_trigger", "train", "eval", "triggers_tied")}))
        print("impressions written:", report["impressions"]["written"],
              " embedding:", json.dumps({k: report["embedding"][k] for k in (
                  "matrix_items", "matrix_users", "matrix_nonzeros",
                  "items_with_cooccurrence")}))
        print("output MiB:", out_mib)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
