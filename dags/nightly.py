"""Tandem nightly: dbt build → data checks → export → train → score + anomalies → publish → report.

Wiring only; the steps live in ``mtl_model.pipeline.nightly`` and the SQL in ``dbt_project``. Every task that
opens the DuckDB warehouse runs in the one-slot ``duckdb`` pool. The run date is resolved once, by
the first task, from the run conf (``{"ds": "YYYY-MM-DD"}``) or as the day that ended before the
logical date.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior

from mtl_model.config import DBT_PROJECT_DIR, load_settings
from mtl_model.pipeline import nightly

settings = load_settings()
warehouse = {"pool": settings.warehouse_pool}


@dag(
    dag_id="tandem_nightly",
    schedule=CronTriggerTimetable("0 2 * * *", timezone=settings.business_tz),
    # early, so backfills of old days run (a logical date before start_date schedules no task);
    # catchup=False keeps the scheduler from creating those runs by itself
    start_date=pendulum.datetime(2000, 1, 1, tz=settings.business_tz),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": settings.task_retries, "retry_delay": timedelta(minutes=2)},
    tags=["tandem"],
    doc_md=__doc__,
)
def tandem_nightly() -> None:
    @task
    def resolve_ds() -> str:
        from mtl_model.dates import resolve_run_date

        ctx = get_current_context()
        run = ctx["dag_run"]
        return resolve_run_date(
            run.conf, ctx.get("logical_date"), run.run_after, settings.business_tz
        ).isoformat()

    ds = resolve_ds()

    dbt = DbtTaskGroup(
        group_id="dbt",
        project_config=ProjectConfig(DBT_PROJECT_DIR, env_vars=settings.as_env()),
        profile_config=ProfileConfig(
            profile_name="tandem", target_name="dev", profiles_yml_filepath=DBT_PROJECT_DIR / "profiles.yml"
        ),
        # one `dbt build` for the whole night (the producer task), watched model by model by sensor
        # tasks: per-model tasks in Airflow without a dbt start-up (~4-6 s) for each of them
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.WATCHER,
            invocation_mode=InvocationMode.SUBPROCESS,
            dbt_executable_path=Path(sys.executable).parent / "dbt",
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_LS,
            test_behavior=TestBehavior.AFTER_EACH,  # the producer's build runs the tests; a task each
            should_detach_multiple_parents_tests=True,  # a test of two models runs after both
            emit_datasets=False,
        ),
        operator_args={
            # every setting the SQL reads comes from Settings (one source of defaults), plus the ds
            "vars": {**settings.dbt_vars(), "run_date": "{{ ti.xcom_pull(task_ids='resolve_ds') }}"},
            "install_deps": False,
            **warehouse,
        },
    )

    checked = task(nightly.check, task_id="check", **warehouse)(ds)
    exported = task(nightly.export, task_id="export", **warehouse)(ds)
    trained = task(nightly.train, task_id="train", queue=settings.train_queue)(ds)
    scored = task(nightly.score, task_id="score", queue=settings.train_queue)(ds)
    flagged = task(nightly.anomalies, task_id="anomalies", queue=settings.train_queue)(ds)
    published = task(nightly.publish, task_id="publish", **warehouse)(ds)
    reported = task(nightly.report, task_id="report")(ds)

    ds >> dbt >> checked >> exported
    exported >> trained >> scored >> published
    trained >> flagged >> published  # anomalies score the day with the model train just promoted (or kept)
    published >> reported


tandem_nightly()
