"""The nightly train step on N processes (``train_nproc``: ``torchrun --standalone``, gloo on CPU)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from mtl_model.learn.registry import read_current_version
from mtl_model.pipeline import nightly
from tests.conftest import BUILT_DS, tandem_env, tandem_settings

# torchrun's report of a worker killed by a signal: SIGABRT (-6, a heap check in malloc) or SIGSEGV (-11)
SIGNAL_DEATH = re.compile(r"exitcode: -(?:6|11)\b")

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")


def _night(built_once: Path, home: Path, monkeypatch: pytest.MonkeyPatch, nproc: int) -> dict:
    """export then train for BUILT_DS in a copy of the built home, with ``train_nproc=nproc``;
    returns the train step's summary and the registered version's validation metrics."""
    shutil.copytree(built_once, home, ignore=shutil.ignore_patterns("dbt_target", "dbt_logs"))
    settings = tandem_settings(home, train_nproc=nproc, baselines=False)
    for name, value in tandem_env(home, settings, OMP_NUM_THREADS="1").items():
        monkeypatch.setenv(name, value)
    nightly.export(str(BUILT_DS))
    summary = nightly.train(str(BUILT_DS))
    metrics = json.loads((settings.models_dir / summary["version"] / "metrics.json").read_text())
    return {"summary": summary, "metrics": metrics, "settings": settings}


def test_train_step_on_two_cpu_processes_gives_the_model_of_one(
    built_once: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    one = _night(built_once, tmp_path / "one", monkeypatch, 1)
    assert '"world_size"' not in capfd.readouterr().out  # in process: no torchrun
    try:
        two = _night(built_once, tmp_path / "two", monkeypatch, 2)
    except RuntimeError as exc:  # one retry for a gloo worker's signal death (see test_train_score)
        if "training under torchrun" not in str(exc) or not SIGNAL_DEATH.search(capfd.readouterr().err):
            raise
        two = _night(built_once, tmp_path / "two-again", monkeypatch, 2)
    lines = [json.loads(x) for x in capfd.readouterr().out.splitlines() if x.startswith('{"version"')]
    assert [x["world_size"] for x in lines] == [2]  # rank 0 of a world of two printed its result
    assert two["summary"].keys() == one["summary"].keys() == {"version", "promoted", "reason"}
    assert two["summary"]["version"] == one["summary"]["version"]  # train_nproc is not in the version
    assert two["summary"]["promoted"] and one["summary"]["promoted"]
    settings = two["settings"]
    assert read_current_version(settings) == two["summary"]["version"]  # rank 0 registered it
    assert two["metrics"]["n_train"] == one["metrics"]["n_train"] > 0
    assert two["metrics"]["epochs_trained"] == one["metrics"]["epochs_trained"]
    for task, values in one["metrics"]["tasks"].items():  # the same fit, up to float summation order
        assert two["metrics"]["tasks"][task]["auc"] == pytest.approx(values["auc"], abs=0.005), task
    # the step's record says it ran (and which version it registered)
    record = json.loads((settings.output_dir(BUILT_DS) / "steps" / "train.json").read_text())
    assert record["summary"]["version"] == two["summary"]["version"]
