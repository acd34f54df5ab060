"""Tandem nightly: landing check → dbt build → checks → export → train → score + anomalies → publish → report.

Wiring only; the steps live in ``mtl_model.pipeline.nightly`` and the SQL in ``dbt_project``. Every task that
opens the DuckDB warehouse runs in the one-slot ``duckdb`` pool. The run date is resolved once, by
the first task, from the ``ds`` param (``{"ds": "YYYY-MM-DD"}`` in the run conf, checked against the
param's date schema) or as the day that ended before the logical date; that task (a sensor) waits
while a run of the same or an earlier day is queued or running, so nights run in date order however
many runs Airflow starts at once (a backfill: 10), and while the day is not landed (docs/operators.md).
Scheduled runs are named with their ds (``scheduled__ds:D__…``, the timetable of Tandem's plugin);
every run the scheduler starts gets the note ``ds=D`` (``mtl_model/pipeline/run_ids.py``).

``publish`` emits an Asset per published table (``tandem.recommendations``, …; ``extra`` holds the
``ds``): analysts' DAGs can run when tonight's tables are published (``dags/analysts_example.py``).
A failed run logs a summary and calls the notifier ``TANDEM_NOTIFY`` names (off by default).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Param, PokeReturnValue, dag, get_current_context, task
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior

from mtl_model.config import DBT_PROJECT_DIR, load_settings
from mtl_model.pipeline import nightly
from mtl_model.pipeline.airflow_env import cosmos_sensors_in_place, published_assets, task_logging
from mtl_model.pipeline.airflow_plugin import NightlyTimetable
from mtl_model.pipeline.notify import failure_callbacks

settings = load_settings()
task_logging()  # Tandem's INFO lines (training epochs, checks) into the task logs
cosmos_sensors_in_place()  # the dbt sensors end without deferring
warehouse = {"pool": settings.warehouse_pool}
assets = published_assets(settings)
task_timeout = timedelta(minutes=settings.task_timeout_minutes)
train_timeout = (
    timedelta(minutes=settings.train_timeout_minutes) if settings.train_timeout_minutes else task_timeout
)


def dbt_models() -> DbtTaskGroup:
    """The night's dbt build under cosmos: one ``dbt build`` (the watcher producer task), watched
    model by model and test by test by a sensor task each (``TANDEM_DBT_TASKS=models``)."""
    return DbtTaskGroup(
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
            # the sensors poke in place (cosmos_sensors_in_place): a deferred one races the scheduler
            "deferrable": False,
            **warehouse,
        },
    )


@dag(
    dag_id="tandem_nightly",
    # Airflow's CronTriggerTimetable, its scheduled runs named with their ds (scheduled__ds:D__…)
    schedule=NightlyTimetable("0 2 * * *", timezone=settings.business_tz),
    # early, so backfills of old days run (a logical date before start_date schedules no task);
    # catchup=False keeps the scheduler from creating those runs by itself
    start_date=pendulum.datetime(2000, 1, 1, tz=settings.business_tz),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": settings.owner,
        "retries": settings.task_retries,
        "retry_delay": timedelta(seconds=settings.retry_delay_seconds),
        "execution_timeout": task_timeout,
    },
    params={
        "ds": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Business day (YYYY-MM-DD)",
            description="The day to process; empty: the day that ended before the logical date",
        )
    },
    on_failure_callback=failure_callbacks(settings),
    tags=["tandem"],
    doc_md=__doc__,
)
def tandem_nightly() -> None:
    @task.sensor(
        task_id="resolve_ds",
        mode="reschedule",  # a waiting night holds no worker slot
        poke_interval=settings.wait_poke_seconds,
        timeout=timedelta(days=2),
        soft_fail=True,
    )
    def resolve_ds() -> PokeReturnValue:
        """The run date (run conf → logical date → run_after), once no earlier night is queued or
        running and the day is landed; skipped, with the reason, when the day has not landed within
        ``TANDEM_LANDING_WAIT_HOURS`` of the run's start (e.g. unpausing before the day landed)."""
        from mtl_model.pipeline.airflow_env import resolve_night

        return resolve_night(settings, get_current_context())

    @task(task_id="publish", outlets=list(assets.values()), **warehouse)
    def publish(run_date: str) -> dict:
        """Publish the day, then tell the outlet Assets which day (their events' ``extra``)."""
        counts = nightly.publish(run_date)
        events = get_current_context()["outlet_events"]
        for table, asset in assets.items():
            events[asset].extra = {"ds": run_date, "rows": counts.get(table)}
        return counts

    ds = resolve_ds()
    # every landed file not checked yet is checked against the contract; bad ones go to the
    # quarantine and stop only themselves (docs/data.md, "Landing check")
    landed = task(nightly.check_landing, task_id="check_landing")(ds)

    if settings.dbt_tasks == "build":  # one task runs the night's dbt build (small machines)
        dbt = task(nightly.dbt_build, task_id="dbt_build", **warehouse)(ds)
    else:
        dbt = dbt_models()

    checked = task(nightly.check, task_id="check", **warehouse)(ds)
    exported = task(nightly.export, task_id="export", **warehouse)(ds)
    trained = task(
        nightly.train, task_id="train", queue=settings.train_queue, execution_timeout=train_timeout
    )(ds)
    if settings.score_parts > 1:  # slices of the users, a mapped task each, then the day's table
        score_part = task(nightly.score_part, task_id="score_part", queue=settings.train_queue)
        parts = score_part.partial(run_date=ds).expand(part=list(range(settings.score_parts)))
        scored = task(nightly.score_merge, task_id="score", queue=settings.train_queue)(ds)
        trained >> parts >> scored
    else:
        scored = task(nightly.score, task_id="score", queue=settings.train_queue)(ds)
    flagged = task(nightly.anomalies, task_id="anomalies", queue=settings.train_queue)(ds)
    published = publish(ds)
    reported = task(nightly.report, task_id="report")(ds)

    landed >> dbt >> checked >> exported
    exported >> trained >> scored >> published
    trained >> flagged >> published  # anomalies score the day with the model train just promoted (or kept)
    published >> reported


tandem_nightly()
