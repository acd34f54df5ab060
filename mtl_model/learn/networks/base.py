"""What every joint model here shares: the input embedding, the task towers, the scene towers and
the ESMM output, around a backbone that subclasses supply (shared-bottom, MMoE, PLE).

Every model maps ``cat`` LongTensor [B, C] (codes from :class:`mtl_model.learn.features.Encoders`) and
``num`` FloatTensor [B, F] to ``{task: logit [B]}``. Under ESMM the logit of a post-click task is the
logit of the *unconditional* probability pCTCVR = pCTR × pCVR, so ``sigmoid`` of every output is a
probability per exposure and training, scoring and evaluation treat all tasks alike.

Shapes in comments: B batch, C categorical features, D embedding dim, F numeric features, I input dim
(C·D + F), T tasks, H backbone width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtl_model.learn.networks.din import TargetAttention
from mtl_model.learn.networks.embedding import FeatureEmbedding
from mtl_model.learn.networks.esmm import ESMM_PARENT, product_logit
from mtl_model.learn.networks.fm import FMTerm
from mtl_model.learn.networks.pal import ProbSeen, with_position_bias
from mtl_model.learn.networks.text import TitleQueryText
from mtl_model.learn.networks.towers import SceneTower, TaskTowers

# 1: one nn.Embedding per feature (+ gate_scene), one nn.Sequential tower per task;
# 2: one FeatureEmbedding, TaskTowers. Layout-1 state dicts are converted on load (_upgrade_layout_1).
PARAMETER_LAYOUT = 2
BASE_RATE_ROUNDS = 10  # Newton steps of MultiTaskNet.start_at_base_rates
BASE_RATE_EPS = 1e-6  # rates and mean predictions are clipped to [eps, 1 - eps] before the logit


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
    * ``bias_index`` (PAL, :mod:`mtl_model.learn.networks.pal`): the last categorical column is the
      position; its embedding feeds only the ProbSeen tower, never the backbone. Rows with a position
      get p(seen | position, scene) · p(task | x, seen); rows without one (scoring candidates) get the
      relevance p(task | x, seen) alone.
    * ``history`` (DIN, :mod:`mtl_model.learn.networks.din`): ``{"length": L, "fields": [...],
      "target": [item, category]}``. ``cat`` then carries, after its C columns, L codes per field of
      the user's behaviour sequence; a field is ``{"table": k}`` (codes of main column k's vocabulary,
      read in its table) or ``{"size": n}`` (a table of its own). The attention's interest vector
      [B, D] joins the backbone's input.
    * ``text`` (:mod:`mtl_model.learn.networks.text`): ``{"buckets": n, "length": L}``. ``cat`` then
      carries, after the sequence's columns, L n-gram codes of the item's title and L of the query;
      one shared encoder reads both, and the title's vector [B, D] and the query–title cosine [B, 1]
      join the backbone's input.
    * ``interaction="fm"`` (:mod:`mtl_model.learn.networks.fm`, DeepFM's FM part): the pairwise
      dot products of the fields' embeddings (the relevance columns, plus DIN's interest vector) go
      straight into every task's logit, through per-task weights [T, D]; ``None``: no such term.
    * ``dropout`` (p): inverted dropout after each hidden ReLU of the backbone (shared bottom,
      experts) and of the task towers, in train mode only; subclasses read ``self.dropout``.

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
        bias_index: int | None = None,
        history: dict | None = None,
        text: dict | None = None,
        dropout: float = 0.0,
        interaction: str | None = None,
    ) -> None:
        super().__init__()
        if interaction not in (None, "fm"):
            raise ValueError(f"interaction must be None or 'fm', not {interaction!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout}")
        self.dropout = float(dropout)
        if bias_index is not None and bias_index != len(cardinalities) - 1:
            raise ValueError(f"bias_index must be the last categorical column, not {bias_index}")
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
        self.history = history
        shared = self._history_lookups(history, sizes) if history else []
        self.embedding = FeatureEmbedding(sizes, embedding_dim, columns, sparse=sparse, shared=shared)
        self.bias_index = bias_index
        n_relevance = len(cardinalities) - (bias_index is not None)  # the position is not an input
        self.in_dim = embedding_dim * n_relevance + n_numeric + (embedding_dim if history else 0)
        self.attention = TargetAttention(embedding_dim) if history else None
        self.prob_seen = ProbSeen(embedding_dim, scene_index is not None) if bias_index is not None else None
        self.gate_extra = embedding_dim if self.has_gate_scene else 0
        self.text = None  # with text off, nothing is drawn: the other layers start as before the option
        if text:
            buckets, length = int(text["buckets"]), int(text["length"])
            self.text = TitleQueryText(buckets, length, embedding_dim, sparse=sparse)
            self.in_dim += self.text.out_dim
            first = self.n_features + (int(history["length"]) * len(history["fields"]) if history else 0)
            self._text_columns = slice(first, first + 2 * length)  # title's L codes, then the query's
        self.fm = FMTerm(len(self.tasks), embedding_dim) if interaction == "fm" else None
        self.register_load_state_dict_pre_hook(_upgrade_layout_1)
        self.tower_dim = tower_dim
        self.scene_towers: nn.ModuleDict | None = None
        if scene_towers:
            if scene_index is None:
                raise ValueError("scene_towers needs a scene feature (scene_index)")
            self._n_scenes = int(cardinalities[scene_index])

    def _history_lookups(self, history: dict, sizes: list[int]) -> list[tuple[int, int]]:
        """(cat column, table) per step and field of the sequence; own-vocabulary fields get tables
        appended to ``sizes`` (in place)."""
        length, lookups = int(history["length"]), []
        for f, field in enumerate(history["fields"]):
            if "table" in field:
                table = int(field["table"])
            else:
                sizes.append(int(field["size"]))
                table = len(sizes) - 1
            first = self.n_features + f * length
            lookups += [(first + j, table) for j in range(length)]
        return lookups

    def _interest(self, cat: torch.Tensor, vectors: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """DIN's interest [B, D] from the sequence's vectors [B, F·L, D] and the target's item and
        category vectors (rows of ``vectors`` [B, C, D])."""
        length, n_fields = int(self.history["length"]), len(self.history["fields"])
        history = steps.view(steps.shape[0], n_fields, length, -1).sum(dim=1)  # [B, L, D]
        present = cat[:, self.n_features : self.n_features + length] != 0  # [B, L]: an item
        target = vectors[:, list(self.history["target"])].sum(dim=1)  # [B, D]
        return self.attention(history, present, target)

    def _build_towers(self, rep_dim: int) -> None:
        """Called by subclasses once the backbone's output width ``rep_dim`` is known."""
        self.towers = TaskTowers(len(self.tasks), rep_dim, self.tower_dim, self.dropout)
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
        return [self.embedding] + ([self.text.encoder.embedding] if self.text is not None else [])

    def forward_with_gates(
        self, cat: torch.Tensor, num: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Logits {task: [B]} and gate weights {name: [B, n_experts]} (empty for shared-bottom)."""
        vectors = self.embedding(cat)  # [B, C (+1 for the gates' scene) (+F·L sequence), D]: one lookup
        interest = None
        if self.history:
            n_steps = int(self.history["length"]) * len(self.history["fields"])
            vectors, steps = vectors.split([vectors.shape[1] - n_steps, n_steps], dim=1)
            interest = self._interest(cat, vectors, steps)  # [B, D]
        scene_emb = None
        if self.has_gate_scene:  # split, not sliced: slices cost zero-filled gradient buffers
            vectors, scene_emb = vectors.split([self.n_features, 1], dim=1)  # [B, C, D], [B, 1, D]
            scene_emb = scene_emb.squeeze(1)  # [B, D]
        position = None
        if self.bias_index is not None:  # PAL: the position's vector goes to ProbSeen only
            vectors, position = vectors.split([self.n_features - 1, 1], dim=1)  # [B, C-1, D], [B, 1, D]
        parts = [vectors.flatten(1), num] + ([interest] if interest is not None else [])
        if self.text is not None:  # the title's vector and the query–title match
            parts.append(self.text(cat[:, self._text_columns]))  # [B, D + 1]
        x = torch.cat(parts, dim=1)  # [B, I] = [B, C·D + F (+D) (+D+1)] (C-1 embeddings under PAL)
        scene = cat[:, self.scene_index] if self.scene_index is not None else None  # [B]
        reps, gates = self._backbone(x, scene_emb)  # [T, B, H]
        logits: dict[str, torch.Tensor] = {}
        z = self.towers(reps)  # [T, B]
        if self.fm is not None:  # the fields' pairwise dot products, per task
            fields = vectors if interest is None else torch.cat([vectors, interest.unsqueeze(1)], dim=1)
            z = z + self.fm(fields)  # [T, B] + [T, B]
        z = z.unbind(0)  # T × [B]
        for k, task in enumerate(self.tasks):
            logits[task] = z[k]
            if self.scene_towers is not None:
                logits[task] = z[k] + self.scene_towers[task](reps[k], scene)
        if position is not None and self.prob_seen is not None:
            scene_vec = vectors[:, self.scene_index] if self.scene_index is not None else None  # [B, D]
            seen = self.prob_seen(position.squeeze(1), scene_vec)  # [B]
            biased = (ESMM_PARENT,) if self.esmm else self.tasks  # under ESMM the others inherit pCTR
            logits = with_position_bias(logits, seen, cat[:, self.bias_index] != 0, biased)
        for task in self.esmm_tasks:  # pCTCVR = pCTR × pCVR
            logits[task] = product_logit(logits[ESMM_PARENT], logits[task])
        return logits, gates

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cat`` LongTensor [B, C], ``num`` FloatTensor [B, F] → {task: logits [B]}."""
        return self.forward_with_gates(cat, num)[0]

    @torch.no_grad()
    def start_at_base_rates(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor | None = None,
        rounds: int = BASE_RATE_ROUNDS,
    ) -> None:
        """Shift each task tower's output bias ``b_out`` so that the model's mean predicted probability
        over these rows equals the (``weights``-weighted) positive rate of the task's ``targets``
        [N, T] column: the prior-probability initialisation of the last layer (Lin et al., 2017,
        "Focal Loss for Dense Object Detection", ICCV, §4.1), made exact for any output. A fresh
        tower predicts about 0.5 for every task; starting from the base rate (purchases are ~1%),
        the first steps learn the inputs instead of the rate. Newton steps in logit space,
        ``rounds`` of them (ESMM's products and PAL's ProbSeen factor make one step inexact)."""
        training = self.training
        self.eval()
        w = torch.ones(targets.shape[0], device=targets.device) if weights is None else weights.float()
        total = w.sum().clamp(min=1e-12)
        rates = ((targets.float() * w[:, None]).sum(0) / total).clamp(BASE_RATE_EPS, 1 - BASE_RATE_EPS)
        for _ in range(rounds):
            logits = self(cat, num)
            for k, task in enumerate(self.tasks):
                mean = ((torch.sigmoid(logits[task].float()) * w).sum() / total).clamp(
                    BASE_RATE_EPS, 1 - BASE_RATE_EPS
                )
                self.towers.b_out[k] += torch.logit(rates[k]) - torch.logit(mean)
        self.train(training)
