"""Writing a simulation: each day's landing and truth folders staged on two threads, then committed
(events last, so a present events folder means a complete day); the standing truth files.
"""

from __future__ import annotations

import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date
from pathlib import Path
from types import TracebackType

import polars as pl

from mtl_model.config import Settings
from mtl_model.files import replace_dir, temporary_path, write_parquet_atomic
from mtl_model.landing_check import check_landing
from mtl_model.sources.simulator.anomalies import ANOMALIES_SCHEMA
from mtl_model.sources.simulator.day import Day
from mtl_model.sources.simulator.universe import Universe

__all__ = ["DayWriter", "events_csv_path", "merge_anomalies", "write_file", "write_standing_truth"]

PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 1}


def write_file(df: pl.DataFrame, path: Path) -> None:
    """One Parquet file, atomically."""
    write_parquet_atomic(df, path, **PARQUET_OPTIONS)


def write_standing_truth(uni: Universe, truth: Path) -> None:
    """``truth/bots.parquet`` (``user_id``) and ``truth/bot_items.parquet`` (``item_id``)."""
    write_file(pl.DataFrame({"user_id": uni.user_ids.gather(uni.bots)}), truth / "bots.parquet")
    write_file(pl.DataFrame({"item_id": uni.item_ids.gather(uni.bot_items)}), truth / "bot_items.parquet")


def events_csv_path(settings: Settings, ds: date | str) -> Path:
    """The CSV copy of day ``ds``'s events written with ``SimConfig(write_csv=True)``."""
    return settings.home / "csv" / "events" / f"ds={ds}" / "part-0.csv"


def merge_anomalies(path: Path, frames: list[pl.DataFrame], days: list[date]) -> int:
    """Replace the simulated days' rows of ``truth/anomalies.parquet``; returns their count."""
    new = pl.concat(frames) if frames else pl.DataFrame(schema=ANOMALIES_SCHEMA)
    old = pl.read_parquet(path) if path.exists() else pl.DataFrame(schema=ANOMALIES_SCHEMA)
    old = old.filter(~pl.col("ds").is_in(pl.Series(days, dtype=pl.Date).implode()))
    merged = pl.concat([old, new]).unique().sort("ds", "entity_type", "kind", "entity_id")
    write_file(merged, path)
    return new.height


def _stage(df: pl.DataFrame, folder: Path) -> Path:
    """Write ``df`` as ``part-0.parquet`` into a temporary sibling of ``folder``; returns that folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(folder)
    tmp.mkdir()
    df.write_parquet(tmp / "part-0.parquet", **PARQUET_OPTIONS)
    return tmp


def _stage_csv(df: pl.DataFrame, folder: Path, cut: float | None) -> Path:
    """Like :func:`_stage`, as ``part-0.csv``; ``cut``: end the file inside its last line (no newline)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(folder)
    tmp.mkdir()
    path = tmp / "part-0.csv"
    df.write_csv(path)
    if cut is not None and df.height:
        size = path.stat().st_size
        with path.open("r+b") as f:
            f.seek(max(0, size - 65536))
            tail = f.read()
            start = size - len(tail) + tail.rstrip(b"\n").rfind(b"\n") + 1  # first byte of the last line
            f.truncate(start + max(1, int(cut * (size - 1 - start))))
    return tmp


class DayWriter:
    """Stages each day's folders on two threads while the next day is simulated; :meth:`commit`
    replaces the staged folders as a whole (events last). Closing drops what was staged, not committed."""

    def __init__(self, settings: Settings, write_csv: bool) -> None:
        self.settings, self.write_csv = settings, write_csv
        self.truth = settings.home / "truth"
        self.pending: list[tuple[Future[Path], Path]] = []
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="simulate-write")

    def __enter__(self) -> DayWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.pool.shutdown(wait=True)
        for fut, _folder in self.pending:  # a failure left staged folders behind: drop them
            if not fut.cancelled() and fut.exception() is None:
                shutil.rmtree(fut.result(), ignore_errors=True)

    def commit(self) -> None:
        """Wait for the staged folders (raises if a write failed) and move them into place."""
        staged = [(fut.result(), folder) for fut, folder in self.pending]
        for tmp, folder in reversed(staged):  # events (submitted first) are committed last
            replace_dir(tmp, folder)
        self.pending.clear()
        landing = self.settings.landing_dir
        days = {folder.name.removeprefix("ds=") for _, folder in staged if folder.parent.parent == landing}
        if days:  # the landing check of the files just written (docs/data.md, "Landing check")
            check_landing(self.settings, days=sorted(days))

    def stage(self, day: date, res: Day) -> None:
        """Start writing day ``day``'s folders: events, exposures, users, items, the CSV copy, bad rows."""
        settings, truth = self.settings, self.truth
        # biggest first, so that the events file starts writing at once
        jobs = [
            (res.events, settings.landing("events", day)),
            (res.exposures, truth / "exposures" / f"ds={day}"),
            (res.users, settings.landing("users", day)),
            (res.items, settings.landing("items", day)),
        ]
        self.pending.extend((self.pool.submit(_stage, df, folder), folder) for df, folder in jobs)
        if self.write_csv:
            folder = events_csv_path(settings, day).parent
            self.pending.append((self.pool.submit(_stage_csv, res.events, folder, res.csv_cut), folder))
        bad_folder = truth / "bad_rows" / f"ds={day}"
        if res.bad_rows is not None:
            self.pending.append((self.pool.submit(_stage, res.bad_rows, bad_folder), bad_folder))
        elif bad_folder.exists():  # a rerun without bad data: no stale truth
            shutil.rmtree(bad_folder)
