"""PAL: position bias learned in training, left out of the scores (Guo et al., RecSys 2019,
"PAL: a position-bias aware learning framework for CTR prediction in online recommender systems").

A logged exposure at position ``pos`` is clicked with p(click | x, pos) = p(seen | pos) · p(click | x,
seen). The ProbSeen module models p(seen | pos) from the position (and the scene: a feed and a
result page decay differently) alone; the relevance model never sees the position. Training fits
the product to the logged labels; an exposure without a position (every scoring candidate) is ranked
by relevance alone, p(click | x, seen). The same factor gates every task: a cart or a purchase needs
the item seen first (under ESMM only the click carries it, the others inherit it through pCTR).
"""

from __future__ import annotations

import torch
from torch import nn

from mtl_model.learn.networks.esmm import product_logit

HIDDEN = 16


class ProbSeen(nn.Module):
    """p(seen | position, scene) as a logit: a shallow tower on the two embeddings.

    position vector [B, D] (+ scene vector [B, D]) → Linear → ReLU → Linear → logit [B]."""

    def __init__(self, embedding_dim: int, with_scene: bool) -> None:
        super().__init__()
        self.with_scene = with_scene
        self.net = nn.Sequential(
            nn.Linear(embedding_dim * (2 if with_scene else 1), HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1)
        )

    def forward(self, position: torch.Tensor, scene: torch.Tensor | None) -> torch.Tensor:
        x = torch.cat([position, scene], dim=1) if self.with_scene and scene is not None else position
        return self.net(x).squeeze(1)  # [B]


def with_position_bias(
    logits: dict[str, torch.Tensor], seen: torch.Tensor, has_position: torch.Tensor, tasks: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """logit(p(seen) · p(task | seen)) for the rows with a position, the relevance logit elsewhere."""
    out = dict(logits)
    for task in tasks:
        out[task] = torch.where(has_position, product_logit(seen, logits[task]), logits[task])
    return out
