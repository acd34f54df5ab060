"""The categorical input: every feature's embedding table stacked into one table, one lookup a batch.

Embeddings of sparse ids concatenated with the dense features form the input of every Tandem model
(the "embedding + MLP" layout of Covington, Adams, Sargin, 2016, "Deep Neural Networks for YouTube
Recommendations", RecSys 2016): codes [B, C] → [B, C, D], flattened and joined with the numeric
features → x [B, I], I = C·D + F.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class _RowLookup(torch.autograd.Function):
    """``weight[rows]`` with ``nn.Embedding(padding_idx=0)``'s dense gradient (row 0 gets none), as
    ``index_select`` forward and ``index_add_`` backward: weight [V, D], rows [B, K] → [B, K, D].

    The same values and gradient as ``F.embedding``, whose CPU backward measured ~0.3 ms a step slower
    for 2048 × 5 lookups into 40k rows. CPU only (``index_add_`` on CUDA adds in no fixed order).
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        ctx.table_shape = weight.shape
        return weight.index_select(0, rows.reshape(-1)).view(*rows.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (rows,) = ctx.saved_tensors
        dim = ctx.table_shape[1]
        grad_weight = grad.new_zeros(ctx.table_shape).index_add_(0, rows.reshape(-1), grad.reshape(-1, dim))
        grad_weight[0] = 0.0  # the null row (padding) stays zero
        return grad_weight, None


class FeatureEmbedding(nn.Embedding):
    """The embedding tables of K categorical features stacked into one table: one lookup per batch
    (and one sparse gradient, one optimizer update) instead of one per feature.

    codes [B, C] (per-feature codes, :mod:`mtl_model.learn.features`) → vectors [B, K + S, D], where table
    k reads column ``columns[k]`` (a column may feed two tables: the gates' own scene embedding) and
    each of the S ``shared`` (column, table) lookups reads a column in an existing table. Row 0 is the
    null vector shared by every table (code 0, zero and never updated: ``padding_idx``); code c ≥ 1 of
    table k is row ``offsets[k] + c`` with ``offsets[k] = Σ_{j<k} (sizes[j] − 1)``. Every other row is
    initialised N(0, 0.05²) except each table's OOV row (code 1), which starts at zero.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        dim: int,
        columns: Sequence[int],
        sparse: bool = False,
        shared: Sequence[tuple[int, int]] = (),
    ) -> None:
        if len(columns) > len(sizes) or any(int(n) < 2 for n in sizes):
            raise ValueError(f"one size ≥ 2 (null + OOV) per table needed, got {list(sizes)}")
        if any(not 0 <= k < len(sizes) for _, k in shared):
            raise ValueError(f"shared lookups must name one of the {len(sizes)} tables: {list(shared)}")
        self.sizes = [int(n) for n in sizes]
        offsets = [0]
        for n in self.sizes[:-1]:
            offsets.append(offsets[-1] + n - 1)
        super().__init__(1 + sum(n - 1 for n in self.sizes), dim, padding_idx=0, sparse=sparse)
        # lookups: column columns[k] in table k, then the ``shared`` (column, table) pairs, which read
        # any table (a behaviour sequence's items in the item table; tables past len(columns) are read
        # only this way)
        tables = [*range(len(columns)), *(k for _, k in shared)]
        lookup_columns = [*columns, *(c for c, _ in shared)]
        self.register_buffer("columns", torch.tensor(lookup_columns, dtype=torch.long), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.register_buffer(
            "lookup_offsets", torch.tensor(offsets, dtype=torch.long)[tables], persistent=False
        )
        self.register_buffer("limits", torch.tensor(self.sizes, dtype=torch.long)[tables], persistent=False)
        nn.init.normal_(self.weight, std=0.05)
        with torch.no_grad():
            self.weight[0].zero_()  # null
            self.weight[self.offsets + 1] = 0.0  # every table's OOV row starts neutral

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        codes = codes.index_select(1, self.columns)  # [B, K]
        # a code beyond its table would read another table's row: checked when scoring (codes of other
        # encoders?); training codes come from the encoders fitted on the same rows
        if not self.training and bool(((codes < 0) | (codes >= self.limits)).any()):
            raise IndexError(f"categorical codes out of range for table sizes {self.sizes}")
        rows = torch.where(codes > 0, codes + self.lookup_offsets, 0)  # [B, K] rows of the stacked table
        if self.sparse or self.weight.device.type != "cpu":
            return super().forward(rows)  # [B, K, D]
        return _RowLookup.apply(self.weight, rows)  # the same values and gradient, faster on CPU

    def rows(self, k: int) -> slice:
        """Rows of table ``k``'s codes 1 … sizes[k] − 1 in the stacked table."""
        start = int(self.offsets[k]) + 1
        return slice(start, start + self.sizes[k] - 1)
