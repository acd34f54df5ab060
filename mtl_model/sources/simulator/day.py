"""One simulated day of the shop: sessions, shown items, the click / cart / purchase funnel, event rows.

:func:`simulate_funnel` draws the day from its own stream (``[seed, 1, D.toordinal()]``) in a fixed
order of phases, so a day is the same alone or inside a longer run. Anomalies and bad data come after.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from mtl_model.contract import EVENT_TYPES, EVENTS_SCHEMA, ITEMS_SCHEMA, USERS_SCHEMA
from mtl_model.contract import SCENES as CONTRACT_SCENES
from mtl_model.sources.simulator.ids import as_strings, id_bytes
from mtl_model.sources.simulator.universe import Sampler, Universe, taste_probabilities

__all__ = ["Day", "Funnel", "simulate_funnel", "day_bounds_us", "count_types", "SIMULATED_EVENT_TYPES"]

# the subset of contract.EVENT_TYPES the simulator writes; the index is the funnel stage
SIMULATED_EVENT_TYPES = ("impression", "click", "cart", "purchase")
SCENES = ("home", "search")  # scene codes 0 and 1 of the funnel
if not set(SIMULATED_EVENT_TYPES) <= set(EVENT_TYPES) or not set(SCENES) <= set(CONTRACT_SCENES):
    raise RuntimeError("the simulator's event types and scenes must belong to mtl_model.contract")

# Share of sessions starting in each hour of the (business) day.
HOUR_WEIGHTS = np.array([2, 1, 1, 1, 1, 2, 3, 5, 6, 7, 7, 8, 9, 8, 7, 7, 8, 9, 11, 13, 14, 12, 8, 4], float)
OUT_OF_STOCK_RATE = 0.03
DEDUP_ROUNDS = 6
EXPLORE_RATE = 0.15  # share of personal / search draws from a uniformly random category
BOT_SESSIONS_MEAN, BOT_CLICK_P, BOT_TARGET_SHARE = 12.0, 0.8, 0.5
# Seconds from one funnel stage to the next (index: event type): min + Exp(mean), capped.
STAGE_MIN_S = np.array([0.0, 1.0, 2.0, 5.0])
STAGE_MEAN_S = np.array([0.0, 8.0, 40.0, 90.0])
STAGE_CAP_S = np.array([0.0, 120.0, 600.0, 900.0])
US = 1_000_000
DAY_US = 86_400 * US
FUNNEL_MAX_US = int((STAGE_MIN_S + STAGE_CAP_S).sum() * US) + 1
BOT_CLICK_DELAY_US = US + US // 2


@dataclass
class Day:
    """What one simulated day writes (and its truth)."""

    events: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    exposures: pl.DataFrame
    sessions: int
    counts: np.ndarray  # events per type
    anomalies: pl.DataFrame | None = None  # truth rows (entity_type, entity_id, kind, ds)
    bad_rows: pl.DataFrame | None = None  # truth rows (event_id, kind, row, detail); None: nothing injected
    csv_cut: float | None = None  # cut the CSV's last line at this fraction of its length


@dataclass
class Funnel:
    """Per event row of the funnel (in the events file's order), for planting anomalies."""

    row_start: np.ndarray  # start of the row's session (microseconds from the start of the day)
    item: np.ndarray
    etype: np.ndarray
    in_stock: np.ndarray  # per item, that day


@dataclass
class _Sessions:
    """The day's sessions in the order drawn (grouped by user): arrays of length S."""

    n_per_user: np.ndarray
    user: np.ndarray
    bot: np.ndarray
    search: np.ndarray
    qcat: np.ndarray  # query category (used by search sessions)


@dataclass
class _Rows:
    """The day's event rows: sessions in order of start time, then position, then funnel stage."""

    perm: np.ndarray  # sessions in start order
    sess: np.ndarray  # session of each row (its number in start order)
    pos0: np.ndarray
    etype: np.ndarray
    ex: np.ndarray  # exposure index into the (S, K) arrays
    user: np.ndarray
    item: np.ndarray
    t: np.ndarray  # UTC epoch microseconds


def day_bounds_us(day: date, tz: str) -> tuple[int, int]:
    """Start (UTC epoch microseconds) and length of business day ``day``."""
    zone = ZoneInfo(tz)
    start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).astimezone(UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return (start - epoch) // timedelta(microseconds=1), (end - start) // timedelta(microseconds=1)


def count_types(events: pl.DataFrame) -> np.ndarray:
    """Rows per entry of :data:`SIMULATED_EVENT_TYPES`."""
    n = dict(events.group_by("event_type").len().iter_rows()) if "event_type" in events.columns else {}
    return np.array([n.get(t, 0) for t in SIMULATED_EVENT_TYPES], np.int64)


def simulate_funnel(uni: Universe, day: date, tz: str) -> tuple[Day, Funnel]:
    """The human and bot sessions of ``day`` (business day of ``tz``) and their landing files."""
    rng = np.random.default_rng([uni.cfg.seed, 1, day.toordinal()])
    day0_us, day_us = day_bounds_us(day, tz)
    shelf = _Shelf(uni, rng)
    s = _sessions(uni, rng, day)
    items, aff = _rank(uni, rng, s, _shown_items(uni, rng, shelf, s))
    probs, happened = _outcomes(uni, rng, s, items, aff)
    start, imp_off = _timing(uni, rng, s, day_us)
    rows = _event_rows(uni, rng, s, items, happened, start, imp_off, day0_us)
    events, event_bytes = _events_frame(uni, day, s, rows)
    items_df, users_df = _snapshots(uni, day, shelf.in_stock)
    counts = np.bincount(rows.etype, minlength=4)
    out = Day(events, items_df, users_df, _exposures_frame(event_bytes, rows, probs), s.user.size, counts)
    _check_landing(out)
    return out, Funnel(start[rows.perm][rows.sess], rows.item, rows.etype, shelf.in_stock)


class _Shelf:
    """Today's catalogue: stock, and item draws by popularity (overall or within a category)."""

    def __init__(self, uni: Universe, rng: np.random.Generator) -> None:
        self.uni = uni
        self.in_stock = rng.random(uni.cfg.n_items) >= OUT_OF_STOCK_RATE
        weight = np.exp(uni.item_logpop) * np.where(self.in_stock, 1.0, 1e-9)
        self.cw_all = np.cumsum(weight)
        cw_cat = np.cumsum(weight[uni.cat_order])
        self.draw_all, self.draw_cat = Sampler(self.cw_all), Sampler(cw_cat)
        self.cat_hi = cw_cat[uni.cat_end - 1]
        self.cat_lo = np.where(uni.cat_start > 0, cw_cat[np.maximum(uni.cat_start - 1, 0)], 0.0)

    def draw(self, cat: np.ndarray, r: np.ndarray, uniform: bool = False) -> np.ndarray:
        """An item per slot: by popularity (or uniformly) within category ``cat``; by popularity
        overall where ``cat`` < 0. ``r``: uniform draws in [0, 1), one per slot."""
        uni = self.uni
        out = np.empty(r.shape, np.int64)
        p, q = np.flatnonzero(cat >= 0), np.flatnonzero(cat < 0)
        c = cat[p]
        if uniform:
            pos = uni.cat_start[c] + (r[p] * (uni.cat_end[c] - uni.cat_start[c])).astype(np.int64)
        else:
            lo = self.cat_lo[c]
            pos = self.draw_cat(lo + r[p] * (self.cat_hi[c] - lo))
        out[p] = uni.cat_order[pos.clip(uni.cat_start[c], uni.cat_end[c] - 1)]
        out[q] = self.draw_all(r[q] * self.cw_all[-1])
        return out


def _taste_category(uni: Universe, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
    """A category per entry of ``users``: one of the user's top categories, sometimes a random one."""
    u = rng.random(users.size)
    k = (u[:, None] > uni.top_cum[users, :-1]).sum(axis=1)
    cats = uni.top_cat[users, k]
    explore = rng.random(users.size) < EXPLORE_RATE
    return np.where(explore, rng.integers(0, uni.n_categories, users.size), cats)


def _sessions(uni: Universe, rng: np.random.Generator, day: date) -> _Sessions:
    """``Poisson(activity)`` sessions per user (bots: many), their scene and query category."""
    cfg = uni.cfg
    lam = np.where(uni.is_bot, BOT_SESSIONS_MEAN, uni.activity)
    if cfg.weekend_boost and day.weekday() >= 5:
        lam = np.where(uni.is_bot, lam, lam * (1.0 + cfg.weekend_boost))
    n_sess = rng.poisson(lam)
    s_user = np.repeat(np.arange(cfg.n_users), n_sess)
    s_bot = uni.is_bot[s_user]
    s_search = (rng.random(int(n_sess.sum())) < cfg.search_share) & ~s_bot
    return _Sessions(n_sess, s_user, s_bot, s_search, _taste_category(uni, rng, s_user))


def _shown_items(uni: Universe, rng: np.random.Generator, shelf: _Shelf, s: _Sessions) -> np.ndarray:
    """Items shown (S, K): search from the query category; home half personal, half popular; bots
    half promoted items, half popular; no item twice in a session."""
    S, K = s.user.size, uni.cfg.impressions_per_session
    slot_cat = np.where(s.search[:, None], s.qcat[:, None], -1).repeat(K, axis=1).reshape(-1)
    home = (~s.search & ~s.bot)[:, None]
    home_personal = np.flatnonzero(home & (rng.random((S, K)) < 0.5))
    slot_cat[home_personal] = _taste_category(uni, rng, s.user[home_personal // K])
    items = shelf.draw(slot_cat, rng.random(S * K)).reshape(S, K)
    bot_s = np.flatnonzero(s.bot)
    if bot_s.size:
        promo = rng.random((bot_s.size, K)) < BOT_TARGET_SHARE
        target = uni.bot_items[rng.integers(0, uni.bot_items.size, (bot_s.size, K))]
        items[bot_s] = np.where(promo, target, items[bot_s])
    _redraw_repeats(rng, shelf, items, slot_cat)
    return items


def _redraw_repeats(rng: np.random.Generator, shelf: _Shelf, items: np.ndarray, slot_cat: np.ndarray) -> None:
    """Redraw repeated items of a session in place: from the same category (uniformly: the long tail
    fills up small categories) first, then from overall popularity."""
    S, K = items.shape
    rows = np.arange(S)
    for attempt in range(DEDUP_ROUNDS):
        sub = items[rows]
        order = np.argsort(sub, axis=1, kind="stable")
        srt = np.take_along_axis(sub, order, axis=1)
        rr, cc = np.nonzero(srt[:, 1:] == srt[:, :-1])
        if rr.size == 0:
            break
        again = rows[rr] * K + order[rr, cc + 1]
        same_source = attempt < DEDUP_ROUNDS // 2
        cat = slot_cat[again] if same_source else np.full(again.size, -1)
        items.reshape(-1)[again] = shelf.draw(cat, rng.random(again.size), uniform=same_source)
        rows = np.unique(rows[rr])


def _rank(
    uni: Universe, rng: np.random.Generator, s: _Sessions, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The logging policy: rank by a noisy relevance score (positions 1..K); items and affinities."""
    aff = np.einsum("sd,skd->sk", uni.user_vec[s.user], uni.item_vec[items]) / np.sqrt(uni.cfg.latent_dim)
    score = aff + 0.5 * uni.item_logpop[items] + rng.normal(0.0, 1.0, items.shape)
    rank = np.argsort(-score, axis=1, kind="stable")
    return np.take_along_axis(items, rank, axis=1), np.take_along_axis(aff, rank, axis=1)


def _outcomes(
    uni: Universe, rng: np.random.Generator, s: _Sessions, items: np.ndarray, aff: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """True (P(click), P(cart | click), P(purchase | cart)) per shown item, and what happened:
    (S, K, 4) booleans (impression, click, cart, purchase)."""
    K = uni.cfg.impressions_per_session
    p_click, p_cart_c, p_buy_c = taste_probabilities(
        uni, s.user[:, None], items, aff, np.arange(1, K + 1)[None, :], s.search[:, None]
    )
    bot_rows = s.bot[:, None]
    p_click = np.where(bot_rows, BOT_CLICK_P, p_click)
    p_cart_c = np.where(bot_rows, 0.0, p_cart_c)
    p_buy_c = np.where(bot_rows, 0.0, p_buy_c)
    u3 = rng.random((3, *items.shape))
    click = u3[0] < p_click
    cart = click & (u3[1] < p_cart_c)
    buy = cart & (u3[2] < p_buy_c)
    return (p_click, p_cart_c, p_buy_c), np.stack([np.ones_like(click), click, cart, buy], axis=2)


def _timing(
    uni: Universe, rng: np.random.Generator, s: _Sessions, day_us: int
) -> tuple[np.ndarray, np.ndarray]:
    """Session starts (S) and impression offsets in the session (S, K), microseconds: humans by the
    daily rhythm, bots like a metronome, sessions evenly spread over the day."""
    S, K = s.user.size, uni.cfg.impressions_per_session
    gaps = np.minimum(rng.exponential(4.0, (S, K)), 60.0)
    gaps[:, 0] = 0.0
    imp_off = (np.cumsum(gaps, axis=1) * US).astype(np.int64)
    bot_s = np.flatnonzero(s.bot)
    imp_off[bot_s] = np.arange(K) * 2 * US
    hour = rng.choice(24, S, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    start = ((hour + rng.random(S)) * (day_us / 24)).astype(np.int64)
    if bot_s.size:
        first = np.cumsum(s.n_per_user) - s.n_per_user  # index of each user's first session
        j = bot_s - first[s.user[bot_s]]
        spacing = day_us // s.n_per_user[s.user[bot_s]]
        phase = (rng.random(uni.cfg.n_users) * 600).astype(np.int64) * US  # per bot, whole seconds
        start[bot_s] = phase[s.user[bot_s]] + (j * spacing // US) * US
    span = imp_off[:, -1] + np.where(s.bot, BOT_CLICK_DELAY_US, FUNNEL_MAX_US)
    return np.clip(start, 0, np.maximum(day_us - 1 - span, 0)), imp_off


def _event_rows(
    uni: Universe,
    rng: np.random.Generator,
    s: _Sessions,
    items: np.ndarray,
    happened: np.ndarray,
    start: np.ndarray,
    imp_off: np.ndarray,
    day0_us: int,
) -> _Rows:
    """One row per event, sessions in order of start time (no global sort), with its event time."""
    K = uni.cfg.impressions_per_session
    perm = np.argsort(start, kind="stable")
    flat = np.flatnonzero(happened[perm])
    sess = flat // (4 * K)
    pos0 = flat // 4 % K
    etype = (flat % 4).astype(np.int8)
    ex = perm[sess] * K + pos0
    user = s.user[perm][sess]
    # delay of each click / cart / purchase after the previous stage of its exposure (the rows of one
    # exposure are adjacent: impression, click, cart, purchase), summed from the impression on
    later = np.flatnonzero(etype)
    stage = etype[later]
    delay = np.zeros(flat.size, np.int64)
    draws = STAGE_MIN_S[stage] + np.minimum(
        rng.exponential(1.0, later.size) * STAGE_MEAN_S[stage], STAGE_CAP_S[stage]
    )
    delay[later] = np.where(uni.is_bot[user[later]], BOT_CLICK_DELAY_US, (draws * US).astype(np.int64))
    acc = np.cumsum(delay)
    head = np.maximum.accumulate(np.where(etype == 0, np.arange(flat.size), 0))  # row of the impression
    t = day0_us + (start[:, None] + imp_off).reshape(-1)[ex] + (acc - acc[head])
    return _Rows(perm, sess, pos0, etype, ex, user, items.reshape(-1)[ex], t)


def _events_frame(uni: Universe, day: date, s: _Sessions, rows: _Rows) -> tuple[pl.DataFrame, np.ndarray]:
    """The events file of the contract, and the event ids as byte rows."""
    ymd = day.strftime("%Y%m%d")
    event_bytes = id_bytes(f"e{ymd}-", rows.sess.size, 8)
    search = s.search[rows.perm][rows.sess]
    q_idx = np.where(s.search, s.qcat, uni.n_categories)[rows.perm][rows.sess]
    item = rows.item
    events = pl.DataFrame(
        [
            as_strings(event_bytes, "event_id"),
            pl.Series("event_time", rows.t).cast(pl.Datetime("us", "UTC")),
            uni.user_ids.gather(rows.user).alias("user_id"),
            uni.item_ids.gather(item).alias("item_id"),
            pl.Series("event_type", SIMULATED_EVENT_TYPES).gather(rows.etype),
            pl.Series("scene", SCENES).gather(search.astype(np.int8)),
            uni.cat_leaf.gather(q_idx).alias("query"),
            pl.Series("position", (rows.pos0 + 1).astype(np.int32)),
            as_strings(id_bytes(f"s{ymd}-", s.user.size, 6)[rows.sess], "session_id"),
            pl.Series("price", uni.item_price[item]),
            uni.cat_ids.gather(uni.item_cat[item]).alias("category_id"),
        ]
    )
    return events, event_bytes


def _exposures_frame(
    event_bytes: np.ndarray, rows: _Rows, probs: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> pl.DataFrame:
    """``truth/exposures``: each impression's unconditional p_click, p_cart, p_purchase."""
    p_click, p_cart_c, p_buy_c = probs
    imp_rows = np.flatnonzero(rows.etype == 0)
    ex_imp = rows.ex[imp_rows]
    p_cart = p_click * p_cart_c
    return pl.DataFrame(
        [
            as_strings(event_bytes[imp_rows], "event_id"),
            pl.Series("p_click", p_click.reshape(-1)[ex_imp]),
            pl.Series("p_cart", p_cart.reshape(-1)[ex_imp]),
            pl.Series("p_purchase", (p_cart * p_buy_c).reshape(-1)[ex_imp]),
        ]
    )


def _snapshots(uni: Universe, day: date, in_stock: np.ndarray) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The day's items snapshot (with today's stock) and users snapshot (signed up before the day)."""
    items_df = uni.items.with_columns(in_stock=pl.Series(in_stock))
    signup = np.minimum(uni.signup_days, day.toordinal() - 1) - date(1970, 1, 1).toordinal()
    users_df = uni.users_base.with_columns(signup_date=pl.Series(signup.astype(np.int32)).cast(pl.Date))
    return items_df, users_df.select(list(USERS_SCHEMA))


def _check_landing(out: Day) -> None:
    """Raise unless the day's events, items and users have the contract's columns and types, in order."""
    for name, df, schema in (
        ("events", out.events, EVENTS_SCHEMA),
        ("items", out.items, ITEMS_SCHEMA),
        ("users", out.users, USERS_SCHEMA),
    ):
        if list(df.schema.items()) != list(schema.items()):
            raise RuntimeError(f"simulated {name} do not match the contract: {dict(df.schema)}")
