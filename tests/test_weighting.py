"""Loss weighting (fixed, uncertainty, GradNorm, PCGrad) and class-imbalance losses on toy problems."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtl_model.learn.optim import RowSparseAdam
from mtl_model.learn.weighting import (
    FixedWeighting,
    GradNorm,
    PCGrad,
    UncertaintyWeighting,
    make_weighting,
    model_optimizer_parameters,
    positive_weights,
    project_conflicting,
    task_loss,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


class Toy(nn.Module):
    """A shared layer and two heads; task "big" has its loss scaled by ``scale`` (larger loss and
    larger gradients on the shared layer), task "small" is the plain BCE."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(8, 16)
        self.heads = nn.ModuleList(nn.Linear(16, 1) for _ in range(2))

    def losses(self, x: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
        h = torch.relu(self.shared(x))
        big = F.binary_cross_entropy_with_logits(self.heads[0](h).squeeze(-1), y[:, 0]) * scale
        small = F.binary_cross_entropy_with_logits(self.heads[1](h).squeeze(-1), y[:, 1])
        return torch.stack([big, small])


def run_toy(weighting, steps: int = 60, scale: float = 10.0) -> tuple[Toy, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = Toy()
    x = torch.randn(512, 8)
    y = torch.stack([(x[:, 0] > 0).float(), (x[:, 1] + 0.5 * x[:, 2] > 0).float()], dim=1)
    opt = torch.optim.Adam(list(model.parameters()) + model_optimizer_parameters(weighting), lr=0.01)
    seen = []
    for _ in range(steps):
        loss = weighting(model.losses(x, y, scale), [model.shared.weight])
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen.append(weighting.weights())
    return model, seen


def test_fixed_weights_stay_and_weigh_the_sum() -> None:
    w = FixedWeighting(2, [2.0, 0.5])
    losses = torch.tensor([1.0, 4.0])
    assert w(losses).item() == pytest.approx(2.0 * 1.0 + 0.5 * 4.0)
    _, seen = run_toy(w, steps=5)
    assert all(torch.equal(s, torch.tensor([2.0, 0.5])) for s in seen)
    assert torch.equal(FixedWeighting(3).weights(), torch.ones(3))
    with pytest.raises(ValueError, match="3 non-negative"):
        FixedWeighting(3, [1.0, 2.0])


def test_uncertainty_weighting_lowers_the_weight_of_the_larger_loss() -> None:
    w = UncertaintyWeighting(2)
    assert torch.equal(w.weights(), torch.ones(2))
    losses = torch.tensor([1.0, 4.0])
    assert w(losses).item() == pytest.approx(5.0)  # s = 0: exp(0) L + 0
    _, seen = run_toy(w, steps=100)
    big, small = seen[-1]
    assert big < 1.0 < small  # weight exp(-s) heads for 1 / (2 L): the scaled task loses weight
    assert seen[-1][0] < seen[10][0]  # and keeps moving that way


def test_uncertainty_equilibrium_is_one_over_twice_the_loss() -> None:
    w = UncertaintyWeighting(2)
    opt = torch.optim.Adam(w.parameters(), lr=0.05)
    losses = torch.tensor([2.0, 0.25])
    for _ in range(2000):
        opt.zero_grad()
        w(losses).backward()
        opt.step()
    assert w.weights().tolist() == pytest.approx([1 / 4.0, 1 / 0.5], rel=0.02)


def test_gradnorm_moves_weight_away_from_the_dominating_gradient() -> None:
    w = GradNorm(2, alpha=1.5, lr=0.01)
    _, seen = run_toy(w, steps=60, scale=10.0)
    big, small = seen[-1]
    assert big < 1.0 < small  # G_big = 10x G_small at the start: its weight must fall
    assert float(seen[-1].sum()) == pytest.approx(2.0, abs=1e-5)  # renormalised to the task count
    assert float(seen[-1][0]) < float(seen[5][0])


def test_gradnorm_favours_the_task_that_trains_slower() -> None:
    """Equal gradient scales; the losses' training rates differ: with alpha > 0 the task whose loss
    falls more slowly (relative inverse rate r > 1) gets the larger weight."""
    w = GradNorm(2, alpha=1.5, lr=0.05)
    w.initial_losses.copy_(torch.tensor([1.0, 1.0]))
    shared = nn.Parameter(torch.ones(4))
    for _ in range(30):
        drift = 0.5 * (shared.mean() - 1.0)  # the same gradient for both tasks
        losses = torch.stack([0.18 + drift, 1.1 + drift])  # task 0 fell to 0.18 of its start, task 1 rose
        w(losses, [shared])
    slow_task = w.weights()[1]
    assert slow_task > 1.0 > w.weights()[0]


def test_gradnorm_does_nothing_without_a_graph_and_round_trips_its_state() -> None:
    w = GradNorm(2)
    assert w(torch.tensor([1.0, 2.0]), []).item() == pytest.approx(3.0)
    assert torch.isnan(w.initial_losses).all()  # nothing learned from a constant
    run_toy(w, steps=10)
    again = GradNorm(2)
    again.load_state_dict(w.state_dict())
    assert torch.equal(again.weights(), w.weights())
    assert torch.equal(again.initial_losses, w.initial_losses)
    assert again._optimizer.state_dict()["state"][0]["step"] == w._optimizer.state_dict()["state"][0]["step"]
    assert make_weighting("gradnorm", 2).describe()["method"] == "gradnorm"
    with pytest.raises(ValueError, match="loss_weighting must be one of"):
        make_weighting("mgda", 2)


def linear_tasks(a: list[float], b: list[float]):
    """Two tasks whose losses are linear in a shared θ ∈ R², L_1 = a·θ and L_2 = b·θ (so their gradients
    on θ are a and b), plus a head parameter only task 1 uses."""
    theta = nn.Parameter(torch.tensor([0.3, -0.2]))
    head = nn.Parameter(torch.tensor(2.0))
    losses = torch.stack([head * (torch.tensor(a) @ theta), torch.tensor(b) @ theta])
    return theta, head, losses


def test_pcgrad_projects_two_conflicting_gradients() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([-3.0, 1.0])  # a·b = −3: they conflict
    assert (a + b) @ a < 0  # the plain sum would increase task 1's loss
    theta, head, losses = linear_tasks([1.0, 0.0], [-3.0, 1.0])
    w = PCGrad(2)
    loss = w(losses, [theta])
    assert loss.item() == pytest.approx(losses.sum().item())  # the value is Σ w L; only gradients change
    loss.backward()
    g1, g2 = 2.0 * a, b  # ∇_θ of head · a·θ (head = 2) and of b·θ
    expected = (g1 - (g1 @ g2) / (g2 @ g2) * g2) + (g2 - (g2 @ g1) / (g1 @ g1) * g1)
    assert torch.allclose(theta.grad, expected, atol=1e-6)
    assert theta.grad @ g1 >= 0 and theta.grad @ g2 >= 0  # no task's loss goes up to first order
    assert not torch.allclose(theta.grad, g1 + g2)
    assert head.grad.item() == pytest.approx((a @ theta).item())  # a task-specific parameter: untouched
    assert w.conflicts.tolist() == [[0, 1], [1, 0]] and w.describe()["conflict_rate"] == [[0, 1], [1, 0]]


def test_pcgrad_leaves_agreeing_gradients_alone_and_is_inert_without_a_graph() -> None:
    theta, _, losses = linear_tasks([1.0, 0.0], [1.0, 2.0])  # a·b > 0
    w = PCGrad(2, weights=[1.0, 0.5])
    w(losses, [theta]).backward()
    assert torch.allclose(theta.grad, 2.0 * torch.tensor([1.0, 0.0]) + 0.5 * torch.tensor([1.0, 2.0]))
    assert int(w.conflicts.sum()) == 0 and int(w.steps) == 1
    assert w(torch.tensor([1.0, 2.0]), []).item() == pytest.approx(2.0)  # no shared parameters: Σ w L
    assert make_weighting("pcgrad", 2, fixed_weights=[1.0, 3.0]).weights().tolist() == [1.0, 3.0]


def test_projected_gradients_never_conflict_with_any_task_for_two_tasks() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        grads = torch.randn(2, 5, generator=g)
        total = project_conflicting(grads, torch.tensor([1, 0])).sum(0)
        assert (grads @ total >= -1e-5).all()


def test_pcgrad_order_is_seeded_and_checkpointed() -> None:
    grads = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [-0.5, -1.0, 1.0]])
    orders = {
        tuple(project_conflicting(grads, torch.tensor(o)).flatten().tolist()) for o in ([0, 1, 2], [2, 1, 0])
    }
    assert len(orders) == 2  # with three tasks the projection order matters (hence the seeded shuffle)
    w = PCGrad(2, seed=3)
    run_toy(w, steps=7)
    again = PCGrad(2, seed=99)
    again.load_state_dict(w.state_dict())
    assert torch.equal(again.conflicts, w.conflicts) and int(again.steps) == 7
    assert torch.equal(
        torch.randperm(5, generator=again._generator), torch.randperm(5, generator=w._generator)
    )


def test_pcgrad_trains_the_toy_problem() -> None:
    model, _ = run_toy(PCGrad(2), steps=60, scale=10.0)
    torch.manual_seed(1)
    x = torch.randn(512, 8)
    y = torch.stack([(x[:, 0] > 0).float(), (x[:, 1] + 0.5 * x[:, 2] > 0).float()], dim=1)
    assert (model.losses(x, y, 1.0) < 0.5).all()  # both tasks learned (BCE of a coin is 0.69)


def test_positive_weights_are_tempered_and_capped() -> None:
    labels = torch.zeros(10_000, 3)
    labels[:100, 0] = 1  # 1 % positives: sqrt(99) ~ 9.95
    labels[:5000, 1] = 1  # balanced: 1
    labels[:1, 2] = 1  # 1 in 10k: sqrt(9999) ~ 100 -> capped at 50
    w = positive_weights(labels, "pos_weight")
    assert w.tolist() == pytest.approx([math.sqrt(99), 1.0, 50.0], rel=1e-5)
    assert torch.equal(positive_weights(labels, "none"), torch.ones(3))
    with pytest.raises(ValueError):
        positive_weights(labels, "smote")


def test_pos_weight_and_focal_losses() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    assert task_loss(logits, y).item() == pytest.approx(bce.mean().item())
    weighted = task_loss(logits, y, "pos_weight", pos_weight=4.0).item()
    assert weighted == pytest.approx((4 * bce[:2].sum() + bce[2:].sum()).item() / 4, rel=1e-6)
    focal = task_loss(logits, y, "focal", gamma=2.0).item()
    assert focal < task_loss(logits, y).item()  # every term is scaled by (1 - p_t)^2 < 1
    # the hard example (positive at logit -1) keeps a larger share of its loss than the easy one (-3 negative)
    p = torch.sigmoid(logits)
    share_hard, share_easy = (1 - p[1]) ** 2, p[3] ** 2
    assert share_hard > 10 * share_easy
    assert task_loss(logits, y, "focal", gamma=0.0).item() == pytest.approx(bce.mean().item())


def test_row_sparse_adam_matches_sparse_adam_and_keeps_padding_at_zero() -> None:
    torch.manual_seed(0)
    a = nn.Embedding(50, 4, sparse=True, padding_idx=0)
    b = nn.Embedding(50, 4, sparse=True, padding_idx=0)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = torch.optim.SparseAdam(a.parameters(), lr=0.01), RowSparseAdam(b.parameters(), lr=0.01)
    untouched = b.weight[49].clone()
    for _ in range(30):
        idx = torch.randint(0, 49, (64,))  # row 49 never appears
        for emb, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            (emb(idx) ** 2).sum().backward()
            opt.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6)
    assert torch.equal(b.weight[0], torch.zeros(4)) and torch.equal(b.weight[49], untouched)
    dense = nn.Embedding(5, 2)
    dense(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="needs sparse gradients"):
        RowSparseAdam(dense.parameters()).step()
