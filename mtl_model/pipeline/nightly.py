"""The steps of one night, one function each, called by the thin DAG in ``dags/nightly.py``.

Each step takes the run date as an ISO string (what XCom carries), loads the settings from the
environment, and returns a small JSON-able summary for the task log / XCom. Heavy imports (torch,
GX) happen inside the steps, never when the DAG file is parsed.

Each step that succeeds also records itself in ``outputs/ds=D/steps/<step>.json``: its start, its
seconds and the summary it returned (one file per step: score and anomalies may run at the same
time). The check step adds ``dbt``, the time from the start of the Airflow run (or the end of the
landing check, when it ran in this run) to its own start: the dbt build, when it runs in a DAG run.
The night's report reads them.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from mtl_model.config import load_settings
from mtl_model.dates import parse_date
from mtl_model.files import write_text_atomic


def _day(run_date: str) -> date:
    return parse_date(run_date)


def _record(run_date: str, step: str, started: datetime, seconds: float, summary: dict | None) -> None:
    record = {
        "step": step,
        "started": started.isoformat(timespec="milliseconds"),
        "seconds": round(seconds, 3),
        "summary": summary,
    }
    path = load_settings().output_dir(_day(run_date)) / "steps" / f"{step}.json"
    write_text_atomic(path, json.dumps(record, sort_keys=True, default=str))


def _run_started() -> datetime | None:
    """The start of the Airflow run this step runs in (None outside a DAG run): its ``start_date``,
    or ``run_after`` when later (``dag.test`` dates the run's start at its logical date)."""
    try:
        from airflow.sdk import get_current_context

        run = get_current_context()["dag_run"]
        times = [getattr(run, name, None) for name in ("start_date", "run_after")]
    except Exception:  # noqa: BLE001 - called outside a task, or an Airflow without it: no dbt time
        return None
    return max((t for t in times if isinstance(t, datetime)), default=None)


def _dbt_started(run_date: str) -> datetime | None:
    """When dbt started in this DAG run: the run's start, or the end of the landing check when that
    step ran after it (None outside a DAG run)."""
    started = _run_started()
    path = load_settings().output_dir(_day(run_date)) / "steps" / "check_landing.json"
    if started is None or not path.exists():
        return started
    try:
        record = json.loads(path.read_text())
        ended = datetime.fromisoformat(record["started"]) + timedelta(seconds=float(record["seconds"]))
    except (OSError, ValueError, KeyError, TypeError):
        return started
    return max(started, ended)


def timed(step: Callable[[str], dict]) -> Callable[[str], dict]:
    """Record the step's start, wall seconds and summary (only when it succeeds) under its name."""

    @functools.wraps(step)
    def run(run_date: str) -> dict:
        started, t0 = datetime.now(UTC), time.perf_counter()
        result = step(run_date)
        _record(run_date, step.__name__, started, time.perf_counter() - t0, result)
        return result

    return run


@timed
def check_landing(run_date: str) -> dict:
    """The landing check before dbt (the night's first step after the run date): every landed file
    not checked yet, in any day folder, is checked against the contract; the bad ones are moved to
    the quarantine and stop nothing else. Returns the counts and the rejected files."""
    from mtl_model.landing_check import check_landing as check_files

    _day(run_date)
    return check_files(load_settings()).as_dict()


@timed
def dbt_build(run_date: str) -> dict:
    """The night's ``dbt build`` as one task (``TANDEM_DBT_TASKS=build``): what cosmos's watcher
    producer runs, without a sensor task per model and test. dbt's output goes to the task log; a
    failed build raises with its exit status (the log's ``Runtime Error in model …`` says why)."""
    import os
    import subprocess

    from mtl_model.pipeline.dbt import dbt_command

    settings = load_settings()
    target = settings.home / "dbt_target" / "nightly"
    command = dbt_command("build", target=target, settings=settings, run_date=_day(run_date))
    done = subprocess.run(command, env={**os.environ, **settings.as_env()}, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"dbt build for ds={run_date} failed, exit {done.returncode} (output above)")
    return {"dbt": "build", "target": str(target)}


@timed
def check(run_date: str) -> dict:
    """Great Expectations on the day's tables: a failed error raises (the night stops); the summary
    counts ``expectations``, ``failed`` and, of those, ``errors`` (0 here) and ``warnings``."""
    from checks.runner import run_checks, summarize

    run_started, started = _dbt_started(run_date), datetime.now(UTC)
    if run_started is not None and run_started < started:
        _record(run_date, "dbt", run_started, (started - run_started).total_seconds(), None)
    return summarize(run_checks(load_settings(), _day(run_date)))


@timed
def export(run_date: str) -> dict:
    from mtl_model.outputs.warehouse import export_day

    return export_day(load_settings(), _day(run_date))


@timed
def train(run_date: str) -> dict:
    from mtl_model.learn.train import train as train_model

    settings = load_settings()
    if settings.train_nproc > 1:  # torchrun: N processes train one model, rank 0 registers it
        from mtl_model.learn.distributed import launch_train

        summary = launch_train(settings, _day(run_date))
    else:
        result = train_model(settings, _day(run_date))
        summary = {"version": result.version, "promoted": result.promoted, "reason": result.reason}
    if settings.retrieval != "off":  # the learned candidate source, on the same window
        from mtl_model.learn.retrieval import fit_retrieval

        summary["retrieval"] = fit_retrieval(settings, _day(run_date))
    return summary


@timed
def score(run_date: str) -> dict:
    from mtl_model.outputs.score import score as score_day

    return {"recommendations": str(score_day(load_settings(), _day(run_date)))}


def score_part(run_date: str, part: int) -> dict:
    """One slice of the users (``TANDEM_SCORE_PARTS`` > 1: a mapped task each, on the train queue),
    recorded as step ``score_part_<part>``."""
    from mtl_model.outputs.score import score as score_day

    started, t0 = datetime.now(UTC), time.perf_counter()
    summary = {"part": part, "recommendations": str(score_day(load_settings(), _day(run_date), part=part))}
    _record(run_date, f"score_part_{part}", started, time.perf_counter() - t0, summary)
    return summary


@timed
def score_merge(run_date: str) -> dict:
    """The day's recommendations from its score parts."""
    from mtl_model.outputs.score import merge_parts

    return {"recommendations": str(merge_parts(load_settings(), _day(run_date)))}


@timed
def anomalies(run_date: str) -> dict:
    """Anomalies of the day with the current model (after ``train``); behaviour only, and said so in
    ``note`` and ``detector``, when there is no usable model."""
    from mtl_model.outputs.anomalies import detect_day

    result = detect_day(load_settings(), _day(run_date))
    return {
        "anomalies": str(result.path),
        "detector": result.detector,
        "model_version": result.model_version,
        "note": result.note,
    }


@timed
def publish(run_date: str) -> dict:
    from mtl_model.outputs.warehouse import publish_day

    return publish_day(load_settings(), _day(run_date))


@timed
def report(run_date: str) -> dict:
    from mtl_model.outputs.report import write_report

    return {"report": str(write_report(load_settings(), _day(run_date)))}
