"""DIN: the user's behaviour sequence encoded by target attention, once for all tasks (Zhou et al.,
KDD 2018, "Deep Interest Network for Click-Through Rate Prediction").

Each step j of the sequence is the sum of its field embeddings e_j (item + category + event type +
days ago; item and category read the same tables as the target's, as in the paper). The local
activation unit weighs every step by its relevance to the candidate v: a_j = MLP([e_j, v, e_j − v,
e_j ⊙ v]), and the user's interest in v is the weighted sum Σ_j a_j e_j over the steps present,
without a softmax (the paper keeps the intensity of the interest). The interest vector joins the
shared input of the backbone, so every task reads the same encoding.
"""

from __future__ import annotations

import torch
from torch import nn

HIDDEN = 36  # the paper's activation unit: 36 then 1


class TargetAttention(nn.Module):
    """history [B, L, D], present [B, L] (bool), target [B, D] → interest [B, D]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.activation_unit = nn.Sequential(nn.Linear(4 * dim, HIDDEN), nn.PReLU(), nn.Linear(HIDDEN, 1))

    def weights(self, history: torch.Tensor, present: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """a [B, L]: the activation unit's weight of each step (0 where no step is present)."""
        v = target.unsqueeze(1).expand_as(history)  # [B, L, D]
        a = self.activation_unit(torch.cat([history, v, history - v, history * v], dim=-1)).squeeze(-1)
        return a * present.to(a.dtype)

    def forward(self, history: torch.Tensor, present: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self.weights(history, present, target).unsqueeze(1), history).squeeze(1)  # [B, D]
