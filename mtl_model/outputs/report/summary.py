"""``tandem show``: the night's summary on the terminal, from the analyst catalog."""

from __future__ import annotations

from datetime import date

from mtl_model.config import Settings
from mtl_model.outputs.query import connect
from mtl_model.outputs.warehouse import OUTPUT_TABLES, read_warehouse


def print_summary(settings: Settings, ds: date | None = None) -> None:
    """Print the night's summary from the analyst catalog (``tandem show``); ``ds`` defaults to the
    latest published day."""
    catalog = settings.catalog_path
    if not catalog.exists():
        print(f"no analyst catalog yet at {catalog}: run `tandem run --ds YYYY-MM-DD` first")
        return
    with connect(settings) as con:
        ds = ds or con.execute("select max(ds) from recommendations").fetchall()[0][0]
        print(f"\nPublished tables (analyst catalog {catalog}):")
        for table in OUTPUT_TABLES:
            total, day = con.execute(
                f"select count(*), count(*) filter (where ds = ?) from {table}", [ds]
            ).fetchall()[0]
            print(f"  {table:<16} {total:>9,} rows, {day:>8,} for ds={ds}")
        with read_warehouse(settings) as wh:
            print("\nWarehouse tables (dbt marts) for ds:")
            for table in ("stg_events", "stg_events_quarantine", "users", "items", "interactions"):
                n = wh.execute(f"select count(*) from {table} where ds = ?", [ds]).fetchall()[0][0]
                print(f"  {table:<22} {n:>9,} rows")
        users = con.execute(
            "select user_id from recommendations where ds = ? order by user_id limit 1", [ds]
        ).fetchall()
        if users:
            user = users[0]
            print(f"\nTop 5 recommendations for user {user[0]} on {ds}:")
            con.sql(
                "select rank, item_id, round(score, 4) as score, round(p_click, 4) as p_click, "
                "round(p_purchase, 4) as p_purchase, scene, model_version from recommendations "
                "where ds = ? and user_id = ? order by rank limit 5",
                params=[ds, user[0]],
            ).show()
        print(f"Top anomalies on {ds}:")
        con.sql(
            "select rank, entity_type, entity_id, round(score, 1) as score, reasons from anomalies "
            "where ds = ? order by rank limit 5",
            params=[ds],
        ).show(max_width=160)
        print("Model metrics (split test: held out from every choice; validation: picked the epoch):")
        con.sql(
            "select split, task, metric, round(value, 4) as value from model_metrics where ds = ? "
            "and metric in ('auc', 'auc_se', 'n_pos', 'auc_views', 'logloss') "
            "order by split = 'validation', split, task, metric",  # the test split first
            params=[ds],
        ).show()
    py = ".venv/bin/python"
    print("Query the published tables yourself (read-only, safe while the next night runs):")
    print(
        f"  {py} -c \"import duckdb; duckdb.connect('{catalog}', read_only=True)"
        ".sql('select ds, count(*) users, avg(score) from recommendations where rank = 1 group by ds')"
        '.show()"'
    )
    print(f"  or with the DuckDB CLI: duckdb -readonly {catalog}")
