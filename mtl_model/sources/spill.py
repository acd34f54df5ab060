"""Pass 1 of ``tandem ingest`` over an events file: one lazy, streaming scan that normalises each row,
finds its business day and the rule it breaks, and spills it to a temporary Parquet folder per day
(and one for the rows to quarantine), so that each day can then be built in memory on its own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from mtl_model.contract import EVENTS_SCHEMA
from mtl_model.dates import parse_date
from mtl_model.sources.formats import SEP, SourceFormat
from mtl_model.sources.reading import (
    IngestError,
    _Input,
    _is_parquet,
    _open_csv,
    _open_parquet,
    _prepare,
    _reason,
)

QUARANTINE = "quarantine"  # spill partition of the rows to quarantine


@dataclass
class _Spill:
    """The events file after pass 1: one folder of Parquet files per day, and the rows to quarantine."""

    days: dict[date, list[Path]]
    bad: pl.DataFrame  # _line, reason, the source fields
    raw: list[str]
    rows_read: int
    cut_line: int | None  # the cut last line (quarantined; left out of its day)
    extra_columns: list[str]
    missing_columns: list[str]

    def day(self, day: date) -> pl.DataFrame:
        df = pl.read_parquet(self.days[day])
        return df if self.cut_line is None else df.filter(pl.col("_line") != self.cut_line)

    def item_days(self) -> pl.DataFrame:
        """(ds, item_id) of every landed event."""
        files = [f for files in self.days.values() for f in files]
        if not files:
            return pl.DataFrame(schema={"ds": pl.Date, "item_id": pl.String})
        lf = pl.scan_parquet(files)
        if self.cut_line is not None:
            lf = lf.filter(pl.col("_line") != self.cut_line)
        return lf.select("ds", "item_id").unique().collect()


def _open_events(spec: SourceFormat, path: Path, work: Path) -> _Input:
    """The events file as text columns: Parquet for the contract, else CSV (plain, gzip or zip)."""
    required = tuple(c for c in spec.columns if c not in spec.optional)
    if spec.id_prefix is None and _is_parquet(path):
        return _open_parquet(path, spec.name, spec.columns, required)
    return _open_csv(_prepare(path, work), spec.name, spec.header, spec.columns, required)


def _normalised(
    spec: SourceFormat, src: _Input, zone: str, start: date | None, end: date | None
) -> pl.LazyFrame:
    """The contract's columns (null where the source has none), the business day ``ds`` and ``reason``."""
    lf = spec.normalize(src.lf, set(src.lf.collect_schema().names()))
    cols = set(lf.collect_schema().names())
    for c, dtype in EVENTS_SCHEMA.items():  # columns a source does not have
        if c not in cols:
            lf = lf.with_columns(pl.lit(None, dtype).alias(c))
    for c in ("_category_path", "_brand"):
        if c not in cols:
            lf = lf.with_columns(pl.lit(None, pl.String).alias(c))
    lf = lf.with_columns(ds=pl.col("event_time").dt.convert_time_zone(zone).dt.date())
    return lf.with_columns(reason=_reason(spec, cols, start, end))


def _sink(lf: pl.LazyFrame, spec: SourceFormat, src: _Input, path: Path, work: Path) -> dict[str, list[Path]]:
    """Stream ``lf`` into one Parquet folder per day and one for the rows to quarantine (which alone keep
    the source fields); the files of each partition, by its name (``YYYY-MM-DD`` or ``QUARANTINE``)."""
    key = (
        []
        if spec.id_prefix is None
        else [pl.concat_str([pl.col(c).fill_null("") for c in src.raw], separator=SEP)]
    )
    spill_cols = [
        "_line",
        "ds",
        "reason",
        *EVENTS_SCHEMA,
        "_category_path",
        "_brand",
        *([key[0].alias("_key")] if key else []),
        *[pl.when(pl.col("reason").is_not_null()).then(pl.col(c)).alias(f"_raw_{c}") for c in src.raw],
    ]
    part = (
        pl.when(pl.col("reason").is_null()).then(pl.col("ds").cast(pl.String)).otherwise(pl.lit(QUARANTINE))
    )
    spill = work / "events"
    try:
        lf.select(*spill_cols, part.alias("_part")).sink_parquet(
            pl.PartitionBy(spill, key="_part", include_key=False), compression="lz4", mkdir=True
        )
    except pl.exceptions.PolarsError as exc:
        raise IngestError(f"{path}: cannot read as {spec.name} ({exc})") from exc
    parts = (
        {d.name.split("=", 1)[1]: sorted(d.glob("*.parquet")) for d in spill.iterdir() if "=" in d.name}
        if spill.exists()
        else {}
    )
    if not parts:
        raise IngestError(f"{path}: no data rows")
    return parts


def _cut_line(src: _Input, every: pl.LazyFrame, last_line: int) -> int | None:
    """The last line, when it has no newline and is short or broken (it was cut off), else None."""
    if src.last_raw is None:
        return None
    last = every.filter(pl.col("_line") == last_line).select("reason").collect()
    return last_line if src.short_last or last["reason"].is_not_null().any() else None


def _quarantined(
    src: _Input, parts: dict[str, list[Path]], every: pl.LazyFrame, cut_line: int | None
) -> pl.DataFrame:
    """The rows to quarantine: ``_line``, ``reason`` and the source fields (those of a cut line come
    from the file's tail: they were not kept)."""
    bad = pl.scan_parquet(parts[QUARANTINE]) if QUARANTINE in parts else every.clear()
    if cut_line is not None and src.last_raw is not None:
        bad = pl.concat([bad.filter(pl.col("_line") != cut_line), every.filter(pl.col("_line") == cut_line)])
        bad = bad.with_columns(
            reason=pl.when(pl.col("_line") == cut_line).then(pl.lit("truncated_line")).otherwise("reason"),
            **{
                f"_raw_{c}": pl.when(pl.col("_line") == cut_line)
                .then(pl.lit(v, pl.String))
                .otherwise(f"_raw_{c}")
                for c, v in src.last_raw.items()
            },
        )
    return bad.select("_line", "reason", *[pl.col(f"_raw_{c}").alias(c) for c in src.raw]).collect()


def _spill_events(
    spec: SourceFormat, path: Path, work: Path, zone: str, start: date | None, end: date | None
) -> _Spill:
    """Pass 1 (streaming): normalise, find the day and the reason of each row, spill to Parquet."""
    src = _open_events(spec, path, work)
    parts = _sink(_normalised(spec, src, zone, start, end), spec, src, path, work)
    every = pl.scan_parquet([f for files in parts.values() for f in files])
    n_rows, last_line = every.select(pl.len(), pl.col("_line").max()).collect().row(0)
    cut_line = _cut_line(src, every, last_line)
    bad = _quarantined(src, parts, every, cut_line)
    days = {parse_date(k): files for k, files in parts.items() if k != QUARANTINE}
    return _Spill(days, bad, src.raw, n_rows, cut_line, src.extra_columns, src.missing_columns)
