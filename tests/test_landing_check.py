"""The landing check: each bad file is moved aside with its path and reason, and stops nothing else.

Each bad-input kind of issue 15 is dropped into an old day and into the night's own day; the night
builds from the accepted files, reads only its day, and the other days' tables do not change.
Duplicates are found over the whole history (first landing wins) and every landed row is counted.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from mtl_model.config import Settings
from mtl_model.landing_check import check_landing, quarantined_files
from tests.conftest import START, dbt_build, tandem_settings


def _zero_byte(df: pl.DataFrame, path: Path) -> None:
    path.write_bytes(b"")


def _truncated(df: pl.DataFrame, path: Path) -> None:
    df.write_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _price_as_text(df: pl.DataFrame, path: Path) -> None:
    df.with_columns(pl.col("price").cast(pl.String)).write_parquet(path)  # numeric text, still text


def _event_time_as_text(df: pl.DataFrame, path: Path) -> None:
    text = pl.col("event_time").dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    last = pl.int_range(pl.len()) == pl.len() - 1
    df.with_columns(event_time=pl.when(last).then(pl.lit("yesterday")).otherwise(text)).write_parquet(path)


def _no_user_id(df: pl.DataFrame, path: Path) -> None:
    df.drop("user_id").write_parquet(path)


def _position_too_wide(df: pl.DataFrame, path: Path) -> None:
    df.with_columns(pl.col("position").cast(pl.Int64) + 2**40).write_parquet(path)


# case -> (how the file is written, reason, column it names)
CASES: dict[str, tuple[Callable[[pl.DataFrame, Path], None], str, str | None]] = {
    "zero_byte": (_zero_byte, "unreadable", None),
    "truncated": (_truncated, "unreadable", None),
    "price_as_text": (_price_as_text, "wrong_type", "price"),
    "event_time_as_text": (_event_time_as_text, "wrong_type", "event_time"),
    "no_user_id": (_no_user_id, "missing_column", "user_id"),
    "position_too_wide": (_position_too_wide, "out_of_range", "position"),
}


def _events(home: Path, ds, n: int | None = None) -> pl.DataFrame:
    df = pl.read_parquet(home / "landing" / "events" / f"ds={ds}" / "part-0.parquet")
    return df if n is None else df.head(n)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_file_is_quarantined_with_its_path_reason_and_column(home: Path, case: str) -> None:
    write, reason, column = CASES[case]
    folder = home / "landing" / "events" / f"ds={START}"
    write(_events(home, START, 20), folder / f"{case}.parquet")
    result = check_landing(Settings(home=home))
    rel = f"events/ds={START}/{case}.parquet"
    assert [(r.file, r.reason, r.column) for r in result.rejected] == [(rel, reason, column)]
    message = result.rejected[0].message
    assert rel in message and (column is None or repr(column) in message)
    assert sorted(p.name for p in folder.iterdir()) == ["part-0.parquet"]  # moved aside, the rest stays
    moved = home / "landing" / result.rejected[0].quarantined_as
    assert moved.exists() and moved.parent.name == f"ds={START}"
    record = json.loads(moved.with_name(moved.name + ".reason.json").read_text())
    assert (record["file"], record["reason"], record["column"]) == (rel, reason, column)
    assert quarantined_files(Settings(home=home), START) == [record]
    assert check_landing(Settings(home=home)).checked == 0  # checked once


def test_stray_folders_and_files_are_moved_aside_and_hidden_ones_left(home: Path) -> None:
    events = home / "landing" / "events"
    shutil.copytree(events / f"ds={START}", events / f"ds={START}.bak")
    (events / "stray.parquet").write_bytes((events / f"ds={START}" / "part-0.parquet").read_bytes())
    (events / f"ds={START}" / "notes.txt").write_text("not data")
    (events / f"ds={START}" / ".part-9.parquet.tmp-1-ab").write_bytes(b"being written")
    (events / f"ds={START}" / "_SUCCESS").write_bytes(b"")
    result = check_landing(Settings(home=home))
    got = {(r.file, r.reason) for r in result.rejected}
    assert got == {
        (f"events/ds={START}.bak/part-0.parquet", "invalid_folder"),
        ("events/stray.parquet", "not_in_a_day_folder"),
        (f"events/ds={START}/notes.txt", "not_parquet"),
    }
    assert not (events / f"ds={START}.bak").exists() and not (events / "stray.parquet").exists()
    assert (events / f"ds={START}" / "_SUCCESS").exists()  # names starting with . or _ are not landed yet


def test_a_changed_file_is_checked_again(home: Path) -> None:
    settings = Settings(home=home)
    assert check_landing(settings).checked == 0  # the simulator checked what it wrote
    manifest = json.loads((home / "landing" / "_checked" / "users" / f"ds={START}.json").read_text())
    assert [(f["name"], f["rows"]) for f in manifest["files"]] == [("part-0.parquet", 150)]
    path = home / "landing" / "users" / f"ds={START}" / "part-0.parquet"
    pl.read_parquet(path).with_columns(pl.col("signup_date").cast(pl.String)).write_parquet(path)
    again = check_landing(settings)
    assert again.checked == 1 and [(r.file, r.reason, r.column) for r in again.rejected] == [
        (f"users/ds={START}/part-0.parquet", "wrong_type", "signup_date")
    ]


def _count(con: duckdb.DuckDBPyConnection, sql: str, *params: object) -> int:
    return con.execute(sql, list(params)).fetchall()[0][0]


def _day_rows(home: Path, days: list) -> dict[str, list[tuple]]:
    tables = (
        "stg_events",
        "stg_events_quarantine",
        "stg_events_duplicates",
        "users",
        "items",
        "interactions",
    )
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return {
            t: con.execute(f"select * from {t} where ds in ? order by all", [days]).fetchall() for t in tables
        }


def test_bad_files_in_an_old_day_and_in_tonights_stop_nothing_else(home: Path) -> None:
    """Every kind of bad file in an old day and in tonight's; yesterday's events landed again, and a
    few of them with other content: the night succeeds, its day is exactly the good file's, the
    duplicates are counted, the conflicts quarantined, and the earlier days do not change."""
    old, yesterday, tonight = START, START + timedelta(days=1), START + timedelta(days=2)
    settings = tandem_settings(home)
    assert dbt_build(home, yesterday).returncode == 0
    before = _day_rows(home, [old, yesterday])
    for ds in (old, tonight):
        for case, (write, _, _) in CASES.items():
            write(_events(home, ds, 20), home / "landing" / "events" / f"ds={ds}" / f"{case}.parquet")
    shutil.copytree(home / "landing" / "events" / f"ds={old}", home / "landing" / "events" / f"ds={old}.bak")
    again = _events(home, yesterday, 200)  # landed again, tonight
    again.write_parquet(home / "landing" / "events" / f"ds={tonight}" / "again.parquet")
    conflict = _events(home, yesterday).slice(300, 5).with_columns(pl.col("price") * 2 + 1)
    conflict.write_parquet(home / "landing" / "events" / f"ds={tonight}" / "conflict.parquet")

    result = check_landing(settings)  # the night's first step
    rejected = {(r.file, r.reason, r.column) for r in result.rejected}
    for ds in (old, tonight):
        for case, (_, reason, column) in CASES.items():
            assert (f"events/ds={ds}/{case}.parquet", reason, column) in rejected
    assert (f"events/ds={old}.bak/part-0.parquet", "invalid_folder", None) in rejected
    done = dbt_build(home, tonight)
    assert done.returncode == 0, done.stdout[-3000:]

    assert _day_rows(home, [old, yesterday]) == before  # the other days' tables are untouched
    clean = _events(home, tonight)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        staged = {
            r[0] for r in con.execute("select event_id from stg_events where ds = ?", [tonight]).fetchall()
        }
        dups = con.execute(
            "select first_ds, count(*) from stg_events_duplicates where ds = ? group by 1", [tonight]
        ).fetchall()
        conflicts = con.execute(
            "select event_id, landed_file, first_ds, first_file, first_row from stg_events_quarantine"
            " where ds = ? and reject_reason = 'conflicting_duplicate' order by landed_row",
            [tonight],
        ).fetchall()
        first_rows = con.execute(
            "select count(*) from stg_events where ds = ? and event_id in ?",
            [yesterday, conflict["event_id"].to_list()],
        ).fetchall()[0][0]
        quarantined = _count(con, "select count(*) from stg_events_quarantine where ds = ?", tonight)
    assert staged == set(clean["event_id"])  # exactly the good file: nothing of yesterday staged again
    assert dups == [(yesterday, 200)]
    assert [c[0] for c in conflicts] == conflict["event_id"].to_list() and first_rows == 5
    assert {(c[1], c[2], c[3]) for c in conflicts} == {
        (f"events/ds={tonight}/conflict.parquet", yesterday, f"events/ds={yesterday}/part-0.parquet")
    }
    landed = clean.height + again.height + conflict.height
    assert landed == len(staged) + quarantined + 200  # rows, not distinct ids

    # a file no check has seen yet, in an old day, is never opened by a later night
    (home / "landing" / "events" / f"ds={yesterday}" / "late-drop.parquet").write_bytes(b"PAR1")
    nxt = dbt_build(home, tonight + timedelta(days=1))
    assert nxt.returncode == 0, nxt.stdout[-3000:]


def test_the_nights_landing_step_finds_a_dropped_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mtl_model.pipeline.nightly import check_landing as night_step

    monkeypatch.setenv("TANDEM_HOME", str(home))
    ds = START + timedelta(days=3)
    bad = _events(home, ds, 5).with_columns(
        event_time=pl.lit(datetime(2026, 3, 4, tzinfo=UTC)).dt.strftime("%Y-%m-%d")
    )
    bad.write_parquet(home / "landing" / "events" / f"ds={ds}" / "other-system.parquet")
    summary = night_step(str(ds))
    assert [(r["file"], r["reason"]) for r in summary["rejected"]] == [
        (f"events/ds={ds}/other-system.parquet", "wrong_type")
    ]
    assert json.dumps(summary)  # JSON-able for XCom


def test_tasks_must_be_among_the_labels_the_window_has(home: Path) -> None:
    """`TANDEM_TASKS` naming a task no landed event of the training window can label is refused in
    one line before any work; a day the landing check has not counted refuses nothing."""
    from mtl_model.pipeline.preflight import Refused, check_tasks

    settings = Settings(home=home)
    check_landing(settings)
    days = sorted(p.name.removeprefix("ds=") for p in (home / "landing" / "events").glob("ds=*"))
    last = datetime.fromisoformat(days[-1]).date()
    check_tasks(settings.replace(tasks=("click", "cart", "purchase")), last)  # all present
    with pytest.raises(Refused, match="names fav, but no fav event"):  # the simulator lands no fav
        check_tasks(settings.replace(tasks=("click", "fav")), last)
    for day in days:  # a shop that never lands a purchase
        path = home / "landing" / "events" / f"ds={day}" / "part-0.parquet"
        pl.read_parquet(path).filter(pl.col("event_type") != "purchase").write_parquet(path)
    check_landing(settings)
    with pytest.raises(Refused, match=r"^TANDEM_TASKS names purchase, but no purchase event landed in the"):
        check_tasks(settings.replace(tasks=("click", "purchase")), last)
    check_tasks(settings.replace(tasks=("click", "cart")), last)
    folder = home / "landing" / "events" / f"ds={last}"
    _events(home, last, 5).write_parquet(folder / "part-9.parquet")  # not checked yet: counts unknown
    check_tasks(settings.replace(tasks=("click", "purchase")), last)
