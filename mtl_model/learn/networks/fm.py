"""FM: the factorization machine's pairwise term (Rendle, ICDM 2010, "Factorization Machines"), as
DeepFM uses it beside a deep network (Guo et al., IJCAI 2017, "DeepFM: a factorization-machine based
neural network for CTR prediction").

An MLP on concatenated embeddings learns a dot product between two of them only approximately
(Rendle et al., RecSys 2020, "Neural collaborative filtering vs. matrix factorization revisited"),
yet user · item is what taste is made of: the simulator's truth is exactly a dot product of a user's
and an item's latent vectors. The FM term adds it to every task's logit directly:

    y_fm = Σ_{i<j} ⟨v_i, v_j⟩ = ½ Σ_d [(Σ_i v_id)² − Σ_i v_id²]          (Rendle 2010, eq. 5)

over the fields' embeddings v_i [D] (user, item, category, scene, and DIN's interest vector when on).
Each task t reads the pooled vector p = ½[(Σ v)² − Σ v²] [D] through its own weights w_t [D]
(``w_t = 1`` at the start: the plain FM term), so a task can weigh the latent dimensions its own way
while all tasks share the embeddings. ``pairwise_by_definition`` is the sum over pairs written out,
for the tests.
"""

from __future__ import annotations

import torch
from torch import nn


def pairwise_pooling(fields: torch.Tensor) -> torch.Tensor:
    """½[(Σ_i v_i)² − Σ_i v_i²] per dimension: fields [B, K, D] → [B, D] in O(K·D)."""
    total = fields.sum(dim=1)  # [B, D]
    return 0.5 * (total * total - (fields * fields).sum(dim=1))


def pairwise_by_definition(fields: torch.Tensor) -> torch.Tensor:
    """Σ_{i<j} v_i ⊙ v_j, the O(K²) sum over pairs: fields [B, K, D] → [B, D]."""
    k = fields.shape[1]
    out = torch.zeros_like(fields[:, 0])
    for i in range(k):
        for j in range(i + 1, k):
            out = out + fields[:, i] * fields[:, j]
    return out


class FMTerm(nn.Module):
    """Per-task FM logits: fields [B, K, D] → [T, B]; ``w`` [T, D] starts at 1 (Rendle's term)."""

    def __init__(self, n_tasks: int, embedding_dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(n_tasks, embedding_dim))

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return self.w @ pairwise_pooling(fields).t()  # [T, D] @ [D, B] → [T, B]
