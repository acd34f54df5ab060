"""The simulated shop's universe: categories, items, users and their tastes (a function of the seed alone).

Also the true model of a human user (:func:`taste_probabilities`), which the funnel draws from and
:func:`true_probabilities` exposes for judging ranked lists.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from mtl_model.sources.simulator.config import SimConfig
from mtl_model.sources.simulator.ids import ids, indices

__all__ = ["Universe", "Sampler", "taste_probabilities", "true_probabilities", "CATEGORY_PATHS"]

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
SIGNUP_ANCHOR = date(2024, 1, 1)  # users signed up 1..1500 days before this (and before the simulated day)

# Behaviour parameters (logit scale).
B_CLICK, A_CLICK, SEARCH_CLICK_OFFSET, POS_DECAY = -3.0, 0.7, 0.35, 0.35
B_CART, A_CART = -2.35, 0.45
B_BUY, A_BUY = -2.0, 0.45


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class Sampler:
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


class Universe:
    """Users, items and categories; a function of the config (seed) alone.

    Built in phases that draw from one stream (``[seed, 0]``) in a fixed order: categories, items,
    users, then bots (the tastes draw nothing).
    """

    def __init__(self, cfg: SimConfig) -> None:
        rng = np.random.default_rng([cfg.seed, 0])
        self.cfg = cfg
        self.n_categories = min(cfg.n_categories, cfg.n_items)  # every category gets an item
        cat_vec, cat_logprice, cat_size = self._categories(rng)
        self._items(rng, cat_vec, cat_logprice, cat_size)
        self._users(rng)
        self._tastes(cat_vec)
        self._bots(rng)

    def _categories(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Category names and ids; returns their latent vectors, log price levels and relative sizes."""
        n_c, d = self.n_categories, self.cfg.latent_dim
        paths = [CATEGORY_PATHS[k] if k < len(CATEGORY_PATHS) else f"misc/cat{k:02d}" for k in range(n_c)]
        self.cat_paths = pl.Series("category_path", paths, dtype=pl.String)
        self.cat_leaf = pl.Series("query", [p.rsplit("/", 1)[-1] for p in paths] + [None], dtype=pl.String)
        self.cat_ids = ids("c", n_c, 2)
        cat_vec = rng.normal(0.0, 1.0, (n_c, d))
        cat_logprice = rng.uniform(np.log(8.0), np.log(250.0), n_c)
        cat_size = rng.lognormal(0.0, 0.5, n_c)  # relative category sizes
        return cat_vec, cat_logprice, cat_size

    def _items(
        self, rng: np.random.Generator, cat_vec: np.ndarray, cat_logprice: np.ndarray, cat_size: np.ndarray
    ) -> None:
        """Items (every category gets at least one): latent vectors, popularity, quality, prices."""
        n_i, n_c, d = self.cfg.n_items, self.n_categories, self.cfg.latent_dim
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
        self.item_ids = ids("i", n_i, 6)
        self.cat_order = np.argsort(self.item_cat, kind="stable")  # items grouped by category
        counts = np.bincount(self.item_cat, minlength=n_c)
        self.cat_end = np.cumsum(counts)
        self.cat_start = self.cat_end - counts
        self.items = self._item_table(brand, model_no)

    def _item_table(self, brand: np.ndarray, model_no: np.ndarray) -> pl.DataFrame:
        """The items snapshot without ``in_stock`` (added per day); the title is brand, leaf, model."""
        items = pl.DataFrame(
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
        return items.drop("_model")

    def _users(self, rng: np.random.Generator) -> None:
        """Users: latent vectors, heavy-tailed activity, price sensitivity, region, device, signup."""
        cfg = self.cfg
        n_u, d = cfg.n_users, cfg.latent_dim
        self.user_vec = rng.normal(0.0, 1.0, (n_u, d))
        act = rng.lognormal(0.0, 0.9, n_u)
        self.activity = act * (cfg.sessions_per_user / act.mean())
        self.price_sens = rng.lognormal(np.log(0.9), 0.35, n_u)
        region = rng.choice(len(REGIONS), n_u, p=REGION_WEIGHTS / REGION_WEIGHTS.sum())
        device = rng.choice(len(DEVICES), n_u, p=DEVICE_WEIGHTS / DEVICE_WEIGHTS.sum())
        self.signup_days = (SIGNUP_ANCHOR.toordinal() - rng.integers(1, 1501, n_u)).astype(np.int64)
        self.user_ids = ids("u", n_u, 6)
        self.users_base = pl.DataFrame(
            {
                "user_id": self.user_ids,
                "region": pl.Series(REGIONS).gather(region),
                "device": pl.Series(DEVICES).gather(device),
            }
        )

    def _tastes(self, cat_vec: np.ndarray) -> None:
        """Preferred categories: the top-m of softmax(user . category), with cumulative weights."""
        m = min(3, self.n_categories)
        aff = self.user_vec @ cat_vec.T / np.sqrt(self.cfg.latent_dim) * 1.5
        top = np.argsort(-aff, axis=1, kind="stable")[:, :m]
        w = np.exp(np.take_along_axis(aff, top, axis=1))
        self.top_cat = top
        self.top_cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)

    def _bots(self, rng: np.random.Generator) -> None:
        """Click-farm bots and the long-tail items they promote."""
        cfg = self.cfg
        n_u, n_i = cfg.n_users, cfg.n_items
        n_bots = min(n_u, max(1, round(cfg.bot_rate * n_u))) if cfg.bot_rate > 0 else 0
        self.bots = np.sort(rng.choice(n_u, n_bots, replace=False)) if n_bots else np.zeros(0, np.int64)
        self.is_bot = np.zeros(n_u, bool)
        self.is_bot[self.bots] = True
        n_targets = max(1, min(10, n_i // 50))
        tail = np.argsort(self.item_logpop, kind="stable")[: max(n_targets, n_i // 2)]
        self.bot_items = np.sort(rng.choice(tail, n_targets, replace=False))


def taste_probabilities(
    uni: Universe,
    users: np.ndarray,
    items: np.ndarray,
    aff: np.ndarray,
    position: np.ndarray,
    search: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The true model of a human user (arrays broadcast together, e.g. users [S, 1], items [S, K]):
    P(click) of an impression at ``position`` (1 = top) in the search results or the home feed,
    P(cart | click) and P(purchase | cart). ``aff`` = user · item / √d."""
    logit = B_CLICK + A_CLICK * aff + uni.item_quality[items] + -POS_DECAY * np.log(position)
    logit += SEARCH_CLICK_OFFSET * search
    price_term = uni.price_sens[users] * (uni.item_logprice[items] - uni.logprice_ref)
    return sigmoid(logit), sigmoid(B_CART + A_CART * aff), sigmoid(B_BUY + A_BUY * aff - price_term)


def true_probabilities(
    config: SimConfig, users: pl.Series, items: pl.Series, position: np.ndarray, search: bool = False
) -> pl.DataFrame:
    """The simulator's own probabilities of showing ``items[k]`` to ``users[k]`` at ``position[k]`` (1 =
    top) in the home feed (or the search results), from the universe of ``config`` (a function of the
    config alone): columns ``p_click``, ``p_cart``, ``p_purchase``, unconditional per impression as in
    ``truth/exposures``. Null for ids the simulator did not make and for click bots (they click by a
    rule, not by taste). For judging ranked lists against the truth, whatever was shown."""
    uni = Universe(config)
    u = indices(users, "u", config.n_users)
    i = indices(items, "i", config.n_items)
    known = (u >= 0) & (i >= 0)
    u, i = np.where(known, u, 0), np.where(known, i, 0)
    known &= ~uni.is_bot[u]
    aff = (uni.user_vec[u] * uni.item_vec[i]).sum(axis=1) / np.sqrt(config.latent_dim)
    position = np.maximum(np.asarray(position, dtype=np.float64), 1.0)
    p_click, p_cart_c, p_buy_c = taste_probabilities(uni, u, i, aff, position, float(search))
    p_cart = p_click * p_cart_c
    p_purchase = p_cart * p_buy_c
    return pl.DataFrame(
        {
            name: np.where(known, p, np.nan)
            for name, p in (("p_click", p_click), ("p_cart", p_cart), ("p_purchase", p_purchase))
        }
    ).fill_nan(None)
