"""Validate one day's tables with Great Expectations; write the results; fail with names.

Results go to ``outputs/ds=D/data_checks.parquet`` with the columns of the published
``data_checks`` table: ``ds, suite, expectation, success, observed``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import polars as pl

from mtl_model.config import Settings


class DataCheckError(RuntimeError):
    """One or more expectations failed for the day; the run must stop before training."""


@dataclass(frozen=True)
class CheckResult:
    suite: str
    expectation: str
    success: bool
    observed: str


def _describe(config) -> str:
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{config.type}({args})"


def _observed(result: dict) -> str:
    keep = {k: result[k] for k in ("observed_value", "unexpected_count", "unexpected_percent") if k in result}
    return json.dumps(keep, default=lambda v: v.item() if hasattr(v, "item") else str(v), sort_keys=True)


def validate_day(settings: Settings, ds: date) -> list[CheckResult]:
    """Run every suite on the rows of ``ds``; return one result per expectation."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    from checks.suites import suites

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_pandas("tandem")
    results: list[CheckResult] = []
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        for table, expectations in suites().items():
            frame = con.execute(f"select * from {table} where ds = ?", [ds]).df()
            batch_def = source.add_dataframe_asset(name=table).add_batch_definition_whole_dataframe("day")
            suite = context.suites.add(gx.ExpectationSuite(name=table, expectations=expectations))
            validation = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
            for r in validation.results:
                results.append(
                    CheckResult(table, _describe(r.expectation_config), bool(r.success), _observed(r.result))
                )
    return results


def write_results(settings: Settings, ds: date, results: list[CheckResult]) -> Path:
    out = settings.output_dir(ds)
    out.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame(
        {
            "ds": [ds] * len(results),
            "suite": [r.suite for r in results],
            "expectation": [r.expectation for r in results],
            "success": [r.success for r in results],
            "observed": [r.observed for r in results],
        },
        schema={
            "ds": pl.Date,
            "suite": pl.String,
            "expectation": pl.String,
            "success": pl.Boolean,
            "observed": pl.String,
        },
    )
    path = out / "data_checks.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)
    return path


def run_checks(settings: Settings, ds: date) -> list[CheckResult]:
    """Validate, write results, and raise :class:`DataCheckError` naming each failed expectation."""
    results = validate_day(settings, ds)
    write_results(settings, ds, results)
    failed = [r for r in results if not r.success]
    if failed:
        lines = "\n".join(f"  - {r.suite}: {r.expectation} observed {r.observed}" for r in failed)
        raise DataCheckError(f"{len(failed)} data check(s) failed for ds={ds}:\n{lines}")
    return results
