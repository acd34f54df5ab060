"""Publish replaces a day everywhere, as one switch for every table: readers of the analyst catalog
and of the part-0 files never see half a day, even when publish is killed; what is published is
read-only, and the catalog is opened read-only by its documented client (``tandem query``)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest

from mtl_model.config import Settings
from mtl_model.outputs import query
from mtl_model.outputs.warehouse import OUTPUT_TABLES, OutputCheckError, prune_generations, publish_day

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
    files = list((settings.published_dir / "recommendations").glob("ds=*/*"))
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
    assert prune_generations(settings) == 0  # a day's grace by default
    assert prune_generations(settings, grace_s=0) == 1  # one generation folder holds every table
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


def versions(settings: Settings, ds: date = DS) -> dict[str, set[str]]:
    """model_version of each table as the part-0 files show it, and as the catalog does."""
    seen: dict[str, set[str]] = {}
    for table in OUTPUT_TABLES:
        path = settings.published(table, ds) / "part-0.parquet"
        seen[f"file:{table}"] = set(pl.read_parquet(path)["model_version"]) if path.exists() else set()
    with duckdb.connect(str(settings.catalog_path), read_only=True) as con:
        for table in OUTPUT_TABLES:
            rows = con.execute(f"select distinct model_version from {table}").fetchall()
            seen[f"catalog:{table}"] = {r[0] for r in rows}
    return seen


KILLER = r"""
import os, signal, sys
from mtl_model.config import Settings
from mtl_model.dates import parse_date
from mtl_model.outputs import warehouse as w

home, ds, point = sys.argv[1], parse_date(sys.argv[2]), sys.argv[3]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if point.startswith("table"):  # killed once the k-th table of the new generation is written
    k, real, written = int(point[5:]), w.write_atomic, []
    def counting(path, write):
        out = real(path, write)
        if ".generations" in str(path):
            written.append(path)
            if len(written) == k:
                die()
        return out
    w.write_atomic = counting
else:  # killed right after the step named
    step = {"warehouse": "check_outputs", "switch": "_switch", "catalog": "refresh_catalog"}[point]
    real_step = getattr(w, step)
    def then_die(*args, real_step=real_step, point=point):
        if point == "warehouse":  # after the warehouse load, before any file: kill at the first write
            w.write_atomic = lambda *a: die()
            return real_step(*args)
        real_step(*args)
        die()
    setattr(w, step, then_die)
w.publish_day(Settings(home=home), ds)
"""
KILL_POINTS = ["warehouse", *(f"table{k}" for k in range(1, len(OUTPUT_TABLES) + 1)), "switch", "catalog"]


def test_publish_killed_anywhere_leaves_every_table_old_or_every_table_new(tmp_path: Path) -> None:
    """Publish killed (SIGKILL) after the warehouse load, between each pair of tables, after the
    switch and after the catalog: the part-0 files show the old day for every table or the new day
    for every table, and so does the catalog; a rerun publishes the new day everywhere."""
    settings = Settings(home=tmp_path)
    old = {k: {"old"} for k in versions_keys()}
    new = {k: {"new"} for k in versions_keys()}
    for point in KILL_POINTS:
        write_outputs(settings, DS, 6, "old")
        publish_day(settings, DS)
        write_outputs(settings, DS, 5, "new")
        done = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path), str(DS), point], timeout=120)
        assert done.returncode == -9, point
        seen = versions(settings)
        files = {k: v for k, v in seen.items() if k.startswith("file:")}
        catalog = {k: v for k, v in seen.items() if k.startswith("catalog:")}
        assert files in ({k: old[k] for k in files}, {k: new[k] for k in files}), (point, seen)
        assert catalog in ({k: old[k] for k in catalog}, {k: new[k] for k in catalog}), (point, seen)
        if point in ("switch", "catalog"):
            assert files == {k: new[k] for k in files}, point  # the switch happened
        else:
            assert seen == old, point
        publish_day(settings, DS)  # the rerun
        assert versions(settings) == new, point


def versions_keys() -> list[str]:
    return [f"{kind}:{t}" for kind in ("file", "catalog") for t in OUTPUT_TABLES]


def test_what_is_published_is_read_only(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    write_outputs(settings, DS, 3, "v1")
    publish_day(settings, DS)
    for table in OUTPUT_TABLES:
        part = settings.published(table, DS) / "part-0.parquet"
        assert stat.S_IMODE(part.stat().st_mode) == 0o444, table
        assert stat.S_IMODE(part.parent.stat().st_mode) == 0o555, table  # no file can be renamed in
    assert stat.S_IMODE(settings.catalog_path.stat().st_mode) == 0o444
    if os.geteuid() == 0:
        pytest.skip("root ignores file modes: the modes were checked, a write as root would pass")
    part = settings.published("recommendations", DS) / "part-0.parquet"
    # a read-only session's COPY over a published file
    with duckdb.connect(str(settings.catalog_path), read_only=True) as con, pytest.raises(duckdb.Error):
        con.execute("copy (select 1 as x) to ? (format parquet)", [str(part)])
    with pytest.raises(duckdb.Error):  # a read-write connection (it would lock every reader out)
        duckdb.connect(str(settings.catalog_path))


HOLDER = r"""
import sys, time
from pathlib import Path
from mtl_model.config import Settings
from mtl_model.outputs.query import connect
home, go, done = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
con = connect(Settings(home=home))  # the documented path, held open across the publishes
print(con.execute("select count(*) from recommendations").fetchall()[0][0], flush=True)
while not go.exists():
    time.sleep(0.05)
print(con.execute("select count(*) from recommendations").fetchall()[0][0], flush=True)
done.touch()
"""


def test_analysts_on_the_documented_path_neither_lock_nor_break_the_catalog(tmp_path: Path) -> None:
    """A session opened through `tandem query`'s connect() stays open while another process queries
    and while publish replaces the day twice: nobody takes the catalog's write lock, the open session
    keeps reading the files it was bound to (kept for the grace period), a new one sees the new day,
    and the documented connection cannot change the views."""
    settings = Settings(home=tmp_path)
    write_outputs(settings, DS, 10, "v1")
    publish_day(settings, DS)
    go, done = tmp_path / "go", tmp_path / "done"
    env = {**os.environ, "TANDEM_HOME": str(tmp_path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), str(go), str(done)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "30"
    other = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtl_model.outputs.query",
            "select count(*) as n from recommendations",
            "--format",
            "csv",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert other.returncode == 0 and other.stdout.splitlines() == ["n", "30"], other.stderr
    for n_users in (4, 7):  # publish twice while the session is open
        write_outputs(settings, DS, n_users, f"v{n_users}")
        publish_day(settings, DS)
    go.touch()
    out, _ = holder.communicate(timeout=120)
    assert holder.returncode == 0 and out.strip() == "30" and done.exists()  # its old day, still readable
    assert query.run_query(settings, "select count(*) from recommendations")[1] == [(21,)]
    with query.connect(settings) as con, pytest.raises(duckdb.Error, match="read-only"):
        con.execute("create or replace view recommendations as select 1 as x")


def test_zero_recommendations_for_active_users_fail_the_output_check(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    write_outputs(settings, DS, 5, "good")
    publish_day(settings, DS)
    write_outputs(settings, DS, 5, "empty")
    recs = settings.output_dir(DS) / "recommendations.parquet"
    pl.read_parquet(recs).clear().write_parquet(recs)  # e.g. a top_k that selects nothing
    candidates = settings.export_dir(DS) / "candidates.parquet"
    candidates.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"user_id": ["u1", "u2", "u2"], "item_id": ["a", "a", "b"]}).write_parquet(candidates)
    with pytest.raises(OutputCheckError, match="0 recommendations for 2 active users"):
        publish_day(settings, DS)
    assert versions(settings)["catalog:recommendations"] == {"good"}  # yesterday's tables stay
    assert count(settings, "recommendations") == 15


def test_publish_under_a_home_with_a_quote(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "o'brien" / "tandem")
    write_outputs(settings, DS, 3, "v1")
    publish_day(settings, DS)
    assert query.run_query(settings, "select count(*) from recommendations")[1] == [(9,)]


def test_catalog_views_carry_the_documented_column_comments(tmp_path: Path) -> None:
    """Every column of every catalog view has the comment of outputs_sources.yml (the dbt docs')."""
    settings = Settings(home=tmp_path)
    write_outputs(settings, DS, 5, "v1")
    publish_day(settings, DS)
    with duckdb.connect(str(settings.catalog_path), read_only=True) as con:
        columns = con.sql(
            "select table_name, column_name, comment from duckdb_columns() where database_name = 'catalog'"
        ).fetchall()
        views = dict(con.sql("select view_name, comment from duckdb_views() where not internal").fetchall())
    from mtl_model.outputs.warehouse import published_descriptions

    documented = published_descriptions()
    assert {t for t, _, _ in columns} == set(OUTPUT_TABLES) and set(documented) == set(OUTPUT_TABLES)
    shared = [(t, c, comment) for t, c, comment in columns if c in documented[t][1]]
    assert len(shared) >= 10  # the test tables carry a subset of the real columns
    assert all(comment == documented[t][1][c] for t, c, comment in shared)
    assert all(views[t] == documented[t][0] for t in OUTPUT_TABLES)
