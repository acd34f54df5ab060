"""Validate one day's tables with Great Expectations; write the results; fail with names.

One GX checkpoint a night validates every suite on the day's rows, writes the GX Data Docs site
(``reports/data_docs/index.html``), and the results go to ``outputs/ds=D/data_checks.parquet`` with
the columns of the published ``data_checks`` table: ``ds, suite, expectation, success, observed,
severity``. Failed errors raise :class:`DataCheckError`; failed warnings are reported only.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl

from mtl_model.config import Settings
from mtl_model.files import write_parquet_atomic

log = logging.getLogger(__name__)


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


def validate_day(settings: Settings, ds: date) -> list[CheckResult]:
    """Run every suite on the rows of ``ds`` through one checkpoint; one result per expectation."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    from checks.suites import COLUMNS, suites

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    docs_dir = settings.reports_dir / "data_docs"
    context.add_data_docs_site(
        site_name="tandem",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    source = context.data_sources.add_pandas("tandem")
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        medians = _trailing_medians(con, list(COLUMNS), ds)
        staged = con.execute("select count(*) from stg_events where ds = ?", [ds]).fetchall()[0][0]
        frames, definitions = {}, []
        for table, expectations in suites(medians, staged).items():
            frames[table] = con.execute(f"select * from {table} where ds = ?", [ds]).df()
            batch = source.add_dataframe_asset(name=table).add_batch_definition_whole_dataframe(str(ds))
            suite = context.suites.add(gx.ExpectationSuite(name=table, expectations=expectations))
            definitions.append(
                context.validation_definitions.add(
                    gx.ValidationDefinition(name=table, data=batch, suite=suite)
                )
            )
    results: list[CheckResult] = []
    for definition in definitions:  # one batch (DataFrame) per validation definition
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{definition.name}-{ds}",
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["tandem"])],
                result_format="SUMMARY",
            )
        )
        run = checkpoint.run(batch_parameters={"dataframe": frames[definition.name]})
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


def run_checks(settings: Settings, ds: date) -> list[CheckResult]:
    """Validate, write results, report warnings, and raise :class:`DataCheckError` naming each failed
    error-level expectation."""
    results = validate_day(settings, ds)
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
