"""Model shapes, the architecture factory, and the metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtl_model.metrics import auc, log_loss
from mtl_model.models import SharedBottom, build_model, predict_proba


@pytest.mark.parametrize("tasks", [("click",), ("click", "purchase"), ("click", "cart", "purchase")])
def test_shared_bottom_forward_shapes(tasks: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    model = build_model("shared_bottom", [10, 20, 5, 4], 2, tasks, embedding_dim=8, hidden_dims=(16, 8))
    assert isinstance(model, SharedBottom)
    cat = torch.randint(0, 4, (7, 4))
    num = torch.randn(7, 2)
    out = model(cat, num)
    assert list(out) == list(tasks)
    assert all(v.shape == (7,) for v in out.values())
    probs = predict_proba(model, cat, num, batch_size=3)
    assert all(p.shape == (7,) and p.dtype == torch.float64 for p in probs.values())
    assert all(((p > 0) & (p < 1)).all() for p in probs.values())


def test_null_embedding_is_zero_and_gets_no_gradient() -> None:
    model = SharedBottom([6, 6], 1, ("click",), embedding_dim=4, hidden_dims=(8,))
    out = model(torch.tensor([[0, 3], [2, 0]]), torch.zeros(2, 1))
    out["click"].sum().backward()
    for emb in model.embeddings:
        assert torch.equal(emb.weight[0], torch.zeros(4))
        assert torch.equal(emb.weight.grad[0], torch.zeros(4))


def test_unknown_architecture_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'mmoe'"):
        build_model("mmoe", [3], 1, ("click",))


def test_auc_hand_computed() -> None:
    # positives 0.8 and 0.4; negatives 0.6, 0.2, 0.1: pairs won 3 + 2 of 6
    assert auc([1, 0, 1, 0, 0], [0.8, 0.6, 0.4, 0.2, 0.1]) == pytest.approx(5 / 6)
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0


def test_auc_ties_count_half() -> None:
    assert auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    # positive 0.5 ties one negative (half) and beats 0.1 (one): 1.5 / 2
    assert auc([1, 0, 0], [0.5, 0.5, 0.1]) == pytest.approx(0.75)
    # matches the pairwise definition on random data with many ties
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 5, 300).astype(float)
    pos, neg = s[y == 1], s[y == 0]
    brute = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert auc(y, s) == pytest.approx(brute)


def test_auc_one_class_is_nan() -> None:
    assert math.isnan(auc([1, 1], [0.2, 0.3]))
    assert math.isnan(auc([], []))


def test_log_loss() -> None:
    assert log_loss([1, 0], [0.8, 0.2]) == pytest.approx(-math.log(0.8))
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-7))
