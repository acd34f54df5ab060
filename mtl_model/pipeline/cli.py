"""`tandem`: the one command line of the project.

  tandem simulate --start 2026-11-01 --days 14      write a simulated landing zone
  tandem ingest --format rees46 events.csv          land a public dataset (see docs/datasets.md)
  tandem run --ds 2026-11-14                        run the nightly DAG for one day (dag.test)
  tandem backfill --start 2026-11-12 --end 2026-11-14   the same, for each day in order
  tandem show                                       row counts of the published tables
  tandem airflow scheduler                          any Airflow command, with Tandem's embedded config

Settings come from TANDEM_* environment variables (see mtl_model/config.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, timedelta

from mtl_model.config import SettingsError, load_settings
from mtl_model.dates import parse_date


def _date(text: str) -> date:
    try:
        return parse_date(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_simulate(args: argparse.Namespace) -> int:
    from mtl_model.sources.simulate import SimConfig, main_summary_line, simulate

    config = SimConfig(n_users=args.users, n_items=args.items, seed=args.seed, bot_rate=args.bot_rate)
    started = time.perf_counter()
    summary = simulate(load_settings(), args.start, args.days, config)
    print(f"{main_summary_line(summary)} in {time.perf_counter() - started:.1f}s")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from mtl_model.pipeline.airflow_env import format_durations, run_day

    started = time.perf_counter()
    durations = run_day(load_settings(), args.ds)
    seconds = time.perf_counter() - started
    print(f"tandem run ds={args.ds}: success in {seconds:.0f}s ({format_durations(durations)})")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from mtl_model.pipeline.airflow_env import format_durations, run_day

    if args.end < args.start:
        raise SystemExit("--end is before --start")
    settings = load_settings()
    day = args.start
    while day <= args.end:
        started = time.perf_counter()
        durations = run_day(settings, day)
        print(
            f"tandem backfill ds={day}: success in {time.perf_counter() - started:.0f}s "
            f"({format_durations(durations)})"
        )
        day += timedelta(days=1)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from mtl_model.outputs.report import print_summary

    print_summary(load_settings(), args.ds)
    return 0


def cmd_airflow(args: argparse.Namespace) -> int:
    """Run an Airflow command (scheduler, dag-processor, api-server, backfill create, …) with the
    environment of the embedded deployment, after migrating its metadata DB once."""
    import os

    from mtl_model.pipeline.airflow_env import ensure_ready

    ensure_ready(load_settings())
    os.execvp(sys.executable, [sys.executable, "-m", "airflow", *args.airflow_args])
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tandem", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write a simulated landing zone for a date range")
    p.add_argument("--start", type=_date, required=True)
    p.add_argument("--days", type=int, required=True)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bot-rate", type=float, default=0.005)
    p.set_defaults(func=cmd_simulate)

    from mtl_model.sources.ingest import add_ingest_parser

    add_ingest_parser(sub)

    p = sub.add_parser("run", help="run the nightly DAG for one day, in process")
    p.add_argument("--ds", type=_date, required=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("backfill", help="run the nightly DAG for each day from --start to --end")
    p.add_argument("--start", type=_date, required=True)
    p.add_argument("--end", type=_date, required=True)
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("show", help="summarise the published tables")
    p.add_argument("--ds", type=_date, default=None)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("airflow", help="run an Airflow command with the embedded deployment's settings")
    p.add_argument("airflow_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_airflow)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; bad settings are refused in one line with exit code 2 (bad usage)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"tandem: bad settings: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
