"""Shared-bottom multi-task network: hard parameter sharing.

Caruana, R. (1997). "Multitask Learning". Machine Learning 28(1), 41-75.

All tasks share the hidden layers (the "bottom") and each has its own output layers (its tower):
x [B, I] → shared MLP [B, H] → T towers → T logits [B]. What is learned for one task is an inductive
bias for the others.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mtl_model.learn.networks.base import MultiTaskNet
from mtl_model.learn.networks.experts import mlp


class SharedBottom(MultiTaskNet):
    """Shared-bottom multi-task network (hard parameter sharing).

    Caruana, R. (1997). "Multitask Learning". Machine Learning 28(1), 41-75: tasks trained jointly
    share one representation, and what is learned for one task helps the others.

    x [B, I] → shared MLP ``hidden_dims`` → [B, H] → one tower per task. (Parameter names are those of
    the first Tandem model, so its saved versions still load.)
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        n_numeric: int,
        tasks: Sequence[str],
        embedding_dim: int = 16,
        hidden_dims: Sequence[int] = (128, 64),
        tower_dim: int = 32,
        **options,
    ) -> None:
        super().__init__(cardinalities, n_numeric, tasks, embedding_dim, tower_dim, **options)
        self.bottom, bottom_dim = mlp(self.in_dim, hidden_dims, self.dropout)
        self._build_towers(bottom_dim)

    def _backbone(self, x, scene_emb):
        shared = self.bottom(x)  # [B, H]
        return shared.unsqueeze(0).expand(len(self.tasks), -1, -1), {}

    def shared_parameters(self) -> list[nn.Parameter]:
        linears = [m for m in self.bottom if isinstance(m, nn.Linear)]
        return [linears[-1].weight] if linears else [self.embedding.weight]

    def shared_backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.bottom.parameters())
