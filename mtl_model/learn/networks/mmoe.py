"""Multi-gate Mixture-of-Experts (MMoE).

Ma, J., Zhao, Z., Yi, X., Chen, J., Hong, L., Chi, E. H. (2018). "Modeling Task Relationships in
Multi-task Learning with Multi-gate Mixture-of-Experts". KDD 2018, 1930-1939.

The paper's equations, for task k among T and experts f_1 … f_n (here E = ``n_experts``):

    y_k = h^k(f^k(x)),   f^k(x) = Σ_i g^k(x)_i f_i(x),   g^k(x) = softmax(W_gk x)

The experts are shared by all tasks; each task has its own gate g^k (one linear layer and a softmax
over the experts) and its own tower h^k. Here the gates also read the gate-only scene embedding:
x is concat(x, scene) for the gates when there is a scene feature.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mtl_model.learn.networks.base import MultiTaskNet
from mtl_model.learn.networks.experts import ExpertBank, gate_logits, mixture, softmax_gates


class MMoE(MultiTaskNet):
    """Multi-gate Mixture-of-Experts.

    Ma, J., Zhao, Z., Yi, X., Chen, J., Hong, L., Chi, E. H. (2018). "Modeling Task Relationships in
    Multi-task Learning with Multi-gate Mixture-of-Experts". KDD 2018, 1930-1939.

    ``n_experts`` expert MLPs (``hidden_dims``) on x [B, I] → [E, B, H]; per task a softmax gate over
    the experts on concat(x, scene embedding) [B, I + D] → [B, E]; task input = Σ_e gate · expert
    [B, H] → the task's tower.
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        n_numeric: int,
        tasks: Sequence[str],
        embedding_dim: int = 16,
        hidden_dims: Sequence[int] = (128, 64),
        tower_dim: int = 32,
        n_experts: int = 4,
        **options,
    ) -> None:
        super().__init__(cardinalities, n_numeric, tasks, embedding_dim, tower_dim, gated=True, **options)
        self.experts = ExpertBank(n_experts, self.in_dim, hidden_dims, self.dropout)
        self.n_experts = n_experts
        self.gates = nn.Linear(self.in_dim + self.gate_extra, len(self.tasks) * n_experts)  # all T gates
        self._build_towers(self.experts.out_dim)

    def _backbone(self, x, scene_emb):
        experts = self.experts(x)  # [E, B, H]
        logits = gate_logits(self.gates.weight, self.gates.bias, x, scene_emb)  # [T·E, B]
        g = softmax_gates(logits.view(len(self.tasks), self.n_experts, -1))  # [B, T, E]
        reps = mixture(g, experts)  # task t's input: Σ_e g[:, t, e] · expert_e(x) → [T, B, H]
        return reps, {t: g[:, k] for k, t in enumerate(self.tasks)}

    def shared_parameters(self) -> list[nn.Parameter]:
        return [self.experts.weights[-1]]

    def shared_backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.experts.parameters())
