"""The dbt command line for this project, for tests, benchmarks and operators (the DAG uses cosmos)."""

from __future__ import annotations

import sys
from pathlib import Path

from mtl_model.config import DBT_PROJECT_DIR


def dbt_command(*args: str, target: Path) -> list[str]:
    """``dbt <args>`` on the project's dbt_project and profiles, with its target and logs under
    ``target`` (so several homes can build side by side). Settings come from the TANDEM_* env."""
    return [
        str(Path(sys.executable).parent / "dbt"),
        *args,
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(target),
        "--log-path",
        str(target / "logs"),
    ]
