"""Dataset adapters: land public e-commerce logs (and files in the contract's own layout) in the
landing zone of DESIGN.md, one folder per business day.

    ingest(settings, "taobao", "UserBehavior.csv", start="2017-11-25", end="2017-12-03")

Formats (``FORMATS``; ``docs/datasets.md`` says where to get each one and what maps to what):

* ``taobao``: Taobao UserBehavior (Tianchi 649), no header, ``user_id,item_id,category_id,
  behavior_type,timestamp`` (Unix seconds); days are China time (``Asia/Shanghai``) by default.
* ``retailrocket``: RetailRocket ``events.csv``, ``timestamp,visitorid,event,itemid,transactionid``
  (Unix milliseconds).
* ``rees46``: REES46 multi-category store, ``event_time,event_type,product_id,category_id,
  category_code,brand,price,user_id,user_session`` (``2019-10-01 00:00:00 UTC``).
* ``tianchi-mobile``: Tianchi mobile recommendation, ``user_id,item_id,behavior_type,user_geohash,
  item_category,time`` (``2014-12-18 20``, China time, to the hour); ``items=`` the item file
  ``item_id,item_geohash,item_category``; days are China time by default.
* ``contract``: events in the landing-zone contract (CSV with a header, or Parquet), e.g. a partner
  export or ``SimConfig(write_csv=True)``'s CSV; the event ids are kept.

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
  snapshots derived from the day's events (the last category / price / brand seen; user ids only),
  plus the whole item file for ``tianchi-mobile``;
* ``landing/_quarantine/<fmt>/<file name>.parquet``: every input row that could not be landed, with
  ``source``, ``line`` (1-based line of the file, header included; the row number for Parquet),
  ``reason`` and the row's source fields as text.

Nothing is lost: ``rows_read == rows_landed + rows_quarantined``. Reasons: ``truncated_line`` (the
file's last line has no newline and is short or broken), ``malformed_line`` (too many fields, or
empty), ``null_event_id`` (contract), ``null_user_id``, ``null_item_id``, ``null_event_time``,
``unparseable_event_time``, ``implausible_event_time`` (before 2000 or from 2100 on),
``unknown_event_type``, ``unparseable_price`` / ``unparseable_position``, ``outside_dates`` (only
when ``start`` / ``end`` are given). Price ranges, future times and duplicates of a contract file are
left to the staging rules of dbt (``stg_events_quarantine``); exact copies of an event id are merged.

A day folder that already holds this format's file (an earlier ingest) is merged: union with the new
rows, one row per event id (the smallest row, so the order of ingests does not matter), sorted and
rewritten through a temporary name; a file that already holds every new row is not rewritten.
Ingesting the same file again leaves every byte as it was.

The input is read once with a lazy, streaming polars scan (every field as text) and spilled to a
temporary Parquet file next to the landing zone; each day is then built in memory on its own, so the
memory needed is about one day of events. No per-row Python; DuckDB computes the md5 ids.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import polars as pl

from mtl_model.config import Settings, load_settings

__all__ = [
    "FORMATS",
    "EVENTS_SCHEMA",
    "ITEMS_SCHEMA",
    "USERS_SCHEMA",
    "QUARANTINE_REASONS",
    "IngestError",
    "IngestSummary",
    "SourceFormat",
    "ingest",
    "add_ingest_parser",
    "cmd_ingest",
    "main",
]

EVENTS_SCHEMA = {
    "event_id": pl.String,
    "event_time": pl.Datetime("us", "UTC"),
    "user_id": pl.String,
    "item_id": pl.String,
    "event_type": pl.String,
    "scene": pl.String,
    "query": pl.String,
    "position": pl.Int32,
    "session_id": pl.String,
    "price": pl.Float64,
    "category_id": pl.String,
}
ITEMS_SCHEMA = {
    "item_id": pl.String,
    "category_id": pl.String,
    "category_path": pl.String,
    "brand": pl.String,
    "price": pl.Float64,
    "title": pl.String,
    "in_stock": pl.Boolean,
}
USERS_SCHEMA = {"user_id": pl.String, "signup_date": pl.Date, "region": pl.String, "device": pl.String}
CONTRACT_TYPES = ("impression", "view", "click", "cart", "fav", "purchase")
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
)
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 1, "statistics": True}
QUARANTINE = "quarantine"  # spill partition of the rows to quarantine
EARLIEST_S, LATEST_S = 946_684_800, 4_102_444_800  # 2000-01-01, 2100-01-01 (UTC): plausible event times
EXTRA = "_extra"  # catches the fields of a line beyond the expected ones
SEP = "\x1f"  # joins source fields into the identity key of a row


class IngestError(Exception):
    """Nothing could be read: the file is missing, empty, or its header lacks required columns."""


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
    types = {t_: t_ for t_ in CONTRACT_TYPES}
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
        ),
        SourceFormat(
            "retailrocket",
            ("timestamp", "visitorid", "event", "itemid", "transactionid"),
            header=True,
            default_tz=None,
            id_prefix="rr",
            normalize=_norm_retailrocket,
            description="RetailRocket events.csv: Unix milliseconds",
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
            description="Tianchi mobile recommendation: 'YYYY-MM-DD HH' China time",
        ),
        SourceFormat(
            "contract",
            tuple(EVENTS_SCHEMA),
            header=True,
            default_tz=None,
            id_prefix=None,
            normalize=_norm_contract,
            optional=("scene", "query", "position", "session_id", "price", "category_id"),
            description="the landing-zone contract (CSV with header, or Parquet)",
        ),
    )
}


# ---------------------------------------------------------------- summary


@dataclass
class IngestSummary:
    fmt: str
    source: Path
    tz: str
    rows_read: int = 0
    rows_landed: int = 0  # input rows now in the landing zone (new or already there)
    rows_new: int = 0  # of those, rows the landing zone did not hold before
    rows_quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    days: list[date] = field(default_factory=list)
    per_day: dict[str, int] = field(default_factory=dict)  # ds -> input rows landed
    items_read: int = 0  # rows of a separate item file (tianchi-mobile)
    items_quarantined: int = 0
    extra_columns: list[str] = field(default_factory=list)  # in the input, not used
    missing_columns: list[str] = field(default_factory=list)  # optional columns absent (null)
    quarantine_path: Path | None = None
    seconds: float = 0.0

    @property
    def duplicates(self) -> int:
        return self.rows_landed - self.rows_new

    def line(self) -> str:
        span = f"{self.days[0]}..{self.days[-1]}" if self.days else "no day"
        why = ", ".join(f"{k} {v:,}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1]))
        text = (
            f"ingested {self.source.name} ({self.fmt}, days in {self.tz}): {self.rows_read:,} rows read, "
            f"{self.rows_landed:,} landed in {len(self.days)} day(s) {span} ({self.rows_new:,} new), "
            f"{self.rows_quarantined:,} quarantined" + (f" ({why})" if why else "")
        )
        if self.items_read:
            text += f"; item file: {self.items_read:,} rows, {self.items_quarantined:,} quarantined"
        if self.extra_columns:
            text += f"; unused columns: {', '.join(self.extra_columns)}"
        if self.missing_columns:
            text += f"; missing columns (null): {', '.join(self.missing_columns)}"
        return text + f" in {self.seconds:.1f}s"


# ---------------------------------------------------------------- reading


@dataclass
class _Input:
    lf: pl.LazyFrame  # raw text columns, "_line", and normalised contract columns
    raw: list[str]  # the source columns kept for the quarantine file
    extra_columns: list[str]
    missing_columns: list[str]
    last_raw: dict[str, str | None] | None = None  # fields of a last line without newline, by column
    short_last: bool = False  # ... which has fewer fields than the header

    @property
    def cut_last(self) -> bool:
        return self.last_raw is not None


def _tail(path: Path) -> list[str] | None:
    """The fields of the file's last line when it lacks its newline (a possibly cut line), else None."""
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(0, size - (1 << 16)))
        tail = f.read()
    if not tail or tail.endswith(b"\n"):
        return None
    last = tail[tail.rfind(b"\n") + 1 :].decode("utf-8", "replace").rstrip("\r")
    return [v.strip() for v in next(csv.reader([last]), [])]


def _read_header(path: Path) -> list[str]:
    with path.open("rb") as f:
        first = f.readline().decode("utf-8-sig", "replace").strip("\r\n")
    return [c.strip() for c in next(csv.reader([first]), [])]


def _open_csv(path: Path, spec: SourceFormat, columns: tuple[str, ...], required: tuple[str, ...]) -> _Input:
    if spec.header:
        header = _read_header(path)
        missing_req = [c for c in required if c not in header]
        if missing_req:
            raise IngestError(
                f"{path}: header {header} lacks {missing_req} (expected {list(columns)} for {spec.name})"
            )
        names = header
    else:
        names = list(columns)
    # unique names for the scan (a header may repeat a name); the first of each is used
    scan_names = [n if n not in names[:k] else f"_dup{k}_{n}" for k, n in enumerate(names)]
    schema = {n: pl.String for n in [*scan_names, EXTRA]}
    lf = pl.scan_csv(
        path,
        has_header=False,
        skip_lines=1 if spec.header else 0,
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
        _line=pl.col("_row").cast(pl.Int64) + (2 if spec.header else 1),
        **{c: pl.lit(None, pl.String) for c in missing},
    )
    blank = pl.all_horizontal(pl.col(c).is_null() for c in present)
    lf = lf.with_columns(_malformed=pl.col(EXTRA).is_not_null() | blank)
    extra_cols = [n for n in names if n not in columns]
    src = _Input(lf, present, extra_cols, missing)
    fields = _tail(path)
    if fields is not None:
        src.last_raw = {
            c: (fields[names.index(c)] or None) if names.index(c) < len(fields) else None for c in present
        }
        src.short_last = len(fields) < len(names)
    return src


def _open_parquet(
    path: Path, spec: SourceFormat, columns: tuple[str, ...], required: tuple[str, ...]
) -> _Input:
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as exc:  # not a Parquet file
        raise IngestError(f"{path}: cannot read as Parquet ({exc})") from exc
    missing_req = [c for c in required if c not in schema]
    if missing_req:
        raise IngestError(f"{path}: columns {list(schema)} lack {missing_req} ({spec.name})")
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


# ---------------------------------------------------------------- writing


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    """Write through a temporary name in the same folder, then rename (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    df.write_parquet(tmp, **PARQUET_OPTIONS)
    os.replace(tmp, path)


def _canonical(df: pl.DataFrame, key: str, order: list[str]) -> pl.DataFrame:
    """One row per ``key`` (of rows sharing a key, the smallest: independent of input order), sorted
    by ``order``."""
    dup = df.select(pl.col(key).is_duplicated()).to_series()
    if dup.any():
        same = df.filter(dup).unique()  # exact copies (a re-ingest) first: cheap
        if same.select(pl.col(key).is_duplicated().any()).item():  # then different rows with one key
            cols = [key, *[c for c in df.columns if c != key]]
            same = same.sort(cols, nulls_last=True).unique(subset=key, keep="first", maintain_order=True)
        df = pl.concat([df.filter(~dup), same])
    return df.sort(order, nulls_last=True)


def _merge(
    path: Path, new: pl.DataFrame, schema: dict, key: str, order: list[str]
) -> tuple[pl.DataFrame | None, int]:
    """``new`` merged with the file at ``path`` (if any), and how many rows the file held before.
    None instead of rows when the file already holds every new row (nothing to write)."""
    new = new.select([pl.col(c).cast(d) for c, d in schema.items()])
    if not path.exists():
        return _canonical(new, key, order), 0
    old = pl.read_parquet(path)
    old = old.select(
        [(pl.col(c) if c in old.columns else pl.lit(None)).cast(d).alias(c) for c, d in schema.items()]
    )
    fresh = new.join(old, on=list(schema), how="anti", nulls_equal=True)  # rows the file lacks
    if fresh.height == 0:
        return None, old.height
    return _canonical(pl.concat([old, fresh]), key, order), old.height


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
    return df.select(
        [(pl.col(c) if c in df.columns else pl.lit(None)).cast(d).alias(c) for c, d in ITEMS_SCHEMA.items()]
    )


_ITEM_FIELDS = (
    ("category_id", "category_id"),
    ("_category_path", "category_path"),
    ("_brand", "brand"),
    ("price", "price"),
)


def _read_items_file(path: Path, quarantine: Path) -> tuple[pl.DataFrame, int, int]:
    """Tianchi's item file (item_id, item_geohash, item_category): items, rows read, rows quarantined."""
    columns = ("item_id", "item_geohash", "item_category")
    spec = SourceFormat("tianchi-items", columns, True, None, None, _norm_contract)
    src = _open_csv(path, spec, columns, ("item_id", "item_category"))
    df = src.lf.collect()
    reason = pl.when(pl.col("_malformed")).then(pl.lit("malformed_line"))
    if src.last_raw is not None and df.height:
        cut = (pl.col("_line") == df["_line"].max()) & (pl.lit(src.short_last) | pl.col("_malformed"))
        reason = (
            pl.when(cut)
            .then(pl.lit("truncated_line"))
            .when(pl.col("_malformed"))
            .then(pl.lit("malformed_line"))
        )
    reason = (
        reason.when(pl.col("item_id").is_null())
        .then(pl.lit("null_item_id"))
        .otherwise(pl.lit(None, pl.String))
    )
    df = df.with_columns(reason=reason)
    bad = df.filter(pl.col("reason").is_not_null())
    _write_quarantine(bad, src.raw, path, quarantine)
    good = df.filter(pl.col("reason").is_null())
    items = good.select(
        [pl.col("item_id"), pl.col("item_category").alias("category_id")]
        + [pl.lit(None, d).alias(c) for c, d in ITEMS_SCHEMA.items() if c not in ("item_id", "category_id")]
    ).select(list(ITEMS_SCHEMA))
    return _canonical(items, "item_id", ["item_id"]), df.height, bad.height


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


# ---------------------------------------------------------------- ingest


def _as_date(value: date | str | None) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else value


def ingest(
    settings: Settings,
    fmt: str,
    path: str | Path,
    *,
    items: str | Path | None = None,
    tz: str | None = None,
    start: date | str | None = None,
    end: date | str | None = None,
) -> IngestSummary:
    """Land the file ``path`` of format ``fmt`` (see ``FORMATS``) in ``settings.landing_dir``.

    ``tz``: business time zone of the day folders (default: the format's, else ``settings.business_tz``).
    ``start`` / ``end``: the expected business days (inclusive); rows outside go to the quarantine.
    ``items``: the item file of ``tianchi-mobile``. Raises :class:`IngestError` when nothing can be read.
    """
    t0 = time.perf_counter()
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {sorted(FORMATS)}")
    spec = FORMATS[fmt]
    path = Path(path)
    start, end = _as_date(start), _as_date(end)
    if start and end and end < start:
        raise ValueError("end is before start")
    if items is not None and fmt != "tianchi-mobile":
        raise ValueError("an item file (items=) is read for tianchi-mobile only")
    zone = tz or spec.default_tz or settings.business_tz
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {zone!r}") from exc
    summary = IngestSummary(fmt=fmt, source=path, tz=zone)
    if not path.is_file() or path.stat().st_size == 0:
        raise IngestError(f"{path}: no such file, or empty")
    required = tuple(c for c in spec.columns if c not in spec.optional)
    parquet = fmt == "contract" and path.suffix.lower() in (".parquet", ".pq")
    src = (_open_parquet if parquet else _open_csv)(path, spec, spec.columns, required)
    summary.extra_columns, summary.missing_columns = src.extra_columns, src.missing_columns
    quarantine_dir = settings.landing_dir / "_quarantine" / fmt

    # ---- pass 1 (streaming): normalise, find the day and the reason of each row, spill to Parquet
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
    settings.landing_dir.mkdir(parents=True, exist_ok=True)
    work = settings.landing_dir / f".ingest-{fmt}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        try:  # one folder per day, and one for the rows to quarantine
            lf.select(*spill_cols, part.alias("_part")).sink_parquet(
                pl.PartitionBy(work, key="_part", include_key=False), compression="lz4", mkdir=True
            )
        except pl.exceptions.PolarsError as exc:
            raise IngestError(f"{path}: cannot read as {fmt} ({exc})") from exc
        parts = {
            d.name.split("=", 1)[1]: sorted(d.glob("*.parquet")) for d in work.iterdir() if "=" in d.name
        }
        if not parts:
            raise IngestError(f"{path}: no data rows")
        every = pl.scan_parquet([f for files in parts.values() for f in files])
        n_rows, last_line = every.select(pl.len(), pl.col("_line").max()).collect().row(0)
        summary.rows_read = n_rows
        # the last line has no newline: if it is short or broken, it was cut off
        cut_line = None
        if src.last_raw is not None:
            last = every.filter(pl.col("_line") == last_line).select("reason").collect()
            if src.short_last or last["reason"].is_not_null().any():
                cut_line = last_line

        # ---- quarantine (the source fields of a cut line come from the file's tail: they were not kept)
        bad = pl.scan_parquet(parts[QUARANTINE]) if QUARANTINE in parts else every.clear()
        if cut_line is not None:
            bad = pl.concat(
                [bad.filter(pl.col("_line") != cut_line), every.filter(pl.col("_line") == cut_line)]
            )
            bad = bad.with_columns(
                reason=pl.when(pl.col("_line") == cut_line)
                .then(pl.lit("truncated_line"))
                .otherwise("reason"),
                **{
                    f"_raw_{c}": pl.when(pl.col("_line") == cut_line)
                    .then(pl.lit(v, pl.String))
                    .otherwise(f"_raw_{c}")
                    for c, v in src.last_raw.items()
                },
            )
        bad_df = bad.select("_line", "reason", *[pl.col(f"_raw_{c}").alias(c) for c in src.raw]).collect()
        qpath = quarantine_dir / f"{path.name}.parquet"
        _write_quarantine(bad_df, src.raw, path, qpath)
        summary.rows_quarantined = bad_df.height
        summary.reasons = dict(bad_df.group_by("reason").len().sort("reason").iter_rows())
        summary.quarantine_path = qpath if bad_df.height else None

        # ---- the item file of tianchi-mobile: in every day's item snapshot
        file_items = None
        if items is not None:
            items = Path(items)
            if not items.is_file():
                raise IngestError(f"{items}: no such item file")
            file_items, summary.items_read, summary.items_quarantined = _read_items_file(
                items, quarantine_dir / f"{items.name}.parquet"
            )

        # ---- pass 2: one day at a time
        name = f"ingest-{fmt}.parquet"
        for key_ in sorted(k for k in parts if k != QUARANTINE):
            day = date.fromisoformat(key_)
            df = pl.read_parquet(parts[key_])
            if cut_line is not None:
                df = df.filter(pl.col("_line") != cut_line)
            if df.height == 0:
                continue
            if spec.id_prefix is not None:
                df = df.with_columns(event_id=_event_ids(df, spec.id_prefix, fmt))
            paths = {t: settings.landing(t, day) / name for t in ("events", "items", "users")}
            events, before = _merge(
                paths["events"], df, EVENTS_SCHEMA, "event_id", ["event_time", "event_id"]
            )
            day_items = _items_of(df)
            if file_items is not None:
                day_items = pl.concat([day_items, file_items])
            users = df.select(
                pl.col("user_id").unique(),
                *[pl.lit(None, d).alias(c) for c, d in USERS_SCHEMA.items() if c != "user_id"],
            )
            item_rows, _ = _merge(paths["items"], day_items, ITEMS_SCHEMA, "item_id", ["item_id"])
            user_rows, _ = _merge(paths["users"], users, USERS_SCHEMA, "user_id", ["user_id"])
            # events last: a day whose events file is there is complete; unchanged files are not rewritten
            for table, rows_ in (("items", item_rows), ("users", user_rows), ("events", events)):
                if rows_ is not None:
                    _write_parquet(rows_, paths[table])
            summary.days.append(day)
            summary.per_day[str(day)] = df.height
            summary.rows_landed += df.height
            summary.rows_new += 0 if events is None else events.height - before
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert summary.rows_read == summary.rows_landed + summary.rows_quarantined, "rows lost"
    summary.seconds = time.perf_counter() - t0
    return summary


# ---------------------------------------------------------------- command line


DESCRIPTION = (
    "Land public e-commerce logs in the landing zone, one folder per business day. Formats: "
    + "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values())
)


def _add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--format", dest="fmt", required=True, choices=sorted(FORMATS))
    p.add_argument("paths", nargs="+", metavar="PATH", help="input file(s), ingested one after another")
    p.add_argument(
        "--items", default=None, help="item file of tianchi-mobile (item_id,item_geohash,item_category)"
    )
    p.add_argument("--tz", default=None, help="business time zone of the day folders (default: the format's)")
    p.add_argument("--start", type=date.fromisoformat, default=None, help="first expected day (YYYY-MM-DD)")
    p.add_argument("--end", type=date.fromisoformat, default=None, help="last expected day (YYYY-MM-DD)")
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
    for path in args.paths:
        try:
            summary = ingest(
                settings, args.fmt, path, items=args.items, tz=args.tz, start=args.start, end=args.end
            )
        except (IngestError, ValueError) as exc:
            print(f"tandem ingest: nothing read: {exc}", file=sys.stderr)
            status = 1
            continue
        print(summary.line())
        if summary.quarantine_path:
            print(f"  quarantine: {summary.quarantine_path}")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = _add_arguments(
        argparse.ArgumentParser(prog="python -m mtl_model.ingest", description=DESCRIPTION)
    )
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
