"""Checks `tandem run` / `tandem backfill` make before Airflow starts (well under 2 s, no Airflow, no
DuckDB): the days have ended in the business time zone, every folder the night writes can be written,
and the landing zone holds what each night reads. A refusal is :class:`Refused`, one line that says
what is wrong and what to do; the CLI prints it and exits 2 (bad usage).

The settings themselves are checked when they load (:func:`mtl_model.config.load_settings`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

from mtl_model.config import ENV_PREFIX, PATH_DEFAULTS, Settings
from mtl_model.dates import days_between, parse_date, resolve_run_date

# the folders a night writes (warehouse_path is a file: its folder), by setting name
WRITTEN = ("home", "airflow_home", "warehouse_path", "exports_dir", "models_dir", "outputs_dir")
WRITTEN += ("published_dir", "reports_dir")
LANDED_TABLES = ("events", "items", "users")  # what ingest and simulate land for every day


class Refused(ValueError):
    """A night that cannot start; the message is one line."""


def check_nights(settings: Settings, days: Iterable[date]) -> None:
    """Refuse (:class:`Refused`) unless every day in ``days`` can run: ended, writable, landed."""
    days = sorted(days)
    for ds in days:
        check_ended(settings, ds)
    check_writable(settings)
    landed = landed_days(settings)
    for ds in days:
        check_landed(settings, ds, landed)
        check_tasks(settings, ds)


def check_ended(settings: Settings, ds: date) -> None:
    try:
        resolve_run_date({"ds": ds.isoformat()}, None, None, settings.business_tz)
    except ValueError as exc:
        raise Refused(f"{exc}: a night processes a day that has ended (TANDEM_BUSINESS_TZ)") from None


def _variable(settings: Settings, name: str) -> str:
    """The variable that sets a path: TANDEM_HOME when the path is its default under home."""
    if name != "home" and getattr(settings, name) == settings.home / PATH_DEFAULTS[name]:
        return f"{ENV_PREFIX}HOME"
    return f"{ENV_PREFIX}{name.upper()}"


def _writable_problem(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (or in the folder it would be created in), else None."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return "no existing parent folder"
        probe = probe.parent
    if not probe.is_dir():
        return "a file, not a folder" if probe == folder else f"cannot be created: {probe} is a file"
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        return f"cannot write in {probe} ({exc.strerror or exc})"
    return None


def check_writable(settings: Settings) -> None:
    seen: set[Path] = set()
    for name in WRITTEN:
        path = getattr(settings, name)
        folder = path.parent if name == "warehouse_path" else path
        if folder in seen:
            continue
        seen.add(folder)
        problem = _writable_problem(folder)
        if problem:
            var = _variable(settings, name)
            raise Refused(f"{var}: the night writes in {folder}: {problem}")


def _has_landed_file(folder: Path) -> bool:
    """A Parquet file a night reads: names starting with '.' or '_' are a writer's temporary files."""
    return any(not f.name.startswith((".", "_")) for f in folder.glob("*.parquet"))


def landed_days(settings: Settings, table: str = "events") -> list[date]:
    """The days whose folder ``landing/<table>/ds=D`` holds a Parquet file, in order."""
    days = []
    for folder in (settings.landing_dir / table).glob("ds=*"):
        try:
            day = parse_date(folder.name.removeprefix("ds="))
        except ValueError:
            continue
        if _has_landed_file(folder):
            days.append(day)
    return sorted(days)


def _span(days: list[date]) -> str:
    return f"{days[0]}..{days[-1]} ({len(days)} days)" if days else "none"


def check_landed(settings: Settings, ds: date, landed: list[date] | None = None) -> None:
    """The run day's events, item and user snapshots, and an earlier day of the training window."""
    landed = landed_days(settings) if landed is None else landed
    for table in LANDED_TABLES:
        folder = settings.landing(table, ds)
        if not _has_landed_file(folder):
            where = (
                f"landed event days: {_span(landed)}" if landed else f"nothing under {settings.landing_dir}"
            )
            raise Refused(
                f"ds={ds}: no {table} landed ({folder}/*.parquet); {where}. "
                "Land the day first: tandem ingest or tandem simulate"
            )
    window = settings.train_window_days
    first = ds - timedelta(days=window - 1)
    if not any(first <= day < ds for day in landed):
        raise Refused(
            f"ds={ds}: training needs an earlier day of its {window}-day window "
            f"({first}..{ds - timedelta(days=1)}) and none is landed (landed event days: {_span(landed)}); "
            "start the nights a day later, or land earlier days"
        )


def check_tasks(settings: Settings, ds: date) -> None:
    """Every task of ``TANDEM_TASKS`` has a landed event that makes its label in the training window
    (from the landing check's records; nothing is refused for a day whose files it has not
    counted yet)."""
    from mtl_model.contract import LABEL_EVENTS
    from mtl_model.landing_check import landed_event_types

    first = ds - timedelta(days=settings.train_window_days - 1)
    counts = landed_event_types(settings, days_between(first, ds))
    if counts is None:
        return
    for task in settings.tasks:
        wanted = LABEL_EVENTS[task]
        if not any(counts.get(t, 0) for t in wanted):
            raise Refused(
                f"TANDEM_TASKS names {task}, but no {' or '.join(wanted)} event landed in the training "
                f"window {first}..{ds} ({sum(counts.values()):,} events); drop it from TANDEM_TASKS "
                "or land those events"
            )
