"""Task towers and scene towers: the task-specific heads on top of a backbone.

Every multi-task model here ends in one tower per task: the task-specific layers of hard parameter
sharing (Caruana, 1997, "Multitask Learning", Machine Learning 28(1)), the towers h^k of MMoE (Ma et
al., KDD 2018). Scene towers follow no single paper: per task, a residual tower per scene (home,
search) is added to the shared tower's logit, a small form of the domain-specific parameters of
multi-scenario models (e.g. STAR: Sheng et al., 2021, "One Model to Serve All: Star Topology
Adaptive Recommender for Multi-Domain CTR Prediction", CIKM 2021). Its last layer starts at zero.

Shapes: T tasks, B batch, H backbone width, Ht tower width, S scene codes.
"""

from __future__ import annotations

import torch
from torch import nn

from mtl_model.learn.networks.experts import ExpertBank, uniform_


class TaskTowers(nn.Module):
    """One tower per task, ``in_dim → tower_dim → 1`` with a ReLU, all T evaluated together (one batched
    matmul per layer): task inputs [T, B, H] → logits [T, B]. Weights per layer [T, in, out]. ``p``:
    dropout after the hidden ReLU in train mode."""

    def __init__(self, n_tasks: int, in_dim: int, tower_dim: int, p: float = 0.0) -> None:
        super().__init__()
        self.hidden = ExpertBank(n_tasks, in_dim, [tower_dim], p)  # [T, B, H] → relu(...) [T, B, Ht]
        self.w_out = nn.Parameter(torch.empty(n_tasks, tower_dim, 1))  # [T, Ht, 1]
        self.b_out = nn.Parameter(torch.empty(n_tasks, 1, 1))  # [T, 1, 1]
        uniform_(self.w_out, tower_dim)
        uniform_(self.b_out, tower_dim)

    def forward(self, reps: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.b_out, self.hidden(reps), self.w_out).squeeze(-1)  # [T, B]


class SceneTower(nn.Module):
    """Scene-specific residual towers, all scenes in one GEMM: rep [B, H], scene [B] → logit [B].

    Tower of scene s: ``relu(rep @ W1[s] + b1[s]) · w2[s] + b2[s]`` with ``w2``/``b2`` zero at start.
    """

    def __init__(self, n_scenes: int, in_dim: int, tower_dim: int) -> None:
        super().__init__()
        self.n_scenes, self.tower_dim = n_scenes, tower_dim
        self.w1 = nn.Parameter(torch.empty(in_dim, n_scenes * tower_dim))  # [H, S·Ht]
        self.b1 = nn.Parameter(torch.empty(n_scenes * tower_dim))
        uniform_(self.w1, in_dim)
        uniform_(self.b1, in_dim)
        self.w2 = nn.Parameter(torch.zeros(n_scenes, tower_dim))  # [S, Ht]
        self.b2 = nn.Parameter(torch.zeros(n_scenes))  # [S]

    def forward(self, rep: torch.Tensor, scene: torch.Tensor) -> torch.Tensor:
        h = torch.relu(rep @ self.w1 + self.b1).view(-1, self.n_scenes, self.tower_dim)  # [B, S, Ht]
        h = h.gather(1, scene.view(-1, 1, 1).expand(-1, 1, self.tower_dim)).squeeze(1)  # [B, Ht]
        return (h * self.w2[scene]).sum(-1) + self.b2[scene]  # [B]
