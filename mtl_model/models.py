"""Joint multi-task models: shared-bottom, MMoE and PLE backbones, scene-aware gates and towers, and the
ESMM structure for the click → post-click chain on top of any backbone.

Every model maps ``cat`` LongTensor [B, C] (codes from :class:`mtl_model.features.Encoders`) and
``num`` FloatTensor [B, F] to ``{task: logit [B]}``. Under ESMM the logit of a post-click task is the
logit of the *unconditional* probability pCTCVR = pCTR × pCVR, so ``sigmoid`` of every output is a
probability per exposure and training, scoring and evaluation treat all tasks alike.

Shapes in comments: B batch, C categorical features, D embedding dim, F numeric features, I input dim
(C·D + F), E experts, T tasks, H hidden dim, S scene codes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("shared_bottom", "mmoe", "ple")
ESMM_PARENT = "click"  # under ESMM every other task is modelled as P(task | click) × P(click)
LOG_P_MAX = -1e-6  # log-probabilities are clipped below 0 so logit(p) stays finite


def default_esmm(architecture: str, tasks: Sequence[str]) -> bool:
    """ESMM on by default for MMoE / PLE when there is a click task and at least one post-click task."""
    return architecture in ("mmoe", "ple") and ESMM_PARENT in tasks and len(tasks) > 1


def _mlp(in_dim: int, dims: Sequence[int]) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for dim in dims:
        layers += [nn.Linear(in_dim, dim), nn.ReLU()]
        in_dim = dim
    return nn.Sequential(*layers), in_dim


def _tower(in_dim: int, tower_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, tower_dim), nn.ReLU(), nn.Linear(tower_dim, 1))


def _uniform_(tensor: torch.Tensor, fan_in: int) -> None:
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    nn.init.uniform_(tensor, -bound, bound)


def product_logit(logit_a: torch.Tensor, logit_b: torch.Tensor) -> torch.Tensor:
    """logit(sigmoid(a) · sigmoid(b)), computed in log space: [B], [B] → [B].

    log p = logsigmoid(a) + logsigmoid(b) (clipped to ≤ ``LOG_P_MAX``); logit = log p − log(1 − p) with
    log(1 − p) = log1mexp(log p) evaluated stably on both sides of −ln 2.
    """
    log_p = (F.logsigmoid(logit_a) + F.logsigmoid(logit_b)).clamp(max=LOG_P_MAX)
    log_1mp = torch.where(
        log_p < -math.log(2.0), torch.log1p(-torch.exp(log_p)), torch.log(-torch.expm1(log_p))
    )
    return log_p - log_1mp


def mix(weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Gate-weighted sum of experts: weights [..., B, m], experts [..., m, B, H] → [..., B, H].

    A short loop of fused multiply-adds over the (few) experts: ``einsum`` turns this contraction into
    a ``bmm`` over B tiny matrices, several times slower on CPU.
    """
    out = weights[..., 0:1] * experts.select(-3, 0)
    for j in range(1, weights.shape[-1]):
        out = torch.addcmul(out, weights[..., j : j + 1], experts.select(-3, j))
    return out


class ExpertBank(nn.Module):
    """``n`` independent MLP experts evaluated as batched matmuls (one GEMM / ``bmm`` per layer).

    Input [B, I] (the same input for every expert) or [n, B, I] (one input per expert); output
    [n, B, H_last]. Weights per layer: [n, in, out]; initialised like ``nn.Linear``.
    """

    def __init__(self, n: int, in_dim: int, dims: Sequence[int]) -> None:
        super().__init__()
        if n < 1 or not dims:
            raise ValueError("an expert bank needs at least one expert and one layer")
        self.n = n
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for dim in dims:
            w, b = torch.empty(n, in_dim, dim), torch.empty(n, 1, dim)
            _uniform_(w, in_dim)
            _uniform_(b, in_dim)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))
            in_dim = dim
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w0, b0 = self.weights[0], self.biases[0]  # [n, I, H1], [n, 1, H1]
        if x.dim() == 2:  # shared input, broadcast (no copy) to every expert: [n, B, I]
            x = x.expand(self.n, -1, -1)
        h = torch.relu(torch.baddbmm(b0, x, w0))  # [n, B, I] @ [n, I, H1] → [n, B, H1], contiguous
        for w, b in zip(list(self.weights)[1:], list(self.biases)[1:], strict=True):
            h = torch.relu(torch.baddbmm(b, h, w))  # [n, B, H_k]
        return h


class MultiTaskNet(nn.Module):
    """Common parts of the joint models: input embeddings, per-task towers, scene towers, ESMM.

    * One embedding table per categorical feature; code 0 (null) is a fixed zero vector, code 1 (OOV)
      starts at zero. ``sparse=True`` makes the tables emit sparse gradients (for ``SparseAdam``).
    * ``scene_index``: position of the scene column among the categoricals (None: no scene). Gated
      backbones concatenate a gate-only scene embedding [B, D] to every gate input.
    * ``scene_towers``: per task, a scene-specific residual tower is added to the shared tower's logit.
      Its last layer starts at zero, so a scene never seen in training (null / OOV code) falls back to
      the shared tower exactly.
    * ``esmm`` (Ma et al. 2018, SIGIR, "Entire Space Multi-Task Model"): towers of post-click tasks
      predict pCVR = P(task | click); the published output is pCTCVR = pCTR × pCVR, learned over all
      exposures (labels: click, and click ∧ task). Needs the ``click`` task.

    Subclasses implement ``_backbone(x [B, I], scene_emb [B, D] | None) → (reps [T, B, H], gates)``
    and ``shared_parameters()`` (the last layer that all tasks share, for GradNorm).
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        n_numeric: int,
        tasks: Sequence[str],
        embedding_dim: int = 16,
        tower_dim: int = 32,
        esmm: bool = False,
        scene_index: int | None = None,
        scene_towers: bool = False,
        sparse: bool = False,
        gated: bool = False,
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError(f"{type(self).__name__} needs at least one task")
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"duplicate tasks: {list(tasks)}")
        if esmm and ESMM_PARENT not in tasks:
            raise ValueError(f"ESMM needs the {ESMM_PARENT!r} task; tasks are {list(tasks)}")
        if scene_index is not None and not 0 <= scene_index < len(cardinalities):
            raise ValueError(f"scene_index {scene_index} out of range for {len(cardinalities)} features")
        self.tasks = tuple(tasks)
        self.esmm = bool(esmm)
        self.esmm_tasks = tuple(t for t in self.tasks if t != ESMM_PARENT) if esmm else ()
        self.scene_index = scene_index
        self.embeddings = nn.ModuleList(
            nn.Embedding(int(size), embedding_dim, padding_idx=0, sparse=sparse) for size in cardinalities
        )
        for emb in self.embeddings:
            nn.init.normal_(emb.weight, std=0.05)
            with torch.no_grad():
                emb.weight[:2].zero_()  # null and OOV rows start neutral
        self.in_dim = embedding_dim * len(cardinalities) + n_numeric
        self.gate_scene: nn.Embedding | None = None
        if gated and scene_index is not None:
            self.gate_scene = nn.Embedding(
                int(cardinalities[scene_index]), embedding_dim, padding_idx=0, sparse=sparse
            )
            nn.init.normal_(self.gate_scene.weight, std=0.05)
            with torch.no_grad():
                self.gate_scene.weight[:2].zero_()
        self.gate_extra = embedding_dim if self.gate_scene is not None else 0
        self.tower_dim = tower_dim
        self.scene_towers: nn.ModuleDict | None = None
        if scene_towers:
            if scene_index is None:
                raise ValueError("scene_towers needs a scene feature (scene_index)")
            self._n_scenes = int(cardinalities[scene_index])

    def _build_towers(self, rep_dim: int) -> None:
        """Called by subclasses once the backbone's output width ``rep_dim`` is known."""
        self.towers = nn.ModuleDict({t: _tower(rep_dim, self.tower_dim) for t in self.tasks})
        if hasattr(self, "_n_scenes"):
            self.scene_towers = nn.ModuleDict(
                {t: SceneTower(self._n_scenes, rep_dim, self.tower_dim) for t in self.tasks}
            )

    def _backbone(
        self, x: torch.Tensor, scene_emb: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the last layer every task's loss flows through (GradNorm's ``W``)."""
        raise NotImplementedError

    def embedding_modules(self) -> list[nn.Embedding]:
        return [*self.embeddings, *([self.gate_scene] if self.gate_scene is not None else [])]

    def forward_with_gates(
        self, cat: torch.Tensor, num: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Logits {task: [B]} and gate weights {name: [B, n_experts]} (empty for shared-bottom)."""
        parts = [emb(cat[:, i]) for i, emb in enumerate(self.embeddings)]  # C × [B, D]
        x = torch.cat([*parts, num], dim=1)  # [B, I]
        scene = cat[:, self.scene_index] if self.scene_index is not None else None  # [B]
        scene_emb = self.gate_scene(scene) if self.gate_scene is not None else None  # [B, D]
        reps, gates = self._backbone(x, scene_emb)  # [T, B, H]
        logits: dict[str, torch.Tensor] = {}
        for task, rep in zip(self.tasks, reps.unbind(0), strict=True):  # unbind: one gradient buffer
            z = self.towers[task](rep).squeeze(-1)  # [B]
            if self.scene_towers is not None:
                z = z + self.scene_towers[task](rep, scene)
            logits[task] = z
        for task in self.esmm_tasks:  # pCTCVR = pCTR × pCVR
            logits[task] = product_logit(logits[ESMM_PARENT], logits[task])
        return logits, gates

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cat`` LongTensor [B, C], ``num`` FloatTensor [B, F] → {task: logits [B]}."""
        return self.forward_with_gates(cat, num)[0]


class SceneTower(nn.Module):
    """Scene-specific residual towers, all scenes in one GEMM: rep [B, H], scene [B] → logit [B].

    Tower of scene s: ``relu(rep @ W1[s] + b1[s]) · w2[s] + b2[s]`` with ``w2``/``b2`` zero at start.
    """

    def __init__(self, n_scenes: int, in_dim: int, tower_dim: int) -> None:
        super().__init__()
        self.n_scenes, self.tower_dim = n_scenes, tower_dim
        self.w1 = nn.Parameter(torch.empty(in_dim, n_scenes * tower_dim))  # [H, S·Ht]
        self.b1 = nn.Parameter(torch.empty(n_scenes * tower_dim))
        _uniform_(self.w1, in_dim)
        _uniform_(self.b1, in_dim)
        self.w2 = nn.Parameter(torch.zeros(n_scenes, tower_dim))  # [S, Ht]
        self.b2 = nn.Parameter(torch.zeros(n_scenes))  # [S]

    def forward(self, rep: torch.Tensor, scene: torch.Tensor) -> torch.Tensor:
        h = torch.relu(rep @ self.w1 + self.b1).view(-1, self.n_scenes, self.tower_dim)  # [B, S, Ht]
        h = h.gather(1, scene.view(-1, 1, 1).expand(-1, 1, self.tower_dim)).squeeze(1)  # [B, Ht]
        return (h * self.w2[scene]).sum(-1) + self.b2[scene]  # [B]


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
        self.bottom, bottom_dim = _mlp(self.in_dim, hidden_dims)
        self._build_towers(bottom_dim)

    def _backbone(self, x, scene_emb):
        shared = self.bottom(x)  # [B, H]
        return shared.unsqueeze(0).expand(len(self.tasks), -1, -1), {}

    def shared_parameters(self) -> list[nn.Parameter]:
        linears = [m for m in self.bottom if isinstance(m, nn.Linear)]
        return [linears[-1].weight] if linears else [self.embeddings[0].weight]


class MMoE(MultiTaskNet):
    """Multi-gate Mixture-of-Experts.

    Ma, J., Zhao, Z., Yi, X., Chen, J., Hong, L., Chi, E. H. (2018). "Modeling Task Relationships in
    Multi-task Learning with Multi-gate Mixture-of-Experts". KDD 2018, 1930-1939.

    ``n_experts`` expert MLPs (``hidden_dims``) on x [B, I] → [E, B, H]; per task a softmax gate over
    the experts on concat(x, scene embedding) [B, I + D] → [B, E]; task input = Σ_e gate · expert
    [B, H] → the task's tower.
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        n_numeric: int,
        tasks: Sequence[str],
        embedding_dim: int = 16,
        hidden_dims: Sequence[int] = (128, 64),
        tower_dim: int = 32,
        n_experts: int = 4,
        **options,
    ) -> None:
        super().__init__(cardinalities, n_numeric, tasks, embedding_dim, tower_dim, gated=True, **options)
        self.experts = ExpertBank(n_experts, self.in_dim, hidden_dims)
        self.n_experts = n_experts
        self.gates = nn.Linear(self.in_dim + self.gate_extra, len(self.tasks) * n_experts)  # all T gates
        self._build_towers(self.experts.out_dim)

    def _backbone(self, x, scene_emb):
        experts = self.experts(x)  # [E, B, H]
        gate_in = x if scene_emb is None else torch.cat([x, scene_emb], dim=1)  # [B, I + D]
        g = torch.softmax(self.gates(gate_in).view(-1, len(self.tasks), self.n_experts), dim=-1)  # [B, T, E]
        reps = mix(g.transpose(0, 1), experts)  # [T, B, E] · [E, B, H] → [T, B, H]
        return reps, {t: g[:, k] for k, t in enumerate(self.tasks)}

    def shared_parameters(self) -> list[nn.Parameter]:
        return [self.experts.weights[-1]]


class CGC(nn.Module):
    """One Customized Gate Control layer of PLE: task-specific and shared experts, per-task gates over
    (own experts + shared experts), and (except in the last level) a shared gate over all experts.

    Inputs: per-task [T, B, In], shared [B, In], scene embedding [B, D] or None.
    Outputs: per-task [T, B, H], shared [B, H] (None in the last level), gates {name: [B, n]}.
    """

    def __init__(
        self,
        n_tasks: int,
        n_task_experts: int,
        n_shared_experts: int,
        in_dim: int,
        dims: Sequence[int],
        gate_extra: int,
        last: bool,
    ) -> None:
        super().__init__()
        self.t, self.m_t, self.m_s = n_tasks, n_task_experts, n_shared_experts
        self.task_experts = ExpertBank(n_tasks * n_task_experts, in_dim, dims)
        self.shared_experts = ExpertBank(n_shared_experts, in_dim, dims)
        self.out_dim = self.shared_experts.out_dim
        gate_in = in_dim + gate_extra
        self.task_gate_w = nn.Parameter(torch.empty(n_tasks, gate_in, n_task_experts + n_shared_experts))
        self.task_gate_b = nn.Parameter(torch.zeros(n_tasks, 1, n_task_experts + n_shared_experts))
        _uniform_(self.task_gate_w, gate_in)
        self.shared_gate = None if last else nn.Linear(gate_in, n_tasks * n_task_experts + n_shared_experts)

    def forward(
        self, task_in: torch.Tensor, shared_in: torch.Tensor, scene_emb: torch.Tensor | None, first: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        t, m_t = self.t, self.m_t
        if first:  # every expert reads the same x [B, In]: one GEMM
            task_out = self.task_experts(shared_in)  # [T·m_t, B, H]
        else:  # task t's experts read task t's input
            task_out = self.task_experts(task_in.repeat_interleave(m_t, dim=0))  # [T·m_t, B, H]
        shared_out = self.shared_experts(shared_in)  # [m_s, B, H]
        b, h = shared_out.shape[1], shared_out.shape[2]
        if scene_emb is not None:
            task_gate_in = torch.cat([task_in, scene_emb.unsqueeze(0).expand(t, -1, -1)], dim=2)
        else:
            task_gate_in = task_in  # [T, B, In + D]
        g = torch.softmax(torch.baddbmm(self.task_gate_b, task_gate_in, self.task_gate_w), dim=-1)  # [T,B,m]
        own = task_out.view(t, m_t, b, h)  # [T, m_t, B, H]
        # Σ over (own experts, shared experts) without materialising the [T, m_t + m_s, B, H] pool
        task_rep = mix(g[..., :m_t], own) + mix(g[..., m_t:], shared_out)  # [T, B, H]
        gates = {f"task{k}": g[k] for k in range(t)}
        shared_rep = None
        if self.shared_gate is not None:
            gate_in = shared_in if scene_emb is None else torch.cat([shared_in, scene_emb], dim=1)
            gs = torch.softmax(self.shared_gate(gate_in), dim=-1)  # [B, T·m_t + m_s]
            n_task_experts = t * m_t
            shared_rep = mix(gs[:, :n_task_experts], task_out) + mix(
                gs[:, n_task_experts:], shared_out
            )  # [B, H]
            gates["shared"] = gs
        return task_rep, shared_rep, gates


class PLE(MultiTaskNet):
    """Progressive Layered Extraction.

    Tang, H., Liu, J., Zhao, M., Gong, X. (2020). "Progressive Layered Extraction (PLE): A Novel
    Multi-Task Learning (MTL) Model for Personalized Recommendations". RecSys 2020, 269-278.

    ``levels`` stacked CGC layers; ``hidden_dims`` is split over the levels (e.g. (128, 64) with 2
    levels: experts of level 1 are I→128, of level 2 128→64). Each level has ``n_task_experts`` experts
    per task and ``n_shared_experts`` shared ones; gates read concat(level input, scene embedding).
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        n_numeric: int,
        tasks: Sequence[str],
        embedding_dim: int = 16,
        hidden_dims: Sequence[int] = (128, 64),
        tower_dim: int = 32,
        levels: int = 2,
        n_task_experts: int = 1,
        n_shared_experts: int = 2,
        **options,
    ) -> None:
        super().__init__(cardinalities, n_numeric, tasks, embedding_dim, tower_dim, gated=True, **options)
        if not 1 <= levels <= len(hidden_dims):
            raise ValueError(f"PLE levels must be between 1 and len(hidden_dims)={len(hidden_dims)}")
        dims = list(hidden_dims)
        cuts = [round(k * len(dims) / levels) for k in range(levels + 1)]
        per_level = [dims[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        self.levels = nn.ModuleList()
        in_dim = self.in_dim
        for k, level_dims in enumerate(per_level):
            cgc = CGC(
                len(self.tasks),
                n_task_experts,
                n_shared_experts,
                in_dim,
                level_dims,
                self.gate_extra,
                last=k == levels - 1,
            )
            self.levels.append(cgc)
            in_dim = cgc.out_dim
        self._build_towers(in_dim)

    def _backbone(self, x, scene_emb):
        task_in, shared_in = x.unsqueeze(0).expand(len(self.tasks), -1, -1), x  # [T, B, I], [B, I]
        gates: dict[str, torch.Tensor] = {}
        for k, cgc in enumerate(self.levels):
            task_in, shared_in, level_gates = cgc(task_in, shared_in, scene_emb, first=k == 0)
            for name, g in level_gates.items():
                key = self.tasks[int(name[4:])] if name.startswith("task") else name
                gates[f"level{k + 1}/{key}"] = g
        return task_in, gates

    def shared_parameters(self) -> list[nn.Parameter]:
        return [self.levels[-1].shared_experts.weights[-1]]


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
) -> MultiTaskNet:
    """Build the architecture called ``name``; raises ``ValueError`` for an unknown name.

    ``esmm=None`` means the default of :func:`default_esmm`; ``ple_levels=None`` means
    ``min(2, len(hidden_dims))``.
    """
    tasks = tuple(tasks)
    if esmm is None:
        esmm = default_esmm(name, tasks)
    common = dict(esmm=esmm, scene_index=scene_index, scene_towers=scene_towers, sparse=sparse)
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


@torch.no_grad()
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
