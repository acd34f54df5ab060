"""Writing the landing zone for ``tandem ingest``: a day's rows merged with what its folder already holds
(one row per id, independent of the order of ingests), derived sessions and event ids, the item
snapshot of a day's events, the quarantine files, and the lock that serialises ingests' writes."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import polars as pl

from mtl_model.contract import EVENTS_SCHEMA, ITEMS_SCHEMA
from mtl_model.duck import connect
from mtl_model.files import write_parquet_atomic
from mtl_model.sources.formats import SEP
from mtl_model.sources.reading import RAW_LINE_REASONS, IngestError, _conform, _is_parquet, raw_lines

try:  # POSIX: the landing-zone lock
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]

SESSION_GAP = timedelta(minutes=30)  # default inactivity gap that ends a derived session
LOCK_NAME = ".tandem-ingest.lock"  # in the landing zone; held while an ingest writes there
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 1, "statistics": True}
EVENT_ORDER = ["event_time", "event_id"]


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
    con = connect()
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
    _write_parquet(out.with_columns(raw_line=_raw_line_column(out, source)), path)


def _raw_line_column(out: pl.DataFrame, source: Path) -> pl.Series:
    """The raw bytes of each quarantined CSV line that text columns cannot hold faithfully (invalid
    encoding, extra fields, a cut line); null for the others and for Parquet inputs."""
    wanted = out.filter(pl.col("reason").is_in(RAW_LINE_REASONS))["line"].to_list()
    found = raw_lines(source, wanted) if wanted and not _is_parquet(source) else {}
    return pl.Series("raw_line", [found.get(line) for line in out["line"]], dtype=pl.Binary)


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
