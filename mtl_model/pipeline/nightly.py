"""The steps of one night, one function each, called by the thin DAG in ``dags/nightly.py``.

Each step takes the run date as an ISO string (what XCom carries), loads the settings from the
environment, and returns a small JSON-able summary for the task log / XCom. Heavy imports (torch,
GX) happen inside the steps, never when the DAG file is parsed.
"""

from __future__ import annotations

from datetime import date

from mtl_model.config import load_settings
from mtl_model.dates import parse_date


def _day(run_date: str) -> date:
    return parse_date(run_date)


def check(run_date: str) -> dict:
    """Great Expectations on the day's tables: a failed error raises (the night stops); the summary
    counts ``expectations``, ``failed`` and, of those, ``errors`` (0 here) and ``warnings``."""
    from checks.runner import run_checks, summarize

    return summarize(run_checks(load_settings(), _day(run_date)))


def export(run_date: str) -> dict:
    from mtl_model.outputs.warehouse import export_day

    return export_day(load_settings(), _day(run_date))


def train(run_date: str) -> dict:
    from mtl_model.learn.train import train as train_model

    result = train_model(load_settings(), _day(run_date))
    return {"version": result.version, "promoted": result.promoted, "reason": result.reason}


def score(run_date: str) -> dict:
    from mtl_model.outputs.score import score as score_day

    return {"recommendations": str(score_day(load_settings(), _day(run_date)))}


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


def publish(run_date: str) -> dict:
    from mtl_model.outputs.warehouse import publish_day

    return publish_day(load_settings(), _day(run_date))


def report(run_date: str) -> dict:
    from mtl_model.outputs.report import write_report

    return {"report": str(write_report(load_settings(), _day(run_date)))}
