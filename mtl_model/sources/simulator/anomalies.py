"""Planted anomalies, labelled in ``truth/anomalies.parquet``: click-farm bots (standing), fraud buyers,
click spam and broken tracking (per day, switched on by the rates of :class:`SimConfig`).

They draw from their own streams (``[seed, 3, D.toordinal(), k]``), after the day's funnel.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from mtl_model.sources.simulator.config import SimConfig
from mtl_model.sources.simulator.day import (
    BOT_CLICK_DELAY_US,
    SCENES,
    SIMULATED_EVENT_TYPES,
    US,
    Day,
    Funnel,
    count_types,
    day_bounds_us,
)
from mtl_model.sources.simulator.ids import as_strings, id_bytes, number_ids
from mtl_model.sources.simulator.universe import DEVICES, REGIONS, Universe

__all__ = ["plant_anomalies", "standing_anomalies", "ANOMALY_KINDS", "ANOMALIES_SCHEMA"]

ANOMALY_KINDS = (
    "click_farm_bot",
    "bot_target_item",
    "fraud_buyer",
    "click_spam",
    "click_spam_account",
    "broken_tracking",
)
ANOMALIES_SCHEMA = {"entity_type": pl.String, "entity_id": pl.String, "kind": pl.String, "ds": pl.Date}
EXTRA_IDS_PER_DAY, EXTRA_ID_DAYS = 200, 1000  # id block of each day's extra accounts (fraud + spam)
MAX_FRAUD_ACCOUNTS, MAX_SPAM_ITEMS, SPAM_ACCOUNTS_PER_ITEM = 100, 25, 4
FRAUD_SESSIONS, FRAUD_PRICE_QUANTILE = 2, 0.9
SPAM_MIN_CLICKS, SPAM_FACTOR, SPAM_MAX_CLICKS = 60, 10, 4000


@dataclass
class _Planted:
    """Rows of planted sessions (in session order, then position, then stage) of one kind."""

    acc: np.ndarray  # account of each row (index into the day's extra accounts)
    item: np.ndarray
    etype: np.ndarray
    t: np.ndarray  # microseconds from the start of the day
    scene: np.ndarray
    pos0: np.ndarray
    sess: np.ndarray  # session of each row (local numbering, in start order)
    start: np.ndarray  # session start of each row (microseconds from the start of the day)
    p: np.ndarray  # (rows, 3) true p_click, p_cart, p_purchase (used on impression rows)
    signup_ago: np.ndarray  # days between signup and the day, per account
    n_sessions: int


def _stream(cfg: SimConfig, day: date, k: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, 3, day.toordinal(), k])


def _truth(entity_type: str, ids: pl.Series, kind: str, day: date) -> pl.DataFrame:
    """Rows of ``truth/anomalies.parquet``: one per id."""
    return pl.DataFrame(
        {
            "entity_type": pl.Series([entity_type] * ids.len(), dtype=pl.String),
            "entity_id": ids.cast(pl.String),
            "kind": pl.Series([kind] * ids.len(), dtype=pl.String),
            "ds": pl.Series([day] * ids.len(), dtype=pl.Date),
        }
    )


def standing_anomalies(uni: Universe, day: date) -> pl.DataFrame:
    """The click-farm bots and the items they promote: active every day."""
    if uni.bots.size == 0:
        return pl.DataFrame(schema=ANOMALIES_SCHEMA)
    return pl.concat(
        [
            _truth("user", uni.user_ids.gather(uni.bots), "click_farm_bot", day),
            _truth("item", uni.item_ids.gather(uni.bot_items), "bot_target_item", day),
        ]
    )


def plant_anomalies(uni: Universe, day: date, tz: str, out: Day, funnel: Funnel) -> None:
    """Add fraud and spam sessions (merged by session start) and drop the clicks of broken tracking."""
    cfg = uni.cfg
    day0_us, day_us = day_bounds_us(day, tz)
    clicks = np.bincount(funnel.item[funnel.etype == 1], minlength=cfg.n_items)
    shown = np.bincount(funnel.item[funnel.etype == 0], minlength=cfg.n_items)
    truth = [out.anomalies]
    # broken tracking first (busy items, a scene): the planted sessions avoid them, so that every
    # planted anomaly stays visible
    broken, broken_scene = _broken_tracking(uni, day, clicks, shown, truth)
    planted_scene = 1 if broken_scene == 0 else 0  # home, or search when home is broken
    usable = funnel.in_stock & ~broken
    planted: list[tuple[str, _Planted]] = []
    if cfg.fraud_rate > 0:
        planted.append(("fraud_buyer", _fraud(uni, _stream(cfg, day, 0), day_us, usable, planted_scene)))
    if cfg.click_spam_rate > 0:
        spam_targets, sp = _spam(uni, _stream(cfg, day, 1), day_us, usable, clicks, planted_scene)
        planted.append(("click_spam_account", sp))
        truth.append(_truth("item", uni.item_ids.gather(spam_targets), "click_spam", day))
    if planted:
        _add_planted(uni, day, day0_us, out, planted, funnel.row_start, truth)
    _drop_lost_clicks(uni, out, broken, broken_scene)
    out.anomalies = pl.concat(truth)


def _broken_tracking(
    uni: Universe, day: date, clicks: np.ndarray, shown: np.ndarray, truth: list[pl.DataFrame]
) -> tuple[np.ndarray, int]:
    """Broken items (among the busiest clicked ones) and the broken scene (-1: none); truth appended."""
    cfg = uni.cfg
    n_i = cfg.n_items
    broken = np.zeros(n_i, bool)
    broken_scene = -1
    if cfg.broken_item_rate > 0:
        g = _stream(cfg, day, 2)
        cand = np.flatnonzero(clicks > 0)
        if cand.size:
            busy = cand[np.argsort(-shown[cand], kind="stable")][: max(1, cand.size // 4)]
            n_b = min(busy.size, max(1, round(cfg.broken_item_rate * n_i)))
            broken[g.choice(busy, n_b, replace=False)] = True
            truth.append(_truth("item", uni.item_ids.gather(np.flatnonzero(broken)), "broken_tracking", day))
    if cfg.broken_scene_rate > 0:
        g = _stream(cfg, day, 3)
        if g.random() < cfg.broken_scene_rate:
            broken_scene = int(g.integers(0, len(SCENES)))
            truth.append(_truth("scene", pl.Series([SCENES[broken_scene]]), "broken_tracking", day))
    return broken, broken_scene


def _drop_lost_clicks(uni: Universe, out: Day, broken: np.ndarray, broken_scene: int) -> None:
    """Broken tracking: impressions are logged, the clicks of broken items (scene) are lost."""
    lost = pl.col("item_id").is_in(uni.item_ids.filter(pl.Series(broken)).implode())
    if broken_scene >= 0:
        lost = lost | (pl.col("scene") == SCENES[broken_scene])
    out.events = out.events.filter(~((pl.col("event_type") == "click") & lost))
    out.counts = count_types(out.events)


def _funnel_rows(
    ex_acc: np.ndarray,
    ex_sess: np.ndarray,
    ex_item: np.ndarray,
    ex_pos0: np.ndarray,
    ex_t: np.ndarray,
    ex_start: np.ndarray,
    stages: int,
    delays: np.ndarray,
    p: tuple[float, float, float],
    scene: int,
) -> dict[str, np.ndarray]:
    """Expand exposures into ``stages`` rows each (impression, click, …) with cumulative delays (us)."""
    rep = np.repeat(np.arange(ex_item.size), stages)
    etype = np.tile(np.arange(stages, dtype=np.int8), ex_item.size)
    return {
        "acc": ex_acc[rep],
        "item": ex_item[rep],
        "etype": etype,
        "t": ex_t[rep] + delays.reshape(-1),
        "scene": np.full(rep.size, scene, np.int8),
        "pos0": ex_pos0[rep],
        "sess": ex_sess[rep],
        "start": ex_start[rep],
        "p": np.tile(np.array(p), (rep.size, 1)),
    }


def _fraud(uni: Universe, rng: np.random.Generator, day_us: int, usable: np.ndarray, scene: int) -> _Planted:
    """New accounts that buy expensive items in a burst of ``FRAUD_SESSIONS`` quick sessions."""
    cfg = uni.cfg
    n_f = min(MAX_FRAUD_ACCOUNTS, max(1, round(cfg.fraud_rate * cfg.n_users)))
    price = uni.item_price
    expensive = price >= np.quantile(price, FRAUD_PRICE_QUANTILE)
    pool = np.flatnonzero(expensive & usable)
    pool = pool if pool.size else np.flatnonzero(expensive)
    n_s = n_f * FRAUD_SESSIONS
    s_acc = np.repeat(np.arange(n_f), FRAUD_SESSIONS)
    burst = rng.uniform(0, max(day_us - 3 * 3600 * US, 1), n_f)
    gap = rng.uniform(5, 15, n_s) * 60 * US * np.tile(np.arange(FRAUD_SESSIONS), n_f)
    s_start = (burst[s_acc] + gap).astype(np.int64)
    n_buy = np.minimum(cfg.impressions_per_session, 2 + rng.poisson(2.0, n_s))
    ex_sess = np.repeat(np.arange(n_s), n_buy)
    ex_pos0 = np.arange(ex_sess.size) - np.repeat(np.cumsum(n_buy) - n_buy, n_buy)
    ex_item = pool[rng.integers(0, pool.size, ex_sess.size)]
    ex_t = s_start[ex_sess] + ((ex_pos0 * 8 + rng.uniform(0, 3, ex_sess.size)) * US).astype(np.int64)
    step = rng.uniform((0, 1, 3, 5), (0, 3, 10, 20), (ex_sess.size, 4))  # seconds after the previous stage
    delays = (np.cumsum(step, axis=1) * US).astype(np.int64)
    rows = _funnel_rows(
        s_acc[ex_sess], ex_sess, ex_item, ex_pos0, ex_t, s_start[ex_sess], 4, delays, (1, 1, 1), scene
    )
    return _Planted(**rows, signup_ago=rng.integers(1, 4, n_f), n_sessions=n_s)


def _spam(
    uni: Universe, rng: np.random.Generator, day_us: int, usable: np.ndarray, clicks: np.ndarray, scene: int
) -> tuple[np.ndarray, _Planted]:
    """Long-tail items whose clicks jump: new accounts open the item and click it, like a metronome."""
    cfg = uni.cfg
    n_i = cfg.n_items
    cand = np.ones(n_i, bool)
    cand[uni.bot_items] = False
    tail = cand & usable & (uni.item_logpop < np.median(uni.item_logpop))
    cand = np.flatnonzero(tail) if tail.any() else np.flatnonzero(cand if cand.any() else np.ones(n_i, bool))
    n_t = min(MAX_SPAM_ITEMS, cand.size, max(1, round(cfg.click_spam_rate * n_i)))
    targets = np.sort(rng.choice(cand, n_t, replace=False))
    need = np.clip(SPAM_FACTOR * clicks[targets], SPAM_MIN_CLICKS, SPAM_MAX_CLICKS)
    per_acc = -(-need // SPAM_ACCOUNTS_PER_ITEM)  # sessions of each account of a target
    acc_target = np.repeat(np.arange(n_t), SPAM_ACCOUNTS_PER_ITEM)
    n_acc = acc_target.size
    window = rng.uniform(0, max(day_us - 4 * 3600 * US, 1), n_t)  # start of each target's attack
    spacing = np.minimum(60, 3 * 3600 // per_acc) * US  # whole seconds between an account's sessions
    phase = (rng.random(n_acc) * spacing[acc_target] // US) * US
    n_sess = per_acc[acc_target]
    s_acc = np.repeat(np.arange(n_acc), n_sess)
    j = np.arange(s_acc.size) - np.repeat(np.cumsum(n_sess) - n_sess, n_sess)
    tgt = acc_target[s_acc]
    s_start = (window[tgt].astype(np.int64) // US * US + phase[s_acc] + j * spacing[tgt]).astype(np.int64)
    order = np.argsort(s_start, kind="stable")  # sessions numbered in start order
    s_acc, tgt, s_start = s_acc[order], tgt[order], s_start[order]
    delays = np.tile(np.array([0, BOT_CLICK_DELAY_US], np.int64), (s_acc.size, 1))
    first = np.zeros(s_acc.size, np.int64)  # the target at position 1
    rows = _funnel_rows(
        s_acc, np.arange(s_acc.size), targets[tgt], first, s_start, s_start, 2, delays, (1, 0, 0), scene
    )
    return targets, _Planted(**rows, signup_ago=rng.integers(1, 15, n_acc), n_sessions=s_acc.size)


def _add_planted(
    uni: Universe,
    day: date,
    day0_us: int,
    out: Day,
    planted: list[tuple[str, _Planted]],
    row_start: np.ndarray,
    truth: list[pl.DataFrame],
) -> None:
    """Give the planted sessions the day's extra accounts and merge their rows into ``out`` by start."""
    acc0 = uni.cfg.n_users + (day.toordinal() % EXTRA_ID_DAYS) * EXTRA_IDS_PER_DAY
    n_acc = [p.signup_ago.size for _, p in planted]
    acc_ids = number_ids("u", acc0 + np.arange(sum(n_acc)), uni.user_ids.str.len_bytes().max() - 1)
    acc_off = np.cumsum([0, *n_acc])[:-1]
    for (kind, p), a0 in zip(planted, acc_off, strict=True):
        truth.append(_truth("user", acc_ids.slice(a0, p.signup_ago.size), kind, day))
    rows = _concat_planted([p for _, p in planted], acc_off)
    x_events, x_exposures, n_sessions = _planted_frames(uni, day, day0_us, acc_ids, rows)
    order = np.argsort(np.concatenate([row_start, rows.start]), kind="stable")
    out.events = pl.concat([out.events, x_events])[order]
    out.exposures = pl.concat([out.exposures, x_exposures])
    out.sessions += n_sessions
    out.users = pl.concat([out.users, _extra_users(uni, day, acc_ids, rows.signup_ago)])


def _concat_planted(planted: list[_Planted], acc_off: np.ndarray) -> _Planted:
    """The rows of all kinds, with one numbering of accounts and of sessions."""
    sess_off = np.cumsum([0, *[p.n_sessions for p in planted]])[:-1]

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in planted])

    return _Planted(
        acc=np.concatenate([p.acc + o for p, o in zip(planted, acc_off, strict=True)]),
        item=cat("item"),
        etype=cat("etype"),
        t=cat("t"),
        scene=cat("scene"),
        pos0=cat("pos0"),
        sess=np.concatenate([p.sess + o for p, o in zip(planted, sess_off, strict=True)]),
        start=cat("start"),
        p=cat("p"),
        signup_ago=cat("signup_ago"),
        n_sessions=sum(p.n_sessions for p in planted),
    )


def _planted_frames(
    uni: Universe, day: date, day0_us: int, acc_ids: pl.Series, m: _Planted
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Events and exposures of the planted rows (ids ``e<YYYYMMDD>-x…``, sessions ``s<YYYYMMDD>-x…``
    numbered in start order); returns them and the number of sessions."""
    ymd = day.strftime("%Y%m%d")
    s_first = np.unique(m.sess, return_index=True)[1]
    s_rank = np.empty(s_first.size, np.int64)
    s_rank[np.argsort(m.start[s_first], kind="stable")] = np.arange(s_first.size)
    it, scene = m.item, m.scene
    x_events = pl.DataFrame(
        [
            as_strings(id_bytes(f"e{ymd}-x", m.acc.size, 7), "event_id"),
            pl.Series("event_time", day0_us + m.t).cast(pl.Datetime("us", "UTC")),
            acc_ids.gather(m.acc).alias("user_id"),
            uni.item_ids.gather(it).alias("item_id"),
            pl.Series("event_type", SIMULATED_EVENT_TYPES).gather(m.etype),
            pl.Series("scene", SCENES).gather(scene),
            uni.cat_leaf.gather(np.where(scene == 1, uni.item_cat[it], uni.n_categories)).alias("query"),
            pl.Series("position", (m.pos0 + 1).astype(np.int32)),
            as_strings(id_bytes(f"s{ymd}-x", s_first.size, 5)[s_rank[m.sess]], "session_id"),
            pl.Series("price", uni.item_price[it]),
            uni.cat_ids.gather(uni.item_cat[it]).alias("category_id"),
        ]
    )
    imp = np.flatnonzero(m.etype == 0)
    probs = m.p[imp]
    x_exposures = pl.DataFrame(
        [
            x_events["event_id"].gather(imp),
            pl.Series("p_click", probs[:, 0].astype(float)),
            pl.Series("p_cart", probs[:, 1].astype(float)),
            pl.Series("p_purchase", probs[:, 2].astype(float)),
        ]
    )
    return x_events, x_exposures, int(s_first.size)


def _extra_users(uni: Universe, day: date, acc_ids: pl.Series, signup_ago: np.ndarray) -> pl.DataFrame:
    """Rows of the day's users snapshot for the extra accounts (signed up ``signup_ago`` days before)."""
    signup = day.toordinal() - signup_ago - date(1970, 1, 1).toordinal()
    g = _stream(uni.cfg, day, 9)
    return pl.DataFrame(
        {
            "user_id": acc_ids,
            "signup_date": pl.Series(signup.astype(np.int32)).cast(pl.Date),
            "region": pl.Series(REGIONS).gather(g.integers(0, len(REGIONS), acc_ids.len())),
            "device": pl.Series(DEVICES).gather(g.integers(0, len(DEVICES), acc_ids.len())),
        }
    )
