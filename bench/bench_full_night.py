"""A whole night through the real DAG (Airflow dag.test: dbt → checks → export → train → score /
anomalies → publish → report) at scale: by default 100k users and 50k items, seconds per task.

    python bench/bench_full_night.py                                  # 100k users, 50k items, 8 days
    python bench/bench_full_night.py --users 20000 --items 10000     # a quicker look
    python bench/bench_full_night.py --home /tmp/night --reuse       # time one more night on a kept home

Simulates ``--days`` days, runs the night of the day before the last one (its dbt build is the first
build: every day up to it, so it is not timed as a night), then times the night of the last day, the
one that matters: an incremental dbt build, a current model to compare the new one with, yesterday's
recommendations to judge. Prints the seconds of every task (dbt models summed), the sizes involved
and the peak memory. Settings are the defaults (``TANDEM_*`` in the environment still apply, e.g.
``TANDEM_BASELINES=false`` to skip the nightly single-task and popularity baselines). Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

START = date(2026, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true", help="--home already holds the data: time one night")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="tandem-bench-full-night-"))
    os.environ["TANDEM_HOME"] = str(home)  # the DAG's tasks load their settings from the environment

    import duckdb
    import polars as pl

    from mtl_model.config import load_settings
    from mtl_model.pipeline.airflow_env import format_durations, run_day
    from mtl_model.sources.simulate import SimConfig, simulate

    settings = load_settings()
    last = START + timedelta(days=args.days - 1)
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs; load average "
        f"{os.getloadavg()[0]:.1f}; home {home}"
    )
    if args.reuse:
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
            last = con.sql("select max(ds) from stg_events").fetchall()[0][0] + timedelta(days=1)
        if not settings.landing("events", last).exists():
            sys.exit(f"nothing landed for {last} in {home}: simulate more days first")
    else:
        t0 = time.perf_counter()
        summary = simulate(settings, START, args.days, SimConfig(n_users=args.users, n_items=args.items))
        print(f"simulated {summary.events:,} events over {args.days} days in {time.perf_counter() - t0:.0f}s")
        t0 = time.perf_counter()
        first = run_day(settings, last - timedelta(days=1))
        print(
            f"night of {last - timedelta(days=1)} (first build, every day up to it): "
            f"{time.perf_counter() - t0:.0f}s ({format_durations(first)})"
        )

    t0 = time.perf_counter()
    durations = run_day(settings, last)
    wall = time.perf_counter() - t0

    exports = settings.export_dir(last)
    events = pl.scan_parquet(settings.landing("events", last) / "*.parquet").select(pl.len()).collect().item()
    samples = pl.scan_parquet(exports / "samples.parquet").select(pl.len()).collect().item()
    candidates = pl.scan_parquet(exports / "candidates.parquet")
    pairs, users = candidates.select(pl.len(), pl.col("user_id").n_unique()).collect().row(0)
    recs = (
        pl.scan_parquet(settings.output_dir(last) / "recommendations.parquet")
        .select(pl.len())
        .collect()
        .item()
    )
    dbt = {t.removeprefix("dbt."): s for t, s in durations.items() if t.startswith("dbt.")}
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6

    print(
        f"\nnight of {last}: {wall:.0f}s wall through dag.test; {events:,} events landed that day, "
        f"{samples:,} training samples (window), {pairs:,} candidate pairs for {users:,} active users, "
        f"{recs:,} recommendations"
    )
    print(
        f"peak RSS: this process (tasks run in it) {rss_self:.1f} GB, dbt subprocesses {rss_children:.1f} GB"
    )
    print(f"tasks: {format_durations(durations)}")
    print("\n| task | seconds |\n|---|---|")
    for task, seconds in durations.items():
        if not task.startswith("dbt."):
            print(f"| {task} | {seconds:.1f} |")
    print(f"| dbt (all {len(dbt)} tasks) | {sum(dbt.values()):.1f} |")
    slowest = sorted(dbt.items(), key=lambda kv: -kv[1])[:6]
    print("slowest dbt tasks: " + ", ".join(f"{t} {s:.1f}s" for t, s in slowest))


if __name__ == "__main__":
    main()
