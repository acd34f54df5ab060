"""The GPU queue on real Celery workers: the nightly DAG under CeleryExecutor.

The broker needs no server of its own: kombu's SQLAlchemy transport on a SQLite file
(`sqla+sqlite:///…`), results in another (`db+sqlite:///…`); api-server, scheduler and dag-processor
as in tests/test_scheduler.py. Two workers, one on queue `default`,
one on queue `gpu` (`TANDEM_TRAIN_QUEUE=gpu`); a night runs, and train, score and anomalies ran on
the `gpu` worker (their task instances' queue, and the worker's own log), the rest on `default`.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import time
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import tandem_settings
from tests.test_scheduler import (
    _airflow_env,
    _failure,
    _free_port,
    _metadata,
    _runs,
    _start,
    _start_airflow,
    _stop,
    _tandem,
    _wait,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("airflow.providers.celery") is None,
        reason="apache-airflow-providers-celery is not installed (it is pinned: rebuild the venv, make venv)",
    ),
]

DS = date(2026, 3, 2)  # the first day with an earlier landed day: the smallest night
GPU_TASKS = ("train", "score", "anomalies")
DEADLINE_S = 900


def test_train_and_score_run_on_the_gpu_worker(landed: Path, tmp_path: Path) -> None:
    home, logs = tmp_path / "home", tmp_path / "procs"
    shutil.copytree(landed / "landing", home / "landing")
    logs.mkdir()
    port = _free_port()
    settings = tandem_settings(
        home,
        train_queue="gpu",
        wait_poke_seconds=10,
        dbt_tasks="build",  # one dbt task: ~45 fewer task processes a night
        landing_wait_hours=0,
        task_retries=1,
        retry_delay_seconds=5,
    )
    env = _airflow_env(
        home,
        settings,
        port,
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__CELERY__BROKER_URL=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        AIRFLOW__CELERY__RESULT_BACKEND=f"db+sqlite:///{tmp_path / 'results.db'}",
        AIRFLOW__CELERY__WORKER_CONCURRENCY="1",
    )

    def cli(*args: str) -> subprocess.CompletedProcess:
        return _tandem(env, *args)

    # the broker's and the result backend's tables, made once here: processes that all make them at
    # start collide on SQLite ("table … already exists")
    from celery.backends.database.session import SessionManager
    from kombu import Connection

    SessionManager().session_factory(f"sqlite:///{tmp_path / 'results.db'}")
    with Connection(env["AIRFLOW__CELERY__BROKER_URL"]) as broker:
        broker.default_channel.queue_declare("default")
    cli("airflow", "pools", "list")  # migrates the metadata DB and makes the pool, before the processes
    with ExitStack() as stack:
        procs: dict[str, subprocess.Popen] = {}
        stack.callback(_stop, procs)
        worker = ["celery", "worker", "--concurrency", "1", "--without-gossip", "--without-mingle", "-s"]
        _start_airflow(procs, env, port, logs)
        deadline = time.monotonic() + DEADLINE_S
        info = {**env, "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"}  # each logs the workload it executes
        for queue in ("default", "gpu"):
            args = [*worker, "--queues", queue, "--celery-hostname", f"{queue}@tandem"]
            procs[f"worker-{queue}"] = _start(f"worker-{queue}", args, info, logs)

        def parsed() -> bool | None:
            rows = _metadata(home, "select count(*) from serialized_dag where dag_id = 'tandem_nightly'")
            return True if rows[0][0] else None

        _wait("dag-processor parses the DAG", parsed, deadline, procs, logs)
        cli("airflow", "dags", "unpause", "tandem_nightly")
        cli("airflow", "dags", "trigger", "tandem_nightly", "--conf", json.dumps({"ds": str(DS)}))

        def finished() -> dict | None:
            if (failed := _failure(home)) is not None:
                pytest.fail(failed)
            runs = {r: v for r, v in _runs(home).items() if v["type"] == "manual"}
            return runs if runs and all(v["state"] == "success" for v in runs.values()) else None

        [run_id] = _wait("the night succeeds under Celery", finished, deadline, procs, logs)
        _stop(procs)

    queues = dict(
        _metadata(
            home,
            "select task_id, queue from task_instance where dag_id = 'tandem_nightly' and run_id = ?",
            (run_id,),
        )
    )
    assert {t: queues[t] for t in GPU_TASKS} == dict.fromkeys(GPU_TASKS, "gpu")
    assert {q for t, q in queues.items() if t not in GPU_TASKS} == {"default"}

    # each worker's log names the tasks it executed: the GPU ones on gpu@tandem only
    def executed(worker: str) -> str:  # the worker's "Executing workload in Celery: ExecuteTask(…)" lines
        lines = (logs / f"worker-{worker}.log").read_text(errors="replace").splitlines()
        return "\n".join(line for line in lines if "Executing workload in Celery" in line)

    gpu_log, default_log = executed("gpu"), executed("default")
    for task_id in GPU_TASKS:
        assert f"task_id='{task_id}'" in gpu_log, task_id
        assert f"task_id='{task_id}'" not in default_log, task_id
    assert "task_id='export'" in default_log and "task_id='export'" not in gpu_log
    assert (home / "published" / "recommendations" / f"ds={DS}" / "part-0.parquet").exists()
