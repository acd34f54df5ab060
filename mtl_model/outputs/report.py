"""What an operator or analyst sees after a run: the CLI summary (row counts, a user's top items, top
anomalies) and the HTML report of a night (``reports/ds=D/report.html``)."""

from __future__ import annotations

import html
from datetime import date
from pathlib import Path

import duckdb

from mtl_model.config import Settings
from mtl_model.files import write_text_atomic
from mtl_model.outputs.warehouse import OUTPUT_TABLES


def print_summary(settings: Settings, ds: date | None = None) -> None:
    """Print the night's summary from the analyst catalog (``tandem show``); ``ds`` defaults to the
    latest published day."""
    catalog = settings.catalog_path
    if not catalog.exists():
        print(f"no analyst catalog yet at {catalog}: run `tandem run --ds YYYY-MM-DD` first")
        return
    with duckdb.connect(str(catalog), read_only=True) as con:
        ds = ds or con.execute("select max(ds) from recommendations").fetchall()[0][0]
        print(f"\nPublished tables (analyst catalog {catalog}):")
        for table in OUTPUT_TABLES:
            total, day = con.execute(
                f"select count(*), count(*) filter (where ds = ?) from {table}", [ds]
            ).fetchall()[0]
            print(f"  {table:<16} {total:>9,} rows, {day:>8,} for ds={ds}")
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as wh:
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
                f"where ds = '{ds}' and user_id = '{user[0]}' order by rank limit 5"
            ).show()
        print(f"Top anomalies on {ds}:")
        con.sql(
            f"select rank, entity_type, entity_id, round(score, 1) as score, reasons from anomalies "
            f"where ds = '{ds}' order by rank limit 5"
        ).show(max_width=160)
        print("Model metrics (validation day):")
        con.sql(
            f"select task, metric, round(value, 4) as value from model_metrics where ds = '{ds}' "
            "and metric in ('auc', 'logloss') order by task, metric"
        ).show()
    py = ".venv/bin/python"
    print("Query the published tables yourself (read-only, safe while the next night runs):")
    print(
        f"  {py} -c \"import duckdb; duckdb.connect('{catalog}', read_only=True)"
        ".sql('select ds, count(*) users, avg(score) from recommendations where rank = 1 group by ds')"
        '.show()"'
    )
    print(f"  or with the DuckDB CLI: duckdb -readonly {catalog}")


def _table(frame, max_rows: int = 20) -> str:
    """A polars DataFrame as a small HTML table (escaped)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in frame.head(max_rows).iter_rows()
    )
    more = f"<p class=note>{frame.height - max_rows} more rows</p>" if frame.height > max_rows else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _fmt(value: object) -> str:
    """A table cell: floats to 4 significant digits, None as empty."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _bars(items: list[tuple[str, float]], width: int = 360) -> str:
    """Horizontal bars (inline SVG) for values in [0, 1]."""
    rows = []
    for i, (label, value) in enumerate(items):
        w = max(0.0, min(1.0, value)) * width
        y = i * 22
        rows.append(
            f'<text x="0" y="{y + 15}" font-size="12">{html.escape(label)}</text>'
            f'<rect x="200" y="{y + 4}" width="{w:.1f}" height="14" fill="#4a7bd0"/>'
            f'<text x="{205 + w:.1f}" y="{y + 15}" font-size="12">{value:.3f}</text>'
        )
    return f'<svg width="{width + 260}" height="{22 * len(items) + 4}">{"".join(rows)}</svg>'


def write_report(settings: Settings, ds: date) -> Path:
    """One HTML page for day ``ds`` from its published tables: model metrics (with baselines when
    present), coverage, data checks, recommendation feedback, top anomalies."""
    import polars as pl

    def read(table: str) -> pl.DataFrame:
        path = settings.published(table, ds) / "part-0.parquet"
        return pl.read_parquet(path) if path.exists() else pl.DataFrame()

    metrics, checks, recs = read("model_metrics"), read("data_checks"), read("recommendations")
    feedback, anomalies = read("rec_feedback"), read("anomalies")
    sections = [f"<h1>Tandem — night of {ds}</h1>"]
    if metrics.height:
        aucs = metrics.filter(pl.col("metric") == "auc").sort(["model_version", "task"])
        sections += [
            "<h2>Model (validation day = ds)</h2>",
            _bars(
                [
                    (f"{r['model_version'][:28]} {r['task']}", r["value"] or 0.0)
                    for r in aucs.iter_rows(named=True)
                ]
            ),
            _table(metrics.drop("ds"), max_rows=60),
        ]
    if recs.height:
        coverage = recs.select(
            pl.col("user_id").n_unique().alias("users_with_recommendations"),
            pl.col("item_id").n_unique().alias("distinct_items_recommended"),
            pl.len().alias("rows"),
        )
        sections += ["<h2>Recommendations: coverage</h2>", _table(coverage)]
    if feedback.height:
        sections += ["<h2>Yesterday's recommendations judged by today</h2>", _table(feedback.drop("ds"))]
    if checks.height:
        failed = checks.filter(~pl.col("success"))
        sections += [
            f"<h2>Data checks: {checks.height - failed.height} of {checks.height} passed</h2>",
            _table(failed.drop("ds")) if failed.height else "<p>All expectations met.</p>",
            '<p><a href="../data_docs/index.html">Great Expectations Data Docs</a></p>',
        ]
    if anomalies.height:
        sections += ["<h2>Top anomalies</h2>", _table(anomalies.sort(["entity_type", "rank"]).drop("ds"), 30)]
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}th{background:#eee}.note{color:#777}"
    )
    head = f"<head><meta charset=utf-8><title>Tandem {ds}</title><style>{style}</style></head>"
    page = f"<!doctype html><html>{head}<body>{''.join(sections)}</body></html>"
    return write_text_atomic(settings.reports_dir / f"ds={ds}" / "report.html", page)
