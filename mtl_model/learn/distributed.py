"""Training under ``torchrun``: the process group, the gradient all-reduce, and the launcher of the
nightly train step on N processes (:func:`launch_train`, ``train_nproc``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import torch

from mtl_model.config import Settings

TRAIN_MODULE = "mtl_model.learn.train"


def distributed_world() -> tuple[int, int]:
    """(rank, world size): from an initialised process group, else from ``torchrun``'s ``RANK`` /
    ``WORLD_SIZE`` (initialising a gloo group on CPU, an NCCL one on CUDA with this process on GPU
    ``LOCAL_RANK``), else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or not dist.is_available():
        return 0, 1
    if torch.cuda.is_available():  # one process per GPU: NCCL refuses two ranks on one device
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def local_device(device: torch.device, world_size: int) -> torch.device:
    """This process's device: under ``torchrun`` on CUDA its own GPU (``cuda:LOCAL_RANK``), else
    ``device`` unchanged."""
    if device.type != "cuda" or world_size <= 1:
        return device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def all_reduce_mean(params: Sequence[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` over the processes of the group (in place)."""
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def end_distributed(world_size: int) -> None:
    """Wait for every process, then leave the process group (nothing to do alone)."""
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def torchrun_command(nproc: int, ds: date, summary: Path) -> list[str]:
    """``torchrun --standalone --nproc_per_node=N -m mtl_model.learn.train --ds D --summary S`` (as
    ``python -m torch.distributed.run``: the same interpreter as the caller's)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        TRAIN_MODULE,
        "--ds",
        ds.isoformat(),
        "--summary",
        str(summary),
    ]


def launch_train(settings: Settings, ds: date) -> dict[str, Any]:
    """The nightly train step on ``settings.train_nproc`` processes of this machine: runs
    :func:`torchrun_command` with the settings in the environment, its output going to the caller's
    (the task log), waits, and returns what rank 0 wrote once it registered the version: the summary
    of the in-process step (``version``, ``promoted``, ``reason``). A failed run raises."""
    with tempfile.TemporaryDirectory(prefix="tandem-torchrun-") as tmp:
        summary = Path(tmp) / "summary.json"
        command = torchrun_command(settings.train_nproc, ds, summary)
        env = {**os.environ, **settings.as_env()}
        done = subprocess.run(command, env=env, check=False)
        if done.returncode != 0 or not summary.exists():
            raise RuntimeError(
                f"training under torchrun ({settings.train_nproc} processes) failed with exit code "
                f"{done.returncode}: {' '.join(command)}"
            )
        result = json.loads(summary.read_text())
    return {"version": result["version"], "promoted": result["promoted"], "reason": result["reason"]}
