"""Anomaly detection against planted truth: precision@K and recall per kind, on simulated data.

    python bench/bench_anomalies.py --users 5000 --items 2000 --days 10

Simulates with every planted anomaly switched on, builds the warehouse with dbt for the last day,
exports the day, runs the detector, and compares the flagged users / items with
truth/anomalies.parquet. Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from mtl_model.anomalies import detect_day, evaluate
from mtl_model.config import Settings
from mtl_model.dbt import dbt_command
from mtl_model.simulate import SimConfig, simulate
from mtl_model.warehouse import export_day


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tandem-bench-anomalies-"))
    settings = Settings(home=home, anomaly_top_n=100_000)  # every entity with a reason: recall is meaningful
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
    build = ["build", "--quiet", "--vars", f"{{run_date: '{last}'}}"]
    build += ["--exclude", "resource_type:test", "resource_type:unit_test"]
    subprocess.run(dbt_command(*build, target=home / "t"), env=env, check=True)
    export_day(settings, last)
    flagged = pl.read_parquet(detect_day(settings, last))
    truth = pl.read_parquet(home / "truth" / "anomalies.parquet").with_columns(pl.col("ds").cast(pl.Date))
    result = evaluate(flagged, truth, last, args.k)
    planted = (
        truth.filter(pl.col("ds") == last).group_by("entity_type", "kind").len().sort("entity_type", "kind")
    )
    print(f"day {last}: {args.users:,} users, {args.items:,} items; planted:")
    print(planted)
    with pl.Config(tbl_rows=50):
        print(result.sort("entity_type", "kind", "metric"))


if __name__ == "__main__":
    main()
