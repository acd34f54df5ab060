"""No leakage, and a backfill equals the nightly runs: the point-in-time features in dbt."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from tests.conftest import START, dbt_build

FEATURE_TABLES = (
    "user_features",
    "item_features",
    "user_category_features",
    "category_correlations",
    "user_category_related",
    "query_category_features",
)
DAY_TABLES = ("stg_events", "stg_events_quarantine", "interactions", "user_day_stats", *FEATURE_TABLES)


def rows(home: Path, table: str, ds=None) -> list[tuple]:
    where = "" if ds is None else f"where ds = '{ds}'"
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(f"select * from {table} {where} order by all").fetchall()


def test_features_of_a_day_ignore_later_events(home: Path) -> None:
    ds = START + timedelta(days=2)
    assert dbt_build(home, ds).returncode == 0
    before = {t: rows(home, t, ds) for t in FEATURE_TABLES}
    assert all(before.values())

    # land a burst of extra activity on ds + 1 for users and items that already exist, then build ds + 1
    nxt = ds + timedelta(days=1)
    folder = home / "landing" / "events" / f"ds={nxt}"
    extra = pl.read_parquet(folder / "part-0.parquet").filter(pl.col("event_type") == "click").head(200)
    extra.with_columns(pl.col("event_id") + "-burst").write_parquet(folder / "part-9.parquet")
    built = dbt_build(home, nxt)
    assert built.returncode == 0, built.stdout[-3000:]

    assert {t: rows(home, t, ds) for t in FEATURE_TABLES} == before  # ds unchanged
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        grew = con.execute(
            "select sum(f_u_clicks_1d) filter (where ds = ?) > sum(f_u_clicks_1d) filter (where ds = ?) "
            "from user_features",
            [nxt, ds],
        ).fetchall()[0][0]
    assert grew  # the burst shows up as of ds + 1


def test_training_samples_use_features_of_the_previous_day(built_once: Path) -> None:
    with duckdb.connect(str(built_once / "warehouse.duckdb"), read_only=True) as con:
        mismatches = con.execute(
            """
            select count(*)
            from training_samples as s
            left join user_features as u on u.user_id = s.user_id and u.ds = s.ds - 1
            where s.f_u_clicks_7d is distinct from u.f_u_clicks_7d
               or s.f_u_ctr_30d is distinct from u.f_u_ctr_30d
            """
        ).fetchall()[0][0]
        same_day_equal = con.execute(
            """
            select count(*) filter (where s.f_u_clicks_1d = u.f_u_clicks_1d), count(*)
            from training_samples as s
            join user_features as u on u.user_id = s.user_id and u.ds = s.ds
            where s.click = 1
            """
        ).fetchall()[0]
        first_day_nulls = con.execute(
            "select count(*) = count(*) filter (where f_u_clicks_7d is null) "
            "from training_samples where ds = ?",
            [START],
        ).fetchall()[0][0]
    assert mismatches == 0
    # a clicked exposure's own click is in the same-day features but must not be in the sample's
    assert same_day_equal[0] < same_day_equal[1]
    assert first_day_nulls  # no history before the first day: nothing invented


def test_search_samples_carry_query_category_features_of_the_previous_day(built_once: Path) -> None:
    with duckdb.connect(str(built_once / "warehouse.duckdb"), read_only=True) as con:
        by_scene = dict(
            con.execute(
                "select scene, count(f_qc_ctr_30d) from training_samples where ds > ? group by scene",
                [START],
            ).fetchall()
        )
        mismatches, joined = con.execute(
            """
            select count(*) filter (where s.f_qc_ctr_30d is distinct from q.f_qc_ctr_30d
                                       or s.f_qc_click_share_30d is distinct from q.f_qc_click_share_30d),
                   count(q.ds)
            from training_samples as s
            join interactions as x using (exposure_id)
            left join query_category_features as q
                on q.query = x.query and q.category_id = s.category_id and q.ds = s.ds - 1
            where s.scene = 'search'
            """
        ).fetchall()[0]
    assert by_scene["search"] > 0 and by_scene["home"] == 0  # home-feed rows answer no query
    assert joined > 0 and mismatches == 0


def test_backfill_in_one_build_equals_nightly_runs(home: Path, tmp_path_factory) -> None:
    last = START + timedelta(days=3)
    other = tmp_path_factory.mktemp("nightly")
    shutil.copytree(home / "landing", other / "landing")
    assert dbt_build(home, last).returncode == 0  # one build: every day up to `last`
    for i in range(4):  # one build a night
        assert dbt_build(other, START + timedelta(days=i)).returncode == 0
    for table in DAY_TABLES:
        assert rows(home, table) == rows(other, table), table


def test_late_events_count_in_the_day_they_land(home: Path) -> None:
    ds = START + timedelta(days=2)
    folder = home / "landing" / "events" / f"ds={ds}"
    base = pl.read_parquet(folder / "part-0.parquet").head(2)
    yesterday = datetime(ds.year, ds.month, ds.day, 12) - timedelta(days=1)
    long_ago = yesterday - timedelta(days=10)
    late = pl.concat(
        [
            base[0:1].with_columns(pl.lit("late-1").alias("event_id"), pl.lit(yesterday).alias("event_time")),
            base[1:2].with_columns(pl.lit("late-2").alias("event_id"), pl.lit(long_ago).alias("event_time")),
        ]
    ).with_columns(pl.col("event_time").dt.replace_time_zone("UTC").dt.cast_time_unit("us"))
    late.write_parquet(folder / "part-1.parquet")
    assert dbt_build(home, ds).returncode == 0
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        staged = con.execute("select ds, is_late from stg_events where event_id = 'late-1'").fetchall()
        quarantined = con.execute(
            "select reject_reason from stg_events_quarantine where event_id = 'late-2'"
        ).fetchall()
        previous_day = con.execute(
            "select count(*) from stg_events where ds = ? and event_id like 'late-%'",
            [ds - timedelta(days=1)],
        ).fetchall()[0][0]
    assert staged == [(ds, True)]
    assert quarantined == [("late_beyond_allowed",)]
    assert previous_day == 0


def test_behaviour_sequences_hold_only_events_before_the_exposure_day(home: Path) -> None:
    """history_length=5: the sequence of an exposure on day d is the user's last 5 events of days
    <= d - 1 (recomputed here from stg_events), and a burst landed on ds + 1 changes nothing as of ds."""
    from tests.conftest import tandem_settings

    settings = tandem_settings(home, history_length=5)
    ds = START + timedelta(days=2)
    assert dbt_build(home, ds, settings=settings).returncode == 0
    before = rows(home, "user_history", ds)
    assert before and all(len(r[2]) <= 5 for r in before)
    nxt = ds + timedelta(days=1)
    folder = home / "landing" / "events" / f"ds={nxt}"
    extra = pl.read_parquet(folder / "part-0.parquet").filter(pl.col("event_type") == "click").head(200)
    extra.with_columns(pl.col("event_id") + "-burst").write_parquet(folder / "part-9.parquet")
    built = dbt_build(home, nxt, settings=settings)
    assert built.returncode == 0, built.stdout[-3000:]
    assert rows(home, "user_history", ds) == before
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        samples = con.sql(
            "select ds, user_id, hist_item_ids from training_samples where hist_item_ids is not null"
        ).pl()
        recomputed = con.sql(
            """
            select s.ds, s.user_id, list(e.item_id order by e.event_time desc, e.event_id desc) as items
            from (select distinct ds, user_id from training_samples) as s
            join stg_events as e
              on e.user_id = s.user_id and e.ds <= s.ds - 1 and e.ds > s.ds - 1 - interval 30 day
             and e.event_type in ('click', 'view', 'cart', 'fav', 'purchase')
            group by s.ds, s.user_id
            """
        ).pl()
    assert samples.height > 0 and samples["ds"].min() > START  # day one has no past
    joined = samples.unique(["ds", "user_id"]).join(recomputed, on=["ds", "user_id"], how="left")
    expected = joined["items"].list.head(5)
    assert (joined["hist_item_ids"] == expected).all()
