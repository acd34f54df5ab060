"""Anomalous users of a day, from behaviour features, with human-readable reasons.

First version: robust z-scores (median / MAD) of a few behaviour features across the day's active
users; a user's score is the sum of the positive z-scores above a threshold, and each such feature
becomes a reason ("clicks 180 vs typical 4"). Reads ``exports/ds=D/user_activity.parquet`` and
writes ``outputs/ds=D/anomalies.parquet`` with the published ``anomalies`` schema.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import polars as pl

from mtl_model.config import Settings

DETECTOR_VERSION = "robust-z-v1"
Z_THRESHOLD = 3.0

# feature name → polars expression over user_day_activity; large values are suspicious
FEATURES: dict[str, pl.Expr] = {
    "clicks": pl.col("clicks").cast(pl.Float64),
    "click_rate": pl.col("clicks") / pl.max_horizontal(pl.col("impressions"), 1),
    "sessions": pl.col("sessions").cast(pl.Float64),
    # clicks with nothing bought: bots and click farms
    "clicks_without_purchase": pl.when(pl.col("purchases") == 0)
    .then(pl.col("clicks"))
    .otherwise(0)
    .cast(pl.Float64),
    # regular timing: low spread of gaps between clicks (only meaningful with several clicks)
    "click_timing_regularity": pl.when(pl.col("clicks") >= 5)
    .then(1.0 / (1.0 + pl.col("std_click_gap_s") / pl.max_horizontal(pl.col("mean_click_gap_s"), 1e-9)))
    .otherwise(None),
}


def _robust_z(name: str) -> pl.Expr:
    x = pl.col(name)
    med = x.median()
    mad = (x - med).abs().median() * 1.4826
    scale = pl.when(mad > 0).then(mad).otherwise(pl.when(x.std() > 0).then(x.std()).otherwise(1.0))
    return ((x - med) / scale).fill_null(0.0).alias(f"z_{name}")


def score_users(activity: pl.DataFrame, top_n: int) -> pl.DataFrame:
    """Score users of one day; return the top ``top_n`` with at least one reason."""
    feats = activity.select("ds", "user_id", *[expr.alias(n) for n, expr in FEATURES.items()])
    feats = feats.with_columns([_robust_z(n) for n in FEATURES])
    medians = {n: feats[n].median() for n in FEATURES}
    reason_parts = [
        pl.when(pl.col(f"z_{n}") > Z_THRESHOLD)
        .then(
            pl.format(
                f"{n} {{}} vs typical {medians[n] or 0:.3g} (z={{}})",
                pl.col(n).round(3),
                pl.col(f"z_{n}").round(1),
            )
        )
        .otherwise(None)
        for n in FEATURES
    ]
    z_cols = [pl.when(pl.col(f"z_{n}") > Z_THRESHOLD).then(pl.col(f"z_{n}")).otherwise(0.0) for n in FEATURES]
    scored = feats.with_columns(
        score=pl.sum_horizontal(z_cols),
        reasons=pl.concat_str(reason_parts, separator="; ", ignore_nulls=True),
    ).filter(pl.col("score") > 0)
    return (
        scored.sort(["score", "user_id"], descending=[True, False])
        .head(top_n)
        .with_row_index("rank", offset=1)
        .select(
            "ds",
            pl.lit("user").alias("entity_type"),
            pl.col("user_id").alias("entity_id"),
            pl.col("score").cast(pl.Float64),
            pl.col("rank").cast(pl.Int32),
            "reasons",
            pl.lit(DETECTOR_VERSION).alias("model_version"),
        )
    )


def detect_day(settings: Settings, ds: date) -> Path:
    """Write ``outputs/ds=D/anomalies.parquet`` for the day."""
    activity = pl.read_parquet(settings.export_dir(ds) / "user_activity.parquet")
    if activity.is_empty():
        raise ValueError(f"no active users in the export of ds={ds}")
    result = score_users(activity.with_columns(pl.col("ds").cast(pl.Date)), settings.anomaly_top_n)
    out = settings.output_dir(ds) / "anomalies.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(".anomalies.parquet.tmp")
    result.write_parquet(tmp)
    os.replace(tmp, out)
    return out
