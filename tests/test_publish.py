"""Publish replaces a day everywhere, and readers of the analyst catalog never see half a day."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import duckdb
import polars as pl

from mtl_model.config import Settings
from mtl_model.outputs.warehouse import OUTPUT_TABLES, _prune_generations, publish_day

DS = date(2026, 3, 4)


def write_outputs(settings: Settings, ds: date, n_users: int, version: str) -> None:
    """Outputs of the right shape for every published table (the content is what the test checks)."""
    out = settings.output_dir(ds)
    out.mkdir(parents=True, exist_ok=True)
    users = [f"u{i:05d}" for i in range(n_users)]
    recs = pl.DataFrame({"user_id": users}).join(pl.DataFrame({"rank": [1, 2, 3]}), how="cross")
    recs = recs.with_columns(
        pl.lit(ds).alias("ds"),
        ("i" + pl.col("rank").cast(pl.String)).alias("item_id"),
        pl.lit(0.5).alias("score"),
        pl.lit(version).alias("model_version"),
    )
    recs.write_parquet(out / "recommendations.parquet")
    for table in OUTPUT_TABLES:
        if table != "recommendations":
            pl.DataFrame({"ds": [ds] * n_users, "entity": users, "model_version": version}).write_parquet(
                out / f"{table}.parquet"
            )


def count(settings: Settings, table: str, where: str = "") -> int:
    with duckdb.connect(str(settings.catalog_path), read_only=True) as con:
        return con.execute(f"select count(*) from {table} {where}").fetchall()[0][0]


def test_publish_replaces_the_day(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    write_outputs(settings, DS, 10, "v1")
    publish_day(settings, DS)
    write_outputs(settings, DS, 4, "v2")
    publish_day(settings, DS)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        for table in OUTPUT_TABLES:
            n, versions = con.execute(
                f"select count(*), list(distinct model_version) from {table}"
            ).fetchall()[0]
            assert versions == ["v2"], table
            assert n == (12 if table == "recommendations" else 4)
    assert count(settings, "recommendations") == 12
    files = list((settings.published_dir / "recommendations").rglob("*.parquet"))
    assert [f.name for f in files] == ["part-0.parquet"]  # no temporary files left
    assert pl.read_parquet(files[0])["model_version"].unique().to_list() == ["v2"]


def fingerprint(name: str) -> tuple[int, bytes]:
    return Path(name).stat().st_ino, Path(name).read_bytes()


def catalog_files(settings: Settings) -> dict[str, tuple[int, bytes]]:
    """The Parquet files the catalog's views name, with their inode and bytes."""
    with duckdb.connect(str(settings.catalog_path), read_only=True) as con:
        sqls = [r[0] for r in con.execute("select sql from duckdb_views() where not internal").fetchall()]
    names = {m for sql in sqls for m in re.findall(r"'([^']+\.parquet)'", sql)}
    return {n: fingerprint(n) for n in names}


def test_publish_never_rewrites_a_file_the_catalog_names(tmp_path: Path) -> None:
    """DuckDB opens a Parquet file twice in one query (bind, then scan): a file replaced in between
    is read with the old footer ("TProtocolException: Invalid data"). So a rerun writes new files,
    and the ones an open catalog names stay as they were until the grace period is over."""
    settings = Settings(home=tmp_path)
    write_outputs(settings, DS, 10, "v1")
    publish_day(settings, DS)
    before = catalog_files(settings)
    assert len(before) == len(OUTPUT_TABLES)
    write_outputs(settings, DS, 4, "v2")
    publish_day(settings, DS)
    assert {n: fingerprint(n) for n in before} == before  # same inode, same bytes
    after = catalog_files(settings)
    assert not set(after) & set(before)
    assert count(settings, "recommendations") == 12
    # once the grace period is over, superseded generations go; the current ones stay
    assert _prune_generations(settings, grace_s=0) == len(OUTPUT_TABLES)
    assert not any(Path(n).exists() for n in before)
    assert catalog_files(settings) == after
    assert count(settings, "recommendations") == 12


READER = r"""
import json, sys, time
from pathlib import Path
import duckdb
catalog, stop = sys.argv[1], Path(sys.argv[2])
reads = 0
while True:
    stopping = stop.exists()  # a read that starts after publish finished must see the new day
    try:
        with duckdb.connect(catalog, read_only=True) as con:
            n, versions = con.execute(
                "select count(*), list(distinct model_version) from recommendations"
            ).fetchall()[0]
        print(json.dumps({"n": n, "versions": versions}), flush=True)
    except Exception as exc:
        print(json.dumps({"error": repr(exc)}), flush=True)
    reads += 1
    if stopping and reads >= 5:
        break
"""


def test_a_reader_sees_the_old_or_the_new_day_never_a_half(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    write_outputs(settings, DS, 50, "old")
    publish_day(settings, DS)
    old = count(settings, "recommendations")
    write_outputs(settings, DS, 80, "new")
    new = 80 * 3

    stop = tmp_path / "stop"
    # an analyst in another process, reading the catalog in a loop while publish runs
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(settings.catalog_path), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    for _ in range(20):
        publish_day(settings, DS)
    stop.touch()
    out, _ = reader.communicate(timeout=120)
    seen = [json.loads(line) for line in out.splitlines()]
    assert len(seen) >= 5
    errors = [s["error"] for s in seen if "error" in s]
    assert not errors, errors[:3]
    assert {(s["n"], tuple(s["versions"])) for s in seen} <= {(old, ("old",)), (new, ("new",))}
    assert (new, ("new",)) in {(s["n"], tuple(s["versions"])) for s in seen}
    assert count(settings, "recommendations") == new
