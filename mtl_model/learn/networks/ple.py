"""Customized Gate Control (CGC) and Progressive Layered Extraction (PLE).

Tang, H., Liu, J., Zhao, M., Gong, X. (2020). "Progressive Layered Extraction (PLE): A Novel
Multi-Task Learning (MTL) Model for Personalized Recommendations". RecSys 2020, 269-278.

A CGC layer has m_t experts per task and m_s shared experts. The gate of task k mixes task k's own
experts and the shared ones, y_k = t^k(g^k(x)) (t^k: the tower) with

    g^k(x) = w^k(x) S^k(x),   w^k(x) = softmax(W_g^k x),   S^k(x) = [E_k,1 … E_k,m_t, E_s,1 … E_s,m_s]

PLE stacks CGC layers ("extraction networks"): at level j, task k's experts and gate read task k's
output of level j − 1, the shared experts the shared output; every level but the last also has a
shared gate over *all* the level's experts, whose output is the next level's shared input. Here the
gates also read the gate-only scene embedding.

Shapes: T tasks, B batch, In level input width, H level output width, D embedding dim,
n = T·m_t + m_s experts in a level.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtl_model.learn.networks.base import MultiTaskNet
from mtl_model.learn.networks.experts import (
    ExpertBank,
    gate_logits,
    mixture,
    run_experts,
    softmax_gates,
    uniform_,
)


class CGC(nn.Module):
    """One Customized Gate Control layer of PLE: task-specific and shared experts, per-task gates over
    (own experts + shared experts), and (except in the last level) a shared gate over all experts.

    Inputs: per-task [T, B, In], shared [B, In], scene embedding [B, D] or None.
    Outputs: per-task [T, B, H], shared [B, H] (None in the last level), gates {name: [B, n]}.
    ``p``: dropout after each expert ReLU in train mode.

    The level's experts form one pool [n, B, H] (n = T·m_t task experts, task-major, then m_s shared
    ones); each task gate's weights sit on its own experts and the shared ones (zero elsewhere), so
    every gate mixes the pool in one batched matmul (:func:`mixture`).
    """

    def __init__(
        self,
        n_tasks: int,
        n_task_experts: int,
        n_shared_experts: int,
        in_dim: int,
        dims: Sequence[int],
        gate_extra: int,
        last: bool,
        p: float = 0.0,
    ) -> None:
        super().__init__()
        self.t, self.m_t, self.m_s = n_tasks, n_task_experts, n_shared_experts
        self.in_dim = in_dim
        self.task_experts = ExpertBank(n_tasks * n_task_experts, in_dim, dims, p)
        self.shared_experts = ExpertBank(n_shared_experts, in_dim, dims, p)
        self.out_dim = self.shared_experts.out_dim
        gate_in = in_dim + gate_extra
        self.task_gate_w = nn.Parameter(torch.empty(n_tasks, gate_in, n_task_experts + n_shared_experts))
        self.task_gate_b = nn.Parameter(torch.zeros(n_tasks, 1, n_task_experts + n_shared_experts))
        uniform_(self.task_gate_w, gate_in)
        self.shared_gate = None if last else nn.Linear(gate_in, n_tasks * n_task_experts + n_shared_experts)
        n = n_tasks * n_task_experts
        pools = [[k * n_task_experts + j for j in range(n_task_experts)] for k in range(n_tasks)]
        index = torch.tensor([own + list(range(n, n + n_shared_experts)) for own in pools])  # [T, m_t + m_s]
        self.register_buffer("pool_index", index, persistent=False)

    def _gates_on_one_input(
        self, x: torch.Tensor, scene_emb: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """First level, where every gate reads concat(x, scene): all the level's gate logits in one GEMM
        [T·m (+ n), In + D] @ [In + D, B]. Returns the task gates [B, T, m] and the shared gate [B, n]."""
        t, m = self.t, self.m_t + self.m_s
        w = self.task_gate_w.transpose(1, 2).reshape(t * m, -1)  # [T·m, In + D]
        b = self.task_gate_b.reshape(t * m)
        if self.shared_gate is not None:
            w = torch.cat([w, self.shared_gate.weight])
            b = torch.cat([b, self.shared_gate.bias])
        logits = gate_logits(w, b, x, scene_emb)  # [T·m (+ n), B]
        g = softmax_gates(logits[: t * m].view(t, m, -1))
        return g, (softmax_gates(logits[t * m :]) if self.shared_gate is not None else None)

    def _gates_on_task_inputs(
        self, task_in: torch.Tensor, shared_in: torch.Tensor, scene_emb: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Later levels: task gate t reads concat(task t's input, scene) ([T, m, In] @ [T, In, B]), the
        shared gate concat(shared input, scene). Returns [B, T, m] and [B, n] (None in the last level)."""
        w_x = self.task_gate_w[:, : self.in_dim].transpose(1, 2)  # [T, m, In]
        w_s = self.task_gate_w[:, self.in_dim :].transpose(1, 2)  # [T, m, D]: the scene embedding's part
        logits = torch.baddbmm(self.task_gate_b.transpose(1, 2), w_x, task_in.transpose(1, 2))  # [T, m, B]
        if scene_emb is not None:  # concat(input, scene) @ W = input @ W_x + scene @ W_s
            logits = logits + torch.matmul(w_s, scene_emb.t())  # + [T, m, D] @ [D, B]
        gs = None
        if self.shared_gate is not None:
            gs = softmax_gates(
                gate_logits(self.shared_gate.weight, self.shared_gate.bias, shared_in, scene_emb)
            )
        return softmax_gates(logits), gs

    def forward(
        self, task_in: torch.Tensor, shared_in: torch.Tensor, scene_emb: torch.Tensor | None, first: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        t, m_t = self.t, self.m_t
        banks = [self.task_experts, self.shared_experts]
        if first:  # every expert and every gate reads the same x [B, In]
            pool = run_experts(banks, shared_in)  # [n, B, H]
            g, gs = self._gates_on_one_input(shared_in, scene_emb)
        else:  # task t's experts read task t's input, the shared experts the shared input
            own = task_in if m_t == 1 else task_in.repeat_interleave(m_t, dim=0)  # [T·m_t, B, In]
            inputs = [own, shared_in.expand(self.m_s, -1, -1)]
            pool = run_experts(banks, torch.cat(inputs))  # [n, B, In] → [n, B, H]
            g, gs = self._gates_on_task_inputs(task_in, shared_in, scene_emb)
        b = g.shape[0]  # g: [B, T, m_t + m_s]
        weights = g.new_zeros(b, t, pool.shape[0]).scatter(
            2, self.pool_index.expand(b, -1, -1), g
        )  # [B, T, n]
        gates = {f"task{k}": g[:, k] for k in range(t)}
        if gs is not None:
            weights = torch.cat([weights, gs.unsqueeze(1)], dim=1)  # [B, T + 1, n]
            gates["shared"] = gs  # [B, n]
        reps = mixture(weights, pool)  # [T (+1), B, H]
        if gs is None:
            return reps, None, gates
        task_reps, shared_rep = reps.split([t, 1])  # (slicing would cost zero-filled gradient buffers)
        return task_reps, shared_rep.squeeze(0), gates


class PLE(MultiTaskNet):
    """Progressive Layered Extraction.

    Tang, H., Liu, J., Zhao, M., Gong, X. (2020). "Progressive Layered Extraction (PLE): A Novel
    Multi-Task Learning (MTL) Model for Personalized Recommendations". RecSys 2020, 269-278.

    ``levels`` stacked CGC layers; ``hidden_dims`` is split over the levels (e.g. (128, 64) with 2
    levels: experts of level 1 are I→128, of level 2 128→64). Each level has ``n_task_experts`` experts
    per task and ``n_shared_experts`` shared ones; gates read concat(level input, scene embedding).
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        n_numeric: int,
        tasks: Sequence[str],
        embedding_dim: int = 16,
        hidden_dims: Sequence[int] = (128, 64),
        tower_dim: int = 32,
        levels: int = 2,
        n_task_experts: int = 1,
        n_shared_experts: int = 2,
        **options,
    ) -> None:
        super().__init__(cardinalities, n_numeric, tasks, embedding_dim, tower_dim, gated=True, **options)
        if not 1 <= levels <= len(hidden_dims):
            raise ValueError(f"PLE levels must be between 1 and len(hidden_dims)={len(hidden_dims)}")
        dims = list(hidden_dims)
        cuts = [round(k * len(dims) / levels) for k in range(levels + 1)]
        per_level = [dims[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        self.levels = nn.ModuleList()
        in_dim = self.in_dim
        for k, level_dims in enumerate(per_level):
            cgc = CGC(
                len(self.tasks),
                n_task_experts,
                n_shared_experts,
                in_dim,
                level_dims,
                self.gate_extra,
                last=k == levels - 1,
                p=self.dropout,
            )
            self.levels.append(cgc)
            in_dim = cgc.out_dim
        self._build_towers(in_dim)

    def _backbone(self, x, scene_emb):
        task_in, shared_in = x.unsqueeze(0).expand(len(self.tasks), -1, -1), x  # [T, B, I], [B, I]
        gates: dict[str, torch.Tensor] = {}
        for k, cgc in enumerate(self.levels):
            task_in, shared_in, level_gates = cgc(task_in, shared_in, scene_emb, first=k == 0)
            for name, g in level_gates.items():
                key = self.tasks[int(name[4:])] if name.startswith("task") else name
                gates[f"level{k + 1}/{key}"] = g
        return task_in, gates

    def shared_parameters(self) -> list[nn.Parameter]:
        return [self.levels[-1].shared_experts.weights[-1]]

    def shared_backbone_parameters(self) -> list[nn.Parameter]:
        return [
            p
            for cgc in self.levels
            for module in (cgc.shared_experts, cgc.shared_gate)
            if module is not None
            for p in module.parameters()
        ]
