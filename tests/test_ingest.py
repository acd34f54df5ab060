"""Tests of the dataset adapters (mtl_model.sources.ingest): real samples, handwritten fixtures, the contract
format fed by the simulator's bad data, merges and re-ingests, RetailRocket item properties (point in
time), compressed inputs, contract item / user files, derived sessions, the landing-zone lock, and the
command line."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import multiprocessing
import os
import shutil
import time
import zipfile
import zlib
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from mtl_model.config import Settings
from mtl_model.contract import EVENTS_SCHEMA, ITEMS_SCHEMA, USERS_SCHEMA
from mtl_model.sources.ingest import (
    LOCK_NAME,
    QUARANTINE_REASONS,
    SESSION_GAP,
    IngestError,
    add_ingest_parser,
    ingest,
    main,
)
from mtl_model.sources.simulate import SimConfig, events_csv_path, simulate

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TAOBAO = FIXTURES / "taobao_user_behavior.csv"
RETAILROCKET = FIXTURES / "retailrocket_events.csv"
RR_DIR = FIXTURES / "retailrocket"
RR_ITEMS = [
    RR_DIR / n for n in ("item_properties_part1.csv", "item_properties_part2.csv", "category_tree.csv")
]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REES46 = SHARED / "rees46" / "events_2019-10-01_sample.csv"
TIANCHI = SHARED / "tianchi_mobile" / "user_behavior_sample.csv"
TIANCHI_ITEMS = SHARED / "tianchi_mobile" / "item_info_sample.csv"
QUARANTINE_SCHEMA = {"source": pl.String, "line": pl.Int64, "reason": pl.String}

needs_rees46 = pytest.mark.skipif(
    not REES46.exists(), reason=f"REES46 sample not found at {REES46} (../shared/data next to the repo)"
)
needs_tianchi = pytest.mark.skipif(
    not (TIANCHI.exists() and TIANCHI_ITEMS.exists()),
    reason=f"Tianchi samples not found in {SHARED / 'tianchi_mobile'} (../shared/data next to the repo)",
)

TAOBAO_QUARANTINE = {
    9: "unknown_event_type",
    10: "null_user_id",
    11: "null_item_id",
    12: "null_event_time",
    13: "unparseable_event_time",
    14: "implausible_event_time",
    15: "outside_dates",
    16: "outside_dates",
    18: "malformed_line",
    19: "malformed_line",
    20: "truncated_line",
}
RETAILROCKET_QUARANTINE = {
    8: "unknown_event_type",
    9: "null_user_id",
    10: "outside_dates",
    11: "implausible_event_time",
    12: "truncated_line",
}


def _landed(settings: Settings, table: str, fmt: str) -> pl.DataFrame:
    files = sorted((settings.landing_dir / table).glob(f"ds=*/ingest-{fmt}.parquet"))
    return pl.concat(
        [pl.read_parquet(f).with_columns(ds=pl.lit(date.fromisoformat(f.parent.name[3:]))) for f in files]
    )


def _quarantine(settings: Settings, fmt: str, source: Path, table: str = "") -> pl.DataFrame:
    """The quarantine of an events file, or of an item / user file (``table`` items / users)."""
    return pl.read_parquet(settings.landing_dir / "_quarantine" / fmt / table / f"{source.name}.parquet")


def _reasons(q: pl.DataFrame) -> dict[int, str]:
    return dict(q.select("line", "reason").iter_rows())


def _tree(root: Path) -> dict[str, bytes]:
    """The landing zone's files (not the landing check's records, which hold file times)."""
    files = (p for p in sorted(root.rglob("*")) if p.is_file())
    return {
        str(p.relative_to(root)): p.read_bytes() for p in files if p.relative_to(root).parts[0] != "_checked"
    }


# ---------------------------------------------------------------- handwritten fixtures


def test_taobao_fixture_lands_or_quarantines_every_line(tmp_path):
    settings = Settings(home=tmp_path)
    s = ingest(settings, "taobao", TAOBAO, start="2017-11-25", end="2017-12-03")
    assert (s.rows_read, s.rows_landed, s.rows_new, s.rows_quarantined) == (20, 9, 9, 11)
    assert s.tz == "Asia/Shanghai"  # Taobao's days are China time unless told otherwise
    assert s.per_day == {"2017-11-25": 4, "2017-11-26": 4, "2017-12-03": 1}
    q = _quarantine(settings, "taobao", TAOBAO)
    assert _reasons(q) == TAOBAO_QUARANTINE
    assert s.reasons == {
        r: list(TAOBAO_QUARANTINE.values()).count(r) for r in set(TAOBAO_QUARANTINE.values())
    }
    assert set(s.reasons) <= set(QUARANTINE_REASONS)
    assert {k: q.schema[k] for k in QUARANTINE_SCHEMA} == QUARANTINE_SCHEMA
    raw = {line: row for line, *row in q.select("line", "timestamp", "behavior_type").iter_rows()}
    assert raw[13] == ["yesterday", "pv"] and raw[20] == ["15115", "pv"]  # the source fields, cut line too
    assert "truncated_line 1" in s.line() and "20 rows read" in s.line()
    # lines whose text cannot be kept as fields keep their raw bytes: extra fields, the cut line
    lines = TAOBAO.read_bytes().split(b"\n")
    raw_lines = dict(q.select("line", "raw_line").iter_rows())
    assert {k: raw_lines[k] for k in (18, 19, 20)} == {k: lines[k - 1] for k in (18, 19, 20)}
    assert raw_lines[9] is None  # a field-level reason: the fields say it all

    ev = _landed(settings, "events", "taobao")
    assert {k: v for k, v in ev.schema.items() if k != "ds"} == EVENTS_SCHEMA
    assert ev["event_id"].is_unique().all()
    assert ev.select(pl.col("event_id").str.contains(r"^tb-[0-9a-f]{20}$").all()).item()
    types = dict(ev.group_by("event_type").len().iter_rows())
    assert types == {"view": 5, "cart": 1, "fav": 1, "purchase": 2}  # PV in upper case is a view too
    first = ev.filter(pl.col("item_id") == "2268318").row(0, named=True)
    assert first["event_time"] == datetime.fromisoformat("2017-11-24T16:00:00+00:00")
    assert first["ds"] == date(2017, 11, 25) and first["category_id"] == "2520377"
    assert first["user_id"] == "1" and first["scene"] is None and first["position"] is None
    # the same pv twice in one second: two events with two ids
    twice = ev.filter(
        (pl.col("user_id") == "100") & (pl.col("item_id") == "4365585") & (pl.col("event_type") == "view")
    )
    assert twice.height == 2 and twice["event_id"].n_unique() == 2
    # events of a day are sorted by time
    for _, day in ev.group_by("ds"):
        assert day["event_time"].is_sorted()

    items = _landed(settings, "items", "taobao")
    assert {k: v for k, v in items.schema.items() if k != "ds"} == ITEMS_SCHEMA
    per_day = ev.select("ds", "item_id", "category_id").unique().sort("ds", "item_id")
    assert items.select("ds", "item_id", "category_id").sort("ds", "item_id").equals(per_day)
    users = _landed(settings, "users", "taobao")
    assert {k: v for k, v in users.schema.items() if k != "ds"} == USERS_SCHEMA
    assert (
        users.sort("ds", "user_id")
        .select("ds", "user_id")
        .equals(ev.select("ds", "user_id").unique().sort("ds", "user_id"))
    )


def test_taobao_time_zone_is_explicit_and_overridable(tmp_path):
    china = Settings(home=tmp_path / "china")
    utc = Settings(home=tmp_path / "utc")
    ingest(china, "taobao", TAOBAO, start="2017-11-25", end="2017-12-03")
    s = ingest(utc, "taobao", TAOBAO, tz="UTC")  # no date range: lines 15 and 16 land too
    assert s.tz == "UTC" and s.rows_landed == 11 and "outside_dates" not in s.reasons
    assert s.per_day == {"2017-11-24": 3, "2017-11-25": 2, "2017-11-26": 4, "2017-12-03": 2}
    # the ids do not depend on the day split
    ids_china = set(_landed(china, "events", "taobao")["event_id"])
    assert ids_china < set(_landed(utc, "events", "taobao")["event_id"])


def test_retailrocket_fixture(tmp_path):
    settings = Settings(home=tmp_path)
    s = ingest(settings, "retailrocket", RETAILROCKET, start="2015-06-01", end="2015-06-02")
    assert (s.rows_read, s.rows_landed, s.rows_quarantined) == (11, 6, 5)
    assert s.tz == "UTC" and s.per_day == {"2015-06-01": 4, "2015-06-02": 2}
    assert _reasons(_quarantine(settings, "retailrocket", RETAILROCKET)) == RETAILROCKET_QUARANTINE
    ev = _landed(settings, "events", "retailrocket").sort("event_time", "event_type")
    assert ev["event_type"].to_list()[:3] == ["view", "cart", "purchase"]
    assert ev["event_time"][0] == datetime.fromisoformat("2015-06-01T10:00:00+00:00")
    assert ev.select(pl.col("event_id").str.contains(r"^rr-[0-9a-f]{20}$").all()).item()
    assert ev["category_id"].null_count() == ev.height  # RetailRocket's events carry no category
    # RetailRocket has no time zone of its own: the business time zone decides the days
    ny = Settings(home=tmp_path / "ny", business_tz="America/New_York")
    s = ingest(ny, "retailrocket", RETAILROCKET)
    assert s.tz == "America/New_York"
    assert s.per_day == {"2015-05-20": 1, "2015-06-01": 5, "2015-06-02": 1}  # line 6 moves to June 1


def test_reingest_changes_nothing(tmp_path):
    settings = Settings(home=tmp_path)
    ingest(settings, "taobao", TAOBAO, start="2017-11-25", end="2017-12-03")
    before = _tree(settings.landing_dir)
    stamps = {p: p.stat().st_mtime_ns for p in settings.landing_dir.rglob("ingest-*.parquet")}
    again = ingest(settings, "taobao", TAOBAO, start="2017-11-25", end="2017-12-03")
    assert (again.rows_landed, again.rows_new, again.duplicates) == (9, 0, 9)
    assert _tree(settings.landing_dir) == before
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}  # not even rewritten
    assert not [
        p for p in settings.landing_dir.rglob("*") if ".tmp-" in p.name or p.name.startswith(".ingest")
    ]


def test_overlapping_files_merge_in_any_order(tmp_path):
    lines = RETAILROCKET.read_text().split("\n")
    header, body = lines[0], lines[1:]
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("\n".join([header, *body[:6]]) + "\n")  # lines 2-7
    b.write_text("\n".join([header, *body[3:]]))  # lines 5-12: overlaps a, ends in the cut line
    homes = {k: Settings(home=tmp_path / k) for k in ("ab", "ba", "whole")}
    ingest(homes["ab"], "retailrocket", a)
    second = ingest(homes["ab"], "retailrocket", b)
    assert second.rows_landed == 4 and second.rows_new == 1  # lines 5-7 were there already
    ingest(homes["ba"], "retailrocket", b)
    ingest(homes["ba"], "retailrocket", a)
    ingest(homes["whole"], "retailrocket", RETAILROCKET)
    trees = {
        k: {p: v for p, v in _tree(s.landing_dir).items() if "_quarantine" not in p} for k, s in homes.items()
    }
    assert trees["ab"] == trees["ba"] == trees["whole"]
    assert _landed(homes["ab"], "events", "retailrocket").height == 7


def test_contract_csv_schema_drift_and_required_columns(tmp_path):
    settings = Settings(home=tmp_path)
    csv = tmp_path / "export.csv"
    csv.write_text(
        "event_id,event_time,user_id,item_id,event_type,scene,price,app_version\n"
        "e1,2024-03-01T10:00:00+0000,u1,i1,impression,home,9.5,6.0\n"
        "e2,2024-03-01 10:00:05,u1,i1,CLICK,home,9.5,6.0\n"
        "e3,2024-03-01T12:00:00Z,u2,i2,purchase,search,1e9,6.0\n"
        "e4,2024-03-01T12:00:00Z,u2,i2,purchase,search,cheap,6.0\n"
        ",2024-03-01T12:00:00Z,u2,i2,click,search,1,6.0\n"
        "e2,2024-03-01 10:00:05,u1,i1,click,home,9.5,6.0\n"
    )
    s = ingest(settings, "contract", csv)
    assert s.extra_columns == ["app_version"]
    assert s.missing_columns == ["query", "position", "session_id", "category_id"]
    assert _reasons(_quarantine(settings, "contract", csv)) == {5: "unparseable_price", 6: "null_event_id"}
    ev = _landed(settings, "events", "contract")
    # e2 twice: merged; the absurd price is kept for the staging rules; event types in lower case
    assert ev["event_id"].to_list() == ["e1", "e2", "e3"] and s.rows_landed == 4 and s.rows_new == 3
    assert ev["event_type"].to_list() == ["impression", "click", "purchase"] and ev["price"][2] == 1e9
    assert ev["event_time"][1] == datetime.fromisoformat("2024-03-01T10:00:05+00:00")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,when,user_id,item_id,event_type\n1,2,3,4,view\n")
    with pytest.raises(IngestError, match="lacks"):
        ingest(settings, "contract", bad)


def test_nothing_read(tmp_path):
    settings = Settings(home=tmp_path)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header_only = tmp_path / "header.csv"
    header_only.write_text("timestamp,visitorid,event,itemid,transactionid\n")
    for path in (empty, header_only, tmp_path / "missing.csv"):
        with pytest.raises(IngestError):
            ingest(settings, "retailrocket", path)
    with pytest.raises(ValueError, match="unknown format"):
        ingest(settings, "criteo", RETAILROCKET)
    assert not list((tmp_path / "landing").glob("events/*")) if (tmp_path / "landing").exists() else True


def test_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path))
    assert main(["--format", "retailrocket", "--start", "2015-06-01", str(RETAILROCKET)]) == 0
    out = capsys.readouterr().out
    assert "11 rows read, 6 landed" in out and "quarantine:" in out
    assert (tmp_path / "landing" / "events" / "ds=2015-06-01" / "ingest-retailrocket.parquet").exists()
    assert main(["--format", "retailrocket", str(tmp_path / "missing.csv")]) == 1
    assert "nothing read" in capsys.readouterr().err
    # the parser plugs into a `tandem`-style sub-command parser
    parser = argparse.ArgumentParser(prog="tandem")
    add_ingest_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["ingest", "--format", "taobao", "--tz", "UTC", "a.csv", "b.csv"])
    assert (args.fmt, args.tz, args.paths, args.start) == ("taobao", "UTC", ["a.csv", "b.csv"], None)
    assert args.func.__name__ == "cmd_ingest"


def test_invalid_utf8_lines_are_quarantined_with_their_bytes_or_decoded_as_told(tmp_path, capsys):
    """Two users whose ids differ only in a Latin-1 byte: lossy UTF-8 would merge them into one
    (U+FFFD). Without --encoding each such line is quarantined with its raw bytes; with
    --encoding latin-1 both land, as two users."""
    lines = [
        b"timestamp,visitorid,event,itemid,transactionid",
        b"1433152800000,257597,view,355908,",
        b"1433152900000,ren\xe9,view,355908,",
        b"1433153000000,ren\xe8,view,355908,",
        b"1433153100000,257597,addtocart,355908,",
    ]
    source = tmp_path / "latin1.csv"
    source.write_bytes(b"\n".join(lines) + b"\n")
    strict = Settings(home=tmp_path / "strict")
    s = ingest(strict, "retailrocket", source)
    assert (s.rows_read, s.rows_landed, s.rows_quarantined) == (4, 2, 2)
    assert s.reasons == {"invalid_encoding": 2} and "invalid_encoding" in QUARANTINE_REASONS
    q = _quarantine(strict, "retailrocket", source)
    assert dict(q.select("line", "raw_line").iter_rows()) == {3: lines[2], 4: lines[3]}
    assert set(_landed(strict, "events", "retailrocket")["user_id"]) == {"257597"}

    told = Settings(home=tmp_path / "told")
    s = ingest(told, "retailrocket", source, encoding="latin-1")
    assert (s.rows_landed, s.rows_quarantined) == (4, 0)
    assert set(_landed(told, "events", "retailrocket")["user_id"]) == {"257597", "rené", "renè"}
    with pytest.raises(ValueError, match="unknown encoding"):
        ingest(told, "retailrocket", source, encoding="klingon")
    parser = argparse.ArgumentParser(prog="tandem")
    add_ingest_parser(parser.add_subparsers(dest="command", required=True))
    assert (
        parser.parse_args(["ingest", "--format", "taobao", "--encoding", "cp1252", "a"]).encoding == "cp1252"
    )


def test_ingest_checks_what_it_landed_and_moves_a_bad_file_aside(tmp_path):
    """The landing check runs on the days an ingest wrote: its own files pass; a file another system
    dropped into one of those days that breaks the contract is quarantined, and said so."""
    settings = Settings(home=tmp_path)
    day = settings.landing("events", "2015-06-01")
    day.mkdir(parents=True)
    (day / "other-system.parquet").write_bytes(b"PAR1 not really")
    s = ingest(settings, "retailrocket", RETAILROCKET, start="2015-06-01", end="2015-06-02")
    moved = (
        settings.landing_dir / "_quarantine" / "files" / "events" / "ds=2015-06-01" / "other-system.parquet"
    )
    assert moved in s.quarantine_paths and moved.exists() and not (day / "other-system.parquet").exists()
    manifest = settings.landing_dir / "_checked" / "events" / "ds=2015-06-01.json"
    assert "ingest-retailrocket.parquet" in manifest.read_text()


# ---------------------------------------------------------------- real samples


@needs_rees46
def test_rees46_sample(tmp_path):
    settings = Settings(home=tmp_path)
    s = ingest(settings, "rees46", REES46)
    # the sample's last line is cut in the middle of user_id (no user_session, no newline)
    assert (s.rows_read, s.rows_landed, s.rows_quarantined) == (17_435, 17_434, 1)
    assert _reasons(_quarantine(settings, "rees46", REES46)) == {17_436: "truncated_line"}
    assert s.days == [date(2019, 10, 1)]
    ev = _landed(settings, "events", "rees46")
    assert dict(ev.group_by("event_type").len().iter_rows()) == {"view": 17_055, "cart": 165, "purchase": 214}
    assert ev["event_id"].is_unique().all() and ev["event_time"].is_sorted()
    assert ev["user_id"].n_unique() == 4_504 and ev["session_id"].null_count() == 0
    raw = pl.read_csv(REES46, infer_schema=False, n_rows=17_434)
    assert ev["item_id"].n_unique() == raw["product_id"].n_unique()
    assert ev["price"].sum() == pytest.approx(raw["price"].cast(pl.Float64).sum())
    items = _landed(settings, "items", "rees46")
    assert items.height == raw["product_id"].n_unique() == 6_493
    heater = items.filter(pl.col("item_id") == "3900821").row(0, named=True)
    assert heater["category_path"] == "appliances/environment/water_heater" and heater["brand"] == "aqua"
    assert heater["price"] == 33.20 and heater["category_id"] == "2053013552326770905"


@needs_tianchi
def test_tianchi_mobile_sample(tmp_path):
    settings = Settings(home=tmp_path)
    s = ingest(settings, "tianchi-mobile", TIANCHI, items=TIANCHI_ITEMS)
    assert (s.rows_read, s.rows_landed, s.rows_quarantined) == (1_999, 1_999, 0)
    assert (s.items_read, s.items_quarantined) == (1_999, 0)
    assert s.tz == "Asia/Shanghai" and len(s.days) == 31
    assert (s.days[0], s.days[-1]) == (date(2014, 11, 18), date(2014, 12, 18))
    ev = _landed(settings, "events", "tianchi-mobile")
    assert dict(ev.group_by("event_type").len().iter_rows()) == {
        "view": 1_876,
        "fav": 18,
        "cart": 70,
        "purchase": 35,
    }
    # 104 rows repeat another row exactly (same hour): they stay events, each with its own id
    assert ev["event_id"].is_unique().all()
    assert ev.select("user_id", "item_id", "event_type", "event_time").n_unique() < ev.height
    # '2014-12-06 02' China time is 2014-12-05 18:00 UTC, on business day 2014-12-06
    row = ev.filter((pl.col("user_id") == "98047837") & (pl.col("item_id") == "232431562")).row(0, named=True)
    assert row["event_time"] == datetime.fromisoformat("2014-12-05T18:00:00+00:00")
    assert row["ds"] == date(2014, 12, 6) and row["category_id"] == "4245"
    # every day's item snapshot has the whole item file, and the items of its events
    catalogue = pl.read_csv(TIANCHI_ITEMS, infer_schema=False)["item_id"].str.strip_chars().unique()
    items = _landed(settings, "items", "tianchi-mobile")
    for day, snap in items.group_by("ds"):
        assert set(catalogue) <= set(snap["item_id"])
        assert set(ev.filter(pl.col("ds") == day[0])["item_id"]) <= set(snap["item_id"])
        assert snap["item_id"].is_unique().all()
    # a UTC day split: the hours before 08:00 China time move to the previous day
    utc = ingest(Settings(home=tmp_path / "utc"), "tianchi-mobile", TIANCHI, tz="UTC")
    by_utc_date = ev.group_by(pl.col("event_time").dt.date().cast(pl.String)).len().iter_rows()
    assert utc.per_day == dict(by_utc_date) != s.per_day


# ---------------------------------------------------------------- the contract, fed by the simulator


DAY = date(2024, 3, 2)
BAD = SimConfig(
    n_users=150,
    n_items=60,
    n_categories=6,
    seed=3,
    bot_rate=0.02,
    duplicate_rate=0.02,
    null_key_rate=0.02,
    unknown_type_rate=0.02,
    bad_price_rate=0.02,
    future_time_rate=0.02,
    late_rate=0.05,
    write_csv=True,
    truncated_csv_rate=1.0,
)


def test_contract_csv_with_injected_bad_data(tmp_path):
    sim = Settings(home=tmp_path / "sim")
    simulate(sim, DAY, 1, BAD)
    parquet = pl.read_parquet(sim.landing("events", DAY) / "part-0.parquet")
    truth = pl.read_parquet(sim.home / "truth" / "bad_rows" / f"ds={DAY}" / "part-0.parquet")
    csv = events_csv_path(sim, DAY)
    assert not csv.read_bytes().endswith(b"\n")

    settings = Settings(home=tmp_path / "lake")
    s = ingest(settings, "contract", csv, start=DAY - timedelta(days=1), end=DAY)
    assert s.rows_read == parquet.height == s.rows_landed + s.rows_quarantined
    reasons = _reasons(_quarantine(settings, "contract", csv))
    expected_reason = {
        "null_event_id": "null_event_id",
        "null_user_id": "null_user_id",
        "null_item_id": "null_item_id",
        "null_event_time": "null_event_time",
        "unknown_event_type": "unknown_event_type",
        "future_event_time": "outside_dates",
        "truncated_line": "truncated_line",
    }
    injected = truth.filter(pl.col("kind").is_in(list(expected_reason))).select("kind", "row").iter_rows()
    expected = {row + 2: expected_reason[kind] for kind, row in injected}  # CSV line = row + 2 (header)
    assert reasons == expected
    assert set(truth["kind"]) >= {*expected_reason, "duplicate", "late_event", "price_out_of_range"}
    ev = _landed(settings, "events", "contract")
    by_kind = {k: set(g["event_id"]) for (k,), g in truth.group_by("kind")}
    # absurd prices go on to the staging rules; duplicates are merged; late events land on their own day
    assert by_kind["price_out_of_range"] <= set(ev["event_id"])
    assert ev["event_id"].is_unique().all() and by_kind["duplicate"] <= set(ev["event_id"])
    late = ev.filter(pl.col("event_id").is_in(list(by_kind["late_event"])))
    assert late.height == len(by_kind["late_event"]) and (late["ds"] == DAY - timedelta(days=1)).all()
    # every landed row has the values of the simulator's row
    cols = list(EVENTS_SCHEMA)
    mine = ev.select(cols).sort("event_id")
    theirs = parquet.filter(pl.col("event_id").is_in(mine["event_id"].implode())).unique().select(cols)
    assert mine.equals(theirs.sort("event_id"))
    assert s.rows_new == ev.height == mine.height


def test_contract_parquet_round_trip(tmp_path):
    sim = Settings(home=tmp_path / "sim")
    simulate(sim, DAY, 1, SimConfig(n_users=120, n_items=50, n_categories=5, seed=9))
    source = sim.landing("events", DAY) / "part-0.parquet"
    settings = Settings(home=tmp_path / "lake")
    s = ingest(settings, "contract", source)
    assert s.rows_read == s.rows_landed == s.rows_new and s.rows_quarantined == 0 and s.days == [DAY]
    original = pl.read_parquet(source).sort("event_time", "event_id")
    assert pl.read_parquet(settings.landing("events", DAY) / "ingest-contract.parquet").equals(original)
    items = pl.read_parquet(settings.landing("items", DAY) / "ingest-contract.parquet")
    assert set(items["item_id"]) == set(original["item_id"])
    # the simulator's own file in the same folder is left alone
    shutil.copy(source, settings.landing("events", DAY) / "part-0.parquet")
    ingest(settings, "contract", source)
    assert (settings.landing("events", DAY) / "part-0.parquet").read_bytes() == source.read_bytes()


# ---------------------------------------------------------------- helpers for the tests below


def _landing(settings: Settings, quarantine: bool = False) -> dict[str, bytes]:
    """The landing zone's files (the day folders; the quarantine too if asked)."""
    return {
        p: v for p, v in _tree(settings.landing_dir).items() if quarantine or not p.startswith("_quarantine")
    }


def _data_lines(path: Path) -> int:
    """Data lines of a small CSV with a header (a last line without newline counts)."""
    return len(path.read_bytes().splitlines()) - 1


def _snapshot(settings: Settings, table: str, fmt: str, day: str) -> pl.DataFrame:
    return pl.read_parquet(settings.landing_dir / table / f"ds={day}" / f"ingest-{fmt}.parquet")


# ---------------------------------------------------------------- RetailRocket item properties


# (ds, item) -> (category_id, category_path, price, in_stock), from tests/fixtures/retailrocket
RR_SNAPSHOTS = {
    ("2015-06-01", "248676"): ("1338", "1482/1338", 1150.0, False),  # the day's last price, sold out
    ("2015-06-01", "355908"): ("250", "1482/1003/250", 5880.0, True),
    ("2015-06-02", "248676"): ("1173", "1482/1003/1173", 1200.0, False),  # moved on 06-02; new price
    ("2015-06-02", "318965"): ("999", "999", 15.5, None),  # properties of 06-01, no stock info
}
RR_ITEM_QUARANTINE = {
    "item_properties_part1.csv": {
        12: "unparseable_price",
        13: "null_item_id",
        14: "unparseable_in_stock",
        15: "unparseable_event_time",
        16: "malformed_line",
        17: "null_value",
    },
    "item_properties_part2.csv": {11: "truncated_line"},
    "category_tree.csv": {
        8: "duplicate_category_id",
        9: "null_category_id",
        10: "malformed_line",
        11: "truncated_line",
    },
}


def _rr_items(settings: Settings) -> dict[tuple[str, str], tuple]:
    items = _landed(settings, "items", "retailrocket")
    return {
        (str(r["ds"]), r["item_id"]): (r["category_id"], r["category_path"], r["price"], r["in_stock"])
        for r in items.iter_rows(named=True)
    }


def test_retailrocket_item_properties_point_in_time(tmp_path):
    settings = Settings(home=tmp_path)
    s = ingest(settings, "retailrocket", RETAILROCKET, items=RR_ITEMS, start="2015-06-01", end="2015-06-02")
    assert (s.rows_read, s.rows_landed, s.rows_quarantined) == (11, 6, 5)  # the events as before
    assert _rr_items(settings) == RR_SNAPSHOTS
    items = _landed(settings, "items", "retailrocket")
    assert {k: v for k, v in items.schema.items() if k != "ds"} == ITEMS_SCHEMA
    # nothing lost: every data line of every item file is used, skipped (other properties) or quarantined
    assert s.items_read == sum(_data_lines(p) for p in RR_ITEMS) == 36
    assert (s.items_used, s.items_skipped, s.items_quarantined) == (22, 3, 11)
    for path in RR_ITEMS:
        q = _quarantine(settings, "retailrocket", path, "items")
        assert _reasons(q) == RR_ITEM_QUARANTINE[path.name]
        assert set(q["source"]) == {path.name} and set(q["reason"]) <= set(QUARANTINE_REASONS)
    cut = _quarantine(settings, "retailrocket", RR_ITEMS[1], "items").row(0, named=True)
    assert (cut["itemid"], cut["property"], cut["value"]) == ("318965", "categ", None)  # from the file's tail
    assert len(s.quarantine_paths) == 4
    assert "item files: 36 rows (22 used, 3 skipped, 11 quarantined)" in s.line()
    # the same again: not a byte changes
    before = _landing(settings, quarantine=True)
    again = ingest(
        settings, "retailrocket", RETAILROCKET, items=RR_ITEMS, start="2015-06-01", end="2015-06-02"
    )
    assert again.rows_new == 0 and _landing(settings, quarantine=True) == before


def test_retailrocket_properties_from_later_days_do_not_leak(tmp_path):
    """Day D's snapshot is the same with or without the property rows time-stamped after D."""
    end_of_june_1 = 1_433_203_200_000  # 2015-06-02 00:00 UTC, in ms
    cut = []
    for path in RR_ITEMS[:2]:
        head, *rows = path.read_text().split("\n")
        keep = [r for r in rows if not r.split(",")[0].isdigit() or int(r.split(",")[0]) < end_of_june_1]
        (tmp_path / path.name).write_text("\n".join([head, *keep]))
        cut.append(tmp_path / path.name)
    homes = {k: Settings(home=tmp_path / k) for k in ("all", "until_d")}
    ingest(homes["all"], "retailrocket", RETAILROCKET, items=RR_ITEMS)
    ingest(homes["until_d"], "retailrocket", RETAILROCKET, items=[*cut, RR_ITEMS[2]])
    day = "items/ds=2015-06-01/ingest-retailrocket.parquet"
    assert _landing(homes["all"])[day] == _landing(homes["until_d"])[day]
    assert (
        _landing(homes["all"])[day.replace("06-01", "06-02")]
        != _landing(homes["until_d"])[day.replace("06-01", "06-02")]
    )  # (the rows of June 2 do change June 2)


def test_retailrocket_properties_follow_the_business_time_zone(tmp_path):
    # 2015-06-02 00:00 and 03:00 UTC are 20:00 and 23:00 on June 1 in New York: the new price and the
    # new category belong to June 1 there
    ny = Settings(home=tmp_path, business_tz="America/New_York")
    ingest(ny, "retailrocket", RETAILROCKET, items=RR_ITEMS, start="2015-06-01", end="2015-06-02")
    snap = _rr_items(ny)
    assert snap[("2015-06-01", "248676")] == ("1173", "1482/1003/1173", 1200.0, False)
    assert snap[("2015-06-01", "355908")] == ("250", "1482/1003/250", 5880.0, True)


def test_retailrocket_items_merge_in_any_order(tmp_path):
    """Events alone first (items with ids only), then with the item files, or the other way round: the
    day snapshots end with the richer rows either way."""
    homes = {k: Settings(home=tmp_path / k) for k in ("plain_first", "items_first", "once")}
    ingest(homes["plain_first"], "retailrocket", RETAILROCKET)
    ingest(homes["plain_first"], "retailrocket", RETAILROCKET, items=RR_ITEMS)
    ingest(homes["items_first"], "retailrocket", RETAILROCKET, items=RR_ITEMS)
    stamps = {p: p.stat().st_mtime_ns for p in homes["items_first"].landing_dir.rglob("ingest-*.parquet")}
    ingest(homes["items_first"], "retailrocket", RETAILROCKET)  # poorer rows: nothing to write
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    ingest(homes["once"], "retailrocket", RETAILROCKET, items=RR_ITEMS)
    assert _landing(homes["plain_first"]) == _landing(homes["items_first"]) == _landing(homes["once"])


def test_retailrocket_item_file_errors(tmp_path):
    settings = Settings(home=tmp_path)
    odd = tmp_path / "odd.csv"
    odd.write_text("itemid,price\n1,2\n")
    with pytest.raises(IngestError, match="not a RetailRocket item file"):
        ingest(settings, "retailrocket", RETAILROCKET, items=[RR_ITEMS[0], odd])
    with pytest.raises(IngestError, match="no such file"):
        ingest(settings, "retailrocket", RETAILROCKET, items=tmp_path / "missing.csv")
    assert not (settings.landing_dir / "events").exists()  # checked before anything is written
    with pytest.raises(ValueError, match="item files"):
        ingest(settings, "taobao", TAOBAO, items=RR_ITEMS)
    with pytest.raises(ValueError, match="user files"):
        ingest(settings, "retailrocket", RETAILROCKET, users=odd)


def test_cli_item_files_and_session_gap(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path))
    items = [a for p in RR_ITEMS for a in ("--items", str(p))]
    options = ["--session-gap", "15", "--lock-timeout", "5"]
    argv = ["--format", "retailrocket", *items, *options, str(RETAILROCKET)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "item files: 36 rows (22 used, 3 skipped, 11 quarantined)" in out
    assert out.count("quarantine:") == 4
    settings = Settings(home=tmp_path)
    assert _rr_items(settings)[("2015-06-02", "318965")] == RR_SNAPSHOTS[("2015-06-02", "318965")]
    parser = argparse.ArgumentParser(prog="tandem")
    add_ingest_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["ingest", "--format", "contract", "--items", "a.csv", "--users", "u.csv"])
    assert (args.paths, args.items, args.users, args.session_gap) == ([], ["a.csv"], ["u.csv"], 30.0)
    assert main(["--format", "retailrocket"]) == 1  # no file at all
    assert "no events file" in capsys.readouterr().err


# ---------------------------------------------------------------- compressed inputs


def _gz(src: Path, dest: Path, members: int = 1) -> Path:
    data = src.read_bytes()
    cut = [len(data) * k // members for k in range(members + 1)]
    dest.write_bytes(b"".join(gzip.compress(data[a:b], mtime=0) for a, b in zip(cut, cut[1:], strict=False)))
    return dest


def _zip(src: Path, dest: Path, *extra: Path) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for p in (src, *extra):
            z.write(p, p.name)
        z.writestr("__MACOSX/._" + src.name, b"resource fork")  # ignored
    return dest


@pytest.mark.parametrize("kind", ["gz", "gz-members", "gz-cut-trailer", "zip"])
def test_compressed_inputs_land_the_same_bytes(tmp_path, kind):
    def pack(src: Path) -> Path:
        dest = tmp_path / "in" / (src.name + (".zip" if kind == "zip" else ".gz"))
        dest.parent.mkdir(exist_ok=True)
        if kind == "zip":
            return _zip(src, dest)
        _gz(src, dest, members=3 if kind == "gz-members" else 1)
        if kind == "gz-cut-trailer":  # an interrupted download: no CRC / size trailer
            dest.write_bytes(dest.read_bytes()[:-8])
        return dest

    for fmt, events, kwargs in (
        ("taobao", TAOBAO, {"start": "2017-11-25", "end": "2017-12-03"}),
        ("retailrocket", RETAILROCKET, {"items": RR_ITEMS}),
    ):
        plain, packed = Settings(home=tmp_path / f"{fmt}-plain"), Settings(home=tmp_path / f"{fmt}-{kind}")
        a = ingest(plain, fmt, events, **kwargs)
        packed_items = {"items": [pack(p) for p in kwargs["items"]]} if "items" in kwargs else {}
        b = ingest(packed, fmt, pack(events), **{**kwargs, **packed_items})
        assert _landing(plain) == _landing(packed)  # identical bytes, days, ids, sessions
        assert (a.rows_read, a.rows_landed, a.reasons) == (b.rows_read, b.rows_landed, b.reasons)
        assert (a.items_read, a.items_used, a.items_skipped) == (b.items_read, b.items_used, b.items_skipped)
        assert len(a.quarantine_paths) == len(b.quarantine_paths) == (1 if fmt == "taobao" else 4)
        for src, table in [(events, ""), *[(p, "items") for p in kwargs.get("items", [])]]:
            q_packed = _quarantine(packed, fmt, pack(src), table)
            assert q_packed.drop("source").equals(_quarantine(plain, fmt, src, table).drop("source"))
        assert not [p for p in packed.landing_dir.rglob("*") if p.name.startswith(".ingest-")]


def test_gzip_cut_mid_stream_lands_its_readable_part(tmp_path):
    lines = [f"{u},{i},7,pv,{1_511_575_200 + 37 * u + i}" for u in range(60) for i in range(30)]
    full = tmp_path / "UserBehavior.csv"
    full.write_text("\n".join(lines) + "\n")
    packed = gzip.compress(full.read_bytes(), compresslevel=1, mtime=0)
    cut = tmp_path / "UserBehavior.csv.gz"
    cut.write_bytes(packed[: len(packed) * 2 // 3])
    readable = zlib.decompressobj(31).decompress(cut.read_bytes())
    assert 0 < len(readable) < full.stat().st_size and not readable.endswith(b"\n")
    prefix = tmp_path / "prefix" / "UserBehavior.csv"
    prefix.parent.mkdir()
    prefix.write_bytes(readable)
    a = ingest(Settings(home=tmp_path / "a"), "taobao", cut, tz="UTC")
    b = ingest(Settings(home=tmp_path / "b"), "taobao", prefix, tz="UTC")
    assert _landing(Settings(home=tmp_path / "a")) == _landing(Settings(home=tmp_path / "b"))
    assert a.rows_read == b.rows_read == readable.count(b"\n") + 1 and a.reasons == b.reasons
    assert a.reasons.get("truncated_line", 0) + a.rows_landed == a.rows_read  # only the cut line, if short


def test_compressed_input_errors(tmp_path):
    settings = Settings(home=tmp_path)
    two = _zip(TAOBAO, tmp_path / "two.zip", RETAILROCKET)
    with pytest.raises(IngestError, match="exactly one file"):
        ingest(settings, "taobao", two)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(_zip(TAOBAO, tmp_path / "one.zip").read_bytes()[:-30])  # no central directory
    with pytest.raises(IngestError, match="not a readable zip"):
        ingest(settings, "taobao", broken)
    garbage = tmp_path / "garbage.csv.gz"
    garbage.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 64)
    with pytest.raises(IngestError, match="gzip"):
        ingest(settings, "taobao", garbage)
    assert not (settings.landing_dir / "events").exists()


# ---------------------------------------------------------------- contract item and user files


CONTRACT_EVENTS = (
    "event_id,event_time,user_id,item_id,event_type,price,category_id\n"
    "e1,2024-03-01T10:00:00Z,u1,i1,view,9.5,c0\n"  # c0: smaller than the item file's c1
    "e2,2024-03-01T10:01:00Z,u2,i9,view,3.0,c9\n"
)
CONTRACT_ITEMS = (
    "item_id,category_id,category_path,brand,price,title,in_stock,ds,color\n"
    "i1,c1,home/kitchen,acme,9.5,Kettle,true,2024-03-01,red\n"  # 2
    "i2,c2,,,,,,2024-03-01,\n"  # 3: only the key and the day
    ",c1,,,1,,true,2024-03-01,\n"  # 4 null_item_id
    "i3,c1,,,cheap,,true,2024-03-01,\n"  # 5 unparseable_price
    "i4,c1,,,1,,maybe,2024-03-01,\n"  # 6 unparseable_in_stock
    "i5,c1,,,1,,false,2024-13-01,\n"  # 7 unparseable_ds
    "i6,c1,,,1,,false,,\n"  # 8 null_ds
    "i1,c1,home/kitchen,acme,9.0,Kettle,0,2024-03-02,\n"  # 9: the next day, out of stock
    "i7,c3,a,b,1,t,1,2024-03-02"  # 10: cut off (8 of 9 fields, no newline)
)
CONTRACT_USERS = (
    "user_id,signup_date,region,device\n"
    "u1,2024-02-01,north,ios\n"  # 2
    "u2,,south,\n"  # 3
    "u3,feb,north,android\n"  # 4 unparseable_signup_date
    ",2024-02-01,north,ios\n"  # 5 null_user_id
)


def _contract_files(root: Path) -> tuple[Path, Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = root / "events.csv", root / "items.csv", root / "users.csv"
    for p, text in zip(paths, (CONTRACT_EVENTS, CONTRACT_ITEMS, CONTRACT_USERS), strict=True):
        p.write_text(text)
    return paths


def test_contract_item_and_user_files(tmp_path):
    events, items, users = _contract_files(tmp_path / "in")
    settings = Settings(home=tmp_path / "lake")
    s = ingest(settings, "contract", events, items=items, users=users)
    assert (s.rows_read, s.rows_landed, s.rows_quarantined) == (2, 2, 0)
    assert (s.items_read, s.items_used, s.items_quarantined) == (9, 3, 6)
    assert (s.users_read, s.users_used, s.users_quarantined) == (4, 2, 2)
    assert s.days == [date(2024, 3, 1), date(2024, 3, 2)] and s.per_day == {"2024-03-01": 2}
    assert _reasons(_quarantine(settings, "contract", items, "items")) == {
        4: "null_item_id",
        5: "unparseable_price",
        6: "unparseable_in_stock",
        7: "unparseable_ds",
        8: "null_ds",
        10: "truncated_line",
    }
    assert _reasons(_quarantine(settings, "contract", users, "users")) == {
        4: "unparseable_signup_date",
        5: "null_user_id",
    }
    day1 = _snapshot(settings, "items", "contract", "2024-03-01")
    assert dict(day1.schema) == ITEMS_SCHEMA
    assert day1.rows() == [
        ("i1", "c1", "home/kitchen", "acme", 9.5, "Kettle", True),  # the fuller row beats the event's
        ("i2", "c2", None, None, None, None, None),
        ("i9", "c9", None, None, 3.0, None, None),  # from the events only
    ]
    assert _snapshot(settings, "items", "contract", "2024-03-02").rows() == [
        ("i1", "c1", "home/kitchen", "acme", 9.0, "Kettle", False)
    ]
    assert not (settings.landing_dir / "events" / "ds=2024-03-02").exists()  # snapshots only that day
    # a user file without a day goes into every day of the events, next to their users
    users_day = _snapshot(settings, "users", "contract", "2024-03-01")
    assert dict(users_day.schema) == USERS_SCHEMA
    assert users_day.rows() == [("u1", date(2024, 2, 1), "north", "ios"), ("u2", None, "south", None)]
    # again: not a byte changes
    before = _landing(settings, quarantine=True)
    ingest(settings, "contract", events, items=items, users=users)
    assert _landing(settings, quarantine=True) == before


def test_contract_snapshots_alone_and_in_any_order(tmp_path):
    events, items, users = _contract_files(tmp_path / "in")
    homes = {k: Settings(home=tmp_path / k) for k in ("together", "events_first", "items_first")}
    ingest(homes["together"], "contract", events, items=items)
    ingest(homes["events_first"], "contract", events)
    s = ingest(homes["events_first"], "contract", None, items=items)  # no events file: snapshots only
    assert s.source is None and s.rows_read == 0 and s.items_used == 3 and "snapshot files" in s.line()
    ingest(homes["items_first"], "contract", None, items=items)
    ingest(homes["items_first"], "contract", events)
    assert _landing(homes["together"]) == _landing(homes["events_first"]) == _landing(homes["items_first"])
    # the dates apply to the snapshot days
    ranged = Settings(home=tmp_path / "ranged")
    s = ingest(ranged, "contract", None, items=items, start="2024-03-01", end="2024-03-01")
    assert _reasons(_quarantine(ranged, "contract", items, "items"))[9] == "outside_dates"
    assert s.days == [date(2024, 3, 1)]
    # a file with no day of its own needs events
    with pytest.raises(IngestError, match="no day for its rows"):
        ingest(Settings(home=tmp_path / "none"), "contract", None, users=users)
    assert not (tmp_path / "none" / "landing" / "users").exists()
    with pytest.raises(ValueError, match="no events file"):
        ingest(Settings(home=tmp_path / "none"), "contract", None)
    with pytest.raises(IngestError, match="lacks"):
        ingest(Settings(home=tmp_path / "none"), "contract", None, items=events.with_name("users.csv"))


def test_contract_snapshots_round_trip_from_the_simulator(tmp_path):
    sim = Settings(home=tmp_path / "sim")
    simulate(sim, DAY, 1, SimConfig(n_users=120, n_items=50, n_categories=5, seed=9, null_key_rate=0.02))
    events, items, users = (sim.landing(t, DAY) / "part-0.parquet" for t in ("events", "items", "users"))
    lake = Settings(home=tmp_path / "lake")
    s = ingest(lake, "contract", None, items=items, users=users)  # the day comes from the ds= folder
    assert s.days == [DAY] and s.items_quarantined == s.users_quarantined == 0
    for table, source, key in (("items", items, "item_id"), ("users", users, "user_id")):
        assert _snapshot(lake, table, "contract", str(DAY)).equals(pl.read_parquet(source).sort(key))
    # three files named part-0.parquet: each keeps its own quarantine (the events' null keys stay)
    s = ingest(lake, "contract", events, items=items, users=users)
    assert s.rows_quarantined > 0 and s.quarantine_paths == [s.quarantine_path]
    assert _quarantine(lake, "contract", events).height == s.rows_quarantined
    # the simulator's full item rows stay ahead of the rows derived from its events
    assert _snapshot(lake, "items", "contract", str(DAY)).equals(pl.read_parquet(items).sort("item_id"))


# ---------------------------------------------------------------- derived sessions


T0 = 1_511_575_200  # 2017-11-25 10:00:00 China time
SESSION_LINES = [  # Taobao: user_id,item_id,category_id,behavior_type,timestamp (China time)
    f"1,10,7,pv,{T0}",  # 1  10:00                    session A
    f"1,11,7,pv,{T0 + 600}",  # 2  10:10              A
    f"1,11,7,cart,{T0 + 600 + 1800}",  # 3  10:40 (a gap of exactly 30 min)   A
    f"1,11,7,buy,{T0 + 2400 + 1801}",  # 4  11:10:01 (30 min 1 s later)     B
    f"2,10,7,pv,{T0 + 300}",  # 5  another user at 10:05          C
    f"1,12,7,pv,{T0 + 50_340}",  # 6  23:59 on Nov 25              D
    f"1,12,7,pv,{T0 + 50_460}",  # 7  00:01 on Nov 26, 2 min later: a new day, a new session  E
]


def _sessions(settings: Settings) -> dict[int, str]:
    """Line number of SESSION_LINES -> session id, and the event id of each line."""
    ev = _landed(settings, "events", "taobao")
    by_fields = {
        (r["user_id"], r["item_id"], r["event_type"], int(r["event_time"].timestamp())): r
        for r in ev.iter_rows(named=True)
    }
    types = {"pv": "view", "cart": "cart", "buy": "purchase"}
    out = {}
    for n, line in enumerate(SESSION_LINES, 1):
        u, i, _, b, t = line.split(",")
        out[n] = by_fields[(u, i, types[b], int(t))]
    return out


def test_sessions_from_a_30_minute_inactivity_gap(tmp_path):
    path = tmp_path / "UserBehavior.csv"
    path.write_text("\n".join(SESSION_LINES) + "\n")
    settings = Settings(home=tmp_path / "lake")
    ingest(settings, "taobao", path)
    rows = _sessions(settings)
    sid = {n: r["session_id"] for n, r in rows.items()}
    assert timedelta(minutes=30) == SESSION_GAP
    assert sid[1] == sid[2] == sid[3] == "s-" + rows[1]["event_id"]  # 10 and exactly 30 minutes: one session
    assert sid[4] == "s-" + rows[4]["event_id"] != sid[3]  # 30 min 1 s: a new session
    assert sid[5] == "s-" + rows[5]["event_id"]  # per user
    assert sid[6] != sid[7] and (rows[6]["ds"], rows[7]["ds"]) == (date(2017, 11, 25), date(2017, 11, 26))
    assert len(set(sid.values())) == 5
    # deterministic: a re-ingest changes no byte; a wider gap joins A and B
    before = _landing(settings)
    ingest(settings, "taobao", path)
    assert _landing(settings) == before
    wide = Settings(home=tmp_path / "wide")
    ingest(wide, "taobao", path, session_gap=timedelta(hours=1))
    sid = {n: r["session_id"] for n, r in _sessions(wide).items()}
    assert sid[1] == sid[4] and sid[6] != sid[4] and sid[6] != sid[7]
    with pytest.raises(ValueError, match="session_gap"):
        ingest(wide, "taobao", path, session_gap=timedelta(0))


def test_sessions_do_not_depend_on_how_the_events_were_split(tmp_path):
    """File a has 10:00 and 10:40 (two sessions on its own), file b the 10:10 between them: in either
    order the day ends with the one session of the whole file."""
    lines = SESSION_LINES
    files = {}
    for name, keep in (("a", [1, 3, 4, 6]), ("b", [2, 5, 7]), ("whole", range(1, 8))):
        files[name] = tmp_path / f"{name}.csv"
        files[name].write_text("\n".join(lines[k - 1] for k in keep) + "\n")
    homes = {k: Settings(home=tmp_path / k) for k in ("ab", "ba", "whole", "a")}
    ingest(homes["a"], "taobao", files["a"])
    alone = _landed(homes["a"], "events", "taobao").sort("event_time")["session_id"].to_list()
    assert alone[0] != alone[1]  # 10:00 and 10:40 alone: two sessions
    ingest(homes["ab"], "taobao", files["a"])
    ingest(homes["ab"], "taobao", files["b"])
    ingest(homes["ba"], "taobao", files["b"])
    ingest(homes["ba"], "taobao", files["a"])
    ingest(homes["whole"], "taobao", files["whole"])
    assert _landing(homes["ab"]) == _landing(homes["ba"]) == _landing(homes["whole"])
    sid = {n: r["session_id"] for n, r in _sessions(homes["ab"]).items()}
    assert sid[1] == sid[2] == sid[3] != sid[4]


# ---------------------------------------------------------------- the landing-zone lock


def _race_files(root: Path) -> tuple[Path, Path]:
    """Two RetailRocket files with different events on the same two days."""
    header, *body = RETAILROCKET.read_text().split("\n")
    root.mkdir(parents=True, exist_ok=True)
    a, b = root / "a.csv", root / "b.csv"
    a.write_text("\n".join([header, body[0], body[1], body[5]]) + "\n")  # June 1 (2), June 2 (1)
    b.write_text("\n".join([header, body[2], body[3], body[4]]) + "\n")  # June 1 (2), June 2 (1)
    return a, b


def _race_child(home: str, path: str, barrier, locked: bool) -> None:
    """Run in a spawned process: ingest ``path``, starting the write phase together with the other
    process. ``locked``: as shipped (the first merge is slowed down, so that without the lock the other
    process would read the same old files); else the lock is replaced by nothing and both processes
    read a day's files before either writes them (the lost update the lock prevents)."""
    import mtl_model.sources.ingest as m

    real_lock, real_merge = m._landing_lock, m._merge_events
    first = []

    def lock(landing, timeout):
        barrier.wait(120)
        return real_lock(landing, timeout) if locked else contextlib.nullcontext()

    def merge(*args):
        out = real_merge(*args)
        if not first:
            first.append(True)
            time.sleep(0.5) if locked else barrier.wait(120)
        return out

    m._landing_lock, m._merge_events = lock, merge
    m.ingest(Settings(home=Path(home)), "retailrocket", Path(path))


def _race(home: Path, a: Path, b: Path, locked: bool) -> None:
    ctx = multiprocessing.get_context("spawn")  # polars' threads do not survive a fork
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_race_child, args=(str(home), str(p), barrier, locked)) for p in (a, b)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0, 0]


def test_concurrent_ingests_into_one_landing_zone(tmp_path):
    a, b = _race_files(tmp_path / "in")
    sequential = Settings(home=tmp_path / "sequential")
    ingest(sequential, "retailrocket", a)
    ingest(sequential, "retailrocket", b)
    _race(tmp_path / "parallel", a, b, locked=True)
    parallel = Settings(home=tmp_path / "parallel")
    assert _landing(parallel, quarantine=True) == _landing(sequential, quarantine=True)
    assert _landed(parallel, "events", "retailrocket").height == 6
    assert (parallel.landing_dir / LOCK_NAME).exists()


def test_without_the_lock_concurrent_merges_lose_rows(tmp_path):
    """The control of the test above: with the lock taken out, the same race loses a file's rows."""
    a, b = _race_files(tmp_path / "in")
    _race(tmp_path / "parallel", a, b, locked=False)
    assert _landed(Settings(home=tmp_path / "parallel"), "events", "retailrocket").height < 6


def test_lock_timeout(tmp_path, capsys):
    settings = Settings(home=tmp_path)
    settings.landing_dir.mkdir(parents=True)
    fd = os.open(settings.landing_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another ingest is writing
        with pytest.raises(IngestError, match="another ingest is writing"):
            ingest(settings, "retailrocket", RETAILROCKET, lock_timeout=0)
        t0 = time.monotonic()
        with pytest.raises(IngestError, match="still locked"):
            ingest(settings, "retailrocket", RETAILROCKET, lock_timeout=0.3)
        assert time.monotonic() - t0 >= 0.3 and "waiting for another ingest" in capsys.readouterr().err
        assert not (settings.landing_dir / "events").exists()
    finally:
        os.close(fd)
    assert ingest(settings, "retailrocket", RETAILROCKET, lock_timeout=0).rows_landed == 7
