"""What the pages show, read back for a window of nights: the published tables (Parquet, one file a
day), each step's record (``outputs/ds=D/steps/<step>.json``: seconds and summary), the day's data
health from the warehouse (read-only) and the landing zone, and the night's Data Docs pages."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq

from mtl_model.config import Settings
from mtl_model.dates import parse_date
from mtl_model.outputs.warehouse import read_warehouse

log = logging.getLogger(__name__)

WINDOW_DAYS = 30  # the trends cover the nights of the last 30 days up to ds
MARTS = ("users", "items", "interactions")
STEPS_ORDER = ("check_landing", "dbt", "check", "export", "train", "score", "anomalies", "publish", "report")


@dataclass
class Health:
    """Data health per day: ``events`` (ds, landed, staged, duplicates, quarantined, late),
    ``quarantine`` (ds, reason, rows), ``marts`` (ds, table, rows). ``note`` says why it is empty."""

    events: pl.DataFrame = field(default_factory=pl.DataFrame)
    quarantine: pl.DataFrame = field(default_factory=pl.DataFrame)
    marts: pl.DataFrame = field(default_factory=pl.DataFrame)
    note: str = ""


@dataclass
class Nights:
    """The published rows of the window's nights and what goes with them."""

    ds: date
    days: list[date]
    metrics: pl.DataFrame
    feedback: pl.DataFrame
    anomalies: pl.DataFrame
    checks: pl.DataFrame
    recommendations: pl.DataFrame  # the night's only
    steps: pl.DataFrame  # ds, step, seconds, summary (JSON text)
    health: Health


def day_folders(root: Path) -> list[date]:
    """The days of the ``ds=YYYY-MM-DD`` folders under ``root``, in order."""
    days = []
    for path in root.glob("ds=*"):
        try:
            days.append(parse_date(path.name.removeprefix("ds=")))
        except ValueError:
            continue
    return sorted(days)


def published_days(settings: Settings) -> list[date]:
    """Every published night (its ``data_checks`` are the first table published)."""
    return day_folders(settings.published_dir / "data_checks")


def read_published(settings: Settings, table: str, days: list[date]) -> pl.DataFrame:
    """The table's rows of ``days`` (an empty frame when none is published)."""
    files = [settings.published(table, d) / "part-0.parquet" for d in days]
    frames = [pl.read_parquet(f) for f in files if f.exists()]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def read_steps(settings: Settings, days: list[date]) -> pl.DataFrame:
    """One row per recorded step and day: ds, step, seconds, summary (JSON text)."""
    rows = []
    for d in days:
        for path in sorted((settings.output_dir(d) / "steps").glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            rows.append(
                {
                    "ds": d,
                    "step": str(record.get("step", path.stem)),
                    "seconds": float(record.get("seconds") or 0.0),
                    "summary": json.dumps(record.get("summary")),
                }
            )
    schema = {"ds": pl.Date, "step": pl.String, "seconds": pl.Float64, "summary": pl.String}
    return pl.DataFrame(rows, schema=schema)


def step_summary(steps: pl.DataFrame, ds: date, step: str) -> dict:
    """The summary a step returned on ``ds`` ({} when not recorded)."""
    found = steps.filter((pl.col("ds") == ds) & (pl.col("step") == step))
    return (json.loads(found["summary"][0]) or {}) if found.height else {}


def landed_rows(settings: Settings, ds: date) -> int | None:
    """Rows landed for ``ds`` (from the Parquet footers; None when the day has no landing folder)."""
    folder = settings.landing("events", ds)
    if not folder.exists():
        return None
    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(folder.glob("*.parquet")))


def _count_by_day(con: duckdb.DuckDBPyConnection, table: str, first: date, last: date) -> pl.DataFrame:
    return con.sql(
        f"select ds, '{table}' as table, count(*) as rows from {table} where ds between ? and ? group by ds",
        params=[first, last],
    ).pl()


def _health_queries(con: duckdb.DuckDBPyConnection, first: date, last: date) -> Health:
    window = [first, last]
    events = con.sql(
        "select ds, count(*) as staged, count(*) filter (where is_late) as late from stg_events "
        "where ds between ? and ? group by ds order by ds",
        params=window,
    ).pl()
    quarantine = con.sql(
        "select ds, reject_reason as reason, count(*) as rows from stg_events_quarantine "
        "where ds between ? and ? group by all order by ds, rows desc",
        params=window,
    ).pl()
    tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
    if "stg_events_duplicates" in tables:  # a landed row repeating an earlier landing, counted there
        duplicates = _count_by_day(con, "stg_events_duplicates", first, last).select(
            "ds", pl.col("rows").alias("duplicates")
        )
        events = events.join(duplicates, on="ds", how="full", coalesce=True)
    marts = pl.concat([_count_by_day(con, table, first, last) for table in MARTS])
    return Health(events=events, quarantine=quarantine, marts=marts)


def read_health(settings: Settings, days: list[date]) -> Health:
    """Data health of ``days``: events staged, late, quarantined by reason, duplicates, and the
    marts' rows, from the warehouse (opened read-only); events landed = staged + quarantined +
    duplicates (what dbt's accounting test holds) where the warehouse counts its duplicates, else
    the rows of the day's landing files, the duplicates being what is left. When the warehouse
    cannot be read (missing, or a build holds its lock) the health is empty and ``note`` says why."""
    if not days:
        return Health(note="no night yet")
    if not settings.warehouse_path.exists():
        return Health(note=f"no warehouse at {settings.warehouse_path}")
    try:
        with read_warehouse(settings) as con:
            health = _health_queries(con, days[0], days[-1])
    except duckdb.Error as exc:
        log.warning("data health not read: %s", exc)
        return Health(note=f"warehouse not readable now: {str(exc).splitlines()[0]}")
    quarantined = health.quarantine.group_by("ds").agg(pl.col("rows").sum().alias("quarantined"))
    events = pl.DataFrame({"ds": days}, schema={"ds": pl.Date}).join(health.events, on="ds", how="left")
    events = events.join(quarantined, on="ds", how="left").with_columns(
        pl.col("staged", "late", "quarantined").fill_null(0).cast(pl.Int64)
    )
    if "duplicates" in events.columns:
        events = events.with_columns(pl.col("duplicates").fill_null(0).cast(pl.Int64)).with_columns(
            landed=pl.col("staged") + pl.col("quarantined") + pl.col("duplicates")
        )
    else:
        landed = pl.Series("landed", [landed_rows(settings, d) for d in days], dtype=pl.Int64)
        events = events.with_columns(landed).with_columns(
            duplicates=pl.col("landed") - pl.col("staged") - pl.col("quarantined")
        )
    health.events = events.filter(pl.col("landed").fill_null(0) + pl.col("staged") > 0).sort("ds")
    return health


def read_nights(settings: Settings, ds: date, window_days: int = WINDOW_DAYS) -> Nights:
    """The published nights of the ``window_days`` days ending at ``ds`` (ds included if published)."""
    first = ds - timedelta(days=window_days - 1)
    days = [d for d in published_days(settings) if first <= d <= ds]
    if ds not in days:
        days.append(ds)
    return Nights(
        ds=ds,
        days=days,
        metrics=read_published(settings, "model_metrics", days),
        feedback=read_published(settings, "rec_feedback", days),
        anomalies=read_published(settings, "anomalies", days),
        checks=read_published(settings, "data_checks", days),
        recommendations=read_published(settings, "recommendations", [ds]),
        steps=read_steps(settings, days),
        health=read_health(settings, days),
    )


def current_model(settings: Settings) -> str | None:
    """The version ``CURRENT`` names (what scoring uses now)."""
    path = settings.models_dir / "CURRENT"
    return path.read_text().strip() if path.exists() else None


def validation_pages(settings: Settings, ds: date, start: Path) -> dict[str, str]:
    """Suite → the link (relative to the folder ``start``) to the newest Data Docs validation page of
    ``ds`` (the GX run name is the day)."""
    pages = {}
    for suite in sorted((settings.reports_dir / "data_docs" / "validations").glob("*")):
        found = sorted((suite / str(ds)).glob("*/*.html"))
        if found:
            pages[suite.name] = os.path.relpath(found[-1], start)
    return pages
