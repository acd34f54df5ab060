"""The whole night through the real Airflow DAG (dag.test via `tandem run`), dbt, GX, torch.

One test, in stages, because each nightly run costs about a minute on 2 cores:
1. a day runs green and publishes every output table;
2. rerunning the same day leaves every output and warehouse table identical (no duplicates);
3. a day whose data fails a check stops before training and publishing: the last good day stays;
4. a day whose landed file cannot be typed (dbt fails in the one watcher `dbt build`) stops the
   night in the dbt task group, naming the model's task.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from mtl_model.outputs.warehouse import OUTPUT_TABLES
from tests.conftest import LAST, tandem_cli

pytestmark = pytest.mark.slow

DS = LAST - timedelta(days=1)
WAREHOUSE_TABLES = ("stg_events", "stg_events_quarantine", "users", "items", "interactions", *OUTPUT_TABLES)


def snapshot(home: Path) -> dict[str, object]:
    """Every published file and every warehouse table's rows for DS, in a comparable form."""
    snap: dict[str, object] = {}
    for table in OUTPUT_TABLES:
        frame = pl.read_parquet(home / "published" / table / f"ds={DS}" / "part-0.parquet")
        snap[f"published/{table}"] = frame.sort(frame.columns).rows()
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        for table in WAREHOUSE_TABLES:
            snap[f"warehouse/{table}"] = con.execute(
                f"select * from {table} where ds = ? order by all", [DS]
            ).fetchall()
    return snap


def test_nightly_run_rerun_and_failed_check(home: Path) -> None:
    first = tandem_cli(home, "run", "--ds", str(DS))
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]

    # 1. every output published for DS, readable through the analyst catalog
    with duckdb.connect(str(home / "published" / "catalog.duckdb"), read_only=True) as con:
        recs = con.sql("select * from recommendations where ds = ?", params=[DS]).pl()
        anomalies = con.sql(
            "select * from anomalies where ds = ? and entity_type = 'user' order by rank", params=[DS]
        ).pl()
        feedback = con.sql("select * from rec_feedback where ds = ?", params=[DS]).pl()
        metrics = con.sql("select * from model_metrics where ds = ?", params=[DS]).pl()
        checks = con.sql("select * from data_checks where ds = ?", params=[DS]).pl()
    assert recs.height > 0
    per_user = recs.group_by("user_id").agg(
        pl.len().alias("n"),
        pl.col("rank").max().alias("max_rank"),
        pl.col("item_id").n_unique().alias("items"),
    )
    assert (per_user["n"] == per_user["max_rank"]).all() and (per_user["n"] == per_user["items"]).all()
    assert per_user["n"].max() <= 10
    assert recs["p_click"].is_between(0, 1).all() and recs["p_purchase"].is_between(0, 1).all()
    assert recs["model_version"].n_unique() == 1
    aucs = {r["task"]: r["value"] for r in metrics.filter(pl.col("metric") == "auc").iter_rows(named=True)}
    assert set(aucs) == {"click", "cart", "purchase"}
    assert aucs["click"] > 0.55  # the tiny simulated set has real signal
    assert checks.height > 10 and checks.filter(pl.col("severity") == "error")["success"].all()
    assert feedback.height == 0  # nothing was published for the day before: nothing to judge
    page = (home / "reports" / f"ds={DS}" / "report.html").read_text()
    assert f"the night of {DS}" in page and "Data checks:" in page and 'id="anomalies"' in page
    bots = set(pl.read_parquet(home / "truth" / "bots.parquet")["user_id"])
    assert bots and set(anomalies.head(len(bots))["entity_id"]) == bots  # planted click bots rank first

    # 2. rerun of the same day: identical tables, nothing duplicated
    before = snapshot(home)
    again = tandem_cli(home, "run", "--ds", str(DS))
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    after = snapshot(home)
    for key in before:
        assert after[key] == before[key], f"{key} changed on rerun"

    # 3. broken tracking on the next day (impressions, no clicks): GX stops the night
    nxt = DS + timedelta(days=1)
    folder = home / "landing" / "events" / f"ds={nxt}"
    events = pl.read_parquet(folder / "part-0.parquet")
    events.filter(pl.col("event_type") == "impression").write_parquet(folder / "part-0.parquet")
    current = (home / "models" / "CURRENT").read_text()
    failed = tandem_cli(home, "run", "--ds", str(nxt))
    assert failed.returncode != 0
    assert "check" in failed.stderr + failed.stdout
    results = pl.read_parquet(home / "outputs" / f"ds={nxt}" / "data_checks.parquet")
    broken = results.filter(~pl.col("success"))
    assert broken.height >= 1
    assert broken.filter(
        pl.col("expectation").str.contains("expect_column_mean_to_be_between\\(column=click")
    ).height
    assert not (home / "published" / "recommendations" / f"ds={nxt}").exists()
    assert not (home / "exports" / f"ds={nxt}").exists()  # stopped before export and training
    assert (home / "models" / "CURRENT").read_text() == current
    assert snapshot(home) == after  # yesterday's outputs untouched

    # 4. schema drift dbt cannot type (a text position): the dbt build fails and the night stops there
    drifted = events.with_columns(pl.col("position").cast(pl.String))
    drifted[:1].with_columns(pl.lit("third").alias("position")).vstack(drifted[1:]).write_parquet(
        folder / "part-0.parquet"
    )
    broken_dbt = tandem_cli(home, "run", "--ds", str(nxt))
    assert broken_dbt.returncode != 0
    assert "dbt.stg_events" in broken_dbt.stderr + broken_dbt.stdout  # the failed model's task is named
    assert not (home / "exports" / f"ds={nxt}").exists()
    assert (home / "models" / "CURRENT").read_text() == current
    assert snapshot(home) == after
