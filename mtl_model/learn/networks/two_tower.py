"""Two-tower retrieval with in-batch negatives and the logQ sampling-bias correction (Yi et al., RecSys
2019, "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item Recommendations").

A user tower u(x) and an item tower v(y) map into one space; both outputs are L2-normalised and the
score is s(x, y) = <u(x), v(y)> / τ (the paper's normalisation and temperature). Training sees a batch
of B positive pairs (x_i, y_i) (clicks); every other item of the batch is a negative for row i. Items
enter a batch in proportion to their frequency among the positives, so popular items are negatives
more often than under the uniform softmax the retrieval task needs; the paper corrects each logit by
the log of its item's sampling probability q_j:

    s_c(x_i, y_j) = s(x_i, y_j) − log q_j
    L = −(1/B) Σ_i log( exp(s_c(x_i, y_i)) / Σ_j exp(s_c(x_i, y_j)) )

Here q_j is exact (the item's share of the window's positive pairs: the whole window is known, so the
paper's streaming frequency estimate is not needed). One deviation, common in practice: where the
batch holds the same item twice, the copy in another row is not a negative for row i (its logit is
masked); the paper leaves such collisions in.

The towers (d = ``dim``):
* user: [user-id embedding (d), mean of the item-id embeddings of the user's clicked items (d)] →
  MLP → d. The clicked-item bag is an input, so a user's newest clicks move the vector without
  retraining; in training a pair's own item is left out of its bag (leave-one-out), so the tower
  cannot learn to return the bag.
* item: [item-id embedding (d), category embedding (d)] → MLP → d. The item-id table is the one the
  user bag reads (shared, as the item side of the paper's model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TEMPERATURE = 0.1


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))


class TwoTower(nn.Module):
    """User and item towers over integer codes (0 = null / unknown, as in the ranker's encoders)."""

    def __init__(
        self, n_users: int, n_items: int, n_categories: int, dim: int = 32, hidden: int = 64
    ) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)  # read by the item tower and the user's bag
        self.category_embedding = nn.Embedding(n_categories, dim)
        self.user_mlp = _mlp(dim, hidden)
        self.item_mlp = _mlp(dim, hidden)
        for table in (self.user_embedding, self.item_embedding, self.category_embedding):
            nn.init.normal_(table.weight, std=0.05)

    def bag_sums(self, bag_users: torch.Tensor, bag_items: torch.Tensor, n_users: int) -> torch.Tensor:
        """Σ of item-id embeddings per user [n_users, d] from the bag pairs (bag_users[k], bag_items[k])."""
        e = self.item_embedding(bag_items)  # [K, d]
        return torch.zeros(n_users, e.shape[1], dtype=e.dtype, device=e.device).index_add(0, bag_users, e)

    def users(self, user: torch.Tensor, bag_sum: torch.Tensor, bag_count: torch.Tensor) -> torch.Tensor:
        """user [B] codes, bag_sum [B, d], bag_count [B] → normalised user vectors [B, d] (empty bag: 0)."""
        bag = bag_sum / bag_count.clamp(min=1).unsqueeze(1).to(bag_sum.dtype)  # [B, d]
        x = torch.cat([self.user_embedding(user), bag], dim=1)  # [B, 2d]
        return F.normalize(self.user_mlp(x), dim=1)  # [B, d]

    def items(self, item: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """item [N], category [N] codes → normalised item vectors [N, d]."""
        x = torch.cat([self.item_embedding(item), self.category_embedding(category)], dim=1)  # [N, 2d]
        return F.normalize(self.item_mlp(x), dim=1)  # [N, d]


def in_batch_logq_loss(
    users: torch.Tensor,
    items: torch.Tensor,
    log_q: torch.Tensor,
    item_ids: torch.Tensor,
    temperature: float = TEMPERATURE,
) -> torch.Tensor:
    """The corrected in-batch softmax loss (module docstring) of B positive pairs: row i's user vector
    users[i] [B, d] with its item items[i] [B, d]; log_q [B] the log sampling probability of each
    row's item; item_ids [B] its code (equal codes in other rows are masked, not negatives)."""
    logits = users @ items.T / temperature - log_q.unsqueeze(0)  # [B, B]: s(x_i, y_j) − log q_j
    same = item_ids.unsqueeze(0) == item_ids.unsqueeze(1)  # [B, B]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(users.shape[0], device=users.device)
    return F.cross_entropy(logits, target)
