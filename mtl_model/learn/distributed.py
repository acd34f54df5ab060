"""Training under ``torchrun``: the process group and the gradient all-reduce."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch


def distributed_world() -> tuple[int, int]:
    """(rank, world size): from an initialised process group, else from ``torchrun``'s ``RANK`` /
    ``WORLD_SIZE`` (initialising a gloo or nccl group), else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or not dist.is_available():
        return 0, 1
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


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
