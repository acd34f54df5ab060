"""Tests of the dataset adapters (mtl_model.ingest): real samples, handwritten fixtures, the contract
format fed by the simulator's bad data, merges and re-ingests, and the command line."""

from __future__ import annotations

import argparse
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from mtl_model.config import Settings
from mtl_model.ingest import (
    EVENTS_SCHEMA,
    ITEMS_SCHEMA,
    QUARANTINE_REASONS,
    USERS_SCHEMA,
    IngestError,
    add_ingest_parser,
    ingest,
    main,
)
from mtl_model.simulate import SimConfig, events_csv_path, simulate

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TAOBAO = FIXTURES / "taobao_user_behavior.csv"
RETAILROCKET = FIXTURES / "retailrocket_events.csv"
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


def _quarantine(settings: Settings, fmt: str, source: Path) -> pl.DataFrame:
    return pl.read_parquet(settings.landing_dir / "_quarantine" / fmt / f"{source.name}.parquet")


def _reasons(q: pl.DataFrame) -> dict[int, str]:
    return dict(q.select("line", "reason").iter_rows())


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


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
