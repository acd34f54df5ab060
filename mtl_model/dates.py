"""Dates: the one parser of ``YYYY-MM-DD`` days, and the run date ``ds`` a DAG run processes."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_date(value: date | str) -> date:
    """A ``date`` as it is, or an ISO day ``YYYY-MM-DD``; anything else is a ``ValueError`` that
    quotes the value (e.g. ``not a date (YYYY-MM-DD): '2026-13-01'``)."""
    if isinstance(value, datetime):
        raise ValueError(f"not a date (YYYY-MM-DD): {value!r} is a timestamp")
    if isinstance(value, date):
        return value
    text = str(value).strip()
    if _ISO_DAY.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise ValueError(f"not a date (YYYY-MM-DD): {value!r}")


def days_between(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last``, both included, oldest first (none when ``first > last``)."""
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def resolve_run_date(
    conf: dict | None,
    logical_date: datetime | None,
    run_after: datetime | None,
    business_tz: str = "UTC",
    today: date | None = None,
) -> date:
    """``conf["ds"]`` when given (manual runs, backfills, the CLI); otherwise the business day that
    ended before the logical date (a run firing at 02:00 on D+1 processes D), falling back to
    ``run_after`` when the logical date is None (Airflow 3 manual/API runs). A day that has not
    ended yet in the business time zone is refused: its events are incomplete."""
    tz = ZoneInfo(business_tz)
    if conf and conf.get("ds"):
        ds = parse_date(conf["ds"])
    else:
        ref = logical_date or run_after
        if ref is None:
            raise ValueError("cannot resolve ds: no run conf 'ds', no logical date and no run_after")
        ds = ref.astimezone(tz).date() - timedelta(days=1)
    today = today or datetime.now(tz).date()
    if ds >= today:
        raise ValueError(f"ds={ds} has not ended yet in {business_tz} (today is {today})")
    return ds


def logical_date_for(ds: date, business_tz: str = "UTC") -> datetime:
    """The logical date of the scheduled run that processes ``ds`` (02:00 the next day)."""
    return datetime.combine(ds + timedelta(days=1), datetime.min.time(), ZoneInfo(business_tz)).replace(
        hour=2
    )
