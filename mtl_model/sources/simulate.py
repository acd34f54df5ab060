"""Synthetic e-commerce site: writes landing-zone days (events, items, users) plus the ground truth.

Users and items live in a shared latent space; items belong to categories (a category-level latent
offset plus item noise), item popularity is heavy-tailed and user activity is heavy-tailed. Each day:

* every user has ``Poisson(activity_u)`` sessions; a session is ``home`` (half popularity, half the
  user's preferred categories) or ``search`` (one query category, biased to the user's taste);
* the shown items are ranked by a noisy logging policy and get positions ``1..impressions_per_session``;
* ``P(click) = sigmoid(bias + affinity + item quality + position bias + scene offset)``,
  ``P(cart | click)`` depends on affinity, ``P(purchase | cart)`` on affinity and on the user's price
  sensitivity times ``log(price)`` (price moves purchases, not clicks);
* click-farm bots (``bot_rate`` of the users) have many regularly timed sessions, click most of what
  they see (half of it a small set of promoted long-tail items) and never cart or buy;
* sessions start by a daily rhythm (``HOUR_WEIGHTS``, business time); ``weekend_boost`` (off by
  default) multiplies the human sessions of Saturdays and Sundays.

Files (all Parquet, zstd), one folder per day, each written to a temporary folder and renamed:

* ``landing/events/ds=D/part-0.parquet``, ``landing/items/ds=D/part-0.parquet``,
  ``landing/users/ds=D/part-0.parquet`` (the landing-zone contract of DESIGN.md);
* ``truth/exposures/ds=D/part-0.parquet``: ``event_id`` of each impression with its true
  ``p_click``, ``p_cart`` and ``p_purchase`` (unconditional, i.e. per impression);
* ``truth/bots.parquet`` (``user_id``) and ``truth/bot_items.parquet`` (``item_id``, promoted items).

Everything is deterministic: the user / item universe depends on ``config.seed`` only, and day ``D``
draws from ``np.random.default_rng([seed, 1, D.toordinal()])``, so a day's files are byte-identical
whether it is simulated alone or inside a longer run (on the same machine and library versions).
The work is vectorised over sessions and impressions (numpy); id strings are built as fixed-width
byte rows handed to Arrow / polars without per-row Python. Event times are UTC; day ``D`` is the
business day of ``settings.business_tz`` (default UTC). Rows of a day's events file are grouped by
session (sessions in order of start time), then position, then funnel stage.

Planted anomalies (each off by default but bots; switched on by a rate in :class:`SimConfig`), all
labelled in ``truth/anomalies.parquet`` (``entity_type, entity_id, kind, ds``; merged by day on reruns):

* ``click_farm_bot`` users (``bot_rate``, above) and the ``bot_target_item`` items they promote;
* ``fraud_buyer`` users (``fraud_rate``): accounts signed up 1-3 days earlier that buy several of the
  most expensive items (top price decile) in a burst of two quick sessions;
* ``click_spam`` items (``click_spam_rate``): a long-tail item whose clicks jump (10x its organic
  clicks, at least 60) from ``click_spam_account`` users, new accounts with metronome sessions;
* ``broken_tracking`` items (``broken_item_rate``) or a scene (``broken_scene_rate``): impressions
  are logged but every click of the item (scene) that day is lost (carts and purchases stay); the
  fraud and spam sessions avoid broken items and scenes, so that each planted anomaly stays visible.

Extra accounts of a day get ids after the universe's (``u<n_users + 200 * (ordinal % 1000) + k>``) and
rows in that day's users snapshot; their events have ids ``e<YYYYMMDD>-x…`` and sessions ``s<YYYYMMDD>-x…``.

Bad data for the reliability tests (all off by default; rates are per event row unless noted). What
was injected into the landing folder of day D is listed in ``truth/bad_rows/ds=D/part-0.parquet``
(``event_id`` as generated, ``kind``, ``row``: 0-based row of the day's events file, ``detail``):

* ``duplicate`` (``duplicate_rate``): an exact copy right after the original row;
* ``null_event_id|null_user_id|null_item_id|null_event_time`` (``null_key_rate``): one key nulled;
* ``unknown_event_type`` (``unknown_type_rate``); ``price_out_of_range`` (``bad_price_rate``: negative
  or above 1e7); ``future_event_time`` (``future_time_rate``: 2 to 30 days later);
* ``late_event`` (``late_rate``, a share of sessions): the session happened on D-1 (same clock time)
  and arrived in D's folder;
* ``added_column`` / ``missing_column`` (``schema_drift_rate``, per day): the day's file gains
  ``app_version`` or loses one nullable column (named in ``detail``);
* ``empty_day`` (``empty_day_rate``, per day): the events file has no rows;
* ``truncated_line`` (``truncated_csv_rate``, per day; needs ``write_csv``): the CSV copy of the events,
  ``csv/events/ds=D/part-0.csv`` (see :func:`events_csv_path`), ends in a cut-off line.

Injections draw from their own random streams (``[seed, 2, D, k]`` and ``[seed, 3, D, k]``): with every
switch off the output is byte-identical to a run without them, and the rows a switch touches do not
depend on the other switches (a row gets at most one in-place kind: null key, unknown type, price,
future time, late, in that order of precedence; duplicates copy clean rows).
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pyarrow as pa

from mtl_model.config import Settings
from mtl_model.dates import parse_date
from mtl_model.files import replace_dir, temporary_path, write_parquet_atomic

__all__ = [
    "SimConfig",
    "SimSummary",
    "simulate",
    "true_probabilities",
    "main_summary_line",
    "events_csv_path",
    "CATEGORY_PATHS",
    "SIMULATED_EVENT_TYPES",
    "ANOMALY_KINDS",
    "BAD_ROW_KINDS",
]

# the subset of contract.EVENT_TYPES the simulator writes
SIMULATED_EVENT_TYPES = ("impression", "click", "cart", "purchase")
SCENES = ("home", "search")

# Category paths; the leaf is the search query of the category. More categories than listed get
# "misc/cat<k>" paths.
CATEGORY_PATHS = (
    "fashion/shoes",
    "fashion/dresses",
    "fashion/jackets",
    "fashion/bags",
    "electronics/phones",
    "electronics/laptops",
    "electronics/headphones",
    "electronics/cameras",
    "home/furniture",
    "home/kitchen",
    "home/bedding",
    "home/lighting",
    "beauty/skincare",
    "beauty/makeup",
    "sports/running",
    "sports/cycling",
    "toys/puzzles",
    "toys/dolls",
    "books/novels",
    "books/cookbooks",
    "grocery/coffee",
    "grocery/snacks",
    "garden/tools",
    "pets/food",
)
BRANDS = (
    "Acme", "Northwind", "Contoso", "Fabrikam", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay",
    "Stark", "Wayne", "Tyrell", "Cyberdyne", "Soylent", "Wonka", "Oceanic", "Gringotts", "Monarch",
    "Pied Piper", "Aperture", "Black Mesa", "Dunder", "Sterling", "Prestige", "Zenith", "Nimbus",
    "Polaris", "Orbit", "Lumen", "Kestrel",
)  # fmt: skip
REGIONS = ("north", "south", "east", "west", "central", "islands")
REGION_WEIGHTS = np.array([0.25, 0.2, 0.2, 0.15, 0.15, 0.05])
DEVICES = ("ios", "android", "web")
DEVICE_WEIGHTS = np.array([0.35, 0.45, 0.2])
# Share of sessions starting in each hour of the (business) day.
HOUR_WEIGHTS = np.array([2, 1, 1, 1, 1, 2, 3, 5, 6, 7, 7, 8, 9, 8, 7, 7, 8, 9, 11, 13, 14, 12, 8, 4], float)
SIGNUP_ANCHOR = date(2024, 1, 1)  # users signed up 1..1500 days before this (and before the simulated day)

# Behaviour parameters (logit scale).
B_CLICK, A_CLICK, SEARCH_CLICK_OFFSET, POS_DECAY = -3.0, 0.7, 0.35, 0.35
B_CART, A_CART = -2.35, 0.45
B_BUY, A_BUY = -2.0, 0.45
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

# Planted anomalies and bad data (see the module docstring).
ANOMALY_RATES = ("fraud_rate", "click_spam_rate", "broken_item_rate", "broken_scene_rate")
ANOMALY_KINDS = (
    "click_farm_bot",
    "bot_target_item",
    "fraud_buyer",
    "click_spam",
    "click_spam_account",
    "broken_tracking",
)
EXTRA_IDS_PER_DAY, EXTRA_ID_DAYS = 200, 1000  # id block of each day's extra accounts (fraud + spam)
MAX_FRAUD_ACCOUNTS, MAX_SPAM_ITEMS, SPAM_ACCOUNTS_PER_ITEM = 100, 25, 4
FRAUD_SESSIONS, FRAUD_PRICE_QUANTILE = 2, 0.9
SPAM_MIN_CLICKS, SPAM_FACTOR, SPAM_MAX_CLICKS = 60, 10, 4000
# per-row kinds in order of precedence, with the rate that switches each on
ROW_KINDS = (
    ("null_key", "null_key_rate"),
    ("unknown_event_type", "unknown_type_rate"),
    ("price_out_of_range", "bad_price_rate"),
    ("future_event_time", "future_time_rate"),
)
BAD_DATA_RATES = (
    "duplicate_rate",
    "null_key_rate",
    "unknown_type_rate",
    "bad_price_rate",
    "future_time_rate",
    "late_rate",
    "schema_drift_rate",
    "empty_day_rate",
    "truncated_csv_rate",
)
BAD_ROW_KINDS = (
    "duplicate",
    "null_event_id",
    "null_user_id",
    "null_item_id",
    "null_event_time",
    "unknown_event_type",
    "price_out_of_range",
    "future_event_time",
    "late_event",
    "added_column",
    "missing_column",
    "empty_day",
    "truncated_line",
)
NULL_KEY, UNKNOWN_TYPE, BAD_PRICE, FUTURE, LATE = range(5)  # codes of the per-row kinds (LATE last)
NULL_KEYS = ("event_id", "user_id", "item_id", "event_time")
UNKNOWN_TYPES = ("hover", "share", "add_to_wishlist", "impresion", "page_view_v2")
DRIFT_ADDED = "app_version"
DRIFT_DROPPABLE = ("category_id", "session_id", "query", "position", "price")
BAD_ROWS_SCHEMA = {"event_id": pl.String, "kind": pl.String, "row": pl.Int64, "detail": pl.String}
ANOMALIES_SCHEMA = {"entity_type": pl.String, "entity_id": pl.String, "kind": pl.String, "ds": pl.Date}


@dataclass(frozen=True)
class SimConfig:
    n_users: int = 2000
    n_items: int = 1000
    n_categories: int = 20  # at most n_items are used
    sessions_per_user: float = 1.2  # mean sessions per user per day (heavy-tailed user activity)
    impressions_per_session: int = 10
    search_share: float = 0.3  # share of sessions in the search scene (others: home)
    latent_dim: int = 8
    bot_rate: float = 0.005  # share of users that are click-farm bots (0 disables)
    seed: int = 42
    # --- realism
    weekend_boost: float = 0.0  # human sessions on Saturdays and Sundays are (1 + this) times as many
    # --- planted anomalies (see the module docstring); per day
    fraud_rate: float = 0.0  # new fraudulent buyer accounts, as a share of n_users (at least 1 if > 0)
    click_spam_rate: float = 0.0  # share of items whose clicks are spammed (at least 1 if > 0)
    broken_item_rate: float = 0.0  # share of items whose clicks are lost (at least 1 if > 0)
    broken_scene_rate: float = 0.0  # probability that one scene loses all its clicks
    # --- bad data (see the module docstring); off by default
    duplicate_rate: float = 0.0
    null_key_rate: float = 0.0
    unknown_type_rate: float = 0.0
    bad_price_rate: float = 0.0
    future_time_rate: float = 0.0
    late_rate: float = 0.0  # share of sessions
    schema_drift_rate: float = 0.0  # probability per day
    empty_day_rate: float = 0.0  # probability per day
    truncated_csv_rate: float = 0.0  # probability per day (with write_csv)
    write_csv: bool = False  # also write the events as CSV (csv/events/ds=D/part-0.csv)

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < 1 or self.n_categories < 1 or self.latent_dim < 1:
            raise ValueError("n_users, n_items, n_categories and latent_dim must be >= 1")
        if self.impressions_per_session < 1 or self.sessions_per_user < 0:
            raise ValueError("impressions_per_session must be >= 1 and sessions_per_user >= 0")
        if not (0.0 <= self.search_share <= 1.0 and 0.0 <= self.bot_rate <= 1.0):
            raise ValueError("search_share and bot_rate must be in [0, 1]")
        for name in (*ANOMALY_RATES, *BAD_DATA_RATES):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.weekend_boost < 0:
            raise ValueError("weekend_boost must be >= 0")
        if self.truncated_csv_rate > 0 and not self.write_csv:
            raise ValueError("truncated_csv_rate needs write_csv=True")

    @property
    def plants_anomalies(self) -> bool:
        return any(getattr(self, name) > 0 for name in ANOMALY_RATES)

    @property
    def injects_bad_data(self) -> bool:
        return any(getattr(self, name) > 0 for name in BAD_DATA_RATES)


@dataclass
class SimSummary:
    days: list[date]
    events: int
    users: int
    items: int
    bots: int
    sessions: int = 0
    impressions: int = 0
    clicks: int = 0
    carts: int = 0
    purchases: int = 0
    seconds: float = 0.0
    landing_dir: Path | None = None
    truth_dir: Path | None = None
    per_day: dict[str, int] = field(default_factory=dict)  # ds -> events
    bad_rows: int = 0  # rows of truth/bad_rows written (what was injected)
    anomalies: int = 0  # rows of truth/anomalies.parquet for the simulated days

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else float("nan")


def main_summary_line(s: SimSummary) -> str:
    span = f"{s.days[0]}..{s.days[-1]}" if s.days else "-"
    return (
        f"simulated {len(s.days)} day(s) {span}: {s.events:,} events "
        f"({s.impressions:,} impressions, {s.clicks:,} clicks, {s.carts:,} carts, {s.purchases:,} purchases; "
        f"CTR {s.ctr:.1%}) from {s.users:,} users ({s.bots} bots), {s.items:,} items "
        f"-> {s.landing_dir} ({s.events_per_second:,.0f} events/s)"
        + (f"; {s.bad_rows:,} bad rows injected" if s.bad_rows else "")
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _digits(x: np.ndarray, width: int) -> np.ndarray:
    """ASCII decimal digits of non-negative integers ``x``, zero-padded: (len(x), width) uint8."""
    out = np.empty((x.size, width), np.uint8)
    x = x.astype(np.uint64)
    for k in range(width - 1, -1, -1):
        q = x // 10
        out[:, k] = x - q * 10 + 48
        x = q
    return out


def _id_bytes(prefix: str, n: int, min_width: int) -> np.ndarray:
    """Rows ``prefix + zero-padded 0..n-1`` as a (n, w) uint8 array; widens when n needs more digits.

    Built from two small digit tables (the low four digits cycle, the high ones repeat per block).
    """
    width = max(min_width, len(str(max(n - 1, 0))))
    pre = np.frombuffer(prefix.encode("ascii"), np.uint8)
    p = pre.size
    low = min(4, width)
    block = 10**low
    n_blocks = max(1, -(-n // block))
    out = np.empty((n_blocks, block, p + width), np.uint8)
    out[:, :, :p] = pre
    out[:, :, p + width - low :] = _digits(np.arange(block), low)[None]
    out[:, :, p : p + width - low] = _digits(np.arange(n_blocks), width - low)[:, None]
    return out.reshape(-1, p + width)[:n]


def _as_strings(rows: np.ndarray, name: str = "") -> pl.Series:
    """A (n, w) uint8 array of ASCII rows as a polars String series (zero-copy into Arrow)."""
    n, w = rows.shape
    offsets = np.arange(0, (n + 1) * w, w, dtype=np.int64)
    arr = pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(rows).reshape(-1))
    )
    return pl.Series(name, arr, dtype=pl.String)


def _ids(prefix: str, n: int, width: int) -> pl.Series:
    return _as_strings(_id_bytes(prefix, n, width))


class _Sampler:
    """Inverse-CDF sampling from a cumulative weight array with a guide table (O(1) per draw)."""

    def __init__(self, cw: np.ndarray, buckets_per_item: int = 16) -> None:
        self.cw, self.n = cw, cw.size
        self.g = buckets_per_item * cw.size
        self.scale = self.g / cw[-1]
        self.guide = np.searchsorted(cw, np.arange(self.g) / self.scale, side="right")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """First index i with cw[i] > x (np.searchsorted(cw, x, 'right')), clipped to n - 1."""
        shape, x = x.shape, x.reshape(-1)
        b = np.clip((x * self.scale).astype(np.int64) - 1, 0, self.g - 1)  # a bucket starting <= x
        idx = self.guide[b]
        last = self.n - 1
        todo = np.flatnonzero(self.cw[np.minimum(idx, last)] <= x)
        while todo.size:
            idx[todo] += 1
            nxt = idx[todo]
            todo = todo[(nxt < last) & (self.cw[np.minimum(nxt, last)] <= x[todo])]
        return np.minimum(idx, last).reshape(shape)


class _Universe:
    """Users, items and categories; a function of the config (seed) alone."""

    def __init__(self, cfg: SimConfig) -> None:
        rng = np.random.default_rng([cfg.seed, 0])
        n_u, n_i, d = cfg.n_users, cfg.n_items, cfg.latent_dim
        n_c = self.n_categories = min(cfg.n_categories, n_i)  # every category gets an item
        self.cfg = cfg
        # --- categories
        paths = [CATEGORY_PATHS[k] if k < len(CATEGORY_PATHS) else f"misc/cat{k:02d}" for k in range(n_c)]
        self.cat_paths = pl.Series("category_path", paths, dtype=pl.String)
        self.cat_leaf = pl.Series("query", [p.rsplit("/", 1)[-1] for p in paths] + [None], dtype=pl.String)
        self.cat_ids = _ids("c", n_c, 2)
        cat_vec = rng.normal(0.0, 1.0, (n_c, d))
        cat_logprice = rng.uniform(np.log(8.0), np.log(250.0), n_c)
        cat_size = rng.lognormal(0.0, 0.5, n_c)  # relative category sizes
        # --- items: every category gets at least one item
        first = np.arange(n_c)
        rest = rng.choice(n_c, size=n_i - first.size, p=cat_size / cat_size.sum())
        self.item_cat = np.concatenate([first, rest]).astype(np.int64)
        self.item_vec = cat_vec[self.item_cat] + 0.8 * rng.normal(0.0, 1.0, (n_i, d))
        self.item_logpop = rng.normal(0.0, 1.1, n_i)
        z = (self.item_logpop - self.item_logpop.mean()) / (self.item_logpop.std() + 1e-9)
        self.item_quality = 0.25 * z + rng.normal(0.0, 0.2, n_i)
        self.item_price = np.maximum(
            0.99, np.round(np.exp(cat_logprice[self.item_cat] + 0.5 * rng.normal(size=n_i)), 2)
        )
        self.item_logprice = np.log(self.item_price)
        self.logprice_ref = float(self.item_logprice.mean())
        brand = rng.integers(0, len(BRANDS), n_i)
        model_no = rng.integers(100, 1000, n_i)
        self.item_ids = _ids("i", n_i, 6)
        self.cat_order = np.argsort(self.item_cat, kind="stable")  # items grouped by category
        counts = np.bincount(self.item_cat, minlength=n_c)
        self.cat_end = np.cumsum(counts)
        self.cat_start = self.cat_end - counts
        self.items = pl.DataFrame(
            {
                "item_id": self.item_ids,
                "category_id": self.cat_ids.gather(self.item_cat),
                "category_path": self.cat_paths.gather(self.item_cat),
                "brand": pl.Series(BRANDS).gather(brand),
                "price": self.item_price,
                "_model": model_no,
            }
        ).with_columns(
            title=pl.concat_str(
                pl.col("brand"),
                pl.col("category_path").str.split("/").list.last(),
                pl.col("_model").cast(pl.String),
                separator=" ",
            )
        )
        self.items = self.items.drop("_model")
        # --- users
        self.user_vec = rng.normal(0.0, 1.0, (n_u, d))
        act = rng.lognormal(0.0, 0.9, n_u)
        self.activity = act * (cfg.sessions_per_user / act.mean())
        self.price_sens = rng.lognormal(np.log(0.9), 0.35, n_u)
        region = rng.choice(len(REGIONS), n_u, p=REGION_WEIGHTS / REGION_WEIGHTS.sum())
        device = rng.choice(len(DEVICES), n_u, p=DEVICE_WEIGHTS / DEVICE_WEIGHTS.sum())
        self.signup_days = (SIGNUP_ANCHOR.toordinal() - rng.integers(1, 1501, n_u)).astype(np.int64)
        self.user_ids = _ids("u", n_u, 6)
        self.users_base = pl.DataFrame(
            {
                "user_id": self.user_ids,
                "region": pl.Series(REGIONS).gather(region),
                "device": pl.Series(DEVICES).gather(device),
            }
        )
        # preferred categories: top-m of softmax(user . category)
        m = min(3, n_c)
        aff = self.user_vec @ cat_vec.T / np.sqrt(d) * 1.5
        top = np.argsort(-aff, axis=1, kind="stable")[:, :m]
        w = np.exp(np.take_along_axis(aff, top, axis=1))
        self.top_cat = top
        self.top_cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
        # --- bots and the items they promote
        n_bots = min(n_u, max(1, round(cfg.bot_rate * n_u))) if cfg.bot_rate > 0 else 0
        self.bots = np.sort(rng.choice(n_u, n_bots, replace=False)) if n_bots else np.zeros(0, np.int64)
        self.is_bot = np.zeros(n_u, bool)
        self.is_bot[self.bots] = True
        n_targets = max(1, min(10, n_i // 50))
        tail = np.argsort(self.item_logpop, kind="stable")[: max(n_targets, n_i // 2)]
        self.bot_items = np.sort(rng.choice(tail, n_targets, replace=False))


@dataclass
class _Day:
    events: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    exposures: pl.DataFrame
    sessions: int
    counts: np.ndarray  # events per type
    anomalies: pl.DataFrame | None = None  # truth rows (entity_type, entity_id, kind, ds)
    bad_rows: pl.DataFrame | None = None  # truth rows (event_id, kind, row, detail); None: nothing injected
    csv_cut: float | None = None  # cut the CSV's last line at this fraction of its length


def _taste_probabilities(
    uni: _Universe, users: np.ndarray, items: np.ndarray, aff: np.ndarray, position: np.ndarray, search
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The true model of a human user (arrays broadcast together, e.g. users [S, 1], items [S, K]):
    P(click) of an impression at ``position`` (1 = top) in the search results or the home feed,
    P(cart | click) and P(purchase | cart). ``aff`` = user · item / √d."""
    logit = B_CLICK + A_CLICK * aff + uni.item_quality[items] + -POS_DECAY * np.log(position)
    logit += SEARCH_CLICK_OFFSET * search
    price_term = uni.price_sens[users] * (uni.item_logprice[items] - uni.logprice_ref)
    return _sigmoid(logit), _sigmoid(B_CART + A_CART * aff), _sigmoid(B_BUY + A_BUY * aff - price_term)


def _day_bounds_us(day: date, tz: str) -> tuple[int, int]:
    """Start (UTC epoch microseconds) and length of business day ``day``."""
    zone = ZoneInfo(tz)
    start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).astimezone(UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return (start - epoch) // timedelta(microseconds=1), (end - start) // timedelta(microseconds=1)


def _simulate_day(uni: _Universe, day: date, tz: str) -> _Day:
    cfg = uni.cfg
    rng = np.random.default_rng([cfg.seed, 1, day.toordinal()])
    n_u, n_i, n_c, K = cfg.n_users, cfg.n_items, uni.n_categories, cfg.impressions_per_session
    day0_us, day_us = _day_bounds_us(day, tz)

    # ---- today's catalogue: stock and sampling weights
    in_stock = rng.random(n_i) >= OUT_OF_STOCK_RATE
    weight = np.exp(uni.item_logpop) * np.where(in_stock, 1.0, 1e-9)
    cw_all = np.cumsum(weight)
    cw_cat = np.cumsum(weight[uni.cat_order])
    draw_all, draw_cat = _Sampler(cw_all), _Sampler(cw_cat)
    cat_hi = cw_cat[uni.cat_end - 1]
    cat_lo = np.where(uni.cat_start > 0, cw_cat[np.maximum(uni.cat_start - 1, 0)], 0.0)

    # ---- sessions
    lam = np.where(uni.is_bot, BOT_SESSIONS_MEAN, uni.activity)
    if cfg.weekend_boost and day.weekday() >= 5:
        lam = np.where(uni.is_bot, lam, lam * (1.0 + cfg.weekend_boost))
    n_sess = rng.poisson(lam)
    S = int(n_sess.sum())
    s_user = np.repeat(np.arange(n_u), n_sess)
    s_bot = uni.is_bot[s_user]
    s_search = (rng.random(S) < cfg.search_share) & ~s_bot

    def taste_category(users: np.ndarray) -> np.ndarray:
        """A category per entry of ``users``: one of the user's top categories, sometimes a random one."""
        u = rng.random(users.size)
        k = (u[:, None] > uni.top_cum[users, :-1]).sum(axis=1)
        cats = uni.top_cat[users, k]
        explore = rng.random(users.size) < EXPLORE_RATE
        return np.where(explore, rng.integers(0, n_c, users.size), cats)

    s_qcat = taste_category(s_user)

    # ---- shown items (S, K): search from the query category; home half personal, half popular
    def draw(cat: np.ndarray, r: np.ndarray, uniform: bool = False) -> np.ndarray:
        """An item per slot: by popularity (or uniformly) within category ``cat``; by popularity
        overall where ``cat`` < 0."""
        out = np.empty(r.shape, np.int64)
        p, q = np.flatnonzero(cat >= 0), np.flatnonzero(cat < 0)
        c = cat[p]
        if uniform:
            pos = uni.cat_start[c] + (r[p] * (uni.cat_end[c] - uni.cat_start[c])).astype(np.int64)
        else:
            lo = cat_lo[c]
            pos = draw_cat(lo + r[p] * (cat_hi[c] - lo))
        out[p] = uni.cat_order[pos.clip(uni.cat_start[c], uni.cat_end[c] - 1)]
        out[q] = draw_all(r[q] * cw_all[-1])
        return out

    slot_cat = np.where(s_search[:, None], s_qcat[:, None], -1).repeat(K, axis=1).reshape(-1)
    home = (~s_search & ~s_bot)[:, None]
    home_personal = np.flatnonzero(home & (rng.random((S, K)) < 0.5))
    slot_cat[home_personal] = taste_category(s_user[home_personal // K])
    items = draw(slot_cat, rng.random(S * K)).reshape(S, K)
    bot_s = np.flatnonzero(s_bot)
    if bot_s.size:  # bots: half promoted items, half popular
        promo = rng.random((bot_s.size, K)) < BOT_TARGET_SHARE
        target = uni.bot_items[rng.integers(0, uni.bot_items.size, (bot_s.size, K))]
        items[bot_s] = np.where(promo, target, items[bot_s])
    # redraw repeated items of a session: from the same category (uniformly: the long tail fills up
    # small categories) first, then from overall popularity
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
        items.reshape(-1)[again] = draw(cat, rng.random(again.size), uniform=same_source)
        rows = np.unique(rows[rr])

    # ---- logging policy: rank by a noisy relevance score; positions 1..K
    aff = np.einsum("sd,skd->sk", uni.user_vec[s_user], uni.item_vec[items]) / np.sqrt(cfg.latent_dim)
    score = aff + 0.5 * uni.item_logpop[items] + rng.normal(0.0, 1.0, (S, K))
    rank = np.argsort(-score, axis=1, kind="stable")
    items = np.take_along_axis(items, rank, axis=1)
    aff = np.take_along_axis(aff, rank, axis=1)

    # ---- true probabilities and outcomes
    p_click, p_cart_c, p_buy_c = _taste_probabilities(
        uni, s_user[:, None], items, aff, np.arange(1, K + 1)[None, :], s_search[:, None]
    )
    bot_rows = s_bot[:, None]
    p_click = np.where(bot_rows, BOT_CLICK_P, p_click)
    p_cart_c = np.where(bot_rows, 0.0, p_cart_c)
    p_buy_c = np.where(bot_rows, 0.0, p_buy_c)
    u3 = rng.random((3, S, K))
    click = u3[0] < p_click
    cart = click & (u3[1] < p_cart_c)
    buy = cart & (u3[2] < p_buy_c)

    # ---- timing (microseconds from the start of the day)
    gaps = np.minimum(rng.exponential(4.0, (S, K)), 60.0)
    gaps[:, 0] = 0.0
    imp_off = (np.cumsum(gaps, axis=1) * US).astype(np.int64)
    imp_off[bot_s] = np.arange(K) * 2 * US  # bots: metronome timing, sessions evenly spread over the day
    hour = rng.choice(24, S, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    start = ((hour + rng.random(S)) * (day_us / 24)).astype(np.int64)
    if bot_s.size:
        first = np.cumsum(n_sess) - n_sess  # index of each user's first session
        j = bot_s - first[s_user[bot_s]]
        spacing = day_us // n_sess[s_user[bot_s]]
        phase = (rng.random(n_u) * 600).astype(np.int64) * US  # per bot, whole seconds
        start[bot_s] = phase[s_user[bot_s]] + (j * spacing // US) * US
    span = imp_off[:, -1] + np.where(s_bot, BOT_CLICK_DELAY_US, FUNNEL_MAX_US)
    start = np.clip(start, 0, np.maximum(day_us - 1 - span, 0))

    # ---- events: sessions in order of start time, then position, then funnel stage; no global sort
    perm = np.argsort(start, kind="stable")
    happened = np.stack([np.ones_like(click), click, cart, buy], axis=2)[perm]  # (S, K, 4)
    flat = np.flatnonzero(happened)
    sess = flat // (4 * K)  # session number of the day (in start order)
    pos0 = flat // 4 % K
    etype = (flat % 4).astype(np.int8)
    ex = perm[sess] * K + pos0  # exposure index into the (S, K) arrays above
    user = s_user[perm][sess]
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
    item = items.reshape(-1)[ex]
    search = s_search[perm][sess]
    counts = np.bincount(etype, minlength=4)
    ymd = day.strftime("%Y%m%d")
    event_bytes = _id_bytes(f"e{ymd}-", flat.size, 8)
    q_idx = np.where(s_search, s_qcat, n_c)[perm][sess]
    events = pl.DataFrame(
        [
            _as_strings(event_bytes, "event_id"),
            pl.Series("event_time", t).cast(pl.Datetime("us", "UTC")),
            uni.user_ids.gather(user).alias("user_id"),
            uni.item_ids.gather(item).alias("item_id"),
            pl.Series("event_type", SIMULATED_EVENT_TYPES).gather(etype),
            pl.Series("scene", SCENES).gather(search.astype(np.int8)),
            uni.cat_leaf.gather(q_idx).alias("query"),
            pl.Series("position", (pos0 + 1).astype(np.int32)),
            _as_strings(_id_bytes(f"s{ymd}-", S, 6)[sess], "session_id"),
            pl.Series("price", uni.item_price[item]),
            uni.cat_ids.gather(uni.item_cat[item]).alias("category_id"),
        ]
    )
    imp_rows = np.flatnonzero(etype == 0)
    ex_imp = ex[imp_rows]
    p_cart = p_click * p_cart_c
    exposures = pl.DataFrame(
        [
            _as_strings(event_bytes[imp_rows], "event_id"),
            pl.Series("p_click", p_click.reshape(-1)[ex_imp]),
            pl.Series("p_cart", p_cart.reshape(-1)[ex_imp]),
            pl.Series("p_purchase", (p_cart * p_buy_c).reshape(-1)[ex_imp]),
        ]
    )
    items_df = uni.items.with_columns(in_stock=pl.Series(in_stock))
    signup = np.minimum(uni.signup_days, day.toordinal() - 1) - date(1970, 1, 1).toordinal()
    users_df = uni.users_base.with_columns(
        signup_date=pl.Series(signup.astype(np.int32)).cast(pl.Date)
    ).select("user_id", "signup_date", "region", "device")
    out = _Day(events, items_df, users_df, exposures, S, counts, anomalies=_standing_anomalies(uni, day))
    if cfg.plants_anomalies:
        _plant_anomalies(uni, day, tz, out, start[perm][sess], item, etype, in_stock)
    if cfg.injects_bad_data:
        _inject_bad_data(cfg, day, tz, out)
    return out


def _indices(ids: pl.Series, prefix: str, n: int) -> np.ndarray:
    """Universe indices of ids made by :func:`_ids` (``prefix`` + zero-padded index); -1 elsewhere."""
    ids = ids.cast(pl.String())
    number = ids.str.strip_prefix(prefix).cast(pl.Int64, strict=False)
    ok = ids.str.starts_with(prefix) & number.is_between(0, n - 1)
    return pl.select(pl.when(ok).then(number).otherwise(-1)).to_series().fill_null(-1).to_numpy()


def true_probabilities(
    config: SimConfig, users: pl.Series, items: pl.Series, position: np.ndarray, search: bool = False
) -> pl.DataFrame:
    """The simulator's own probabilities of showing ``items[k]`` to ``users[k]`` at ``position[k]`` (1 =
    top) in the home feed (or the search results), from the universe of ``config`` (a function of the
    config alone): columns ``p_click``, ``p_cart``, ``p_purchase``, unconditional per impression as in
    ``truth/exposures``. Null for ids the simulator did not make and for click bots (they click by a
    rule, not by taste). For judging ranked lists against the truth, whatever was shown."""
    uni = _Universe(config)
    u = _indices(users, "u", config.n_users)
    i = _indices(items, "i", config.n_items)
    known = (u >= 0) & (i >= 0)
    u, i = np.where(known, u, 0), np.where(known, i, 0)
    known &= ~uni.is_bot[u]
    aff = (uni.user_vec[u] * uni.item_vec[i]).sum(axis=1) / np.sqrt(config.latent_dim)
    position = np.maximum(np.asarray(position, dtype=np.float64), 1.0)
    p_click, p_cart_c, p_buy_c = _taste_probabilities(uni, u, i, aff, position, float(search))
    p_cart = p_click * p_cart_c
    p_purchase = p_cart * p_buy_c
    return pl.DataFrame(
        {
            name: np.where(known, p, np.nan)
            for name, p in (("p_click", p_click), ("p_cart", p_cart), ("p_purchase", p_purchase))
        }
    ).fill_nan(None)


# ---------------------------------------------------------------- planted anomalies


def _number_ids(prefix: str, numbers: np.ndarray, min_width: int) -> pl.Series:
    """``prefix`` + zero-padded ``numbers`` as a String series (vectorised)."""
    width = max(min_width, len(str(int(numbers.max())))) if numbers.size else min_width
    pre = np.frombuffer(prefix.encode("ascii"), np.uint8)
    rows = np.empty((numbers.size, pre.size + width), np.uint8)
    rows[:, : pre.size] = pre
    rows[:, pre.size :] = _digits(numbers, width)
    return _as_strings(rows)


def _truth(entity_type: str, ids: pl.Series, kind: str, day: date) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "entity_type": pl.Series([entity_type] * ids.len(), dtype=pl.String),
            "entity_id": ids.cast(pl.String),
            "kind": pl.Series([kind] * ids.len(), dtype=pl.String),
            "ds": pl.Series([day] * ids.len(), dtype=pl.Date),
        }
    )


def _standing_anomalies(uni: _Universe, day: date) -> pl.DataFrame:
    """The click-farm bots and the items they promote: active every day."""
    if uni.bots.size == 0:
        return pl.DataFrame(schema=ANOMALIES_SCHEMA)
    return pl.concat(
        [
            _truth("user", uni.user_ids.gather(uni.bots), "click_farm_bot", day),
            _truth("item", uni.item_ids.gather(uni.bot_items), "bot_target_item", day),
        ]
    )


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


def _fraud(uni: _Universe, rng: np.random.Generator, day_us: int, usable: np.ndarray, scene: int) -> _Planted:
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
    uni: _Universe, rng: np.random.Generator, day_us: int, usable: np.ndarray, clicks: np.ndarray, scene: int
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


def _count_types(events: pl.DataFrame) -> np.ndarray:
    n = dict(events.group_by("event_type").len().iter_rows()) if "event_type" in events.columns else {}
    return np.array([n.get(t, 0) for t in SIMULATED_EVENT_TYPES], np.int64)


def _plant_anomalies(
    uni: _Universe,
    day: date,
    tz: str,
    out: _Day,
    row_start: np.ndarray,
    item: np.ndarray,
    etype: np.ndarray,
    in_stock: np.ndarray,
) -> None:
    """Add fraud and spam sessions (merged by session start) and drop the clicks of broken tracking."""
    cfg = uni.cfg
    n_i = cfg.n_items

    def rng(k: int) -> np.random.Generator:
        return np.random.default_rng([cfg.seed, 3, day.toordinal(), k])

    day0_us, day_us = _day_bounds_us(day, tz)
    clicks = np.bincount(item[etype == 1], minlength=n_i)
    shown = np.bincount(item[etype == 0], minlength=n_i)
    truth = [out.anomalies]
    # ---- broken tracking first (busy items, a scene): the planted sessions below avoid them, so
    # that every planted anomaly stays visible
    broken = np.zeros(n_i, bool)
    broken_scene = -1
    if cfg.broken_item_rate > 0:
        g = rng(2)
        cand = np.flatnonzero(clicks > 0)
        if cand.size:
            busy = cand[np.argsort(-shown[cand], kind="stable")][: max(1, cand.size // 4)]
            n_b = min(busy.size, max(1, round(cfg.broken_item_rate * n_i)))
            broken[g.choice(busy, n_b, replace=False)] = True
            truth.append(_truth("item", uni.item_ids.gather(np.flatnonzero(broken)), "broken_tracking", day))
    if cfg.broken_scene_rate > 0:
        g = rng(3)
        if g.random() < cfg.broken_scene_rate:
            broken_scene = int(g.integers(0, len(SCENES)))
            truth.append(_truth("scene", pl.Series([SCENES[broken_scene]]), "broken_tracking", day))
    planted_scene = 1 if broken_scene == 0 else 0  # home, or search when home is broken
    usable = in_stock & ~broken
    planted: list[tuple[str, _Planted]] = []
    if cfg.fraud_rate > 0:
        planted.append(("fraud_buyer", _fraud(uni, rng(0), day_us, usable, planted_scene)))
    if cfg.click_spam_rate > 0:
        spam_targets, sp = _spam(uni, rng(1), day_us, usable, clicks, planted_scene)
        planted.append(("click_spam_account", sp))
        truth.append(_truth("item", uni.item_ids.gather(spam_targets), "click_spam", day))
    if planted:
        ymd = day.strftime("%Y%m%d")
        acc0 = cfg.n_users + (day.toordinal() % EXTRA_ID_DAYS) * EXTRA_IDS_PER_DAY
        n_acc = [pl_.signup_ago.size for _, pl_ in planted]
        numbers = acc0 + np.arange(sum(n_acc))
        acc_ids = _number_ids("u", numbers, uni.user_ids.str.len_bytes().max() - 1)
        acc_off = np.cumsum([0, *n_acc])[:-1]
        sess_off = np.cumsum([0, *[p.n_sessions for _, p in planted]])[:-1]
        for (kind, p), a0 in zip(planted, acc_off, strict=True):
            truth.append(_truth("user", acc_ids.slice(a0, p.signup_ago.size), kind, day))

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for _, p in planted])

        acc = np.concatenate([p.acc + o for (_, p), o in zip(planted, acc_off, strict=True)])
        sess = np.concatenate([p.sess + o for (_, p), o in zip(planted, sess_off, strict=True)])
        it, et, scene, pos0 = cat("item"), cat("etype"), cat("scene"), cat("pos0")
        # one session numbering for the day's planted sessions, in start order
        start = cat("start")
        s_first = np.unique(sess, return_index=True)[1]
        s_rank = np.empty(s_first.size, np.int64)
        s_rank[np.argsort(start[s_first], kind="stable")] = np.arange(s_first.size)
        n_c = uni.n_categories
        x_events = pl.DataFrame(
            [
                _as_strings(_id_bytes(f"e{ymd}-x", acc.size, 7), "event_id"),
                pl.Series("event_time", day0_us + cat("t")).cast(pl.Datetime("us", "UTC")),
                acc_ids.gather(acc).alias("user_id"),
                uni.item_ids.gather(it).alias("item_id"),
                pl.Series("event_type", SIMULATED_EVENT_TYPES).gather(et),
                pl.Series("scene", SCENES).gather(scene),
                uni.cat_leaf.gather(np.where(scene == 1, uni.item_cat[it], n_c)).alias("query"),
                pl.Series("position", (pos0 + 1).astype(np.int32)),
                _as_strings(_id_bytes(f"s{ymd}-x", s_first.size, 5)[s_rank[sess]], "session_id"),
                pl.Series("price", uni.item_price[it]),
                uni.cat_ids.gather(uni.item_cat[it]).alias("category_id"),
            ]
        )
        imp = np.flatnonzero(et == 0)
        probs = cat("p")[imp]
        x_exposures = pl.DataFrame(
            [
                x_events["event_id"].gather(imp),
                pl.Series("p_click", probs[:, 0].astype(float)),
                pl.Series("p_cart", probs[:, 1].astype(float)),
                pl.Series("p_purchase", probs[:, 2].astype(float)),
            ]
        )
        order = np.argsort(np.concatenate([row_start, start]), kind="stable")
        out.events = pl.concat([out.events, x_events])[order]
        out.exposures = pl.concat([out.exposures, x_exposures])
        out.sessions += int(s_first.size)
        signup = day.toordinal() - cat("signup_ago") - date(1970, 1, 1).toordinal()
        g = rng(9)
        x_users = pl.DataFrame(
            {
                "user_id": acc_ids,
                "signup_date": pl.Series(signup.astype(np.int32)).cast(pl.Date),
                "region": pl.Series(REGIONS).gather(g.integers(0, len(REGIONS), acc_ids.len())),
                "device": pl.Series(DEVICES).gather(g.integers(0, len(DEVICES), acc_ids.len())),
            }
        )
        out.users = pl.concat([out.users, x_users])
    # ---- broken tracking: impressions are logged, clicks are lost
    lost = pl.col("item_id").is_in(uni.item_ids.filter(pl.Series(broken)).implode())
    if broken_scene >= 0:
        lost = lost | (pl.col("scene") == SCENES[broken_scene])
    out.events = out.events.filter(~((pl.col("event_type") == "click") & lost))
    out.counts = _count_types(out.events)
    out.anomalies = pl.concat(truth)


# ---------------------------------------------------------------- bad data


def _inject_bad_data(cfg: SimConfig, day: date, tz: str, out: _Day) -> None:
    """Damage the day's events in place of ``out`` and list what was done in ``out.bad_rows``."""

    def rng(k: int) -> np.random.Generator:
        return np.random.default_rng([cfg.seed, 2, day.toordinal(), k])

    def truth(ids: pl.Series, kinds: pl.Series, rows: np.ndarray | None, detail: str | None = None):
        n = ids.len()
        return pl.DataFrame(
            {
                "event_id": ids.cast(pl.String),
                "kind": kinds.cast(pl.String),
                "row": pl.Series(rows if rows is not None else [None] * n, dtype=pl.Int64),
                "detail": pl.Series([detail] * n, dtype=pl.String),
            }
        )

    none = pl.Series([None], dtype=pl.String)
    if cfg.empty_day_rate > 0 and rng(0).random() < cfg.empty_day_rate:
        out.events, out.exposures = out.events.clear(), out.exposures.clear()
        out.counts = np.zeros(len(SIMULATED_EVENT_TYPES), np.int64)
        out.bad_rows = truth(none, pl.Series(["empty_day"]), None)
        return
    ev = out.events
    n = ev.height
    ids = ev["event_id"]
    kind = np.full(n, -1, np.int8)  # index into ROW_KINDS, or LATE
    extra: dict[str, np.ndarray] = {}
    for k, (name, rate_name) in enumerate(ROW_KINDS):
        rate = getattr(cfg, rate_name)
        if rate > 0:
            g = rng(k + 1)
            kind[(g.random(n) < rate) & (kind < 0)] = k
            extra[name] = g.integers(0, 1 << 30, n)  # the kind's own draws, one per row
    if cfg.late_rate > 0 and n:
        codes = ev["session_id"].rle_id().to_numpy()  # a session's rows are contiguous
        late_session = rng(5).random(int(codes.max()) + 1) < cfg.late_rate
        kind[late_session[codes] & (kind < 0)] = LATE
    # the truth's kind of each row: a null key names its column
    which = extra["null_key"] % len(NULL_KEYS) if "null_key" in extra else np.zeros(n, np.int64)
    code = np.where(kind == NULL_KEY, which, kind.astype(np.int64) + len(NULL_KEYS) - 1)
    kind_names = pl.Series([f"null_{c}" for c in NULL_KEYS] + [k for k, _ in ROW_KINDS[1:]] + ["late_event"])
    # ---- values: times first (from the clean column), then prices, types and nulls
    t = ev["event_time"].dt.epoch("us").to_numpy().copy()
    if "future_event_time" in extra:
        hit = kind == FUTURE
        shift = 2 * DAY_US + extra["future_event_time"] % (28 * DAY_US // US) * US
        t[hit] += shift[hit]
    if cfg.late_rate > 0:
        hit = kind == LATE
        day0_us, _ = _day_bounds_us(day, tz)
        prev0, prev_len = _day_bounds_us(day - timedelta(days=1), tz)
        t[hit] = prev0 + np.minimum(t[hit] - day0_us, prev_len - 1)
    cols: list[pl.Series | pl.Expr] = [pl.Series("event_time", t).cast(pl.Datetime("us", "UTC"))]
    if "price_out_of_range" in extra:
        hit = kind == BAD_PRICE
        price = ev["price"].to_numpy()
        absurd = np.where(extra["price_out_of_range"] % 2 == 0, -price - 1.0, price * 1e6 + 2e7)
        cols.append(pl.Series("price", np.where(hit, absurd, price)))
    if "unknown_event_type" in extra:
        hit = pl.Series(kind == UNKNOWN_TYPE)
        bogus = pl.Series(UNKNOWN_TYPES).gather(extra["unknown_event_type"] % len(UNKNOWN_TYPES))
        cols.append(pl.when(hit).then(bogus).otherwise(pl.col("event_type")).alias("event_type"))
    ev = ev.with_columns(cols)
    if "null_key" in extra:
        nulled = kind == NULL_KEY
        ev = ev.with_columns(
            pl.when(pl.Series(nulled & (which == k))).then(None).otherwise(pl.col(c)).alias(c)
            for k, c in enumerate(NULL_KEYS)
        )
    # ---- duplicates: exact copies of untouched rows, right after the original
    dup = np.zeros(n, bool)
    if cfg.duplicate_rate > 0:
        dup = (rng(6).random(n) < cfg.duplicate_rate) & (kind < 0)
    width = 1 + dup.astype(np.int64)
    first_row = np.cumsum(width) - width  # row of each original in the written file
    if dup.any():
        ev = ev[np.repeat(np.arange(n), width)]
    parts = []
    touched = np.flatnonzero(kind >= 0)
    parts.append(truth(ids.gather(touched), kind_names.gather(code[touched]), first_row[touched]))
    copies = np.flatnonzero(dup)
    parts.append(truth(ids.gather(copies), pl.Series(["duplicate"] * copies.size), first_row[copies] + 1))
    # ---- schema drift (per day)
    g = rng(7)
    if cfg.schema_drift_rate > 0 and g.random() < cfg.schema_drift_rate:
        if g.random() < 0.5:
            versions = pl.Series(["5.2.0", "5.3.1", "6.0.0"]).gather(g.integers(0, 3, ev.height))
            ev = ev.with_columns(versions.alias(DRIFT_ADDED))
            parts.append(truth(none, pl.Series(["added_column"]), None, DRIFT_ADDED))
        else:
            gone = DRIFT_DROPPABLE[int(g.integers(0, len(DRIFT_DROPPABLE)))]
            ev = ev.drop(gone)
            parts.append(truth(none, pl.Series(["missing_column"]), None, gone))
    # ---- a truncated last CSV line (per day)
    g = rng(8)
    if cfg.truncated_csv_rate > 0 and g.random() < cfg.truncated_csv_rate and ev.height:
        out.csv_cut = float(g.uniform(0.2, 0.6))
        last = np.array([ev.height - 1])
        last_id = ids.gather(np.flatnonzero(first_row + dup == ev.height - 1))
        parts.append(truth(last_id, pl.Series(["truncated_line"]), last, "csv"))
    out.events = ev
    out.counts = _count_types(ev)
    out.bad_rows = pl.concat(parts).sort("row", "kind", nulls_last=False)


PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 1}


def _stage(df: pl.DataFrame, folder: Path) -> Path:
    """Write ``df`` as ``part-0.parquet`` into a temporary sibling of ``folder``; returns that folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(folder)
    tmp.mkdir()
    df.write_parquet(tmp / "part-0.parquet", **PARQUET_OPTIONS)
    return tmp


def _stage_csv(df: pl.DataFrame, folder: Path, cut: float | None) -> Path:
    """Like :func:`_stage`, as ``part-0.csv``; ``cut``: end the file inside its last line (no newline)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(folder)
    tmp.mkdir()
    path = tmp / "part-0.csv"
    df.write_csv(path)
    if cut is not None and df.height:
        size = path.stat().st_size
        with path.open("r+b") as f:
            f.seek(max(0, size - 65536))
            tail = f.read()
            start = size - len(tail) + tail.rstrip(b"\n").rfind(b"\n") + 1  # first byte of the last line
            f.truncate(start + max(1, int(cut * (size - 1 - start))))
    return tmp


def events_csv_path(settings: Settings, ds: date | str) -> Path:
    """The CSV copy of day ``ds``'s events written with ``SimConfig(write_csv=True)``."""
    return settings.home / "csv" / "events" / f"ds={ds}" / "part-0.csv"


def _merge_anomalies(path: Path, frames: list[pl.DataFrame], days: list[date]) -> int:
    """Replace the simulated days' rows of ``truth/anomalies.parquet``; returns their count."""
    new = pl.concat(frames) if frames else pl.DataFrame(schema=ANOMALIES_SCHEMA)
    old = pl.read_parquet(path) if path.exists() else pl.DataFrame(schema=ANOMALIES_SCHEMA)
    old = old.filter(~pl.col("ds").is_in(pl.Series(days, dtype=pl.Date).implode()))
    merged = pl.concat([old, new]).unique().sort("ds", "entity_type", "kind", "entity_id")
    _write_file(merged, path)
    return new.height


def _write_file(df: pl.DataFrame, path: Path) -> None:
    write_parquet_atomic(df, path, **PARQUET_OPTIONS)


def simulate(settings: Settings, start: date | str, days: int, config: SimConfig = SimConfig()) -> SimSummary:  # noqa: B008
    """Simulate ``days`` days from ``start``; write the landing zone and ``settings.home / "truth"``.

    Each day's folders (``landing/{events,items,users}/ds=D`` and ``truth/exposures/ds=D``) are
    replaced as a whole; events are committed last, so a present events folder means a complete day.
    Files of day D are written by two threads while day D+1 is being simulated.
    """
    if isinstance(start, str):
        start = parse_date(start)
    if days < 1:
        raise ValueError("days must be >= 1")
    t0 = time.perf_counter()
    uni = _Universe(config)
    truth = settings.home / "truth"
    _write_file(pl.DataFrame({"user_id": uni.user_ids.gather(uni.bots)}), truth / "bots.parquet")
    _write_file(pl.DataFrame({"item_id": uni.item_ids.gather(uni.bot_items)}), truth / "bot_items.parquet")
    summary = SimSummary(
        days=[],
        events=0,
        users=config.n_users,
        items=config.n_items,
        bots=int(uni.bots.size),
        landing_dir=settings.landing_dir,
        truth_dir=truth,
    )
    pending: list[tuple[Future[Path], Path]] = []

    def commit_pending() -> None:
        staged = [(fut.result(), folder) for fut, folder in pending]  # raises if a write failed
        for tmp, folder in reversed(staged):  # events (submitted first) are committed last
            replace_dir(tmp, folder)
        pending.clear()

    anomalies: list[pl.DataFrame] = []
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="simulate-write")
    try:
        for k in range(days):
            day = start + timedelta(days=k)
            res = _simulate_day(uni, day, settings.business_tz)
            commit_pending()
            # biggest first, so that the events file starts writing at once
            jobs = [
                (res.events, settings.landing("events", day)),
                (res.exposures, truth / "exposures" / f"ds={day}"),
                (res.users, settings.landing("users", day)),
                (res.items, settings.landing("items", day)),
            ]
            pending.extend((pool.submit(_stage, df, folder), folder) for df, folder in jobs)
            if config.write_csv:
                folder = events_csv_path(settings, day).parent
                pending.append((pool.submit(_stage_csv, res.events, folder, res.csv_cut), folder))
            bad_folder = truth / "bad_rows" / f"ds={day}"
            if res.bad_rows is not None:
                pending.append((pool.submit(_stage, res.bad_rows, bad_folder), bad_folder))
                summary.bad_rows += res.bad_rows.height
            elif bad_folder.exists():  # a rerun without bad data: no stale truth
                shutil.rmtree(bad_folder)
            if res.anomalies is not None:
                anomalies.append(res.anomalies)
            n_events = res.events.height
            summary.days.append(day)
            summary.per_day[str(day)] = n_events
            summary.events += n_events
            summary.sessions += res.sessions
            summary.impressions += int(res.counts[0])
            summary.clicks += int(res.counts[1])
            summary.carts += int(res.counts[2])
            summary.purchases += int(res.counts[3])
        commit_pending()
        summary.anomalies = _merge_anomalies(truth / "anomalies.parquet", anomalies, summary.days)
    finally:
        pool.shutdown(wait=True)
        for fut, _folder in pending:  # a failure left staged folders behind: drop them
            if not fut.cancelled() and fut.exception() is None:
                shutil.rmtree(fut.result(), ignore_errors=True)
    summary.seconds = time.perf_counter() - t0
    return summary
