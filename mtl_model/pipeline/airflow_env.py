"""The embedded Airflow of the default deployment: environment, metadata DB, pool, in-process runs.

Import this before Airflow: :func:`configure` sets ``AIRFLOW_HOME`` and friends in ``os.environ``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date

from mtl_model.config import DAGS_DIR, Settings

DAG_ID = "tandem_nightly"


def airflow_environ(settings: Settings) -> dict[str, str]:
    home = settings.airflow_home
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
        "DO_NOT_TRACK": "1",
        "GX_ANALYTICS_ENABLED": "False",
        **settings.as_env(),
    }


def configure(settings: Settings) -> None:
    """Put the embedded Airflow's configuration into this process's environment."""
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    os.environ.update(airflow_environ(settings))


def _airflow(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "airflow", *args], check=True, stdout=subprocess.DEVNULL)


def ensure_ready(settings: Settings) -> None:
    """Migrate the metadata DB and create the one-slot warehouse pool, once per AIRFLOW_HOME."""
    configure(settings)
    marker = settings.airflow_home / ".tandem-ready"
    if marker.exists():
        return
    _airflow("db", "migrate")
    _airflow("pools", "set", settings.warehouse_pool, "1", "DuckDB warehouse: one writer at a time")
    marker.touch()


def run_day(settings: Settings, ds: date) -> dict[str, float]:
    """Run the whole nightly DAG for ``ds`` in this process (``dag.test``: no scheduler).
    Returns each task's seconds (task id → end − start, in start order); raises RuntimeError naming
    the failed tasks."""
    ensure_ready(settings)
    from airflow.dag_processing.dagbag import DagBag

    from mtl_model.dates import logical_date_for

    bag = DagBag(dag_folder=str(DAGS_DIR / "nightly.py"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags[DAG_ID]
    run = dag.test(logical_date=logical_date_for(ds, settings.business_tz), run_conf={"ds": ds.isoformat()})
    state = str(getattr(run.state, "value", run.state))
    tis = run.get_task_instances()
    states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in tis}
    # a run can end "success" with tasks never scheduled (e.g. a logical date before start_date):
    # every task must have succeeded (or be an EmptyOperator skipped by design)
    not_done = sorted(t for t, st in states.items() if st not in ("success", "skipped"))
    if state != "success" or not_done or len(states) < len(dag.tasks):
        raise RuntimeError(
            f"nightly run for ds={ds} ended {state}; tasks not successful: {not_done or 'never scheduled'}"
        )
    timed = sorted((ti for ti in tis if ti.start_date and ti.end_date), key=lambda ti: ti.start_date)
    return {ti.task_id: (ti.end_date - ti.start_date).total_seconds() for ti in timed}


def format_durations(durations: dict[str, float]) -> str:
    """One line: the dbt task group summed, then every other task, e.g. ``dbt 21s, check 3s, …``."""
    dbt = sum(s for t, s in durations.items() if t.startswith("dbt."))
    rest = [(t, s) for t, s in durations.items() if not t.startswith("dbt.") and t != "resolve_ds"]
    return ", ".join(f"{t} {s:.0f}s" for t, s in [("dbt", dbt), *rest])
