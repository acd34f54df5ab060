"""The optimizer of the sparse (embedding) gradients: :class:`RowSparseAdam`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


class RowSparseAdam(torch.optim.Optimizer):
    """Adam for sparse (embedding) gradients that touches only the rows in the gradient.

    The update is that of ``torch.optim.SparseAdam`` (lazy Adam: the moments of a row decay only
    when the row is in a batch; bias correction by the parameter's step count), but written with
    ``index_select`` / ``index_copy_`` / ``index_add_`` on the coalesced rows. ``SparseAdam`` adds
    sparse tensors into the dense moment and weight tensors, which on CPU costs a pass over the whole
    table three times per step; this costs O(rows in the batch). Deterministic on CPU.

    ``weight_decay`` is decoupled (AdamW, Loshchilov & Hutter 2019) and lazy like the moments: a row
    the batch touches is first scaled by ``1 − lr · weight_decay``; untouched rows stay as they are.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0 or eps <= 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(
                f"invalid RowSparseAdam settings lr={lr} betas={betas} eps={eps} weight_decay={weight_decay}"
            )
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # noqa: D102 - see the class
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return None

    def _update(self, p: torch.nn.Parameter, group: dict[str, Any]) -> None:
        """One lazy-Adam update of the rows of ``p`` that its sparse gradient touches."""
        if not p.grad.is_sparse:
            raise RuntimeError("RowSparseAdam needs sparse gradients (nn.Embedding(sparse=True))")
        beta1, beta2 = group["betas"]
        grad = p.grad.coalesce()
        rows, values = grad.indices()[0], grad.values()  # [R], [R, D]
        if rows.numel() == 0:
            return
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = float(state["step"])
        m = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
        v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
        state["exp_avg"].index_copy_(0, rows, m)
        state["exp_avg_sq"].index_copy_(0, rows, v)
        step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        # rows are unique after coalesce: read-modify-write (index_add_ is ~3× slower on CPU)
        update = m.div_(v.sqrt_().add_(group["eps"]))
        current = p.index_select(0, rows)
        decay = group.get("weight_decay", 0.0)
        if decay:
            current.mul_(1.0 - group["lr"] * decay)
        p.index_copy_(0, rows, current.sub_(update, alpha=step_size))
