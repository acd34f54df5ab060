"""Joint multi-task models: shared-bottom, MMoE and PLE backbones, scene-aware gates and towers, and the
ESMM structure for the click → post-click chain on top of any backbone.

Every model maps ``cat`` LongTensor [B, C] (codes from :class:`mtl_model.learn.features.Encoders`) and
``num`` FloatTensor [B, F] to ``{task: logit [B]}``. Under ESMM the logit of a post-click task is the
logit of the *unconditional* probability pCTCVR = pCTR × pCVR, so ``sigmoid`` of every output is a
probability per exposure and training, scoring and evaluation treat all tasks alike.

Shapes in comments: B batch, C categorical features, D embedding dim, F numeric features, I input dim
(C·D + F), E experts, T tasks, H hidden dim, S scene codes, G gates, K embedding tables.

CPU speed (``bench/bench_train.py``): experts and towers run as batched matmuls over stacked weights,
the categorical features as one lookup in one stacked table, gate logits batch-last (softmax along
the batch) and every gate's mixture of experts as one batched matmul.
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


def gate_logits(
    weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, scene_emb: torch.Tensor | None
) -> torch.Tensor:
    """Batch-last logits of gates reading concat(x, scene embedding): weight [G, I (+ D)], bias [G],
    x [B, I], scene_emb [B, D] or None → [G, B] (one GEMM; see :func:`softmax_gates`)."""
    gate_in = x if scene_emb is None else torch.cat([x, scene_emb], dim=1)  # [B, I (+ D)]
    return torch.addmm(bias.unsqueeze(1), weight, gate_in.t())


def softmax_gates(logits: torch.Tensor) -> torch.Tensor:
    """Gate weights from batch-last logits: [..., m, B] → softmax over the m experts → [B, ..., m].

    Batch-last, the softmax runs vectorised along the batch; over a last dim of 3–5 experts it is ~6×
    slower on CPU. The result is made contiguous for :func:`mixture`.
    """
    return torch.softmax(logits, dim=-2).movedim(-1, 0).contiguous()


def mixture(weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Gate-weighted sums of experts for G gates at once: Σ_e weights[b, g, e] · experts[e, b, :].

    weights [B, G, E], experts [E, B, H] → [G, B, H] (a view of [B, G, H]): one batched matmul, a
    [G, E] @ [E, H] product per row. The weights are made contiguous (strided small matrices send
    MKL's batched GEMM down a path ~8× slower); the experts are read as they are, contiguous [E, B, H]
    or a view of batch-first [B, E, H] (:func:`run_experts`), without a copy.
    """
    return torch.bmm(weights.contiguous(), experts.transpose(0, 1)).transpose(0, 1)


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
        return run_experts([self], x)


def run_experts(banks: Sequence[ExpertBank], x: torch.Tensor) -> torch.Tensor:
    """Banks with the same layer sizes evaluated as one (their weights stacked per layer, a small copy):
    x [B, I] (shared) or [n, B, I] (one input per expert, n = Σ bank sizes) → [n, B, H_last].

    A one-layer bank on a shared input runs as one GEMM [B, I] @ [I, n·H] and returns the batch-first
    result [B, n, H] as the view [n, B, H]: the input's gradient is then one GEMM too (not n products
    and a sum over the experts), and :func:`mixture` reads the view without a copy. (Deeper banks keep
    [n, B, I] inputs: their second layer on such a view measured slower.)
    """
    n = sum(bank.n for bank in banks)

    def stacked(k: int) -> tuple[torch.Tensor, torch.Tensor]:  # layer k's weights [n, in, out], biases
        if len(banks) == 1:
            return banks[0].weights[k], banks[0].biases[k]
        return torch.cat([bank.weights[k] for bank in banks]), torch.cat([bank.biases[k] for bank in banks])

    layers = [stacked(k) for k in range(len(banks[0].weights))]
    if x.dim() == 2 and len(layers) == 1:
        w, b = layers[0]  # [n, I, H], [n, 1, H]
        i, out = w.shape[1:]
        h = torch.addmm(b.reshape(n * out), x, w.transpose(0, 1).reshape(i, n * out)).relu_()  # [B, n·H]
        return h.view(-1, n, out).transpose(0, 1)  # [n, B, H] (a view)
    h = x.expand(n, -1, -1) if x.dim() == 2 else x  # a shared input broadcast (no copy): [n, B, I]
    for w, b in layers:
        h = torch.baddbmm(b, h, w).relu_()  # [n, B, in] @ [n, in, out] → [n, B, out] (ReLU in place)
    return h


# 1: one nn.Embedding per feature (+ gate_scene), one nn.Sequential tower per task;
# 2: one FeatureEmbedding, TaskTowers. Layout-1 state dicts are converted on load (_upgrade_layout_1).
PARAMETER_LAYOUT = 2


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

    codes [B, C] (per-feature codes, :mod:`mtl_model.learn.features`) → vectors [B, K, D], where table k reads
    column ``columns[k]`` (a column may feed two tables: the gates' own scene embedding). Row 0 is the
    null vector shared by every table (code 0, zero and never updated: ``padding_idx``); code c ≥ 1 of
    table k is row ``offsets[k] + c`` with ``offsets[k] = Σ_{j<k} (sizes[j] − 1)``. Every other row is
    initialised N(0, 0.05²) except each table's OOV row (code 1), which starts at zero.
    """

    def __init__(self, sizes: Sequence[int], dim: int, columns: Sequence[int], sparse: bool = False) -> None:
        if len(sizes) != len(columns) or any(int(n) < 2 for n in sizes):
            raise ValueError(f"one size ≥ 2 (null + OOV) per table needed, got {list(sizes)}")
        self.sizes = [int(n) for n in sizes]
        offsets = [0]
        for n in self.sizes[:-1]:
            offsets.append(offsets[-1] + n - 1)
        super().__init__(1 + sum(n - 1 for n in self.sizes), dim, padding_idx=0, sparse=sparse)
        self.register_buffer("columns", torch.tensor(list(columns), dtype=torch.long), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.register_buffer("limits", torch.tensor(self.sizes, dtype=torch.long), persistent=False)
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
        rows = torch.where(codes > 0, codes + self.offsets, 0)  # [B, K] rows of the stacked table
        if self.sparse or self.weight.device.type != "cpu":
            return super().forward(rows)  # [B, K, D]
        return _RowLookup.apply(self.weight, rows)  # the same values and gradient, faster on CPU

    def rows(self, k: int) -> slice:
        """Rows of table ``k``'s codes 1 … sizes[k] − 1 in the stacked table."""
        start = int(self.offsets[k]) + 1
        return slice(start, start + self.sizes[k] - 1)


def _upgrade_layout_1(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load-time upgrade of a layout-1 state dict (see :data:`PARAMETER_LAYOUT`); outputs are unchanged.

    * ``embeddings.<c>.weight`` [V_c, D] per feature and ``gate_scene.weight`` → ``embedding.weight``:
      the rows c ≥ 1 of each table, in table order, after one null row (null rows are zero);
    * ``towers.<task>.{0,2}.{weight,bias}`` (nn.Linear: [out, in]) → :class:`TaskTowers` ([T, in, out]).
    """
    old = [f"{prefix}embeddings.{c}.weight" for c in range(module.n_features)]
    if all(key in state_dict for key in old):
        if module.has_gate_scene:
            old.append(f"{prefix}gate_scene.weight")
        tables = [state_dict.pop(key) for key in old if key in state_dict]
        sizes = module.embedding.sizes
        if [t.shape[0] for t in tables] != sizes:
            raise RuntimeError(
                f"layout-1 embedding tables of sizes {[t.shape[0] for t in tables]} do not fit this "
                f"model's {sizes}"
            )
        null = torch.zeros_like(tables[0][:1])
        state_dict[f"{prefix}embedding.weight"] = torch.cat([null, *(t[1:] for t in tables)])
    tower = [f"{prefix}towers.{task}." for task in module.tasks]
    if all(f"{t}0.weight" in state_dict for t in tower):
        layers = {
            name: [state_dict.pop(f"{t}{name}") for t in tower]
            for name in ("0.weight", "0.bias", "2.weight", "2.bias")
        }
        state_dict[f"{prefix}towers.hidden.weights.0"] = torch.stack([w.t() for w in layers["0.weight"]])
        state_dict[f"{prefix}towers.hidden.biases.0"] = torch.stack(layers["0.bias"]).unsqueeze(1)
        state_dict[f"{prefix}towers.w_out"] = torch.stack([w.t() for w in layers["2.weight"]])
        state_dict[f"{prefix}towers.b_out"] = torch.stack(layers["2.bias"]).view(-1, 1, 1)


class MultiTaskNet(nn.Module):
    """Common parts of the joint models: input embeddings, per-task towers, scene towers, ESMM.

    * Every categorical feature's embedding table lives in one :class:`FeatureEmbedding` (one lookup
      per batch); code 0 (null) is a fixed zero vector, code 1 (OOV) starts at zero. ``sparse=True``
      makes the table emit sparse gradients (for a row-sparse Adam).
    * ``scene_index``: position of the scene column among the categoricals (None: no scene). Gated
      backbones concatenate a gate-only scene embedding [B, D] (a table of its own in the same
      :class:`FeatureEmbedding`) to every gate input.
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
        self.n_features = len(cardinalities)
        self.has_gate_scene = gated and scene_index is not None  # gates read a scene embedding of their own
        columns = list(range(self.n_features)) + ([scene_index] if self.has_gate_scene else [])
        sizes = [int(size) for size in cardinalities] + (
            [int(cardinalities[scene_index])] if self.has_gate_scene else []
        )
        self.embedding = FeatureEmbedding(sizes, embedding_dim, columns, sparse=sparse)
        self.in_dim = embedding_dim * len(cardinalities) + n_numeric
        self.gate_extra = embedding_dim if self.has_gate_scene else 0
        self.register_load_state_dict_pre_hook(_upgrade_layout_1)
        self.tower_dim = tower_dim
        self.scene_towers: nn.ModuleDict | None = None
        if scene_towers:
            if scene_index is None:
                raise ValueError("scene_towers needs a scene feature (scene_index)")
            self._n_scenes = int(cardinalities[scene_index])

    def _build_towers(self, rep_dim: int) -> None:
        """Called by subclasses once the backbone's output width ``rep_dim`` is known."""
        self.towers = TaskTowers(len(self.tasks), rep_dim, self.tower_dim)
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

    def shared_backbone_parameters(self) -> list[nn.Parameter]:
        """The shared part of the backbone (shared bottom; MMoE's experts; PLE's shared experts and
        shared gates): what PCGrad projects. Embeddings are left out (sparse, per-row gradients)."""
        raise NotImplementedError

    def embedding_modules(self) -> list[nn.Embedding]:
        return [self.embedding]

    def forward_with_gates(
        self, cat: torch.Tensor, num: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Logits {task: [B]} and gate weights {name: [B, n_experts]} (empty for shared-bottom)."""
        vectors = self.embedding(cat)  # [B, C (+1 for the gates' scene), D]: one lookup
        scene_emb = None
        if self.has_gate_scene:  # split, not sliced: slices cost zero-filled gradient buffers
            vectors, scene_emb = vectors.split([self.n_features, 1], dim=1)  # [B, C, D], [B, 1, D]
            scene_emb = scene_emb.squeeze(1)  # [B, D]
        x = torch.cat([vectors.flatten(1), num], dim=1)  # [B, I] = [B, C·D + F]
        scene = cat[:, self.scene_index] if self.scene_index is not None else None  # [B]
        reps, gates = self._backbone(x, scene_emb)  # [T, B, H]
        logits: dict[str, torch.Tensor] = {}
        z = self.towers(reps).unbind(0)  # T × [B]
        for k, task in enumerate(self.tasks):
            logits[task] = z[k]
            if self.scene_towers is not None:
                logits[task] = z[k] + self.scene_towers[task](reps[k], scene)
        for task in self.esmm_tasks:  # pCTCVR = pCTR × pCVR
            logits[task] = product_logit(logits[ESMM_PARENT], logits[task])
        return logits, gates

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cat`` LongTensor [B, C], ``num`` FloatTensor [B, F] → {task: logits [B]}."""
        return self.forward_with_gates(cat, num)[0]


class TaskTowers(nn.Module):
    """One tower per task, ``in_dim → tower_dim → 1`` with a ReLU, all T evaluated together (one batched
    matmul per layer): task inputs [T, B, H] → logits [T, B]. Weights per layer [T, in, out]."""

    def __init__(self, n_tasks: int, in_dim: int, tower_dim: int) -> None:
        super().__init__()
        self.hidden = ExpertBank(n_tasks, in_dim, [tower_dim])  # [T, B, H] → relu(...) [T, B, Ht]
        self.w_out = nn.Parameter(torch.empty(n_tasks, tower_dim, 1))
        self.b_out = nn.Parameter(torch.empty(n_tasks, 1, 1))
        _uniform_(self.w_out, tower_dim)
        _uniform_(self.b_out, tower_dim)

    def forward(self, reps: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.b_out, self.hidden(reps), self.w_out).squeeze(-1)  # [T, B]


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
        return [linears[-1].weight] if linears else [self.embedding.weight]

    def shared_backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.bottom.parameters())


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
        logits = gate_logits(self.gates.weight, self.gates.bias, x, scene_emb)  # [T·E, B]
        g = softmax_gates(logits.view(len(self.tasks), self.n_experts, -1))  # [B, T, E]
        reps = mixture(g, experts)  # task t's input: Σ_e g[:, t, e] · expert_e(x) → [T, B, H]
        return reps, {t: g[:, k] for k, t in enumerate(self.tasks)}

    def shared_parameters(self) -> list[nn.Parameter]:
        return [self.experts.weights[-1]]

    def shared_backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.experts.parameters())


class CGC(nn.Module):
    """One Customized Gate Control layer of PLE: task-specific and shared experts, per-task gates over
    (own experts + shared experts), and (except in the last level) a shared gate over all experts.

    Inputs: per-task [T, B, In], shared [B, In], scene embedding [B, D] or None.
    Outputs: per-task [T, B, H], shared [B, H] (None in the last level), gates {name: [B, n]}.

    The level's experts form one pool [n, B, H] (n = T·m_t task experts, task-major, then m_s shared
    ones); each task gate's weights sit on its own experts and the shared ones (zero elsewhere), so
    every gate mixes the pool in one batched matmul (:func:`mixture`).
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
        self.in_dim = in_dim
        self.task_experts = ExpertBank(n_tasks * n_task_experts, in_dim, dims)
        self.shared_experts = ExpertBank(n_shared_experts, in_dim, dims)
        self.out_dim = self.shared_experts.out_dim
        gate_in = in_dim + gate_extra
        self.task_gate_w = nn.Parameter(torch.empty(n_tasks, gate_in, n_task_experts + n_shared_experts))
        self.task_gate_b = nn.Parameter(torch.zeros(n_tasks, 1, n_task_experts + n_shared_experts))
        _uniform_(self.task_gate_w, gate_in)
        self.shared_gate = None if last else nn.Linear(gate_in, n_tasks * n_task_experts + n_shared_experts)
        n = n_tasks * n_task_experts
        pools = [[k * n_task_experts + j for j in range(n_task_experts)] for k in range(n_tasks)]
        index = torch.tensor([own + list(range(n, n + n_shared_experts)) for own in pools])  # [T, m_t + m_s]
        self.register_buffer("pool_index", index, persistent=False)

    def _gates_on_one_input(
        self, x: torch.Tensor, scene_emb: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """First level, where every gate reads concat(x, scene): all the level's gate logits in one GEMM
        [T·m (+ n), In + D] @ [In + D, B]. Returns the task gates [B, T, m] and the shared gate [B, n]."""
        t, m = self.t, self.m_t + self.m_s
        w = self.task_gate_w.transpose(1, 2).reshape(t * m, -1)  # [T·m, In + D]
        b = self.task_gate_b.reshape(t * m)
        if self.shared_gate is not None:
            w = torch.cat([w, self.shared_gate.weight])
            b = torch.cat([b, self.shared_gate.bias])
        logits = gate_logits(w, b, x, scene_emb)  # [T·m (+ n), B]
        g = softmax_gates(logits[: t * m].view(t, m, -1))
        return g, (softmax_gates(logits[t * m :]) if self.shared_gate is not None else None)

    def _gates_on_task_inputs(
        self, task_in: torch.Tensor, shared_in: torch.Tensor, scene_emb: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Later levels: task gate t reads concat(task t's input, scene) ([T, m, In] @ [T, In, B]), the
        shared gate concat(shared input, scene). Returns [B, T, m] and [B, n] (None in the last level)."""
        w_x = self.task_gate_w[:, : self.in_dim].transpose(1, 2)  # [T, m, In]
        w_s = self.task_gate_w[:, self.in_dim :].transpose(1, 2)  # [T, m, D]: the scene embedding's part
        logits = torch.baddbmm(self.task_gate_b.transpose(1, 2), w_x, task_in.transpose(1, 2))  # [T, m, B]
        if scene_emb is not None:  # concat(input, scene) @ W = input @ W_x + scene @ W_s
            logits = logits + torch.matmul(w_s, scene_emb.t())  # + [T, m, D] @ [D, B]
        gs = None
        if self.shared_gate is not None:
            gs = softmax_gates(
                gate_logits(self.shared_gate.weight, self.shared_gate.bias, shared_in, scene_emb)
            )
        return softmax_gates(logits), gs

    def forward(
        self, task_in: torch.Tensor, shared_in: torch.Tensor, scene_emb: torch.Tensor | None, first: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        t, m_t = self.t, self.m_t
        banks = [self.task_experts, self.shared_experts]
        if first:  # every expert and every gate reads the same x [B, In]
            pool = run_experts(banks, shared_in)  # [n, B, H]
            g, gs = self._gates_on_one_input(shared_in, scene_emb)
        else:  # task t's experts read task t's input, the shared experts the shared input
            own = task_in if m_t == 1 else task_in.repeat_interleave(m_t, dim=0)  # [T·m_t, B, In]
            inputs = [own, shared_in.expand(self.m_s, -1, -1)]
            pool = run_experts(banks, torch.cat(inputs))  # [n, B, In] → [n, B, H]
            g, gs = self._gates_on_task_inputs(task_in, shared_in, scene_emb)
        b = g.shape[0]  # g: [B, T, m_t + m_s]
        weights = g.new_zeros(b, t, pool.shape[0]).scatter(
            2, self.pool_index.expand(b, -1, -1), g
        )  # [B, T, n]
        gates = {f"task{k}": g[:, k] for k in range(t)}
        if gs is not None:
            weights = torch.cat([weights, gs.unsqueeze(1)], dim=1)  # [B, T + 1, n]
            gates["shared"] = gs  # [B, n]
        reps = mixture(weights, pool)  # [T (+1), B, H]
        if gs is None:
            return reps, None, gates
        task_reps, shared_rep = reps.split([t, 1])  # (slicing would cost zero-filled gradient buffers)
        return task_reps, shared_rep.squeeze(0), gates


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

    def shared_backbone_parameters(self) -> list[nn.Parameter]:
        return [
            p
            for cgc in self.levels
            for module in (cgc.shared_experts, cgc.shared_gate)
            if module is not None
            for p in module.parameters()
        ]


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
