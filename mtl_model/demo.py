"""`make demo`: simulate about two weeks, backfill the last 3 days through the nightly DAG, show the
tables. Sizes can be changed with TANDEM_DEMO_USERS / TANDEM_DEMO_ITEMS / TANDEM_DEMO_DAYS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date, timedelta

from mtl_model.config import Settings, load_settings
from mtl_model.report import print_summary
from mtl_model.simulate import SimConfig, main_summary_line, simulate


def run_logged(settings: Settings, ds: date) -> str:
    """`tandem run --ds` in a subprocess, its Airflow/dbt output in a log file; stop on failure."""
    log = settings.home / "logs" / f"run-{ds}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "mtl_model.cli", "run", "--ds", str(ds)], stdout=out, stderr=out
        )
    if done.returncode != 0:
        print("".join(log.read_text().splitlines(keepends=True)[-40:]))
        sys.exit(f"nightly run for ds={ds} failed: see {log}")
    return str(log)


def main() -> None:
    settings = load_settings()
    users = int(os.environ.get("TANDEM_DEMO_USERS", 2000))
    items = int(os.environ.get("TANDEM_DEMO_ITEMS", 1000))
    days = int(os.environ.get("TANDEM_DEMO_DAYS", 14))
    backfill_days = 3
    end = date.today() - timedelta(days=1)
    start = end - timedelta(days=days - 1)
    started = time.perf_counter()
    print(f"Tandem demo: home {settings.home}")
    summary = simulate(settings, start, days, SimConfig(n_users=users, n_items=items, seed=settings.seed))
    print(main_summary_line(summary))
    for i in range(backfill_days):
        ds = end - timedelta(days=backfill_days - 1 - i)
        t0 = time.perf_counter()
        print(
            f"nightly run for ds={ds} (Airflow dag.test: dbt → checks → train → score → publish) ...",
            flush=True,
        )
        log = run_logged(settings, ds)
        print(f"  ds={ds} done in {time.perf_counter() - t0:.0f}s (Airflow and dbt log: {log})")
    print_summary(settings, end)
    print(f"\nDemo finished in {time.perf_counter() - started:.0f}s. Tables: {settings.published_dir}")


if __name__ == "__main__":
    main()
