"""The one way Tandem opens a DuckDB session (the warehouse, the catalog, a scratch one in memory).

Every session draws no progress bar: DuckDB draws one on stderr for a query over 2 s, even into an
Airflow task's log file (hundreds of lines of it for one export). ``memory_limit`` (DuckDB's units,
e.g. ``3GB``; ``TANDEM_DUCKDB_MEMORY_LIMIT``) caps what the session holds; DuckDB spills past it. It is
a connection option, never SQL.
"""

from __future__ import annotations

from pathlib import Path

import duckdb


def connect(
    database: Path | str = ":memory:", *, read_only: bool = False, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB session on ``database`` (default: in memory), without a progress bar."""
    config = {"memory_limit": memory_limit} if memory_limit else {}
    con = duckdb.connect(str(database), read_only=read_only, config=config)
    con.execute("set enable_progress_bar = false")
    return con
