"""A simulated trigger-induced recommendation (TIR) world, written as raw TIR logs.

`simulate(out_dir, cfg)` writes the six files of spec/DATA.md §1 (names from
`features.py`) and returns a JSON-able summary. Same seed, byte-identical files.

The world, built so that DAIAN's ideas (spec/DAIAN.md) decide the click:

* **Catalog.** Categories are grouped into super-groups. Category centroids are unit
  vectors in R^d: categories of one super-group share a direction (centroid cosine
  about 0.45, "complements"), the others are about orthogonal. An item's multimodal
  vector is its centroid plus noise (same-category cosine about 0.7). Items come in
  clusters of near-copies (cosine about 0.95, same category, often the same brand,
  shop and title). So trigger-candidate similarity falls into four clear *relation
  levels*: near-copy > same category > complement > unrelated. Each item has a brand
  of its category, a shop, a log-normal price per category, an exposure weight, and a
  quality `q_i` that only the item id can reveal (no side feature and no embedding
  carries it). A few *cold* items never show up before the eval day.
* **Users.** Profile `gender`, `age_bucket`, `segment`. A user's intent is a personal
  mixture `pi_u` over the four relation levels, drawn from a Dirichlet whose mean leans
  with age and gender and whose concentration depends on the segment: `specific` users
  put almost all mass on one level, `broad` users spread it, `mixed` lie between.
  Each user also prefers some super-groups (two of them are favourites) and has an
  activity rate.
* **Timeline.** `history_days` days of behaviour, then `request_days` request days, all
  aligned to UTC days from `start_timestamp`; the last request day is the eval day.
  Every day, each user has sessions (Poisson, in distinct half-hour slots) and
  background browse behaviours (click/cart/fav/buy in the preferred super-groups). A
  session is a trigger click (a `click` behaviour), then 5-120 s later a request whose
  candidates mix the relation levels (`candidate_level_mix`), shuffled into positions
  0..C-1. Clicks on candidates are written as behaviours 1-900 s *after* the request,
  so they enter later histories only. Sessions on history days write behaviours only;
  on request days they also write impressions and truth. A session's window
  [trigger, request] holds no other behaviour of its user, so for requests logged
  with an empty trigger id the user's most recent click before the request (within
  4 h) is the trigger, exactly the sample builder's derivation rule.
* **Clicks.** The request intent is `pi_r ~ Dirichlet(kappa * pi_u * tilt_g)`, with a
  tilt per trigger super-group. A candidate `i` at position `p` is clicked with
  `p_click = sigmoid(b + a log pi_r[level(trigger, i)] + q_i + f [group(i) favourite]
  - c log(1 + p))`; `b` is solved so that the mean CTR is `target_ctr`. truth.csv holds
  this `p_click`. Position is not a model input, and `pi_r` is only partly visible
  through the history (past sessions' clicks) and the profile, so the oracle stays
  above any model.

`build_world` and `sim_days.simulate_day` expose the hidden state (intended triggers,
relation levels, intents) for tests and analyses; the files never carry it.

The code: `sim_world` draws the catalog and users, `sim_days` the request days and
their clicks, `sim_draws` holds the seeded streams and vectorised draws they share;
this module calibrates the world (`build_world`) and writes the files (`simulate`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence, TextIO

import numpy as np
import pandas as pd

from daian_tf.core import features as F
from daian_tf.core.config import SimulationConfig
from daian_tf.data.catalog import write_embeddings
from daian_tf.data.sim_days import day_start, eval_day, simulate_day, solve_bias
from daian_tf.data.sim_world import (AGE_BUCKETS, GENDERS, LEVELS, NUM_LEVELS, SEGMENTS,
                                     World, draw_world)

USER_COLUMNS = ("gender", "age_bucket", "segment")  # users.csv profile columns


def build_world(cfg: SimulationConfig) -> World:
    """The catalog and users of the world of `cfg` (deterministic per seed);
    the click bias is already solved for `cfg.target_ctr`."""
    world = draw_world(cfg)
    return dataclasses.replace(world, bias=solve_bias(world, cfg))


# ----------------------------------------------------------------------------- ids


def _width(n: int, minimum: int) -> int:
    return max(minimum, len(str(max(n - 1, 0))))


def _ids(prefix: str, codes: np.ndarray, n: int, minimum: int) -> np.ndarray:
    w = _width(n, minimum)
    return np.array([f"{prefix}{c:0{w}d}" for c in codes.tolist()], dtype=object)


def item_ids(world: World) -> np.ndarray:
    """(N,) item id strings (`i000123`) by item index."""
    return _ids("i", world.item_code, len(world.item_code), 6)


def user_ids(world: World) -> np.ndarray:
    """(U,) user id strings (`u000123`) by user index."""
    n = len(world.user_gender)
    return _ids("u", np.arange(n), n, 6)


def _request_id(counter: np.ndarray) -> np.ndarray:
    return _ids("r", counter, 0, 8)


# -------------------------------------------------------------------------- writing


def _write_catalog(out_dir: str, world: World) -> None:
    ids = item_ids(world)
    K = len(world.category_code)
    n_brands = int(world.item_brand.max()) + 1
    n_shops = int(world.item_shop.max()) + 1
    items = pd.DataFrame({
        "item_id": ids,
        "category_id": _ids("c", world.category_code[world.item_category], K, 3),
        "brand_id": _ids("b", world.item_brand, n_brands, 4),
        "shop_id": _ids("s", world.item_shop, n_shops, 3),
        "price": world.item_price,
        "title": world.item_title,
    })
    order = np.argsort(ids)
    items.iloc[order].to_csv(os.path.join(out_dir, F.ITEMS_FILE), index=False,
                             float_format="%.2f", lineterminator="\n")
    write_embeddings(os.path.join(out_dir, F.EMBEDDINGS_FILE), ids[order].tolist(),
                     world.embedding[order])

    users = pd.DataFrame({
        F.USER_ID: user_ids(world),
        USER_COLUMNS[0]: np.asarray(GENDERS, dtype=object)[world.user_gender],
        USER_COLUMNS[1]: np.asarray(AGE_BUCKETS, dtype=object)[world.user_age],
        USER_COLUMNS[2]: np.asarray(SEGMENTS, dtype=object)[world.user_segment],
    })
    users.to_csv(os.path.join(out_dir, F.USERS_FILE), index=False, lineterminator="\n")


def _open_csv(path: str, columns: Sequence[str]) -> TextIO:
    """A new CSV file at `path` with its header line written."""
    f = open(path, "w", newline="")
    f.write(",".join(columns) + "\n")
    return f


def simulate(out_dir: str, cfg: SimulationConfig) -> dict:
    """Write the raw TIR logs of the world of `cfg` into `out_dir` (DATA.md §1).

    Days are simulated and appended one at a time, so memory stays bounded by one
    day's volume. Returns a JSON-able summary of what was written.
    """
    os.makedirs(out_dir, exist_ok=True)
    world = build_world(cfg)
    _write_catalog(out_dir, world)
    items, users = item_ids(world), user_ids(world)
    first_request_day, last = cfg.history_days, eval_day(cfg)

    beh_cols = F.BEHAVIORS_REQUIRED + F.BEHAVIORS_OPTIONAL
    imp_cols = F.IMPRESSIONS_REQUIRED + F.IMPRESSIONS_OPTIONAL
    counts = dict(behaviors=0, requests=0, eval_requests=0, impressions=0, clicks=0,
                  empty_triggers=0, cold_shown_eval=0)
    level_shown = np.zeros(NUM_LEVELS, dtype=np.int64)
    level_clicks = np.zeros(NUM_LEVELS, dtype=np.int64)
    with _open_csv(os.path.join(out_dir, F.BEHAVIORS_FILE), beh_cols) as fb, \
            _open_csv(os.path.join(out_dir, F.IMPRESSIONS_FILE), imp_cols) as fi, \
            _open_csv(os.path.join(out_dir, F.TRUTH_FILE), F.TRUTH_REQUIRED) as ft:
        for day in range(last + 1):
            log = simulate_day(world, cfg, day)
            order = np.lexsort((log.behavior_item, log.behavior_user, log.behavior_ts))
            pd.DataFrame(dict(zip(beh_cols, (
                users[log.behavior_user[order]], items[log.behavior_item[order]],
                log.behavior_ts[order],
                np.asarray(F.BEHAVIOR_TYPES, dtype=object)[log.behavior_type[order]],
            )))).to_csv(fb, header=False, index=False, lineterminator="\n")
            counts["behaviors"] += len(order)
            if day < first_request_day:
                continue
            R, C = log.candidates.shape
            rid = np.repeat(_request_id(counts["requests"] + np.arange(R)), C)
            trig = np.where(log.empty_trigger, "", items[log.trigger])
            pd.DataFrame(dict(zip(imp_cols, (
                rid, np.repeat(users[log.user], C), np.repeat(log.request_ts, C),
                np.repeat(trig, C), items[log.candidates.reshape(-1)],
                log.clicked.reshape(-1).astype(np.int64), np.tile(np.arange(C), R),
            )))).to_csv(fi, header=False, index=False, lineterminator="\n")
            pd.DataFrame(dict(zip(F.TRUTH_REQUIRED, (
                rid, items[log.candidates.reshape(-1)], log.p_click.reshape(-1),
            )))).to_csv(ft, header=False, index=False, float_format="%.6f",
                        lineterminator="\n")
            counts["requests"] += R
            counts["impressions"] += R * C
            counts["clicks"] += int(log.clicked.sum())
            counts["empty_triggers"] += int(log.empty_trigger.sum())
            level_shown += np.bincount(log.level.reshape(-1), minlength=NUM_LEVELS)
            level_clicks += np.bincount(log.level[log.clicked], minlength=NUM_LEVELS)
            if day == last:
                counts["eval_requests"] = R
                counts["cold_shown_eval"] = int(np.unique(
                    log.candidates[world.cold[log.candidates]]).size)

    imps = max(counts["impressions"], 1)
    return {
        "out_dir": os.path.abspath(out_dir),
        "seed": cfg.seed,
        "num_items": len(items),
        "num_users": len(users),
        "num_categories": cfg.num_categories,
        "num_behaviors": counts["behaviors"],
        "num_requests": counts["requests"],
        "num_train_requests": counts["requests"] - counts["eval_requests"],
        "num_eval_requests": counts["eval_requests"],
        "num_impressions": counts["impressions"],
        "ctr": counts["clicks"] / imps,
        "empty_trigger_fraction": counts["empty_triggers"] / max(counts["requests"], 1),
        "num_cold_items": int(world.cold.sum()),
        "num_cold_items_shown_on_eval_day": counts["cold_shown_eval"],
        "first_request_timestamp": day_start(cfg, first_request_day),
        "eval_day_start_timestamp": day_start(cfg, last),
        "click_bias": world.bias,
        "level_share": dict(zip(LEVELS, (level_shown / imps).round(4).tolist())),
        "level_ctr": dict(zip(LEVELS, (level_clicks / np.maximum(level_shown, 1))
                              .round(4).tolist())),
        "segment_share": dict(zip(SEGMENTS, (np.bincount(
            world.user_segment, minlength=len(SEGMENTS)) / len(users))
            .round(4).tolist())),
    }
