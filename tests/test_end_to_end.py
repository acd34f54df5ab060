"""The whole night through the real Airflow DAG (dag.test via `tandem run`), dbt, GX, torch.

One test, in stages, because each nightly run costs about a minute on 2 cores:
1. a day runs green and publishes every output table;
2. rerunning the same day leaves every output and warehouse table identical (no duplicates);
3. a day whose data fails a check stops before training and publishing: the last good day stays;
4. a file of the day that breaks the contract (a text position) is quarantined by the night's
   landing check, with its reason and column, and the night builds and publishes from the others.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from mtl_model.config import Settings
from mtl_model.landing_check import quarantined_files
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
    test = metrics.filter((pl.col("metric") == "auc") & (pl.col("split") == "test"))
    aucs = {r["task"]: r["value"] for r in test.iter_rows(named=True)}
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
    assert not Settings(home=home).export_dir(nxt).exists()  # stopped before export and training
    assert (home / "models" / "CURRENT").read_text() == current
    assert snapshot(home) == after  # yesterday's outputs untouched

    # 4. schema drift in one more file of the day (a text position): the night's landing check moves
    # that file to the quarantine, naming the column, and the night builds from the other files
    folder.joinpath("part-0.parquet").unlink()
    events.write_parquet(folder / "part-0.parquet")  # the day's good file back
    extra = events.head(50).with_columns(
        pl.format("drift-{}", pl.col("event_id")).alias("event_id"), pl.lit("third").alias("position")
    )
    extra.write_parquet(folder / "part-1.parquet")
    drifted = tandem_cli(home, "run", "--ds", str(nxt))
    assert drifted.returncode == 0, drifted.stdout[-4000:] + drifted.stderr[-4000:]
    assert not (folder / "part-1.parquet").exists()  # moved aside, not read
    [record] = quarantined_files(Settings(home=home), nxt)
    assert (record["file"], record["reason"], record["column"]) == (
        f"events/ds={nxt}/part-1.parquet",
        "wrong_type",
        "position",
    )
    assert "part-1.parquet" in record["message"] and "position" in record["message"]
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        staged = con.execute(
            "select count(*), count(*) filter (where event_id like 'drift-%') from stg_events where ds = ?",
            [nxt],
        ).fetchone()
        quarantined = con.execute("select count(*) from stg_events_quarantine where ds = ?", [nxt]).fetchone()
    assert staged[1] == 0 and staged[0] + quarantined[0] <= events.height  # only part-0's rows
    assert (home / "published" / "recommendations" / f"ds={nxt}" / "part-0.parquet").exists()
    assert snapshot(home) == after  # yesterday's outputs untouched
