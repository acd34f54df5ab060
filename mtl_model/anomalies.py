"""Anomalous users and items of a day, from behaviour features, with human-readable reasons.

Users: robust z-scores (median / MAD across the day's active users) of volume, click rate, clicks
with nothing bought, click-timing regularity (bots click like clockwork), purchases, and spend of new
accounts (fraud). Items: binomial z-scores of the day's clicks against the item's own trailing 7-day
CTR, up (click spam) and down (broken tracking: many exposures, no clicks), and a robust z of how many
clicks came from its single most active user. A score is the sum of the z-scores above
``Z_THRESHOLD``, each capped at ``Z_CAP``; each of them becomes a reason. Reads
``exports/ds=D/{user,item}_activity.parquet`` and writes ``outputs/ds=D/anomalies.parquet`` (rank
within entity type).
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import polars as pl

from mtl_model.config import Settings

DETECTOR_VERSION = "robust-z-v3"
Z_THRESHOLD = 3.0
Z_CAP = 10.0  # one reason adds at most this much: several independent reasons outrank one huge one
NEW_ACCOUNT_DAYS = 30

# feature name → polars expression over user_day_activity; large values are suspicious
USER_FEATURES: dict[str, pl.Expr] = {
    "clicks": pl.col("clicks").cast(pl.Float64),
    "click_rate": pl.col("clicks") / pl.max_horizontal(pl.col("impressions"), 1),
    "sessions": pl.col("sessions").cast(pl.Float64),
    "clicks_without_purchase": pl.when(pl.col("purchases") == 0)
    .then(pl.col("clicks"))
    .otherwise(0)
    .cast(pl.Float64),
    "click_timing_regularity": pl.when(pl.col("clicks") >= 5)
    .then(1.0 / (1.0 + pl.col("std_click_gap_s") / pl.max_horizontal(pl.col("mean_click_gap_s"), 1e-9)))
    .otherwise(None),
    "purchases": pl.col("purchases").cast(pl.Float64),
    "new_account_spend": pl.when(pl.col("account_age_days") <= NEW_ACCOUNT_DAYS)
    .then(pl.col("spend"))
    .otherwise(0.0)
    .cast(pl.Float64),
}

OUTPUT_SCHEMA = {
    "ds": pl.Date,
    "entity_type": pl.String,
    "entity_id": pl.String,
    "score": pl.Float64,
    "rank": pl.Int32,
    "reasons": pl.String,
    "model_version": pl.String,
}


def _robust_z(name: str) -> pl.Expr:
    x = pl.col(name)
    med = x.median()
    mad = (x - med).abs().median() * 1.4826
    scale = pl.when(mad > 0).then(mad).otherwise(pl.when(x.std() > 0).then(x.std()).otherwise(1.0))
    return ((x - med) / scale).fill_null(0.0).fill_nan(0.0).alias(f"z_{name}")


def _rank(scored: pl.DataFrame, entity_type: str, top_n: int) -> pl.DataFrame:
    """Keep entities with a reason, best first, ranked 1..n within the entity type."""
    return (
        scored.filter(pl.col("score") > 0)
        .sort(["score", "entity_id"], descending=[True, False])
        .head(top_n)
        .with_row_index("rank", offset=1)
        .select(
            "ds",
            pl.lit(entity_type).alias("entity_type"),
            "entity_id",
            "score",
            "rank",
            "reasons",
            pl.lit(DETECTOR_VERSION).alias("model_version"),
        )
        .cast(OUTPUT_SCHEMA)
    )


def score_users(activity: pl.DataFrame, top_n: int) -> pl.DataFrame:
    """Score the users of one day; return the top ``top_n`` with at least one reason."""
    if "account_age_days" not in activity.columns:
        activity = activity.with_columns(pl.lit(None, pl.Int32).alias("account_age_days"))
    feats = activity.select(
        "ds", pl.col("user_id").alias("entity_id"), *[e.alias(n) for n, e in USER_FEATURES.items()]
    )
    feats = feats.with_columns([_robust_z(n) for n in USER_FEATURES])
    medians = {n: feats[n].median() for n in USER_FEATURES}
    reasons = [
        pl.when(pl.col(f"z_{n}") > Z_THRESHOLD).then(
            pl.format(
                f"{n} {{}} vs typical {medians[n] or 0:.3g} (z={{}})",
                pl.col(n).round(3),
                pl.col(f"z_{n}").round(1),
            )
        )
        for n in USER_FEATURES
    ]
    z_above = [
        pl.when(pl.col(f"z_{n}") > Z_THRESHOLD).then(pl.col(f"z_{n}")).otherwise(0.0) for n in USER_FEATURES
    ]
    scored = feats.with_columns(
        score=pl.sum_horizontal(z_above), reasons=pl.concat_str(reasons, separator="; ", ignore_nulls=True)
    )
    return _rank(scored, "user", top_n)


def score_items(activity: pl.DataFrame, top_n: int) -> pl.DataFrame:
    """Score the items of one day against their own trailing CTR; return the top ``top_n``."""
    p0 = pl.col("ctr_trailing_7d").clip(1e-4, 1 - 1e-4)
    expected = pl.col("exposures") * p0
    binomial_z = (pl.col("clicks") - expected) / (expected * (1 - p0)).sqrt()
    top_user_clicks = (pl.col("top_user_click_share").fill_null(0) * pl.col("clicks")).alias(
        "top_user_clicks"
    )
    feats = activity.with_columns(
        pl.col("item_id").alias("entity_id"),
        binomial_z.alias("z_ctr_jump"),
        (-binomial_z).alias("z_ctr_drop"),
        expected.alias("expected_clicks"),
        top_user_clicks,
    ).with_columns(_robust_z("top_user_clicks"))
    above = {name: pl.col(name) > Z_THRESHOLD for name in ("z_ctr_jump", "z_ctr_drop", "z_top_user_clicks")}
    ctr_jump = pl.format(
        "CTR {} vs {} over the last 7 days ({} clicks, {} expected; z={})",
        pl.col("ctr").round(3),
        pl.col("ctr_trailing_7d").round(3),
        pl.col("clicks"),
        pl.col("expected_clicks").round(1),
        pl.col("z_ctr_jump").round(1),
    )
    ctr_drop = pl.format(
        "{} clicks in {} exposures, {} expected: broken tracking? (z={})",
        pl.col("clicks"),
        pl.col("exposures"),
        pl.col("expected_clicks").round(1),
        pl.col("z_ctr_drop").round(1),
    )
    concentrated = pl.format(
        "{} of its clicks from one user (z={})",
        pl.col("top_user_clicks"),
        pl.col("z_top_user_clicks").round(1),
    )
    reasons = [
        pl.when(above["z_ctr_jump"]).then(ctr_jump),
        pl.when(above["z_ctr_drop"]).then(ctr_drop),
        pl.when(above["z_top_user_clicks"]).then(concentrated),
    ]
    scored = feats.with_columns(
        score=pl.sum_horizontal(
            [
                pl.when(cond).then(pl.col(n).clip(upper_bound=Z_CAP)).otherwise(0.0)
                for n, cond in above.items()
            ]
        ),
        reasons=pl.concat_str(reasons, separator="; ", ignore_nulls=True),
    )
    return _rank(scored, "item", top_n)


def detect_day(settings: Settings, ds: date) -> Path:
    """Write ``outputs/ds=D/anomalies.parquet`` for the day (users and items)."""
    users = pl.read_parquet(settings.export_dir(ds) / "user_activity.parquet")
    items = pl.read_parquet(settings.export_dir(ds) / "item_activity.parquet")
    if users.is_empty():
        raise ValueError(f"no active users in the export of ds={ds}")
    result = pl.concat(
        [
            score_users(users.with_columns(pl.col("ds").cast(pl.Date)), settings.anomaly_top_n),
            score_items(items.with_columns(pl.col("ds").cast(pl.Date)), settings.anomaly_top_n),
        ]
    )
    out = settings.output_dir(ds) / "anomalies.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(".anomalies.parquet.tmp")
    result.write_parquet(tmp)
    os.replace(tmp, out)
    return out


def evaluate(anomalies: pl.DataFrame, truth: pl.DataFrame, ds: date, k: int) -> pl.DataFrame:
    """Quality against planted truth (simulated data) for one day, per entity type and kind.

    ``truth``: rows (entity_type, entity_id, kind, ds) of the entities planted as anomalous.
    Returns rows (ds, entity_type, kind, metric, value): ``precision_at_k`` (share of the top ``k``
    flagged that are planted, any kind; kind = "all"), ``precision`` and ``flagged`` over every flagged
    entity, and per kind ``recall`` (share of the day's
    planted entities of that kind flagged at all) and ``recall_at_k`` (… flagged within the top k)."""
    day_truth = truth.filter(pl.col("ds") == ds).unique(["entity_type", "entity_id", "kind"])
    planted = (
        day_truth.select("entity_type", "entity_id").unique().with_columns(pl.lit(True).alias("planted"))
    )
    flagged = anomalies.filter(pl.col("ds") == ds).select("entity_type", "entity_id", "rank")
    rows: list[dict] = []
    for entity_type in sorted(set(flagged["entity_type"]) | set(day_truth["entity_type"])):
        top = flagged.filter((pl.col("entity_type") == entity_type) & (pl.col("rank") <= k))
        hits = top.join(planted, on=["entity_type", "entity_id"], how="left")["planted"].fill_null(False)
        if top.height:
            rows.append(
                {
                    "entity_type": entity_type,
                    "kind": "all",
                    "metric": "precision_at_k",
                    "value": float(hits.mean()),
                }
            )
        every = flagged.filter(pl.col("entity_type") == entity_type)
        if every.height:
            right = every.join(planted, on=["entity_type", "entity_id"], how="left")["planted"].fill_null(
                False
            )
            for metric, value in (("precision", float(right.mean())), ("flagged", float(every.height))):
                rows.append({"entity_type": entity_type, "kind": "all", "metric": metric, "value": value})
        found = day_truth.filter(pl.col("entity_type") == entity_type).join(
            flagged, on=["entity_type", "entity_id"], how="left"
        )
        for kind, group in found.group_by("kind", maintain_order=True):
            ranks = group["rank"]
            rows.append(
                {
                    "entity_type": entity_type,
                    "kind": kind[0],
                    "metric": "recall",
                    "value": float(ranks.is_not_null().mean()),
                }
            )
            rows.append(
                {
                    "entity_type": entity_type,
                    "kind": kind[0],
                    "metric": "recall_at_k",
                    "value": float((ranks.fill_null(k + 1) <= k).mean()),
                }
            )
    schema = {"entity_type": pl.String, "kind": pl.String, "metric": pl.String, "value": pl.Float64}
    return pl.DataFrame(rows, schema=schema).with_columns(pl.lit(ds).alias("ds")).select("ds", *schema)
