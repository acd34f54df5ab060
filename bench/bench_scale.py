"""Nights at growing events a day: seconds and peak memory of every task, and how far from linear.

    python bench/bench_scale.py --sizes 1M,2M,4M,10M --days 8     # issue 18's sweep
    python bench/bench_scale.py --sizes 50k,100k --days 4         # a quick look (minutes)
    python bench/bench_scale.py --sizes 100k,1M --root R --prepare-only   # untimed part, on a busy machine
    python bench/bench_scale.py --sizes 100k,1M --root R                  # then the timed nights, quiet

For each size, simulates ``--days`` days at that many events a day (users scaled to the events, items
a tenth of the users), runs the night of the day before the last one untimed (the first dbt build
reads every day, and it leaves a current model to compare with), then times the night of the last
day. Each task runs alone in a fresh process, as under the real scheduler, in the DAG's order:
dbt build → check → export → train → score → anomalies → publish. Airflow's own overhead is not
included (see docs/benchmarks.md, "The demo night"). Peak memory is each process's ``ru_maxrss``
(dbt's: the dbt subprocess's). Prints two Markdown tables: seconds and GB per task, and per task
the growth against linear, ``vs_linear`` = (seconds / smallest size's seconds) / (size / smallest
size). Nothing is asserted. Settings come from ``TANDEM_*`` (e.g. ``TANDEM_BASELINES=false``).
With ``--root``, a home whose untimed night has run (``PREPARED``) is reused as it is: only the
timed night runs again (it replaces its day), so the untimed part can run ahead with
``--prepare-only`` while the machine is busy, and the timed nights later on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = date(2026, 1, 1)
EVENTS_PER_USER_DAY = 14.0  # what the default simulator yields per user and day (bench_night.py)
TASKS = ("dbt", "check", "export", "train", "score", "anomalies", "publish")
PREPARED = ".bench_scale_prepared"  # in a home: the day of its untimed night, once that night ran

CHILD = r"""
import json, resource, subprocess, sys, time
task, ds = sys.argv[1], sys.argv[2]
started = time.perf_counter()
if task == "dbt":
    import os
    from mtl_model.config import load_settings
    from mtl_model.dates import parse_date
    from mtl_model.pipeline.dbt import dbt_command
    settings = load_settings()
    target = settings.home / "dbt_target"
    command = dbt_command("build", "--quiet", target=target, settings=settings, run_date=parse_date(ds))
    subprocess.run(command, env={**os.environ, **settings.as_env()}, check=True, stdout=subprocess.DEVNULL)
else:
    from mtl_model.pipeline import nightly
    getattr(nightly, task)(ds)
usage = resource.getrusage(resource.RUSAGE_CHILDREN if task == "dbt" else resource.RUSAGE_SELF)
print(json.dumps({"seconds": time.perf_counter() - started, "peak_gb": usage.ru_maxrss / 1e6}))
"""


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def run_task(home: Path, task: str, ds: date) -> dict:
    env = {**os.environ, "TANDEM_HOME": str(home), "PYTHONPATH": str(ROOT), "DO_NOT_TRACK": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, task, ds.isoformat()],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def night(home: Path, ds: date) -> dict[str, dict]:
    return {task: run_task(home, task, ds) for task in TASKS}


def prepare(home: Path, events_per_day: int, days: int) -> tuple[date, int]:
    """Simulate the landing zone (unless ``home`` already has it) and run the untimed night before."""
    from mtl_model.config import Settings
    from mtl_model.sources.simulate import SimConfig, simulate

    last = START + timedelta(days=days - 1)
    users = max(int(events_per_day / EVENTS_PER_USER_DAY), 100)
    if not (home / "landing" / "events" / f"ds={last}").exists():
        t0 = time.perf_counter()
        summary = simulate(
            Settings(home=home), START, days, SimConfig(n_users=users, n_items=max(users // 10, 100))
        )
        print(f"  simulated {summary.events:,} events over {days} days in {time.perf_counter() - t0:.0f}s")
    before = (last - timedelta(days=1)).isoformat()
    marker = home / PREPARED
    if not marker.exists() or marker.read_text() != before:
        night(home, last - timedelta(days=1))
        marker.write_text(before)
    events = _day_events(home, last)
    return last, events


def _day_events(home: Path, ds: date) -> int:
    import pyarrow.parquet as pq

    folder = home / "landing" / "events" / f"ds={ds}"
    return sum(pq.ParquetFile(f).metadata.num_rows for f in folder.glob("*.parquet"))


def tables(rows: list[dict]) -> str:
    head = "| events that day | " + " | ".join(TASKS) + " | night | peak GB | vs_linear |"
    lines = [head, "|" + "---:|" * (len(TASKS) + 4)]
    base = rows[0]
    for r in rows:
        cells = [f"{r['tasks'][t]['seconds']:.1f} s / {r['tasks'][t]['peak_gb']:.1f} GB" for t in TASKS]
        growth = (r["night"] / base["night"]) / (r["events"] / base["events"])
        peak = max(v["peak_gb"] for v in r["tasks"].values())
        lines.append(
            f"| {r['events']:,} | "
            + " | ".join(cells)
            + f" | {r['night']:.0f} s | {peak:.1f} | {growth:.2f} |"
        )
    lines += ["", "vs_linear per task:", "", "| events that day | " + " | ".join(TASKS) + " |"]
    lines.append("|" + "---:|" * (len(TASKS) + 1))
    for r in rows:
        ratio = r["events"] / base["events"]
        cells = [f"{(r['tasks'][t]['seconds'] / base['tasks'][t]['seconds']) / ratio:.2f}" for t in TASKS]
        lines.append(f"| {r['events']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1M,2M,4M,10M", help="events a day, comma-separated (k, M)")
    parser.add_argument("--days", type=int, default=8, help="days of history (the 7-day window + 1)")
    parser.add_argument(
        "--root", type=Path, default=None, help="a folder for the homes (kept: reruns reuse them)"
    )
    parser.add_argument(
        "--prepare-only", action="store_true", help="simulate and run the untimed nights, time nothing"
    )
    args = parser.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="tandem-bench-scale-"))
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}; homes in {root}"
    )
    rows = []
    for size in [parse_size(s) for s in args.sizes.split(",")]:
        home = root / f"events-{size}"
        print(f"{size:,} events a day:")
        last, events = prepare(home, size, args.days)
        if args.prepare_only:
            print(f"  prepared: {events:,} events on {last}")
            continue
        tasks = night(home, last)
        total = sum(v["seconds"] for v in tasks.values())
        print(
            f"  night of {last}: {events:,} events, {total:.0f}s "
            + json.dumps({t: round(v["seconds"], 1) for t, v in tasks.items()})
        )
        rows.append({"events": events, "tasks": tasks, "night": total})
    if rows:
        print()
        print(tables(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
