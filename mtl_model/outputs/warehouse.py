"""The only Python that opens the DuckDB warehouse: export a day's inputs, publish a day's outputs.

Both run in the single-slot ``duckdb`` Airflow pool (DuckDB allows one writer process). Train and
score never open the warehouse: they read the exported Parquet and write Parquet under
``outputs/ds=D``. Every write is keyed by ``ds`` and replaces that day.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import date
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from mtl_model.config import Settings
from mtl_model.files import write_atomic

# exported file name → dbt model (SQL in dbt_project/models/exports)
EXPORTS = {
    "samples": "training_samples",
    "candidates": "scoring_candidates",
    "user_activity": "user_day_activity",
    "item_activity": "item_day_activity",
}
# output tables computed by dbt in the warehouse, written straight to outputs/ds=D/<name>.parquet
WAREHOUSE_OUTPUTS = {"rec_feedback": "rec_feedback_day"}  # output name → dbt model
# published tables, in load order; each is outputs/ds=D/<table>.parquet with a `ds` column
OUTPUT_TABLES = ("data_checks", "model_metrics", "recommendations", "anomalies", "rec_feedback")
# a superseded generation of a published day is deleted once the current one is this old: a query
# that opened the catalog before the swap can still read the files it was bound to
GENERATION_GRACE_S = 3600.0


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def export_day(settings: Settings, ds: date) -> dict[str, int]:
    """Copy the export models of ``ds`` to ``exports/ds=D/<name>.parquet`` (and the warehouse-computed
    outputs to ``outputs/ds=D/``); return row counts."""
    out = settings.export_dir(ds)
    targets = {name: (model, out / f"{name}.parquet") for name, model in EXPORTS.items()}
    targets |= {
        name: (model, settings.output_dir(ds) / f"{name}.parquet")
        for name, model in WAREHOUSE_OUTPUTS.items()
    }
    counts: dict[str, int] = {}
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        days = con.execute("select min(ds), max(ds) from training_samples").fetchall()[0]
        if days[1] != ds:
            raise RuntimeError(
                f"training_samples ends at {days[1]}, expected ds={ds}: run dbt for this day first "
                "(or the day has no exposures)"
            )
        for name, (model, dest) in targets.items():
            write_atomic(
                dest,
                lambda tmp, model=model: con.execute(
                    f"copy (select * from {model}) to '{_sql_path(tmp)}' (format parquet, compression zstd)"
                ),
            )
            # rows from the Parquet footer: running the view again would double the export's cost
            counts[name] = pq.ParquetFile(dest).metadata.num_rows
    return counts


def publish_day(settings: Settings, ds: date) -> dict[str, int]:
    """Load the day's outputs into the warehouse (delete + insert in one transaction), export them
    under ``published/<table>/ds=D/``, then replace the analyst catalog atomically."""
    sources = {t: settings.output_dir(ds) / f"{t}.parquet" for t in OUTPUT_TABLES}
    missing = [str(p) for p in sources.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"outputs missing for ds={ds}: {missing}")
    counts: dict[str, int] = {}
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute("begin transaction")
        for table, src in sources.items():
            rel = f"read_parquet('{_sql_path(src)}')"
            con.execute(f"create table if not exists {table} as select * from {rel} limit 0")
            con.execute(f"delete from {table} where ds = ?", [ds])
            con.execute(f"insert into {table} by name select * from {rel}")
            counts[table] = con.execute(f"select count(*) from {table} where ds = ?", [ds]).fetchall()[0][0]
        con.execute("commit")
    generation = f"{time.time_ns():020d}-{os.getpid()}"
    for table, src in sources.items():
        _publish_generation(settings, table, ds, src, generation)
    refresh_catalog(settings)
    _prune_generations(settings)
    return counts


def _generations_dir(settings: Settings, table: str) -> Path:
    return settings.published_dir / ".generations" / table


def _publish_generation(settings: Settings, table: str, ds: date, src: Path, generation: str) -> None:
    """Write the day's table as a new, never-rewritten file ``.generations/<table>/ds=D/<gen>.parquet``
    (what the catalog's views name) and make ``<table>/ds=D/part-0.parquet`` a hard link to it.

    A path is never rewritten under the catalog because DuckDB opens a Parquet file more than once
    per query (to bind, then to scan): a file replaced between the two opens is read with the old
    footer's offsets ("TProtocolException: Invalid data"). ``part-0.parquet`` is replaced by rename
    for readers that open a file once (Polars, pyarrow)."""
    gen_file = _generations_dir(settings, table) / f"ds={ds}" / f"{generation}.parquet"
    write_atomic(gen_file, lambda tmp: shutil.copyfile(src, tmp))

    def link(tmp: Path) -> None:
        tmp.unlink(missing_ok=True)
        try:
            os.link(gen_file, tmp)
        except OSError:  # a file system without hard links: a copy, same bytes
            shutil.copyfile(gen_file, tmp)

    write_atomic(settings.published(table, ds) / "part-0.parquet", link)


def _current_generations(settings: Settings, table: str) -> list[Path]:
    """The newest generation file of each published day of ``table``, by day."""
    days = sorted(_generations_dir(settings, table).glob("ds=*"))
    current = [max(day.glob("*.parquet"), default=None) for day in days]
    return [f for f in current if f is not None]


def _prune_generations(settings: Settings, grace_s: float = GENERATION_GRACE_S) -> int:
    """Delete superseded generations of days whose current generation is older than ``grace_s``
    (so each was superseded at least that long ago); return how many were deleted."""
    deleted, now = 0, time.time()
    for day in settings.published_dir.glob(".generations/*/ds=*"):
        files = sorted(day.glob("*.parquet"))
        if len(files) > 1 and files[-1].stat().st_mtime < now - grace_s:
            for old in files[:-1]:
                old.unlink(missing_ok=True)
                deleted += 1
    return deleted


def refresh_catalog(settings: Settings) -> Path:
    """Rebuild the analyst catalog and swap it in atomically. Each view names the current generation
    file of every published day (a list, not a glob: a later publish never changes what it reads)."""
    catalog = settings.catalog_path

    def build(tmp: Path) -> None:
        tmp.unlink(missing_ok=True)
        with duckdb.connect(str(tmp)) as con:
            for table in OUTPUT_TABLES:
                files = _current_generations(settings, table)
                if files:
                    names = ", ".join(f"'{_sql_path(f)}'" for f in files)
                    con.execute(f"create view {table} as select * from read_parquet([{names}])")

    write_atomic(catalog, build)
    return catalog
