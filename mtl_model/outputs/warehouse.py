"""The only Python that opens the DuckDB warehouse: export a day's inputs, publish a day's outputs.

Both run in the single-slot ``duckdb`` Airflow pool (DuckDB allows one writer process). Train and
score never open the warehouse: they read the exported Parquet and write Parquet under
``outputs/ds=D``. Every write is keyed by ``ds`` and replaces that day. Paths reach SQL as bound
parameters, or (in the catalog's view definitions, which cannot hold parameters) as escaped literals.

Publishing a day is one switch for every table (docs/analysts.md, "What is safe")::

    published/.generations/ds=D/<generation>/<table>/part-0.parquet   written once, read-only
    published/.generations/ds=D/current -> <generation>                 the switch (a symlink, renamed)
    published/<table>/ds=D -> ../.generations/ds=D/current/<table>     made once per table and day
    published/catalog.duckdb                                            views naming generation files

A new generation is written beside the current one, then ``current`` is replaced by a rename: a
reader of ``published/<table>/ds=D/part-0.parquet`` sees the old day for every table or the new day
for every table, whenever publish is killed. The catalog, rebuilt after the switch and swapped in by
a rename, names the generation files themselves, so a session opened before a publish keeps reading
the files it was bound to; superseded generations are deleted only after a grace period (a day by
default). Published files, generation folders and the catalog are read-only (file modes).
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import yaml

from mtl_model.config import DBT_PROJECT_DIR, Settings
from mtl_model.dates import days_between
from mtl_model.duck import connect
from mtl_model.files import replace_dir, temporary_path, write_atomic

# exported file name → dbt model (SQL in dbt_project/models/exports)
EXPORTS = {
    "samples": "training_samples",
    "candidates": "scoring_candidates",
    "user_activity": "user_day_activity",
    "item_activity": "item_day_activity",
    # the rows a learned retrieval source's candidates are built from (mtl_model.outputs.score)
    "scoring_items": "scoring_items",
    "scoring_user_categories": "scoring_user_categories",
}
# exports of the whole training window, copied a day at a time (_copy_by_day)
WINDOW_EXPORTS = ("samples",)
# output tables computed by dbt in the warehouse, written straight to outputs/ds=D/<name>.parquet
WAREHOUSE_OUTPUTS = {"rec_feedback": "rec_feedback_day"}  # output name → dbt model
# published tables, in load order; each is outputs/ds=D/<table>.parquet with a `ds` column
OUTPUT_TABLES = ("data_checks", "model_metrics", "recommendations", "anomalies", "rec_feedback")
CURRENT = "current"  # .generations/ds=D/current -> the generation readers see
EMPTY = "empty"  # the generation of a day before its first publish: no table has the day
FILE_MODE, DIR_MODE = 0o444, 0o555  # what is published is read-only


class OutputCheckError(RuntimeError):
    """A day's outputs that must not be published (the night fails; yesterday's tables stay)."""


def sql_literal(value: object) -> str:
    """A SQL string literal of ``value`` (quotes doubled), for SQL that cannot take parameters."""
    return "'" + str(value).replace("'", "''") + "'"


PUBLISHED_DOCS = DBT_PROJECT_DIR / "models" / "outputs_sources.yml"  # the published tables' documentation


@functools.cache
def published_descriptions() -> dict[str, tuple[str, dict[str, str]]]:
    """Table → (description, column → description), from the dbt source ``published``."""
    spec = yaml.safe_load(PUBLISHED_DOCS.read_text(encoding="utf-8"))
    source = next(s for s in spec["sources"] if s["name"] == "published")

    def text(node: dict) -> str:
        return " ".join(str(node.get("description") or "").split())

    return {
        t["name"]: (text(t), {c["name"]: text(c) for c in t.get("columns", [])}) for t in source["tables"]
    }


def _comment_view(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """The catalog view ``table`` and its columns carry the comments the dbt docs show."""
    if table not in published_descriptions():
        return
    description, columns = published_descriptions()[table]
    present = set(con.sql(f"select * from {table} limit 0").columns)
    con.execute(f"comment on view {table} is {sql_literal(description)}")
    for column, text in columns.items():
        if column in present:
            con.execute(f"comment on column {table}.{column} is {sql_literal(text)}")


def export_day(settings: Settings, ds: date) -> dict[str, int]:
    """Copy the export models of ``ds`` to ``exports/run_date=D/<name>.parquet`` (and the warehouse-computed
    outputs to ``outputs/ds=D/``); return row counts. The export views read the day the session's
    DuckDB variable ``tandem_ds`` names (set here to ``ds``), so the export is the day's whatever
    night's ``dbt build`` ran last; the day's marts must be built (else a one-line RuntimeError)."""
    out = settings.export_dir(ds)
    targets = {name: (model, out / f"{name}.parquet") for name, model in EXPORTS.items()}
    targets |= {
        name: (model, settings.output_dir(ds) / f"{name}.parquet")
        for name, model in WAREHOUSE_OUTPUTS.items()
    }
    counts: dict[str, int] = {}
    with read_warehouse(settings) as con:
        # the export views read the day this session names, not the run date of the last dbt build
        # (another night's build may have run since this night's): concurrent nights export alike
        con.execute("set variable tandem_ds = ?", [ds])
        built = con.execute("select count(*) from interactions where ds = ?", [ds]).fetchall()[0][0]
        if not built:
            raise RuntimeError(
                f"ds={ds}: the warehouse has no interactions for the day: run dbt for this day first "
                "(or the day has no exposures)"
            )
        for name, (model, dest) in targets.items():
            if name in WINDOW_EXPORTS:
                _copy_by_day(con, model, dest, ds - timedelta(days=settings.train_window_days - 1), ds)
            else:
                write_atomic(
                    dest,
                    lambda tmp, model=model: con.execute(
                        f"copy (select * from {model}) to ? (format parquet, compression zstd)", [str(tmp)]
                    ),
                )
            # rows from the Parquet footer: running the view again would double the export's cost
            counts[name] = pq.ParquetFile(dest).metadata.num_rows
    return counts


def _copy_by_day(con: duckdb.DuckDBPyConnection, model: str, dest: Path, first: date, last: date) -> None:
    """``model`` (a view over the days ``first`` .. ``last``, ordered by ``ds`` first) into ``dest``:
    one COPY per day into a hidden folder beside it, then the day files read in date order into one
    file. The rows and their order are those of one COPY of the whole view, but DuckDB sorts one day
    at a time: at 1M events a day the samples' peak falls from 9 GB to 2.6 GB for 3 s more, and under
    a 4 GB ``TANDEM_DUCKDB_MEMORY_LIMIT`` the export no longer spills its sort (docs/benchmarks.md)."""
    folder = temporary_path(dest)
    folder.mkdir(parents=True)
    con.execute("set preserve_insertion_order = true")  # DuckDB's default, which the merge relies on
    try:
        parts = []
        for day in days_between(first, last):
            parts.append(str(folder / f"{day}.parquet"))
            con.execute(  # uncompressed: read once, right after (2-3 s less at 1M than zstd)
                f"copy (select * from {model} where ds = ?) to ? (format parquet, compression uncompressed)",
                [day, parts[-1]],
            )
        write_atomic(  # read_parquet keeps the files' order (the session preserves insertion order)
            dest,
            lambda tmp: con.execute(
                "copy (select * from read_parquet(?, hive_partitioning = false)) to ? "
                "(format parquet, compression zstd)",
                [parts, str(tmp)],
            ),
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def publish_day(settings: Settings, ds: date, grace_s: float | None = None) -> dict[str, int]:
    """Check the day's outputs, load them into the warehouse (delete + insert, one transaction),
    write them as a new generation, switch the day to it (one rename for every table), rebuild the
    analyst catalog, and delete generations superseded more than ``grace_s`` seconds ago."""
    sources = {t: settings.output_dir(ds) / f"{t}.parquet" for t in OUTPUT_TABLES}
    missing = [str(p) for p in sources.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"outputs missing for ds={ds}: {missing}")
    check_outputs(settings, ds)
    counts: dict[str, int] = {}
    with connect(settings.warehouse_path) as con:
        con.execute("begin transaction")
        for table, src in sources.items():
            con.execute(
                f"create table if not exists {table} as select * from read_parquet(?) limit 0", [str(src)]
            )
            con.execute(f"delete from {table} where ds = ?", [ds])
            con.execute(f"insert into {table} by name select * from read_parquet(?)", [str(src)])
            counts[table] = con.execute(f"select count(*) from {table} where ds = ?", [ds]).fetchall()[0][0]
        con.execute("commit")
    generation = _write_generation(settings, ds, sources)
    _link_tables(settings, ds)
    _switch(settings, ds, generation)
    refresh_catalog(settings)
    prune_generations(settings, grace_s)
    return counts


def check_outputs(settings: Settings, ds: date) -> None:
    """The night's own output check: recommendations for the users active on ``ds`` (the users of
    the day's scoring candidates). Zero recommendations for active users is an OutputCheckError."""
    recs = pq.ParquetFile(settings.output_dir(ds) / "recommendations.parquet").metadata.num_rows
    candidates = settings.export_dir(ds) / "candidates.parquet"
    if recs or not candidates.exists():
        return
    with connect() as con:
        users = con.execute(
            "select count(distinct user_id) from read_parquet(?)", [str(candidates)]
        ).fetchall()
    if users[0][0]:
        raise OutputCheckError(
            f"ds={ds}: 0 recommendations for {users[0][0]} active users (candidates in {candidates}): "
            "not published; the tables published before stay as they were"
        )


def _generations_dir(settings: Settings, ds: date | str) -> Path:
    return settings.published_dir / ".generations" / f"ds={ds}"


def _read_only(path: Path) -> None:
    os.chmod(path, DIR_MODE if path.is_dir() else FILE_MODE)


def _write_generation(settings: Settings, ds: date, sources: dict[str, Path]) -> str:
    """Every table of the day in a new, never-rewritten folder ``.generations/ds=D/<generation>/``,
    read-only once complete; returns its name. Nothing reads it before the switch."""
    generation = f"{time.time_ns():020d}-{os.getpid()}"
    folder = _generations_dir(settings, ds) / generation
    for table, src in sources.items():

        def copy(tmp: Path, src: Path = src) -> None:
            shutil.copyfile(src, tmp)
            _read_only(tmp)

        write_atomic(folder / table / "part-0.parquet", copy)
        _read_only(folder / table)
    _read_only(folder)
    return generation


def _symlink(target: str, path: Path) -> None:
    """``path`` becomes a symlink to ``target``, atomically (a new link renamed over the old one)."""
    if path.is_symlink() and os.readlink(path) == target:
        return
    if path.exists() and not path.is_symlink():  # a folder of the layout before generations
        tmp = temporary_path(path)
        os.symlink(target, tmp)
        replace_dir(tmp, path)
        return

    def link(tmp: Path) -> None:
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)

    write_atomic(path, link)


def _link_tables(settings: Settings, ds: date) -> None:
    """``published/<table>/ds=D`` -> the day's current generation, once per table and day. Before the
    day's first switch, ``current`` names an empty generation: no table has the day yet."""
    day = _generations_dir(settings, ds)
    if not (day / CURRENT).is_symlink():
        empty = day / EMPTY
        for table in OUTPUT_TABLES:
            (empty / table).mkdir(parents=True, exist_ok=True)
        _symlink(EMPTY, day / CURRENT)
    for table in OUTPUT_TABLES:
        _symlink(f"../.generations/ds={ds}/{CURRENT}/{table}", settings.published(table, ds))


def _switch(settings: Settings, ds: date, generation: str) -> None:
    """The one switch: the day's every table now reads from ``generation``."""
    day = _generations_dir(settings, ds)
    _symlink(generation, day / CURRENT)
    if (day / EMPTY).is_dir():  # only the first publish of a day had it; nothing is bound to it
        _remove_tree(day / EMPTY)


def _current_files(settings: Settings, table: str) -> list[Path]:
    """The current generation file of ``table`` for every published day, by day."""
    files = []
    for day in sorted((settings.published_dir / ".generations").glob("ds=*")):
        current = day / CURRENT
        if current.is_symlink():
            path = day / os.readlink(current) / table / "part-0.parquet"
            if path.exists():
                files.append(path)
    return files


def _grace(settings: Settings, grace_s: float | None) -> float:
    if grace_s is not None:
        return grace_s
    return float(settings.publish_grace_hours) * 3600.0


def _remove_tree(path: Path) -> None:
    """Delete a read-only generation folder (its folders made writable first)."""
    for folder, _dirs, _files in os.walk(path):
        os.chmod(folder, 0o755)
    shutil.rmtree(path)


def prune_generations(settings: Settings, grace_s: float | None = None) -> int:
    """Delete the generations of each day that are not current, once the day's current generation
    has been current for ``grace_s`` seconds (default: ``publish_grace_hours``, else a day): each was
    superseded at least that long ago, so no session bound to it is younger. Returns how many."""
    grace, now, deleted = _grace(settings, grace_s), time.time(), 0
    for day in sorted((settings.published_dir / ".generations").glob("ds=*")):
        current = day / CURRENT
        if not current.is_symlink() or now - current.lstat().st_mtime < grace:
            continue
        keep = os.readlink(current)
        for gen in day.iterdir():
            if gen.name not in (keep, CURRENT) and not gen.name.startswith(".") and gen.is_dir():
                _remove_tree(gen)
                deleted += 1
    return deleted


def refresh_catalog(settings: Settings) -> Path:
    """Rebuild the analyst catalog and swap it in atomically (read-only). Each view names the current
    generation file of every published day (a list, not a glob: a later publish never changes what
    it reads)."""
    catalog = settings.catalog_path

    def build(tmp: Path) -> None:
        tmp.unlink(missing_ok=True)
        with connect(tmp) as con:
            for table in OUTPUT_TABLES:
                files = _current_files(settings, table)
                if files:
                    names = ", ".join(sql_literal(f) for f in files)
                    con.execute(f"create view {table} as select * from read_parquet([{names}])")
                    _comment_view(con, table)
        _read_only(tmp)

    write_atomic(catalog, build)
    return catalog


def read_warehouse(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A read-only session on the warehouse, for the export, the report and ``tandem show``: it cannot
    write, and raises ``duckdb.Error`` at once while a build holds the write lock. It holds at most
    ``TANDEM_DUCKDB_MEMORY_LIMIT`` and draws no progress bar (:func:`mtl_model.duck.connect`)."""
    return connect(settings.warehouse_path, read_only=True, memory_limit=settings.duckdb_memory_limit)
