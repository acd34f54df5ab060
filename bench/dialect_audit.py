"""Count the DuckDB-only SQL in the dbt project: what a move to Spark or Trino would have to carry.

    python bench/dialect_audit.py            # a Markdown table (docs/scale.md records it)

Each construct is a regular expression over the SQL of ``dbt_project`` (models, macros, tests; Jinja
comments removed), with what Spark SQL and Trino offer instead. A construct the three engines share
(``coalesce``, window functions, ``filter (where …)``) is not listed. Counts are occurrences and
files; the last column says which of them already sit behind a macro (one place to dispatch).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1] / "dbt_project"
JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.S)
SQL_COMMENT = re.compile(r"--[^\n]*")

# name, pattern, Spark SQL, Trino
CONSTRUCTS: tuple[tuple[str, str, str, str], ...] = (
    ("`qualify`", r"\bqualify\b", "subquery + `where` (Databricks has `qualify`)", "subquery + `where`"),
    (
        "`x::type` casts",
        r"::\s*\w+",
        "`cast(x as type)` (`::` only on Databricks / Spark 4)",
        "`cast(x as type)`",
    ),
    (
        "`read_parquet` / `read_json`",
        r"\bread_(?:parquet|json)\s*\(",
        "external table / dbt source",
        "Hive or Iceberg table",
    ),
    (
        "`glob()` file listing",
        r"\bglob\s*\(",
        "the table's partitions (`show partitions`)",
        "`$partitions` / `$path`",
    ),
    (
        "`range()` table function",
        r"\brange\s*\(",
        "`range()` / `explode(sequence())`",
        "`unnest(sequence())`",
    ),
    (
        "`list()` / `list_*` / `unnest`",
        r"\b(?:list|list_\w+|unnest)\s*\(",
        "`collect_list` / `explode`",
        "`array_agg` / `unnest`",
    ),
    ("`struct` / `{…}` literals", r"\bstruct\b|\{\s*'\w+'\s*:", "`named_struct`", "`row(...)` / `cast(row)`"),
    ("`arg_min` / `arg_max`", r"\barg_(?:min|max)\s*\(", "`min_by` / `max_by`", "`min_by` / `max_by`"),
    (
        "`regexp_*` with group lists",
        r"\bregexp_(?:extract|full_match|matches)\s*\(",
        "`regexp_extract` per group / `rlike`",
        "`regexp_extract` / `regexp_like`",
    ),
    ("`timezone(tz, ts)`", r"\btimezone\s*\(", "`from_utc_timestamp`", "`at time zone`"),
    (
        "`epoch` / `epoch_us`",
        r"\bepoch(?:_us|_ms)?\s*\(",
        "`unix_timestamp` / `unix_micros`",
        "`to_unixtime`",
    ),
    ("`md5` of text (hex)", r"\bmd5\s*\(", "`md5` (same hex)", "`to_hex(md5(to_utf8(x)))`"),
    (
        "`interval 1 day` literals",
        r"\binterval\s+(?:\d|\(|\{)",
        "`interval 1 day` (same)",
        "`interval '1' day`",
    ),
    ("`starts_with`", r"\bstarts_with\s*\(", "`startswith`", "`starts_with` (same)"),
    ("`any_value`", r"\bany_value\s*\(", "`any_value` (3.4+) / `first`", "`arbitrary` / `any_value`"),
)


def sql_files() -> list[Path]:
    return sorted(p for folder in ("models", "macros", "tests") for p in (PROJECT / folder).rglob("*.sql"))


def text_of(path: Path) -> str:
    return SQL_COMMENT.sub("", JINJA_COMMENT.sub("", path.read_text()))


def audit() -> list[dict]:
    texts = {p.relative_to(PROJECT): text_of(p) for p in sql_files()}
    rows = []
    for name, pattern, spark, trino in CONSTRUCTS:
        hits = {p: len(re.findall(pattern, t, re.I)) for p, t in texts.items()}
        hits = {p: n for p, n in hits.items() if n}
        in_macros = sum(n for p, n in hits.items() if p.parts[0] == "macros")
        rows.append(
            {
                "construct": name,
                "uses": sum(hits.values()),
                "files": len(hits),
                "in_macros": in_macros,
                "spark": spark,
                "trino": trino,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    rows = audit()
    n_files = len(sql_files())
    print(f"{n_files} SQL files in dbt_project (models, macros, tests)\n")
    print("| construct | uses | files | of them in macros | Spark SQL | Trino |")
    print("|---|---:|---:|---:|---|---|")
    for r in rows:
        cells = (r["construct"], r["uses"], r["files"], r["in_macros"], r["spark"], r["trino"])
        print("| " + " | ".join(str(c) for c in cells) + " |")
    total = sum(r["uses"] for r in rows)
    files = {p for p in sql_files() if any(re.search(c[1], text_of(p), re.I) for c in CONSTRUCTS)}
    print(f"\n{total} DuckDB-only uses in {len(files)} of {n_files} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
