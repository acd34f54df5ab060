"""The Great Expectations gate on a real dbt-built warehouse: errors stop, warnings report."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

from checks.runner import DataCheckError, run_checks
from mtl_model.config import Settings
from mtl_model.pipeline import nightly
from tests.conftest import BUILT_DS as DS


@pytest.fixture()
def built(built_home: Path) -> Settings:
    return Settings(home=built_home)


def test_a_good_day_passes_and_writes_results_and_data_docs(built: Settings) -> None:
    results = run_checks(built, DS)
    assert len(results) > 30 and all(r.success for r in results if r.severity == "error")
    frame = pl.read_parquet(built.output_dir(DS) / "data_checks.parquet")
    assert frame.columns == ["ds", "suite", "expectation", "success", "observed", "severity"]
    assert set(frame["suite"]) == {"stg_events", "stg_events_quarantine", "users", "items", "interactions"}
    # volume against the trailing 7-day median is checked once there is history
    volume = pl.col("expectation").str.starts_with("expect_table_row_count_to_be_between(min_value=")
    assert frame.filter(volume & (pl.col("severity") == "warning")).height >= 3
    assert (built.reports_dir / "data_docs" / "index.html").exists()


def test_duplicate_exposures_stop_the_night_with_the_expectation_named(built: Settings) -> None:
    with duckdb.connect(str(built.warehouse_path)) as con:
        con.execute("insert into interactions select * from interactions where ds = ? limit 3", [DS])
    with pytest.raises(DataCheckError) as err:
        run_checks(built, DS)
    assert "interactions: expect_column_values_to_be_unique(column=exposure_id)" in str(err.value)
    frame = pl.read_parquet(built.output_dir(DS) / "data_checks.parquet")
    assert frame.filter(~pl.col("success") & (pl.col("severity") == "error")).height == 1


def test_a_volume_drop_is_a_warning_not_an_error(built: Settings) -> None:
    with duckdb.connect(str(built.warehouse_path)) as con:
        con.execute("delete from users where ds = ? and user_id > 'u000030'", [DS])
    results = run_checks(built, DS)  # does not raise
    failed = [r for r in results if not r.success]
    assert failed and all(r.severity == "warning" for r in failed)
    assert any(r.suite == "users" and "row_count" in r.expectation for r in failed)


def test_schema_drift_is_named(built: Settings) -> None:
    with duckdb.connect(str(built.warehouse_path)) as con:
        con.execute("alter table items add column surprise integer")
    with pytest.raises(DataCheckError, match="items: expect_table_columns_to_match_set"):
        run_checks(built, DS)


def _recorded(settings: Settings) -> tuple[int, pl.DataFrame]:
    """The day's ``data_checks`` rows: how many, and the failed ones."""
    frame = pl.read_parquet(settings.output_dir(DS) / "data_checks.parquet")
    return frame.height, frame.filter(~pl.col("success"))


def test_the_check_step_counts_what_data_checks_records(built: Settings, monkeypatch) -> None:
    """The Airflow step's summary: the real counts of failed expectations, split by severity."""
    monkeypatch.setenv("TANDEM_HOME", str(built.home))
    summary = nightly.check(DS.isoformat())
    rows, failed = _recorded(built)
    assert failed.height == 0 and rows > 30
    assert summary == {"expectations": rows, "failed": 0, "errors": 0, "warnings": 0}

    # two warnings, the night goes on: fewer users than half the usual, and no purchase at all
    with duckdb.connect(str(built.warehouse_path)) as con:
        con.execute("delete from users where ds = ? and user_id > 'u000030'", [DS])
        con.execute("update interactions set purchase = 0 where ds = ?", [DS])
    summary = nightly.check(DS.isoformat())
    rows, failed = _recorded(built)
    assert failed.height == 2 and set(failed["severity"]) == {"warning"}
    assert set(failed["suite"]) == {"users", "interactions"}
    assert summary == {"expectations": rows, "failed": 2, "errors": 0, "warnings": 2}
