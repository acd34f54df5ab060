"""Text as a feature: one learned encoder of hashed n-grams, shared by the item's title and the search
query, and the query–title match.

The encoder is fastText's (Joulin, Grave, Bojanowski, Mikolov, EACL 2017, "Bag of Tricks for
Efficient Text Classification"): a text is the bag of its word and character n-grams, each hashed
into one of ``buckets`` rows of an embedding table (the hashing trick keeps the table fixed in size
and needs no vocabulary, so an n-gram first met at scoring time has a row too), and its vector is the
mean of those rows, here followed by a linear projection (no bias, so a text without n-grams is the
zero vector). The n-grams and their codes come from :mod:`mtl_model.learn.features` (``text_codes``).

The title and the query go through the SAME weights (DSSM's shared semantic space: Huang, He, Gao,
Deng, Acero, Heck, CIKM 2013, "Learning Deep Structured Semantic Models for Web Search using
Clickthrough Data", where the relevance of a document to a query is the cosine of their two
encodings). What joins the shared backbone input, so every task reads it:

* the title's vector t [B, D];
* the match cos(q, t) [B, 1] for rows with a query and a title (the search scene), 0 for the others.

Shapes: B batch, L n-grams kept per text, D embedding dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TextEncoder(nn.Module):
    """Codes [B, L] (0: no n-gram; 1 … buckets: an n-gram's bucket + 1) → vectors [B, D]."""

    def __init__(self, buckets: int, dim: int, sparse: bool = False) -> None:
        super().__init__()
        if buckets < 1:
            raise ValueError(f"text buckets must be ≥ 1, got {buckets}")
        self.buckets = int(buckets)
        self.embedding = nn.Embedding(self.buckets + 1, dim, padding_idx=0, sparse=sparse)
        nn.init.normal_(self.embedding.weight, std=0.05)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.projection = nn.Linear(dim, dim, bias=False)

    def bag(self, codes: torch.Tensor) -> torch.Tensor:
        """The mean of the n-grams' embeddings [B, D] (zero for a text without n-grams)."""
        if not self.training and bool(((codes < 0) | (codes > self.buckets)).any()):
            raise IndexError(f"text codes out of range for {self.buckets} buckets")
        present = (codes != 0).unsqueeze(-1)  # [B, L, 1]
        total = self.embedding(codes).sum(dim=1)  # [B, D]: the padding row is zero
        return total / present.sum(dim=1).clamp(min=1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.projection(self.bag(codes))


class TitleQueryText(nn.Module):
    """``cat``'s text codes [B, 2L] (title then query) → [B, D + 1]: the title's vector and the
    query–title cosine (0 where either text is missing)."""

    def __init__(self, buckets: int, length: int, dim: int, sparse: bool = False) -> None:
        super().__init__()
        self.length = int(length)
        self.encoder = TextEncoder(buckets, dim, sparse=sparse)
        self.out_dim = dim + 1

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        title_codes, query_codes = codes.split([self.length, self.length], dim=1)
        # one pass over both texts through the same weights
        both = self.encoder(torch.cat([title_codes, query_codes], dim=0))  # [2B, D]
        title, query = both.split([codes.shape[0], codes.shape[0]], dim=0)
        has_both = (title_codes != 0).any(dim=1) & (query_codes != 0).any(dim=1)  # [B]
        match = F.cosine_similarity(title, query, dim=1, eps=1e-8) * has_both.to(title.dtype)
        return torch.cat([title, match.unsqueeze(1)], dim=1)
