"""The dbt command line for this project, for tests, benchmarks and operators (the DAG uses cosmos)."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path

from mtl_model.config import DBT_PROJECT_DIR, Settings


def dbt_command(
    *args: str, target: Path, settings: Settings, run_date: date | str | None = None
) -> list[str]:
    """``dbt <args>`` on the project's dbt_project and profiles, with its target and logs under
    ``target`` (so several homes can build side by side) and ``--vars`` from
    :meth:`Settings.dbt_vars` (the settings the SQL reads, and ``run_date`` when given). Paths reach
    dbt through the environment: run it with ``settings.as_env()``."""
    return [
        str(Path(sys.executable).parent / "dbt"),
        *args,
        "--vars",
        json.dumps(settings.dbt_vars(run_date), sort_keys=True),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(target),
        "--log-path",
        str(target / "logs"),
    ]
