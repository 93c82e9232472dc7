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

`build_world` and `simulate_day` expose the hidden state (intended triggers, relation
levels, intents) for tests and analyses; the files never carry it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Sequence, TextIO, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from daian_tf.data import features as F
from daian_tf.training.config import SimulationConfig

LEVELS = ("near_copy", "same_category", "complement", "unrelated")
NUM_LEVELS = len(LEVELS)
GENDERS = ("F", "M")
AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55+")
SEGMENTS = ("specific", "mixed", "broad")
USER_COLUMNS = ("gender", "age_bucket", "segment")  # users.csv profile columns

_SEGMENT_PROBS = (0.4, 0.3, 0.3)
_SEGMENT_CONCENTRATION = (0.15, 0.6, 4.0)  # Dirichlet alpha per level, times L * mean
# population lean towards similar items, as in the paper's shirt example (43.5% strongly
# relevant, 32.1% relevant, 24.4% irrelevant): softmax gives about 0.42/0.31/0.19/0.08
_INTENT_BASE_LOGITS = np.array([0.8, 0.5, 0.0, -0.8])
_INTENT_AGE_TILT = np.array([0.8, 0.4, -0.4, -0.8])  # per age step from the middle
_INTENT_GENDER_TILT = np.array([[0.0, 0.0, 0.5, 0.0], [0.5, 0.0, 0.0, 0.0]])
_GROUP_TILT_STD = 0.5  # per-super-group tilt of the request intent (log scale)
_INTENT_FLOOR = 0.05  # pi <- (1 - floor) pi + floor / L, so log pi stays finite
_GROUP_PREF_ALPHA = 0.5  # Dirichlet concentration of the super-group preference
_NUM_FAVOURITES = 2

_COMPLEMENT_COS = 0.45  # centroid cosine inside a super-group
_ITEM_NOISE = 0.65  # same-category cosine ~ 1 / (1 + noise^2) ~ 0.7
_COPY_NOISE = 0.33  # near-copy cosine ~ 1 / sqrt(1 + noise^2) ~ 0.95
_COPY_SAME_BRAND = 0.7
_COPY_SAME_SHOP = 0.5
_EXPOSURE_STD = 1.0  # log-normal exposure weights: head and tail items
_MIN_WARM_PER_CATEGORY = 4  # non-cold items kept in every category

_DAY = 86_400
_SLOT = 1_800  # sessions take distinct half-hour slots of a user-day
_NUM_SLOTS = _DAY // _SLOT
_TRIGGER_OFFSET = (0, 300)  # trigger time within its slot, [lo, hi)
_REQUEST_DELAY = (5, 121)  # request - trigger, seconds
_CLICK_DELAY = (1, 901)  # candidate click - request, seconds
_BACKGROUND_OFFSET = (1_350, _SLOT)  # after every session window of the slot
_BEHAVIOR_PROBS = (0.7, 0.12, 0.1, 0.08)  # background click, cart, fav, buy
_CLICK = F.BEHAVIOR_TYPES.index("click")
_MAX_SESSIONS = _NUM_SLOTS
_WEIGHTED_ROUNDS = 30  # rejection-sampling rounds before falling back to uniform

_ADJECTIVES = ("classic", "premium", "basic", "smart", "compact", "deluxe", "eco",
               "pro", "mini", "soft", "urban", "vintage")
_NOUNS = ("shirt", "lamp", "mug", "phone case", "sneaker", "backpack", "kettle",
          "headset", "notebook", "blender", "jacket", "watch", "tent", "pillow",
          "charger", "sofa", "skirt", "drill", "speaker", "bottle")


@dataclass(frozen=True)
class World:
    """The static part of a simulated world. Items are indexed so that super-groups,
    categories inside them and near-copy clusters inside categories are contiguous.

    Shapes: N items, K categories, G super-groups, U users, L = 4 relation levels.
    """

    item_code: np.ndarray  # (N,) int, the number in the written item id
    item_category: np.ndarray  # (N,) int in [0, K)
    item_group: np.ndarray  # (N,) int in [0, G)
    item_cluster: np.ndarray  # (N,) int, near-copy cluster
    cluster_lo: np.ndarray  # (N,) first item index of each item's cluster
    cluster_size: np.ndarray  # (N,) size of each item's cluster
    category_range: np.ndarray  # (K, 2) [lo, hi) item indices
    group_range: np.ndarray  # (G, 2) [lo, hi) item indices
    category_code: np.ndarray  # (K,) int, the number in the written category id
    item_brand: np.ndarray  # (N,) int brand code
    item_shop: np.ndarray  # (N,) int
    item_price: np.ndarray  # (N,) float
    item_title: Tuple[str, ...]  # (N,)
    embedding: np.ndarray  # (N, d) float32, unit rows
    quality: np.ndarray  # (N,)
    exposure: np.ndarray  # (N,) positive exposure weights
    cold: np.ndarray  # (N,) bool
    user_gender: np.ndarray  # (U,) int
    user_age: np.ndarray  # (U,) int
    user_segment: np.ndarray  # (U,) int
    user_intent: np.ndarray  # (U, L) pi_u
    user_group_pref: np.ndarray  # (U, G) rows sum to 1
    user_favourite: np.ndarray  # (U, G) bool
    user_activity: np.ndarray  # (U,) mean 1
    group_tilt: np.ndarray  # (G, L) multiplicative intent tilt of a trigger group
    bias: float = 0.0  # click-logit bias b, solved for target_ctr


@dataclass(frozen=True)
class DayLog:
    """Everything simulated on one day, hidden state included.

    Shapes: R sessions of the day in chronological order, C candidates (column =
    position), B behaviours (unsorted).
    """

    day: int
    user: np.ndarray  # (R,) int
    trigger: np.ndarray  # (R,) int item index
    trigger_ts: np.ndarray  # (R,) int
    request_ts: np.ndarray  # (R,) int
    empty_trigger: np.ndarray  # (R,) bool, trigger id left empty in impressions.csv
    intent: np.ndarray  # (R, L) pi_r
    candidates: np.ndarray  # (R, C) int item index
    level: np.ndarray  # (R, C) int relation level to the trigger
    p_click: np.ndarray  # (R, C)
    clicked: np.ndarray  # (R, C) bool
    behavior_user: np.ndarray  # (B,)
    behavior_item: np.ndarray  # (B,)
    behavior_ts: np.ndarray  # (B,)
    behavior_type: np.ndarray  # (B,) index into features.BEHAVIOR_TYPES


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


# ------------------------------------------------------------------------- sampling


def _rng(cfg: SimulationConfig, *stream: int) -> np.random.Generator:
    """An independent generator per (seed, stream...), so days can run alone."""
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, *stream]))


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of `probs` (R, K) → (R,) int."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cum[:, -1:]
    return np.minimum((u >= cum).sum(axis=1), probs.shape[1] - 1)


def _dirichlet_rows(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """One Dirichlet draw per row of `alpha` (R, K) → (R, K); a row that underflows
    (all gammas 0 for tiny alphas) falls back to the normalised alpha."""
    g = rng.standard_gamma(alpha)
    s = g.sum(axis=1, keepdims=True)
    mean = alpha / alpha.sum(axis=1, keepdims=True)
    return np.where(s > 0, g / np.where(s > 0, s, 1.0), mean)


def _floor(pi: np.ndarray) -> np.ndarray:
    return (1.0 - _INTENT_FLOOR) * pi + _INTENT_FLOOR / pi.shape[-1]


def _sample_in_ranges(
        rng: np.random.Generator, weight: np.ndarray, lo: np.ndarray, hi: np.ndarray,
        reject: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None,
) -> np.ndarray:
    """One item per row from the index range [lo, hi), proportionally to `weight`.

    Args:
      weight: (N,) non-negative item weights; zero-weight items are never drawn.
      lo, hi: (R,) index ranges, each holding at least one valid item.
      reject: optional callable(rows (M,), items (M,)) → (M,) bool, the drawn rows
        to draw again.
    Returns:
      (R,) item indices. After `_WEIGHTED_ROUNDS` rejected rounds a row draws
      uniformly in its range (still excluding zero weights and rejects), so that a
      dominant rejected item cannot stall it.
    """
    cum = np.concatenate([[0.0], np.cumsum(weight)])
    out = np.empty(len(lo), dtype=np.int64)
    todo = np.arange(len(lo))
    rounds = 0
    while todo.size:
        a, b = lo[todo], hi[todo]
        if rounds < _WEIGHTED_ROUNDS:
            target = cum[a] + rng.random(todo.size) * (cum[b] - cum[a])
            items = np.searchsorted(cum, target, side="right") - 1
        else:
            items = a + (rng.random(todo.size) * (b - a)).astype(np.int64)
        items = np.clip(items, a, b - 1)
        out[todo] = items
        bad = weight[items] <= 0
        if reject is not None:
            bad |= reject(todo, items)
        todo = todo[bad]
        rounds += 1
    return out


# ---------------------------------------------------------------------------- world


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _centroids(rng: np.random.Generator, cfg: SimulationConfig,
               category_group: np.ndarray) -> np.ndarray:
    """(K, d) unit category centroids: cos ~ _COMPLEMENT_COS inside a super-group."""
    d, G = cfg.embedding_dim, cfg.num_super_groups
    g = rng.standard_normal((G, d))
    if G <= d:  # orthonormal super-group directions where the space allows
        g = np.linalg.qr(g.T)[0].T
    g = _unit(g)
    u = rng.standard_normal((cfg.num_categories, d))
    if G < d:  # category-specific parts orthogonal to every super-group direction
        u = u - (u @ g.T) @ g
    u = _unit(u)
    c = np.sqrt(_COMPLEMENT_COS) * g[category_group] + np.sqrt(1 - _COMPLEMENT_COS) * u
    return _unit(c)


def _category_sizes(rng: np.random.Generator, cfg: SimulationConfig) -> np.ndarray:
    K, N = cfg.num_categories, cfg.num_items
    minimum = N // (2 * K)
    share = rng.dirichlet(np.full(K, 5.0))
    return minimum + rng.multinomial(N - minimum * K, share)


def _clusters(rng: np.random.Generator, n: int,
              copies_per_product: float) -> np.ndarray:
    """(n,) cluster sizes laid out consecutively: product sizes 1 + Poisson."""
    sizes = 1 + rng.poisson(copies_per_product, size=n)
    cut = np.searchsorted(np.cumsum(sizes), n)
    sizes = sizes[: cut + 1]
    sizes[-1] -= sizes.sum() - n
    return sizes


def build_world(cfg: SimulationConfig) -> World:
    """The catalog and users of the world of `cfg` (deterministic per seed);
    the click bias is already solved for `cfg.target_ctr`."""
    rng = _rng(cfg, 0)
    K, G, N, U = cfg.num_categories, cfg.num_super_groups, cfg.num_items, cfg.num_users

    # catalog layout: super-group → categories → near-copy clusters, contiguous
    category_group = (np.arange(K) * G) // K
    sizes = _category_sizes(rng, cfg)
    item_category = np.repeat(np.arange(K), sizes)
    item_group = category_group[item_category]
    cat_hi = np.cumsum(sizes)
    category_range = np.stack([cat_hi - sizes, cat_hi], axis=1)
    first = np.searchsorted(category_group, np.arange(G))
    last = np.searchsorted(category_group, np.arange(G), side="right") - 1
    group_range = np.stack([category_range[first, 0], category_range[last, 1]], axis=1)
    f = cfg.near_duplicate_fraction
    cluster_sizes = np.concatenate([_clusters(rng, int(s), f / (1 - f)) for s in sizes])
    item_cluster = np.repeat(np.arange(len(cluster_sizes)), cluster_sizes)
    cluster_lo = (np.cumsum(cluster_sizes) - cluster_sizes)[item_cluster]
    cluster_size = cluster_sizes[item_cluster]
    is_copy = np.arange(N) != cluster_lo
    original = cluster_lo  # the first item of a cluster is the original

    # multimodal vectors
    cent = _centroids(rng, cfg, category_group)
    d = cfg.embedding_dim
    noise = rng.standard_normal((2, N, d)) / np.sqrt(d)
    emb = _unit(cent[item_category] + _ITEM_NOISE * noise[0])
    copy_emb = _unit(emb[original] + _COPY_NOISE * noise[1])
    emb = np.where(is_copy[:, None], copy_emb, emb).astype(np.float32)

    # side features; near-copies often share brand and shop, and price closely
    nb = cfg.num_brands_per_category
    brand_rank = np.minimum(rng.zipf(1.6, size=N) - 1, nb - 1)
    brand_rank = np.where(is_copy & (rng.random(N) < _COPY_SAME_BRAND),
                          brand_rank[original], brand_rank)
    brand_code_of = rng.permutation(K * nb).reshape(K, nb)
    item_brand = brand_code_of[item_category, brand_rank]
    shop = rng.permutation(cfg.num_shops)[np.minimum(rng.zipf(1.3, size=N) - 1,
                                                     cfg.num_shops - 1)]
    item_shop = np.where(is_copy & (rng.random(N) < _COPY_SAME_SHOP), shop[original],
                         shop)
    log_price = rng.uniform(np.log(5.0), np.log(500.0), size=K)[item_category] \
        + 0.4 * rng.standard_normal(N)
    log_price = np.where(is_copy, log_price[original] + 0.05 * rng.standard_normal(N),
                         log_price)
    item_price = np.round(np.exp(log_price), 2)
    adjective = rng.integers(len(_ADJECTIVES), size=N)[original]
    titles = tuple(
        f"{_ADJECTIVES[a]} {_NOUNS[k % len(_NOUNS)]} {o}" + (" v2" if c else "")
        for a, k, o, c in zip(adjective.tolist(), item_category.tolist(),
                              original.tolist(), is_copy.tolist()))

    quality = cfg.quality_std * rng.standard_normal(N)
    exposure = np.exp(_EXPOSURE_STD * rng.standard_normal(N))
    # cold items: never among the first _MIN_WARM_PER_CATEGORY of a random order of
    # their category, so every category keeps warm items for the candidate pools
    key = rng.random(N)
    order = np.lexsort((key, item_category))
    rank_in_cat = np.empty(N, dtype=np.int64)
    rank_in_cat[order] = np.arange(N) - np.repeat(category_range[:, 0], sizes)
    eligible = np.flatnonzero(rank_in_cat >= _MIN_WARM_PER_CATEGORY)
    cold = np.zeros(N, dtype=bool)
    cold[rng.permutation(eligible)[: int(round(cfg.cold_item_fraction * N))]] = True

    # users
    gender = rng.integers(len(GENDERS), size=U)
    age = rng.integers(len(AGE_BUCKETS), size=U)
    segment = rng.choice(len(SEGMENTS), size=U, p=_SEGMENT_PROBS)
    logits = (_INTENT_BASE_LOGITS + (age[:, None] - (len(AGE_BUCKETS) - 1) / 2)
              * _INTENT_AGE_TILT + _INTENT_GENDER_TILT[gender])
    mean = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    alpha = NUM_LEVELS * np.asarray(_SEGMENT_CONCENTRATION)[segment][:, None] * mean
    intent = _floor(_dirichlet_rows(rng, alpha))
    group_pref = _dirichlet_rows(rng, np.full((U, G), _GROUP_PREF_ALPHA))
    favourite = np.zeros((U, G), dtype=bool)
    np.put_along_axis(favourite, np.argsort(-group_pref, axis=1)[:, :_NUM_FAVOURITES],
                      True, axis=1)
    activity = rng.gamma(2.0, 0.5, size=U)
    group_tilt = np.exp(_GROUP_TILT_STD * rng.standard_normal((G, NUM_LEVELS)))

    world = World(
        item_code=rng.permutation(N), item_category=item_category,
        item_group=item_group,
        item_cluster=item_cluster, cluster_lo=cluster_lo, cluster_size=cluster_size,
        category_range=category_range, group_range=group_range,
        category_code=rng.permutation(K), item_brand=item_brand, item_shop=item_shop,
        item_price=item_price, item_title=titles, embedding=emb, quality=quality,
        exposure=exposure, cold=cold, user_gender=gender, user_age=age,
        user_segment=segment, user_intent=intent, user_group_pref=group_pref,
        user_favourite=favourite, user_activity=activity, group_tilt=group_tilt)
    return dataclasses.replace(world, bias=_solve_bias(world, cfg))


def _solve_bias(world: World, cfg: SimulationConfig) -> float:
    """The bias b with mean sigmoid(b + logit) = target_ctr over day 0's candidates
    (the same draws as `simulate_day(.., 0)`; bisection, the mean increases in b)."""
    logit = _requests(world, cfg, _rng(cfg, 1, 0), _day_weight(world, cfg, 0), 0).logit
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(mid + logit)))) < cfg.target_ctr:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# ----------------------------------------------------------------------------- days


def eval_day(cfg: SimulationConfig) -> int:
    """Index of the eval day (the last request day); day 0 starts at start_timestamp."""
    return cfg.history_days + cfg.request_days - 1


def day_start(cfg: SimulationConfig, day: int) -> int:
    return cfg.start_timestamp + day * _DAY


def _day_weight(world: World, cfg: SimulationConfig, day: int) -> np.ndarray:
    """(N,) exposure weights of `day`: cold items are out before the eval day and
    shown at the median weight on it."""
    if day < eval_day(cfg):
        return np.where(world.cold, 0.0, world.exposure)
    return np.where(world.cold, np.median(world.exposure), world.exposure)


def level_of(world: World, trigger: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Relation level (index into LEVELS) of `item` to `trigger`, elementwise."""
    return np.select(
        [world.item_cluster[item] == world.item_cluster[trigger],
         world.item_category[item] == world.item_category[trigger],
         world.item_group[item] == world.item_group[trigger]], [0, 1, 2], 3)


def _draw_level(world: World, rng: np.random.Generator, weight: np.ndarray,
                level: np.ndarray, trigger: np.ndarray) -> np.ndarray:
    """(M,) candidates from the pool of `level` (1: trigger's category, 2: its
    super-group minus its category, 3: the other super-groups), never the trigger."""
    cat, grp = world.item_category[trigger], world.item_group[trigger]
    n = len(world.item_category)
    lo = np.select([level == 1, level == 2],
                   [world.category_range[cat, 0], world.group_range[grp, 0]], 0)
    hi = np.select([level == 1, level == 2],
                   [world.category_range[cat, 1], world.group_range[grp, 1]], n)

    def reject(rows, items):
        lv = level[rows]
        return ((items == trigger[rows])
                | ((lv == 2) & (world.item_category[items] == cat[rows]))
                | ((lv == 3) & (world.item_group[items] == grp[rows])))

    return _sample_in_ranges(rng, weight, lo, hi, reject)


def _slot_mix(cfg: SimulationConfig) -> np.ndarray:
    """(C,) pool level of each candidate slot, from candidate_level_mix."""
    mix = np.asarray(cfg.candidate_level_mix, dtype=float)
    counts = np.floor(mix / mix.sum() * cfg.candidates_per_request).astype(int)
    rest = cfg.candidates_per_request - counts.sum()
    counts[np.argsort(-(mix / mix.sum() * cfg.candidates_per_request - counts),
                      kind="stable")[:rest]] += 1
    return np.repeat(np.arange(NUM_LEVELS), counts)


def _candidates(world: World, cfg: SimulationConfig, rng: np.random.Generator,
                weight: np.ndarray, trigger: np.ndarray) -> np.ndarray:
    """(R, C) distinct candidates per request, slots in `_slot_mix` order.

    Near-copy slots take the trigger's cluster-mates (distinct, warm); slots left
    without one draw from the trigger's category. Duplicates inside a row are redrawn
    from their slot's pool, and from the unrelated pool after 10 rounds.
    """
    R = len(trigger)
    slot_level = _slot_mix(cfg)
    C = len(slot_level)
    pool = np.broadcast_to(slot_level, (R, C)).copy()
    cand = np.full((R, C), -1, dtype=np.int64)

    nc_slots = np.flatnonzero(slot_level == 0)
    if nc_slots.size:
        size = world.cluster_size[trigger][:, None]
        mates = np.maximum(size - 1, 1)
        pos = (trigger - world.cluster_lo[trigger])[:, None]
        offset = (rng.random(R)[:, None] * mates).astype(np.int64)
        j = np.arange(nc_slots.size)[None, :]
        mate = (world.cluster_lo[trigger][:, None]
                + (pos + 1 + (offset + j) % mates) % size)
        ok = (j < size - 1) & (weight[mate] > 0)
        cand[:, nc_slots] = np.where(ok, mate, -1)
        pool[:, nc_slots] = np.where(ok, 0, 1)

    trig = np.broadcast_to(trigger[:, None], (R, C))
    todo = cand < 0
    rounds = 0
    while todo.any():
        rows, cols = np.nonzero(todo)
        lv = pool[rows, cols] if rounds < 10 else np.full(rows.size, 3)
        cand[rows, cols] = _draw_level(world, rng, weight, lv, trig[rows, cols])
        order = np.argsort(cand, axis=1, kind="stable")
        sorted_c = np.take_along_axis(cand, order, axis=1)
        dup_sorted = np.zeros((R, C), dtype=bool)
        dup_sorted[:, 1:] = sorted_c[:, 1:] == sorted_c[:, :-1]
        todo = np.zeros((R, C), dtype=bool)
        np.put_along_axis(todo, order, dup_sorted, axis=1)
        rounds += 1
    return cand


def _sessions(world: World, cfg: SimulationConfig, rng: np.random.Generator, day: int):
    """Users, trigger times and request times of the day's sessions, chronological."""
    n = np.minimum(rng.poisson(cfg.requests_per_user_day * world.user_activity),
                   _MAX_SESSIONS)
    active = np.flatnonzero(n)
    slots = np.argsort(rng.random((active.size, _NUM_SLOTS)), axis=1)
    user = np.repeat(active, n[active])
    k = np.arange(user.size) - np.repeat(np.cumsum(n[active]) - n[active], n[active])
    slot = slots[np.repeat(np.arange(active.size), n[active]), k]
    trigger_ts = (day_start(cfg, day) + slot * _SLOT
                  + rng.integers(*_TRIGGER_OFFSET, size=user.size))
    request_ts = trigger_ts + rng.integers(*_REQUEST_DELAY, size=user.size)
    order = np.lexsort((user, request_ts))
    return user[order], trigger_ts[order], request_ts[order]


def _pick_in_groups(world: World, rng: np.random.Generator, weight: np.ndarray,
                    user: np.ndarray) -> np.ndarray:
    """(M,) items, one per row: super-group ~ the user's preference, item ~ weight."""
    g = _categorical(rng, world.user_group_pref[user])
    r = world.group_range[g]
    return _sample_in_ranges(rng, weight, r[:, 0], r[:, 1])


class _Requests(NamedTuple):
    """The day's sessions before clicks; shapes as in DayLog."""

    user: np.ndarray
    trigger: np.ndarray
    trigger_ts: np.ndarray
    request_ts: np.ndarray
    intent: np.ndarray
    candidates: np.ndarray
    level: np.ndarray
    logit: np.ndarray  # (R, C) click logit without the bias


def _requests(world: World, cfg: SimulationConfig, rng: np.random.Generator,
              weight: np.ndarray, day: int) -> _Requests:
    """Sessions, triggers, request intents, shuffled candidates and click logits."""
    user, trigger_ts, request_ts = _sessions(world, cfg, rng, day)
    trigger = _pick_in_groups(world, rng, weight, user)
    prior = world.user_intent[user] * world.group_tilt[world.item_group[trigger]]
    prior /= prior.sum(axis=1, keepdims=True)
    intent = _floor(_dirichlet_rows(rng, cfg.request_intent_concentration * prior))
    cand = _candidates(world, cfg, rng, weight, trigger)
    cand = np.take_along_axis(cand, np.argsort(rng.random(cand.shape), axis=1), axis=1)
    level = level_of(world, trigger[:, None], cand)
    favourite = world.user_favourite[user[:, None], world.item_group[cand]]
    position = np.arange(cand.shape[1])[None, :]
    logit = (cfg.intent_strength * np.log(np.take_along_axis(intent, level, axis=1))
             + world.quality[cand] + cfg.favourite_bonus * favourite
             - cfg.position_decay * np.log1p(position))
    return _Requests(user, trigger, trigger_ts, request_ts, intent, cand, level, logit)


def simulate_day(world: World, cfg: SimulationConfig, day: int) -> DayLog:
    """Sessions, candidates, clicks and behaviours of day `day` (0-based from
    start_timestamp). Deterministic per (seed, day), independent of other days."""
    rng, weight = _rng(cfg, 1, day), _day_weight(world, cfg, day)
    req = _requests(world, cfg, rng, weight, day)
    p = 1.0 / (1.0 + np.exp(-(world.bias + req.logit)))
    clicked = rng.random(p.shape) < p
    empty = rng.random(len(req.user)) < cfg.empty_trigger_fraction

    rows, cols = np.nonzero(clicked)
    click_ts = req.request_ts[rows] + rng.integers(*_CLICK_DELAY, size=rows.size)
    nb = rng.poisson(cfg.background_per_user_day * world.user_activity)
    bg_user = np.repeat(np.arange(len(nb)), nb)
    bg_item = _pick_in_groups(world, rng, weight, bg_user)
    bg_ts = (day_start(cfg, day) + rng.integers(_NUM_SLOTS, size=bg_user.size) * _SLOT
             + rng.integers(*_BACKGROUND_OFFSET, size=bg_user.size))
    bg_type = rng.choice(len(F.BEHAVIOR_TYPES), size=bg_user.size, p=_BEHAVIOR_PROBS)
    n_clicks = len(req.user) + rows.size
    return DayLog(
        day=day, user=req.user, trigger=req.trigger, trigger_ts=req.trigger_ts,
        request_ts=req.request_ts, empty_trigger=empty, intent=req.intent,
        candidates=req.candidates, level=req.level, p_click=p, clicked=clicked,
        behavior_user=np.concatenate([req.user, req.user[rows], bg_user]),
        behavior_item=np.concatenate([req.trigger, req.candidates[rows, cols],
                                      bg_item]),
        behavior_ts=np.concatenate([req.trigger_ts, click_ts, bg_ts]),
        behavior_type=np.concatenate([np.full(n_clicks, _CLICK), bg_type]))


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
    d = world.embedding.shape[1]
    values = pa.array(world.embedding[order].reshape(-1), type=pa.float32())
    offsets = pa.array(np.arange(0, len(ids) * d + 1, d, dtype=np.int32))
    table = pa.table({
        F.EMBEDDINGS_COLUMNS[0]: pa.array(ids[order].tolist(), pa.string()),
        F.EMBEDDINGS_COLUMNS[1]: pa.ListArray.from_arrays(offsets, values),
    })
    pq.write_table(table, os.path.join(out_dir, F.EMBEDDINGS_FILE))

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
