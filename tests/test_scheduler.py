"""The nightly DAG under the real Airflow 3.3 processes, and the export that reads its own day.

`test_backfill_under_the_scheduler_equals_nightly_runs` starts the api-server (the task processes'
execution API), the scheduler (LocalExecutor) and the dag-processor (no triggerer: no task defers) on
the embedded SQLite metadata DB of a tiny simulated home whose later day
(2026-03-05) already ran, unpauses the DAG, queues the documented backfill of 3 earlier days
(`tandem backfill --scheduler`: Airflow's default backfill settings, 10 active runs) and a manual
rerun of the last of them (`tandem trigger --ds`: `dags trigger --conf '{"ds": ...}'` with a run id
that names the day), waits for them, checks the ds on every run (`dags list-runs -o json`, the notes
through the REST API, `tandem runs -o json`), clears a finished task of one day with the documented
`tasks clear` and sees the rerun fail (an I/O error made for it) and its tasks after it
`upstream_failed`, clears those with the documented `--only-failed` form and waits until they ran
again (`publish` of one day, then `train` of another), and compares every published table with
`tandem backfill` (in process, date order) on a copy of the same landing zone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack, suppress
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from mtl_model.dates import logical_date_for
from mtl_model.outputs.warehouse import OUTPUT_TABLES, export_day
from mtl_model.pipeline.cli import scheduler_backfill_args, trigger_args
from mtl_model.pipeline.run_ids import ds_in_run_id, night_of
from tests.conftest import BUILT_DS, dbt_build, tandem_cli, tandem_env, tandem_settings

DAYS = [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]
LATER = date(2026, 3, 5)
RERUN = DAYS[-1]
DEADLINE_S = 1500  # bounded wait for the 4 runs (about 4 minutes on an idle 2-core machine)


def _published(home: Path, days: list[date]) -> dict[str, list[tuple]]:
    tables = {}
    for table in OUTPUT_TABLES:
        for ds in days:
            frame = pl.read_parquet(home / "published" / table / f"ds={ds}" / "part-0.parquet")
            tables[f"{table}/ds={ds}"] = frame.sort(frame.columns).rows()
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        for table in OUTPUT_TABLES:  # the warehouse copy: one set of rows per day, however often run
            tables[f"warehouse/{table}"] = con.execute(
                f"select ds, count(*) from {table} where ds between ? and ? group by ds order by ds",
                [days[0], days[-1]],
            ).fetchall()
    return tables


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metadata(home: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read Airflow's SQLite metadata DB (read-only; retried while a writer holds it)."""
    for _ in range(20):
        try:
            uri = f"file:{home / 'airflow' / 'airflow.db'}?mode=ro"
            with sqlite3.connect(uri, uri=True, timeout=10) as con:
                return con.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            last = exc
            time.sleep(0.5)
    raise last


RESTARTS = 1  # a crashed scheduler is started again once, as an operator's supervisor would
LOOP_DIED = "Exception when executing SchedulerJob._run_scheduler_loop"  # Airflow's log line


def _scheduler_died(scheduler: subprocess.Popen, logs: Path) -> bool:
    """The scheduler exited, or its loop died: Airflow 3.3's loop has been seen to die on SQLite under
    load (``ObjectDeletedError: Instance '<DagRun …>' has been deleted``, while other jobs loaded the
    machine), once with the process exiting and once with it left hanging in its shutdown; a
    liveness check (``airflow jobs check``) would restart it then. A hanging one is stopped here."""
    if scheduler.poll() is None and LOOP_DIED in (logs / "scheduler.log").read_text(errors="replace"):
        _stop({"scheduler": scheduler})
    return scheduler.poll() is not None


def _wait(what: str, check, deadline: float, procs: dict[str, subprocess.Popen], logs: Path):
    """Poll ``check`` until it returns a value; fail when an Airflow process exits. The scheduler
    only is restarted (``RESTARTS``) when it died (:func:`_scheduler_died`); its log is kept as
    ``scheduler.crashed-<k>.log``."""
    while time.monotonic() < deadline:
        if (got := check()) is not None:
            return got
        scheduler = procs.get("scheduler")
        if (
            scheduler is not None
            and getattr(scheduler, "restarts", 0) < RESTARTS
            and _scheduler_died(scheduler, logs)
        ):
            restarts = getattr(scheduler, "restarts", 0) + 1
            (logs / "scheduler.log").rename(logs / f"scheduler.crashed-{restarts}.log")
            procs["scheduler"] = _start("scheduler", ["scheduler"], scheduler.tandem_env, logs)
            procs["scheduler"].restarts = restarts
            print(f"{what}: the scheduler exited {scheduler.returncode}; started again ({restarts})")
            continue
        dead = {name: p.returncode for name, p in procs.items() if p.poll() is not None}
        if dead:
            tails = {n: (logs / f"{n}.log").read_text(errors="replace")[-2000:] for n in dead}
            pytest.fail(f"{what}: Airflow process(es) exited {dead}: {tails}")
        time.sleep(2)
    pytest.fail(f"{what}: not done within {DEADLINE_S}s")


def _start(name: str, args: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen:
    out = open(logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "mtl_model.pipeline.cli", "airflow", *args],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped with every child it starts
    )
    process.tandem_env = env  # what a restart needs
    return process


def _start_airflow(procs: dict[str, subprocess.Popen], env: dict[str, str], port: int, logs: Path) -> None:
    """The api-server on ``port``, the scheduler and the dag-processor (no triggerer: nothing defers)."""
    for name, args in {
        "api-server": ["api-server", "--port", str(port)],
        "scheduler": ["scheduler"],
        "dag-processor": ["dag-processor"],
    }.items():
        procs[name] = _start(name, args, env, logs)


def _stop(procs: dict[str, subprocess.Popen]) -> None:
    for p in procs.values():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
    for p in procs.values():  # whatever a process group still holds (task supervisors, dbt)
        with suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)


def _airflow_env(home: Path, settings, port: int, **extra: str) -> dict[str, str]:
    """The environment of the Airflow processes of a test: the api-server on ``port`` (the task
    processes' execution API) on loopback, ``extra`` on top (the executor, …)."""
    return tandem_env(
        home,
        settings,
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(_free_port()),  # not 8793: another test's may hold it
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        **extra,
    )


def _tandem(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``tandem <args>`` in ``env``; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "mtl_model.pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def _runs(home: Path) -> dict[str, dict]:
    rows = _metadata(
        home,
        "select run_id, state, run_type, conf, start_date, end_date from dag_run "
        "where dag_id = 'tandem_nightly'",
    )
    runs = {}
    for run_id, state, run_type, conf, start, end in rows:
        conf = json.loads(conf) if isinstance(conf, str) and conf.startswith("{") else {}
        runs[run_id] = {"state": state, "type": run_type, "conf": conf, "start": start, "end": end}
    return runs


def _task_times(home: Path, run_id: str) -> dict[str, tuple[str, str, str]]:
    rows = _metadata(
        home,
        "select task_id, state, start_date, end_date from task_instance "
        "where dag_id = 'tandem_nightly' and run_id = ?",
        (run_id,),
    )
    return {task: (state, start, end) for task, state, start, end in rows}


def _failure(home: Path) -> str | None:
    rows = _metadata(
        home,
        "select run_id, task_id, try_number from task_instance "
        "where dag_id = 'tandem_nightly' and state in ('failed', 'upstream_failed') order by end_date",
    )
    if not rows:
        return None
    run_id, task_id, attempt = rows[0]
    folder = home / "airflow" / "logs" / "dag_id=tandem_nightly" / f"run_id={run_id}" / f"task_id={task_id}"
    logs = list(folder.glob("*.log"))
    tail = logs[0].read_text(errors="replace")[-3000:] if logs else "(no log)"
    return f"{run_id} {task_id} try {attempt} failed: {tail}"


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace(" ", "T"))


def _json_list(text: str) -> list[dict]:
    """The JSON list an Airflow command printed (``-o json``), whatever lines come before it."""
    for line_start in [0, *(i + 1 for i, c in enumerate(text) if c == "\n")]:
        if text.startswith("[", line_start):
            with suppress(ValueError):
                return json.JSONDecoder().raw_decode(text[line_start:])[0]
    raise AssertionError(f"no JSON list in: {text[-2000:]}")


def _list_runs(env: dict[str, str]) -> dict[str, dict]:
    """``tandem airflow dags list-runs tandem_nightly -o json``, by run id."""
    done = _tandem(env, "airflow", "dags", "list-runs", "tandem_nightly", "-o", "json")
    return {run["run_id"]: run for run in _json_list(done.stdout)}


def _api_notes(home: Path, port: int) -> dict[str, str | None]:
    """Each run's note as the UI reads it (the REST API), logged in as ``admin`` with the password
    the api-server generated (docs/operators.md, the UI login)."""
    passwords = home / "airflow" / "simple_auth_manager_passwords.json.generated"
    body = json.dumps({"username": "admin", "password": json.loads(passwords.read_text())["admin"]})
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    login = urllib.request.Request(
        f"http://127.0.0.1:{port}/auth/token", body.encode(), {"Content-Type": "application/json"}
    )
    with direct.open(login, timeout=30) as answer:
        token = json.load(answer)["access_token"]
    runs = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v2/dags/tandem_nightly/dagRuns?limit=100",
        headers={"Authorization": f"Bearer {token}"},
    )
    with direct.open(runs, timeout=30) as answer:
        return {run["dag_run_id"]: run["note"] for run in json.load(answer)["dag_runs"]}


def _tries(home: Path, run_id: str) -> tuple[str, dict[str, tuple[str, int]]]:
    """The run's state and each of its task instances' (state, try number)."""
    sql = (
        "select task_id, state, try_number from task_instance where dag_id = 'tandem_nightly' and run_id = ?"
    )
    [(state,)] = _metadata(home, "select state from dag_run where run_id = ?", (run_id,))
    return state, {task: (st, n) for task, st, n in _metadata(home, sql, (run_id,))}


def _clear(env: dict[str, str], logical: str, task: str, *flags: str) -> str:
    """The documented ``tasks clear`` (docs/operators.md) of ``task`` and its downstream tasks of the
    run at ``logical``; returns the end of what it printed (for a wait's message)."""
    return _tandem(
        env,
        *("airflow", "tasks", "clear", "tandem_nightly", "--task-regex", task, "--downstream", *flags),
        *("--start-date", logical, "--end-date", logical, "--yes"),
    ).stdout[-300:]


def _fail_then_clear_failed(env: dict[str, str], home: Path, ds: date, task: str, wait) -> dict:
    """The two documented clears (docs/operators.md) on the backfill run of ``ds``, once it succeeded.

    1. ``task`` and its downstream tasks are cleared. The rerun of ``task`` fails: its step record's
       path is taken by a folder (an I/O error a night can meet), and so does its retry; the run
       fails and leaves the tasks after it ``upstream_failed``.
    2. With the folder gone, the ``--only-failed`` clear reruns exactly those, until the run succeeds.

    ``wait``: :func:`_wait` bound. Returns the tasks' (state, try) before, after 1 and after 2.
    """
    logical = logical_date_for(ds, "UTC").isoformat()
    run_id = f"backfill__{logical}"
    _, before = _tries(home, run_id)
    blocker = home / "outputs" / f"ds={ds}" / "steps" / f"{task}.json"
    blocker.unlink(missing_ok=True)
    blocker.mkdir()
    said = _clear(env, logical, task)

    def failed() -> dict | None:
        state, tasks = _tries(home, run_id)
        return tasks if state == "failed" and tasks[task][1] > before[task][1] else None

    stopped = wait(f"the cleared {task} of ds={ds} fails ({said})", failed)
    blocker.rmdir()
    said = _clear(env, logical, task, "--only-failed")

    def rerun() -> dict | None:
        state, tasks = _tries(home, run_id)
        again = all(tasks[t][1] > stopped[t][1] for t, (st, _) in stopped.items() if st != "success")
        return tasks if state == "success" and again else None

    ran = wait(f"the failed {task} of ds={ds} reran ({said})", rerun)
    return {"before": before, "failed": stopped, "rerun": ran}


def _assert_cleared(tries: dict, task: str, stopped: set[str]) -> None:
    """What :func:`_fail_then_clear_failed` saw: the clear reran ``task`` and the tasks after it
    (``stopped``) only; ``task`` failed twice (its retry) and left those ``upstream_failed``, never
    run; the ``--only-failed`` clear reran exactly ``task`` and ``stopped``, nothing else again."""
    before, failed, rerun = tries["before"], tries["failed"], tries["rerun"]
    not_ok = {t: st for t, (st, _) in failed.items() if st != "success"}
    assert not_ok == {task: "failed", **dict.fromkeys(stopped, "upstream_failed")}, failed
    assert failed[task][1] == before[task][1] + 2, (before, failed)  # the clear, the retry
    assert {t for t in rerun if rerun[t][1] > before[t][1]} == {task, *stopped}, (before, rerun)
    assert all(st == "success" for st, _ in rerun.values()), rerun


def _assert_ds_shown(
    runs: dict[str, dict], by_ds: dict[str, str], listed: dict, notes: dict, ours: dict
) -> None:
    """The ds on every run: in the run id of the scheduled and the manual runs (``dags list-runs``),
    the logical date D+1 02:00 of a backfill run (Airflow names those), the note of each (the UI),
    and a column of ``tandem runs`` (``ours``: run id → its row), for the in-process run too."""
    [scheduled] = [r for r, v in runs.items() if v["type"] == "scheduled"]
    night = str(night_of(datetime.fromisoformat(listed[scheduled]["logical_date"]), "UTC"))
    assert scheduled == f"scheduled__ds:{night}__{listed[scheduled]['logical_date']}"
    [manual] = [r for r, v in runs.items() if v["type"] == "manual" and v["conf"]]
    assert manual in listed and ds_in_run_id(manual) == by_ds[manual] == str(RERUN), manual
    for ds in DAYS:
        logical = logical_date_for(ds, "UTC").isoformat()
        assert listed[f"backfill__{logical}"]["logical_date"] == logical
    for run_id, ds in {**by_ds, scheduled: night}.items():
        assert notes[run_id] == f"ds={ds}", (run_id, notes)
        assert ours[run_id]["ds"] == ds and ours[run_id]["note"] == f"ds={ds}", ours[run_id]
    [in_process] = [r for r in ours if r not in runs]  # `tandem run --ds LATER` (dag.test)
    assert ours[in_process]["ds"] == str(LATER) and set(ours) == set(listed)


def _scheduler_env(home: Path, port: int, dbt_tasks: str = "build") -> dict[str, str]:
    """The Airflow processes' environment of a scheduler test: LocalExecutor, quick looks and
    retries; by default the night's dbt build as one task (``dbt_tasks="models"``: cosmos's task per
    dbt model, the default of Settings)."""
    settings = tandem_settings(
        home,
        wait_poke_seconds=10,
        landing_wait_hours=0,
        task_retries=1,
        retry_delay_seconds=5,
        dbt_tasks=dbt_tasks,  # build: ~45 fewer task processes a night (the reference: cosmos's)
    )
    return _airflow_env(
        home,
        settings,
        port,
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
    )


def _airflow_up(
    stack: ExitStack, env: dict[str, str], home: Path, port: int, logs: Path, seconds: float
) -> tuple[dict[str, subprocess.Popen], Callable, float]:
    """The api-server, the scheduler and the dag-processor started (stopped when ``stack`` closes)
    and ready (:func:`_ready`). Returns the processes, :func:`_wait` bound to them with a deadline
    ``seconds`` from now, and that deadline."""
    procs: dict[str, subprocess.Popen] = {}
    stack.callback(_stop, procs)
    _start_airflow(procs, env, port, logs)
    deadline = time.monotonic() + seconds

    def wait(what: str, check):
        return _wait(what, check, deadline, procs, logs)

    _ready(home, port, wait)
    return procs, wait, deadline


def _ready(home: Path, port: int, wait) -> None:
    """Wait (``wait``: :func:`_wait` bound) until the dag-processor has parsed the DAG (serialized,
    so with Tandem's timetable registered) and the api-server answers."""

    def parsed() -> bool | None:
        rows = _metadata(home, "select count(*) from serialized_dag where dag_id = 'tandem_nightly'")
        return True if rows[0][0] else None

    def healthy() -> bool | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5):
                return True
        except OSError:
            return None

    wait("dag-processor parses the DAG", parsed)
    wait("api-server answers", healthy)


def _nights_in_date_order(sched: Path, runs: dict[str, dict]) -> dict[str, str]:
    """The backfill ran exactly DAYS, unpausing's run was skipped, and the nights ran one at a time
    in date order, the manual rerun after its backfill run. Returns the backfill and manual runs'
    ds as their first task resolved it (run id → ds)."""
    # the backfill ran exactly DAYS, each run's first task resolved its day
    backfill = {r: v for r, v in runs.items() if v["type"] == "backfill"}
    by_ds = {}
    for run_id in [*backfill, *(r for r, v in runs.items() if v["type"] == "manual" and v["conf"])]:
        ds = _metadata(
            sched,
            "select value from xcom where dag_id = 'tandem_nightly' and run_id = ? "
            "and task_id = 'resolve_ds' and key = 'return_value'",
            (run_id,),
        )
        by_ds[run_id] = json.loads(ds[0][0]) if isinstance(ds[0][0], str) else ds[0][0]
    assert sorted(by_ds[r] for r in backfill) == [str(d) for d in DAYS]
    # unpausing queued the run of yesterday (not landed): skipped with the reason, not failed
    [scheduled] = [r for r, v in runs.items() if v["type"] == "scheduled"]
    assert _task_times(sched, scheduled)["resolve_ds"][0] == "skipped"
    # the nights ran one at a time, in date order, the manual rerun of RERUN after its backfill run:
    # from the end of each run's first task (its wait) to the end of its run, no two overlap
    spans = sorted(
        (_ts(_task_times(sched, r)["resolve_ds"][2]), _ts(runs[r]["end"]), by_ds[r], runs[r]["type"])
        for r in by_ds
    )
    assert [(ds, kind) for _, _, ds, kind in spans] == [
        *((str(d), "backfill") for d in DAYS),
        (str(RERUN), "manual"),
    ]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans
    return by_ds


@pytest.mark.slow
def test_backfill_under_the_scheduler_equals_nightly_runs(landed: Path, tmp_path: Path) -> None:
    sched, ref, logs = tmp_path / "sched", tmp_path / "ref", tmp_path / "procs"
    for home in (sched, ref):
        shutil.copytree(landed / "landing", home / "landing")
    logs.mkdir()
    # nightly runs in date order, in process: the reference (in the background meanwhile)
    with ExitStack() as stack:
        reference = subprocess.Popen(
            [sys.executable, "-m", "mtl_model.pipeline.cli", "backfill"]
            + ["--start", str(DAYS[0]), "--end", str(DAYS[-1])],
            env=tandem_env(ref),
            stdout=stack.enter_context(open(logs / "reference.log", "w")),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(lambda: reference.poll() is None and os.killpg(reference.pid, signal.SIGKILL))
        # a later day already ran (in process): its model is in the registry before the backfill
        later = tandem_cli(sched, "run", "--ds", str(LATER))
        assert later.returncode == 0, later.stdout[-2000:] + later.stderr[-2000:]

        port = _free_port()
        env = _scheduler_env(sched, port)
        before = set(_runs(sched))  # the later day's in-process run
        procs, wait, deadline = _airflow_up(stack, env, sched, port, logs, DEADLINE_S)

        def cli(*args: str) -> subprocess.CompletedProcess:
            return _tandem(env, *args)

        # the documented commands (docs/operators.md): unpause, the backfill, a manual rerun of a day
        cli("airflow", "dags", "unpause", "tandem_nightly")
        queued = cli("backfill", "--start", str(DAYS[0]), "--end", str(DAYS[-1]), "--scheduler")
        assert " ".join(scheduler_backfill_args(DAYS, "UTC")) in queued.stdout
        triggered = cli("trigger", "--ds", str(RERUN))  # airflow dags trigger, conf {"ds": …}, the run id
        assert f"--run-id manual__ds:{RERUN}__" in triggered.stdout, triggered.stdout

        def finished() -> dict | None:
            if (failed := _failure(sched)) is not None:
                pytest.fail(failed)
            runs = {r: v for r, v in _runs(sched).items() if r not in before}
            mine = {r: v for r, v in runs.items() if v["type"] in ("backfill", "manual")}
            mine = {r: v for r, v in mine.items() if v["type"] == "backfill" or v["conf"].get("ds")}
            done = len(mine) == len(DAYS) + 1 and all(v["state"] == "success" for v in mine.values())
            return runs if done else None

        runs = wait("the backfill and the rerun succeed", finished)
        listed, notes = _list_runs(env), _api_notes(sched, port)
        # a finished task cleared and run again (with its downstream tasks) fails; cleared again with
        # --only-failed, it and what it stopped run once more: the day replaced again, not doubled
        tries = _fail_then_clear_failed(env, sched, DAYS[1], "publish", wait)
        _assert_cleared(tries, "publish", {"report"})
        # the same for a failed train of the first day: the model retrained (after the later day's),
        # the day scored and published again by it
        tries = _fail_then_clear_failed(env, sched, DAYS[0], "train", wait)
        _assert_cleared(tries, "train", {"score", "anomalies", "publish", "report"})
        _stop(procs)
        ours = {run["run_id"]: run for run in _json_list(_tandem(env, "runs", "-o", "json").stdout)}
        assert reference.wait(timeout=max(60, deadline - time.monotonic())) == 0, (
            logs / "reference.log"
        ).read_text()[-3000:]

    by_ds = _nights_in_date_order(sched, runs)
    _assert_ds_shown(runs, by_ds, listed, notes, ours)
    # every published table equals the nightly runs' (the reruns replaced their day, nothing doubled)
    got, want = _published(sched, DAYS), _published(ref, DAYS)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == want[key], key


def test_export_reads_its_own_day_whichever_build_ran_last(built_home: Path, tmp_path: Path) -> None:
    """The export of day D after dbt built D + 1 equals the export of D right after D's own build."""
    settings = tandem_settings(built_home)
    earlier = BUILT_DS - timedelta(days=1)
    own = export_day(settings, BUILT_DS)
    first = {p.name: pl.read_parquet(p) for p in settings.export_dir(BUILT_DS).glob("*.parquet")}
    built = dbt_build(built_home, BUILT_DS + timedelta(days=1))  # another night's build ran since
    assert built.returncode == 0, built.stdout[-3000:]
    again = export_day(settings, BUILT_DS)
    assert again == own
    for name, frame in first.items():
        assert pl.read_parquet(settings.export_dir(BUILT_DS) / name).equals(frame), name
    # and a day whose marts were never built is refused in one line, not exported from another day
    with pytest.raises(RuntimeError, match=f"ds={earlier - timedelta(days=30)}: the warehouse has no"):
        export_day(settings, earlier - timedelta(days=30))


def test_scheduler_backfill_covers_exactly_the_days() -> None:
    """`tandem backfill --scheduler` names the logical dates of the first and the last day's runs
    (02:00 the next day in the business time zone; Airflow includes both ends)."""
    args = scheduler_backfill_args(DAYS, "UTC")
    assert args[args.index("--from-date") + 1] == "2026-03-03T02:00:00+00:00"
    assert args[args.index("--to-date") + 1] == "2026-03-05T02:00:00+00:00"
    tokyo = scheduler_backfill_args([date(2026, 7, 1)], "Asia/Tokyo")
    assert tokyo[tokyo.index("--from-date") + 1] == tokyo[tokyo.index("--to-date") + 1]
    assert tokyo[tokyo.index("--to-date") + 1] == "2026-07-02T02:00:00+09:00"


def test_trigger_names_the_day_in_the_run_id() -> None:
    """`tandem trigger --ds D`: Airflow's trigger with the conf ds and a run id that names the day
    (``:``, not ``=``: Airflow's allowed_run_id_pattern); a scheduled run's ds is the day before."""
    now = datetime(2026, 12, 2, 13, 5, 7, 250, tzinfo=UTC)
    args = trigger_args(RERUN, now)
    assert args == [
        *("dags", "trigger", "tandem_nightly", "--conf", '{"ds": "2026-03-04"}'),
        *("--run-id", "manual__ds:2026-03-04__2026-12-02T13:05:07+00:00"),
    ]
    assert (
        ds_in_run_id(args[-1]) == "2026-03-04" and ds_in_run_id("backfill__2026-03-05T02:00:00+00:00") is None
    )
    assert re.fullmatch(r"[A-Za-z0-9_.~:+-]+", args[-1])
    # 02:00 in Tokyo on 07-02 is 17:00 UTC on 07-01: the night of 07-01 (Tokyo's day before)
    assert night_of(datetime(2026, 7, 1, 17, 0, tzinfo=UTC), "Asia/Tokyo") == date(2026, 7, 1)


def test_tandem_airflow_passes_help_through(tmp_path: Path) -> None:
    done = tandem_cli(tmp_path, "airflow", "--help", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage: airflow" in done.stdout and "backfill" in done.stdout
