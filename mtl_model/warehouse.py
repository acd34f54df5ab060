"""The only Python that opens the DuckDB warehouse: export a day's inputs, publish a day's outputs.

Both run in the single-slot ``duckdb`` Airflow pool (DuckDB allows one writer process). Train and
score never open the warehouse: they read the exported Parquet and write Parquet under
``outputs/ds=D``. Every write is keyed by ``ds`` and replaces that day.
"""

from __future__ import annotations

import os
import shutil
from datetime import date
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from mtl_model.config import Settings

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


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _replace_file(src_writer, dest: Path) -> None:
    """Write through a temporary name, then rename, so readers never see half a file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    src_writer(tmp)
    os.replace(tmp, dest)


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
            _replace_file(
                lambda tmp, model=model: con.execute(
                    f"copy (select * from {model}) to '{_sql_path(tmp)}' (format parquet, compression zstd)"
                ),
                dest,
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
    for table, src in sources.items():
        _replace_file(
            lambda tmp, src=src: shutil.copyfile(src, tmp), settings.published(table, ds) / "part-0.parquet"
        )
    refresh_catalog(settings)
    return counts


def refresh_catalog(settings: Settings) -> Path:
    """Rebuild the analyst catalog (views over the published Parquet) and swap it in atomically."""
    catalog = settings.catalog_path

    def build(tmp: Path) -> None:
        tmp.unlink(missing_ok=True)
        with duckdb.connect(str(tmp)) as con:
            for table in OUTPUT_TABLES:
                folder = settings.published_dir / table
                if any(folder.glob("ds=*/*.parquet")):
                    glob = _sql_path(folder / "ds=*" / "*.parquet")
                    scan = f"read_parquet('{glob}', hive_partitioning = false)"
                    con.execute(f"create view {table} as select * from {scan}")

    _replace_file(build, catalog)
    return catalog
