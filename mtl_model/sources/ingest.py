"""Dataset adapters: land public e-commerce logs (and files in the contract's own layout) in the
landing zone of DESIGN.md, one folder per business day.

    ingest(settings, "taobao", "UserBehavior.csv", start="2017-11-25", end="2017-12-03")
    ingest(settings, "retailrocket", "events.csv.gz",
           items=["item_properties_part1.csv", "item_properties_part2.csv", "category_tree.csv"])
    ingest(settings, "contract", None, items="items/ds=2024-03-02/items.parquet")

Formats (``FORMATS``; ``docs/datasets.md`` says where to get each one and what maps to what):

* ``taobao``: Taobao UserBehavior (Tianchi 649), no header, ``user_id,item_id,category_id,
  behavior_type,timestamp`` (Unix seconds); days are China time (``Asia/Shanghai``) by default.
* ``retailrocket``: RetailRocket ``events.csv``, ``timestamp,visitorid,event,itemid,transactionid``
  (Unix milliseconds); ``items=`` its item files, told apart by their header: the item properties
  (``item_properties_part1.csv`` / ``_part2.csv``: ``timestamp,itemid,property,value``, Unix ms) and
  the category tree (``category_tree.csv``: ``categoryid,parentid``, parentid empty for a root).
* ``rees46``: REES46 multi-category store, ``event_time,event_type,product_id,category_id,
  category_code,brand,price,user_id,user_session`` (``2019-10-01 00:00:00 UTC``).
* ``tianchi-mobile``: Tianchi mobile recommendation, ``user_id,item_id,behavior_type,user_geohash,
  item_category,time`` (``2014-12-18 20``, China time, to the hour); ``items=`` the item file
  ``item_id,item_geohash,item_category``; days are China time by default.
* ``contract``: events in the landing-zone contract (CSV with a header, or Parquet), e.g. a partner
  export or ``SimConfig(write_csv=True)``'s CSV; the event ids are kept. ``items=`` / ``users=``:
  item / user snapshot files in the contract's layout (``ITEMS_SCHEMA`` / ``USERS_SCHEMA``, CSV or
  Parquet), with or without an events file (``path=None``).

Event types: ``pv``/``view``/``1`` -> ``view``, ``cart``/``addtocart``/``3`` -> ``cart``, ``fav``/``2``
-> ``fav``, ``buy``/``transaction``/``purchase``/``4`` -> ``purchase``. These sources log no impressions:
``view`` (a product page seen) is the exposure event and the click task becomes "view" (DESIGN.md).
Anything else (REES46's ``remove_from_cart``) is quarantined as ``unknown_event_type``.

What is written, for each business day D of the events (time zone: ``tz=``, else the format's default,
else ``settings.business_tz``):

* ``landing/events/ds=D/ingest-<fmt>.parquet``: the contract's columns, sorted by (event_time,
  event_id). Sources without ids get ``<prefix>-<20 hex>``: the md5 of the format, the row's source
  fields and the row's occurrence among identical rows of its day (so two identical rows, frequent
  when times are whole seconds or hours, stay two events and a re-ingest gives the same ids);
* ``landing/items/ds=D/ingest-<fmt>.parquet`` and ``landing/users/ds=D/ingest-<fmt>.parquet``:
  snapshots of the items and users of the day's events (the last category / price / brand seen in
  them; user ids only), plus the item file of ``tianchi-mobile`` and the contract's item / user files;
* ``landing/_quarantine/<fmt>/<file name>.parquet``: every row of the events file that could not be
  landed, with ``source``, ``line`` (1-based line of the file, header included; the row number for
  Parquet), ``reason`` and the row's source fields as text; ``landing/_quarantine/<fmt>/items/`` and
  ``.../users/<file name>.parquet`` the same for the item and user files (so a hive-style export's
  ``part-0.parquet`` of each table keeps its own). A later file of the same name replaces it.

Nothing is lost: ``rows_read == rows_landed + rows_quarantined`` for the events, and for the item and
user files ``items_read == items_used + items_skipped + items_quarantined`` (skipped: RetailRocket
properties the contract has no place for), ``users_read == users_used + users_quarantined``.
Reasons: ``truncated_line`` (the file's last line has no newline and is short or broken),
``malformed_line`` (too many fields, or empty), ``null_event_id`` (contract), ``null_user_id``,
``null_item_id``, ``null_event_time``, ``unparseable_event_time``, ``implausible_event_time`` (before
2000 or from 2100 on; for an item property, its timestamp), ``unknown_event_type``,
``unparseable_price`` / ``unparseable_position``, ``outside_dates`` (only when ``start`` / ``end`` are
given); item and user files add ``null_value`` (a used RetailRocket property without a value),
``unparseable_in_stock``, ``unparseable_signup_date``, ``null_ds`` / ``unparseable_ds`` (a snapshot
file's ``ds`` column), ``null_category_id`` and ``duplicate_category_id`` (category tree: a category
listed again with another parent; its first line wins). Price ranges, future times and duplicates of a
contract file are left to the staging rules of dbt (``stg_events_quarantine``); exact copies of an
event id are merged.

RetailRocket item properties, point in time. Only ``categoryid`` (-> ``category_id``), ``available``
(``1`` / ``0`` -> ``in_stock``) and ``790`` (``n5880.000`` -> ``price`` 5880.0) are used; the other
(hashed) properties are read and skipped. The snapshot of day D holds, for each item of D's events,
the latest value of each property whose timestamp is before the end of D in the business time zone
(its local date <= D; of two values with one timestamp, the greater): a change made later never shows
in D (no leakage); an item with no value yet has nulls (``in_stock`` null reads as in stock in dbt).
The category tree gives ``category_path``, the category ids from the root down to the item's category
(``1482/1003/250``: the parent category is the second-to-last id; the contract has no parent column).
A category missing from the tree has a null path. Give all property files in one ingest: an item's
history spans both parts, and separate runs cannot tell which value is the latest.

Contract snapshots (``items=`` / ``users=`` with ``contract``): every column is optional but the key
(``item_id`` / ``user_id``). The day of a row: the file's ``ds`` column (``YYYY-MM-DD``); else the
``ds=YYYY-MM-DD`` folder the file lies in (as in a landing zone); else every day of the events file
ingested with it (the file is the current catalogue, as Tianchi's item file is). ``in_stock`` reads
``true/false/1/0/t/f/yes/no``; ``signup_date`` and ``ds`` read ``YYYY-MM-DD`` (or a timestamp).

Sessions. Sources without sessions (``taobao``, ``retailrocket``, ``tianchi-mobile``) get a derived
``session_id``: the events of a user, ordered by (event_time, event_id), start a new session after
more than ``session_gap`` (default ``SESSION_GAP``, 30 minutes) without an event; the session id is
``s-`` + the event id of the session's first event (deterministic; unique, as event ids are).
Sessions never straddle day folders: they are derived from one business day's events, so a visit
across midnight is two sessions. That keeps each day folder a function of its own rows (re-ingesting
another day never rewrites it) and keeps dbt's exposure key (session, user, item, scene) within a day.
When a merge adds events to a day, that day's sessions are derived again over all its events, so two
overlapping files give the sessions of the whole file, in any order. Whole-hour Tianchi times make
every hour its own session at the default gap (``session_gap=timedelta(hours=1)`` joins them).
REES46 (``user_session``) and the contract keep the sessions they carry.

A day folder that already holds this format's file (an earlier ingest) is merged: union with the new
rows, one row per event id (the smallest row, so the order of ingests does not matter; for items and
users, the row with the fewest nulls, then the smallest), sorted and rewritten through a temporary
name; a file whose content would not change is not rewritten. Ingesting the same file again leaves
every byte as it was. Two ingests into one landing zone never interleave their merges: the write
phase holds an exclusive ``fcntl.flock`` on ``landing/.tandem-ingest.lock`` (reading and spilling run
in parallel); a second ingest waits for it (``lock_timeout`` seconds, default: as long as it takes,
saying so on stderr) or raises ``IngestError``. The lock is advisory and local to one machine (POSIX
file locks; not over every network file system); without ``fcntl`` (Windows) there is no lock.

Compressed inputs: gzip (``.gz``; concatenated members too) and zip (exactly one file inside; macOS
``__MACOSX/`` entries ignored), told by their first bytes, not by the name. polars scans gzip lazily
and streams it (no copy on disk); Python's zlib reads it once more to find the first and last lines.
A zip member, and a gzip stream cut short (an interrupted download: its readable part, whose cut last
line is then quarantined), are decompressed first to a temporary file in the work folder next to the
landing zone (disk: the uncompressed size; memory: 1 MiB buffers). The landing files are the same as
for the uncompressed file; the quarantine file keeps the name of the file given.

The input is read once with a lazy, streaming polars scan (every field as text) and spilled to a
temporary Parquet file next to the landing zone; each day is then built in memory on its own, so the
memory needed is about one day of events (plus, for RetailRocket, the used item properties: about 4M
rows of the 20M). No per-row Python; DuckDB computes the md5 ids.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shutil
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import polars as pl

from mtl_model.config import Settings, load_settings
from mtl_model.contract import EVENT_TYPES, EVENTS_SCHEMA, ITEMS_SCHEMA, USERS_SCHEMA
from mtl_model.dates import parse_date
from mtl_model.files import write_parquet_atomic

try:  # POSIX: the landing-zone lock
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FORMATS",
    "QUARANTINE_REASONS",
    "SESSION_GAP",
    "LOCK_NAME",
    "IngestError",
    "IngestSummary",
    "SourceFormat",
    "ingest",
    "add_ingest_parser",
    "cmd_ingest",
    "main",
]

QUARANTINE_REASONS = (
    "truncated_line",
    "malformed_line",
    "null_event_id",
    "null_user_id",
    "null_item_id",
    "null_event_time",
    "unparseable_event_time",
    "implausible_event_time",
    "unknown_event_type",
    "unparseable_price",
    "unparseable_position",
    "outside_dates",
    # item and user files
    "null_value",
    "unparseable_in_stock",
    "unparseable_signup_date",
    "null_ds",
    "unparseable_ds",
    "null_category_id",
    "duplicate_category_id",
)
SESSION_GAP = timedelta(minutes=30)  # default inactivity gap that ends a derived session
LOCK_NAME = ".tandem-ingest.lock"  # in the landing zone; held while an ingest writes there
RETAILROCKET_PROPERTIES = {"categoryid": "category_id", "available": "in_stock", "790": "price"}
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 1, "statistics": True}
QUARANTINE = "quarantine"  # spill partition of the rows to quarantine
EARLIEST_S, LATEST_S = 946_684_800, 4_102_444_800  # 2000-01-01, 2100-01-01 (UTC): plausible event times
EXTRA = "_extra"  # catches the fields of a line beyond the expected ones
SEP = "\x1f"  # joins source fields into the identity key of a row
CHUNK = 1 << 20  # bytes read at a time when decompressing
EDGE = 1 << 16  # bytes kept of a file's beginning and end (its first and last line)
MAX_TREE_DEPTH = 64
TRUE_TEXT = ("true", "t", "1", "yes", "y")
FALSE_TEXT = ("false", "f", "0", "no", "n")
DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f")


class IngestError(Exception):
    """Nothing could be read: the file is missing, empty, or its header lacks required columns; or the
    landing zone stayed locked by another ingest for longer than ``lock_timeout``."""


# ---------------------------------------------------------------- formats


def _epoch(raw: str, unit: str) -> tuple[pl.Expr, pl.Expr]:
    """Event time from Unix seconds / milliseconds text, and the flag of an implausible value."""
    scale = 1 if unit == "s" else 1000
    n = pl.col(raw).cast(pl.Int64, strict=False)
    ok = n.is_between(EARLIEST_S * scale, LATEST_S * scale, closed="left")
    t = pl.when(ok).then(pl.from_epoch(n, unit)).dt.replace_time_zone("UTC").dt.cast_time_unit("us")
    return t, n.is_not_null() & ~ok


def _local_time(raw: str, fmt: str, pattern: str, zone: str) -> pl.Expr:
    """Wall-clock text of time zone ``zone`` (checked against ``pattern``) as a UTC timestamp."""
    text = pl.col(raw)
    parsed = text.str.strip_suffix(" UTC").str.to_datetime(fmt, strict=False, time_unit="us")
    local = parsed.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")
    return pl.when(text.str.contains(pattern)).then(local.dt.convert_time_zone("UTC"))


def _types(raw: str, mapping: dict[str, str]) -> pl.Expr:
    return pl.col(raw).str.to_lowercase().replace_strict(mapping, default=None, return_dtype=pl.String)


def _number(raw: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """A number column from text, and the flag of text that is not a number."""
    value = pl.col(raw).cast(dtype, strict=False)
    return value, pl.col(raw).is_not_null() & value.is_null()


def _norm_taobao(lf: pl.LazyFrame, cols: set[str]) -> pl.LazyFrame:
    t, implausible = _epoch("timestamp", "s")
    types = {"pv": "view", "cart": "cart", "fav": "fav", "buy": "purchase"}
    return lf.with_columns(
        event_time=t,
        _implausible=implausible,
        _time_raw=pl.col("timestamp"),
        user_id=pl.col("user_id"),
        item_id=pl.col("item_id"),
        event_type=_types("behavior_type", types),
        category_id=pl.col("category_id"),
    )


def _norm_retailrocket(lf: pl.LazyFrame, cols: set[str]) -> pl.LazyFrame:
    t, implausible = _epoch("timestamp", "ms")
    types = {"view": "view", "addtocart": "cart", "transaction": "purchase"}
    return lf.with_columns(
        event_time=t,
        _implausible=implausible,
        _time_raw=pl.col("timestamp"),
        user_id=pl.col("visitorid"),
        item_id=pl.col("itemid"),
        event_type=_types("event", types),
    )


def _norm_rees46(lf: pl.LazyFrame, cols: set[str]) -> pl.LazyFrame:
    price, bad_price = _number("price", pl.Float64)
    pattern = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}( UTC)?$"
    return lf.with_columns(
        event_time=_local_time("event_time", "%Y-%m-%d %H:%M:%S", pattern, "UTC"),
        _time_raw=pl.col("event_time"),
        user_id=pl.col("user_id"),
        item_id=pl.col("product_id"),
        event_type=_types("event_type", {"view": "view", "cart": "cart", "purchase": "purchase"}),
        session_id=pl.col("user_session"),
        price=price,
        _bad_number=pl.when(bad_price).then(pl.lit("unparseable_price")),
        category_id=pl.col("category_id"),
        _category_path=pl.col("category_code").str.replace_all(".", "/", literal=True),
        _brand=pl.col("brand"),
    )


def _norm_tianchi(lf: pl.LazyFrame, cols: set[str]) -> pl.LazyFrame:
    types = {"1": "view", "2": "fav", "3": "cart", "4": "purchase"}
    hour = (pl.col("time") + ":00").alias("_hour")
    return lf.with_columns(hour).with_columns(
        event_time=_local_time("_hour", "%Y-%m-%d %H:%M", r"^\d{4}-\d{2}-\d{2} \d{1,2}:00$", "Asia/Shanghai"),
        _time_raw=pl.col("time"),
        user_id=pl.col("user_id"),
        item_id=pl.col("item_id"),
        event_type=_types("behavior_type", types),
        category_id=pl.col("item_category"),
    )


CONTRACT_TIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.fZ",
    "%Y-%m-%d %H:%M:%S%.f UTC",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
)


def _norm_contract(lf: pl.LazyFrame, cols: set[str]) -> pl.LazyFrame:
    """Contract columns from text (CSV) or typed Parquet columns already cast to text (``_typed_time``)."""
    if "_typed_time" in cols:
        t = pl.col("_typed_time")
    else:
        t = pl.coalesce(
            pl.col("event_time").str.to_datetime(f, strict=False, time_unit="us", time_zone="UTC")
            for f in CONTRACT_TIME_FORMATS
        )
    price, bad_price = _number("price", pl.Float64)
    position, bad_position = _number("position", pl.Int32)
    bad = (
        pl.when(bad_price)
        .then(pl.lit("unparseable_price"))
        .when(bad_position)
        .then(pl.lit("unparseable_position"))
    )
    types = {t_: t_ for t_ in EVENT_TYPES}
    return lf.with_columns(
        event_time=t,
        _time_raw=pl.col("event_time"),
        event_id=pl.col("event_id"),
        user_id=pl.col("user_id"),
        item_id=pl.col("item_id"),
        event_type=_types("event_type", types),
        scene=pl.col("scene"),
        query=pl.col("query"),
        position=position,
        session_id=pl.col("session_id"),
        price=price,
        _bad_number=bad,
        category_id=pl.col("category_id"),
    )


@dataclass(frozen=True)
class SourceFormat:
    """How one public format maps onto the landing-zone contract."""

    name: str
    columns: tuple[str, ...]  # the columns read (positional names when there is no header)
    header: bool
    default_tz: str | None  # business time zone of its days; None: settings.business_tz
    id_prefix: str | None  # prefix of derived event ids; None: the source has event ids
    normalize: Callable[[pl.LazyFrame, set[str]], pl.LazyFrame]
    optional: tuple[str, ...] = ()  # columns that may be missing from the header
    description: str = ""
    sessions: bool = False  # the source has no sessions: derive them (SESSION_GAP)
    item_files: str | None = None  # the kind of item file items= reads, if any
    user_files: bool = False  # users= reads user files (the contract's layout)


FORMATS: dict[str, SourceFormat] = {
    f.name: f
    for f in (
        SourceFormat(
            "taobao",
            ("user_id", "item_id", "category_id", "behavior_type", "timestamp"),
            header=False,
            default_tz="Asia/Shanghai",
            id_prefix="tb",
            normalize=_norm_taobao,
            description="Taobao UserBehavior (Tianchi 649): no header, Unix seconds",
            sessions=True,
        ),
        SourceFormat(
            "retailrocket",
            ("timestamp", "visitorid", "event", "itemid", "transactionid"),
            header=True,
            default_tz=None,
            id_prefix="rr",
            normalize=_norm_retailrocket,
            description="RetailRocket events.csv: Unix milliseconds (items: item properties, category tree)",
            sessions=True,
            item_files="retailrocket",
        ),
        SourceFormat(
            "rees46",
            (
                "event_time",
                "event_type",
                "product_id",
                "category_id",
                "category_code",
                "brand",
                "price",
                "user_id",
                "user_session",
            ),
            header=True,
            default_tz=None,
            id_prefix="rs",
            normalize=_norm_rees46,
            description="REES46 eCommerce behavior data: 'YYYY-MM-DD HH:MM:SS UTC'",
        ),
        SourceFormat(
            "tianchi-mobile",
            ("user_id", "item_id", "behavior_type", "user_geohash", "item_category", "time"),
            header=True,
            default_tz="Asia/Shanghai",
            id_prefix="tm",
            normalize=_norm_tianchi,
            description="Tianchi mobile recommendation: 'YYYY-MM-DD HH' China time (items: item file)",
            sessions=True,
            item_files="tianchi",
        ),
        SourceFormat(
            "contract",
            tuple(EVENTS_SCHEMA),
            header=True,
            default_tz=None,
            id_prefix=None,
            normalize=_norm_contract,
            optional=("scene", "query", "position", "session_id", "price", "category_id"),
            description="the landing-zone contract (CSV with header, or Parquet; items, users too)",
            item_files="contract",
            user_files=True,
        ),
    )
}


# ---------------------------------------------------------------- summary


@dataclass
class IngestSummary:
    fmt: str
    source: Path | None  # the events file (None: item / user files only)
    tz: str
    rows_read: int = 0
    rows_landed: int = 0  # input rows now in the landing zone (new or already there)
    rows_new: int = 0  # of those, rows the landing zone did not hold before
    rows_quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    days: list[date] = field(default_factory=list)  # day folders written or checked (any table)
    per_day: dict[str, int] = field(default_factory=dict)  # ds -> input events landed
    items_read: int = 0  # rows of the item files (items=)
    items_used: int = 0  # ... landed, or used for the snapshots (RetailRocket properties, category tree)
    items_skipped: int = 0  # ... not needed (RetailRocket properties the contract has no place for)
    items_quarantined: int = 0
    users_read: int = 0  # rows of the user files (users=)
    users_used: int = 0
    users_quarantined: int = 0
    extra_columns: list[str] = field(default_factory=list)  # in the input, not used
    missing_columns: list[str] = field(default_factory=list)  # optional columns absent (null)
    quarantine_path: Path | None = None  # of the events file
    quarantine_paths: list[Path] = field(default_factory=list)  # every quarantine file written
    seconds: float = 0.0

    @property
    def duplicates(self) -> int:
        return self.rows_landed - self.rows_new

    def line(self) -> str:
        span = f"{self.days[0]}..{self.days[-1]}" if self.days else "no day"
        why = ", ".join(f"{k} {v:,}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1]))
        if self.source is not None:
            text = (
                f"ingested {self.source.name} ({self.fmt}, days in {self.tz}): {self.rows_read:,} rows read, "
                f"{self.rows_landed:,} landed in {len(self.days)} day(s) {span} ({self.rows_new:,} new), "
                f"{self.rows_quarantined:,} quarantined" + (f" ({why})" if why else "")
            )
        else:
            text = f"ingested snapshot files ({self.fmt}): {len(self.days)} day(s) {span}"
        if self.items_read:
            text += (
                f"; item files: {self.items_read:,} rows ({self.items_used:,} used, "
                f"{self.items_skipped:,} skipped, {self.items_quarantined:,} quarantined)"
            )
        if self.users_read:
            text += (
                f"; user files: {self.users_read:,} rows ({self.users_used:,} used, "
                f"{self.users_quarantined:,} quarantined)"
            )
        if self.extra_columns:
            text += f"; unused columns: {', '.join(self.extra_columns)}"
        if self.missing_columns:
            text += f"; missing columns (null): {', '.join(self.missing_columns)}"
        return text + f" in {self.seconds:.1f}s"


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class _File:
    """An input file, ready for polars: ``scan`` is the file itself (plain or gzip) or a plain copy of
    it in the work folder (a zip member, a gzip stream cut short)."""

    path: Path  # the file named by the caller (its name goes into the quarantine)
    scan: Path
    first_line: bytes
    last_line: bytes | None  # the last line when the file does not end in a newline, else None
    compression: str | None = None


def _edges(data_head: bytes, data_tail: bytes) -> tuple[bytes, bytes | None]:
    first = data_head.split(b"\n", 1)[0]
    if not data_tail or data_tail.endswith(b"\n"):
        return first, None
    return first, data_tail[data_tail.rfind(b"\n") + 1 :]


def _plain(path: Path, scan: Path, compression: str | None = None) -> _File:
    size = scan.stat().st_size
    with scan.open("rb") as f:
        head = f.read(EDGE)
        f.seek(max(0, size - EDGE))
        tail = f.read()
    return _File(path, scan, *_edges(head, tail), compression)


def _gunzip(path: Path, dest: Path | None) -> tuple[bytes, bytes, bool]:
    """Decompress a gzip file (every member) in 1 MiB steps, into ``dest`` if given: its first and
    last bytes, and whether the stream was complete (False: cut short; what could be read is kept)."""
    head, tail = bytearray(), b""
    with path.open("rb") as f, dest.open("wb") if dest else contextlib.nullcontext() as out:
        d, rest = zlib.decompressobj(31), b""
        while True:
            chunk, rest = rest or f.read(CHUNK), b""
            if not chunk:
                break
            if d.eof:  # another member, or zero padding after the last one
                if not chunk.strip(b"\0"):
                    continue
                d = zlib.decompressobj(31)
            try:
                data = d.decompress(chunk)
            except zlib.error as exc:
                raise IngestError(f"{path}: broken gzip data ({exc})") from exc
            if data:
                if len(head) < EDGE:
                    head += data[: EDGE - len(head)]
                tail = (tail + data)[-EDGE:]
                if out is not None:
                    out.write(data)
            if d.eof:
                rest = d.unused_data
        return bytes(head), tail, d.eof


def _prepare(path: Path, work: Path) -> _File:
    """The file at ``path`` for scanning; compressed files are recognised by their first bytes."""
    if not path.is_file() or path.stat().st_size == 0:
        raise IngestError(f"{path}: no such file, or empty")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic[:2] == b"\x1f\x8b":
        head, tail, complete = _gunzip(path, None)
        if complete:  # polars scans gzip itself, streaming
            return _File(path, path, *_edges(head, tail), "gzip")
        dest = Path(tempfile.mkstemp(dir=work, suffix=".csv")[1])
        head, tail, _ = _gunzip(path, dest)  # the readable part: its cut last line is quarantined
        return _File(path, dest, *_edges(head, tail), "gzip (cut short)")
    if magic == b"PK\x03\x04":
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            raise IngestError(f"{path}: not a readable zip ({exc}); an interrupted download?") from exc
        with archive:
            members = [
                m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")
            ]
            if len(members) != 1:
                names = [m.filename for m in members]
                raise IngestError(f"{path}: a zip must hold exactly one file, this one holds {names}")
            dest = Path(tempfile.mkstemp(dir=work, suffix=".csv")[1])
            try:
                with archive.open(members[0]) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
            except (NotImplementedError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise IngestError(f"{path}: cannot unzip {members[0].filename} ({exc})") from exc
        return _plain(path, dest, "zip")
    return _plain(path, path)


def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    with path.open("rb") as f:
        return f.read(4) == b"PAR1"


@dataclass
class _Input:
    lf: pl.LazyFrame  # raw text columns, "_line", and normalised contract columns
    raw: list[str]  # the source columns kept for the quarantine file
    extra_columns: list[str]
    missing_columns: list[str]
    last_raw: dict[str, str | None] | None = None  # fields of a last line without newline, by column
    short_last: bool = False  # ... which has fewer fields than the header


def _fields(line: bytes, bom: bool = False) -> list[str]:
    text = line.decode("utf-8-sig" if bom else "utf-8", "replace").rstrip("\r")
    return [v.strip() for v in next(csv.reader([text]), [])]


def _open_csv(
    file: _File, name: str, header: bool, columns: tuple[str, ...], required: tuple[str, ...]
) -> _Input:
    if header:
        names = _fields(file.first_line, bom=True)
        missing_req = [c for c in required if c not in names]
        if missing_req:
            raise IngestError(
                f"{file.path}: header {names} lacks {missing_req} (expected {list(columns)} for {name})"
            )
    else:
        names = list(columns)
    # unique names for the scan (a header may repeat a name); the first of each is used
    scan_names = [n if n not in names[:k] else f"_dup{k}_{n}" for k, n in enumerate(names)]
    schema = {n: pl.String for n in [*scan_names, EXTRA]}
    lf = pl.scan_csv(
        file.scan,
        has_header=False,
        skip_lines=1 if header else 0,
        schema=schema,
        missing_columns="insert",
        truncate_ragged_lines=True,
        quote_char='"',
        row_index_name="_row",
        encoding="utf8-lossy",
    )
    present = [c for c in columns if c in scan_names]
    missing = [c for c in columns if c not in scan_names]
    stripped = [pl.col(c).str.strip_chars().replace("", None) for c in [*present, EXTRA]]
    lf = lf.with_columns(stripped).with_columns(
        _line=pl.col("_row").cast(pl.Int64) + (2 if header else 1),
        **{c: pl.lit(None, pl.String) for c in missing},
    )
    blank = pl.all_horizontal(pl.col(c).is_null() for c in present)
    lf = lf.with_columns(_malformed=pl.col(EXTRA).is_not_null() | blank)
    extra_cols = [n for n in names if n not in columns]
    src = _Input(lf, present, extra_cols, missing)
    if file.last_line is not None:
        fields = _fields(file.last_line)
        src.last_raw = {
            c: (fields[names.index(c)] or None) if names.index(c) < len(fields) else None for c in present
        }
        src.short_last = len(fields) < len(names)
    return src


def _open_parquet(path: Path, name: str, columns: tuple[str, ...], required: tuple[str, ...]) -> _Input:
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as exc:  # not a Parquet file
        raise IngestError(f"{path}: cannot read as Parquet ({exc})") from exc
    missing_req = [c for c in required if c not in schema]
    if missing_req:
        raise IngestError(f"{path}: columns {list(schema)} lack {missing_req} ({name})")
    present = [c for c in columns if c in schema]
    missing = [c for c in columns if c not in schema]
    lf = pl.scan_parquet(path).with_row_index("_row")
    typed: dict[str, pl.Expr] = {}
    if "event_time" in schema and isinstance(schema["event_time"], pl.Datetime):
        dt = schema["event_time"]
        t = pl.col("event_time")
        t = t.dt.convert_time_zone("UTC") if dt.time_zone else t.dt.replace_time_zone("UTC")
        typed["_typed_time"] = t.dt.cast_time_unit("us")
    lf = lf.with_columns(**typed).with_columns(
        [pl.col(c).cast(pl.String).str.strip_chars().replace("", None) for c in present],
        _line=pl.col("_row").cast(pl.Int64) + 1,
        _malformed=pl.lit(False),
        **{c: pl.lit(None, pl.String) for c in missing},
    )
    return _Input(lf, present, [n for n in schema if n not in columns], missing)


def _reason(spec: SourceFormat, cols: set[str], start: date | None, end: date | None) -> pl.Expr:
    """The first rule a normalised row breaks, or null."""
    t = pl.col("event_time")
    epoch_s = t.dt.epoch("s")
    r = pl.when(pl.col("_malformed")).then(pl.lit("malformed_line"))
    if spec.id_prefix is None:
        r = r.when(pl.col("event_id").is_null()).then(pl.lit("null_event_id"))
    r = (
        r.when(pl.col("user_id").is_null())
        .then(pl.lit("null_user_id"))
        .when(pl.col("item_id").is_null())
        .then(pl.lit("null_item_id"))
        .when(pl.col("_time_raw").is_null())
        .then(pl.lit("null_event_time"))
    )
    if "_implausible" in cols:
        r = r.when(pl.col("_implausible")).then(pl.lit("implausible_event_time"))
    r = (
        r.when(t.is_null())
        .then(pl.lit("unparseable_event_time"))
        .when(~epoch_s.is_between(EARLIEST_S, LATEST_S, closed="left"))
        .then(pl.lit("implausible_event_time"))
        .when(pl.col("event_type").is_null())
        .then(pl.lit("unknown_event_type"))
    )
    if "_bad_number" in cols:
        r = r.when(pl.col("_bad_number").is_not_null()).then(pl.col("_bad_number"))
    if start is not None:
        r = r.when(pl.col("ds") < start).then(pl.lit("outside_dates"))
    if end is not None:
        r = r.when(pl.col("ds") > end).then(pl.lit("outside_dates"))
    return r.otherwise(pl.lit(None, pl.String))


# ---------------------------------------------------------------- item and user files


@dataclass
class _Checked:
    """The rows of an item / user file: the rows kept (``_line`` and the columns asked for), the rows to
    quarantine (``_line``, ``reason``, source fields as text), and counts."""

    source: Path
    good: pl.DataFrame
    bad: pl.DataFrame
    raw: list[str]
    read: int
    skipped: int = 0  # rows without a reason that are not needed

    @property
    def used(self) -> int:
        return self.good.height


def _check(
    src: _Input, source: Path, reason: pl.Expr, keep: list[pl.Expr], used: pl.Expr | None = None
) -> _Checked:
    """One streaming scan of a file (the three queries share it): the rows that break no rule (and are
    ``used``), the rows that break one, and the count; a cut last line goes to the quarantine."""
    lf = src.lf.with_columns(reason=reason)
    ok = pl.col("reason").is_null() if used is None else pl.col("reason").is_null() & used
    try:
        good, bad, stats = pl.collect_all(
            [
                lf.filter(ok).select("_line", *keep),
                lf.filter(pl.col("reason").is_not_null()).select("_line", "reason", *src.raw),
                lf.select(pl.len().alias("n"), pl.col("_line").max().alias("last")),
            ],
            engine="streaming",
        )
    except pl.exceptions.PolarsError as exc:
        raise IngestError(f"{source}: cannot read ({exc})") from exc
    n, last = stats.row(0)
    if src.last_raw is not None and n and (src.short_last or (bad["_line"] == last).any()):
        cut = {"_line": [last], "reason": ["truncated_line"], **{c: [src.last_raw[c]] for c in src.raw}}
        good = good.filter(pl.col("_line") != last)
        bad = pl.concat([bad.filter(pl.col("_line") != last), pl.DataFrame(cut, schema=bad.schema)])
    checked = _Checked(source, good, bad.sort("_line"), src.raw, n)
    checked.skipped = n - good.height - bad.height
    return checked


def _conform(df: pl.DataFrame, schema: dict) -> pl.DataFrame:
    """``df`` with exactly the columns of ``schema`` (missing ones null), cast."""
    return df.select(
        [(pl.col(c) if c in df.columns else pl.lit(None)).cast(d).alias(c) for c, d in schema.items()]
    )


def _read_tianchi_items(file: _File) -> _Checked:
    """Tianchi's item file (item_id, item_geohash, item_category)."""
    columns = ("item_id", "item_geohash", "item_category")
    src = _open_csv(file, "tianchi-mobile item file", True, columns, ("item_id", "item_category"))
    reason = (
        pl.when(pl.col("_malformed"))
        .then(pl.lit("malformed_line"))
        .when(pl.col("item_id").is_null())
        .then(pl.lit("null_item_id"))
        .otherwise(pl.lit(None, pl.String))
    )
    return _check(src, file.path, reason, [pl.col("item_id"), pl.col("item_category").alias("category_id")])


PROPERTY_COLUMNS = ("timestamp", "itemid", "property", "value")
TREE_COLUMNS = ("categoryid", "parentid")
PRICE_TEXT = r"^n-?\d+(\.\d+)?$"  # RetailRocket's property 790: n5880.000


def _retailrocket_kind(file: _File) -> str:
    names = set(_fields(file.first_line, bom=True))
    if set(PROPERTY_COLUMNS) <= names:
        return "properties"
    if set(TREE_COLUMNS) <= names:
        return "tree"
    raise IngestError(
        f"{file.path}: not a RetailRocket item file: header {sorted(names)}, expected "
        f"{','.join(PROPERTY_COLUMNS)} (item_properties_part*.csv) or {','.join(TREE_COLUMNS)} "
        "(category_tree.csv)"
    )


def _read_retailrocket_properties(file: _File) -> _Checked:
    """Item property rows: the used properties (``RETAILROCKET_PROPERTIES``) as (item_id, property,
    value, ts); the others are skipped, but for broken lines."""
    src = _open_csv(file, "retailrocket item properties", True, PROPERTY_COLUMNS, PROPERTY_COLUMNS)
    t, implausible = _epoch("timestamp", "ms")
    prop, value = pl.col("property"), pl.col("value")
    used = prop.is_in(list(RETAILROCKET_PROPERTIES)).fill_null(False)
    reason = (
        pl.when(pl.col("_malformed"))
        .then(pl.lit("malformed_line"))
        .when(~used)
        .then(pl.lit(None, pl.String))
        .when(pl.col("itemid").is_null())
        .then(pl.lit("null_item_id"))
        .when(pl.col("timestamp").is_null())
        .then(pl.lit("null_event_time"))
        .when(implausible)
        .then(pl.lit("implausible_event_time"))
        .when(t.is_null())
        .then(pl.lit("unparseable_event_time"))
        .when(value.is_null())
        .then(pl.lit("null_value"))
        .when((prop == "790") & ~value.str.contains(PRICE_TEXT))
        .then(pl.lit("unparseable_price"))
        .when((prop == "available") & ~value.is_in(["0", "1"]))
        .then(pl.lit("unparseable_in_stock"))
        .otherwise(pl.lit(None, pl.String))
    )
    keep = [pl.col("itemid").alias("item_id"), prop, value, t.alias("ts")]
    return _check(src, file.path, reason, keep, used)


def _read_retailrocket_tree(file: _File) -> _Checked:
    src = _open_csv(file, "retailrocket category tree", True, TREE_COLUMNS, TREE_COLUMNS)
    reason = (
        pl.when(pl.col("_malformed"))
        .then(pl.lit("malformed_line"))
        .when(pl.col("categoryid").is_null())
        .then(pl.lit("null_category_id"))
        .otherwise(pl.lit(None, pl.String))
    )
    keep = [pl.col("categoryid").alias("category_id"), pl.col("parentid").alias("parent_id")]
    return _check(src, file.path, reason, keep)


def _property_history(files: list[_Checked], zone: str) -> pl.DataFrame:
    """One value per (item, property, business day of the change): the day's last (the latest
    timestamp; of two at one timestamp, the greater value). Columns item_id, property, day, value."""
    history = pl.concat([f.good.select("item_id", "property", "value", "ts") for f in files])
    history = history.with_columns(day=pl.col("ts").dt.convert_time_zone(zone).dt.date())
    return (
        history.sort("item_id", "property", "day", "ts", "value")
        .unique(["item_id", "property", "day"], keep="last", maintain_order=True)
        .select("item_id", "property", "day", "value")
    )


def _category_paths(trees: list[_Checked]) -> pl.DataFrame:
    """category_id -> category_path (root/.../parent/category). A category listed again with another
    parent: the later line (file order, then line) is moved to its file's quarantine."""
    rows = pl.concat(
        [t.good.with_columns(_file=pl.lit(k)) for k, t in enumerate(trees)], how="vertical"
    ).sort("_file", "_line")
    conflict = ~pl.col("parent_id").eq_missing(pl.col("parent_id").first().over("category_id"))
    rows = rows.with_columns(_conflict=conflict)
    for k, t in enumerate(trees):
        lines = rows.filter(pl.col("_conflict") & (pl.col("_file") == k))["_line"]
        if lines.len():
            moved = t.good.filter(pl.col("_line").is_in(lines.implode())).select(
                "_line",
                reason=pl.lit("duplicate_category_id"),
                categoryid="category_id",
                parentid="parent_id",
            )
            t.bad = pl.concat([t.bad, moved.select(t.bad.columns)]).sort("_line")
            t.good = t.good.filter(~pl.col("_line").is_in(lines.implode()))
    tree = rows.filter(~pl.col("_conflict")).unique("category_id", keep="first", maintain_order=True)
    parents = tree.select(_cur="category_id", _next="parent_id")
    df = tree.select("category_id", _path=pl.concat_list("category_id"), _cur="parent_id")
    for _ in range(MAX_TREE_DEPTH):  # one level up per step; a cycle stops where it closes
        going = pl.col("_cur").is_not_null() & ~pl.col("_path").list.contains(pl.col("_cur"))
        if not df.select(going.fill_null(False).any()).item():
            break
        df = (
            df.join(parents, on="_cur", how="left")
            .with_columns(
                _path=pl.when(going).then(pl.concat_list("_cur", "_path")).otherwise("_path"),
                _cur=pl.when(going).then("_next"),
            )
            .drop("_next")
        )
    return df.select("category_id", category_path=pl.col("_path").list.join("/"))


def _as_of(pairs: pl.DataFrame, history: pl.DataFrame, paths: pl.DataFrame | None) -> pl.DataFrame:
    """For each (ds, item_id): category_id, category_path, price and in_stock as of the end of ds (the
    latest change on or before ds: an as-of join, no later value can leak in)."""
    left = pairs.sort("ds")
    out = pairs
    for prop, col in RETAILROCKET_PROPERTIES.items():
        right = history.filter(pl.col("property") == prop).select(
            "item_id", "day", pl.col("value").alias(col)
        )
        joined = left.join_asof(
            right.sort("day"),
            left_on="ds",
            right_on="day",
            by="item_id",
            strategy="backward",
            check_sortedness=False,  # sorted by day overall, so within each item too
        )
        out = out.join(joined.select("ds", "item_id", col), on=["ds", "item_id"], how="left")
    out = out.with_columns(
        price=pl.col("price").str.strip_prefix("n").cast(pl.Float64),
        in_stock=pl.col("in_stock") == "1",
    )
    if paths is None:
        return out.with_columns(category_path=pl.lit(None, pl.String))
    return out.join(paths, on="category_id", how="left")


def _enrich(items: pl.DataFrame, known: pl.DataFrame) -> pl.DataFrame:
    """Item rows with the values of ``known`` (item_id and item columns) where it has them."""
    cols = [c for c in known.columns if c != "item_id"]
    joined = items.join(known, on="item_id", how="left", suffix="_known")
    return joined.with_columns(pl.coalesce(f"{c}_known", c).alias(c) for c in cols).select(list(ITEMS_SCHEMA))


def _path_day(path: Path) -> date | None:
    """The day of a ``ds=YYYY-MM-DD`` folder the file lies in (as in a landing zone), if any."""
    for part in reversed(path.absolute().parts[:-1]):
        if part.startswith("ds="):
            try:
                return parse_date(part[3:])
            except ValueError as exc:
                raise IngestError(f"{path}: folder {part!r} is not ds=YYYY-MM-DD") from exc
    return None


def _date_text(column: str) -> pl.Expr:
    text = pl.col(column)
    return pl.coalesce(
        text.str.to_date(DATE_FORMATS[0], strict=False),
        *[text.str.to_datetime(f, strict=False).dt.date() for f in DATE_FORMATS[1:]],
    )


def _read_contract_snapshot(
    path: Path, work: Path, table: str, start: date | None, end: date | None
) -> tuple[_Checked, bool]:
    """An item or user file in the contract's layout (CSV or Parquet): its rows with ``_ds`` (their
    day; null: every day of the events), and whether the file gives a day."""
    schema, key = (ITEMS_SCHEMA, "item_id") if table == "items" else (USERS_SCHEMA, "user_id")
    columns, name = (*schema, "ds"), f"contract {table}"
    if _is_parquet(path):
        src = _open_parquet(path, name, columns, (key,))
    else:
        src = _open_csv(_prepare(path, work), name, True, columns, (key,))
    has_column = "ds" not in src.missing_columns
    day_of_path = _path_day(path)
    r = (
        pl.when(pl.col("_malformed"))
        .then(pl.lit("malformed_line"))
        .when(pl.col(key).is_null())
        .then(pl.lit(f"null_{key}"))
    )
    parsed: dict[str, pl.Expr] = {}
    if table == "items":
        parsed["price"], bad_price = _number("price", pl.Float64)
        low = pl.col("in_stock").str.to_lowercase()
        parsed["in_stock"] = pl.when(low.is_in(TRUE_TEXT)).then(True).when(low.is_in(FALSE_TEXT)).then(False)
        r = r.when(bad_price).then(pl.lit("unparseable_price"))
        r = r.when(pl.col("in_stock").is_not_null() & parsed["in_stock"].is_null())
        r = r.then(pl.lit("unparseable_in_stock"))
    else:
        parsed["signup_date"] = _date_text("signup_date")
        r = r.when(pl.col("signup_date").is_not_null() & parsed["signup_date"].is_null())
        r = r.then(pl.lit("unparseable_signup_date"))
    if has_column:
        day = _date_text("ds")
        r = r.when(pl.col("ds").is_null()).then(pl.lit("null_ds"))
        r = r.when(day.is_null()).then(pl.lit("unparseable_ds"))
    else:
        day = pl.lit(day_of_path, pl.Date)
    if has_column or day_of_path is not None:
        if start is not None:
            r = r.when(day < start).then(pl.lit("outside_dates"))
        if end is not None:
            r = r.when(day > end).then(pl.lit("outside_dates"))
    keep = [parsed.get(c, pl.col(c)).cast(d).alias(c) for c, d in schema.items()] + [day.alias("_ds")]
    checked = _check(src, path, r.otherwise(pl.lit(None, pl.String)), keep)
    return checked, has_column or day_of_path is not None


@dataclass
class _SideFiles:
    """What the item and user files bring to the day snapshots."""

    checked: list[tuple[str, _Checked]] = field(default_factory=list)  # ("items" | "users", file)
    static: dict[str, list[pl.DataFrame]] = field(default_factory=lambda: {"items": [], "users": []})
    dated: dict[str, dict[date, list[pl.DataFrame]]] = field(
        default_factory=lambda: {"items": {}, "users": {}}
    )
    history: pl.DataFrame | None = None  # RetailRocket item properties (_property_history)
    paths: pl.DataFrame | None = None  # RetailRocket category paths


def _read_side_files(
    spec: SourceFormat,
    item_paths: list[Path],
    user_paths: list[Path],
    work: Path,
    zone: str,
    start: date | None,
    end: date | None,
    with_events: bool,
) -> _SideFiles:
    side = _SideFiles()
    props: list[_Checked] = []
    trees: list[_Checked] = []
    for path in item_paths:
        if spec.item_files == "contract":
            checked, dated = _read_contract_snapshot(path, work, "items", start, end)
            _place_snapshot(side, "items", checked, dated, with_events)
        else:
            file = _prepare(path, work)
            if spec.item_files == "tianchi":
                checked = _read_tianchi_items(file)
                side.static["items"].append(_conform(checked.good, ITEMS_SCHEMA))
            elif _retailrocket_kind(file) == "properties":
                checked = _read_retailrocket_properties(file)
                props.append(checked)
            else:
                checked = _read_retailrocket_tree(file)
                trees.append(checked)
        side.checked.append(("items", checked))
    for path in user_paths:
        checked, dated = _read_contract_snapshot(path, work, "users", start, end)
        _place_snapshot(side, "users", checked, dated, with_events)
        side.checked.append(("users", checked))
    if trees:
        side.paths = _category_paths(trees)
    if props:
        side.history = _property_history(props, zone)
    return side


def _place_snapshot(side: _SideFiles, table: str, checked: _Checked, dated: bool, with_events: bool) -> None:
    schema = ITEMS_SCHEMA if table == "items" else USERS_SCHEMA
    if not dated:
        if not with_events:
            raise IngestError(
                f"{checked.source}: no day for its rows: give the file a ds column, put it in a "
                "ds=YYYY-MM-DD folder, or ingest it together with an events file"
            )
        side.static[table].append(_conform(checked.good, schema))
        return
    for (day,), rows in checked.good.partition_by("_ds", as_dict=True).items():
        side.dated[table].setdefault(day, []).append(_conform(rows, schema))


# ---------------------------------------------------------------- writing


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    write_parquet_atomic(df, path, **PARQUET_OPTIONS)


def _canonical(df: pl.DataFrame, key: str, order: list[str], prefer_complete: bool = False) -> pl.DataFrame:
    """One row per ``key`` (of rows sharing a key, the smallest: independent of input order; with
    ``prefer_complete``, the one with the fewest nulls first), sorted by ``order``."""
    dup = df.select(pl.col(key).is_duplicated()).to_series()
    if dup.any():
        same = df.filter(dup).unique()  # exact copies (a re-ingest) first: cheap
        if same.select(pl.col(key).is_duplicated().any()).item():  # then different rows with one key
            cols = [key, *[c for c in df.columns if c != key]]
            if prefer_complete:
                same = same.with_columns(_nulls=pl.sum_horizontal(pl.all().is_null()))
                cols = [key, "_nulls", *cols[1:]]
            same = same.sort(cols, nulls_last=True).unique(subset=key, keep="first", maintain_order=True)
            same = same.select(df.columns)
        df = pl.concat([df.filter(~dup), same])
    return df.sort(order, nulls_last=True)


def _read_conformed(path: Path, schema: dict) -> pl.DataFrame:
    return _conform(pl.read_parquet(path), schema)


def _merge(
    path: Path, new: pl.DataFrame, schema: dict, key: str, order: list[str], prefer_complete: bool = False
) -> tuple[pl.DataFrame | None, int]:
    """``new`` merged with the file at ``path`` (if any), and how many rows the file held before.
    None instead of rows when the file's content would not change (nothing to write)."""
    new = new.select([pl.col(c).cast(d) for c, d in schema.items()])
    if not path.exists():
        return _canonical(new, key, order, prefer_complete), 0
    old = _read_conformed(path, schema)
    fresh = new.join(old, on=list(schema), how="anti", nulls_equal=True)  # rows the file lacks
    if fresh.height == 0:
        return None, old.height
    merged = _canonical(pl.concat([old, fresh]), key, order, prefer_complete)
    return (None if merged.equals(old) else merged), old.height


EVENT_ORDER = ["event_time", "event_id"]


def _with_sessions(events: pl.DataFrame, gap: timedelta) -> pl.DataFrame:
    """``session_id`` derived per user: ordered by (event_time, event_id), a session ends after more than
    ``gap`` without an event; its id is ``s-`` + its first event's id. Vectorised: sorted by user, a
    session starts at a new user or after a gap, and carries its first event id forward."""
    if events.height == 0:
        return events
    user, t = pl.col("user_id"), pl.col("event_time")
    starts = (user != user.shift(1)) | (t.diff() > pl.lit(gap))
    return (
        events.sort("user_id", "event_time", "event_id")
        .with_columns(
            session_id=pl.lit("s-")
            + pl.when(starts.fill_null(True)).then(pl.col("event_id")).otherwise(None).forward_fill()
        )
        .sort(EVENT_ORDER)
    )


def _merge_events(path: Path, new: pl.DataFrame, gap: timedelta | None) -> tuple[pl.DataFrame | None, int]:
    """:func:`_merge` for a day's events; with ``gap`` (sources without sessions), the sessions are
    derived again over the union of the file's and the new events (the file's own are ignored), so a
    day's sessions never depend on how its events were split into files."""
    if gap is None:
        return _merge(path, new, EVENTS_SCHEMA, "event_id", EVENT_ORDER)
    new = _conform(new, EVENTS_SCHEMA).with_columns(session_id=pl.lit(None, pl.String))
    if not path.exists():
        return _with_sessions(_canonical(new, "event_id", EVENT_ORDER), gap), 0
    old = _read_conformed(path, EVENTS_SCHEMA)
    base = old.with_columns(session_id=pl.lit(None, pl.String))
    fresh = new.join(base, on=list(EVENTS_SCHEMA), how="anti", nulls_equal=True)
    merged = _canonical(pl.concat([base, fresh]), "event_id", EVENT_ORDER) if fresh.height else base
    out = _with_sessions(merged, gap)
    return (None if out.equals(old) else out), old.height


def _event_ids(df: pl.DataFrame, prefix: str, fmt: str) -> pl.Series:
    """``prefix-<20 hex of md5(format, source fields, occurrence among identical rows)>``, in row order."""
    keyed = df.select(
        pl.col("_line"),
        _k=pl.concat_str(
            pl.lit(fmt),
            pl.col("_key"),
            (pl.col("_line").rank("ordinal").over("_key") - 1).cast(pl.String),
            separator=SEP,
        ),
    )
    con = duckdb.connect()
    try:
        con.execute("set preserve_insertion_order = true").fetchall()
        con.register("keyed", keyed.to_arrow())
        out = con.sql(f"select _line, '{prefix}-' || substr(md5(_k), 1, 20) as event_id from keyed").pl()
    finally:
        con.close()
    if not out["_line"].equals(keyed["_line"]):  # order lost: put it back
        out = keyed.select("_line").join(out, on="_line", how="left", maintain_order="left")
    return out["event_id"]


def _items_of(events: pl.DataFrame) -> pl.DataFrame:
    """Item snapshot rows from a day's events: the last category / path / brand / price seen."""
    fields = [(c, a) for c, a in _ITEM_FIELDS if events.select(pl.col(c).is_not_null().any()).item()]
    last = [pl.col(c).drop_nulls().last().alias(a) for c, a in fields]
    df = events.sort("event_time", "_line").group_by("item_id").agg(last)
    return _conform(df, ITEMS_SCHEMA)


_ITEM_FIELDS = (
    ("category_id", "category_id"),
    ("_category_path", "category_path"),
    ("_brand", "brand"),
    ("price", "price"),
)


def _write_quarantine(bad: pl.DataFrame, raw: list[str], source: Path, path: Path) -> None:
    if bad.height == 0:
        path.unlink(missing_ok=True)  # an earlier ingest of this file name left one: it is stale now
        return
    out = bad.select(
        pl.lit(source.name).alias("source"),
        pl.col("_line").alias("line"),
        pl.col("reason"),
        *[pl.col(c).alias(c) for c in raw],
    ).sort("line")
    _write_parquet(out, path)


@contextlib.contextmanager
def _landing_lock(landing: Path, timeout: float | None) -> Iterator[None]:
    """Hold an exclusive lock on the landing zone (``LOCK_NAME``): wait for another ingest's write phase
    to end (``timeout`` seconds at most, None: as long as it takes, 0: not at all), else IngestError.
    The lock file stays (empty); the lock goes with the process, even a killed one."""
    if fcntl is None:  # pragma: no cover (Windows)
        yield
        return
    path = landing / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if timeout is not None and timeout <= 0:
                raise IngestError(f"{landing}: another ingest is writing there (lock {path})") from None
            print(
                f"tandem ingest: waiting for another ingest into {landing} to finish (lock {path})",
                file=sys.stderr,
                flush=True,
            )
            if timeout is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                deadline = time.monotonic() + timeout
                while True:
                    time.sleep(0.05)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise IngestError(
                                f"{landing}: still locked by another ingest after {timeout:g}s (lock {path})"
                            ) from None
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- ingest


def _as_date(value: date | str | None) -> date | None:
    return None if value is None else parse_date(value)


def _path_list(value: str | Path | Sequence[str | Path] | None) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, str | os.PathLike):
        return [Path(value)]
    return [Path(v) for v in value]


@dataclass
class _Spill:
    """The events file after pass 1: one folder of Parquet files per day, and the rows to quarantine."""

    days: dict[date, list[Path]]
    bad: pl.DataFrame  # _line, reason, the source fields
    raw: list[str]
    rows_read: int
    cut_line: int | None  # the cut last line (quarantined; left out of its day)
    extra_columns: list[str]
    missing_columns: list[str]

    def day(self, day: date) -> pl.DataFrame:
        df = pl.read_parquet(self.days[day])
        return df if self.cut_line is None else df.filter(pl.col("_line") != self.cut_line)

    def item_days(self) -> pl.DataFrame:
        """(ds, item_id) of every landed event."""
        files = [f for files in self.days.values() for f in files]
        if not files:
            return pl.DataFrame(schema={"ds": pl.Date, "item_id": pl.String})
        lf = pl.scan_parquet(files)
        if self.cut_line is not None:
            lf = lf.filter(pl.col("_line") != self.cut_line)
        return lf.select("ds", "item_id").unique().collect()


def _spill_events(
    spec: SourceFormat, path: Path, work: Path, zone: str, start: date | None, end: date | None
) -> _Spill:
    """Pass 1 (streaming): normalise, find the day and the reason of each row, spill to Parquet."""
    required = tuple(c for c in spec.columns if c not in spec.optional)
    if spec.id_prefix is None and _is_parquet(path):
        src = _open_parquet(path, spec.name, spec.columns, required)
    else:
        src = _open_csv(_prepare(path, work), spec.name, spec.header, spec.columns, required)
    lf = spec.normalize(src.lf, set(src.lf.collect_schema().names()))
    cols = set(lf.collect_schema().names())
    for c, dtype in EVENTS_SCHEMA.items():  # columns a source does not have
        if c not in cols:
            lf = lf.with_columns(pl.lit(None, dtype).alias(c))
    for c in ("_category_path", "_brand"):
        if c not in cols:
            lf = lf.with_columns(pl.lit(None, pl.String).alias(c))
    lf = lf.with_columns(ds=pl.col("event_time").dt.convert_time_zone(zone).dt.date())
    lf = lf.with_columns(reason=_reason(spec, cols, start, end))
    key = (
        []
        if spec.id_prefix is None
        else [pl.concat_str([pl.col(c).fill_null("") for c in src.raw], separator=SEP)]
    )
    spill_cols = [
        "_line",
        "ds",
        "reason",
        *EVENTS_SCHEMA,
        "_category_path",
        "_brand",
        *([key[0].alias("_key")] if key else []),
        *[pl.when(pl.col("reason").is_not_null()).then(pl.col(c)).alias(f"_raw_{c}") for c in src.raw],
    ]
    part = (
        pl.when(pl.col("reason").is_null()).then(pl.col("ds").cast(pl.String)).otherwise(pl.lit(QUARANTINE))
    )
    spill = work / "events"
    try:  # one folder per day, and one for the rows to quarantine
        lf.select(*spill_cols, part.alias("_part")).sink_parquet(
            pl.PartitionBy(spill, key="_part", include_key=False), compression="lz4", mkdir=True
        )
    except pl.exceptions.PolarsError as exc:
        raise IngestError(f"{path}: cannot read as {spec.name} ({exc})") from exc
    parts = (
        {d.name.split("=", 1)[1]: sorted(d.glob("*.parquet")) for d in spill.iterdir() if "=" in d.name}
        if spill.exists()
        else {}
    )
    if not parts:
        raise IngestError(f"{path}: no data rows")
    every = pl.scan_parquet([f for files in parts.values() for f in files])
    n_rows, last_line = every.select(pl.len(), pl.col("_line").max()).collect().row(0)
    # the last line has no newline: if it is short or broken, it was cut off
    cut_line = None
    if src.last_raw is not None:
        last = every.filter(pl.col("_line") == last_line).select("reason").collect()
        if src.short_last or last["reason"].is_not_null().any():
            cut_line = last_line

    # the quarantine (the source fields of a cut line come from the file's tail: they were not kept)
    bad = pl.scan_parquet(parts[QUARANTINE]) if QUARANTINE in parts else every.clear()
    if cut_line is not None:
        bad = pl.concat([bad.filter(pl.col("_line") != cut_line), every.filter(pl.col("_line") == cut_line)])
        bad = bad.with_columns(
            reason=pl.when(pl.col("_line") == cut_line).then(pl.lit("truncated_line")).otherwise("reason"),
            **{
                f"_raw_{c}": pl.when(pl.col("_line") == cut_line)
                .then(pl.lit(v, pl.String))
                .otherwise(f"_raw_{c}")
                for c, v in src.last_raw.items()
            },
        )
    bad_df = bad.select("_line", "reason", *[pl.col(f"_raw_{c}").alias(c) for c in src.raw]).collect()
    days = {parse_date(k): files for k, files in parts.items() if k != QUARANTINE}
    return _Spill(days, bad_df, src.raw, n_rows, cut_line, src.extra_columns, src.missing_columns)


def ingest(
    settings: Settings,
    fmt: str,
    path: str | Path | None,
    *,
    items: str | Path | Sequence[str | Path] | None = None,
    users: str | Path | Sequence[str | Path] | None = None,
    tz: str | None = None,
    start: date | str | None = None,
    end: date | str | None = None,
    session_gap: timedelta = SESSION_GAP,
    lock_timeout: float | None = None,
) -> IngestSummary:
    """Land the events file ``path`` of format ``fmt`` (see ``FORMATS``) in ``settings.landing_dir``.

    ``items``: item file(s): ``tianchi-mobile``'s item file; RetailRocket's item properties and category
    tree (give every part in one call); the contract's item snapshots. ``users``: the contract's user
    snapshots. With ``contract`` and item / user files, ``path`` may be None.
    ``tz``: business time zone of the day folders (default: the format's, else ``settings.business_tz``).
    ``start`` / ``end``: the expected business days (inclusive); rows outside go to the quarantine.
    ``session_gap``: the inactivity that ends a derived session (taobao, retailrocket, tianchi-mobile).
    ``lock_timeout``: seconds to wait for another ingest writing into the landing zone (None: no limit).
    Raises :class:`IngestError` when nothing can be read, before anything is written.
    """
    t0 = time.perf_counter()
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {sorted(FORMATS)}")
    spec = FORMATS[fmt]
    item_paths, user_paths = _path_list(items), _path_list(users)
    start, end = _as_date(start), _as_date(end)
    if start and end and end < start:
        raise ValueError("end is before start")
    if item_paths and spec.item_files is None:
        takers = ", ".join(sorted(f.name for f in FORMATS.values() if f.item_files))
        raise ValueError(f"item files (items=) are read for {takers} only")
    if user_paths and not spec.user_files:
        raise ValueError("user files (users=) are read for contract only")
    if path is None and not (spec.user_files and (item_paths or user_paths)):
        raise ValueError(f"no events file given ({fmt})")
    if spec.sessions and not (isinstance(session_gap, timedelta) and session_gap > timedelta(0)):
        raise ValueError(f"session_gap must be a positive timedelta, not {session_gap!r}")
    zone = tz or spec.default_tz or settings.business_tz
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {zone!r}") from exc
    source = None if path is None else Path(path)
    summary = IngestSummary(fmt=fmt, source=source, tz=zone)
    for p in [*([source] if source else []), *item_paths, *user_paths]:
        if not p.is_file() or p.stat().st_size == 0:
            raise IngestError(f"{p}: no such file, or empty")
    gap = session_gap if spec.sessions else None
    quarantine_dir = settings.landing_dir / "_quarantine" / fmt
    settings.landing_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".ingest-{fmt}-", dir=settings.landing_dir))
    try:
        # ---- read everything first (in parallel with other ingests): nothing is written yet
        events = _spill_events(spec, source, work, zone, start, end) if source else None
        side = _read_side_files(spec, item_paths, user_paths, work, zone, start, end, events is not None)
        known = None  # RetailRocket: item values as of each day, by day
        if side.history is not None and events is not None:
            as_of = _as_of(events.item_days(), side.history, side.paths)
            known = {d: df.drop("ds") for (d,), df in as_of.partition_by("ds", as_dict=True).items()}

        # ---- write (one ingest at a time per landing zone)
        with _landing_lock(settings.landing_dir, lock_timeout):
            if events is not None:
                summary.rows_read = events.rows_read
                summary.extra_columns, summary.missing_columns = events.extra_columns, events.missing_columns
                qpath = quarantine_dir / f"{source.name}.parquet"
                _write_quarantine(events.bad, events.raw, source, qpath)
                summary.rows_quarantined = events.bad.height
                summary.reasons = dict(events.bad.group_by("reason").len().sort("reason").iter_rows())
                summary.quarantine_path = qpath if events.bad.height else None
            for table, checked in side.checked:
                qpath = quarantine_dir / table / f"{checked.source.name}.parquet"
                _write_quarantine(checked.bad, checked.raw, checked.source, qpath)
                if table == "items":
                    summary.items_read += checked.read
                    summary.items_used += checked.used
                    summary.items_skipped += checked.skipped
                    summary.items_quarantined += checked.bad.height
                else:
                    summary.users_read += checked.read
                    summary.users_used += checked.used
                    summary.users_quarantined += checked.bad.height
            summary.quarantine_paths = [p for p in [summary.quarantine_path] if p] + sorted(
                {quarantine_dir / t / f"{c.source.name}.parquet" for t, c in side.checked if c.bad.height}
            )
            event_days = set(events.days) if events is not None else set()
            days = sorted(event_days | set(side.dated["items"]) | set(side.dated["users"]))
            for day in days:
                _land_day(
                    settings, spec, day, events if day in event_days else None, side, known, gap, summary
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert summary.rows_read == summary.rows_landed + summary.rows_quarantined, "rows lost"
    assert summary.items_read == summary.items_used + summary.items_skipped + summary.items_quarantined
    assert summary.users_read == summary.users_used + summary.users_quarantined, "user rows lost"
    summary.seconds = time.perf_counter() - t0
    return summary


def _land_day(
    settings: Settings,
    spec: SourceFormat,
    day: date,
    events: _Spill | None,
    side: _SideFiles,
    known: dict[date, pl.DataFrame] | None,
    gap: timedelta | None,
    summary: IngestSummary,
) -> None:
    """Merge one day's events and snapshots into its folders (events last: a day whose events file is
    there is complete; files whose content would not change are not rewritten)."""
    name = f"ingest-{spec.name}.parquet"
    paths = {t: settings.landing(t, day) / name for t in ("events", "items", "users")}
    frames: dict[str, list[pl.DataFrame]] = {"items": [], "users": []}
    rows: dict[str, pl.DataFrame | None] = {}
    df = events.day(day) if events is not None else None
    if df is not None and df.height:
        if spec.id_prefix is not None:
            df = df.with_columns(event_id=_event_ids(df, spec.id_prefix, spec.name))
        rows["events"], before = _merge_events(paths["events"], df, gap)
        day_items = _items_of(df)
        if known is not None and day in known:
            day_items = _enrich(day_items, known[day])
        users = df.select(pl.col("user_id").unique())
        frames["items"] += [day_items, *side.static["items"]]
        frames["users"] += [_conform(users, USERS_SCHEMA), *side.static["users"]]
        summary.per_day[str(day)] = df.height
        summary.rows_landed += df.height
        summary.rows_new += 0 if rows["events"] is None else rows["events"].height - before
    for table, schema, key in (("items", ITEMS_SCHEMA, "item_id"), ("users", USERS_SCHEMA, "user_id")):
        frames[table] += side.dated[table].get(day, [])
        if frames[table]:
            rows[table], _ = _merge(paths[table], pl.concat(frames[table]), schema, key, [key], True)
    if not rows:
        return
    for table in ("items", "users", "events"):
        if rows.get(table) is not None:
            _write_parquet(rows[table], paths[table])
    summary.days.append(day)


# ---------------------------------------------------------------- command line


DESCRIPTION = (
    "Land public e-commerce logs in the landing zone, one folder per business day. Formats: "
    + "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values())
    + ". Files may be gzip (.gz) or zip (one file inside)."
)


def _add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--format", dest="fmt", required=True, choices=sorted(FORMATS))
    p.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="events file(s), ingested one after another (none: contract item / user files only)",
    )
    p.add_argument(
        "--items",
        action="append",
        default=None,
        metavar="FILE",
        help="item file, repeat for more: tianchi-mobile's item file (item_id,item_geohash,item_category); "
        "retailrocket's item_properties_part1.csv, item_properties_part2.csv and category_tree.csv "
        "(all in one run); contract item snapshots (ITEMS_SCHEMA, optional ds column)",
    )
    p.add_argument(
        "--users",
        action="append",
        default=None,
        metavar="FILE",
        help="contract user snapshots (USERS_SCHEMA, optional ds column), repeat for more",
    )
    p.add_argument("--tz", default=None, help="business time zone of the day folders (default: the format's)")
    p.add_argument("--start", type=parse_date, default=None, help="first expected day (YYYY-MM-DD)")
    p.add_argument("--end", type=parse_date, default=None, help="last expected day (YYYY-MM-DD)")
    p.add_argument(
        "--session-gap",
        type=float,
        default=SESSION_GAP.total_seconds() / 60,
        metavar="MINUTES",
        help="inactivity that ends a derived session (taobao, retailrocket, tianchi-mobile; default 30)",
    )
    p.add_argument(
        "--lock-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wait at most this long for another ingest into the same landing zone (default: no limit)",
    )
    p.set_defaults(func=cmd_ingest)
    return p


def add_ingest_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``ingest`` on a ``tandem`` sub-command parser (``func`` = :func:`cmd_ingest`)."""
    help_ = "land a public dataset file (or a contract CSV / Parquet) in the landing zone"
    return _add_arguments(subparsers.add_parser("ingest", help=help_, description=DESCRIPTION))


def cmd_ingest(args: argparse.Namespace) -> int:
    """Ingest each path in turn; exit status 1 when a file could not be read at all, else 0."""
    settings = load_settings()
    status = 0
    items, users = getattr(args, "items", None), getattr(args, "users", None)
    minutes = getattr(args, "session_gap", SESSION_GAP.total_seconds() / 60)
    for path in args.paths or [None]:
        try:
            summary = ingest(
                settings,
                args.fmt,
                path,
                items=items,
                users=users,
                tz=args.tz,
                start=args.start,
                end=args.end,
                session_gap=timedelta(minutes=minutes),
                lock_timeout=getattr(args, "lock_timeout", None),
            )
        except (IngestError, ValueError) as exc:
            print(f"tandem ingest: nothing read: {exc}", file=sys.stderr)
            status = 1
            continue
        print(summary.line())
        for q in summary.quarantine_paths:
            print(f"  quarantine: {q}")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = _add_arguments(
        argparse.ArgumentParser(prog="python -m mtl_model.sources.ingest", description=DESCRIPTION)
    )
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
