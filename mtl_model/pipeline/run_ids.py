"""The ds on every run of the nightly DAG: in its run id where Airflow lets Tandem name it, in its note.

Airflow 3.3 names a run in one of three places (read in its source):

- a scheduled run: ``Timetable.generate_run_id`` of the DAG's timetable; ``NightlyTimetable``
  (``airflow_plugin``: Airflow's ``CronTriggerTimetable``, the same schedule) names it
  ``scheduled__ds:D__<run_after>``;
- a manual run: the ``--run-id`` given (``tandem trigger --ds D``: ``manual__ds:D__<now>``), else the
  timetable's, Airflow's default (the ds of a manual run is in its conf, which the timetable is not
  shown);
- a backfill run: always ``backfill__<run_after>`` (``DagRun.generate_run_id``; the timetable is not
  asked for a DAG that is not partitioned, apache/airflow#56374). Its logical date is D+1 02:00.

Run ids must match ``[scheduler] allowed_run_id_pattern`` (``^[A-Za-z0-9_.~:+-]+$``): no ``=``,
hence ``ds:``. Every run, a backfill's too, gets the note ``ds=D`` when the scheduler starts it
(``airflow_plugin.RunNotes``, a listener): the UI shows it on the run and the REST API returns it.
This module imports no Airflow (the CLI uses it before Airflow's environment is set).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo


def night_of(run_after: datetime, business_tz: str | tzinfo) -> date:
    """The ds a scheduled or backfill run processes: the business day that ended before it fires."""
    tz = ZoneInfo(business_tz) if isinstance(business_tz, str) else business_tz
    return run_after.astimezone(tz).date() - timedelta(days=1)


def run_id_for(run_type: str, ds: date, stamp: datetime) -> str:
    """``<run_type>__ds:<ds>__<stamp>``, e.g. ``scheduled__ds:2026-03-04__2026-03-05T02:00:00+00:00``."""
    return f"{run_type}__ds:{ds.isoformat()}__{stamp.isoformat()}"


def ds_in_run_id(run_id: str) -> str | None:
    """The ds a run id names (``…__ds:D__…``), or None."""
    for part in run_id.split("__"):
        if part.startswith("ds:"):
            return part[3:]
    return None


def ds_of_run(dag_run: Any, business_tz: str) -> date | None:
    """The ds a run of the nightly DAG processes, as its first task resolves it (the conf's ``ds``,
    else the day before its logical date or ``run_after``); None for a day not ended yet."""
    from mtl_model.dates import resolve_run_date

    try:
        return resolve_run_date(dag_run.conf or {}, dag_run.logical_date, dag_run.run_after, business_tz)
    except ValueError:
        return None
