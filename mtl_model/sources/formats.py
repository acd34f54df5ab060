"""The source formats of ``tandem ingest``: how each public log's columns map onto the events contract
(``FORMATS``), and the time, type and number parsers the normalisers share. docs/datasets.md
describes each format."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from mtl_model.contract import EVENT_TYPES, EVENTS_SCHEMA

EARLIEST_S, LATEST_S = 946_684_800, 4_102_444_800  # 2000-01-01, 2100-01-01 (UTC): plausible event times
SEP = "\x1f"  # joins source fields into the identity key of a row (derived event ids)


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
    """Contract event types from source text (matched in lower case); null for any other value."""
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
    sessions: bool = False  # the source has no sessions: derive them (landing.SESSION_GAP)
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
