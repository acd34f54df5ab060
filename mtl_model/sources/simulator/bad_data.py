"""Bad data for the reliability tests: damaged, duplicated, late rows and bad files (all off by default).

What was injected into day D's landing folder is listed in ``truth/bad_rows/ds=D``. Each switch draws
from its own stream (``[seed, 2, D.toordinal(), k]``), so the rows it touches do not depend on the others.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl

from mtl_model.sources.simulator.config import SimConfig
from mtl_model.sources.simulator.day import DAY_US, SIMULATED_EVENT_TYPES, US, Day, count_types, day_bounds_us

__all__ = ["inject_bad_data", "BAD_ROW_KINDS", "BAD_ROWS_SCHEMA"]

BAD_ROW_KINDS = (
    "duplicate",
    "null_event_id",
    "null_user_id",
    "null_item_id",
    "null_event_time",
    "unknown_event_type",
    "price_out_of_range",
    "future_event_time",
    "late_event",
    "added_column",
    "missing_column",
    "empty_day",
    "truncated_line",
)
BAD_ROWS_SCHEMA = {"event_id": pl.String, "kind": pl.String, "row": pl.Int64, "detail": pl.String}
# per-row kinds in order of precedence, with the rate that switches each on
ROW_KINDS = (
    ("null_key", "null_key_rate"),
    ("unknown_event_type", "unknown_type_rate"),
    ("price_out_of_range", "bad_price_rate"),
    ("future_event_time", "future_time_rate"),
)
NULL_KEY, UNKNOWN_TYPE, BAD_PRICE, FUTURE, LATE = range(5)  # codes of the per-row kinds (LATE last)
NULL_KEYS = ("event_id", "user_id", "item_id", "event_time")
# the truth's kind of each code: a null key names its column
ROW_KIND_NAMES = (*(f"null_{c}" for c in NULL_KEYS), *(k for k, _ in ROW_KINDS[1:]), "late_event")
UNKNOWN_TYPES = ("hover", "share", "add_to_wishlist", "impresion", "page_view_v2")
DRIFT_ADDED = "app_version"
DRIFT_DROPPABLE = ("category_id", "session_id", "query", "position", "price")


def inject_bad_data(cfg: SimConfig, day: date, tz: str, out: Day) -> None:
    """Damage the day's events in place of ``out`` and list what was done in ``out.bad_rows``."""
    if cfg.empty_day_rate > 0 and _stream(cfg, day, 0).random() < cfg.empty_day_rate:
        out.events, out.exposures = out.events.clear(), out.exposures.clear()
        out.counts = np.zeros(len(SIMULATED_EVENT_TYPES), np.int64)
        out.bad_rows = _day_level("empty_day")
        return
    ev = out.events
    ids = ev["event_id"]
    kind, extra = _row_kinds(cfg, day, ev)
    which = extra["null_key"] % len(NULL_KEYS) if "null_key" in extra else np.zeros(ev.height, np.int64)
    ev = _damage_rows(cfg, day, tz, ev, kind, extra, which)
    ev, dup, first_row = _duplicate(cfg, day, ev, kind)
    code = np.where(kind == NULL_KEY, which, kind.astype(np.int64) + len(NULL_KEYS) - 1)
    touched, copies = np.flatnonzero(kind >= 0), np.flatnonzero(dup)
    parts = [
        _bad_rows(ids.gather(touched), pl.Series(ROW_KIND_NAMES).gather(code[touched]), first_row[touched]),
        _bad_rows(ids.gather(copies), pl.Series(["duplicate"] * copies.size), first_row[copies] + 1),
    ]
    ev = _schema_drift(cfg, day, ev, parts)
    _truncate_csv(cfg, day, out, ev, ids.gather(np.flatnonzero(first_row + dup == ev.height - 1)), parts)
    out.events = ev
    out.counts = count_types(ev)
    out.bad_rows = pl.concat(parts).sort("row", "kind", nulls_last=False)


def _stream(cfg: SimConfig, day: date, k: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, 2, day.toordinal(), k])


def _bad_rows(
    ids: pl.Series, kinds: pl.Series, rows: np.ndarray | None, detail: str | None = None
) -> pl.DataFrame:
    """Rows of ``truth/bad_rows`` (:data:`BAD_ROWS_SCHEMA`)."""
    n = ids.len()
    return pl.DataFrame(
        {
            "event_id": ids.cast(pl.String),
            "kind": kinds.cast(pl.String),
            "row": pl.Series(rows if rows is not None else [None] * n, dtype=pl.Int64),
            "detail": pl.Series([detail] * n, dtype=pl.String),
        }
    )


def _day_level(kind: str, detail: str | None = None) -> pl.DataFrame:
    """The truth row of a per-day kind (no event id, no row)."""
    return _bad_rows(pl.Series([None], dtype=pl.String), pl.Series([kind]), None, detail)


def _row_kinds(cfg: SimConfig, day: date, ev: pl.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The in-place kind of each row (an index into ROW_KINDS, LATE, or -1) and each switched-on
    kind's own draws (one per row)."""
    n = ev.height
    kind = np.full(n, -1, np.int8)
    extra: dict[str, np.ndarray] = {}
    for k, (name, rate_name) in enumerate(ROW_KINDS):
        rate = getattr(cfg, rate_name)
        if rate > 0:
            g = _stream(cfg, day, k + 1)
            kind[(g.random(n) < rate) & (kind < 0)] = k
            extra[name] = g.integers(0, 1 << 30, n)
    if cfg.late_rate > 0 and n:
        codes = ev["session_id"].rle_id().to_numpy()  # a session's rows are contiguous
        late_session = _stream(cfg, day, 5).random(int(codes.max()) + 1) < cfg.late_rate
        kind[late_session[codes] & (kind < 0)] = LATE
    return kind, extra


def _damage_rows(
    cfg: SimConfig,
    day: date,
    tz: str,
    ev: pl.DataFrame,
    kind: np.ndarray,
    extra: dict[str, np.ndarray],
    which: np.ndarray,
) -> pl.DataFrame:
    """The in-place damage: times first (from the clean column), then prices, types and null keys."""
    t = ev["event_time"].dt.epoch("us").to_numpy().copy()
    if "future_event_time" in extra:
        hit = kind == FUTURE
        shift = 2 * DAY_US + extra["future_event_time"] % (28 * DAY_US // US) * US
        t[hit] += shift[hit]
    if cfg.late_rate > 0:
        hit = kind == LATE
        day0_us, _ = day_bounds_us(day, tz)
        prev0, prev_len = day_bounds_us(day - timedelta(days=1), tz)
        t[hit] = prev0 + np.minimum(t[hit] - day0_us, prev_len - 1)
    cols: list[pl.Series | pl.Expr] = [pl.Series("event_time", t).cast(pl.Datetime("us", "UTC"))]
    if "price_out_of_range" in extra:
        hit = kind == BAD_PRICE
        price = ev["price"].to_numpy()
        absurd = np.where(extra["price_out_of_range"] % 2 == 0, -price - 1.0, price * 1e6 + 2e7)
        cols.append(pl.Series("price", np.where(hit, absurd, price)))
    if "unknown_event_type" in extra:
        hit = pl.Series(kind == UNKNOWN_TYPE)
        bogus = pl.Series(UNKNOWN_TYPES).gather(extra["unknown_event_type"] % len(UNKNOWN_TYPES))
        cols.append(pl.when(hit).then(bogus).otherwise(pl.col("event_type")).alias("event_type"))
    ev = ev.with_columns(cols)
    if "null_key" in extra:
        nulled = kind == NULL_KEY
        ev = ev.with_columns(
            pl.when(pl.Series(nulled & (which == k))).then(None).otherwise(pl.col(c)).alias(c)
            for k, c in enumerate(NULL_KEYS)
        )
    return ev


def _duplicate(
    cfg: SimConfig, day: date, ev: pl.DataFrame, kind: np.ndarray
) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """Exact copies of untouched rows, right after the original; returns the events, which rows were
    copied and the row of each original in the written file."""
    n = kind.size
    dup = np.zeros(n, bool)
    if cfg.duplicate_rate > 0:
        dup = (_stream(cfg, day, 6).random(n) < cfg.duplicate_rate) & (kind < 0)
    width = 1 + dup.astype(np.int64)
    first_row = np.cumsum(width) - width
    if dup.any():
        ev = ev[np.repeat(np.arange(n), width)]
    return ev, dup, first_row


def _schema_drift(cfg: SimConfig, day: date, ev: pl.DataFrame, parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Per day: the file gains ``app_version`` or loses one nullable column; truth appended to ``parts``."""
    g = _stream(cfg, day, 7)
    if not (cfg.schema_drift_rate > 0 and g.random() < cfg.schema_drift_rate):
        return ev
    if g.random() < 0.5:
        versions = pl.Series(["5.2.0", "5.3.1", "6.0.0"]).gather(g.integers(0, 3, ev.height))
        parts.append(_day_level("added_column", DRIFT_ADDED))
        return ev.with_columns(versions.alias(DRIFT_ADDED))
    gone = DRIFT_DROPPABLE[int(g.integers(0, len(DRIFT_DROPPABLE)))]
    parts.append(_day_level("missing_column", gone))
    return ev.drop(gone)


def _truncate_csv(
    cfg: SimConfig, day: date, out: Day, ev: pl.DataFrame, last_id: pl.Series, parts: list[pl.DataFrame]
) -> None:
    """Per day: cut the CSV copy's last line (``out.csv_cut``); ``last_id``: the id of the last row."""
    g = _stream(cfg, day, 8)
    if cfg.truncated_csv_rate > 0 and g.random() < cfg.truncated_csv_rate and ev.height:
        out.csv_cut = float(g.uniform(0.2, 0.6))
        parts.append(_bad_rows(last_id, pl.Series(["truncated_line"]), np.array([ev.height - 1]), "csv"))
