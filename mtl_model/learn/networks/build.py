"""The architecture factory, the split of parameters for the optimisers, and batched prediction.

The architectures by paper: :mod:`~mtl_model.learn.networks.shared_bottom` (Caruana 1997),
:mod:`~mtl_model.learn.networks.mmoe` (Ma et al., KDD 2018), :mod:`~mtl_model.learn.networks.ple`
(Tang et al., RecSys 2020); the ESMM output (Ma et al., SIGIR 2018) on top of any of them
(:mod:`~mtl_model.learn.networks.esmm`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtl_model.config import ARCHITECTURES
from mtl_model.learn.networks.base import MultiTaskNet
from mtl_model.learn.networks.esmm import default_esmm
from mtl_model.learn.networks.mmoe import MMoE
from mtl_model.learn.networks.ple import PLE
from mtl_model.learn.networks.shared_bottom import SharedBottom


def build_model(
    name: str,
    cardinalities: Sequence[int],
    n_numeric: int,
    tasks: Sequence[str],
    embedding_dim: int = 16,
    hidden_dims: Sequence[int] = (128, 64),
    tower_dim: int = 32,
    *,
    esmm: bool | None = None,
    scene_index: int | None = None,
    scene_towers: bool = False,
    sparse: bool = False,
    n_experts: int = 4,
    ple_levels: int | None = None,
    ple_task_experts: int = 1,
    ple_shared_experts: int = 2,
    bias_index: int | None = None,
    history: dict | None = None,
    text: dict | None = None,
    dropout: float = 0.0,
    interaction: str | None = None,
) -> MultiTaskNet:
    """Build the architecture called ``name``; raises ``ValueError`` for an unknown name.

    ``esmm=None`` means the default of :func:`default_esmm`; ``ple_levels=None`` means
    ``min(2, len(hidden_dims))``; ``dropout``: after each hidden ReLU, in training only;
    ``interaction="fm"``: the FM pairwise term in every task's logit (:mod:`~mtl_model.learn.networks.fm`).
    """
    tasks = tuple(tasks)
    if esmm is None:
        esmm = default_esmm(name, tasks)
    common = dict(
        esmm=esmm,
        scene_index=scene_index,
        scene_towers=scene_towers,
        sparse=sparse,
        bias_index=bias_index,
        history=history,
        text=text,
        dropout=float(dropout),
        interaction=interaction,
    )
    hidden_dims = tuple(int(d) for d in hidden_dims)
    if name == "shared_bottom":
        return SharedBottom(cardinalities, n_numeric, tasks, embedding_dim, hidden_dims, tower_dim, **common)
    if name == "mmoe":
        return MMoE(
            cardinalities, n_numeric, tasks, embedding_dim, hidden_dims, tower_dim, n_experts, **common
        )
    if name == "ple":
        levels = min(2, len(hidden_dims)) if ple_levels is None else ple_levels
        return PLE(
            cardinalities,
            n_numeric,
            tasks,
            embedding_dim,
            hidden_dims,
            tower_dim,
            levels,
            ple_task_experts,
            ple_shared_experts,
            **common,
        )
    raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(parameters of sparse-gradient embeddings, every other parameter), each in module order."""
    sparse_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse}
    params = list(model.parameters())
    return [p for p in params if id(p) in sparse_ids], [p for p in params if id(p) not in sparse_ids]


@torch.inference_mode()
def predict_proba(
    model: nn.Module,
    cat: torch.Tensor,
    num: torch.Tensor,
    batch_size: int = 65536,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Sigmoid probabilities per task for all rows, in batches, as CPU float64 tensors [N]."""
    was_training = model.training
    model.eval()
    out: dict[str, list[torch.Tensor]] = {}
    for start in range(0, cat.shape[0], batch_size):
        logits = model(cat[start : start + batch_size].to(device), num[start : start + batch_size].to(device))
        for task, value in logits.items():
            out.setdefault(task, []).append(torch.sigmoid(value.double()).cpu())
    model.train(was_training)
    tasks = getattr(model, "tasks", tuple(out))
    return {t: torch.cat(out[t]) if t in out else torch.empty(0, dtype=torch.float64) for t in tasks}
