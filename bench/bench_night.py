"""One night's dbt build on a warehouse that already holds `--days` days, per stage.

    python bench/bench_night.py --events-per-day 1000000 --days 30

Simulates the landing zone (users and items scaled to the events a day), builds the warehouse for
day N-1 (first build: every day up to it), then times the nightly incremental `dbt build` of day N
per model (dbt's run_results.json), and one plain DuckDB pass over day N's events (read + group by
user and event type) as the yardstick. Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb

from mtl_model.config import Settings
from mtl_model.outputs.warehouse import export_day
from mtl_model.pipeline.dbt import dbt_command
from mtl_model.sources.simulate import SimConfig, simulate

EVENTS_PER_USER_DAY = 14.0  # what the default simulator yields per user and day (measured)


def dbt_build(settings: Settings, ds: date, target: Path) -> float:
    env = {**os.environ, **settings.as_env(), "DO_NOT_TRACK": "1"}
    started = time.perf_counter()
    command = dbt_command("build", "--quiet", target=target, settings=settings, run_date=ds)
    subprocess.run(command, env=env, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events-per-day", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true", help="keep the landing zone and history of --home")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="tandem-bench-night-"))
    settings = Settings(home=home)
    users = int(args.events_per_day / EVENTS_PER_USER_DAY)
    start = date(2026, 1, 1)
    last = start + timedelta(days=args.days - 1)
    target = home / "dbt_target"

    if args.reuse and settings.warehouse_path.exists():
        print(f"reusing the landing zone and warehouse of {home}")
    else:
        t0 = time.perf_counter()
        summary = simulate(
            settings, start, args.days, SimConfig(n_users=users, n_items=max(users // 10, 1000))
        )
        print(
            f"simulated {summary.events:,} events ({summary.events / args.days:,.0f}/day, {users:,} users) "
            f"in {time.perf_counter() - t0:.1f}s"
        )
        t_history = dbt_build(settings, last - timedelta(days=1), target)
        print(f"history build (every day up to {last - timedelta(days=1)}): {t_history:.1f}s")

    t_night = dbt_build(settings, last, target)
    results = json.loads((target / "run_results.json").read_text())["results"]
    per_model = sorted(
        (
            (r["unique_id"].split(".")[-1], r["execution_time"])
            for r in results
            if r["unique_id"].startswith("model.")
        ),
        key=lambda x: -x[1],
    )
    tests = sum(r["execution_time"] for r in results if r["unique_id"].startswith(("test.", "unit_test.")))

    t2 = time.perf_counter()
    exported = export_day(settings, last)  # the export views' real cost: Parquet for train / score
    t_export = time.perf_counter() - t2

    events_glob = str(settings.landing("events", last) / "*.parquet")
    with duckdb.connect() as con:
        t1 = time.perf_counter()
        day_events, groups = con.execute(
            f"select sum(n), count(*) from (select user_id, event_type, count(*) as n "
            f"from read_parquet('{events_glob}') group by all)"
        ).fetchall()[0]
        t_plain = time.perf_counter() - t1

    print(
        f"\nnight of {last}: {day_events:,} events; dbt build {t_night:.1f}s wall "
        f"(models {sum(t for _, t in per_model):.1f}s, tests {tests:.1f}s)"
    )
    print(f"export of the day (Parquet for the trainer and scorer): {t_export:.1f}s {exported}")
    print(
        f"plain DuckDB pass over the day's events: {t_plain:.2f}s ({groups:,} groups); "
        f"ratio night / plain pass = {t_night / t_plain:.0f}x"
    )
    print("\nper model (s):")
    for name, seconds in per_model:
        print(f"  {name:<28} {seconds:6.2f}")


if __name__ == "__main__":
    main()
