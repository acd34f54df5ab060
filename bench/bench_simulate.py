"""Simulator throughput: events per second for about 1M and 10M events (not part of `make test`).

    .venv/bin/python bench/bench_simulate.py                 # 1M and 10M events, default switches
    .venv/bin/python bench/bench_simulate.py --sizes 1M --switches   # plus bad data and anomalies
    .venv/bin/python bench/bench_simulate.py --sizes 1M --ingest     # plus `ingest --format taobao`

Each run writes a full landing zone (events, items, users, truth) into a temporary TANDEM_HOME on
the same disk as the working directory and deletes it afterwards. Wall time includes the Parquet
writes. Prints one line per run; nothing is asserted (figures go to docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtl_model.config import Settings  # noqa: E402
from mtl_model.sources.simulate import SimConfig, simulate  # noqa: E402

# ~1.46 events per user and day with the default behaviour (1.2 sessions x 10 impressions + funnel)
SIZES = {
    "1M": (SimConfig(n_users=70_000, n_items=5_000, seed=1), 1),
    "10M": (SimConfig(n_users=100_000, n_items=20_000, seed=1), 7),
}
SWITCHES = {
    "duplicate_rate": 0.01,
    "null_key_rate": 0.01,
    "unknown_type_rate": 0.01,
    "bad_price_rate": 0.01,
    "future_time_rate": 0.01,
    "late_rate": 0.01,
    "schema_drift_rate": 0.2,
    "write_csv": True,
    "truncated_csv_rate": 0.5,
    "fraud_rate": 0.0005,
    "click_spam_rate": 0.001,
    "broken_item_rate": 0.001,
    "broken_scene_rate": 0.2,
}


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: kilobytes


def bench(label: str, config: SimConfig, days: int, root: Path) -> Path:
    home = Path(tempfile.mkdtemp(prefix=f"bench-sim-{label}-", dir=root))
    t0 = time.perf_counter()
    s = simulate(Settings(home=home), "2026-03-02", days, config)
    seconds = time.perf_counter() - t0
    size = f"{s.events:>11,} events, {days} day(s), {config.n_users:,} users, {config.n_items:,} items"
    rate = f"{s.events / seconds:>11,.0f} events/s"
    print(f"{label:>12}: {size} in {seconds:6.2f}s = {rate}  (peak RSS {_peak_rss_gb():.1f} GB)", flush=True)
    return home


def bench_ingest(home: Path, root: Path) -> None:
    """Write the simulated events as a Taobao UserBehavior CSV and time `ingest(..., "taobao", ...)`."""
    import polars as pl

    from mtl_model.sources.ingest import ingest

    events = pl.scan_parquet(str(home / "landing" / "events" / "*" / "*.parquet"))
    kinds = {"impression": "pv", "click": "pv", "cart": "cart", "purchase": "buy"}
    taobao = events.select(
        pl.col("user_id").str.slice(1),
        pl.col("item_id").str.slice(1),
        pl.col("category_id").str.slice(1),
        pl.col("event_type").replace_strict(kinds, default="pv"),
        pl.col("event_time").dt.epoch("s"),
    )
    csv = root / "bench-taobao.csv"
    taobao.sink_csv(csv, include_header=False)
    size = csv.stat().st_size
    lake = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=root))
    try:
        for attempt in ("first", "again"):
            t0 = time.perf_counter()
            s = ingest(Settings(home=lake), "taobao", csv, tz="UTC")
            seconds = time.perf_counter() - t0
            what = (
                f"{s.rows_read:>11,} rows ({size / 1e6:,.0f} MB CSV, {len(s.days)} day(s), {s.rows_new:,} new"
            )
            rate = f"{s.rows_read / seconds:>11,.0f} rows/s"
            peak = f"(peak RSS {_peak_rss_gb():.1f} GB)"
            print(f"{'ingest ' + attempt:>12}: {what}) in {seconds:6.2f}s = {rate}  {peak}", flush=True)
    finally:
        csv.unlink(missing_ok=True)
        shutil.rmtree(lake, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1M,10M", help="comma-separated, of: " + ", ".join(SIZES))
    parser.add_argument("--switches", action="store_true", help="also run with bad data and anomalies on")
    parser.add_argument("--ingest", action="store_true", help="also time ingest of the events as Taobao CSV")
    parser.add_argument("--dir", default=".", help="where the temporary homes go (default: here)")
    args = parser.parse_args(argv)
    root = Path(args.dir).resolve()
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    for label in args.sizes.split(","):
        config, days = SIZES[label]
        runs = [(label, config)]
        if args.switches:
            runs.append((f"{label}+bad", replace(config, **SWITCHES)))
        for name, cfg in runs:
            home = bench(name, cfg, days, root)
            try:
                if args.ingest and name == label:
                    bench_ingest(home, root)
            finally:
                shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
