"""Tests of the e-commerce simulator (mtl_model.simulate): files, schemas, funnel, determinism, truth."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import polars as pl
import pytest

from mtl_model.config import Settings
from mtl_model.simulate import SimConfig, SimSummary, main_summary_line, simulate

START = date(2024, 3, 1)
DAYS = 3
TINY = SimConfig(n_users=200, n_items=100, n_categories=10, bot_rate=0.02, seed=7)
# big enough for rates and effects (one day, ~36k impressions), still well under a second
MEDIUM = SimConfig(n_users=3000, n_items=400, seed=11)

EVENTS_SCHEMA = {
    "event_id": pl.String,
    "event_time": pl.Datetime("us", "UTC"),
    "user_id": pl.String,
    "item_id": pl.String,
    "event_type": pl.String,
    "scene": pl.String,
    "query": pl.String,
    "position": pl.Int32,
    "session_id": pl.String,
    "price": pl.Float64,
    "category_id": pl.String,
}
ITEMS_SCHEMA = {
    "item_id": pl.String,
    "category_id": pl.String,
    "category_path": pl.String,
    "brand": pl.String,
    "price": pl.Float64,
    "title": pl.String,
    "in_stock": pl.Boolean,
}
USERS_SCHEMA = {"user_id": pl.String, "signup_date": pl.Date, "region": pl.String, "device": pl.String}
EXPOSURES_SCHEMA = {
    "event_id": pl.String,
    "p_click": pl.Float64,
    "p_cart": pl.Float64,
    "p_purchase": pl.Float64,
}


def _days(start: date = START, n: int = DAYS) -> list[date]:
    return [start + timedelta(days=k) for k in range(n)]


def _part(settings: Settings, table: str, day: date) -> Path:
    return settings.landing(table, day) / "part-0.parquet"


def _exposures_part(settings: Settings, day: date) -> Path:
    return settings.home / "truth" / "exposures" / f"ds={day}" / "part-0.parquet"


def _all_files(settings: Settings, days: list[date]) -> list[Path]:
    files = [_part(settings, t, d) for d in days for t in ("events", "items", "users")]
    files += [_exposures_part(settings, d) for d in days]
    return files + [settings.home / "truth" / "bots.parquet", settings.home / "truth" / "bot_items.parquet"]


def _events(settings: Settings, days: list[date]) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(_part(settings, "events", d)).with_columns(ds=pl.lit(d)) for d in days])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, SimSummary]:
    settings = Settings(home=tmp_path_factory.mktemp("tiny"))
    return settings, simulate(settings, START, DAYS, TINY)


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, pl.DataFrame, pl.DataFrame]:
    settings = Settings(home=tmp_path_factory.mktemp("medium"))
    simulate(settings, START, 1, MEDIUM)
    events = _events(settings, [START])
    truth = pl.read_parquet(_exposures_part(settings, START))
    bots = pl.read_parquet(settings.home / "truth" / "bots.parquet")
    return settings, events.filter(~pl.col("user_id").is_in(bots["user_id"].implode())), truth


# ---------------------------------------------------------------- files and schemas


def test_files_and_exact_schemas(tiny):
    settings, summary = tiny
    for d in _days():
        assert sorted(p.name for p in settings.landing("events", d).iterdir()) == ["part-0.parquet"]
        assert pl.read_parquet_schema(_part(settings, "events", d)) == EVENTS_SCHEMA
        assert pl.read_parquet_schema(_part(settings, "items", d)) == ITEMS_SCHEMA
        assert pl.read_parquet_schema(_part(settings, "users", d)) == USERS_SCHEMA
        assert pl.read_parquet_schema(_exposures_part(settings, d)) == EXPOSURES_SCHEMA
    assert pl.read_parquet_schema(settings.home / "truth" / "bots.parquet") == {"user_id": pl.String}
    # no temporary folders left behind
    leftovers = [p for p in settings.home.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []
    assert summary.days == _days()
    assert summary.users == TINY.n_users and summary.items == TINY.n_items and summary.bots == 4


def test_duckdb_reads_landing_zone_with_hive_partitions(tiny):
    settings, summary = tiny
    glob = str(settings.landing_dir / "events" / "*" / "*.parquet")
    rows = duckdb.sql(
        f"select ds::varchar as ds, count(*) as n, count(distinct event_id) as ids, "
        f"min(event_time) as lo, max(event_time) as hi "
        f"from read_parquet('{glob}', hive_partitioning = true) group by ds order by ds"
    ).fetchall()
    assert [r[0] for r in rows] == [str(d) for d in _days()]
    assert sum(r[1] for r in rows) == summary.events
    assert all(r[1] == r[2] for r in rows)
    assert {str(d): n for d, n, *_ in rows} == summary.per_day


def test_event_values(tiny):
    settings, _ = tiny
    ev = _events(settings, _days())
    assert ev["event_id"].n_unique() == ev.height  # unique across days
    assert ev["session_id"].str.slice(0, 9).n_unique() == DAYS  # session ids carry the day
    assert set(ev["event_type"].unique()) == {"impression", "click", "cart", "purchase"}
    assert set(ev["scene"].unique()) == {"home", "search"}
    assert ev.select(pl.col("position").is_between(1, TINY.impressions_per_session).all()).item()
    assert ev.select(pl.col("user_id").str.contains(r"^u\d{6}$").all()).item()
    assert ev.select(pl.col("item_id").str.contains(r"^i\d{6}$").all()).item()
    assert ev.select(pl.col("category_id").str.contains(r"^c\d{2}$").all()).item()
    assert ev.null_count().drop("query").sum_horizontal().item() == 0
    # query is null exactly on home rows
    assert ev.filter((pl.col("scene") == "home") != pl.col("query").is_null()).is_empty()
    # price and category of an event are those of the item
    items = pl.read_parquet(_part(settings, "items", START))
    check = ev.join(items, on="item_id", suffix="_item")
    assert check.height == ev.height
    assert (check["price"] == check["price_item"]).all()
    assert (check["category_id"] == check["category_id_item"]).all()


def test_event_times_inside_their_day(tiny):
    settings, _ = tiny
    ev = _events(settings, _days())
    assert (ev["event_time"].dt.date() == ev["ds"]).all()


def test_event_times_inside_business_day_of_other_time_zone(tmp_path):
    settings = Settings(home=tmp_path, business_tz="America/New_York")
    day = date(2024, 3, 10)  # DST starts: a 23-hour day
    simulate(settings, day, 1, SimConfig(n_users=100, n_items=50, n_categories=5))
    t = pl.read_parquet(_part(settings, "events", day))["event_time"]
    zone = ZoneInfo("America/New_York")
    lo = datetime(2024, 3, 10, tzinfo=zone)
    hi = datetime(2024, 3, 11, tzinfo=zone)
    assert t.min() >= lo and t.max() < hi


def test_funnel_rows_have_their_impression_and_order(tiny):
    settings, _ = tiny
    ev = _events(settings, _days())
    key = ["session_id", "position"]
    stages = {s: ev.filter(pl.col("event_type") == s) for s in ("impression", "click", "cart", "purchase")}
    # one impression per (session, position); at most one event of each stage per exposure
    for frame in stages.values():
        assert frame.select(key).is_unique().all()
    imp = stages["impression"].select(*key, "item_id", "user_id", "scene", t0="event_time")
    for later, earlier in (("click", "impression"), ("cart", "click"), ("purchase", "cart")):
        prev = stages[earlier].select(*key, "item_id", "user_id", t_prev="event_time")
        joined = stages[later].join(prev, on=key, how="left", suffix="_prev")
        assert joined["t_prev"].null_count() == 0, f"{later} without {earlier}"
        assert (joined["item_id"] == joined["item_id_prev"]).all()
        assert (joined["user_id"] == joined["user_id_prev"]).all()
        assert (joined["event_time"] > joined["t_prev"]).all(), f"{later} not after {earlier}"
    # the same item / user / scene on every row of an exposure
    rows = ev.join(imp, on=key, suffix="_imp")
    assert rows.height == ev.height
    assert (rows["item_id"] == rows["item_id_imp"]).all() and (rows["scene"] == rows["scene_imp"]).all()


def test_sessions_mostly_show_distinct_items(medium):
    _, ev, _ = medium
    imp = ev.filter(pl.col("event_type") == "impression")
    dup_share = 1 - imp.select("session_id", "item_id").n_unique() / imp.height
    assert dup_share < 0.01
    per_session = imp.group_by("session_id").len()["len"]
    assert (per_session == MEDIUM.impressions_per_session).all()


def test_search_shows_items_of_the_query_category(medium):
    settings, ev, _ = medium
    items = pl.read_parquet(_part(settings, "items", START))
    leaf = items.select("category_id", leaf=pl.col("category_path").str.split("/").list.last()).unique()
    search = ev.filter(pl.col("scene") == "search").join(leaf, on="category_id")
    assert search.height > 1000
    # small categories are topped up with popular items from elsewhere, so not all of them
    assert (search["query"] == search["leaf"]).mean() > 0.8
    home = ev.filter(pl.col("scene") == "home").join(leaf, on="category_id")
    assert home["leaf"].n_unique() == MEDIUM.n_categories


def test_items_and_users_snapshots(tiny):
    settings, _ = tiny
    for d in _days():
        items = pl.read_parquet(_part(settings, "items", d))
        assert items.height == TINY.n_items and items["item_id"].is_unique().all()
        assert (items["price"] > 0).all()
        assert items.select(pl.col("title").str.starts_with(pl.col("brand")).all()).item()
        assert items["category_id"].n_unique() == TINY.n_categories
        users = pl.read_parquet(_part(settings, "users", d))
        assert users.height == TINY.n_users and users["user_id"].is_unique().all()
        assert (users["signup_date"] < d).all()
        assert users.null_count().sum_horizontal().item() == 0
    # stock changes from day to day, prices do not
    a, b = (pl.read_parquet(_part(settings, "items", d)) for d in _days()[:2])
    assert (a["price"] == b["price"]).all() and not (a["in_stock"] == b["in_stock"]).all()


def test_out_of_stock_share(medium):
    settings, _, _ = medium
    items = pl.read_parquet(_part(settings, "items", START))
    assert 0.005 < 1 - items["in_stock"].mean() < 0.07


def test_signup_dates_stay_before_early_days(tmp_path):
    settings = Settings(home=tmp_path)
    day = date(2020, 6, 1)  # inside the signup window of the simulated users
    simulate(settings, day, 1, SimConfig(n_users=300, n_items=50, n_categories=5))
    users = pl.read_parquet(_part(settings, "users", day))
    assert (users["signup_date"] < day).all()


# ---------------------------------------------------------------- behaviour


def _rates(ev: pl.DataFrame) -> dict[str, int]:
    return dict(ev.group_by("event_type").len().iter_rows())


def test_funnel_rates_are_plausible(medium):
    _, ev, _ = medium
    n = _rates(ev)
    assert 0.05 <= n["click"] / n["impression"] <= 0.15
    assert 0.10 <= n["cart"] / n["click"] <= 0.30
    assert 0.20 <= n["purchase"] / n["cart"] <= 0.50


def test_position_bias_and_search_intent(medium):
    _, ev, _ = medium
    ctr = (
        ev.group_by("position", "scene")
        .agg(ctr=(pl.col("event_type") == "click").sum() / (pl.col("event_type") == "impression").sum())
        .sort("position")
    )
    home = ctr.filter(pl.col("scene") == "home")["ctr"]
    assert home[0] > 1.5 * home[-1]
    by_scene = dict(ctr.group_by("scene").agg(pl.col("ctr").mean()).iter_rows())
    assert by_scene["search"] > by_scene["home"]


def test_price_moves_purchases_not_clicks(medium):
    _, ev, truth = medium
    imp = ev.filter(pl.col("event_type") == "impression").join(truth, on="event_id")
    assert imp.height == ev.filter(pl.col("event_type") == "impression").height
    log_price = np.log(imp["price"].to_numpy())
    p_click = imp["p_click"].to_numpy()
    p_buy_given_cart = (imp["p_purchase"] / imp["p_cart"]).to_numpy()
    assert np.corrcoef(log_price, p_buy_given_cart)[0, 1] < -0.4
    assert abs(np.corrcoef(log_price, p_click)[0, 1]) < 0.15
    # and in the observed events: carts of expensive items convert less often
    carts = ev.filter(pl.col("event_type").is_in(["cart", "purchase"])).with_columns(
        expensive=pl.col("price") > ev["price"].median()
    )
    conv = (
        carts.group_by("expensive")
        .agg(rate=(pl.col("event_type") == "purchase").sum() / (pl.col("event_type") == "cart").sum())
        .sort("expensive")["rate"]
    )
    assert conv[1] < 0.8 * conv[0]


def test_truth_matches_observed(medium):
    _, ev, truth = medium
    imp = ev.filter(pl.col("event_type") == "impression").join(truth, on="event_id")
    assert (
        imp.select((pl.col("p_purchase") <= pl.col("p_cart")) & (pl.col("p_cart") <= pl.col("p_click")))
        .to_series()
        .all()
    )
    assert imp.select(pl.col("p_click").is_between(0, 1).all()).item()
    n = _rates(ev)
    for stage, col in (("click", "p_click"), ("cart", "p_cart"), ("purchase", "p_purchase")):
        expected = imp[col].sum()
        assert abs(n[stage] - expected) < 4 * np.sqrt(expected) + 5, stage


def test_truth_covers_every_impression(tiny):
    settings, _ = tiny
    for d in _days():
        ev = pl.read_parquet(_part(settings, "events", d))
        truth = pl.read_parquet(_exposures_part(settings, d))
        imp_ids = ev.filter(pl.col("event_type") == "impression")["event_id"]
        assert truth.height == imp_ids.len() and set(truth["event_id"]) == set(imp_ids)


def test_bots_click_but_never_buy(tiny):
    settings, _ = tiny
    bots = pl.read_parquet(settings.home / "truth" / "bots.parquet")["user_id"]
    assert bots.len() == 4
    ev = _events(settings, _days()).with_columns(bot=pl.col("user_id").is_in(bots.implode()))
    bot_ev = ev.filter("bot")
    n = _rates(bot_ev)
    assert n["click"] / n["impression"] > 0.5
    assert "cart" not in n and "purchase" not in n
    human = _rates(ev.filter(~pl.col("bot")))
    assert human["click"] / human["impression"] < 0.2
    # many sessions per bot and day, metronome timing between impressions
    sessions = bot_ev.group_by("user_id", "ds").agg(pl.col("session_id").n_unique())["session_id"]
    assert sessions.mean() > 5
    imp = bot_ev.filter(pl.col("event_type") == "impression").sort("session_id", "position")
    gaps = imp.select(pl.col("event_time").diff().over("session_id").drop_nulls())["event_time"]
    assert gaps.n_unique() == 1
    truth = pl.read_parquet(_exposures_part(settings, START))
    bot_truth = truth.join(bot_ev.select("event_id"), on="event_id")
    assert bot_truth.height > 0 and (bot_truth["p_cart"] == 0).all() and (bot_truth["p_purchase"] == 0).all()


def test_fewer_items_than_categories(tmp_path):
    settings = Settings(home=tmp_path)
    simulate(settings, START, 1, SimConfig(n_users=50, n_items=6, n_categories=20))
    items = pl.read_parquet(_part(settings, "items", START))
    assert items.height == 6 and items["category_id"].n_unique() == 6


def test_bot_rate_zero_disables_bots(tmp_path):
    settings = Settings(home=tmp_path)
    summary = simulate(settings, START, 1, SimConfig(n_users=100, n_items=50, n_categories=5, bot_rate=0))
    assert summary.bots == 0
    assert pl.read_parquet(settings.home / "truth" / "bots.parquet").height == 0


# ---------------------------------------------------------------- determinism and reruns


def test_same_seed_gives_identical_bytes_other_seed_differs(tiny, tmp_path):
    settings, _ = tiny
    again = Settings(home=tmp_path / "again")
    simulate(again, START, DAYS, TINY)
    for a, b in zip(_all_files(settings, _days()), _all_files(again, _days()), strict=True):
        assert a.read_bytes() == b.read_bytes(), a
    other = Settings(home=tmp_path / "other")
    simulate(other, START, DAYS, replace(TINY, seed=TINY.seed + 1))
    for d in _days():
        assert _part(settings, "events", d).read_bytes() != _part(other, "events", d).read_bytes()


def test_day_alone_equals_same_day_of_longer_run(tiny, tmp_path):
    settings, _ = tiny
    split = Settings(home=tmp_path)
    simulate(split, START, DAYS - 1, TINY)
    simulate(split, START + timedelta(days=DAYS - 1), 1, TINY)
    for a, b in zip(_all_files(settings, _days()), _all_files(split, _days()), strict=True):
        assert a.read_bytes() == b.read_bytes(), a


def test_rerun_replaces_day_folders(tiny, tmp_path):
    settings = Settings(home=tmp_path)
    simulate(settings, START, 1, TINY)
    first = _part(settings, "events", START).read_bytes()
    (settings.landing("events", START) / "stale.parquet").write_bytes(b"junk")
    simulate(settings, str(START), 1, TINY)  # an ISO string works as well
    assert sorted(p.name for p in settings.landing("events", START).iterdir()) == ["part-0.parquet"]
    assert _part(settings, "events", START).read_bytes() == first
    assert [p.name for p in settings.landing("events", START).parent.iterdir()] == [f"ds={START}"]


def test_summary_and_line(tiny):
    settings, summary = tiny
    ev = _events(settings, _days())
    n = _rates(ev)
    assert summary.events == ev.height
    assert (summary.impressions, summary.clicks, summary.carts, summary.purchases) == (
        n["impression"],
        n["click"],
        n["cart"],
        n["purchase"],
    )
    assert summary.sessions == ev["session_id"].n_unique()
    line = main_summary_line(summary)
    assert f"{summary.events:,} events" in line and "2024-03-01..2024-03-03" in line


def test_config_validation(tmp_path):
    with pytest.raises(ValueError):
        SimConfig(search_share=1.5)
    with pytest.raises(ValueError):
        simulate(Settings(home=tmp_path), START, 0, TINY)
    assert list(tmp_path.iterdir()) == []
