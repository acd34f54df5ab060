"""`tandem`: the one command line of the project.

  tandem simulate --start 2026-11-01 --days 14      write a simulated landing zone
  tandem ingest --format rees46 events.csv          land a public dataset (see docs/datasets.md)
  tandem run --ds 2026-11-14                        run the nightly DAG for one day (dag.test)
  tandem backfill --start 2026-11-12 --end 2026-11-14   the same, for each day in order
  tandem backfill --start … --end … --scheduler     the same days as an Airflow backfill (scheduler)
  tandem trigger --ds 2026-11-14                    queue one day for the scheduler (manual__ds:D__…)
  tandem runs                                       the nightly runs in Airflow, each with its ds
  tandem show                                       row counts of the published tables
  tandem airflow scheduler                          any Airflow command, with Tandem's embedded config

Exit status: 0 done; 1 a night failed (the failed task, its error line and its log are printed),
`tandem show` found nothing published, or `tandem ingest` could read nothing; 2 bad usage, said in
one line: a bad flag or date, a day that has not ended, a day with nothing landed, a bad TANDEM_*
setting, a TANDEM_HOME that cannot be written.

Settings come from TANDEM_* environment variables (see mtl_model/config.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import IO, Any

from mtl_model.config import SettingsError, load_settings
from mtl_model.dates import days_between, parse_date
from mtl_model.pipeline.preflight import Refused, check_nights

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


# ----------------------------------------------------------------------------- argument types


def _date(text: str) -> date:
    try:
        return parse_date(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int_from(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value:g}")
    return value


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """The description as written; every option's default after its help (unless it says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS) and action.option_strings
        if shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, exit status 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """``--version``: Tandem's version and the versions of what it runs on (read when asked)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        from mtl_model import __version__

        parts = []
        for name in ("apache-airflow", "astronomer-cosmos", "dbt-core", "great-expectations", "torch"):
            try:
                parts.append(f"{name} {version(name)}")
            except PackageNotFoundError:
                parts.append(f"{name} (not installed)")
        print(f"tandem {__version__} ({', '.join(parts)})")
        parser.exit(EXIT_OK)


# ----------------------------------------------------------------------------- commands


def cmd_simulate(args: argparse.Namespace) -> int:
    from mtl_model.sources.simulate import SimConfig, main_summary_line, simulate

    config = SimConfig(n_users=args.users, n_items=args.items, seed=args.seed, bot_rate=args.bot_rate)
    started = time.perf_counter()
    summary = simulate(load_settings(), args.start, args.days, config)
    print(f"{main_summary_line(summary)} in {time.perf_counter() - started:.1f}s")
    return EXIT_OK


BAR_WIDTH = 30


def _progress(console: IO[str]) -> Callable[[Any], None]:
    """One line per finished task, on the terminal the command was started from; on an interactive
    terminal a progress bar under them too (tasks done of the night's, time so far), redrawn in place
    and cleared when the night ends. Logs and pipes get the lines only."""
    interactive = console.isatty()
    started = time.perf_counter()

    def show(done: Any) -> None:
        width = len(str(done.total))
        clear = "\r\x1b[K" if interactive else ""
        count = f"{done.done:>{width}}/{done.total}"
        console.write(f"{clear}  [{count}] {done.state:<7} {done.task_id} ({done.seconds:.1f}s)\n")
        if interactive and done.done < done.total:
            filled = BAR_WIDTH * done.done // max(done.total, 1)
            elapsed = time.perf_counter() - started
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            console.write(f"  [{bar}] {done.done}/{done.total} tasks, {elapsed:.0f}s")
        console.flush()

    return show


def _clear_bar(console: IO[str]) -> None:
    """Take the progress bar (if any) off an interactive terminal."""
    if console.isatty():
        console.write("\r\x1b[K")
        console.flush()


def _nights(prog: str, days: list[date]) -> int:
    """Run the nightly DAG for each day in order; stop at the first that fails (exit status 1)."""
    from mtl_model.pipeline.airflow_env import (
        DAG_ID,
        NightFailed,
        format_durations,
        is_ready,
        log_dir,
        run_day,
    )

    settings = load_settings()
    check_nights(settings, days)
    sys.stdout.flush()
    with os.fdopen(os.dup(1), "w") as console:  # the run sends fds 1 and 2 to its log files
        for i, ds in enumerate(days):
            first = "" if is_ready(settings) else "; first run: setting up Airflow's metadata DB (~20 s)"
            print(f"{prog} ds={ds}: starting (logs: {log_dir(settings, DAG_ID, ds)}{first})", flush=True)
            started = time.perf_counter()
            try:
                durations = run_day(settings, ds, progress=_progress(console))
            except NightFailed as failed:
                _clear_bar(console)
                for line in failed.lines(prog):
                    print(line, file=sys.stderr)
                if days[i + 1 :]:
                    print(f"  not run: {len(days) - i - 1} later day(s) from {days[i + 1]}", file=sys.stderr)
                return EXIT_FAILED
            _clear_bar(console)
            seconds = time.perf_counter() - started
            print(f"{prog} ds={ds}: success in {seconds:.0f}s ({format_durations(durations)})", flush=True)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    return _nights("tandem run", [args.ds])


def cmd_backfill(args: argparse.Namespace) -> int:
    if args.end < args.start:
        raise Refused(f"--end {args.end} is before --start {args.start}")
    days = days_between(args.start, args.end)
    if args.scheduler:
        return _scheduler_backfill(days)
    return _nights("tandem backfill", days)


BACKFILL_ATTEMPTS = 5


def scheduler_backfill_args(days: list[date], business_tz: str) -> list[str]:
    """``airflow backfill create`` for exactly ``days``: from the logical date of the first day's
    run to the last's (02:00 the day after each, in the business time zone; both ends included)."""
    from mtl_model.dates import logical_date_for
    from mtl_model.pipeline.airflow_env import DAG_ID

    first, last = (logical_date_for(d, business_tz).isoformat() for d in (days[0], days[-1]))
    return ["backfill", "create", "--dag-id", DAG_ID, "--from-date", first, "--to-date", last]


def _scheduler_backfill(days: list[date]) -> int:
    """Queue ``days`` as an Airflow backfill (Airflow's defaults otherwise); the scheduler runs them,
    each night after the nights before it (the first task waits)."""
    settings = load_settings()
    check_nights(settings, days)
    command = scheduler_backfill_args(days, settings.business_tz)
    print(f"tandem backfill: airflow {' '.join(command)}  (ds {days[0]}..{days[-1]})", flush=True)
    return _airflow_retried("tandem backfill", command)


def _airflow_retried(prog: str, command: list[str]) -> int:
    """``airflow <command>`` with the embedded deployment's settings, its output passed on; again
    (``BACKFILL_ATTEMPTS`` in all) while SQLite answers "database is locked"."""
    from mtl_model.pipeline.airflow_env import ensure_ready

    ensure_ready(load_settings())
    for attempt in range(BACKFILL_ATTEMPTS):  # SQLite answers "locked" at once to a write it would deadlock
        done = subprocess.run([sys.executable, "-m", "airflow", *command], capture_output=True, text=True)
        sys.stdout.write(done.stdout)
        if done.returncode == 0 or "database is locked" not in done.stderr + done.stdout:
            sys.stderr.write(done.stderr)
            return EXIT_OK if done.returncode == 0 else EXIT_FAILED
        print(f"{prog}: the metadata DB is busy; again in {2 * (attempt + 1)}s", file=sys.stderr)
        time.sleep(2 * (attempt + 1))
    return EXIT_FAILED


def trigger_args(ds: date, now: datetime | None = None) -> list[str]:
    """``airflow dags trigger`` for the night of ``ds``: the conf ``{"ds": ds}`` and a run id that
    names the day, ``manual__ds:<ds>__<now, UTC, seconds>``."""
    from mtl_model.pipeline.airflow_env import DAG_ID
    from mtl_model.pipeline.run_ids import run_id_for

    stamp = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    conf = json.dumps({"ds": ds.isoformat()})
    return ["dags", "trigger", DAG_ID, "--conf", conf, "--run-id", run_id_for("manual", ds, stamp)]


def cmd_trigger(args: argparse.Namespace) -> int:
    """Queue a manual run of the night of ``--ds`` for the running scheduler (``airflow dags
    trigger``); it replaces the day's outputs once the nights before it are done."""
    settings = load_settings()
    check_nights(settings, [args.ds])
    command = trigger_args(args.ds)
    print(f"tandem trigger: airflow {' '.join(command)}", flush=True)
    return _airflow_retried("tandem trigger", command)


RUN_COLUMNS = ("ds", "run_id", "state", "run_type", "note", "start_date", "end_date")


def nightly_runs(business_tz: str) -> list[dict[str, str]]:
    """Every run of the nightly DAG in the metadata DB (as ``airflow dags list-runs`` reads them),
    newest first, with the ds it processes (``run_ids.ds_of_run``: the conf's, else the day before
    its logical date or run_after; empty for a day not ended). Needs Airflow's environment set."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from mtl_model.pipeline.airflow_env import DAG_ID
    from mtl_model.pipeline.run_ids import ds_of_run

    def stamp(value: datetime | None) -> str:
        return value.isoformat() if value else ""

    with create_session() as session:
        runs = sorted(DagRun.find(dag_id=DAG_ID, session=session), key=lambda r: r.run_after, reverse=True)
        return [
            {
                "ds": str(ds_of_run(run, business_tz) or ""),
                "run_id": run.run_id,
                "state": str(run.state),
                "run_type": str(run.run_type),
                "note": run.note or "",
                "start_date": stamp(run.start_date),
                "end_date": stamp(run.end_date),
            }
            for run in runs
        ]


def cmd_runs(args: argparse.Namespace) -> int:
    """The nightly DAG's runs with their ds: a table (``ds | run_id | state | …``) or ``-o json``."""
    from mtl_model.pipeline.airflow_env import ensure_ready

    settings = load_settings()
    ensure_ready(settings)
    rows = nightly_runs(settings.business_tz)
    if args.output == "json":
        print(json.dumps(rows))
        return EXIT_OK
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in RUN_COLUMNS}
    for row in [dict(zip(RUN_COLUMNS, RUN_COLUMNS, strict=True)), *rows]:
        print(" | ".join(row[c].ljust(widths[c]) for c in RUN_COLUMNS).rstrip())
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """The night's summary; exit status 1 when nothing (or not the asked day) is published."""
    settings = load_settings()
    recs = settings.published_dir / "recommendations"
    if not settings.catalog_path.exists() or not any(recs.glob("ds=*/*.parquet")):
        print(
            f"tandem show: nothing published yet in {settings.published_dir}: "
            "run `tandem run --ds YYYY-MM-DD` first",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if args.ds is not None and not any(settings.published("recommendations", args.ds).glob("*.parquet")):
        print(f"tandem show: nothing published for ds={args.ds} in {settings.published_dir}", file=sys.stderr)
        return EXIT_FAILED
    from mtl_model.outputs.report import print_summary

    print_summary(settings, args.ds)
    return EXIT_OK


def cmd_airflow(args: argparse.Namespace) -> int:
    """Run an Airflow command (scheduler, dag-processor, api-server, backfill create, …) with the
    environment of the embedded deployment, after migrating its metadata DB once."""
    from mtl_model.pipeline.airflow_env import ensure_ready

    ensure_ready(load_settings())
    os.execvp(sys.executable, [sys.executable, "-m", "airflow", *args.airflow_args])
    return EXIT_OK  # not reached


# ----------------------------------------------------------------------------- the parser


def _add_night_parsers(sub: argparse._SubParsersAction) -> None:
    checked = """\
Before Airflow starts, each day is checked (the format; ended in TANDEM_BUSINESS_TZ; its events,
items and users landed; an earlier landed day to train on), and so are the settings and TANDEM_HOME:
a refusal is one line, exit status 2. Airflow, dbt and task output go to
TANDEM_HOME/logs/tandem_nightly/ds=D/ (run.log, and one log per task); the terminal gets a line per
finished task. A failed night prints the failed task, its error line and its log: exit status 1.
Runs in this process do not retry a failed task."""
    p = sub.add_parser(
        "run", help="run the nightly DAG for one day, in process (dag.test)", description=checked
    )
    p.add_argument("--ds", type=_date, required=True, help="the business day to process, YYYY-MM-DD")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "backfill", help="run the nightly DAG for each day from --start to --end", description=checked
    )
    p.add_argument("--start", type=_date, required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--end", type=_date, required=True, help="last day (included), YYYY-MM-DD")
    p.add_argument(
        "--scheduler",
        action="store_true",
        help="queue the days as an Airflow backfill for the running scheduler (airflow backfill create) "
        "instead of running them in this process",
    )
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser(
        "trigger",
        help="queue a run of one day for the running scheduler (airflow dags trigger), its ds in the run id",
        description="""\
Checks the day as `tandem run` does, then runs `airflow dags trigger tandem_nightly --conf
'{"ds": D}' --run-id manual__ds:D__<now>`: the scheduler runs it after any night of D or an earlier
day still queued or running; it replaces the day's outputs and published tables.""",
    )
    p.add_argument("--ds", type=_date, required=True, help="the business day to process, YYYY-MM-DD")
    p.set_defaults(func=cmd_trigger)

    p = sub.add_parser(
        "runs",
        help="list the nightly DAG's runs in Airflow's metadata DB, each with the ds it processes",
        description="Every run (scheduled, backfill, manual, in process), newest first: the ds it "
        "processes (the conf's, else the day before its logical date), its run id, state, type, note "
        "and times.",
    )
    p.add_argument("-o", "--output", choices=("table", "json"), default="table", help="the format")
    p.set_defaults(func=cmd_runs)


def _tidy(sub: argparse._SubParsersAction) -> None:
    """Every date flag reads its error in words (not 'invalid parse_date value'); every flag has help."""
    for parser in sub.choices.values():
        for action in parser._actions:
            if action.type is parse_date:
                action.type = _date
            if action.help is None and action.dest == "fmt":
                action.help = "the dataset's format (docs/datasets.md)"


def cmd_docs(args: argparse.Namespace) -> int:
    """The dbt docs site, with the settings passed; then where the report, index and Data Docs are."""
    from mtl_model.pipeline.docs import docs

    return docs(load_settings())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tandem", description=__doc__)
    parser.add_argument("--version", action=_Version, help="print the versions and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("simulate", help="write a simulated landing zone for a date range")
    p.add_argument("--start", type=_date, required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--days", type=_int_from(1), required=True, help="how many days, from --start")
    p.add_argument("--users", type=_int_from(1), default=2000, help="simulated users")
    p.add_argument("--items", type=_int_from(1), default=1000, help="simulated items")
    p.add_argument("--seed", type=_int_from(0), default=42, help="random seed (same seed, same files)")
    p.add_argument("--bot-rate", type=_rate, default=0.005, help="share of users that are click bots")
    p.set_defaults(func=cmd_simulate)

    from mtl_model.sources.ingest import add_ingest_parser

    add_ingest_parser(sub)
    _add_night_parsers(sub)

    p = sub.add_parser("show", help="summarise the published tables (exit status 1: nothing published)")
    p.add_argument("--ds", type=_date, default=None, help="the day to show (default: the latest published)")
    p.set_defaults(func=cmd_show)

    from mtl_model.outputs.query import add_query_parser

    add_query_parser(sub)
    p = sub.add_parser("docs", help="build the dbt docs of the project and say where every page is")
    p.set_defaults(func=cmd_docs)

    p = sub.add_parser("airflow", help="run an Airflow command with the embedded deployment's settings")
    p.add_argument("airflow_args", nargs=argparse.REMAINDER, help="the Airflow command and its arguments")
    p.set_defaults(func=cmd_airflow)
    _tidy(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad usage (a flag, a setting, a refused night) is one line, exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["airflow"]:  # everything after it is Airflow's, `--help` included
        args = argparse.Namespace(command="airflow", func=cmd_airflow, airflow_args=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"tandem: bad settings: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Refused as exc:
        print(f"tandem {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tandem: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
