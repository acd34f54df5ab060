"""Tandem's Airflow plugin: the nightly DAG's timetable (its scheduled runs named with their ds) and
the listener that gives every run of it the note ``ds=D`` (see ``run_ids`` for why both).

Every process that serializes or reads the DAG must find the timetable registered: the embedded
deployment loads this module through ``$AIRFLOW_HOME/plugins/tandem_plugin.py``, which
``airflow_env.configure`` writes; another deployment puts that one line in its plugins folder.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from airflow.timetables.trigger import CronTriggerTimetable
from airflow.utils.types import DagRunType

from mtl_model.pipeline.airflow_env import DAG_ID, hookimpl
from mtl_model.pipeline.run_ids import ds_of_run, night_of, run_id_for


class NightlyTimetable(CronTriggerTimetable):
    """Airflow's ``CronTriggerTimetable`` whose scheduled runs name their ds (:func:`run_id_for`)."""

    def generate_run_id(
        self, *, run_type: DagRunType, run_after: Any, data_interval: Any, **extra: Any
    ) -> str:
        if run_type in (DagRunType.SCHEDULED, DagRunType.BACKFILL_JOB):
            ds = night_of(run_after, self._timezone)
            return run_id_for(str(run_type), ds, run_after)
        return super().generate_run_id(
            run_type=run_type, run_after=run_after, data_interval=data_interval, **extra
        )


class RunNotes:
    """A listener (scheduler side): a run of the nightly DAG that starts gets the note ``ds=D`` unless
    it has one (a person's note is kept)."""

    @hookimpl
    def on_dag_run_running(self, dag_run: Any, msg: str) -> None:
        if dag_run.dag_id != DAG_ID or dag_run.note:
            return
        from mtl_model.config import load_settings

        ds = ds_of_run(dag_run, load_settings().business_tz)
        if ds is not None:
            dag_run.note = f"ds={ds}"
            logging.getLogger(__name__).info("run %s: note ds=%s", dag_run.run_id, ds)


class TandemPlugin(AirflowPlugin):
    name = "tandem"
    timetables = [NightlyTimetable]
    listeners = [RunNotes()]
