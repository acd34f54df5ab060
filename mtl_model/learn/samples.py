"""The exported training samples as Polars frames and label tensors (what train and anomalies read).

The training days' rows where every label is 0 are down-sampled at ``negative_rate`` by
:func:`sample_negatives` (a seeded hash of each row's key) and weighted back by
:func:`negative_weights`; the validation day is never down-sampled (docs/models.md).

The validation day is cut in two by :func:`split_test`: the users whose hash falls under
``test_fraction`` are the **test** split, the others the **validation** split (see docs/models.md).
Both draws are :mod:`mtl_model.hashing`'s (the same in every process, machine and library version).
:func:`real_exposures` tells real exposures from sampled negatives when the export carries the
``exposure`` column; :func:`without_position` gives the rows as the nightly candidates are scored,
with no feed position.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import numpy as np
import polars as pl
import torch

from mtl_model.config import Settings
from mtl_model.dates import days_between
from mtl_model.hashing import unit_interval
from mtl_model.learn.features import FeatureSpec, input_columns
from mtl_model.learn.networks import ESMM_PARENT

SAMPLES_FILE = "samples.parquet"
EXPOSURE_COLUMN = "exposure"  # 'view' | 'implied' | 'sampled' (view-only sources), when exported
POSITION = "position"  # the logged feed position of an exposure (null for a candidate)
SAMPLED = "sampled"  # the exposure of a drawn negative; every other value (impression, view, implied) is real
# what identifies a training row for the negative down-sampling when the export has no exposure_id
ROW_KEY = ("ds", "user_id", "item_id", "scene", "position")
SAMPLE_WEIGHT = "sample_weight"  # the training rows' importance weight, when negatives were down-sampled
TEST_SEED = 0x54657374  # fixed ("Test"), not TANDEM_SEED: the same test users whatever the seed


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


def read_split(
    settings: Settings, ds: date, spec: FeatureSpec | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training rows: the window's days before ``ds``, validation rows: day ``ds``). The training rows
    where every label is 0 are down-sampled to ``negative_rate`` (:func:`sample_negatives`); the
    validation day never is. The training days are read one at a time (each sampled as it is read) and
    concatenated in date order, so the whole window is never in memory unsampled; with ``spec`` they
    keep only what training reads (``ds``, the ids, the labels and the encoders' input columns, not the
    exposure ids, the exposure kinds or an unused sequence or text). The validation day keeps every
    column."""
    lf = _scan_samples(settings, ds)
    tasks, rate = tuple(settings.tasks), settings.negative_rate
    names = lf.collect_schema().names()
    keep = names
    if spec is not None:
        wanted = {"ds", "user_id", "item_id", *tasks, *input_columns(spec, names)}
        keep = [name for name in names if name in wanted]
    start = ds - timedelta(days=settings.train_window_days - 1)  # train_window_days >= 2: one day or more
    parts = [
        sample_negatives(lf.filter(pl.col("ds") == day), tasks, rate, settings.seed).select(keep).collect()
        for day in days_between(start, ds - timedelta(days=1))
    ]
    return pl.concat(parts, rechunk=False), lf.filter(pl.col("ds") == ds).collect()


def sample_negatives(lf: pl.LazyFrame, tasks: Sequence[str], rate: float, seed: int) -> pl.LazyFrame:
    """Every row with a positive label, and the share ``rate`` of the rows where every label is 0: those
    whose :func:`mtl_model.hashing.unit_interval` of the row's key (``exposure_id`` when exported, else
    the columns of :data:`ROW_KEY` the export has), seeded with ``seed``, falls under ``rate``. Columnar
    (numpy over each batch, inside the scan's filter), the same rows for the same seed whatever the order
    or the other days of the window (a row's draw depends on its key alone), with every library
    version; ``rate >= 1``: all."""
    if rate >= 1.0:
        return lf
    schema = lf.collect_schema()
    key = ["exposure_id"] if "exposure_id" in schema else [c for c in ROW_KEY if c in schema]

    def kept(rows: pl.Series) -> pl.Series:
        return pl.Series(unit_interval(rows.struct.unnest(), seed) < rate)

    positive = pl.any_horizontal([pl.col(t).cast(pl.Float64()).fill_null(0.0) > 0 for t in tasks])
    draw = pl.struct(key).map_batches(kept, return_dtype=pl.Boolean(), is_elementwise=True)
    return lf.filter(positive | draw)


def negative_weights(y: torch.Tensor, rate: float) -> torch.Tensor | None:
    """The importance weight [N] of each training row (labels ``y`` [N, T]) after
    :func:`sample_negatives` at ``rate``: 1/rate where every label is 0, 1 elsewhere; None at rate 1."""
    if rate >= 1.0:
        return None
    negative = y.sum(dim=1) == 0
    return torch.where(negative, torch.tensor(1.0 / rate), torch.tensor(1.0)).float()


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


def heldout_draw(users: pl.Series) -> np.ndarray:
    """Each row's user mapped to [0, 1): :func:`mtl_model.hashing.unit_interval` of ``user_id`` (as
    text; a null user is hashed as null) with :data:`TEST_SEED`. :func:`split_test` puts the users
    under ``test_fraction`` in the test split; an analyst gets them from this function (docs/models.md)."""
    return unit_interval(users.cast(pl.String()), TEST_SEED)


def split_test(valid_df: pl.DataFrame, fraction: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(validation rows, test rows) of the day ``ds``: a user is in the test split when its
    :func:`heldout_draw` is below ``fraction`` (0: no test split). The same users every night, whatever
    the seed; each user's rows stay together (GAUC sees whole users)."""
    if fraction <= 0 or valid_df.height == 0:
        return valid_df, valid_df.clear()
    in_test = pl.Series(heldout_draw(valid_df.get_column("user_id")) < fraction)
    return valid_df.filter(~in_test), valid_df.filter(in_test)


def real_exposures(df: pl.DataFrame) -> np.ndarray | None:
    """Which rows are real exposures (``exposure`` other than :data:`SAMPLED`) when the export tells
    them from sampled negatives and holds some sampled rows; None otherwise (no column, or every row
    is real: the metrics among views would repeat the metrics of all rows)."""
    if EXPOSURE_COLUMN not in df.columns:
        return None
    real = (df.get_column(EXPOSURE_COLUMN).cast(pl.String()) != SAMPLED).fill_null(True)
    mask = real.to_numpy()
    return mask if not mask.all() else None


def without_position(df: pl.DataFrame) -> pl.DataFrame | None:
    """The rows with the logged position left out (null: what every scoring candidate has), or None
    when no row has a position (nothing to leave out: the metrics would repeat those of the rows)."""
    if POSITION not in df.columns or df.get_column(POSITION).null_count() == df.height:
        return None
    return df.with_columns(pl.lit(None, dtype=df.schema[POSITION]).alias(POSITION))
