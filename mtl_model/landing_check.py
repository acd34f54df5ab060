"""The landing check: every landed file is checked once, against the contract, before a night reads it.

A file in ``landing/<table>/`` is accepted when its folder is a valid ``ds=YYYY-MM-DD``, its footer
and pages read, every required column is there and every contract column it has is of the
contract's type (``mtl_model.contract.LANDING_SCHEMAS``; a nullable column may be missing, extra
columns are ignored). A file that fails is moved aside, to
``landing/_quarantine/files/<table>/<folder>/<name>`` next to ``<name>.reason.json`` (its path, the
reason, the column, a message that names both, its rows when the footer is readable), and stops
nothing else: the night builds from the files left in the day folders. Accepted files are listed in
``landing/_checked/<table>/ds=D.json`` (name, size, modification time, rows), so a file is read once,
not every night; one that changes (a merge by ``tandem ingest``, a rerun of the simulator) is checked
again.

``tandem ingest`` and ``tandem simulate`` check the days they wrote; the night checks the whole
landing zone first (:func:`mtl_model.pipeline.nightly.check_landing`), which finds a file that
another system dropped in. Writers other than Tandem must land a file atomically (a hidden or
``_``-prefixed temporary name, then a rename): names starting with ``.`` or ``_`` are never read.
See docs/data.md, "Landing check".
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mtl_model.config import Settings
from mtl_model.contract import LANDING_SCHEMAS
from mtl_model.dates import parse_date
from mtl_model.files import write_text_atomic

try:  # POSIX: one checker at a time per landing zone
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]

TABLES: tuple[str, ...] = tuple(LANDING_SCHEMAS)
# columns a landed file must have (the others of the contract are nullable and may be missing)
REQUIRED: dict[str, tuple[str, ...]] = {
    "events": ("event_id", "event_time", "user_id", "item_id", "event_type"),
    "items": ("item_id",),
    "users": ("user_id",),
}
REASONS = (
    "unreadable",  # no Parquet footer (empty, truncated, not Parquet) or a page that cannot be decoded
    "missing_column",  # a required column is absent
    "wrong_type",  # a contract column of another type (e.g. price as text, event_time as a string)
    "out_of_range",  # an integer column wider than the contract's whose values do not fit
    "invalid_folder",  # the folder is not ds=YYYY-MM-DD (e.g. ds=2026-03-09.bak)
    "not_in_a_day_folder",  # a file directly under landing/<table>/
    "not_parquet",  # a file in a day folder whose name does not end in .parquet
)
CHECKED_DIR = "_checked"
QUARANTINE_DIR = ("_quarantine", "files")
LOCK_NAME = ".lock"
BATCH_ROWS = 65536


@dataclass(frozen=True)
class Rejected:
    """A landed file moved to the quarantine, and why."""

    file: str  # where it landed, relative to the landing zone (events/ds=2026-03-09/part-1.parquet)
    table: str
    ds: str | None  # the day of its folder (None when the folder is not a valid day)
    reason: str  # one of REASONS
    column: str | None
    message: str  # names the file and the column
    rows: int | None  # from the footer, when it could be read
    quarantined_as: str  # relative to the landing zone


@dataclass
class LandingCheck:
    """What one :func:`check_landing` call found: files read for the first time, accepted, rejected."""

    checked: int = 0
    accepted: int = 0
    rejected: list[Rejected] = field(default_factory=list)

    def line(self) -> str:
        text = f"landing check: {self.checked} new file(s), {self.accepted} accepted"
        return text + "".join(f"; quarantined {r.message}" for r in self.rejected)

    def as_dict(self) -> dict:
        return {
            "checked": self.checked,
            "accepted": self.accepted,
            "rejected": [asdict(r) for r in self.rejected],
        }


# ---------------------------------------------------------------- one file


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _base_type(dtype: pa.DataType) -> pa.DataType:
    return dtype.value_type if pa.types.is_dictionary(dtype) else dtype


def _type_fits(want: pl.DataType, got: pa.DataType) -> str:
    """``ok``, ``range`` (an integer wider than the contract's: its values decide) or ``no``."""
    got = _base_type(got)
    if isinstance(want, pl.String):
        ok = pa.types.is_string(got) or pa.types.is_large_string(got) or pa.types.is_null(got)
        return "ok" if ok or pa.types.is_string_view(got) else "no"
    if isinstance(want, pl.Datetime):
        return "ok" if pa.types.is_timestamp(got) else "no"
    if isinstance(want, pl.Date):
        return "ok" if pa.types.is_date(got) or pa.types.is_timestamp(got) else "no"
    if isinstance(want, pl.Boolean):
        return "ok" if pa.types.is_boolean(got) else "no"
    if isinstance(want, pl.Float64):
        numeric = pa.types.is_floating(got) or pa.types.is_integer(got) or pa.types.is_decimal(got)
        return "ok" if numeric else "no"
    if isinstance(want, pl.Int32):
        if got in (pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16()):
            return "ok"
        return "range" if pa.types.is_integer(got) else "no"
    raise TypeError(f"the landing check knows no contract type {want}")  # a new type in the contract


_TYPE_NAMES = {
    pl.String: "string",
    pl.Datetime: "a timestamp (UTC)",
    pl.Date: "a date",
    pl.Boolean: "bool",
    pl.Float64: "a number (double)",
    pl.Int32: "int32",
}


def _problem(path: Path, rel: str, table: str) -> tuple[str, str | None, str, int | None] | None:
    """(reason, column, message, rows) of a file that breaks the contract, or None. The whole file is
    decoded (its contract columns), so a damaged page is found here, not by the night."""
    schema = LANDING_SCHEMAS[table]
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a broken file
        return "unreadable", None, f"{rel}: not a readable Parquet file ({exc})", None
    rows = pf.metadata.num_rows
    arrow = pf.schema_arrow
    for column in REQUIRED[table]:
        if column not in arrow.names:
            return "missing_column", column, f"{rel}: required column {column!r} is missing", rows
    widened: list[str] = []
    for column, want in schema.items():
        if column not in arrow.names:
            continue
        got = arrow.field(column).type
        fit = _type_fits(want, got)
        if fit == "no":
            message = (
                f"{rel}: column {column!r} is {got}, the contract's {column} is {_TYPE_NAMES[type(want)]}"
            )
            return "wrong_type", column, message, rows
        if fit == "range":
            widened.append(column)
    present = [c for c in schema if c in arrow.names]
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=present):
            for column in widened:
                bounds = pc.min_max(batch.column(column))
                low, high = bounds["min"].as_py(), bounds["max"].as_py()
                if low is not None and (low < -(2**31) or high >= 2**31):
                    message = f"{rel}: column {column!r} holds {low}..{high}, beyond the contract's int32"
                    return "out_of_range", column, message, rows
    except Exception as exc:  # noqa: BLE001
        return "unreadable", None, f"{rel}: a page cannot be read ({exc})", rows
    return None


# ---------------------------------------------------------------- the landing zone


def _quarantine(settings: Settings, path: Path, record: dict) -> str:
    """Move ``path`` to the file quarantine, its reason beside it; the quarantined path (relative)."""
    landing = settings.landing_dir
    dest = landing.joinpath(*QUARANTINE_DIR) / path.relative_to(landing)
    n = 0
    while dest.exists() or dest.with_name(dest.name + ".reason.json").exists():
        n += 1
        dest = dest.with_name(f"{path.stem}.{n}{path.suffix}")
    record["quarantined_as"] = str(dest.relative_to(landing))
    record["quarantined_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_text_atomic(
        dest.with_name(dest.name + ".reason.json"), json.dumps(record, indent=1, sort_keys=True)
    )
    shutil.move(path, dest)  # after the reason: a crash in between leaves the file to check again
    return record["quarantined_as"]


def _reject(
    settings: Settings,
    path: Path,
    table: str,
    ds: str | None,
    problem: tuple[str, str | None, str, int | None],
) -> Rejected:
    reason, column, message, rows = problem
    record = {"file": str(path.relative_to(settings.landing_dir)), "table": table, "ds": ds}
    record |= {"reason": reason, "column": column, "message": message, "rows": rows}
    record["size"] = path.stat().st_size
    moved = _quarantine(settings, path, dict(record))
    return Rejected(**_fields(record, moved))


def _fields(record: dict, moved: str) -> dict:
    keep = ("file", "table", "ds", "reason", "column", "message", "rows")
    return {k: record[k] for k in keep} | {"quarantined_as": moved}


def _manifest_path(settings: Settings, table: str, ds: str) -> Path:
    return settings.landing_dir / CHECKED_DIR / table / f"ds={ds}.json"


def _read_manifest(path: Path) -> dict[str, dict]:
    """name -> {size, mtime_ns, rows} of a day's accepted files (empty when none were recorded)."""
    try:
        files = json.loads(path.read_text())["files"]
    except (FileNotFoundError, ValueError, KeyError):
        return {}
    return {f["name"]: {k: v for k, v in f.items() if k != "name"} for f in files}


def _write_manifest(path: Path, table: str, ds: str, files: dict[str, dict]) -> None:
    """The day's record, one entry per accepted file (dbt reads its rows: checked_rows_per_day)."""
    if not files:
        path.unlink(missing_ok=True)
        return
    entries = [{"name": name, **files[name]} for name in sorted(files)]
    write_text_atomic(
        path, json.dumps({"table": table, "ds": ds, "files": entries}, indent=1, sort_keys=True)
    )


def _check_day(settings: Settings, table: str, folder: Path, out: LandingCheck) -> None:
    """Check the files of one valid day folder that are new or changed since their last check."""
    ds = folder.name.removeprefix("ds=")
    manifest_path = _manifest_path(settings, table, ds)
    seen = _read_manifest(manifest_path)
    files: dict[str, dict] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if _hidden(entry.name):
            continue
        path = Path(entry.path)
        rel = str(path.relative_to(settings.landing_dir))
        if entry.is_dir():
            continue  # a nested folder is never read (dbt reads ds=D/*.parquet)
        if not entry.name.lower().endswith(".parquet"):
            message = f"{rel}: not a Parquet file name (*.parquet); it would never be read"
            out.rejected.append(_reject(settings, path, table, ds, ("not_parquet", None, message, None)))
            continue
        stat = entry.stat()
        key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        old = seen.get(entry.name)
        if old is not None and {k: old.get(k) for k in key} == key:
            files[entry.name] = old
            continue
        out.checked += 1
        problem = _problem(path, rel, table)
        if problem is not None:
            out.rejected.append(_reject(settings, path, table, ds, problem))
            continue
        out.accepted += 1
        files[entry.name] = key | {"rows": pq.ParquetFile(path).metadata.num_rows}
        if table == "events":
            files[entry.name]["event_types"] = _event_type_counts(path)
    if files != seen:
        _write_manifest(manifest_path, table, ds, files)


def _event_type_counts(path: Path) -> dict[str, int]:
    """Rows per event type of an accepted events file (lower-cased, as staging reads them)."""
    column = pq.read_table(path, columns=["event_type"]).column("event_type")
    counts = pc.value_counts(pc.utf8_lower(column.cast(pa.string())))
    return {str(v["values"]): int(v["counts"]) for v in counts.to_pylist() if v["values"] is not None}


def landed_event_types(settings: Settings, days: Iterable[date]) -> dict[str, int] | None:
    """Rows per event type in the accepted events files of ``days``, from the landing check's
    records; None when a day has a file the check has not counted (not checked yet, or checked
    before the counts were recorded), since then the counts would say too little."""
    total: dict[str, int] = {}
    for day in days:
        folder = settings.landing("events", day)
        names = {p.name for p in folder.glob("*.parquet") if not _hidden(p.name)}
        recorded = _read_manifest(_manifest_path(settings, "events", day.isoformat()))
        if names - set(recorded) or any("event_types" not in recorded[n] for n in names):
            return None
        for name in names:
            for event_type, n in recorded[name]["event_types"].items():
                total[event_type] = total.get(event_type, 0) + n
    return total


def _valid_day(name: str) -> bool:
    if not name.startswith("ds="):
        return False
    try:
        parse_date(name.removeprefix("ds="))
    except ValueError:
        return False
    return True


def _reject_folder(settings: Settings, table: str, folder: Path, out: LandingCheck) -> None:
    """Every file under a folder that is not a day: quarantined as ``invalid_folder``."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = str(path.relative_to(settings.landing_dir))
        message = f"{rel}: folder {folder.name!r} is not a day (ds=YYYY-MM-DD); its files are never read"
        out.rejected.append(_reject(settings, path, table, None, ("invalid_folder", None, message, None)))
    with contextlib.suppress(OSError):
        shutil.rmtree(folder)  # only empty folders are left by now


def _scan_table(settings: Settings, table: str, days: set[str] | None, out: LandingCheck) -> None:
    root = settings.landing_dir / table
    if not root.is_dir():
        return
    if days is not None:
        for ds in sorted(days):
            if (root / f"ds={ds}").is_dir():
                _check_day(settings, table, root / f"ds={ds}", out)
        return
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        path = Path(entry.path)
        if _hidden(entry.name):
            continue
        if entry.is_dir():
            if _valid_day(entry.name):
                _check_day(settings, table, path, out)
            else:
                _reject_folder(settings, table, path, out)
        else:
            rel = str(path.relative_to(settings.landing_dir))
            message = f"{rel}: not in a day folder (landing/{table}/ds=YYYY-MM-DD/); it would never be read"
            out.rejected.append(
                _reject(settings, path, table, None, ("not_in_a_day_folder", None, message, None))
            )


@contextlib.contextmanager
def _checker_lock(settings: Settings) -> Iterator[None]:
    """One checker at a time per landing zone (ingest, the simulator, the night); the lock goes with
    the process, even a killed one."""
    folder = settings.landing_dir / CHECKED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover (Windows)
        yield
        return
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def check_landing(
    settings: Settings, days: Iterable[date | str] | None = None, tables: Iterable[str] = TABLES
) -> LandingCheck:
    """Check the files of ``days`` (every day folder, and every stray folder or file, when None) of
    each table that were not checked before; move the bad ones to the quarantine."""
    wanted = None if days is None else {str(parse_date(d)) for d in days}
    out = LandingCheck()
    if not settings.landing_dir.is_dir():
        return out
    with _checker_lock(settings):
        for table in tables:
            if table not in LANDING_SCHEMAS:
                raise ValueError(f"unknown landing table {table!r}; one of {', '.join(TABLES)}")
            _scan_table(settings, table, wanted, out)
    return out


def quarantined_files(settings: Settings, ds: date | str | None = None) -> list[dict]:
    """The reason records of the quarantined files (of day ``ds`` only when given), oldest first."""
    root = settings.landing_dir.joinpath(*QUARANTINE_DIR)
    records = [json.loads(p.read_text()) for p in root.rglob("*.reason.json")] if root.is_dir() else []
    if ds is not None:
        records = [r for r in records if r.get("ds") == str(ds)]
    return sorted(records, key=lambda r: (r.get("quarantined_at", ""), r["file"]))
