"""Render and write the pages: a night's report (``reports/ds=D/report.html``) and the index of
every night (``reports/index.html``), both with Jinja2 from ``templates/``."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path

import polars as pl

from mtl_model.config import Settings
from mtl_model.files import write_text_atomic
from mtl_model.outputs.report import sections
from mtl_model.outputs.report.fmt import FILTERS, observed
from mtl_model.outputs.report.nights import (
    Health,
    Nights,
    current_model,
    day_folders,
    published_days,
    read_nights,
    read_published,
    read_steps,
    validation_pages,
)

TEMPLATES = Path(__file__).resolve().parent / "templates"
CAPTION = (
    "How to read it: the lists published for the night before are replayed against what their users "
    "did today, but users could only click what the live feed showed them, and the feed shows popular "
    "items anyway; so popularity wins hit rate by exposure. Compare the lists where they were seen "
    "(shown CTR) and read a change of the model's line against its own past nights, not the grey one."
)


@cache
def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env


def render(template: str, **context) -> str:
    return _environment().get_template(template).render(**context)


def report_path(settings: Settings, ds: date) -> Path:
    return settings.reports_dir / f"ds={ds}" / "report.html"


def index_path(settings: Settings) -> Path:
    return settings.reports_dir / "index.html"


def dbt_docs_path(settings: Settings) -> Path:
    """Where ``tandem docs`` puts the static dbt docs site (one self-contained page)."""
    return settings.reports_dir / "dbt_docs" / "index.html"


def _links(settings: Settings, nights: Nights) -> dict:
    """Links from the night's folder: neighbours, the index, Data Docs (the night's pages), dbt docs."""
    here = report_path(settings, nights.ds).parent
    days = published_days(settings)
    before = [d for d in days if d < nights.ds]
    after = [d for d in days if d > nights.ds]
    docs = settings.reports_dir / "data_docs" / "index.html"
    dbt = dbt_docs_path(settings)

    def rel(path: Path) -> str:
        return os.path.relpath(path, here)

    return {
        "previous": (before[-1], rel(report_path(settings, before[-1]))) if before else None,
        "next": (after[0], rel(report_path(settings, after[0]))) if after else None,
        "index": rel(index_path(settings)),
        "data_docs": rel(docs) if docs.exists() else None,
        "validations": validation_pages(settings, nights.ds, here),
        "dbt_docs": rel(dbt) if dbt.exists() else None,
    }


def report_context(settings: Settings, nights: Nights) -> dict:
    """Everything the night's template shows."""
    checks = sections.checks_section(nights)
    level, status = sections.status_line(checks, sections.brief(nights))
    return {
        "ds": nights.ds,
        "nights": len(nights.days),
        "first": nights.days[0],
        "level": level,
        "status": status,
        "links": _links(settings, nights),
        "model": sections.model_section(nights, current_model(settings)),
        "feedback": sections.feedback_section(nights),
        "caption": CAPTION,
        "health": sections.health_section(nights),
        "checks": checks,
        "anomalies": sections.anomalies_section(nights),
        "durations": sections.durations_section(nights),
        "coverage": sections.coverage(nights),
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "catalog": settings.catalog_path,
    }


def write_report(settings: Settings, ds: date) -> Path:
    """The night's page from its published tables and the 30 nights before it, then the index."""
    nights = read_nights(settings, ds)
    path = write_text_atomic(
        report_path(settings, ds), render("report.html.j2", **report_context(settings, nights))
    )
    write_index(settings)
    return path


def _stopped(settings: Settings, ds: date) -> dict:
    """A night that never published: where it stopped, from what its steps left in ``outputs/``."""
    checks_file = settings.output_dir(ds) / "data_checks.parquet"
    steps = read_steps(settings, [ds])
    done = [s for s in sections.STEPS_ORDER if s in set(steps["step"].to_list())]
    line = f"not published; last step recorded: {done[-1]}" if done else "not published"
    if checks_file.exists():
        checks = pl.read_parquet(checks_file)
        errors = checks.filter(~pl.col("success") & (pl.col("severity") != "warning"))
        if errors.height:
            first = errors.row(0, named=True)
            line = (
                f"stopped at the data checks: {errors.height} error(s), first "
                f"{first['suite']}: {first['expectation']} observed {observed(first['observed'])}"
            )
    return {"ds": ds, "level": "fail", "status": line, "report": None}


def index_rows(settings: Settings) -> list[dict]:
    """One row per night, newest first: published nights with their status line, and the nights that
    ran but never published (stopped by a data check or a failed step)."""
    published = published_days(settings)
    rows = []
    for ds in published:
        nights = Nights(
            ds=ds,
            days=[ds],
            metrics=read_published(settings, "model_metrics", [ds]),
            feedback=pl.DataFrame(),
            anomalies=read_published(settings, "anomalies", [ds]),
            checks=read_published(settings, "data_checks", [ds]),
            recommendations=pl.DataFrame(),
            steps=read_steps(settings, [ds]),
            health=Health(note="not read for the index"),
        )
        level, status = sections.status_line(sections.checks_section(nights), sections.brief(nights))
        link = report_path(settings, ds)
        report = os.path.relpath(link, settings.reports_dir) if link.exists() else None
        rows.append({"ds": ds, "level": level, "status": status, "report": report})
    rows += [_stopped(settings, d) for d in day_folders(settings.outputs_dir) if d not in set(published)]
    return sorted(rows, key=lambda r: r["ds"], reverse=True)


def write_index(settings: Settings) -> Path:
    """``reports/index.html``: every night with a status line, links to its page and to Data Docs."""
    docs = settings.reports_dir / "data_docs" / "index.html"
    dbt = dbt_docs_path(settings)
    page = render(
        "index.html.j2",
        rows=index_rows(settings),
        data_docs=os.path.relpath(docs, settings.reports_dir) if docs.exists() else None,
        dbt_docs=os.path.relpath(dbt, settings.reports_dir) if dbt.exists() else None,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        catalog=settings.catalog_path,
    )
    return write_text_atomic(index_path(settings), page)
