"""The simulated request days: sessions, triggers, candidates and the click model.

`simulate_day(world, cfg, day)` draws one UTC day from stream (1, day) of the seed,
independently of the other days: each user's sessions (a trigger click, then a
request whose candidates mix the relation levels), the request intents, the clicks
of the click model and the background behaviours, hidden state included, as a
`DayLog`. `solve_bias` calibrates the click model's bias on day 0's candidates, and
`eval_day`/`day_start` place the days on the timeline. Writing the logs is
`simulator.simulate`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from daian_tf.core import features as F
from daian_tf.core.config import SimulationConfig
from daian_tf.data.sim_draws import (categorical, dirichlet_rows, sample_in_ranges,
                                     seeded_rng)
from daian_tf.data.sim_world import NUM_LEVELS, World, floor_intent, level_of

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


def eval_day(cfg: SimulationConfig) -> int:
    """Index of the eval day (the last request day); day 0 starts at start_timestamp."""
    return cfg.history_days + cfg.request_days - 1


def day_start(cfg: SimulationConfig, day: int) -> int:
    """The first second (UTC) of day `day`."""
    return cfg.start_timestamp + day * _DAY


def _day_weight(world: World, cfg: SimulationConfig, day: int) -> np.ndarray:
    """(N,) exposure weights of `day`: cold items are out before the eval day and
    shown at the median weight on it."""
    if day < eval_day(cfg):
        return np.where(world.cold, 0.0, world.exposure)
    return np.where(world.cold, np.median(world.exposure), world.exposure)


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

    return sample_in_ranges(rng, weight, lo, hi, reject)


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
    g = categorical(rng, world.user_group_pref[user])
    r = world.group_range[g]
    return sample_in_ranges(rng, weight, r[:, 0], r[:, 1])


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
    intent = floor_intent(dirichlet_rows(rng, cfg.request_intent_concentration * prior))
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
    rng, weight = seeded_rng(cfg, 1, day), _day_weight(world, cfg, day)
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


def solve_bias(world: World, cfg: SimulationConfig) -> float:
    """The bias b with mean sigmoid(b + logit) = target_ctr over day 0's candidates
    (the same draws as `simulate_day(.., 0)`; bisection, the mean increases in b)."""
    logit = _requests(world, cfg, seeded_rng(cfg, 1, 0), _day_weight(world, cfg, 0),
                      0).logit
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(mid + logit)))) < cfg.target_ctr:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
