"""The run date `ds`: the business day a run processes, resolved once per DAG run."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo


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
        ds = date.fromisoformat(str(conf["ds"]))
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
