"""The DAG file imports cleanly under the real Airflow, with the wiring the design asks for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import tandem_env

PROBE = r"""
import json, sys
from mtl_model.pipeline.airflow_env import ensure_ready
from mtl_model.config import DAGS_DIR, load_settings
# a migrated metadata DB and the pool, as in any deployment (cosmos caches dbt ls there)
ensure_ready(load_settings())
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=str(DAGS_DIR))
dag = bag.dags["tandem_nightly"]
tasks = {t.task_id: {"pool": t.pool, "operator": type(t).__name__, "queue": t.queue, "retries": t.retries,
                     "upstream": sorted(t.upstream_task_ids)} for t in dag.tasks}
dbt_vars = getattr(dag.get_task("dbt.dbt_producer_watcher"), "vars", None)
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dbt_vars": dbt_vars,
                  "max_active_runs": dag.max_active_runs, "catchup": dag.catchup,
                  "tasks": tasks, "torch_at_parse": "torch" in sys.modules}))
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
    assert tasks["dbt.dbt_producer_watcher"]["upstream"] == ["resolve_ds"]
    assert tasks["dbt.interactions.run"]["operator"] == "DbtRunWatcherOperator"
    assert tasks["dbt.interactions.test"]["upstream"] == ["dbt.interactions.run"]
    # the landed = staged + quarantined + duplicates test waits for both of its models
    accounted = tasks["dbt.assert_every_landed_event_is_accounted_for_test"]["upstream"]
    assert {"dbt.stg_events.test", "dbt.stg_events_quarantine.test"} <= set(accounted)
    for name in [*dbt_tasks, "check", "export", "publish"]:
        assert tasks[name]["pool"] == "duckdb", name  # every task that opens the warehouse
    for name in ("train", "score", "anomalies", "resolve_ds"):
        assert tasks[name]["pool"] != "duckdb", name
    assert all(t["retries"] == 2 for t in tasks.values())
    assert tasks["train"]["queue"] == "default"
    assert "check" in tasks["export"]["upstream"]
    assert "export" in tasks["train"]["upstream"] and "train" in tasks["score"]["upstream"]
    # anomalies score the day with the model train promoted (export is done by then)
    assert tasks["anomalies"]["upstream"] == ["resolve_ds", "train"]
    assert tasks["anomalies"]["queue"] == tasks["train"]["queue"]  # torch and the model files
    assert {"score", "anomalies"} <= set(tasks["publish"]["upstream"])
    assert "publish" in tasks["report"]["upstream"]
    assert any(u.startswith("dbt.") for u in tasks["check"]["upstream"])


def test_train_queue_and_dbt_vars_come_from_configuration(tmp_path: Path) -> None:
    info = probe(tmp_path, TANDEM_TRAIN_QUEUE="gpu", TANDEM_TRAIN_WINDOW_DAYS="3", TANDEM_TOP_K="4")
    # the dbt build of the night gets the settings the SQL reads from Settings, not from dbt_project.yml
    assert info["dbt_vars"]["train_window_days"] == 3 and info["dbt_vars"]["top_k"] == 4
    assert info["dbt_vars"]["event_types"] == ["impression", "view", "click", "cart", "fav", "purchase"]
    assert info["dbt_vars"]["run_date"] == "{{ ti.xcom_pull(task_ids='resolve_ds') }}"
    assert info["tasks"]["train"]["queue"] == "gpu"
    assert info["tasks"]["anomalies"]["queue"] == "gpu" and info["tasks"]["score"]["queue"] == "gpu"
