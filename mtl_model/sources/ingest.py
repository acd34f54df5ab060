"""``tandem ingest``: land public e-commerce logs (and files in the contract's own layout) in the landing
zone, one folder per business day. :func:`ingest` reads and checks every input, then writes under the
landing-zone lock; ``add_ingest_parser`` / ``main`` are its command line. What is landed, and how each
format maps onto the contract: docs/datasets.md."""

from __future__ import annotations

import argparse
import codecs
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from mtl_model.config import Settings, load_settings
from mtl_model.contract import ITEMS_SCHEMA, USERS_SCHEMA
from mtl_model.dates import parse_date
from mtl_model.landing_check import check_landing
from mtl_model.sources.formats import FORMATS, SourceFormat

# the write phase calls _landing_lock and _merge_events through this module (the lock test replaces them)
from mtl_model.sources.landing import (
    LOCK_NAME,
    SESSION_GAP,
    _event_ids,
    _items_of,
    _landing_lock,
    _merge,
    _merge_events,
    _write_parquet,
    _write_quarantine,
)
from mtl_model.sources.reading import ENCODING, QUARANTINE_REASONS, IngestError, _conform
from mtl_model.sources.side_files import _as_of, _enrich, _read_side_files, _SideFiles
from mtl_model.sources.spill import _Spill, _spill_events

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


@dataclass
class IngestSummary:
    """What one :func:`ingest` call read, landed and quarantined (``line()``: one line for the shell)."""

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


# ---------------------------------------------------------------- ingest


def _as_date(value: date | str | None) -> date | None:
    return None if value is None else parse_date(value)


def _path_list(value: str | Path | Sequence[str | Path] | None) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, str | os.PathLike):
        return [Path(value)]
    return [Path(v) for v in value]


@dataclass(frozen=True)
class _Request:
    """The checked arguments of one :func:`ingest` call."""

    spec: SourceFormat
    source: Path | None  # the events file (None: item / user files only)
    item_paths: list[Path]
    user_paths: list[Path]
    zone: str  # business time zone of the day folders
    start: date | None
    end: date | None
    gap: timedelta | None  # inactivity that ends a derived session; None: the source has sessions


def _request(
    settings: Settings,
    fmt: str,
    path: str | Path | None,
    items: str | Path | Sequence[str | Path] | None,
    users: str | Path | Sequence[str | Path] | None,
    tz: str | None,
    start: date | str | None,
    end: date | str | None,
    session_gap: timedelta,
) -> _Request:
    """The arguments of :func:`ingest`, checked (ValueError), and its files, found (IngestError)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {sorted(FORMATS)}")
    spec = FORMATS[fmt]
    item_paths, user_paths = _path_list(items), _path_list(users)
    first, last = _as_date(start), _as_date(end)
    if first and last and last < first:
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
    for p in [*([source] if source else []), *item_paths, *user_paths]:
        if not p.is_file() or p.stat().st_size == 0:
            raise IngestError(f"{p}: no such file, or empty")
    gap = session_gap if spec.sessions else None
    return _Request(spec, source, item_paths, user_paths, zone, first, last, gap)


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
    encoding: str | None = None,
) -> IngestSummary:
    """Land the events file ``path`` of format ``fmt`` (see ``FORMATS``) in ``settings.landing_dir``.

    ``items``: item file(s): ``tianchi-mobile``'s item file; RetailRocket's item properties and category
    tree (give every part in one call); the contract's item snapshots. ``users``: the contract's user
    snapshots. With ``contract`` and item / user files, ``path`` may be None.
    ``tz``: business time zone of the day folders (default: the format's, else ``settings.business_tz``).
    ``start`` / ``end``: the expected business days (inclusive); rows outside go to the quarantine.
    ``session_gap``: the inactivity that ends a derived session (taobao, retailrocket, tianchi-mobile).
    ``lock_timeout``: seconds to wait for another ingest writing into the landing zone (None: no limit).
    ``encoding``: the text encoding of CSV inputs (e.g. ``latin-1``; None: UTF-8, a line that is not
    valid UTF-8 is quarantined as ``invalid_encoding`` with its raw bytes).
    The files written are checked by the landing check (:mod:`mtl_model.landing_check`) at once.
    Raises :class:`IngestError` when nothing can be read, before anything is written.
    """
    t0 = time.perf_counter()
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
    req = _request(settings, fmt, path, items, users, tz, start, end, session_gap)
    summary = IngestSummary(fmt=fmt, source=req.source, tz=req.zone)
    settings.landing_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".ingest-{fmt}-", dir=settings.landing_dir))
    try:
        token = ENCODING.set(encoding)
        try:
            events, side, known = _read_inputs(req, work)  # in parallel with other ingests: nothing written
        finally:
            ENCODING.reset(token)
        with _landing_lock(settings.landing_dir, lock_timeout):  # one ingest at a time per landing zone
            _write_quarantines(settings, req, events, side, summary)
            event_days = set(events.days) if events is not None else set()
            for day in sorted(event_days | set(side.dated["items"]) | set(side.dated["users"])):
                day_events = events if day in event_days else None
                _land_day(settings, req.spec, day, day_events, side, known, req.gap, summary)
            checked = check_landing(settings, days=summary.days)  # the files just landed, and their days'
            summary.quarantine_paths += [settings.landing_dir / r.quarantined_as for r in checked.rejected]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _check_counts(summary)
    summary.seconds = time.perf_counter() - t0
    return summary


def _read_inputs(
    req: _Request, work: Path
) -> tuple[_Spill | None, _SideFiles, dict[date, pl.DataFrame] | None]:
    """Read and check every input file (the events spilled per day into ``work``), and for RetailRocket
    the item values as of each day, by day."""
    events = None
    if req.source is not None:
        events = _spill_events(req.spec, req.source, work, req.zone, req.start, req.end)
    side = _read_side_files(
        req.spec, req.item_paths, req.user_paths, work, req.zone, req.start, req.end, events is not None
    )
    known = None
    if side.history is not None and events is not None:
        as_of = _as_of(events.item_days(), side.history, side.paths)
        known = {d: df.drop("ds") for (d,), df in as_of.partition_by("ds", as_dict=True).items()}
    return events, side, known


def _write_quarantines(
    settings: Settings, req: _Request, events: _Spill | None, side: _SideFiles, summary: IngestSummary
) -> None:
    """Write (or remove, when empty) the quarantine file of each input file, and count its rows."""
    quarantine_dir = settings.landing_dir / "_quarantine" / req.spec.name
    if events is not None and req.source is not None:
        summary.rows_read = events.rows_read
        summary.extra_columns, summary.missing_columns = events.extra_columns, events.missing_columns
        qpath = quarantine_dir / f"{req.source.name}.parquet"
        _write_quarantine(events.bad, events.raw, req.source, qpath)
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


def _check_counts(s: IngestSummary) -> None:
    """Every row read was landed, skipped or quarantined (RuntimeError: a bug of ingest, not of the file)."""
    if s.rows_read != s.rows_landed + s.rows_quarantined:
        raise RuntimeError(
            f"rows lost: {s.rows_read} read, {s.rows_landed} landed, {s.rows_quarantined} quarantined"
        )
    if s.items_read != s.items_used + s.items_skipped + s.items_quarantined:
        raise RuntimeError(
            f"item rows lost: {s.items_read} read, {s.items_used} used, {s.items_skipped} skipped, "
            f"{s.items_quarantined} quarantined"
        )
    if s.users_read != s.users_used + s.users_quarantined:
        raise RuntimeError(
            f"user rows lost: {s.users_read} read, {s.users_used} used, {s.users_quarantined} quarantined"
        )


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
    p.add_argument(
        "--encoding",
        default=None,
        help="text encoding of CSV files (e.g. latin-1, cp1252; default UTF-8: a line that is not valid "
        "UTF-8 is quarantined as invalid_encoding, its raw bytes kept)",
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
                encoding=getattr(args, "encoding", None),
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
