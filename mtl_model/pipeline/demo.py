"""`make demo`: simulate about two weeks, backfill the last 3 days through the nightly DAG, show the
tables. Sizes can be changed with TANDEM_DEMO_USERS / TANDEM_DEMO_ITEMS / TANDEM_DEMO_DAYS.

`make demo SOURCE=tianchi` lands the real Tianchi mobile sample (../shared/data, 31 days of 2014,
China time) with `tandem ingest` instead, and backfills its last 3 days. (The REES46 sample spans 3
hours of a single day: there is no earlier day to train on, so it cannot drive a nightly run.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from mtl_model.config import Settings, load_settings
from mtl_model.dates import parse_date
from mtl_model.outputs.report import print_summary
from mtl_model.sources.simulate import SimConfig, main_summary_line, simulate


def run_backfill(settings: Settings, end: date, days: int) -> None:
    """The nightly DAG for each of the `days` days ending at `end`, in order."""
    for i in range(days):
        ds = end - timedelta(days=days - 1 - i)
        t0 = time.perf_counter()
        print(
            f"nightly run for ds={ds} (Airflow dag.test: dbt → checks → train → score → publish) ...",
            flush=True,
        )
        log = run_logged(settings, ds)
        done = [line for line in Path(log).read_text().splitlines() if line.startswith("tandem run ds=")]
        tasks = done[-1].partition("(")[2].rstrip(")") if done else ""
        task_logs = settings.home / "logs" / "tandem_nightly" / f"ds={ds}"
        print(f"  ds={ds} done in {time.perf_counter() - t0:.0f}s: {tasks}")
        print(f"  task logs: {task_logs}/ (summary: {log})")


def run_logged(settings: Settings, ds: date) -> str:
    """`tandem run --ds` in a subprocess, its Airflow/dbt output in a log file; stop on failure."""
    log = settings.home / "logs" / f"run-{ds}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "mtl_model.pipeline.cli", "run", "--ds", str(ds)], stdout=out, stderr=out
        )
    if done.returncode != 0:
        print("".join(log.read_text().splitlines(keepends=True)[-40:]))
        sys.exit(f"nightly run for ds={ds} failed: see {log}")
    return str(log)


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def land_tianchi() -> tuple[Settings, date]:
    """Ingest the Tianchi sample (days in Asia/Shanghai); return the settings and its last day."""
    from mtl_model.sources.ingest import ingest

    os.environ["TANDEM_BUSINESS_TZ"] = "Asia/Shanghai"  # the runs in subprocesses inherit it
    settings = load_settings()
    folder = SHARED_DATA / "tianchi_mobile"
    if not folder.exists():
        sys.exit(f"the Tianchi sample is not at {folder}")
    summary = ingest(
        settings, "tianchi-mobile", folder / "user_behavior_sample.csv", items=folder / "item_info_sample.csv"
    )
    print(summary.line())
    last = max(parse_date(p.name.removeprefix("ds=")) for p in (settings.landing_dir / "events").glob("ds=*"))
    return settings, last


def print_pages(settings: Settings, started: float) -> None:
    """Build the dbt docs, then say where every page of the home is and how to open the Airflow UI."""
    from mtl_model.pipeline.docs import DocsError, build_docs, pages

    try:
        build_docs(settings)
    except DocsError as exc:
        print(f"dbt docs not built: {exc}")
    print(f"\nDemo finished in {time.perf_counter() - started:.0f}s. Tables: {settings.published_dir}")
    print("Pages (they work offline; open them in a browser):")
    print("\n".join(pages(settings).lines(settings)))


def main() -> None:
    source = os.environ.get("TANDEM_DEMO_SOURCE", "simulator")
    if source not in ("simulator", "tianchi"):
        sys.exit(f"unknown demo SOURCE={source!r}: simulator or tianchi")
    if source == "tianchi":
        settings, end = land_tianchi()
        started = time.perf_counter()
        run_backfill(settings, end, 3)
        print_summary(settings, end)
        print_pages(settings, started)
        return
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
    run_backfill(settings, end, backfill_days)
    print_summary(settings, end)
    print_pages(settings, started)


if __name__ == "__main__":
    main()
