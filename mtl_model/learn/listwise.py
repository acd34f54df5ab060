"""A listwise loss within each user's rows: the order inside a user's list, not the calibration
across users.

The pointwise log loss of :func:`mtl_model.learn.weighting.task_loss` rewards a score that is right
across users (the AUC); a recommendation list only needs the order within one user (the GAUC, the
within-user rank correlation). ``ranking_loss`` > 0 adds, for every task, the top-one listwise loss
of ListNet (Cao et al. 2007, "Learning to Rank: From Pairwise Approach to Listwise Approach", ICML)
over each user's rows of the batch, weighted by ``ranking_loss``:

    P(i | list g) = exp(s_i) / Σ_{j ∈ g} exp(s_j)                (top-one probability of the scores)
    L_g = − Σ_{i ∈ g} y_i · log P(i | g) / Σ_{i ∈ g} y_i          (the labels as the target distribution)
    L = Σ_g L_g / #{g : Σ y_i > 0}                                (lists with no positive carry nothing)

A user's rows must share batches for their lists to be more than one row: :func:`grouped_order` is
the epoch's row order then, the users in a seeded random order and each user's rows together (a
user may straddle two batches). With importance weights w (down-sampled negatives) the list's terms
are weighted: the softmax sums w_j·exp(s_j) and the target is w_i·y_i.

:func:`listwise_loss` is the batched kernel (segment sums, one pass, no loop over users);
``tests/test_listwise.py`` checks it against the formula above written as a loop.
"""

from __future__ import annotations

import torch

__all__ = ["grouped_order", "listwise_loss"]


def grouped_order(groups: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A seeded order of the rows [N] that keeps each group's rows together: the groups (ints in
    [0, G)) in a random order, the rows within a group in a random order too."""
    n = groups.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.long)
    n_groups = int(groups.max()) + 1
    group_rank = torch.randperm(n_groups, generator=generator)  # [G] each group's place
    row_rank = torch.randperm(n, generator=generator)  # [N] ties within a group
    return torch.argsort(group_rank[groups.cpu()] * n + row_rank)


def listwise_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """ListNet's top-one loss of the module docstring: logits [B], labels [B] in {0, 1}, groups [B]
    (the rows of one user share a value, and lie next to each other, as :func:`grouped_order` puts
    them; a group split by other rows counts as two lists) → scalar, 0 when no list has a positive.
    No host sync: the lists are numbered by a running count, at most B of them."""
    b = logits.shape[0]
    s = logits.float()
    starts = torch.ones_like(groups, dtype=torch.bool)
    starts[1:] = groups[1:] != groups[:-1]
    seg = torch.cumsum(starts.long(), 0) - 1  # [B] each row's list, 0..L-1 (L ≤ B)
    w = sample_weight.float() if sample_weight is not None else torch.ones_like(s)
    y = labels.float() * w  # [B] the target mass
    # log Σ_j w_j exp(s_j) per list, stable: shifted by the list's max score
    top = torch.full((b,), -torch.inf, device=s.device).scatter_reduce(
        0, seg, s.detach(), reduce="amax", include_self=True
    )
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # lists beyond L: unused
    mass = torch.zeros(b, device=s.device).index_add(0, seg, w * torch.exp(s - top[seg]))
    log_norm = torch.log(mass.clamp(min=1e-30)) + top  # [B]
    y_sum = torch.zeros(b, device=s.device).index_add(0, seg, y)  # [B] per list
    cross = torch.zeros(b, device=s.device).index_add(0, seg, y * (s - log_norm[seg]))  # [B] per list
    has_pos = (y_sum > 0).float()
    per_list = cross / y_sum.clamp(min=1e-12) * has_pos
    return -per_list.sum() / has_pos.sum().clamp(min=1.0)
