"""Joint multi-task models. Only the shared-bottom network exists so far; MMoE and PLE plug into
:func:`build_model` under their own names."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ARCHITECTURES = ("shared_bottom",)


def _mlp(in_dim: int, dims: Sequence[int]) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for dim in dims:
        layers += [nn.Linear(in_dim, dim), nn.ReLU()]
        in_dim = dim
    return nn.Sequential(*layers), in_dim


class SharedBottom(nn.Module):
    """Shared-bottom multi-task network (hard parameter sharing).

    Caruana, R. (1997). "Multitask Learning". Machine Learning 28(1), 41-75: tasks trained jointly
    share one representation, and what is learned for one task helps the others.

    One embedding table per categorical feature (code 0 = null is a fixed zero vector, code 1 = OOV
    starts at zero), concatenated with the numeric features, feeds a shared MLP bottom
    (``hidden_dims``); each task has its own small tower ending in one logit.
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        n_numeric: int,
        tasks: Sequence[str],
        embedding_dim: int = 16,
        hidden_dims: Sequence[int] = (128, 64),
        tower_dim: int = 32,
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("SharedBottom needs at least one task")
        self.tasks = tuple(tasks)
        self.embeddings = nn.ModuleList(
            nn.Embedding(int(size), embedding_dim, padding_idx=0) for size in cardinalities
        )
        for emb in self.embeddings:
            nn.init.normal_(emb.weight, std=0.05)
            with torch.no_grad():
                emb.weight[:2].zero_()  # null and OOV rows start neutral
        in_dim = embedding_dim * len(cardinalities) + n_numeric
        self.bottom, bottom_dim = _mlp(in_dim, hidden_dims)
        self.towers = nn.ModuleDict(
            {
                task: nn.Sequential(nn.Linear(bottom_dim, tower_dim), nn.ReLU(), nn.Linear(tower_dim, 1))
                for task in self.tasks
            }
        )

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cat`` LongTensor [B, C], ``num`` FloatTensor [B, F] → {task: logits [B]}."""
        parts = [emb(cat[:, i]) for i, emb in enumerate(self.embeddings)]
        shared = self.bottom(torch.cat([*parts, num], dim=1))
        return {task: tower(shared).squeeze(-1) for task, tower in self.towers.items()}


def build_model(
    name: str,
    cardinalities: Sequence[int],
    n_numeric: int,
    tasks: Sequence[str],
    embedding_dim: int = 16,
    hidden_dims: Sequence[int] = (128, 64),
    tower_dim: int = 32,
) -> nn.Module:
    """Build the architecture called ``name``; raises ``ValueError`` for an unknown name."""
    if name == "shared_bottom":
        return SharedBottom(cardinalities, n_numeric, tasks, embedding_dim, hidden_dims, tower_dim)
    raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    cat: torch.Tensor,
    num: torch.Tensor,
    batch_size: int = 65536,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Sigmoid probabilities per task for all rows, in batches, as CPU float64 tensors [N]."""
    model.eval()
    out: dict[str, list[torch.Tensor]] = {}
    for start in range(0, cat.shape[0], batch_size):
        logits = model(cat[start : start + batch_size].to(device), num[start : start + batch_size].to(device))
        for task, value in logits.items():
            out.setdefault(task, []).append(torch.sigmoid(value.double()).cpu())
    tasks = getattr(model, "tasks", tuple(out))
    return {t: torch.cat(out[t]) if t in out else torch.empty(0, dtype=torch.float64) for t in tasks}
