"""The dbt build of a view-only source, per night and per model (issue 18: "make the view-only path as
cheap per event as the simulated one").

    python bench/bench_viewonly.py                    # 815 users, 84k events, 55k items, 2.9k categories
    python bench/bench_viewonly.py --events 400000 --users 4000

Writes a seeded Taobao UserBehavior CSV shaped like the real log of the issue (no header, Unix seconds;
``pv`` 90 %, ``cart`` 5.5 %, ``fav`` 3 %, ``buy`` 1.5 %; Zipf item popularity; 9 days of China time and
6 stray events two to four months earlier), lands it with ``tandem ingest --format taobao``'s function,
then runs the ``dbt build`` of the last three nights (the first builds every day) without the tests, as
the DAG's dbt task does; then the same three nights of a simulated home with about as many events a
day. Prints each night's wall time, the sum of its models' times and its slowest models
(``run_results.json``); the difference between wall and sum is dbt's own start-up and graph work.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtl_model.config import Settings  # noqa: E402
from mtl_model.pipeline.dbt import dbt_command  # noqa: E402
from mtl_model.sources.ingest import ingest  # noqa: E402
from mtl_model.sources.simulate import SimConfig, simulate  # noqa: E402

START = 1511539200  # 2017-11-25 00:00 in China (UTC+8), the first day of the Taobao dataset
TZ = "Asia/Shanghai"
EVENTS_PER_USER_DAY = 14.0  # the default simulator's (bench/bench_scale.py)


def write_log(path: Path, events: int, users: int, items: int, categories: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    item_category = rng.integers(0, categories, items)
    popularity = rng.zipf(1.3, items).astype(float)
    item = rng.choice(items, events, p=popularity / popularity.sum())
    ts = START + rng.integers(0, 9 * 86400, events)
    ts[:6] = START - rng.integers(60, 120, 6) * 86400  # stray events months before the rest
    behaviour = rng.choice(["pv", "cart", "fav", "buy"], events, p=[0.9, 0.055, 0.03, 0.015])
    log = pl.DataFrame(
        {
            "user_id": rng.integers(1, users + 1, events),
            "item_id": item + 1,
            "category_id": item_category[item] + 1,
            "behavior_type": behaviour,
            "timestamp": ts,
        }
    )
    log.sort("timestamp").write_csv(path, include_header=False)


def night(settings: Settings, ds: date) -> tuple[float, list[tuple[float, str]]]:
    """One dbt build of ``ds`` without tests: (wall seconds, [(seconds, model)] slowest first)."""
    env = {**os.environ, **settings.as_env(), "DO_NOT_TRACK": "1"}
    target = settings.home / "dbt-target"
    command = dbt_command("build", "--quiet", target=target, settings=settings, run_date=ds)
    started = time.perf_counter()
    excluded = ["--exclude", "resource_type:test", "resource_type:unit_test"]
    subprocess.run([*command, *excluded], env=env, check=True)
    wall = time.perf_counter() - started
    results = json.loads((target / "run_results.json").read_text())["results"]
    return wall, sorted(((r["execution_time"], r["unique_id"].split(".")[-1]) for r in results), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=84_000)
    parser.add_argument("--users", type=int, default=815)
    parser.add_argument("--items", type=int, default=55_000)
    parser.add_argument("--categories", type=int, default=2_900)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    last = date(2017, 12, 3)
    print("| source | night | dbt wall s | sum of model s | slowest models (s) |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-viewonly-") as tmp:
        view_only = Settings(home=Path(tmp) / "taobao", business_tz=TZ)
        log = Path(tmp) / "user_behavior.csv"
        write_log(log, args.events, args.users, args.items, args.categories, args.seed)
        ingest(view_only, "taobao", log)
        # the reference: the simulator at about the same events a day, the same 9 days
        simulated = Settings(home=Path(tmp) / "sim", business_tz=TZ)
        users = max(10, round(args.events / 9 / EVENTS_PER_USER_DAY))
        world = SimConfig(n_users=users, n_items=max(10, users // 2))
        simulate(simulated, last - timedelta(days=8), 9, world)
        for name, settings in (("taobao (view-only)", view_only), (f"simulator ({users} users)", simulated)):
            for ds in (last - timedelta(days=2), last - timedelta(days=1), last):
                wall, models = night(settings, ds)
                slowest = ", ".join(f"{model} {secs:.1f}" for secs, model in models[:4])
                total = sum(secs for secs, _ in models)
                print(f"| {name} | {ds} | {wall:.1f} | {total:.1f} | {slowest} |", flush=True)


if __name__ == "__main__":
    main()
