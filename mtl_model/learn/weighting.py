"""Per-task losses (with class-imbalance handling) and how they are combined into one training loss.

Losses per task, on logits (under ESMM the logit of pCTCVR, see :mod:`mtl_model.learn.networks`):

* ``class_balance="none"``: binary cross-entropy. Keeps the outputs calibrated probabilities, which the
  fused score ``p_click^a · p_purchase^b`` relies on; the default.
* ``"pos_weight"``: BCE with positives weighted by ``min(sqrt(n_neg / n_pos), 50)`` per task, from the
  training labels. The square root tempers the full ratio (≈100 for purchases), which would swamp the
  gradient with a few positives. Raises every probability of rare tasks: outputs are then scores,
  not calibrated probabilities.
* ``"focal"``: focal loss ``(1 - p_t)^gamma · BCE`` (Lin et al. 2017, ICCV, "Focal Loss for Dense
  Object Detection"): well-classified (mostly negative) exposures count less. Also distorts
  calibration, less than pos_weight.

Combining the task losses L_t (a tensor [T]) into the loss that is back-propagated:

* :class:`FixedWeighting`: Σ w_t L_t with constant weights (default all 1).
* :class:`UncertaintyWeighting`: Kendall, A., Gal, Y., Cipolla, R. (2018). "Multi-Task Learning Using
  Uncertainty to Weigh Losses for Scene Geometry and Semantics". CVPR 2018. A learned log-variance
  s_t per task; for a classification likelihood the loss is Σ exp(-s_t) L_t + s_t / 2, so the weight
  exp(-s_t) settles at 1 / (2 L_t): tasks with a larger loss get a smaller weight.
* :class:`GradNorm`: Chen, Z., Badrinarayanan, V., Lee, C.-Y., Rabinovich, A. (2018). "GradNorm:
  Gradient Normalization for Adaptive Loss Balancing in Deep Multitask Networks". ICML 2018. Learned
  weights w_t (renormalised to Σ w = T) are moved so that each task's weighted gradient norm
  G_t = ||∇_W w_t L_t|| on the last shared layer W approaches mean(G) · r_t^alpha, where r_t is the
  task's relative inverse training rate (L_t / L_t(0)) / mean(L / L(0)). Tasks whose gradients
  dominate lose weight; tasks that train slowly gain weight.
* :class:`PCGrad`: Yu, T., Kumar, S., Gupta, A., Levine, S., Hausman, K., Finn, C. (2020). "Gradient
  Surgery for Multi-Task Learning". NeurIPS 2020. On the shared parameters θ (the model's
  ``shared_backbone_parameters``), each task gradient g_i = ∇_θ w_i L_i that conflicts with another
  task's (g_i · g_j < 0) is projected onto the normal plane of g_j, g_i ← g_i − (g_i · g_j) / ‖g_j‖² g_j,
  for the other tasks j in a random order; θ is updated with Σ_i of the projected gradients. Every
  other parameter gets the plain Σ_i ∇ w_i L_i. Costs one extra backward pass per task.

Every weighting is an ``nn.Module`` whose state (learned weights, GradNorm's optimizer and initial
losses) is in its ``state_dict``, so a checkpoint resumes it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mtl_model.config import CLASS_BALANCES, LOSS_WEIGHTINGS

MAX_POS_WEIGHT = 50.0


def positive_weights(labels: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-task positive weight [T] from training labels [N, T]: ones unless ``mode == "pos_weight"``."""
    if mode not in CLASS_BALANCES:
        raise ValueError(f"class_balance must be one of {CLASS_BALANCES}, not {mode!r}")
    n_tasks = labels.shape[1]
    if mode != "pos_weight" or labels.shape[0] == 0:
        return torch.ones(n_tasks)
    pos = labels.sum(0).double()
    neg = labels.shape[0] - pos
    ratio = torch.where(pos > 0, neg / pos.clamp(min=1), torch.ones_like(pos))
    return ratio.sqrt().clamp(1.0, MAX_POS_WEIGHT).float()


def task_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mode: str = "none",
    pos_weight: float = 1.0,
    gamma: float = 2.0,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean loss of one task: logits [B], labels [B] in {0, 1} → scalar (see the module docstring).
    ``sample_weight`` [B] (the importance weights of down-sampled negatives): the weighted mean
    Σ wᵢ·lᵢ / Σ wᵢ instead."""
    if mode not in CLASS_BALANCES:
        raise ValueError(f"class_balance must be one of {CLASS_BALANCES}, not {mode!r}")
    if sample_weight is None and mode == "none":
        return F.binary_cross_entropy_with_logits(logits, labels)
    if sample_weight is None and mode == "pos_weight":
        weight = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, labels, pos_weight=weight)
    weight = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    ce = F.binary_cross_entropy_with_logits(
        logits, labels, pos_weight=weight if mode == "pos_weight" else None, reduction="none"
    )
    if mode == "focal":
        p = torch.sigmoid(logits)
        p_t = p * labels + (1 - p) * (1 - labels)
        ce = (1 - p_t).pow(gamma) * ce
    if sample_weight is None:
        return ce.mean()
    return (ce * sample_weight).sum() / sample_weight.sum().clamp(min=1e-12)


class LossWeighting(nn.Module):
    """Base class: ``forward(losses [T], shared_params) → scalar loss to back-propagate``."""

    method = "base"

    def __init__(self, n_tasks: int) -> None:
        super().__init__()
        self.n_tasks = n_tasks

    def weights(self) -> torch.Tensor:
        """Current effective weights [T] (detached, CPU)."""
        raise NotImplementedError

    def forward(self, losses: torch.Tensor, shared_params: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        """JSON-able summary for the model's ``config.json``."""
        return {"method": self.method, "weights": [round(float(w), 6) for w in self.weights()]}


class FixedWeighting(LossWeighting):
    """Σ w_t L_t with constant weights."""

    method = "fixed"

    def __init__(self, n_tasks: int, weights: Sequence[float] | None = None) -> None:
        super().__init__(n_tasks)
        w = torch.ones(n_tasks) if not weights else torch.tensor([float(x) for x in weights])
        if w.shape != (n_tasks,) or (w < 0).any():
            raise ValueError(f"fixed task weights must be {n_tasks} non-negative numbers, got {weights}")
        self.register_buffer("w", w)

    def weights(self) -> torch.Tensor:
        return self.w.detach().cpu().clone()

    def forward(self, losses, shared_params=()):
        return (self.w * losses).sum()


class UncertaintyWeighting(LossWeighting):
    """Kendall et al. (2018): Σ exp(-s_t) L_t + s_t / 2 with learned s_t = log σ_t² (trained by the
    model's dense optimizer; they must be in its parameter list)."""

    method = "uncertainty"

    def __init__(self, n_tasks: int) -> None:
        super().__init__(n_tasks)
        self.log_vars = nn.Parameter(torch.zeros(n_tasks))

    def weights(self) -> torch.Tensor:
        return torch.exp(-self.log_vars.detach()).cpu()

    def forward(self, losses, shared_params=()):
        return (torch.exp(-self.log_vars) * losses + 0.5 * self.log_vars).sum()


class GradNorm(LossWeighting):
    """Chen et al. (2018), with its own Adam on the weights (they are not trained by the model's loss).

    Each training call: (1) the loss to back-propagate is Σ w_t L_t with the current weights;
    (2) g_t = ||∇_W L_t|| on the shared layer W (one partial backward per task, no second-order graph:
    G_t = w_t g_t is linear in w); (3) L_grad = Σ |G_t - mean(G) r_t^alpha| (target held constant);
    (4) one Adam step on w from ∂L_grad/∂w, then w ← T · w / Σ w, clamped to stay positive.
    """

    method = "gradnorm"

    def __init__(self, n_tasks: int, alpha: float = 1.5, lr: float = 0.025) -> None:
        super().__init__(n_tasks)
        self.alpha = float(alpha)
        self.w = nn.Parameter(torch.ones(n_tasks))
        self.register_buffer("initial_losses", torch.full((n_tasks,), math.nan))
        self._optimizer = torch.optim.Adam([self.w], lr=lr)

    def weights(self) -> torch.Tensor:
        return self.w.detach().cpu().clone()

    def forward(self, losses, shared_params=()):
        w_now = self.w.detach().clone()
        total = (w_now * losses).sum()
        if not (self.training and torch.is_grad_enabled() and losses.requires_grad and shared_params):
            return total
        if torch.isnan(self.initial_losses).any():
            self.initial_losses.copy_(losses.detach().clamp(min=1e-8))
        norms = []
        for t in range(self.n_tasks):
            grads = torch.autograd.grad(losses[t], list(shared_params), retain_graph=True, allow_unused=True)
            sq = sum(
                (g.float().pow(2).sum() for g in grads if g is not None),
                torch.zeros((), device=losses.device),
            )
            norms.append(sq.sqrt())
        g = torch.stack(norms).detach()  # [T]
        big_g = self.w * g  # [T], differentiable in w only
        ratio = losses.detach() / self.initial_losses
        r = ratio / ratio.mean().clamp(min=1e-12)
        target = (big_g.mean() * r.pow(self.alpha)).detach()
        gn_loss = (big_g - target).abs().sum()
        self._optimizer.zero_grad(set_to_none=True)
        (grad_w,) = torch.autograd.grad(gn_loss, [self.w])
        self.w.grad = grad_w
        self._optimizer.step()
        with torch.no_grad():
            self.w.clamp_(min=1e-3)
            self.w.mul_(self.n_tasks / self.w.sum())
        return total

    def get_extra_state(self) -> dict:
        return {"optimizer": self._optimizer.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self._optimizer.load_state_dict(state["optimizer"])

    def describe(self) -> dict:
        return {**super().describe(), "alpha": self.alpha}


def project_conflicting(grads: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """PCGrad's gradient surgery (Yu et al. 2020, Algorithm 1): grads [T, P] → projected [T, P].

    For each task i, for j in ``order`` (a permutation of the tasks, i itself skipped): when
    g̃_i · g_j < 0, g̃_i ← g̃_i − (g̃_i · g_j) / ‖g_j‖² g_j (always against the original g_j).
    """
    projected = grads.clone()
    sq_norms = (grads * grads).sum(1).clamp(min=1e-30)  # [T]
    for i in range(grads.shape[0]):
        for j in order.tolist():
            if j != i:  # no data-dependent branch: no host sync on a GPU
                dot = projected[i] @ grads[j]
                projected[i] -= torch.where(dot < 0, dot / sq_norms[j], 0.0) * grads[j]
    return projected


class PCGrad(LossWeighting):
    """Yu et al. (2020), projecting conflicting gradients (see the module docstring), on top of fixed
    task weights w (default 1).

    ``forward`` computes the per-task gradients of the shared parameters (one ``autograd.grad`` per
    task, graph retained), projects them, and returns Σ w_t L_t plus a zero-valued correction
    ⟨θ, Δ⟩ − ⟨θ, Δ⟩.detach() with Δ = Σ_t g̃_t − Σ_t g_t (a constant): the caller's ``backward`` then
    leaves Σ_t g̃_t on the shared parameters and the plain gradient everywhere else. The order in
    which other tasks are projected out is drawn from a seeded generator (its state is checkpointed);
    ``conflicts[i, j]`` counts the steps with g_i · g_j < 0.
    """

    method = "pcgrad"

    def __init__(self, n_tasks: int, weights: Sequence[float] | None = None, seed: int = 0) -> None:
        super().__init__(n_tasks)
        w = torch.ones(n_tasks) if not weights else torch.tensor([float(x) for x in weights])
        if w.shape != (n_tasks,) or (w < 0).any():
            raise ValueError(f"PCGrad task weights must be {n_tasks} non-negative numbers, got {weights}")
        self.register_buffer("w", w)
        self.register_buffer("conflicts", torch.zeros(n_tasks, n_tasks, dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._generator = torch.Generator().manual_seed(seed)

    def weights(self) -> torch.Tensor:
        return self.w.detach().cpu().clone()

    def forward(self, losses, shared_params=()):
        total = (self.w * losses).sum()
        params = [p for p in shared_params if p.requires_grad]
        if not (self.training and torch.is_grad_enabled() and losses.requires_grad and params):
            return total
        rows = []
        for t in range(self.n_tasks):  # g_t = ∇_θ w_t L_t over all shared parameters, flattened: [P]
            grads = torch.autograd.grad(self.w[t] * losses[t], params, retain_graph=True, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
        g = torch.stack(rows).float()  # [T, P]
        with torch.no_grad():
            self.conflicts += (g @ g.T < 0).long()
            self.steps += 1
        order = torch.randperm(self.n_tasks, generator=self._generator)
        delta = (project_conflicting(g, order) - g).sum(0)  # Σ_t g̃_t − Σ_t g_t: [P]
        deltas = delta.split([p.numel() for p in params])
        correction = sum((p * d.view_as(p).to(p.dtype)).sum() for p, d in zip(params, deltas, strict=True))
        return total + correction - correction.detach()

    def get_extra_state(self) -> dict:
        return {"generator": self._generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self._generator.set_state(state["generator"])

    def describe(self) -> dict:
        steps = max(int(self.steps), 1)
        rate = (self.conflicts.double() / steps).tolist()
        return {
            **super().describe(),
            "steps": int(self.steps),
            "conflict_rate": [[round(x, 4) for x in row] for row in rate],  # share of steps with g_i·g_j < 0
        }


def make_weighting(
    method: str,
    n_tasks: int,
    fixed_weights: Sequence[float] | None = None,
    gradnorm_alpha: float = 1.5,
    gradnorm_lr: float = 0.025,
    seed: int = 0,
) -> LossWeighting:
    """The weighting called ``method`` (one of :data:`LOSS_WEIGHTINGS`); ``seed`` drives PCGrad's order."""
    if method == "fixed":
        return FixedWeighting(n_tasks, fixed_weights)
    if method == "uncertainty":
        return UncertaintyWeighting(n_tasks)
    if method == "gradnorm":
        return GradNorm(n_tasks, alpha=gradnorm_alpha, lr=gradnorm_lr)
    if method == "pcgrad":
        return PCGrad(n_tasks, fixed_weights, seed=seed)
    raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, not {method!r}")


def model_optimizer_parameters(weighting: LossWeighting) -> list[nn.Parameter]:
    """Weighting parameters that the model's (dense) optimizer trains: uncertainty's log-variances;
    GradNorm trains its weights itself; fixed has none."""
    return list(weighting.parameters()) if isinstance(weighting, UncertaintyWeighting) else []
