"""Anomaly detection against planted truth: behaviour only vs behaviour + joint model, on simulated data.

    python bench/bench_anomalies.py --users 5000 --items 2000 --days 10

Simulates with every planted anomaly switched on, builds the warehouse with dbt for the last day and
exports it, then runs the detector twice on the same export, as a night would:

1. before any model exists (the first night): behaviour only (``joint-model-z-v1+no-model``);
2. after the nightly ``train`` step (``mtl_model.learn.train.train``: the 7-day window, the last day held out
   and promoted as the first model): behaviour + the joint model's improbability z-scores.

Both are compared with truth/anomalies.parquet: precision@K, precision over everything flagged, and
recall per planted kind (flagged at all, and within the top K). A last table compares three per-task
statistics of the model's view on the same scored exposures: the share of entities with |z| > 3 on any
task, per planted kind and for ordinary entities (the false alarms), for the surprisal z
(S - E) / sqrt(V), the count z (n - λ) / sqrt(Σ p(1-p)) (both normal approximations) and the
Poisson-tail z the detector uses. Prints tables; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from mtl_model.config import Settings
from mtl_model.learn.registry import load_current
from mtl_model.learn.samples import read_samples, train
from mtl_model.outputs.anomalies import detect_day, entity_evidence, evaluate, exposure_probabilities
from mtl_model.outputs.warehouse import export_day
from mtl_model.pipeline.dbt import dbt_command
from mtl_model.sources.simulate import SimConfig, simulate

KINDS = {
    "user": ("click_farm_bot", "click_spam_account", "fraud_buyer"),
    "item": ("bot_target_item", "click_spam", "broken_tracking"),
}


def statistics(settings: Settings, ds: date, truth: pl.DataFrame) -> pl.DataFrame:
    """Share of entities with |z| > 3 on any task, per kind, for three statistics of the same model."""
    model, encoders, _ = load_current(settings)
    scored = exposure_probabilities(model, encoders, read_samples(settings, ds, days=1))
    tasks = [c.removeprefix("p_") for c in scored.columns if c.startswith("p_")]
    per_row = []
    for t in tasks:
        p, y = pl.col(f"p_{t}").clip(1e-7, 1 - 1e-7), pl.col(f"y_{t}")
        logit = (p / (1 - p)).log()
        per_row += [(-(y - p) * logit).alias(f"d_{t}"), (p * (1 - p) * logit**2).alias(f"v_{t}")]
        per_row += [(p * (1 - p)).alias(f"q_{t}")]
    scored = scored.with_columns(per_row)
    rows = []
    for entity_type, key in (("user", "user_id"), ("item", "item_id")):
        sums = scored.group_by(key).agg(pl.col("^[dvqyp]_.*$").sum())
        normal = sums.select(
            pl.col(key).alias("entity_id"),
            pl.max_horizontal([(pl.col(f"d_{t}") / pl.col(f"v_{t}").sqrt()).abs() for t in tasks]).alias(
                "surprisal z (normal)"
            ),
            pl.max_horizontal(
                [((pl.col(f"y_{t}") - pl.col(f"p_{t}")) / pl.col(f"q_{t}").sqrt()).abs() for t in tasks]
            ).alias("count z (normal)"),
        )
        tail = entity_evidence(scored, key).select(
            "entity_id", pl.max_horizontal([pl.col(f"mz_{t}").abs() for t in tasks]).alias("tail z (used)")
        )
        kinds = (
            truth.filter(pl.col("entity_type") == entity_type).unique("entity_id").select("entity_id", "kind")
        )
        joined = (
            normal.join(tail, on="entity_id")
            .join(kinds, on="entity_id", how="left")
            .with_columns(pl.col("kind").fill_null("(ordinary)"))
        )
        shares = joined.group_by("kind").agg(
            pl.len().alias("entities"),
            *[
                (pl.col(c) > 3).mean().round(3)
                for c in ("surprisal z (normal)", "count z (normal)", "tail z (used)")
            ],
        )
        rows.append(shares.with_columns(pl.lit(entity_type).alias("entity_type")))
    return pl.concat(rows).sort("entity_type", "kind").select("entity_type", pl.all().exclude("entity_type"))


def summary(result: pl.DataFrame, k: int) -> pl.DataFrame:
    """One row per entity type / kind and metric, the way docs/benchmarks.md shows them."""
    names = {"precision_at_k": f"precision@{k}", "recall_at_k": f"recall@{k}"}
    return result.with_columns(pl.col("metric").replace(names)).select(
        "entity_type", "kind", "metric", "value"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training and scoring")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tandem-bench-anomalies-"))
    # every entity with a reason is kept (recall is meaningful); no baselines: only the joint model counts
    settings = Settings(home=home, anomaly_top_n=100_000, baselines=False, threads=args.threads)
    config = SimConfig(
        n_users=args.users,
        n_items=args.items,
        bot_rate=0.005,
        fraud_rate=0.002,
        click_spam_rate=0.005,
        broken_item_rate=0.005,
        seed=3,
    )
    start = date(2026, 2, 1)
    last = start + timedelta(days=args.days - 1)
    simulate(settings, start, args.days, config)
    env = {**os.environ, **settings.as_env(), "DO_NOT_TRACK": "1"}
    build = ["build", "--quiet"]
    build += ["--exclude", "resource_type:test", "resource_type:unit_test"]
    subprocess.run(
        dbt_command(*build, target=home / "t", settings=settings, run_date=last), env=env, check=True
    )
    export_day(settings, last)
    truth = pl.read_parquet(home / "truth" / "anomalies.parquet").with_columns(pl.col("ds").cast(pl.Date))

    alone = detect_day(settings, last)  # no model yet: the first night
    behaviour = evaluate(pl.read_parquet(alone.path), truth, last, args.k)
    started = time.perf_counter()
    trained = train(settings, last)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    both = detect_day(settings, last)
    detect_s = time.perf_counter() - started
    combined = evaluate(pl.read_parquet(both.path), truth, last, args.k)

    planted = (
        truth.filter(pl.col("ds") == last).group_by("entity_type", "kind").len().sort("entity_type", "kind")
    )
    print(f"day {last}: {args.users:,} users, {args.items:,} items; planted:")
    print(planted)
    aucs = ", ".join(f"{t} {m['auc']:.3f}" for t, m in trained.metrics.items())
    print(
        f"model {trained.version} (promoted: {trained.promoted}; validation AUC {aucs}), "
        f"trained in {train_s:.0f}s"
    )
    print(f"1. {alone.detector}: {alone.note}")
    print(f"2. {both.detector}: {both.note} ({detect_s:.1f}s, scoring included)")
    table = (
        summary(behaviour, args.k)
        .rename({"value": "behaviour only"})
        .join(
            summary(combined, args.k).rename({"value": "behaviour + model"}),
            on=["entity_type", "kind", "metric"],
            how="full",
            coalesce=True,
        )
        .sort("entity_type", "kind", "metric")
    )
    with pl.Config(tbl_rows=60, tbl_cols=10, tbl_width_chars=160, tbl_hide_dataframe_shape=True):
        print(table)
        print("share of entities with |z| > 3 on any task (the model's view alone):")
        print(statistics(settings, last, truth.filter(pl.col("ds") == last)))


if __name__ == "__main__":
    main()
