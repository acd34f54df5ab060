"""The exported training samples as Polars frames and label tensors (what train and anomalies read)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import numpy as np
import polars as pl
import torch

from mtl_model.config import Settings
from mtl_model.learn.networks import ESMM_PARENT

SAMPLES_FILE = "samples.parquet"


def _scan_samples(settings: Settings, ds: date, days: int | None = None) -> pl.LazyFrame:
    """Lazy scan of the samples of the ``days`` days ending at ``ds`` (default: the training window,
    ``train_window_days``) with ``ds`` as a Date column; the day filter is pushed into the scan."""
    path = settings.export_dir(ds) / SAMPLES_FILE
    if not path.exists():
        raise FileNotFoundError(f"training samples for ds={ds} not found: {path}")
    lf = pl.scan_parquet(path)
    schema = lf.collect_schema()
    missing = [c for c in ("ds", *settings.tasks) if c not in schema]
    if missing:
        raise ValueError(f"{path} lacks columns {missing} (tasks configured: {list(settings.tasks)})")
    if schema["ds"] == pl.String():
        lf = lf.with_columns(pl.col("ds").str.to_date())
    elif schema["ds"] != pl.Date():
        lf = lf.with_columns(pl.col("ds").cast(pl.Date()))
    start = ds - timedelta(days=(days or settings.train_window_days) - 1)
    return lf.filter(pl.col("ds").is_between(start, ds))


def read_samples(settings: Settings, ds: date, days: int | None = None) -> pl.DataFrame:
    """Samples of the ``days`` days ending at ``ds`` (default: the training window). The day filter is
    pushed into the Parquet scan, so reading one day does not load the whole window."""
    return _scan_samples(settings, ds, days).collect()


def read_split(settings: Settings, ds: date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training rows: the window's days before ``ds``, validation rows: day ``ds``), each read by its
    own scan, so the whole window is never in memory twice (once read, once split)."""
    lf = _scan_samples(settings, ds)
    return lf.filter(pl.col("ds") < ds).collect(), lf.filter(pl.col("ds") == ds).collect()


def labels(df: pl.DataFrame, tasks: tuple[str, ...]) -> torch.Tensor:
    arr = df.select(pl.col(t).fill_null(0).clip(0, 1).cast(pl.Float32()) for t in tasks).to_numpy()
    arr = np.require(arr, dtype=np.float32, requirements=["C", "W"]).reshape(len(df), len(tasks))
    return torch.from_numpy(arr)


def esmm_targets(y: torch.Tensor, tasks: Sequence[str], esmm: bool) -> torch.Tensor:
    """Training targets [N, T]: under ESMM a post-click task's label is click ∧ label (its CTCVR)."""
    if not esmm or ESMM_PARENT not in tasks:
        return y
    out = y.clone()
    click = y[:, list(tasks).index(ESMM_PARENT)]
    for i, task in enumerate(tasks):
        if task != ESMM_PARENT:
            out[:, i] = y[:, i] * click
    return out
