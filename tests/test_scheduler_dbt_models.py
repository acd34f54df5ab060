"""The nightly DAG under the real scheduler in the default dbt mode (`TANDEM_DBT_TASKS=models`:
astronomer-cosmos renders one task per dbt model, 56 task instances a night), and the documented
clear of a failed `train` there (docs/operators.md).

`tests/test_scheduler.py` runs its nights with the dbt build as one task (a quicker night); this test
runs one backfill night of the tiny home in the default mode with the api-server, the scheduler
(LocalExecutor) and the dag-processor, then makes the night's `train` fail after a clear and clears
it again with `--only-failed`. In Airflow 3.3 `--task-regex` is a substring match, so `train` also
names the dbt model task `dbt.training_samples_run`: the plain clear reruns it and the dbt tasks
after it, and the `--only-failed` clear must rerun exactly `train` and the four tasks it stopped.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import pytest

from mtl_model.config import Settings
from tests.test_scheduler import (
    _airflow_up,
    _fail_then_clear_failed,
    _free_port,
    _runs,
    _scheduler_env,
    _stop,
    _tandem,
    _tries,
)

DS = date(2026, 3, 2)
DEADLINE_S = 1200  # about 4 minutes on an idle 2-core machine
STOPPED = {"score", "anomalies", "publish", "report"}  # what a failed train leaves upstream_failed


@pytest.mark.slow
def test_a_failed_train_is_cleared_with_only_failed_in_the_default_dbt_mode(
    landed: Path, tmp_path: Path
) -> None:
    home, logs = tmp_path / "home", tmp_path / "procs"
    shutil.copytree(landed / "landing", home / "landing")
    logs.mkdir()
    port = _free_port()
    env = _scheduler_env(home, port, dbt_tasks="models")  # the default: one cosmos task per dbt model
    assert env["TANDEM_DBT_TASKS"] == "models" and Settings().dbt_tasks == "models"
    with ExitStack() as stack:
        _tandem(env, "airflow", "version")  # migrates the new home's metadata DB before the processes
        procs, wait, _ = _airflow_up(stack, env, home, port, logs, DEADLINE_S)
        _tandem(env, "airflow", "dags", "unpause", "tandem_nightly")
        _tandem(env, "backfill", "--start", str(DS), "--end", str(DS), "--scheduler")

        def succeeded() -> dict | None:
            runs = {r: v for r, v in _runs(home).items() if v["type"] == "backfill"}
            if any(v["state"] == "failed" for v in runs.values()):
                pytest.fail(f"the backfill run failed: {runs}")
            return runs if runs and all(v["state"] == "success" for v in runs.values()) else None

        [run_id] = wait("the backfill night succeeds", succeeded)
        _, tasks = _tries(home, run_id)
        assert "dbt.training_samples_run" in tasks and len(tasks) > 40, sorted(tasks)  # cosmos's tasks
        tries = _fail_then_clear_failed(env, home, DS, "train", wait)
        _stop(procs)

    before, failed, rerun = tries["before"], tries["failed"], tries["rerun"]
    # the plain clear: `train` names the dbt model task too, so it and the dbt tasks after it reran
    first = {t for t in failed if failed[t][1] > before[t][1]}
    assert {"train", "dbt.training_samples_run"} <= first, sorted(first)
    not_ok = {t: st for t, (st, _) in failed.items() if st != "success"}
    assert not_ok == {"train": "failed", **dict.fromkeys(STOPPED, "upstream_failed")}, not_ok
    # the --only-failed clear: exactly the failed train and what it stopped, then the night succeeded
    again = {t for t in rerun if rerun[t][1] > failed[t][1]}
    assert again == {"train", *STOPPED}, sorted(again)
    assert all(st == "success" for st, _ in rerun.values()), rerun
