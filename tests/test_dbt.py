"""The real dbt project on DuckDB over a tiny simulated landing zone."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from mtl_model.landing_check import check_landing
from tests.conftest import BUILT_DS, LAST, START, dbt_build, tandem_settings

MARTS = ("stg_events", "stg_events_quarantine", "users", "items", "interactions")


def rows(home: Path, table: str) -> list[tuple]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(f"select * from {table} order by all").fetchall()


def days(home: Path, table: str) -> list[date]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return [r[0] for r in con.execute(f"select distinct ds from {table} order by ds").fetchall()]


def test_build_loads_history_up_to_run_date_and_rerun_replaces_the_day(home: Path) -> None:
    ds = START + timedelta(days=2)
    first = dbt_build(home, ds)
    assert first.returncode == 0, first.stdout[-3000:]
    # first build: every landed day up to ds, never a later one (no leakage from ds+1, ds+2)
    for table in ("stg_events", "users", "items", "interactions"):
        assert days(home, table) == [START, START + timedelta(days=1), ds]
    before = {t: rows(home, t) for t in MARTS}
    assert len(before["interactions"]) > 1000

    again = dbt_build(home, ds)
    assert again.returncode == 0, again.stdout[-3000:]
    assert {t: rows(home, t) for t in MARTS} == before  # same rows, no duplicates

    nxt = dbt_build(home, ds + timedelta(days=1))
    assert nxt.returncode == 0, nxt.stdout[-3000:]
    assert days(home, "interactions")[-1] == ds + timedelta(days=1)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        dup = con.execute("select count(*) - count(distinct exposure_id) from interactions").fetchall()[0][0]
        window = con.execute("select min(ds), max(ds) from training_samples").fetchall()[0]
    assert dup == 0
    assert window == (START, ds + timedelta(days=1))


def test_interactions_labels_follow_the_events(home: Path) -> None:
    ds = START
    assert dbt_build(home, ds).returncode == 0
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        per_type = dict(
            con.execute(
                "select event_type, count(distinct (session_id, item_id)) from stg_events group by 1"
            ).fetchall()
        )
        labels = con.execute(
            "select count(*), sum(click), sum(cart), sum(purchase) from interactions"
        ).fetchall()[0]
    assert labels[0] == per_type["impression"]
    assert (labels[1], labels[2], labels[3]) == (per_type["click"], per_type["cart"], per_type["purchase"])


def test_bad_rows_are_quarantined_with_a_reason_and_nothing_is_lost(home: Path) -> None:
    ds = START + timedelta(days=1)
    folder = home / "landing" / "events" / f"ds={ds}"
    good = pl.read_parquet(folder / "part-0.parquet")
    base = good.head(6)
    noon = datetime(ds.year, ds.month, ds.day, 12, tzinfo=UTC)
    bad = pl.concat(
        [
            base[0:1].with_columns(
                pl.lit(None, pl.String).alias("user_id"), pl.lit("bad-1").alias("event_id")
            ),
            base[1:2].with_columns(pl.lit("teleport").alias("event_type"), pl.lit("bad-2").alias("event_id")),
            base[2:3].with_columns(pl.lit(-5.0).alias("price"), pl.lit("bad-3").alias("event_id")),
            base[3:4].with_columns(
                pl.lit(noon + timedelta(days=3)).dt.cast_time_unit("us").alias("event_time"),
                pl.lit("bad-4").alias("event_id"),
            ),
            base[4:6],  # exact duplicates of two landed events
        ]
    )
    bad.write_parquet(folder / "part-1.parquet")
    assert not check_landing(tandem_settings(home)).rejected  # the file is good, its rows are not
    assert dbt_build(home, ds).returncode == 0
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        reasons = dict(
            con.execute(
                "select event_id, reject_reason from stg_events_quarantine where ds = ?", [ds]
            ).fetchall()
        )
        staged = con.execute("select count(*) from stg_events where ds = ?", [ds]).fetchall()[0][0]
        duplicates = con.execute(
            "select event_id, landed_file, first_file from stg_events_duplicates where ds = ? order by 1",
            [ds],
        ).fetchall()
    assert duplicates == [
        (e, f"events/ds={ds}/part-1.parquet", f"events/ds={ds}/part-0.parquet")
        for e in sorted(base[4:6]["event_id"])
    ]
    assert reasons == {
        "bad-1": "null_user_id",
        "bad-2": "unknown_event_type",
        "bad-3": "price_out_of_range",
        "bad-4": "future_event_time",
    }
    landed = good.height + bad.height
    duplicates_removed = 2
    assert staged + len(reasons) + duplicates_removed == landed


def test_run_date_is_required(home: Path) -> None:
    import subprocess

    from mtl_model.pipeline.dbt import dbt_command
    from tests.conftest import tandem_env, tandem_settings

    command = dbt_command(
        "build", "--select", "stg_events", target=home / "t", settings=tandem_settings(home)
    )
    out = subprocess.run(command, env=tandem_env(home), capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "run_date" in out.stdout


@pytest.mark.parametrize("table", ["training_samples", "scoring_candidates", "user_day_activity"])
def test_export_models_are_scoped_to_the_run_date(built_once: Path, table: str) -> None:
    ds = BUILT_DS
    with duckdb.connect(str(built_once / "warehouse.duckdb"), read_only=True) as con:
        n = con.execute(f"select count(*) from {table}").fetchall()[0][0]
        assert n > 0
        if table == "training_samples":
            assert con.execute("select max(ds) from training_samples").fetchall()[0][0] == ds
        if table == "scoring_candidates":
            active = con.execute(
                "select count(distinct user_id) from stg_events where ds = ?", [ds]
            ).fetchall()[0][0]
            got = con.execute("select count(distinct user_id) from scoring_candidates").fetchall()[0][0]
            assert got == active
            assert (
                con.execute(
                    "select count(*) - count(distinct (user_id, item_id)) from scoring_candidates"
                ).fetchall()[0][0]
                == 0
            )


def test_train_window_setting_reaches_dbt_and_python_alike(home: Path) -> None:
    """TANDEM_TRAIN_WINDOW_DAYS=3: dbt's training_samples and the trainer's split both span 3 days."""
    from mtl_model.config import load_settings
    from mtl_model.learn.samples import read_split
    from mtl_model.outputs.warehouse import export_day

    settings = load_settings(**tandem_settings(home, train_window_days=3).model_dump())
    done = dbt_build(home, LAST, settings=settings)
    assert done.returncode == 0, done.stdout[-3000:]
    assert days(home, "training_samples") == [LAST - timedelta(days=2), LAST - timedelta(days=1), LAST]
    export_day(settings, LAST)
    train, valid = read_split(settings, LAST)
    assert sorted(set(train["ds"].to_list())) == [LAST - timedelta(days=2), LAST - timedelta(days=1)]
    assert set(valid["ds"].to_list()) == {LAST}


def test_a_night_under_a_folder_with_a_quote_and_glob_characters_in_its_name(
    landed: Path, tmp_path: Path
) -> None:
    """TANDEM_HOME under `o'brien [eu]*`: paths reach SQL only as escaped literals or bound
    parameters, and glob patterns only with the path's `[`, `*`, `?` escaped, in the dbt macros (the
    landing files, the checks' records) and in Python (export, publish, catalog)."""
    from mtl_model.outputs.query import run_query
    from mtl_model.outputs.warehouse import export_day, publish_day
    from tests.test_publish import write_outputs

    home = tmp_path / "o'brien [eu]*" / "tandem"
    shutil.copytree(landed / "landing", home / "landing")
    settings = tandem_settings(home)
    ds = START + timedelta(days=1)
    assert check_landing(settings).rejected == []
    done = dbt_build(home, ds)
    assert done.returncode == 0, done.stdout[-3000:]
    assert days(home, "stg_events") == [START, ds]
    counts = export_day(settings, ds)
    assert counts["samples"] > 0 and counts["candidates"] > 0
    write_outputs(settings, ds, 3, "v1")
    publish_day(settings, ds)
    assert run_query(settings, "select count(*) from recommendations")[1] == [(9,)]
