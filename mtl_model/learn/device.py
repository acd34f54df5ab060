"""Where and how torch runs: the device, deterministic kernels and the thread count."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.utils.deterministic

log = logging.getLogger(__name__)


def resolve_device(setting: str) -> torch.device:
    """``cuda`` when available and allowed (``auto`` or ``cuda``), else CPU (with a warning for ``cuda``)."""
    if setting not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {setting!r}")
    if setting != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    if setting == "cuda":
        log.warning("device=cuda requested but CUDA is not available; training on CPU")
    return torch.device("cpu")


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch and numpy and force deterministic kernels; restores the previous mode afterwards.

    Deterministic mode would also fill every new uninitialised tensor with NaN (a debugging aid that
    costs a pass over each activation buffer, ~10% of a CPU training step); nothing here reads
    uninitialised memory, so that fill is switched off inside the block.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by cuBLAS in deterministic mode
    previous = torch.are_deterministic_algorithms_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block (``n`` ≤ 0: unchanged); restores the previous count.

    Small batches on a shared machine train several times faster on one thread than on threads that
    wait for each other (see ``docs/benchmarks.md``)."""
    previous = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
