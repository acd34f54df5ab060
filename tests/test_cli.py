"""`tandem` as a user meets it: --version, help on every flag, exit codes 0 / 1 / 2, refusals in one
line before Airflow starts, and a night that reports one line per task and fails in plain words."""

from __future__ import annotations

import argparse
import http.server
import io
import json
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from mtl_model.outputs.warehouse import OUTPUT_TABLES
from mtl_model.pipeline.airflow_env import first_error_line
from mtl_model.pipeline.cli import build_parser
from tests.conftest import LAST, START, tandem_env

DS = LAST - timedelta(days=1)


def cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mtl_model.pipeline.cli", *args],
        env=tandem_env(home, **env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_version(tmp_path: Path) -> None:
    out = cli(tmp_path, "--version")
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"tandem 0\.1\.0 \(apache-airflow 3\.3\.\d+, .*torch 2\.13\.\d.*\)\n", out.stdout)


def test_every_flag_has_help_and_shows_its_default() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    expected = {
        "simulate",
        "ingest",
        "run",
        "backfill",
        "trigger",
        "runs",
        "show",
        "query",
        "docs",
        "airflow",
    }
    assert set(commands.choices) == expected
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help, f"tandem {name} {action.option_strings or action.dest} has no help"
    assert all(c.help for c in commands._choices_actions)  # and every command, in `tandem --help`
    assert (
        "--users USERS        simulated users (default: 2000)" in commands.choices["simulate"].format_help()
    )


@pytest.fixture()
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "not-a-folder"
    path.write_text("")
    return path


REFUSALS = {
    "bad date": (["run", "--ds", "2026-13-01"], {}, "argument --ds: not a date (YYYY-MM-DD): '2026-13-01'"),
    "zero days": (
        ["simulate", "--start", "2026-03-01", "--days", "0"],
        {},
        "--days: must be at least 1, got 0",
    ),
    "ingest date": (["ingest", "--format", "rees46", "--start", "nope", "x.csv"], {}, "--start: not a date"),
    "end before start": (["backfill", "--start", str(LAST), "--end", str(START)], {}, "is before --start"),
    "not ended": (["run", "--ds", "2999-01-01"], {}, "ds=2999-01-01 has not ended yet in UTC"),
    "bad setting": (["run", "--ds", str(DS)], {"TANDEM_TOPK": "3"}, "did you mean TANDEM_TOP_K?"),
    "first day": (["run", "--ds", str(START)], {}, f"ds={START}: training needs an earlier day of its"),
    "not landed": (
        ["backfill", "--start", str(DS), "--end", str(LAST + timedelta(days=1))],
        {},
        f"ds={LAST + timedelta(days=1)}: no events landed",
    ),
    "webhook, no URL": (
        ["run", "--ds", str(DS)],
        {"TANDEM_NOTIFY": "webhook"},
        "TANDEM_NOTIFY_WEBHOOK_URL='': needed when notify=webhook",
    ),
    "bad recipient": (["show"], {"TANDEM_NOTIFY_EMAIL_TO": "ops"}, "not an e-mail address: 'ops'"),
    "nothing landed": (["run", "--ds", str(DS)], {"TANDEM_LANDING_DIR": "{tmp}/empty"}, "nothing under"),
    "home is a file": (
        ["run", "--ds", str(DS)],
        {"TANDEM_HOME": "{file}"},
        "TANDEM_HOME: the night writes in",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_usage_is_one_line_exit_2_before_airflow_starts(
    case: str, home: Path, tmp_path: Path, a_file: Path
) -> None:
    args, env, says = REFUSALS[case]
    env = {k: v.format(tmp=tmp_path, file=a_file) for k, v in env.items()}
    out = cli(home, *args, **env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == "" and out.stderr.count("\n") == 1, out.stderr  # one line
    assert says in out.stderr
    assert not (home / "airflow").exists()  # refused before Airflow was set up, let alone started


def test_show_exits_1_when_nothing_is_published(home: Path) -> None:
    out = cli(home, "show")
    assert out.returncode == 1
    assert out.stderr.startswith("tandem show: nothing published yet")


@pytest.fixture()
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A webhook receiver on 127.0.0.1: its URL and the JSON bodies POSTed to it."""
    posted: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posted.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/tandem", posted
    server.shutdown()


LOCK_HOLDER = (  # a read-write session on the warehouse, held until killed
    "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(900)"
)
TASK_LINE = re.compile(r"  \[ *(\d+)/(\d+)\] (success|failed|skipped) +(\S+) \(\d+\.\ds\)")


def _assert_quiet_success(out: subprocess.CompletedProcess, logs: Path) -> None:
    """One line to start, one per task, one to end; dbt, cosmos and Airflow output in the logs."""
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert out.stderr == ""
    lines = out.stdout.splitlines()
    assert (
        lines[0]
        == f"tandem run ds={DS}: starting (logs: {logs}; first run: setting up Airflow's metadata DB (~20 s))"
    )
    assert re.fullmatch(
        rf"tandem run ds={DS}: success in \d+s \(check_landing \d+s, dbt \d+s, check \d+s, .*report \d+s\)",
        lines[-1],
    )
    tasks = [TASK_LINE.fullmatch(line) for line in lines[1:-1]]
    assert all(tasks), [line for line, m in zip(lines[1:-1], tasks, strict=True) if not m]
    total = int(tasks[0].group(2))
    assert [int(m.group(1)) for m in tasks] == list(range(1, total + 1))  # every task, once, all green
    assert {m.group(3) for m in tasks} == {"success"}
    assert {"resolve_ds", "check_landing", "dbt.dbt_producer_watcher", "train", "publish", "report"} <= {
        m.group(4) for m in tasks
    }
    assert '"resource_type"' in (logs / "run.log").read_text()  # cosmos's dbt ls JSON: in the log only
    train_log = (logs / "train.log").read_text()
    # INFO lines; the most epochs is 2, or more on this small window (TANDEM_MIN_STEPS)
    assert re.search(r"epoch 1/\d+: train loss", train_log) and " samples/s, validation" in train_log


@pytest.mark.slow
def test_a_night_reports_each_task_then_a_failed_one_in_plain_words(
    home: Path, webhook: tuple[str, list[dict]]
) -> None:
    logs = home / "logs" / "tandem_nightly"
    _assert_quiet_success(cli(home, "run", "--ds", str(DS)), logs / f"ds={DS}")
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:  # publish emitted an Asset per table
        events = db.execute(
            "select a.name, e.extra from asset_event e join asset a on a.id = e.asset_id"
        ).fetchall()
    assert sorted(name for name, _ in events) == sorted(f"tandem.{t}" for t in OUTPUT_TABLES)
    assert {json.loads(extra)["ds"] for _, extra in events} == {str(DS)}

    # another process holds the warehouse's write lock (an analyst's stray read-write session):
    # the dbt build cannot open it; retries are asked for, a webhook too
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(home / "warehouse.duckdb")], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    url, posted = webhook
    failed = cli(
        home,
        "run",
        "--ds",
        str(LAST),
        TANDEM_TASK_RETRIES="2",
        TANDEM_NOTIFY="webhook",
        TANDEM_NOTIFY_WEBHOOK_URL=url,
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )
    holder.kill()
    holder.wait()
    assert failed.returncode == 1, failed.stdout[-4000:] + failed.stderr[-4000:]
    assert "Traceback" not in failed.stdout + failed.stderr
    head, error, log = failed.stderr.splitlines()  # what failed, why, where to read more
    assert head.startswith(f"tandem run ds={LAST}: failed after ")
    assert " at task dbt.dbt_producer_watcher (" in head and " not run)" in head
    assert error.startswith("  error: ") and "lock" in error, error  # the cause, from the dbt output
    log_path = Path(log.removeprefix("  log: "))
    assert log_path == logs / f"ds={LAST}" / "dbt.dbt_producer_watcher.log"
    assert error.removeprefix("  error: ")[:40] in log_path.read_text()
    lines = failed.stdout.splitlines()
    assert TASK_LINE.fullmatch(lines[-1]).group(3, 4) == ("failed", "dbt.dbt_producer_watcher")
    assert "up_for_retry" not in failed.stdout  # in process a task fails once: no retry, no delay
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        producer = db.execute(
            "select state, try_number, max_tries from task_instance "
            "where task_id = 'dbt.dbt_producer_watcher' order by start_date desc limit 1"
        ).fetchall()
    assert producer == [("failed", 1, 0)]
    # the DAG's on_failure_callback ran the configured notifier
    assert [(p["dag_id"], p["ds"], p["state"]) for p in posted] == [("tandem_nightly", str(LAST), "failed")]


DBT_LOG = "\n".join(  # a failed dbt build as the producer's task log shows it
    [
        "2026-12-02T00:11:05.1Z [error    ] 00:11:04  1 of 46 ERROR creating sql incremental model "
        "main.stg_events__landed [\x1b[31mERROR\x1b[0m in 0.1s] [cosmos.operators._watcher.base] "
        "loc=base.py:227",
        "2026-12-02T00:11:05.2Z [error    ] 00:11:04    Runtime Error in model stg_events__landed "
        "(models/staging/stg_events__landed.sql)",
        "  Conversion Error: Could not convert string 'third' to INT32 when casting from source column "
        "position",
        "   [cosmos.operators._watcher.base] loc=base.py:227",
        "2026-12-02T00:11:06.0Z [error    ] Task failed with exception     [task] loc=task_runner.py:1651",
        "Traceback (most recent call last):",
        '  File "cosmos/operators/local.py", line 305, in handle_exception_subprocess',
        "airflow.sdk.exceptions.AirflowException: dbt command failed. The command returned a non-zero "
        "exit code 1.",
    ]
)
GX_LOG = """\
2026-12-02T00:11:06.0Z [warning  ] 1 warning-level check failed [checks.runner] loc=runner.py:267
2026-12-02T00:11:06.0Z [error    ] Task failed with exception     [task] loc=task_runner.py:1651
Traceback (most recent call last):
  File "checks/runner.py", line 273, in run_checks
checks.runner.DataCheckError: 1 data check(s) failed for ds=2026-03-05:
  - events: expect_column_mean_to_be_between(column=click) observed 0.0
"""


@pytest.mark.parametrize(
    ("log", "line"),
    [
        (
            DBT_LOG,
            "Runtime Error in model stg_events__landed: Conversion Error: Could not convert string 'third' "
            "to INT32 when casting from source column position",
        ),
        (
            GX_LOG,
            "checks.runner.DataCheckError: 1 data check(s) failed for ds=2026-03-05: - events: "
            "expect_column_mean_to_be_between(column=click) observed 0.0",
        ),
        ("Traceback (most recent call last):\n  File x\nValueError: no rows\n", "ValueError: no rows"),
        ("nothing wrong here\n", "(no error line in the log)"),
    ],
    ids=["dbt", "gx", "python", "none"],
)
def test_the_error_line_of_a_task_log(log: str, line: str) -> None:
    assert first_error_line(log) == line


class _Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [True, False])
def test_a_progress_bar_on_a_terminal_only(tty: bool) -> None:
    from mtl_model.pipeline.airflow_env import TaskDone
    from mtl_model.pipeline.cli import _clear_bar, _progress

    console = _Terminal(tty)
    show = _progress(console)
    for k in (1, 2):
        show(TaskDone(f"task_{k}", "success", 1.5, Path("x.log"), k, 4))
    if tty:  # each task line clears the bar, which is drawn again under it
        lines = console.getvalue().split("\r\x1b[K")
        assert lines[1].startswith("  [1/4] success task_1 (1.5s)\n  [#######") and " 1/4 tasks, " in lines[1]
        assert lines[2].startswith("  [2/4] success task_2 (1.5s)\n  [###############...")
        assert "2/4 tasks" in lines[2]
        _clear_bar(console)
        assert console.getvalue().endswith("\r\x1b[K")
    else:  # a pipe or a log gets the task lines only
        assert console.getvalue() == "  [1/4] success task_1 (1.5s)\n  [2/4] success task_2 (1.5s)\n"
