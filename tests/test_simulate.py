"""Tests of the simulator (mtl_model.sources.simulate): files, schemas, funnel, determinism, truth."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import polars as pl
import pytest

from mtl_model.config import DBT_PROJECT_DIR, Settings

# the landing-zone contract (DESIGN.md), defined once, in the adapters' module
from mtl_model.contract import EVENT_TYPES, EVENTS_SCHEMA, ITEMS_SCHEMA, USERS_SCHEMA
from mtl_model.sources.simulate import (
    SimConfig,
    SimSummary,
    events_csv_path,
    main_summary_line,
    simulate,
    true_probabilities,
)
from mtl_model.sources.simulator.bad_data import BAD_ROW_KINDS, BAD_ROWS_SCHEMA

START = date(2024, 3, 1)
DAYS = 3
TINY = SimConfig(n_users=200, n_items=100, n_categories=10, bot_rate=0.02, seed=7)
# big enough for rates and effects (one day, ~36k impressions), still well under a second
MEDIUM = SimConfig(n_users=3000, n_items=400, seed=11)


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


def test_true_probabilities_of_any_pair_are_those_of_the_shown_ones(tiny):
    """`true_probabilities` rebuilds the universe from the config: for every impression it gives the
    p_* of the truth file (scene and position included); unknown ids and bots get nulls."""
    settings, _ = tiny
    bots = pl.read_parquet(settings.home / "truth" / "bots.parquet")["user_id"]
    for d in _days():
        imp = pl.read_parquet(_part(settings, "events", d)).filter(
            (pl.col("event_type") == "impression") & ~pl.col("user_id").is_in(bots.implode())
        )
        truth = imp.join(pl.read_parquet(_exposures_part(settings, d)), on="event_id")
        for scene in ("home", "search"):
            rows = truth.filter(pl.col("scene") == scene)
            got = true_probabilities(
                TINY, rows["user_id"], rows["item_id"], rows["position"].to_numpy(), search=scene == "search"
            )
            assert rows.height > 50
            for p in ("p_click", "p_cart", "p_purchase"):
                assert np.allclose(got[p].to_numpy(), rows[p].to_numpy(), rtol=1e-12, atol=0), (d, scene, p)
    odd = true_probabilities(
        TINY, pl.Series(["u000001", "nobody", "u999999", bots[0]]), pl.Series(["i000002"] * 4), np.ones(4)
    )
    assert odd["p_click"].is_null().to_list() == [False, True, True, True]


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


# ---------------------------------------------------------------- bad data (reliability tests)

BAD_DAYS = [date(2024, 3, 1), date(2024, 3, 2)]
BAD_SWITCHES = {
    "duplicate_rate": 0.03,
    "null_key_rate": 0.03,
    "unknown_type_rate": 0.03,
    "bad_price_rate": 0.03,
    "future_time_rate": 0.03,
    "late_rate": 0.05,
    "truncated_csv_rate": 1.0,
    "write_csv": True,
}
# every kind the switches above plant as rows (drift and an empty day are day-level kinds)
ROW_KINDS = set(BAD_ROW_KINDS) - {"added_column", "missing_column", "empty_day"}
CONTRACT_TYPES = set(EVENT_TYPES)


def _bad_rows(settings: Settings, day: date) -> pl.DataFrame:
    return pl.read_parquet(settings.home / "truth" / "bad_rows" / f"ds={day}" / "part-0.parquet")


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Settings]:
    """The same world twice, without and with bad data."""
    clean = Settings(home=tmp_path_factory.mktemp("clean"))
    dirty = Settings(home=tmp_path_factory.mktemp("dirty"))
    simulate(clean, BAD_DAYS[0], len(BAD_DAYS), TINY)
    simulate(dirty, BAD_DAYS[0], len(BAD_DAYS), replace(TINY, **BAD_SWITCHES))
    return clean, dirty


def test_bad_rows_are_where_the_truth_says(bad):
    clean, dirty = bad
    tz = ZoneInfo(dirty.business_tz)
    for day in BAD_DAYS:
        truth = _bad_rows(dirty, day)
        assert truth.schema == BAD_ROWS_SCHEMA
        assert set(truth["kind"]) == ROW_KINDS, day
        ev = pl.read_parquet(_part(dirty, "events", day))
        assert ev.schema == EVENTS_SCHEMA
        for event_id, kind, row, _ in truth.iter_rows():
            r = ev.row(row, named=True)
            if kind.startswith("null_"):
                key = kind.removeprefix("null_")
                assert r[key] is None, (kind, row)
                assert all(
                    r[k] is not None for k in ("event_id", "user_id", "item_id", "event_time") if k != key
                )
            else:
                assert r["event_id"] == event_id, (kind, row)
            if kind == "unknown_event_type":
                assert r["event_type"] not in CONTRACT_TYPES
            elif kind == "price_out_of_range":
                assert r["price"] < 0 or r["price"] > 1e7
            elif kind == "future_event_time":
                assert r["event_time"].date() >= day + timedelta(days=2)
            elif kind == "late_event":
                assert r["event_time"].astimezone(tz).date() == day - timedelta(days=1)
            elif kind == "duplicate":
                assert ev.row(row - 1) == ev.row(row)
        # the untouched rows are those of the clean run, in the same order
        touched = truth.filter(pl.col("kind") != "truncated_line")["row"]
        kept = ev.with_row_index("r").filter(~pl.col("r").is_in(touched.implode())).drop("r")
        original = pl.read_parquet(_part(clean, "events", day))
        ids = truth.filter(~pl.col("kind").is_in(["duplicate", "truncated_line"]))["event_id"]
        assert kept.equals(original.filter(~pl.col("event_id").is_in(ids.implode())))


def test_truncated_csv_copy(bad):
    _, dirty = bad
    for day in BAD_DAYS:
        data = events_csv_path(dirty, day).read_bytes()
        assert not data.endswith(b"\n")
        lines = data.split(b"\n")
        header = lines[0].split(b",")
        assert header == [c.encode() for c in EVENTS_SCHEMA]
        assert len(lines) - 1 == pl.read_parquet(_part(dirty, "events", day)).height
        assert len(lines[-1].split(b",")) < len(header) and len(lines[-2].split(b",")) == len(header)
        truth = _bad_rows(dirty, day).filter(pl.col("kind") == "truncated_line")
        assert truth["row"].to_list() == [len(lines) - 2] and truth["detail"].to_list() == ["csv"]


def _staging_rule(business_tz: str) -> str:
    """dbt's event_reject_reason() macro rendered to SQL with the vars Tandem passes to dbt
    (Settings.dbt_vars) for this business time zone; the macro helpers it calls come along."""
    import re

    import jinja2

    dbt_vars = Settings(business_tz=business_tz).dbt_vars()
    wanted = ("event_reject_reason", "business_date", "sql_string", "sql_string_list")
    macro = re.compile(r"\{%-?\s*macro (\w+)\(.*?\{%-?\s*endmacro\s*-?%\}", re.S)
    texts = "".join(f.read_text() for f in sorted((DBT_PROJECT_DIR / "macros").glob("*.sql")))
    text = "".join(m.group(0) for m in macro.finditer(texts) if m.group(1) in wanted)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.globals.update(setting=dbt_vars.__getitem__, int_setting=lambda name: int(dbt_vars[name]))
    return env.from_string(text + "{{ event_reject_reason() }}").render().strip()


def test_staging_rules_catch_each_injected_row(bad):
    _, dirty = bad
    rule = _staging_rule(dirty.business_tz)
    assert rule.startswith("case") and "'fav'" in rule  # the contract's event types, as SQL literals
    for day in BAD_DAYS:
        rows = duckdb.sql(
            f"select file_row_number as row, {rule} as reason from ("
            f"  select *, date '{day}' as ds"
            f"  from read_parquet('{_part(dirty, 'events', day)}', file_row_number = true))"
        ).pl()
        truth = _bad_rows(dirty, day)
        caught = {"null_event_id", "null_user_id", "null_item_id", "null_event_time"}
        caught |= {"unknown_event_type", "price_out_of_range", "future_event_time"}
        expected = dict(truth.filter(pl.col("kind").is_in(list(caught))).select("row", "kind").iter_rows())
        got = dict(rows.filter(pl.col("reason").is_not_null()).iter_rows())
        assert got == expected, day  # late events (one day) and duplicates pass the rules


def test_schema_drift_and_empty_days(tmp_path):
    drift = Settings(home=tmp_path / "drift")
    days = _days(BAD_DAYS[0], 4)
    simulate(drift, days[0], len(days), replace(TINY, schema_drift_rate=1.0))
    seen = set()
    for day in days:
        (kind, detail), *_ = _bad_rows(drift, day).select("kind", "detail").iter_rows()
        seen.add(kind)
        schema = pl.read_parquet_schema(_part(drift, "events", day))
        if kind == "added_column":
            assert list(schema) == [*EVENTS_SCHEMA, detail] and schema[detail] == pl.String
        else:
            assert kind == "missing_column" and detail not in schema
            assert list(schema) == [c for c in EVENTS_SCHEMA if c != detail]
    assert seen == {"added_column", "missing_column"}
    # the dbt source reads all days at once, by column name
    glob = drift.landing_dir / "events" / "*" / "*.parquet"
    n = duckdb.sql(
        f"select count(*) from read_parquet('{glob}', hive_partitioning = true, union_by_name = true)"
    )
    assert n.fetchall()[0][0] == sum(pl.read_parquet(_part(drift, "events", d)).height for d in days)

    empty = Settings(home=tmp_path / "empty")
    summary = simulate(empty, START, 1, replace(TINY, empty_day_rate=1.0))
    ev = pl.read_parquet(_part(empty, "events", START))
    assert ev.height == 0 and ev.schema == EVENTS_SCHEMA and summary.events == 0
    assert _bad_rows(empty, START).select("kind", "event_id").rows() == [("empty_day", None)]
    assert pl.read_parquet(_part(empty, "items", START)).height == TINY.n_items


def test_bad_data_truth_is_removed_by_a_clean_rerun(tmp_path):
    settings = Settings(home=tmp_path)
    simulate(settings, START, 1, replace(TINY, duplicate_rate=0.05))
    folder = settings.home / "truth" / "bad_rows" / f"ds={START}"
    assert folder.exists()
    simulate(settings, START, 1, TINY)
    assert not folder.exists()


def test_config_validation_of_switches():
    with pytest.raises(ValueError, match="fraud_rate"):
        SimConfig(fraud_rate=2.0)
    with pytest.raises(ValueError, match="write_csv"):
        SimConfig(truncated_csv_rate=0.5)
    assert not SimConfig().plants_anomalies and not SimConfig().injects_bad_data


# ---------------------------------------------------------------- planted anomalies

ANOMALIES = {"fraud_rate": 0.02, "click_spam_rate": 0.01, "broken_item_rate": 0.02, "broken_scene_rate": 1.0}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Settings]:
    """The same world twice, without and with the planted anomalies."""
    config = replace(MEDIUM, n_users=1500)
    clean = Settings(home=tmp_path_factory.mktemp("plain"))
    dirty = Settings(home=tmp_path_factory.mktemp("planted"))
    simulate(clean, BAD_DAYS[0], len(BAD_DAYS), config)
    simulate(dirty, BAD_DAYS[0], len(BAD_DAYS), replace(config, **ANOMALIES))
    return clean, dirty


def _anomalies(settings: Settings) -> pl.DataFrame:
    return pl.read_parquet(settings.home / "truth" / "anomalies.parquet")


def test_anomaly_truth_file(planted):
    clean, dirty = planted
    truth = _anomalies(dirty)
    assert truth.schema == {
        "entity_type": pl.String,
        "entity_id": pl.String,
        "kind": pl.String,
        "ds": pl.Date,
    }
    kinds = {(t, k) for t, k in truth.select("entity_type", "kind").unique().iter_rows()}
    assert kinds == {
        ("user", "click_farm_bot"),
        ("item", "bot_target_item"),
        ("user", "fraud_buyer"),
        ("item", "click_spam"),
        ("user", "click_spam_account"),
        ("item", "broken_tracking"),
        ("scene", "broken_tracking"),
    }
    assert sorted(truth["ds"].unique()) == BAD_DAYS
    bots = set(pl.read_parquet(dirty.home / "truth" / "bots.parquet")["user_id"])
    assert set(truth.filter(pl.col("kind") == "click_farm_bot")["entity_id"]) == bots
    # without planted anomalies the truth has the bots only
    assert set(_anomalies(clean)["kind"]) == {"click_farm_bot", "bot_target_item"}


def _day_events(settings: Settings, day: date) -> pl.DataFrame:
    return pl.read_parquet(_part(settings, "events", day))


def _of(truth: pl.DataFrame, kind: str, day: date, entity_type: str | None = None) -> list[str]:
    sel = truth.filter((pl.col("kind") == kind) & (pl.col("ds") == day))
    if entity_type:
        sel = sel.filter(pl.col("entity_type") == entity_type)
    return sel["entity_id"].to_list()


def test_fraud_buyers_are_new_accounts_buying_expensive_items(planted):
    clean, dirty = planted
    truth = _anomalies(dirty)
    for day in BAD_DAYS:
        fraud = _of(truth, "fraud_buyer", day)
        assert len(fraud) == round(ANOMALIES["fraud_rate"] * 1500)
        users = pl.read_parquet(_part(dirty, "users", day))
        assert users.height == pl.read_parquet(_part(clean, "users", day)).height + len(fraud) + len(
            _of(truth, "click_spam_account", day)
        )
        mine = users.filter(pl.col("user_id").is_in(fraud))
        assert mine.height == len(fraud)
        assert ((day - mine["signup_date"]).dt.total_days().is_between(1, 3)).all()
        ev = _day_events(dirty, day)
        items = pl.read_parquet(_part(dirty, "items", day))
        cutoff = items["price"].quantile(0.9)
        buys = ev.filter(pl.col("user_id").is_in(fraud) & (pl.col("event_type") == "purchase"))
        per_user = buys.group_by("user_id").agg(
            n=pl.len(), lo=pl.col("price").min(), span=pl.col("event_time").max() - pl.col("event_time").min()
        )
        assert per_user.height == len(fraud) and (per_user["n"] >= 4).all()
        assert (per_user["lo"] >= cutoff).all() and (per_user["span"] < timedelta(hours=1)).all()
        normal = ev.filter(~pl.col("user_id").is_in(fraud) & (pl.col("event_type") == "purchase"))
        assert normal["price"].median() < cutoff


def test_click_spam_items_jump(planted):
    clean, dirty = planted
    truth = _anomalies(dirty)
    for day in BAD_DAYS:
        items = _of(truth, "click_spam", day)
        accounts = _of(truth, "click_spam_account", day)
        assert len(items) == round(ANOMALIES["click_spam_rate"] * MEDIUM.n_items)
        assert len(accounts) == 4 * len(items)
        spammers: set[str] = set()
        for item in items:
            clicks = {
                name: s.filter((pl.col("item_id") == item) & (pl.col("event_type") == "click"))
                for name, s in (("clean", _day_events(clean, day)), ("dirty", _day_events(dirty, day)))
            }
            spam = clicks["dirty"].filter(pl.col("user_id").is_in(accounts))
            assert spam.height >= max(60, 10 * clicks["clean"].height)
            # the organic clicks: fewer, where the broken scene lost some (fraudsters may buy the item)
            organic = clicks["dirty"].filter(
                ~pl.col("user_id").is_in(_of(truth, "fraud_buyer", day) + accounts)
            )
            assert organic.height <= clicks["clean"].height
            assert spam["user_id"].n_unique() == 4
            assert spam["scene"].n_unique() == 1 and spam["scene"][0] not in _of(
                truth, "broken_tracking", day
            )
            spammers |= set(spam["user_id"])
        assert spammers == set(accounts)


def test_broken_tracking_loses_clicks(planted):
    clean, dirty = planted
    truth = _anomalies(dirty)
    for day in BAD_DAYS:
        before, after = _day_events(clean, day), _day_events(dirty, day)
        for item in _of(truth, "broken_tracking", day, "item"):
            n = after.filter(pl.col("item_id") == item).group_by("event_type").len()
            n = dict(n.iter_rows())
            assert n.get("impression", 0) > 0 and "click" not in n
            assert before.filter((pl.col("item_id") == item) & (pl.col("event_type") == "click")).height > 0
        (scene,) = _of(truth, "broken_tracking", day, "scene")
        n = dict(after.filter(pl.col("scene") == scene).group_by("event_type").len().iter_rows())
        assert n["impression"] > 1000 and "click" not in n
        other = after.filter((pl.col("scene") != scene) & (pl.col("event_type") == "click"))
        assert other.height > 0


def test_planted_rows_keep_the_file_rules(planted):
    _, dirty = planted
    for day in BAD_DAYS:
        ev = _day_events(dirty, day)
        assert ev.schema == EVENTS_SCHEMA and ev["event_id"].is_unique().all()
        assert ev.null_count().drop("query").sum_horizontal().item() == 0
        assert (ev["event_time"].dt.date() == day).all()
        # sessions stay contiguous and in order of their first event
        runs = ev.select(pl.col("session_id").rle_id())["session_id"]
        assert runs.max() + 1 == ev["session_id"].n_unique()
        for stage in ("impression", "click", "cart", "purchase"):
            assert ev.filter(pl.col("event_type") == stage).select("session_id", "position").is_unique().all()
        truth = pl.read_parquet(_exposures_part(dirty, day))
        imp = ev.filter(pl.col("event_type") == "impression")["event_id"]
        assert set(truth["event_id"]) == set(imp) and truth.height == imp.len()


def test_anomaly_truth_of_split_runs_equals_one_run(tmp_path):
    config = replace(
        TINY, fraud_rate=0.01, click_spam_rate=0.01, broken_item_rate=0.01, broken_scene_rate=0.5
    )
    whole, split = Settings(home=tmp_path / "whole"), Settings(home=tmp_path / "split")
    simulate(whole, START, DAYS, config)
    simulate(split, START + timedelta(days=1), DAYS - 1, config)
    simulate(split, START, 1, config)
    for a, b in zip(_all_files(whole, _days()), _all_files(split, _days()), strict=True):
        assert a.read_bytes() == b.read_bytes(), a
    truth = whole.home / "truth" / "anomalies.parquet"
    assert truth.read_bytes() == (split.home / "truth" / "anomalies.parquet").read_bytes()


def test_weekend_boost(tmp_path):
    friday = date(2024, 3, 1)
    plain, boosted = Settings(home=tmp_path / "plain"), Settings(home=tmp_path / "boost")
    a = simulate(plain, friday, 3, MEDIUM)
    b = simulate(boosted, friday, 3, replace(MEDIUM, weekend_boost=1.0))
    assert _part(plain, "events", friday).read_bytes() == _part(boosted, "events", friday).read_bytes()
    for day in _days(friday, 3)[1:]:
        ratio = b.per_day[str(day)] / a.per_day[str(day)]
        assert 1.7 < ratio < 2.3, (day, ratio)
