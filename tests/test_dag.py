"""The DAG file imports cleanly under the real Airflow, with the wiring the design asks for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mtl_model.outputs.warehouse import OUTPUT_TABLES
from tests.conftest import tandem_env

PROBE = r"""
import copy, json, sys
from mtl_model.pipeline.airflow_env import _task_instances, ensure_ready
from mtl_model.config import DAGS_DIR, load_settings
# a migrated metadata DB and the pool, as in any deployment (cosmos caches dbt ls there)
ensure_ready(load_settings())
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=str(DAGS_DIR))
dag = bag.dags["tandem_nightly"]
tasks = {t.task_id: {"pool": t.pool, "operator": type(t).__name__, "queue": t.queue, "retries": t.retries,
                     "upstream": sorted(t.upstream_task_ids)} for t in dag.tasks}
producer = dag.task_dict.get("dbt.dbt_producer_watcher")
dbt_vars = getattr(producer, "vars", None)
for t in dag.tasks:
    tasks[t.task_id].update(owner=t.owner, timeout=t.execution_timeout.total_seconds())
def accepts(conf):  # what a run's conf makes of the ds param (Airflow merges conf into the params)
    try:
        params = copy.deepcopy(dag.params)
        params.update(conf or {})
        return params.validate()["ds"] or "null"
    except Exception as exc:
        return type(exc).__name__
analyst = bag.dags["tandem_analyst_example"]
# the timetable as the scheduler reads it back (registered by Tandem's plugin), and the run ids it gives
import pendulum, re
from airflow.configuration import conf
from airflow.serialization.serialized_objects import DagSerialization
from airflow.utils.types import DagRunType
timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable
fired = pendulum.parse("2026-03-05T02:00:00+00:00")
run_ids = {kind.value: timetable.generate_run_id(run_type=kind, run_after=fired, data_interval=None)
           for kind in (DagRunType.SCHEDULED, DagRunType.MANUAL)}
allowed = conf.get("scheduler", "allowed_run_id_pattern")
callbacks, DAYS = dag.on_failure_callback, ["", "2026-03-04", "2026-13-01", "yesterday"]
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dbt_vars": dbt_vars,
                  "max_active_runs": dag.max_active_runs, "catchup": dag.catchup,
                  "tasks": tasks, "torch_at_parse": "torch" in sys.modules, "instances": _task_instances(dag),
                  "ds_param": dag.params.get_param("ds").schema,
                  "accepts": {c: accepts(c and {"ds": c}) for c in DAYS},
                  "on_failure": [f"{type(c).__name__}:{getattr(c, '__name__', '')}" for c in callbacks],
                  "outlets": sorted([a.name, a.uri] for a in dag.get_task("publish").outlets),
                  "analyst_schedule": sorted([a.name, a.uri] for a in analyst.schedule),
                  "analyst_owner": analyst.get_task("most_recommended_items").owner,
                  "timetable": type(timetable).__module__ + "." + type(timetable).__name__,
                  "summary": timetable.summary, "run_ids": run_ids,
                  "run_ids_allowed": all(re.match(allowed, r) for r in run_ids.values())}))
"""


def probe(home: Path, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=tandem_env(home, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dag_imports_with_expected_wiring(tmp_path: Path) -> None:
    info = probe(tmp_path, TANDEM_TASK_RETRIES="2")
    assert info["errors"] == {}
    assert info["max_active_runs"] == 1 and info["catchup"] is False
    assert info["torch_at_parse"] is False  # the DAG file stays thin
    tasks = info["tasks"]
    # ephemeral models render as EmptyOperator (they never touch the warehouse)
    dbt_tasks = [t for t, v in tasks.items() if t.startswith("dbt.") and v["operator"] != "EmptyOperator"]
    assert {"dbt.stg_events.run", "dbt.interactions.run", "dbt.training_samples_run"} <= set(dbt_tasks)
    # one `dbt build` for the night (cosmos watcher mode); a sensor task per model and test follows it
    assert tasks["dbt.dbt_producer_watcher"]["operator"] == "DbtProducerWatcherOperator"
    # the landing check runs first: dbt reads only the files it accepted
    assert tasks["check_landing"]["upstream"] == ["resolve_ds"]
    assert tasks["dbt.dbt_producer_watcher"]["upstream"] == ["check_landing"]
    assert tasks["dbt.interactions.run"]["operator"] == "DbtRunWatcherOperator"
    assert tasks["dbt.interactions.test"]["upstream"] == ["dbt.interactions.run"]
    # the landed = staged + quarantined + duplicates test waits for both of its models
    accounted = tasks["dbt.assert_every_landed_event_is_accounted_for_test"]["upstream"]
    assert {"dbt.stg_events.test", "dbt.stg_events_quarantine.test"} <= set(accounted)
    for name in [*dbt_tasks, "check", "export", "publish"]:
        assert tasks[name]["pool"] == "duckdb", name  # every task that opens the warehouse
    for name in ("train", "score", "anomalies", "resolve_ds", "check_landing"):
        assert tasks[name]["pool"] != "duckdb", name
    assert all(t["retries"] == 2 for t in tasks.values())
    # Airflow conventions: an owner, a timeout on every task (train's own), ds as a date Param
    assert all(t["owner"] == "tandem" for t in tasks.values())
    assert all(t["timeout"] == 120 * 60 for t in tasks.values())  # train too (0: task_timeout_minutes)
    assert info["ds_param"]["format"] == "date" and info["ds_param"]["type"] == ["null", "string"]
    accepts = info["accepts"]
    assert accepts["2026-03-04"] == "2026-03-04" and accepts[""] == "null"  # conf ds, or none (scheduled)
    assert accepts["2026-13-01"] == accepts["yesterday"] == "ParamValidationError"
    # a failed run logs a summary; no notifier unless TANDEM_NOTIFY asks for one
    assert info["on_failure"] == ["function:log_failure"]
    assert tasks["train"]["queue"] == "default"
    assert "check" in tasks["export"]["upstream"]
    assert "export" in tasks["train"]["upstream"] and "train" in tasks["score"]["upstream"]
    # anomalies score the day with the model train promoted (export is done by then)
    assert tasks["anomalies"]["upstream"] == ["resolve_ds", "train"]
    assert tasks["anomalies"]["queue"] == tasks["train"]["queue"]  # torch and the model files
    assert {"score", "anomalies"} <= set(tasks["publish"]["upstream"])
    assert "publish" in tasks["report"]["upstream"]
    assert any(u.startswith("dbt.") for u in tasks["check"]["upstream"])
    # the schedule: 02:00 daily, each scheduled run named with the day it processes (the day before)
    assert info["timetable"] == "mtl_model.pipeline.airflow_plugin.NightlyTimetable"
    assert info["summary"] == "0 2 * * *"
    assert info["run_ids"]["scheduled"] == "scheduled__ds:2026-03-04__2026-03-05T02:00:00+00:00"
    assert info["run_ids"]["manual"] == "manual__2026-03-05T02:00:00+00:00"  # its ds is in its conf
    assert info["run_ids_allowed"]  # Airflow's [scheduler] allowed_run_id_pattern: no "="


def test_train_queue_and_dbt_vars_come_from_configuration(tmp_path: Path) -> None:
    info = probe(
        tmp_path,
        TANDEM_TRAIN_QUEUE="gpu",
        TANDEM_TRAIN_WINDOW_DAYS="3",
        TANDEM_TOP_K="4",
        TANDEM_OWNER="data-eng",
        TANDEM_TASK_TIMEOUT_MINUTES="30",
        TANDEM_TRAIN_TIMEOUT_MINUTES="90",
        TANDEM_NOTIFY="webhook",
        TANDEM_NOTIFY_WEBHOOK_URL="https://hooks.example.com/tandem",
    )
    timeouts = {t: v["timeout"] for t, v in info["tasks"].items()}
    assert (
        timeouts["train"] == 90 * 60 and timeouts["check"] == timeouts["dbt.dbt_producer_watcher"] == 30 * 60
    )
    assert {v["owner"] for v in info["tasks"].values()} == {"data-eng"}
    assert info["on_failure"] == ["function:log_failure", "WebhookNotifier:"]
    # an Asset per published table is the publish task's outlet; the analyst DAG runs on one of them
    published = tmp_path / "published"
    assert info["outlets"] == sorted([f"tandem.{t}", (published / t).as_uri()] for t in OUTPUT_TABLES)
    assert info["analyst_schedule"] == [["tandem.recommendations", (published / "recommendations").as_uri()]]
    assert info["analyst_owner"] == "analysts"
    # the dbt build of the night gets the settings the SQL reads from Settings, not from dbt_project.yml
    assert info["dbt_vars"]["train_window_days"] == 3 and info["dbt_vars"]["top_k"] == 4
    assert info["dbt_vars"]["event_types"] == ["impression", "view", "click", "cart", "fav", "purchase"]
    assert info["dbt_vars"]["run_date"] == "{{ ti.xcom_pull(task_ids='resolve_ds') }}"
    assert info["tasks"]["train"]["queue"] == "gpu"
    assert info["tasks"]["anomalies"]["queue"] == "gpu" and info["tasks"]["score"]["queue"] == "gpu"


NOTIFY = r"""
import asyncore, http.server, json, os, smtpd, sys, threading, time, warnings
from datetime import UTC, datetime
from mtl_model.config import Settings
from mtl_model.pipeline.notify import failure_callbacks

posted, mails = [], []

class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        posted.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass

class Sink(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        mails.append({"from": mailfrom, "to": rcpttos, "data": data.decode()})

web = http.server.HTTPServer(("127.0.0.1", 0), Hook)
threading.Thread(target=web.serve_forever, daemon=True).start()
smtp = Sink(("127.0.0.1", 0), None)
threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.05}, daemon=True).start()
os.environ["AIRFLOW_CONN_SMTP_DEFAULT"] = json.dumps({"conn_type": "smtp", "host": "127.0.0.1",
    "port": smtp.socket.getsockname()[1], "extra": {"disable_ssl": True, "disable_tls": True}})

class Run:  # what a DAG callback gets for a scheduled run: no ds in the conf
    conf, run_id, dag_id, run_after = {}, "scheduled__2026-03-05T02:00:00+00:00", "tandem_nightly", None
    logical_date = datetime(2026, 3, 5, 2, tzinfo=UTC)
class Dag:  # as under dag.test: a DAG without a Jinja environment of its own
    dag_id = "tandem_nightly"
class TI:
    task_id, try_number = "check", 1
context = {"dag": Dag(), "dag_run": Run(), "ti": TI(), "run_id": Run.run_id, "reason": "task_failure",
           "params": {"ds": None}}
hook = f"http://127.0.0.1:{web.server_port}/tandem"
mail_to = {"notify_email_to": ("ops@example.com",), "notify_email_from": "t@example.com"}
for settings in (Settings(notify="webhook", notify_webhook_url=hook), Settings(notify="smtp", **mail_to)):
    for callback in failure_callbacks(settings):
        callback(dict(context))
deadline = time.monotonic() + 10
while not (posted and mails) and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"posted": posted, "mails": mails}))
"""


def test_failure_notifiers_reach_a_local_webhook_and_smtp_server(tmp_path: Path) -> None:
    """The configured notifier of a failed night, for real: the webhook POSTs JSON to an http.server,
    SmtpNotifier sends through an SMTP server, both on 127.0.0.1."""
    env = tandem_env(tmp_path, AIRFLOW_HOME=str(tmp_path / "airflow"), NO_PROXY="127.0.0.1")
    env["no_proxy"] = "127.0.0.1"
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", NOTIFY], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["posted"] == [
        {
            "dag_id": "tandem_nightly",
            "run_id": "scheduled__2026-03-05T02:00:00+00:00",
            "ds": "2026-03-04",  # the day that ended before the 02:00 run
            "state": "failed",
            "reason": "task_failure",
            "task_id": "check",
            "try_number": 1,
        }
    ]
    [mail] = got["mails"]
    assert mail["to"] == ["ops@example.com"] and mail["from"] == "t@example.com"
    assert (
        "Subject: Tandem: a run of tandem_nightly failed (scheduled__2026-03-05T02:00:00+00:00)"
        in mail["data"]
    )
    # and the summary line every failed night logs
    assert "tandem_nightly ds=2026-03-04 failed (task_failure) at task check" in out.stdout + out.stderr


ANALYST = r"""
import json
from datetime import date
from mtl_model.config import load_settings
from mtl_model.pipeline.airflow_env import ANALYST_DAG_ID, log_dir, run_dag
settings = load_settings()
ds = date(2026, 3, 4)  # names the log folder; a manual run without a ds param queries the latest day
tasks = run_dag(settings, ANALYST_DAG_ID, ds)
log = log_dir(settings, ANALYST_DAG_ID, ds) / "most_recommended_items.log"
print(json.dumps({"tasks": sorted(tasks), "log": log.read_text()}))
"""


def _tiny_catalog(home: Path) -> None:
    """A published catalog as publish leaves it: a view over one Parquet file per day."""
    import duckdb

    rows = {
        "2026-03-03": [("u1", "A"), ("u2", "A"), ("u3", "A"), ("u1", "B")],
        "2026-03-04": [("u1", "B"), ("u2", "B"), ("u3", "B"), ("u1", "C"), ("u2", "C"), ("u3", "A")],
    }
    files = []
    with duckdb.connect() as con:
        for ds, recs in rows.items():
            path = home / "published" / "recommendations" / f"ds={ds}" / "part-0.parquet"
            path.parent.mkdir(parents=True)
            values = ", ".join(f"(date '{ds}', '{u}', '{i}', 0.5)" for u, i in recs)
            con.execute(f"copy (select * from (values {values}) t(ds, user_id, item_id, score)) to '{path}'")
            files.append(f"'{path}'")
    with duckdb.connect(str(home / "published" / "catalog.duckdb")) as con:
        con.execute(f"create view recommendations as select * from read_parquet([{', '.join(files)}])")


def test_analyst_dag_queries_the_published_catalog(tmp_path: Path) -> None:
    """dags/analysts_example.py run for real (dag.test) on a catalog built here: a manual run (no
    Asset event, no ds param) queries the latest published day and logs the result in its task log."""
    _tiny_catalog(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", ANALYST], env=tandem_env(tmp_path), capture_output=True, text=True, timeout=400
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    latest = json.loads(out.stdout.strip().splitlines()[-1])
    assert latest["tasks"] == ["most_recommended_items"]
    assert (
        "ds=2026-03-04: the 3 items recommended to the most users: [{'item_id': 'B', 'users': 3, "
        "'mean_score': 0.5}, {'item_id': 'C', 'users': 2, 'mean_score': 0.5}, {'item_id': 'A', 'users': 1"
    ) in latest["log"]


def test_one_dbt_task_and_scoring_in_slices_when_asked(tmp_path: Path) -> None:
    """TANDEM_DBT_TASKS=build: one task runs the night's dbt build (no cosmos sensors); and
    TANDEM_SCORE_PARTS=3: score is a task mapped over 3 user slices, then one merging task."""
    info = probe(tmp_path, TANDEM_DBT_TASKS="build", TANDEM_SCORE_PARTS="3")
    assert info["errors"] == {}
    tasks = info["tasks"]
    assert not [t for t in tasks if t.startswith("dbt.")] and info["dbt_vars"] is None
    assert tasks["dbt_build"]["upstream"] == ["check_landing", "resolve_ds"]
    assert tasks["dbt_build"]["pool"] == "duckdb"
    assert "dbt_build" in tasks["check"]["upstream"]
    assert tasks["score_part"]["operator"].endswith("MappedOperator")  # dynamic task mapping
    assert set(tasks["score_part"]["upstream"]) == {"resolve_ds", "train"}
    assert tasks["score"]["upstream"] == ["resolve_ds", "score_part", "train"]
    assert tasks["score_part"]["queue"] == tasks["score"]["queue"] == tasks["train"]["queue"]
    assert "score" in tasks["publish"]["upstream"]
    assert info["instances"] == len(tasks) + 2  # what `tandem run` counts: the 3 slices of score_part
