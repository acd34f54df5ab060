"""Shared fixtures: a tiny simulated landing zone, and helpers to run dbt and the CLI for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from mtl_model.config import Settings
from mtl_model.pipeline.dbt import dbt_command
from mtl_model.sources.simulate import SimConfig, simulate

START = date(2026, 3, 1)
DAYS = 5
LAST = date(2026, 3, 5)
BUILT_DS = date(2026, 3, 4)  # the day `built_once` is built for (first build: every day up to it)
TINY = SimConfig(n_users=150, n_items=80, seed=7, bot_rate=0.02)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a test module's fits: small batches on a shared machine (see
    mtl_model.learn.device.torch_threads). A module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A landing zone of 5 simulated days (read-only for tests: copy it to change it)."""
    home = tmp_path_factory.mktemp("landed")
    simulate(Settings(home=home), START, DAYS, TINY)
    return home


@pytest.fixture()
def home(landed: Path, tmp_path: Path) -> Path:
    """A fresh TANDEM_HOME with its own copy of the tiny landing zone."""
    shutil.copytree(landed / "landing", tmp_path / "landing")
    if (landed / "truth").exists():
        shutil.copytree(landed / "truth", tmp_path / "truth")
    return tmp_path


@pytest.fixture(scope="session")
def built_once(landed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose warehouse dbt built once for BUILT_DS (read-only: use `built_home` to change it)."""
    home = tmp_path_factory.mktemp("built")
    shutil.copytree(landed / "landing", home / "landing")
    done = dbt_build(home, BUILT_DS)
    assert done.returncode == 0, done.stdout[-3000:]
    return home


@pytest.fixture()
def built_home(built_once: Path, tmp_path: Path) -> Path:
    """A private copy of `built_once` (landing zone + warehouse built for BUILT_DS)."""
    home = tmp_path / "home"
    shutil.copytree(built_once, home, ignore=shutil.ignore_patterns("dbt_target", "dbt_logs"))
    return home


def tandem_settings(home: Path, **overrides: object) -> Settings:
    """The settings of the tests' homes: small and quick (no retries, 2 epochs, 1 thread)."""
    return Settings(
        **{"home": home, "task_retries": 0, "epochs": 2, "batch_size": 256, "threads": 1, **overrides}
    )


def tandem_env(home: Path, settings: Settings | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TANDEM_", "AIRFLOW"))}
    env.update((settings or tandem_settings(home)).as_env())
    env.update({"DO_NOT_TRACK": "1", "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False", **extra})
    return env


def dbt_build(
    home: Path, ds: date, *args: str, settings: Settings | None = None
) -> subprocess.CompletedProcess:
    """`dbt build` for run date ``ds`` on the real project, against the home's warehouse, with the vars
    of ``settings`` (default: :func:`tandem_settings`)."""
    settings = settings or tandem_settings(home)
    command = dbt_command("build", *args, target=home / "dbt_target", settings=settings, run_date=ds)
    return subprocess.run(
        command, env=tandem_env(home, settings), capture_output=True, text=True, timeout=300
    )


def tandem_cli(home: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the `tandem` CLI in a subprocess (its own embedded Airflow under home/airflow)."""
    return subprocess.run(
        [sys.executable, "-m", "mtl_model.pipeline.cli", *args],
        env=tandem_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
