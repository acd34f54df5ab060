"""Every kind of bad input the simulator can inject is caught or quarantined, and nothing is lost.

The simulator lists what it injected in truth/bad_rows/ds=D (event_id, kind); dbt must quarantine
each row with the matching reason, count exact duplicates (stg_events_duplicates) without staging
them, keep late events in the day they landed, absorb schema drift, and the GX gate must stop an
empty day. Bad files (not rows) are tests/test_landing_check.py.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from checks.runner import DataCheckError, run_checks
from mtl_model.config import Settings
from mtl_model.sources.simulate import SimConfig, simulate
from tests.conftest import dbt_build

START = date(2026, 4, 1)
DAYS = 4
BAD = SimConfig(
    n_users=150,
    n_items=80,
    seed=11,
    duplicate_rate=0.01,
    null_key_rate=0.01,
    unknown_type_rate=0.01,
    bad_price_rate=0.01,
    future_time_rate=0.01,
    late_rate=0.02,
    schema_drift_rate=1.0,
)
QUARANTINE_REASON = {
    "null_event_id": "null_event_id",
    "null_user_id": "null_user_id",
    "null_item_id": "null_item_id",
    "null_event_time": "null_event_time",
    "unknown_event_type": "unknown_event_type",
    "price_out_of_range": "price_out_of_range",
    "future_event_time": "future_event_time",
}


@pytest.fixture(scope="module")
def bad_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("bad")
    simulate(Settings(home=home), START, DAYS, BAD)
    last = START + timedelta(days=DAYS - 1)
    done = dbt_build(home, last)
    assert done.returncode == 0, done.stdout[-3000:]
    return home


def injected(home: Path) -> pl.DataFrame:
    return pl.read_parquet(home / "truth" / "bad_rows" / "*" / "*.parquet", hive_partitioning=True)


def test_each_injected_row_is_quarantined_with_its_reason(bad_home: Path) -> None:
    truth = injected(bad_home)
    kinds = set(truth["kind"])
    # every switch fired (null keys are split over four key columns at random)
    assert {"null_user_id", "null_item_id", "unknown_event_type", "price_out_of_range"} <= kinds
    assert {"future_event_time", "duplicate", "late_event"} <= kinds
    with duckdb.connect(str(bad_home / "warehouse.duckdb"), read_only=True) as con:
        quarantined = pl.from_arrow(
            con.sql("select ds, event_id, reject_reason from stg_events_quarantine").to_arrow_table()
        )
    for kind, reason in QUARANTINE_REASON.items():
        rows = truth.filter(pl.col("kind") == kind)
        if kind == "null_event_id":  # no id to join on: count per day instead
            per_day = quarantined.filter(pl.col("reject_reason") == reason).group_by("ds").len()
            expected = rows.group_by("ds").len()
            assert (
                per_day.sort("ds").rows()
                == expected.with_columns(pl.col("ds").cast(pl.Date)).sort("ds").rows()
            )
            continue
        got = rows.join(quarantined, on="event_id", how="left")
        assert got["reject_reason"].to_list() == [reason] * rows.height, kind


def test_duplicates_are_removed_and_every_landed_row_is_accounted_for(bad_home: Path) -> None:
    truth = injected(bad_home)
    with duckdb.connect(str(bad_home / "warehouse.duckdb"), read_only=True) as con:
        for day in range(DAYS):
            ds = START + timedelta(days=day)
            landed = pl.read_parquet(bad_home / "landing" / "events" / f"ds={ds}" / "*.parquet")
            staged = con.execute("select count(*) from stg_events where ds = ?", [ds]).fetchall()[0][0]
            quarantined = con.execute(
                "select count(*) from stg_events_quarantine where ds = ?", [ds]
            ).fetchall()[0][0]
            duplicates = truth.filter(
                (pl.col("ds").cast(pl.Date) == ds) & (pl.col("kind") == "duplicate")
            ).height
            counted = con.execute("select count(*) from stg_events_duplicates where ds = ?", [ds]).fetchall()[
                0
            ][0]
            assert counted == duplicates > 0, ds  # each exact copy counted once, never staged
            assert landed.height == staged + quarantined + duplicates, ds
            dup_ids = con.execute(
                "select count(*) - count(distinct event_id) from stg_events where ds = ?", [ds]
            ).fetchall()[0][0]
            assert dup_ids == 0


def test_late_events_stay_in_the_day_they_landed(bad_home: Path) -> None:
    late = injected(bad_home).filter(pl.col("kind") == "late_event")
    assert late.height > 0
    with duckdb.connect(str(bad_home / "warehouse.duckdb"), read_only=True) as con:
        staged = pl.from_arrow(
            con.sql("select event_id, ds, is_late from stg_events where is_late").to_arrow_table()
        )
    got = late.join(staged, on="event_id", how="left")
    assert got["is_late"].fill_null(False).all()
    assert (got["ds"] == got["ds_right"]).all()


def test_schema_drift_is_absorbed_by_name(bad_home: Path) -> None:
    drift = injected(bad_home).filter(pl.col("kind").is_in(["added_column", "missing_column"]))
    assert drift.height == DAYS  # one drift a day
    with duckdb.connect(str(bad_home / "warehouse.duckdb"), read_only=True) as con:
        days = [r[0] for r in con.execute("select distinct ds from stg_events order by ds").fetchall()]
    assert days == [START + timedelta(days=i) for i in range(DAYS)]


def test_an_empty_day_stops_the_night(tmp_path: Path) -> None:
    home = tmp_path
    simulate(Settings(home=home), START, 2, SimConfig(n_users=150, n_items=80, seed=11))
    simulate(
        Settings(home=home),
        START + timedelta(days=2),
        1,
        SimConfig(n_users=150, n_items=80, seed=11, empty_day_rate=1.0),
    )
    ds = START + timedelta(days=2)
    assert pl.read_parquet(home / "landing" / "events" / f"ds={ds}" / "*.parquet").height == 0
    done = dbt_build(home, ds)
    assert done.returncode == 0, done.stdout[-3000:]
    with pytest.raises(
        DataCheckError, match=r"stg_events: expect_table_row_count_to_be_between\(min_value=1"
    ):
        run_checks(Settings(home=home), ds)
