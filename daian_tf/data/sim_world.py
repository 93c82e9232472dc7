"""The static part of the simulated world: catalog, multimodal embeddings and users.

`draw_world(cfg)` lays out the catalog (super-groups, categories, near-copy clusters,
contiguous by item index), draws the item embeddings, side features, quality,
exposure and cold items, then the users' profiles, intent mixtures over the four
relation levels (`LEVELS`, see `level_of`) and super-group preferences, all from
stream 0 of the seed. Its click bias is still 0: `simulator.build_world` solves it
for the target CTR with `sim_days.solve_bias`. The design is described in the
docstring of `daian_tf/data/simulator.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from daian_tf.core.config import SimulationConfig
from daian_tf.data.sim_draws import dirichlet_rows, seeded_rng

LEVELS = ("near_copy", "same_category", "complement", "unrelated")
NUM_LEVELS = len(LEVELS)
GENDERS = ("F", "M")
AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55+")
SEGMENTS = ("specific", "mixed", "broad")

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


def floor_intent(pi: np.ndarray) -> np.ndarray:
    """`pi` mixed with the uniform distribution, so that `log pi` stays finite."""
    return (1.0 - _INTENT_FLOOR) * pi + _INTENT_FLOOR / pi.shape[-1]


def level_of(world: World, trigger: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Relation level (index into LEVELS) of `item` to `trigger`, elementwise."""
    return np.select(
        [world.item_cluster[item] == world.item_cluster[trigger],
         world.item_category[item] == world.item_category[trigger],
         world.item_group[item] == world.item_group[trigger]], [0, 1, 2], 3)


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


def draw_world(cfg: SimulationConfig) -> World:
    """The catalog and users of the world of `cfg` (deterministic per seed), with
    the click bias still 0 (`simulator.build_world` solves it)."""
    rng = seeded_rng(cfg, 0)
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
    intent = floor_intent(dirichlet_rows(rng, alpha))
    group_pref = dirichlet_rows(rng, np.full((U, G), _GROUP_PREF_ALPHA))
    favourite = np.zeros((U, G), dtype=bool)
    np.put_along_axis(favourite, np.argsort(-group_pref, axis=1)[:, :_NUM_FAVOURITES],
                      True, axis=1)
    activity = rng.gamma(2.0, 0.5, size=U)
    group_tilt = np.exp(_GROUP_TILT_STD * rng.standard_normal((G, NUM_LEVELS)))

    return World(
        item_code=rng.permutation(N), item_category=item_category,
        item_group=item_group,
        item_cluster=item_cluster, cluster_lo=cluster_lo, cluster_size=cluster_size,
        category_range=category_range, group_range=group_range,
        category_code=rng.permutation(K), item_brand=item_brand, item_shop=item_shop,
        item_price=item_price, item_title=titles, embedding=emb, quality=quality,
        exposure=exposure, cold=cold, user_gender=gender, user_age=age,
        user_segment=segment, user_intent=intent, user_group_pref=group_pref,
        user_favourite=favourite, user_activity=activity, group_tilt=group_tilt)
