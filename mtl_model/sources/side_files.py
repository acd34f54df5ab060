"""The item and user files of ``tandem ingest``: RetailRocket's item properties and category tree (read
point in time: a day's snapshot never sees a later change), Tianchi's item file, and item / user
snapshots in the contract's layout, sorted into what each day's snapshot gets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from mtl_model.contract import ITEMS_SCHEMA, USERS_SCHEMA
from mtl_model.dates import parse_date
from mtl_model.sources.formats import SourceFormat, _epoch, _number
from mtl_model.sources.reading import (
    IngestError,
    _check,
    _Checked,
    _conform,
    _fields,
    _File,
    _is_parquet,
    _open_csv,
    _open_parquet,
    _prepare,
)

RETAILROCKET_PROPERTIES = {"categoryid": "category_id", "available": "in_stock", "790": "price"}
PROPERTY_COLUMNS = ("timestamp", "itemid", "property", "value")
TREE_COLUMNS = ("categoryid", "parentid")
PRICE_TEXT = r"^n-?\d+(\.\d+)?$"  # RetailRocket's property 790: n5880.000
MAX_TREE_DEPTH = 64
TRUE_TEXT = ("true", "t", "1", "yes", "y")
FALSE_TEXT = ("false", "f", "0", "no", "n")
DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f")


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
