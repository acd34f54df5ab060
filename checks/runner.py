"""Validate one day's tables with Great Expectations; write the results; fail with names.

A file-system GX context under ``TANDEM_HOME/gx`` validates every suite on the day's rows with the
run name ``ds`` and keeps every night's results; the GX Data Docs site (``reports/data_docs``, its
index lists every night) serves its CSS/JS from local copies, so it renders offline. The results go
to ``outputs/ds=D/data_checks.parquet`` with the columns of the published ``data_checks`` table:
``ds, suite, expectation, success, observed, severity``. Failed errors raise
:class:`DataCheckError`; failed warnings are reported only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path

import duckdb
import polars as pl

from mtl_model.config import Settings
from mtl_model.duck import connect
from mtl_model.files import write_parquet_atomic, write_text_atomic

log = logging.getLogger(__name__)

SITE = "tandem"  # the Data Docs site's name in the GX context
ASSETS_DIR = Path(__file__).resolve().parent / "data_docs_assets"
# what GX 1.x's page templates load from CDNs → the local copy in ASSETS_DIR (README.md there)
_CDNJS, _TABLE = "https://cdnjs.cloudflare.com/ajax/libs", "https://unpkg.com/bootstrap-table@"
_PICKER = f"{_CDNJS}/bootstrap-datepicker/1.9.0"
_FILTER = "/dist/extensions/filter-control/bootstrap-table-filter-control"
CDN_ASSETS = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap-4.3.1.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap-4.3.1.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1.min.js",
    f"{_CDNJS}/popper.js/1.12.9/umd/popper.min.js": "popper-1.12.9.min.js",
    f"{_PICKER}/css/bootstrap-datepicker.min.css": "bootstrap-datepicker-1.9.0.min.css",
    f"{_PICKER}/js/bootstrap-datepicker.min.js": "bootstrap-datepicker-1.9.0.min.js",
    f"{_CDNJS}/font-awesome/6.6.0/css/all.min.css": "fontawesome-6.6.0/css/all.min.css",
    f"{_TABLE}1.19.1/dist/bootstrap-table.min.css": "bootstrap-table-1.19.1.min.css",
    f"{_TABLE}1.19.1/dist/bootstrap-table.min.js": "bootstrap-table-1.19.1.min.js",
    f"{_TABLE}1.19.0{_FILTER}.css": "bootstrap-table-filter-control-1.19.1.min.css",
    f"{_TABLE}1.19.0{_FILTER}.min.css": "bootstrap-table-filter-control-1.19.1.min.css",
    f"{_TABLE}1.19.1{_FILTER}.min.js": "bootstrap-table-filter-control-1.19.1.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": (
        "bootstrap-prefers-dark-1.1.0.min.css"
    ),
    "https://cdn.jsdelivr.net/npm/vega@5": "vega-5.33.1.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite-5.23.0.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed-6.29.0.min.js",
}
# GX's logos (one with a tracking query string): served from the site's own static/images
WEB_ASSETS = re.compile(
    r"https://great-expectations-web-assets\.s3\.us-east-2\.amazonaws\.com/([\w.-]+)(?:\?[^\"')\s]*)?"
)


class DataCheckError(RuntimeError):
    """One or more error-level expectations failed for the day; the run must stop before training."""


@dataclass(frozen=True)
class CheckResult:
    """One expectation's outcome: a row of the ``data_checks`` table (without ``ds``)."""

    suite: str
    expectation: str
    success: bool
    observed: str
    severity: str


def _describe(config) -> str:
    """``type(kwarg=value, ...)`` of an expectation config, the ``expectation`` column."""
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    return f"{config.type}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"


def _observed(result: dict) -> str:
    """The observed value and unexpected counts of a result, as sorted JSON (the ``observed`` column)."""
    keep = {k: result[k] for k in ("observed_value", "unexpected_count", "unexpected_percent") if k in result}
    return json.dumps(keep, default=lambda v: v.item() if hasattr(v, "item") else str(v), sort_keys=True)


def _trailing_medians(con: duckdb.DuckDBPyConnection, tables: list[str], ds: date) -> dict[str, float | None]:
    """Median daily row count of each table over the 7 days before ds (None without history)."""
    out: dict[str, float | None] = {}
    for table in tables:
        out[table] = con.execute(
            f"select median(n) from (select ds, count(*) as n from {table} "
            "where ds between ? and ? group by ds)",
            [ds - timedelta(days=7), ds - timedelta(days=1)],
        ).fetchall()[0][0]
    return out


def data_docs_dir(settings: Settings) -> Path:
    """The GX Data Docs site: ``reports/data_docs`` (its ``index.html`` lists every night)."""
    return settings.reports_dir / "data_docs"


def validation_pages(settings: Settings, ds: date) -> dict[str, Path]:
    """Suite name → the Data Docs page of the newest validation of ``ds`` (run name = ds)."""
    pages: dict[str, Path] = {}
    for suite_dir in sorted((data_docs_dir(settings) / "validations").glob("*")):
        found = sorted((suite_dir / str(ds)).glob("*/*.html"))
        if found:
            pages[suite_dir.name] = found[-1]
    return pages


def _context(settings: Settings):
    """The file-system GX context under ``TANDEM_HOME/gx`` (suites, validation definitions,
    checkpoints and every night's validation results persist there) with the ``tandem`` Data Docs
    site in ``reports/data_docs``."""
    import great_expectations as gx

    context = gx.get_context(mode="file", project_root_dir=settings.home)
    context.variables.progress_bars = {"globally": False}
    site_config = {
        "class_name": "SiteBuilder",
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(data_docs_dir(settings)),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_how_to_buttons": False},
    }
    sites = context.get_site_names()
    for other in (s for s in sites if s != SITE):  # the scaffold's local_site: one site, ours
        context.delete_data_docs_site(other)
    if SITE in sites:
        context.update_data_docs_site(SITE, site_config)
    else:
        context.add_data_docs_site(SITE, site_config)
    return context


def _forget_run(settings: Settings, suite: str, ds: date) -> None:
    """Remove an earlier validation of ``ds`` for ``suite`` (results and page): a rerun of a night
    replaces its checks, as it replaces its ``data_checks`` rows."""
    for root in (
        settings.home / "gx" / "uncommitted" / "validations",
        data_docs_dir(settings) / "validations",
    ):
        shutil.rmtree(root / suite / str(ds), ignore_errors=True)


def _local_image(images: Path, page_dir: Path, match: re.Match) -> str:
    name = match[1] if (images / match[1]).exists() else "logo-long.png"
    return f"{os.path.relpath(images, page_dir)}/{name}"


def localize_data_docs(site: Path) -> int:
    """Serve the site's CSS, JS and fonts from ``static/vendor`` (copied from
    ``checks/data_docs_assets``) and its logos from ``static/images`` instead of the CDNs and the
    web-assets bucket GX names (and its favicon at the right depth), so the pages render offline and
    nothing is fetched; return how many pages were rewritten. Subresource-integrity and CORS
    attributes go with the CDN (a ``crossorigin`` script does not load from ``file://``)."""
    vendor, images = site / "static" / "vendor", site / "static" / "images"
    shutil.copytree(ASSETS_DIR, vendor, dirs_exist_ok=True)
    rewritten = 0
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        if not (any(url in text for url in CDN_ASSETS) or WEB_ASSETS.search(text)):
            continue
        prefix = os.path.relpath(vendor, page.parent)
        for url, name in CDN_ASSETS.items():
            text = text.replace(url, f"{prefix}/{name}")
        text = WEB_ASSETS.sub(partial(_local_image, images, page.parent), text)
        # GX names the favicon one folder too shallow on the validation pages
        favicon = f'href="{os.path.relpath(images, page.parent)}/favicon.ico"'
        text = re.sub(r'href="(?:\./|\.\./)*static/images/favicon\.ico"', favicon, text)
        text = re.sub(r'\s(?:integrity|crossorigin)="[^"]*"', "", text)
        write_text_atomic(page, text)
        rewritten += 1
    return rewritten


def _validation_definitions(context, settings: Settings, ds: date) -> tuple[list, dict]:
    """One validation definition per table (its suite built for the day) and the day's frames."""
    import great_expectations as gx

    from checks.suites import COLUMNS, suites

    source = context.data_sources.add_or_update_pandas("tandem")
    frames, definitions = {}, []
    with connect(settings.warehouse_path, read_only=True) as con:
        medians = _trailing_medians(con, list(COLUMNS), ds)
        staged = con.execute("select count(*) from stg_events where ds = ?", [ds]).fetchall()[0][0]
        for table, expectations in suites(medians, staged).items():
            frames[table] = con.execute(f"select * from {table} where ds = ?", [ds]).df()
            batch = source.add_dataframe_asset(name=table).add_batch_definition_whole_dataframe("day")
            suite = context.suites.add_or_update(gx.ExpectationSuite(name=table, expectations=expectations))
            definitions.append(
                context.validation_definitions.add_or_update(
                    gx.ValidationDefinition(name=table, data=batch, suite=suite)
                )
            )
    return definitions, frames


def validate_day(settings: Settings, ds: date) -> list[CheckResult]:
    """Run every suite on the rows of ``ds``, one checkpoint per table, run name = ``ds``; the
    results are kept in the GX stores and the Data Docs site (one validation per night and suite);
    one result per expectation."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    context = _context(settings)
    definitions, frames = _validation_definitions(context, settings, ds)
    run_id = RunIdentifier(run_name=str(ds), run_time=datetime.now(UTC))
    results: list[CheckResult] = []
    for definition in definitions:  # one batch (DataFrame) per validation definition
        _forget_run(settings, definition.name, ds)
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=definition.name,
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[SITE])],
                result_format="SUMMARY",
            )
        )
        run = checkpoint.run(batch_parameters={"dataframe": frames[definition.name]}, run_id=run_id)
        for validation in run.run_results.values():
            for r in validation.results:
                severity = (r.expectation_config.meta or {}).get("severity", "error")
                results.append(
                    CheckResult(
                        definition.name,
                        _describe(r.expectation_config),
                        bool(r.success),
                        _observed(r.result),
                        severity,
                    )
                )
    localize_data_docs(data_docs_dir(settings))
    return results


def write_results(settings: Settings, ds: date, results: list[CheckResult]) -> Path:
    """Write ``outputs/ds=D/data_checks.parquet`` (the published table's columns)."""
    out = settings.output_dir(ds)
    out.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame(
        {
            "ds": [ds] * len(results),
            "suite": [r.suite for r in results],
            "expectation": [r.expectation for r in results],
            "success": [r.success for r in results],
            "observed": [r.observed for r in results],
            "severity": [r.severity for r in results],
        },
        schema={
            "ds": pl.Date,
            "suite": pl.String,
            "expectation": pl.String,
            "success": pl.Boolean,
            "observed": pl.String,
            "severity": pl.String,
        },
    )
    return write_parquet_atomic(frame, out / "data_checks.parquet")


def landing_results(settings: Settings, ds: date) -> list[CheckResult]:
    """One warning row (suite ``landing``) per file of day ``ds`` the landing check quarantined."""
    from mtl_model.landing_check import quarantined_files

    return [
        CheckResult(
            suite="landing",
            expectation=f"file_matches_contract(file={r['file']})",
            success=False,
            observed=f"{r.get('reason')}: {r.get('column') or ''} {r.get('message') or ''}".strip(),
            severity="warning",
        )
        for r in quarantined_files(settings, ds)
    ]


def run_checks(settings: Settings, ds: date) -> list[CheckResult]:
    """Validate, write results, report warnings, and raise :class:`DataCheckError` naming each failed
    error-level expectation."""
    results = validate_day(settings, ds) + landing_results(settings, ds)
    write_results(settings, ds, results)
    for r in results:
        if not r.success and r.severity == "warning":
            log.warning(
                "data check warning for ds=%s: %s: %s observed %s", ds, r.suite, r.expectation, r.observed
            )
    failed = [r for r in results if not r.success and r.severity != "warning"]
    if failed:
        lines = "\n".join(f"  - {r.suite}: {r.expectation} observed {r.observed}" for r in failed)
        raise DataCheckError(f"{len(failed)} data check(s) failed for ds={ds}:\n{lines}")
    return results


def summarize(results: list[CheckResult]) -> dict[str, int]:
    """Counts of the ``data_checks`` rows: ``expectations``, ``failed`` (success false, any severity),
    and of those ``errors`` and ``warnings`` (after :func:`run_checks` returns, ``errors`` is 0)."""
    failed = [r for r in results if not r.success]
    warnings = sum(r.severity == "warning" for r in failed)
    return {
        "expectations": len(results),
        "failed": len(failed),
        "errors": len(failed) - warnings,
        "warnings": warnings,
    }
