"""``tandem query``: SQL on the analyst catalog, opened read-only (the documented client).

A read-only connection takes no write lock: any number of analysts, and the nightly publish, work
at once. It cannot change the views, and a session stays valid across publishes for the grace period
(``mtl_model.outputs.warehouse``). The same in Python::

    import duckdb
    con = duckdb.connect("var/published/catalog.duckdb", read_only=True)

See docs/analysts.md, "What is safe".
"""

from __future__ import annotations

import argparse
import sys

import duckdb

from mtl_model.config import Settings, load_settings
from mtl_model.duck import connect as connect_duckdb


class CatalogMissing(FileNotFoundError):
    """Nothing has been published yet."""


def connect(settings: Settings) -> duckdb.DuckDBPyConnection:
    """The analyst catalog, read-only (raises :class:`CatalogMissing` before the first publish)."""
    if not settings.catalog_path.exists():
        raise CatalogMissing(f"no analyst catalog at {settings.catalog_path}: nothing published yet")
    return connect_duckdb(settings.catalog_path, read_only=True)


def run_query(settings: Settings, sql: str) -> tuple[list[str], list[tuple]]:
    """Column names and rows of ``sql`` on the catalog (read-only)."""
    with connect(settings) as con:
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        return columns, cursor.fetchall()


def _print(columns: list[str], rows: list[tuple], fmt: str) -> None:
    if fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
        return
    texts = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[k]) for r in texts)]) for k, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in texts:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def cmd_query(args: argparse.Namespace) -> int:
    """Run ``args.sql``; exit status 1 when the catalog is missing or the SQL fails."""
    try:
        columns, rows = run_query(load_settings(), args.sql)
    except (CatalogMissing, duckdb.Error) as exc:
        print(f"tandem query: {exc}", file=sys.stderr)
        return 1
    _print(columns, rows, args.format)
    return 0


def add_query_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``query`` on a ``tandem`` sub-command parser (``func`` = :func:`cmd_query`)."""
    p = subparsers.add_parser("query", help="SQL on the analyst catalog, read-only")
    p.add_argument("sql", help='e.g. "select ds, count(*) from recommendations group by ds"')
    p.add_argument(
        "--format", choices=("table", "csv"), default="table", help="output format (default: %(default)s)"
    )
    p.set_defaults(func=cmd_query)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtl_model.outputs.query")
    sub = parser.add_subparsers(dest="command", required=True)
    add_query_parser(sub)
    args = parser.parse_args(["query", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
