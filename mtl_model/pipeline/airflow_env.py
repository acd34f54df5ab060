"""The embedded Airflow of the default deployment: environment, metadata DB, pool, in-process runs.

Import this before Airflow: :func:`configure` sets ``AIRFLOW_HOME`` and friends in ``os.environ``.

An in-process run (:func:`run_dag`, ``dag.test``) sends everything Airflow, cosmos and dbt print to
log files under ``TANDEM_HOME/logs/<dag_id>/ds=D/``: ``run.log`` (parsing the DAG, the run loop, the
DAG's callbacks) and one ``<task_id>.log`` per task, while the caller hears of each finished task
(``progress``). Tandem's own loggers (``mtl_model.*``, ``checks.*``) log at INFO into the task logs
(:func:`task_logging`); Airflow, cosmos and dbt stay at ``AIRFLOW__LOGGING__LOGGING_LEVEL`` (WARNING).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pluggy

from mtl_model.config import DAGS_DIR, Settings

DAG_ID = "tandem_nightly"
ANALYST_DAG_ID = "tandem_analyst_example"
DAG_FILES = {DAG_ID: "nightly.py", ANALYST_DAG_ID: "analysts_example.py"}
TANDEM_LOGGERS = ("mtl_model", "checks")
# Airflow's listener marker (airflow.listeners.hookimpl is this object), without importing Airflow
hookimpl = pluggy.HookimplMarker("airflow")
# the plugin module every Airflow process of the deployment loads: the DAG's timetable (which each
# process that serializes or reads the DAG must find registered) and the run notes (airflow_plugin.py)
PLUGIN_FILE = "tandem_plugin.py"
PLUGIN_SOURCE = (
    '"""Written by Tandem (mtl_model/pipeline/airflow_env.py): the nightly timetable, run notes."""\n'
    "from mtl_model.pipeline.airflow_plugin import TandemPlugin  # noqa: F401\n"
)


def _cores() -> int:
    """The cores this process may run on (at least 2: a sensor and the task it waits for)."""
    try:
        return max(2, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        return max(2, os.cpu_count() or 2)


def airflow_environ(settings: Settings) -> dict[str, str]:
    home = settings.airflow_home
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # a writer waits up to 60 s for SQLite's lock (the scheduler, the CLI and the task API all write)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}?timeout=60",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
        # LocalExecutor's worker processes: one per core (Airflow's default, 32, swamps a small box)
        "AIRFLOW__CORE__PARALLELISM": os.environ.get("AIRFLOW__CORE__PARALLELISM", str(_cores())),
        # parsing the DAG runs cosmos's `dbt ls` (cached after the first): 30 s is not enough on a busy box
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "180",
        "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "240",
        "DO_NOT_TRACK": "1",
        "GX_ANALYTICS_ENABLED": "False",
        **settings.as_env(),
    }


def install_plugin(folder: Path) -> Path:
    """Write Tandem's plugin module (:data:`PLUGIN_SOURCE`) into the plugins ``folder`` unless it is
    there already (by rename: a process loading plugins meanwhile reads the old or the new file)."""
    path = folder / PLUGIN_FILE
    if not path.exists() or path.read_text() != PLUGIN_SOURCE:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{PLUGIN_FILE}.{os.getpid()}")
        tmp.write_text(PLUGIN_SOURCE)
        tmp.replace(path)
    return path


def configure(settings: Settings) -> None:
    """Put the embedded Airflow's configuration into this process's environment, and Tandem's
    plugin into its plugins folder."""
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    environ = airflow_environ(settings)
    install_plugin(Path(environ["AIRFLOW__CORE__PLUGINS_FOLDER"]))
    os.environ.update(environ)


def _airflow(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "airflow", *args], check=True, stdout=subprocess.DEVNULL)


def is_ready(settings: Settings) -> bool:
    return (settings.airflow_home / ".tandem-ready").exists()


def ensure_ready(settings: Settings) -> None:
    """Migrate the metadata DB and create the one-slot warehouse pool, once per AIRFLOW_HOME."""
    configure(settings)
    if is_ready(settings):
        return
    _airflow("db", "migrate")
    _airflow("pools", "set", settings.warehouse_pool, "1", "DuckDB warehouse: one writer at a time")
    (settings.airflow_home / ".tandem-ready").touch()


# ----------------------------------------------------------------------------- task logs


class _InfoToAirflow(logging.Handler):
    """Hands the INFO records of Tandem's loggers to the root handlers Airflow configured, which drop
    records under their level (WARNING in the embedded deployment). Records at or above a handler's
    level reach it by propagation, so nothing is written twice."""

    def emit(self, record: logging.LogRecord) -> None:
        for handler in logging.getLogger().handlers:
            if record.levelno < handler.level:
                handler.handle(record)


_FOREIGN_DEPRECATIONS = (
    r"Using Variable\.get from `airflow\.models` is deprecated",  # cosmos's dbt ls cache
    r"The `airflow\.utils\.operator_helpers\.determine_kwargs` attribute is deprecated",  # standard provider
)


class _CosmosNoise(logging.Filter):
    """Drops cosmos's line per dbt node it has no task for (``Unavailable conversion function for
    <…UNIT_TEST>`` or ``<…EXPOSURE>``: the producer's ``dbt build`` runs the unit tests, exposures
    only document), printed each time a task process parses the DAG."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unavailable conversion function for <")


def task_logging(*names: str, level: int = logging.INFO) -> None:
    """Tandem's loggers (and ``names``) at ``level`` in the task logs, whatever Airflow's level, and
    cosmos's per-parse noise filtered out (idempotent)."""
    for name in TANDEM_LOGGERS + names:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(h, _InfoToAirflow) for h in logger.handlers):
            logger.addHandler(_InfoToAirflow())
    graph = logging.getLogger("cosmos.airflow.graph")
    if not any(isinstance(f, _CosmosNoise) for f in graph.filters):
        graph.addFilter(_CosmosNoise())
    # deprecations inside cosmos and Airflow's own providers, not Tandem's to fix: a line per parse
    for message in _FOREIGN_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message)


# ----------------------------------------------------------------------------- nights in date order

EARLIER_NIGHTS = 62  # a night waits for the scheduled or backfill runs of this many days before it


def earlier_nights_active(dag_id: str, ds: date, business_tz: str, own: datetime | None = None) -> int:
    """How many other runs of ``dag_id`` for ``ds`` or the days before it are queued or running,
    found by the logical dates the timetable gives them (02:00 the next day: scheduled and backfill
    runs; ``own`` is the asking run's logical date, not counted). Only callable inside a running task
    (Airflow's execution API)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from mtl_model.dates import logical_date_for

    dates = [logical_date_for(ds - timedelta(days=k), business_tz) for k in range(EARLIER_NIGHTS + 1)]
    if own is not None:
        dates = [d for d in dates if d != own]
    return RuntimeTaskInstance.get_dr_count(dag_id=dag_id, logical_dates=dates, states=["queued", "running"])


def night_wait_reason(
    settings: Settings, dag_id: str, ds: date, own: datetime | None = None
) -> tuple[str, str] | None:
    """Why the night of ``ds`` cannot start yet, as (kind, one line), or None when it can: another
    night of ``ds`` (a scheduled or backfill run: a manual rerun waits for it) or an earlier night still
    queued or running (``earlier``: nights run in date order, each on the warehouse,
    model registry and published tables the nights before it left, whatever number of runs Airflow
    starts at once, e.g. a backfill's 10), else the day not landed (``landing``: preflight's line)."""
    from mtl_model.pipeline.preflight import Refused, check_landed

    active = earlier_nights_active(dag_id, ds, settings.business_tz, own)
    if active:
        return "earlier", f"ds={ds}: waiting for {active} night(s) of this day or earlier (queued or running)"
    try:
        check_landed(settings, ds)
    except Refused as exc:
        return "landing", str(exc)
    return None


def resolve_night(settings: Settings, ctx: Any) -> Any:
    """The first task of a night (a rescheduled sensor): the run date from the run conf, else the
    logical date, else ``run_after``; done (the ds as its XCom) once :func:`night_wait_reason` has
    nothing to say. Waiting for an earlier night is logged at each look; a day not landed within
    ``landing_wait_hours`` of the run's start skips the night with the reason (nothing else runs)."""
    from airflow.sdk import PokeReturnValue
    from airflow.sdk.exceptions import AirflowSkipException

    from mtl_model.dates import resolve_run_date

    run = ctx["dag_run"]
    given = {"ds": ctx["params"].get("ds") or (run.conf or {}).get("ds")}
    ds = resolve_run_date(given, ctx.get("logical_date"), run.run_after, settings.business_tz)
    wait = night_wait_reason(settings, DAG_ID, ds, ctx.get("logical_date"))
    if wait is None:
        logging.getLogger(__name__).info("ds=%s: run %s processes this day", ds, run.run_id)
        return PokeReturnValue(is_done=True, xcom_value=ds.isoformat())
    kind, reason = wait
    now = datetime.now(UTC)
    waited = now - (run.start_date or now)
    if kind == "landing" and waited.total_seconds() >= settings.landing_wait_hours * 3600:
        raise AirflowSkipException(f"{reason} (waited {str(waited).split('.')[0]}: skipped, nothing run)")
    logging.getLogger(__name__).info("%s; next look in %ss", reason, settings.wait_poke_seconds)
    return PokeReturnValue(is_done=False)


def cosmos_sensors_in_place() -> None:
    """Let cosmos's watcher sensors finish without deferring (``deferrable=False`` in the DAG).

    A deferred sensor's trigger fires at once when the build has ended, and Airflow 3.3's scheduler
    can then fail the resumed attempt (``finished with state success, but the task instance's state
    attribute is queued``: both attempts share a key). Poking in place avoids it, but cosmos's poke,
    unlike its trigger, never ends for a node the successful build reported nothing about (a test
    detached from its two parents): it keeps waiting. This makes the poke end as the trigger does
    (success, "node not run"). Idempotent."""
    from cosmos.operators._watcher.base import BaseConsumerSensor
    from cosmos.operators._watcher.state import ProducerTaskState

    original = BaseConsumerSensor._handle_no_dbt_node_status
    if getattr(original, "_tandem", False):
        return

    def handle(self: Any, producer_task_state: str | None, try_number: int, context: Any) -> bool:
        if producer_task_state == ProducerTaskState.SUCCESS:
            self.log.info("the dbt build succeeded without a status for %s: not run", self.model_unique_id)
            return True
        return original(self, producer_task_state, try_number, context)

    handle._tandem = True  # type: ignore[attr-defined]
    BaseConsumerSensor._handle_no_dbt_node_status = handle  # type: ignore[method-assign]


def published_assets(settings: Settings) -> dict[str, Any]:
    """An Airflow ``Asset`` per published table (``tandem.<table>``, URI the table's folder): the
    outlets of the nightly publish task, and what analysts' DAGs schedule on."""
    from airflow.sdk import Asset

    from mtl_model.outputs.warehouse import OUTPUT_TABLES

    return {
        table: Asset(name=f"tandem.{table}", uri=(settings.published_dir / table).as_uri(), group="tandem")
        for table in OUTPUT_TABLES
    }


def log_dir(settings: Settings, dag_id: str, ds: date) -> Path:
    return settings.home / "logs" / dag_id / f"ds={ds}"


@dataclass(frozen=True)
class TaskDone:
    """A task that finished in an in-process run: its state, seconds, log file, and how many of the
    run's ``total`` tasks have finished with it (``done``)."""

    task_id: str
    state: str
    seconds: float
    log: Path
    done: int
    total: int


Progress = Callable[[TaskDone], None]


class _Output:
    """Points file descriptors 1 and 2 (so Python, Airflow, and the dbt subprocesses alike) at the
    run log, or at the log of the running task; puts them back on exit."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.run_log = folder / "run.log"
        self._fds: dict[Path, int] = {}
        self._saved: tuple[int, int] = (-1, -1)

    def task_log(self, task_id: str) -> Path:
        return self.folder / f"{task_id}.log"

    def point_at(self, path: Path) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        if path not in self._fds:  # truncated when first opened in this run, appended to after
            self._fds[path] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        os.dup2(self._fds[path], 1)
        os.dup2(self._fds[path], 2)

    def __enter__(self) -> _Output:
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.log"):
            old.unlink()
        self._saved = (os.dup(1), os.dup(2))
        self.point_at(self.run_log)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in (*self._saved, *self._fds.values()):
            os.close(fd)


class _TaskListener:
    """An Airflow listener (called in process by ``dag.test``): each task's output into its own log,
    and a :class:`TaskDone` for each finished task."""

    def __init__(self, output: _Output, total: int, progress: Progress | None) -> None:
        self.output, self.total, self.progress = output, total, progress
        self.done: list[TaskDone] = []
        self._started: dict[str, float] = {}

    def _finished(self, task_instance: Any, state: str) -> None:
        self.output.point_at(self.output.run_log)
        task_id = task_instance.task_id
        seconds = time.perf_counter() - self._started.get(task_id, time.perf_counter())
        done = TaskDone(
            task_id, state, seconds, self.output.task_log(task_id), len(self.done) + 1, self.total
        )
        self.done.append(done)
        if self.progress is not None:
            self.progress(done)

    @hookimpl
    def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
        self._started.setdefault(task_instance.task_id, time.perf_counter())
        self.output.point_at(self.output.task_log(task_instance.task_id))

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        self._finished(task_instance, "success")

    @hookimpl
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        self._finished(task_instance, "skipped")

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        state = str(getattr(task_instance.state, "value", task_instance.state) or "failed")
        self._finished(task_instance, "up_for_retry" if state == "up_for_retry" else "failed")


# ----------------------------------------------------------------------------- failures

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_STRUCTLOG_TAIL = re.compile(r"\s+\[[\w.]+\]\s+loc=\S+\s*$")  # " [cosmos.operators.x] loc=x.py:12"
_STRUCTLOG_HEAD = re.compile(r"^\S+Z \[(?:error|warning|info|critical)\s*\]\s+")
_DBT_ERROR = re.compile(r"\b((?:Runtime|Database|Compilation|Parsing|Dependency) Error in \w+ \S+)")
_DBT_FAILURE = re.compile(r"\b(Failure in (?:test|unit_test|model) \S+)")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Failed|Refused)\b:?")


def _clean(line: str) -> str:
    return _STRUCTLOG_TAIL.sub("", _STRUCTLOG_HEAD.sub("", _ANSI.sub("", line))).strip()


def _next_text(lines: list[str], i: int) -> str:
    """The first non-blank line after ``lines[i]``, cleaned."""
    return next((_clean(x) for x in lines[i + 1 :] if _clean(x)), "")


def first_error_line(text: str) -> str:
    """The line of a task log that says what went wrong: dbt's first error (``Runtime Error in model
    x: <its message>``) or failed test, else the exception of the first Python traceback (with its
    next line when it ends in ':', as a failed data check does), else the first error-level line."""
    lines = text.splitlines()
    for pattern in (_DBT_ERROR, _DBT_FAILURE):
        for i, line in enumerate(lines):
            if match := pattern.search(_ANSI.sub("", line)):
                return f"{match.group(1)}: {_next_text(lines, i)}"
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            for j in range(i + 1, len(lines)):
                if _EXCEPTION.match(lines[j]):
                    exc = _clean(lines[j])
                    return f"{exc} {_next_text(lines, j)}" if exc.endswith(":") else exc
    for line in lines:
        if "[error" in line or " ERROR " in line:
            return _clean(line)
    return "(no error line in the log)"


@dataclass(eq=False)
class NightFailed(RuntimeError):
    """An in-process run that did not succeed: the first task that failed, the line of its log that
    says why, that log, and the other failed and the not-run tasks. When dbt failed, ``task_id`` is
    the failed model's (or test's) task and ``within`` the task that ran the dbt build."""

    dag_id: str
    ds: date
    task_id: str
    error: str
    log: Path
    seconds: float
    also_failed: list[str] = field(default_factory=list)
    not_run: int = 0
    within: str = ""

    def __post_init__(self) -> None:
        super().__init__(self.lines("tandem run")[0])

    def lines(self, prog: str) -> list[str]:
        """Three lines for a person: what failed, why, where the log is."""
        others = ", ".join(self.also_failed[:5]) + (" …" if len(self.also_failed) > 5 else "")
        rest = [f"in the dbt build of {self.within}"] if self.within else []
        rest += [f"also failed: {others}"] if self.also_failed else []
        rest += [f"{self.not_run} not run"] if self.not_run else []
        more = f" ({'; '.join(rest)})" if rest else ""
        where = f"at task {self.task_id}" if self.task_id else "before any task ran"
        return [
            f"{prog} ds={self.ds}: failed after {self.seconds:.0f}s {where}{more}",
            f"  error: {self.error}",
            f"  log: {self.log}",
        ]


_DBT_NODE = re.compile(r"\b(model|test|unit_test|snapshot|seed) (\w+)")


def _dbt_node_task(error: str, task_ids: list[str]) -> str | None:
    """The task of the dbt node an error line names (``… in model stg_events`` → dbt.stg_events.run)."""
    match = _DBT_NODE.search(error)
    if not match:
        return None
    kind, name = match.groups()
    suffix = "run" if kind in ("model", "snapshot", "seed") else "test"
    wanted = (f"dbt.{name}.{suffix}", f"dbt.{name}_{suffix}", f"dbt.{name}.run", f"dbt.{name}_run")
    return next((t for t in wanted if t in task_ids), None)


def _failure(
    dag_id: str, ds: date, output: _Output, listener: _TaskListener, states: dict, seconds: float
) -> NightFailed:
    failed = [d for d in listener.done if d.state in ("failed", "up_for_retry")]
    if failed:
        task_id, log = failed[0].task_id, failed[0].log
    else:  # nothing failed while running (e.g. tasks never scheduled): the run log says why
        never = sorted(t for t, st in states.items() if st not in ("success", "skipped"))
        task_id, log = (never[0] if never else "(none: tasks never scheduled)"), output.run_log
    error = first_error_line(log.read_text(errors="replace")) if log.exists() else "(no log)"
    others = [d.task_id for d in failed[1:]]
    not_run = sum(1 for st in states.values() if st in ("upstream_failed", "None", "scheduled", "queued"))
    node = (
        _dbt_node_task(error, list(states))
        if _DBT_ERROR.search(error) or _DBT_FAILURE.search(error)
        else None
    )
    within = task_id if node and node != task_id else ""
    return NightFailed(dag_id, ds, node or task_id, error, log, seconds, others, not_run, within)


# ----------------------------------------------------------------------------- runs


def _producer_first(dag: Any) -> None:
    """``dag.test`` runs one task at a time: a cosmos watcher sensor started before its producer (the
    one ``dbt build``) would wait for it forever. In process, every sensor waits for the producer
    (the DAG file keeps cosmos's wiring, so under the scheduler the sensors watch the build live)."""
    for task in dag.tasks:
        producer = getattr(task, "producer_task_id", None)
        if producer and producer != task.task_id and producer not in task.upstream_task_ids:
            task.set_upstream(dag.get_task(producer))


def _task_instances(dag: Any) -> int:
    """How many task instances a run of ``dag`` has: a task mapped over a literal list counts once per
    element (``TANDEM_SCORE_PARTS``), every other task once."""
    total = 0
    for task in dag.tasks:
        spec = getattr(task, "_get_specified_expand_input", None)  # a MappedOperator's expand(...)
        mapped = getattr(spec(), "value", None) if callable(spec) else None
        lengths = [len(v) for v in mapped.values() if isinstance(v, list)] if isinstance(mapped, dict) else []
        total += max(lengths, default=1)
    return total


def _load_dag(dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR / DAG_FILES.get(dag_id, f"{dag_id}.py")))
    if bag.import_errors:
        path, error = next(iter(bag.import_errors.items()))
        raise RuntimeError(f"{path}: {first_error_line(str(error))}")
    return bag.dags[dag_id]


def run_dag(
    settings: Settings,
    dag_id: str,
    ds: date,
    *,
    conf: dict | None = None,
    logical_date: datetime | None = None,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Run ``dag_id`` once in this process (``dag.test``: no scheduler, no retries), its output in
    :func:`log_dir`. Returns each task's seconds (task id → end − start, in start order); raises
    :class:`NightFailed` unless every task succeeded (or was skipped)."""
    started = time.perf_counter()
    settings = settings.replace(task_retries=0)  # fail fast: nobody waits out a retry delay here
    with _Output(log_dir(settings, dag_id, ds)) as output:
        listener = _TaskListener(output, 0, progress)
        try:
            ensure_ready(settings)
            from airflow.sdk.listener import get_listener_manager

            dag = _load_dag(dag_id)
            _producer_first(dag)
            listener.total = _task_instances(dag)
            manager = get_listener_manager()
            manager.add_listener(listener)
            try:
                run = dag.test(logical_date=logical_date, run_conf=conf)
            finally:
                manager.pm.unregister(listener)
        except Exception as exc:  # noqa: BLE001 - the run log keeps the traceback; the caller gets a line
            logging.getLogger(__name__).exception("the run of %s for ds=%s did not start", dag_id, ds)
            error = first_error_line(f"Traceback (most recent call last)\n{type(exc).__name__}: {exc}")
            raise NightFailed(dag_id, ds, "", error, output.run_log, time.perf_counter() - started) from None
        tis = run.get_task_instances()
        states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in tis}
        # a run can end "success" with tasks never scheduled (e.g. a logical date before start_date)
        ok = str(getattr(run.state, "value", run.state)) == "success" and len(states) == len(dag.tasks)
        if not ok or any(st not in ("success", "skipped") for st in states.values()):
            raise _failure(dag_id, ds, output, listener, states, time.perf_counter() - started)
    timed = sorted((ti for ti in tis if ti.start_date and ti.end_date), key=lambda ti: ti.start_date)
    return {ti.task_id: (ti.end_date - ti.start_date).total_seconds() for ti in timed}


def run_day(settings: Settings, ds: date, progress: Progress | None = None) -> dict[str, float]:
    """The whole nightly DAG for ``ds`` in this process, as the 02:00 run after ``ds`` would run it
    (its logical date), with ``{"ds": ds}`` as the run conf; see :func:`run_dag`."""
    from mtl_model.dates import logical_date_for

    logical = logical_date_for(ds, settings.business_tz)
    return run_dag(settings, DAG_ID, ds, conf={"ds": ds.isoformat()}, logical_date=logical, progress=progress)


def format_durations(durations: dict[str, float]) -> str:
    """One line in start order, the dbt task group summed where it started, e.g.
    ``check_landing 1s, dbt 21s, check 3s, …`` (``resolve_ds`` left out)."""
    dbt = sum(s for t, s in durations.items() if t.startswith("dbt."))
    parts: list[str] = []
    for task_id in durations:
        if task_id.startswith("dbt."):
            if "dbt" not in parts:
                parts.append("dbt")
        elif task_id != "resolve_ds":
            parts.append(task_id)
    spent = {"dbt": dbt, **durations}
    return ", ".join(f"{t} {spent[t]:.0f}s" for t in parts)
