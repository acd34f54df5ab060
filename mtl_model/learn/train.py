"""Nightly training of the joint model on the exported training window.

Rows of days before ``ds`` train the model; the rows of ``ds`` itself are the held-out validation
day. The result is registered as a model version (see :mod:`mtl_model.learn.registry`) and its metrics
are written to ``<output_dir(ds)>/model_metrics.parquet``.

The training loop (:func:`fit_model`):

* tensors stay in memory (on the training device); each epoch walks a seeded permutation in batches
  (rows gathered with ``index_select``); no host sync per step (losses are summed on the device);
* embeddings can emit sparse gradients (``sparse_embeddings``): :class:`RowSparseAdam` (the update of
  ``torch.optim.SparseAdam``, in O(rows touched)) updates only the rows a batch touched, ``Adam``
  (the fused kernel: one pass per parameter) the dense rest. Dense Adam passes over every row of every
  table each step (see ``docs/benchmarks.md``);
* task losses are combined by :mod:`mtl_model.learn.weighting` (fixed, uncertainty, GradNorm, PCGrad), with
  optional class-imbalance handling;
* after every epoch the validation day's mean AUC is measured; training stops after ``patience``
  epochs without improvement and the best epoch's weights are kept (``epochs`` is the maximum). The
  validation day therefore also picks the epoch: its metrics are slightly optimistic;
* a checkpoint is written after every epoch (model, optimizers, loss weighting, RNG, early-stopping
  state) under ``<models_dir>/.checkpoints/<version>/``; a run of the same version (same data and
  configuration) that finds one resumes after its last epoch and ends with the same weights as an
  uninterrupted run. The folder is removed when training succeeds;
* on CUDA the forward pass runs under bf16 autocast (losses in float32); CPU stays float32.

Determinism: the same inputs, settings and seed give the same weights and the same ``model_metrics``
(deterministic kernels, seeded permutation); wall-clock speed is logged and kept in ``metrics.json``
only.

Evaluation on the validation day, per task: AUC, GAUC (per-user AUC weighted by the user's
exposures, users with both classes only), log loss, positive rate; and the same for the references
of :mod:`mtl_model.learn.baselines`, written as extra metric names (see :data:`BASELINE_SUFFIXES`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.utils.deterministic

from mtl_model import __version__
from mtl_model.config import Settings
from mtl_model.dates import parse_date
from mtl_model.files import write_atomic, write_parquet_atomic
from mtl_model.learn.baselines import popularity_scores, truth_paths, truth_probabilities
from mtl_model.learn.device import deterministic, resolve_device, torch_threads
from mtl_model.learn.features import Encoders, FeatureSpec
from mtl_model.learn.metrics import auc, gauc, log_loss
from mtl_model.learn.networks import (
    PARAMETER_LAYOUT,
    build_model,
    default_esmm,
    predict_proba,
    split_parameters,
)
from mtl_model.learn.registry import MODEL_FORMAT, file_sha256, register, version_name
from mtl_model.learn.samples import SAMPLES_FILE, esmm_targets, labels, read_split
from mtl_model.learn.weighting import make_weighting, model_optimizer_parameters, positive_weights, task_loss

log = logging.getLogger(__name__)

METRICS_FILE = "model_metrics.parquet"
CHECKPOINT_FILE = "checkpoint.pt"
TOWER_DIM = 32
METRICS_SCHEMA = {
    "ds": pl.Date(),
    "model_version": pl.String(),
    "task": pl.String(),
    "metric": pl.String(),
    "value": pl.Float64(),
    "split": pl.String(),
}
# model_metrics rows of the references carry the main model's version and metric names with a suffix:
# auc_popularity, gauc_single_task, logloss_truth, … (task "all": mean_auc_<suffix>).
BASELINE_SUFFIXES = ("popularity", "single_task", "truth")


def _as_bool(value: Any) -> bool | None:
    """True / False / None (= automatic) from a bool or a string such as "true", "0", "auto"."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "auto", "none", "default"):
        return None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class TrainOptions:
    """Training options beyond the core ``Settings`` fields (architecture, epochs, batch size, …).

    :meth:`from_settings` reads each field from the settings object when it has an attribute of the
    same name (so these can become ``Settings`` fields / ``TANDEM_*`` variables), else the default.
    """

    esmm: bool | None = None  # None: on for mmoe / ple (see models.default_esmm)
    scene_towers: bool = False  # scene-specific residual towers on top of the shared ones
    n_experts: int = 4  # MMoE experts
    ple_levels: int = 2  # PLE extraction levels (≤ len(hidden_dims))
    ple_task_experts: int = 1  # PLE experts per task per level
    ple_shared_experts: int = 2  # PLE shared experts per level
    loss_weighting: str = "fixed"  # fixed | uncertainty | gradnorm | pcgrad
    task_weights: tuple[float, ...] = ()  # fixed weights, one per task (empty: all 1)
    gradnorm_alpha: float = 1.5
    class_balance: str = "none"  # none | pos_weight | focal
    focal_gamma: float = 2.0
    sparse_embeddings: bool = True  # sparse embedding gradients + SparseAdam
    max_vocab: int = 0  # per categorical column, 0 = no cap; beyond it ids are hashed
    hash_buckets: int = 4096
    log_counts: bool = True  # log of count / amount f_* features (features.FeatureSpec.log_counts)
    patience: int = 2  # early stopping on the validation day's mean AUC; 0 = run all epochs
    checkpoints: bool = True  # checkpoint every epoch and resume a crashed run of the same version
    bf16: bool = True  # bf16 autocast on CUDA (never on CPU)
    baselines: bool = True  # popularity + single-task references (+ truth ceiling on simulated data)
    threads: int = 0  # torch intra-op threads while training; 0 = leave torch's default

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> TrainOptions:
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in overrides:
                values[f.name] = overrides[f.name]
            elif hasattr(settings, f.name):
                values[f.name] = getattr(settings, f.name)
        return cls(**values).normalised()

    def normalised(self) -> TrainOptions:
        """Coerce strings from the environment (``"true"``, ``"1,2,1"``) to the field types."""
        task_weights = self.task_weights
        if isinstance(task_weights, str):
            task_weights = tuple(float(x) for x in task_weights.split(",") if x.strip())
        return TrainOptions(
            **{
                **asdict(self),
                "esmm": _as_bool(self.esmm),
                "scene_towers": bool(_as_bool(self.scene_towers)),
                "sparse_embeddings": bool(_as_bool(self.sparse_embeddings)),
                "checkpoints": bool(_as_bool(self.checkpoints)),
                "bf16": bool(_as_bool(self.bf16)),
                "baselines": bool(_as_bool(self.baselines)),
                "log_counts": bool(_as_bool(self.log_counts)),
                "task_weights": tuple(float(x) for x in task_weights),
            }
        )

    def model_kwargs(
        self, architecture: str, tasks: Sequence[str], scene_index: int | None
    ) -> dict[str, Any]:
        """Keyword arguments of :func:`build_model` that define the network (stored in config.json)."""
        kwargs: dict[str, Any] = {
            "esmm": default_esmm(architecture, tasks) if self.esmm is None else self.esmm,
            "scene_index": scene_index,
            "scene_towers": self.scene_towers,
        }
        if architecture == "mmoe":
            kwargs["n_experts"] = self.n_experts
        if architecture == "ple":
            kwargs.update(
                ple_levels=self.ple_levels,
                ple_task_experts=self.ple_task_experts,
                ple_shared_experts=self.ple_shared_experts,
            )
        return kwargs

    def fingerprint(self, architecture: str, tasks: Sequence[str]) -> dict[str, Any]:
        """What changes the trained model (for the version name): not ``checkpoints``, ``threads`` or
        ``baselines`` (they change how it is trained or reported, not the weights)."""
        data = asdict(self)
        for name in ("checkpoints", "threads", "baselines"):
            data.pop(name)
        data["esmm"] = default_esmm(architecture, tasks) if self.esmm is None else self.esmm
        data["task_weights"] = list(self.task_weights)
        return data


@dataclass(frozen=True)
class EpochInfo:
    """Passed to training callbacks after each epoch (after its checkpoint is written)."""

    epoch: int  # 1-based
    train_losses: dict[str, float]
    valid_score: float  # mean validation AUC over tasks with a finite AUC
    loss_weights: list[float]
    best_epoch: int
    stop: bool


EpochCallback = Callable[[EpochInfo], None]


@dataclass
class FitResult:
    """What :func:`fit_model` did."""

    epochs_trained: int
    best_epoch: int
    best_score: float
    train_loss: float
    samples_per_s: float
    history: list[dict[str, Any]]
    weighting: dict[str, Any]
    resumed_from_epoch: int = 0  # epochs restored from a checkpoint (0: started fresh)


@dataclass(frozen=True)
class TrainResult:
    """What one training run produced and whether it became the current model."""

    ds: date
    version: str
    model_dir: Path
    metrics_path: Path
    metrics: dict[str, dict[str, float]]  # task -> {"auc", "gauc", "logloss", "positive_rate"} on validation
    mean_auc: float
    n_train: int
    n_valid: int
    samples_per_s: float
    device: str
    promoted: bool
    reason: str
    baselines: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # name -> task -> metrics
    epochs_trained: int = 0
    best_epoch: int = 0
    resumed_from_epoch: int = 0


def evaluate(
    model: torch.nn.Module,
    cat: torch.Tensor,
    num: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    groups: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """AUC, GAUC (when ``groups``, the user of each row, is given), log loss and positive rate per task."""
    probs = predict_proba(model, cat, num, device=device)
    labels = y.numpy()
    return {
        task: task_metrics(labels[:, i], probs[task].numpy(), groups) for i, task in enumerate(model.tasks)
    }


def task_metrics(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray | None) -> dict[str, float]:
    out = {"auc": auc(labels, probs)}
    if groups is not None:
        out["gauc"] = gauc(labels, probs, groups)
    out["logloss"] = log_loss(labels, probs)
    out["positive_rate"] = float(labels.mean()) if len(labels) else float("nan")
    return out


def _mean_finite(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _validation_score(
    model: torch.nn.Module, valid: tuple[torch.Tensor, torch.Tensor, torch.Tensor], device: torch.device
) -> float:
    """Mean AUC over tasks with a finite AUC; minus the mean log loss when no task has one."""
    cat, num, y = valid
    probs = predict_proba(model, cat, num, device=device)
    labels = y.numpy()
    aucs = [auc(labels[:, i], probs[t].numpy()) for i, t in enumerate(model.tasks)]
    score = _mean_finite(aucs)
    if math.isfinite(score):
        return score
    return -float(np.mean([log_loss(labels[:, i], probs[t].numpy()) for i, t in enumerate(model.tasks)]))


class RowSparseAdam(torch.optim.Optimizer):
    """Adam for sparse (embedding) gradients that touches only the rows in the gradient.

    The update is that of ``torch.optim.SparseAdam`` (lazy Adam: the moments of a row decay only
    when the row is in a batch; bias correction by the parameter's step count), but written with
    ``index_select`` / ``index_copy_`` / ``index_add_`` on the coalesced rows. ``SparseAdam`` adds
    sparse tensors into the dense moment and weight tensors, which on CPU costs a pass over the whole
    table three times per step; this costs O(rows in the batch). Deterministic on CPU.
    """

    def __init__(
        self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ):
        if lr <= 0 or eps <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid RowSparseAdam settings lr={lr} betas={betas} eps={eps}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - see the class docstring
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError("RowSparseAdam needs sparse gradients (nn.Embedding(sparse=True))")
                grad = p.grad.coalesce()
                rows, values = grad.indices()[0], grad.values()  # [R], [R, D]
                if rows.numel() == 0:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                step = float(state["step"])
                m = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
                v = (
                    state["exp_avg_sq"]
                    .index_select(0, rows)
                    .mul_(beta2)
                    .addcmul_(values, values, value=1 - beta2)
                )
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                # rows are unique after coalesce: read-modify-write (index_add_ is ~3× slower on CPU)
                update = m.div_(v.sqrt_().add_(group["eps"]))
                p.index_copy_(0, rows, p.index_select(0, rows).sub_(update, alpha=step_size))
        return None


def _all_reduce_mean(params: Sequence[torch.nn.Parameter]) -> None:
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def _atomic_save(obj: Any, path: Path) -> None:
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def _cpu_state(module: torch.nn.Module) -> dict[str, Any]:
    return {
        k: (v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v)
        for k, v in module.state_dict().items()
    }


def fit_model(
    model: torch.nn.Module,
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    valid: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    device: torch.device,
    options: TrainOptions,
    checkpoint_dir: Path | None = None,
    fingerprint: str = "",
    callbacks: Sequence[EpochCallback] = (),
    world: tuple[int, int] = (0, 1),
) -> FitResult:
    """Train ``model`` in place on ``train`` = (cat [N, C], num [N, F], targets [N, T]) and leave it with
    the weights of its best epoch on ``valid`` = (cat, num, labels); see the module docstring.

    ``world`` = (rank, world size) under ``torchrun``: every process holds the same tensors, walks the
    same permutation and trains on its share (rows ``rank::world``) of each global batch of
    ``batch_size`` rows; ``DistributedDataParallel`` averages the gradients, so a step equals one of a
    single process on the whole batch (up to the order of float sums). Only rank 0 writes checkpoints.
    """
    rank, world_size = world
    if world_size > 1 and options.loss_weighting in ("gradnorm", "pcgrad"):
        raise ValueError(
            f"{options.loss_weighting} is not supported with DistributedDataParallel "
            "(use fixed or uncertainty)"
        )
    tasks = tuple(model.tasks)
    cat, num, y = (t.to(device) for t in train)
    n, bs = cat.shape[0], batch_size
    weighting = make_weighting(
        options.loss_weighting,
        len(tasks),
        fixed_weights=options.task_weights if len(options.task_weights) == len(tasks) else None,
        gradnorm_alpha=options.gradnorm_alpha,
        gradnorm_lr=learning_rate,
        seed=seed,
    ).to(device)
    if options.task_weights and len(options.task_weights) != len(tasks):
        log.warning("task_weights %s do not match tasks %s; using 1 each", options.task_weights, tasks)
    pos_weight = positive_weights(train[2], options.class_balance).tolist()
    shared: list[torch.nn.Parameter] = []  # the shared parameters the weighting looks at
    if options.loss_weighting == "gradnorm":
        shared = model.shared_parameters()  # GradNorm's W: the last shared layer
    elif options.loss_weighting == "pcgrad":
        shared = model.shared_backbone_parameters()  # PCGrad projects on the whole shared backbone
    sparse_params, dense_params = split_parameters(model)
    opt_dense = torch.optim.Adam(
        dense_params + model_optimizer_parameters(weighting), lr=learning_rate, fused=True
    )
    opt_sparse = RowSparseAdam(sparse_params, lr=learning_rate) if sparse_params else None
    generator = torch.Generator().manual_seed(seed)
    step_model: torch.nn.Module = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    use_bf16 = options.bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()

    start_epoch, best_epoch, bad, stopped = 0, 0, 0, False
    best_score, best_state = -math.inf, None
    history: list[dict[str, Any]] = []
    ckpt_path = checkpoint_dir / CHECKPOINT_FILE if checkpoint_dir is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        same_layout = set(ckpt.get("model", {})) == set(model.state_dict())  # not from older code
        if ckpt.get("fingerprint") == fingerprint and ckpt.get("epoch", 0) <= epochs and same_layout:
            model.load_state_dict(ckpt["model"])
            opt_dense.load_state_dict(ckpt["opt_dense"])
            if opt_sparse is not None:
                opt_sparse.load_state_dict(ckpt["opt_sparse"])
            weighting.load_state_dict(ckpt["weighting"])
            generator.set_state(ckpt["generator"])
            start_epoch, best_epoch, bad, stopped = (
                ckpt["epoch"],
                ckpt["best_epoch"],
                ckpt["bad"],
                ckpt["stopped"],
            )
            best_score, best_state, history = ckpt["best_score"], ckpt["best_state"], list(ckpt["history"])
            log.info("resuming from the checkpoint after epoch %d: %s", start_epoch, ckpt_path)
        else:
            log.warning("ignoring a checkpoint of another run: %s", ckpt_path)
    resumed_from = start_epoch

    step_time, steps_samples = 0.0, 0
    for epoch in range(start_epoch, epochs):
        if stopped:
            break
        model.train()
        weighting.train()
        perm = torch.randperm(n, generator=generator).to(device)
        totals = torch.zeros(len(tasks), device=device)
        t0 = time.perf_counter()
        for lo in range(0, n, bs):
            idx = perm[lo : lo + bs]
            if world_size > 1:
                idx = idx[rank::world_size]
            with autocast:
                logits = step_model(cat.index_select(0, idx), num.index_select(0, idx))
            yb = y.index_select(0, idx)
            losses = torch.stack(
                [
                    task_loss(
                        logits[t].float(), yb[:, i], options.class_balance, pos_weight[i], options.focal_gamma
                    )
                    for i, t in enumerate(tasks)
                ]
            )
            loss = weighting(losses, shared)
            opt_dense.zero_grad(set_to_none=True)
            if opt_sparse is not None:
                opt_sparse.zero_grad(set_to_none=True)
            loss.backward()
            if world_size > 1:  # DDP averages the model's gradients; the loss weights' are averaged here
                _all_reduce_mean(model_optimizer_parameters(weighting))
            opt_dense.step()
            if opt_sparse is not None:
                opt_sparse.step()
            totals += losses.detach() * idx.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_seconds = time.perf_counter() - t0
        step_time += epoch_seconds
        steps_samples += n  # all ranks together: the throughput of the job
        epoch_losses = {t: float(v) / max(n, 1) for t, v in zip(tasks, totals.cpu(), strict=True)}
        score = _validation_score(model, valid, device)
        if best_state is None or score > best_score:
            best_score, best_epoch, bad = score, epoch + 1, 0
            best_state = _cpu_state(model)
        else:
            bad += 1
        stopped = options.patience > 0 and bad >= options.patience
        weights = [float(w) for w in weighting.weights()]
        history.append(
            {
                "epoch": epoch + 1,
                "train_losses": epoch_losses,
                "valid_score": score,
                "weights": weights,
                "train_seconds": epoch_seconds,  # wall clock: metrics.json only, never model_metrics
            }
        )
        log.info(
            "epoch %d/%d: train loss %s, validation mean AUC %.5f, loss weights %s%s",
            epoch + 1,
            epochs,
            {t: round(v, 5) for t, v in epoch_losses.items()},
            score,
            [round(w, 4) for w in weights],
            "; early stop" if stopped else "",
        )
        if ckpt_path is not None and rank == 0:
            _atomic_save(
                {
                    "fingerprint": fingerprint,
                    "epoch": epoch + 1,
                    "model": _cpu_state(model),
                    "opt_dense": opt_dense.state_dict(),
                    "opt_sparse": opt_sparse.state_dict() if opt_sparse is not None else {},
                    "weighting": _cpu_state(weighting),
                    "generator": generator.get_state(),
                    "best_epoch": best_epoch,
                    "best_score": best_score,
                    "best_state": best_state,
                    "bad": bad,
                    "stopped": stopped,
                    "history": history,
                },
                ckpt_path,
            )
        info = EpochInfo(epoch + 1, epoch_losses, score, weights, best_epoch, stopped)
        for callback in callbacks:
            callback(info)
    if best_state is not None:
        model.load_state_dict(best_state)
    last_losses = history[-1]["train_losses"] if history else {}
    return FitResult(
        epochs_trained=len(history),
        best_epoch=best_epoch,
        best_score=best_score,
        train_loss=float(sum(last_losses.values())) if last_losses else float("nan"),
        samples_per_s=steps_samples / step_time if step_time > 0 else float("nan"),
        history=history,
        weighting={
            **weighting.describe(),
            "class_balance": options.class_balance,
            "pos_weight": [round(float(w), 6) for w in pos_weight],
            **({"focal_gamma": options.focal_gamma} if options.class_balance == "focal" else {}),
        },
        resumed_from_epoch=resumed_from,
    )


def metrics_frame(ds: date, version: str, rows: list[tuple[str, str, float]]) -> pl.DataFrame:
    """``model_metrics`` rows (task, metric, value) as the published schema, split ``validation``.

    Undefined values (e.g. AUC on a day without positives) are written as null, not NaN.
    """
    return pl.DataFrame(
        {
            "ds": [ds] * len(rows),
            "model_version": [version] * len(rows),
            "task": [r[0] for r in rows],
            "metric": [r[1] for r in rows],
            "value": [float(r[2]) if math.isfinite(float(r[2])) else None for r in rows],
            "split": ["validation"] * len(rows),
        },
        schema=METRICS_SCHEMA,
    )


def _baselines(
    settings: Settings,
    ds: date,
    options: TrainOptions,
    model_kwargs: dict[str, Any],
    encoders: Encoders,
    frames: tuple[pl.DataFrame, pl.DataFrame],
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    groups: np.ndarray,
    device: torch.device,
) -> dict[str, dict[str, dict[str, float]]]:
    """Popularity, single-task models of the same architecture and capacity, and the truth ceiling."""
    tasks = tuple(settings.tasks)
    train_df, valid_df = frames
    cat_tr, num_tr, y_tr, cat_va, num_va, y_va = tensors
    labels = y_va.numpy()
    out: dict[str, dict[str, dict[str, float]]] = {}

    pop = popularity_scores(train_df, valid_df, tasks)
    out["popularity"] = {
        t: task_metrics(labels[:, i], pop[t].to_numpy(), groups) for i, t in enumerate(tasks)
    }

    single: dict[str, dict[str, float]] = {}
    single_kwargs = {**model_kwargs, "esmm": False}
    single_options = TrainOptions(**{**asdict(options), "loss_weighting": "fixed", "task_weights": ()})
    for i, task in enumerate(tasks):
        with deterministic(settings.seed):
            model = build_model(
                settings.architecture,
                encoders.cardinalities,
                encoders.n_numeric,
                (task,),
                embedding_dim=settings.embedding_dim,
                hidden_dims=settings.hidden_dims,
                tower_dim=TOWER_DIM,
                sparse=options.sparse_embeddings,
                **single_kwargs,
            ).to(device)
            fit_model(
                model,
                (cat_tr, num_tr, y_tr[:, i : i + 1]),
                (cat_va, num_va, y_va[:, i : i + 1]),
                epochs=settings.epochs,
                batch_size=settings.batch_size,
                learning_rate=settings.learning_rate,
                seed=settings.seed,
                device=device,
                options=single_options,
            )
            probs = predict_proba(model, cat_va, num_va, device=device)[task].numpy()
        single[task] = task_metrics(labels[:, i], probs, groups)
    out["single_task"] = single

    paths = truth_paths(settings.home, settings.landing_dir, ds)
    if paths is None:
        log.info("truth ceiling skipped: no simulator truth or landing events for ds=%s", ds)
    else:
        try:
            truth = truth_probabilities(*paths, valid_df, tasks)
        except Exception as exc:  # noqa: BLE001 - the ceiling is optional, never fails a night
            log.warning("truth ceiling skipped: %s", exc)
            truth = None
        if truth is not None:
            out["truth"] = {
                t: task_metrics(labels[:, i], truth[t].to_numpy(), groups)
                for i, t in enumerate(tasks)
                if t in truth
            }
    return out


def distributed_world() -> tuple[int, int]:
    """(rank, world size): from an initialised process group, else from ``torchrun``'s ``RANK`` /
    ``WORLD_SIZE`` (initialising a gloo or nccl group), else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or not dist.is_available():
        return 0, 1
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _follower_result(
    ds: date,
    version: str,
    settings: Settings,
    fit: FitResult,
    device: torch.device,
    n_train: int,
    n_valid: int,
) -> TrainResult:
    return TrainResult(
        ds=ds,
        version=version,
        model_dir=settings.models_dir / version,
        metrics_path=settings.output_dir(ds) / METRICS_FILE,
        metrics={},
        mean_auc=float("nan"),
        n_train=n_train,
        n_valid=n_valid,
        samples_per_s=fit.samples_per_s,
        device=device.type,
        promoted=False,
        reason="not rank 0: rank 0 registers the model",
        epochs_trained=fit.epochs_trained,
        best_epoch=fit.best_epoch,
        resumed_from_epoch=fit.resumed_from_epoch,
    )


def checkpoint_dir_for(settings: Settings, version: str) -> Path:
    """Where the checkpoints of ``version`` live while it trains."""
    root = getattr(settings, "checkpoint_dir", None) or settings.models_dir / ".checkpoints"
    return Path(root) / version


def train(
    settings: Settings,
    ds: date | str,
    options: TrainOptions | None = None,
    callbacks: Sequence[EpochCallback] = (),
) -> TrainResult:
    """Train on the window ending at ``ds``, validate on ``ds``, register and maybe promote.

    ``options`` default to :meth:`TrainOptions.from_settings`; ``callbacks`` run after every epoch of
    the joint model (after its checkpoint), e.g. for progress reporting.
    """
    ds = parse_date(ds)
    tasks = tuple(settings.tasks)
    options = options or TrainOptions.from_settings(settings)
    world = distributed_world()
    samples_path = settings.export_dir(ds) / SAMPLES_FILE
    train_df, valid_df = read_split(settings, ds)
    if train_df.height == 0 or valid_df.height == 0:
        raise ValueError(
            f"ds={ds}: need training rows (days before ds) and validation rows (day ds) in {samples_path}; "
            f"got n_train={train_df.height}, n_valid={valid_df.height}"
        )
    device = resolve_device(settings.device)
    samples_sha256 = file_sha256(samples_path)
    fingerprint = options.fingerprint(settings.architecture, tasks)
    version = version_name(settings, ds, samples_sha256, fingerprint)
    log.info(
        "ds=%s version=%s architecture=%s n_train=%d n_valid=%d device=%s",
        ds,
        version,
        settings.architecture,
        train_df.height,
        valid_df.height,
        device,
    )

    spec = FeatureSpec(
        max_vocab=options.max_vocab, hash_buckets=options.hash_buckets, log_counts=options.log_counts
    )
    encoders = Encoders.fit(train_df, spec)
    cat_tr, num_tr = encoders.encode(train_df)
    cat_va, num_va = encoders.encode(valid_df)
    y_tr, y_va = labels(train_df, tasks), labels(valid_df, tasks)
    # encoded: from here on the training rows serve only the popularity baseline and the config
    train_df = train_df.select("ds", "item_id", *tasks)
    groups = valid_df.get_column("user_id").cast(pl.String()).fill_null("").to_numpy()
    categorical = encoders.spec.categorical
    scene_index = categorical.index("scene") if "scene" in categorical else None
    model_kwargs = options.model_kwargs(settings.architecture, tasks, scene_index)
    ckpt_dir = checkpoint_dir_for(settings, version) if options.checkpoints else None

    with deterministic(settings.seed), torch_threads(options.threads):
        model = build_model(
            settings.architecture,
            encoders.cardinalities,
            encoders.n_numeric,
            tasks,
            embedding_dim=settings.embedding_dim,
            hidden_dims=settings.hidden_dims,
            tower_dim=TOWER_DIM,
            sparse=options.sparse_embeddings,
            **model_kwargs,
        ).to(device)
        fit = fit_model(
            model,
            (cat_tr, num_tr, esmm_targets(y_tr, tasks, model.esmm)),
            (cat_va, num_va, y_va),
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            seed=settings.seed,
            device=device,
            options=options,
            checkpoint_dir=ckpt_dir,
            fingerprint=version,
            callbacks=callbacks,
            world=world,
        )
        if world[0] != 0:  # other ranks only help to train; rank 0 evaluates, registers and publishes
            return _follower_result(ds, version, settings, fit, device, train_df.height, valid_df.height)
        task_metrics_ = evaluate(model, cat_va, num_va, y_va, device, groups)
    model = model.cpu()

    baselines: dict[str, dict[str, dict[str, float]]] = {}
    if options.baselines:
        with torch_threads(options.threads):
            baselines = _baselines(
                settings,
                ds,
                options,
                model_kwargs,
                encoders,
                (train_df, valid_df),
                (cat_tr, num_tr, y_tr, cat_va, num_va, y_va),
                groups,
                device,
            )

    mean = _mean_finite([m["auc"] for m in task_metrics_.values()])
    metrics: dict[str, Any] = {
        "version": version,
        "ds": ds.isoformat(),
        "split": "validation",
        "tasks": task_metrics_,
        "mean_auc": mean,
        "baselines": baselines,
        "n_train": train_df.height,
        "n_valid": valid_df.height,
        "train_loss": fit.train_loss,
        "samples_per_s": fit.samples_per_s,
        "device": device.type,
        "epochs_trained": fit.epochs_trained,
        "best_epoch": fit.best_epoch,
        "history": fit.history,
        "resumed_from_epoch": fit.resumed_from_epoch,
    }
    config: dict[str, Any] = {
        "version": version,
        "ds": ds.isoformat(),
        "architecture": settings.architecture,
        "tasks": list(tasks),
        "embedding_dim": settings.embedding_dim,
        "hidden_dims": list(settings.hidden_dims),
        "tower_dim": TOWER_DIM,
        "model": model_kwargs,
        "cardinalities": encoders.cardinalities,
        "n_numeric": encoders.n_numeric,
        "numeric_features": list(encoders.spec.numeric),
        "log_numeric_features": [*encoders.spec.log_numeric, *encoders.spec.signed_log_numeric],
        "hashed_features": dict(encoders.hashed),
        "loss_weighting": fit.weighting,
        "sparse_embeddings": options.sparse_embeddings,
        "early_stopping": {"patience": options.patience, "best_epoch": fit.best_epoch},
        "options": fingerprint,
        "train_window_days": settings.train_window_days,
        "train_start": train_df.get_column("ds").min().isoformat(),
        "train_end": train_df.get_column("ds").max().isoformat(),
        "validation_day": ds.isoformat(),
        "seed": settings.seed,
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "samples_sha256": samples_sha256,
        "model_format": MODEL_FORMAT,
        "parameter_layout": PARAMETER_LAYOUT,  # models.py's state-dict layout (older ones convert on load)
        "package_version": __version__,
    }
    promotion = register(settings, version, model, encoders, config, metrics, validation=valid_df)
    if ckpt_dir is not None:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            ckpt_dir.parent.rmdir()  # only when no other version is training
    log.info(
        "version %s promoted=%s: %s (%.0f samples/s on %s)",
        version,
        promotion.promoted,
        promotion.reason,
        fit.samples_per_s,
        device.type,
    )

    # model_metrics holds what the data and seed determine; wall-clock speed (samples_per_s) stays in
    # metrics.json and the task log, so a rerun of a day publishes identical tables.
    rows = [(t, k, v) for t, m in task_metrics_.items() for k, v in m.items()]
    for name, per_task in baselines.items():
        rows += [
            (t, f"{k}_{name}", v) for t, m in per_task.items() for k, v in m.items() if k != "positive_rate"
        ]
    rows += [
        ("all", "mean_auc", mean),
        ("all", "n_train", train_df.height),
        ("all", "n_valid", valid_df.height),
        ("all", "promoted", float(promotion.promoted)),
        ("all", "epochs_trained", fit.epochs_trained),
        ("all", "best_epoch", fit.best_epoch),
    ]
    rows += [
        ("all", f"mean_auc_{name}", _mean_finite([m["auc"] for m in per_task.values()]))
        for name, per_task in baselines.items()
    ]
    metrics_path = settings.output_dir(ds) / METRICS_FILE
    write_parquet_atomic(metrics_frame(ds, version, rows), metrics_path)
    return TrainResult(
        ds=ds,
        version=version,
        model_dir=settings.models_dir / version,
        metrics_path=metrics_path,
        metrics=task_metrics_,
        mean_auc=mean,
        n_train=train_df.height,
        n_valid=valid_df.height,
        samples_per_s=fit.samples_per_s,
        device=device.type,
        promoted=promotion.promoted,
        reason=promotion.reason,
        baselines=baselines,
        epochs_trained=fit.epochs_trained,
        best_epoch=fit.best_epoch,
        resumed_from_epoch=fit.resumed_from_epoch,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mtl_model.learn.train --ds D``; under
    ``torchrun --nproc_per_node=N -m mtl_model.learn.train --ds D`` the N processes train one model
    with DistributedDataParallel and rank 0 registers it."""
    import argparse
    import json

    from mtl_model.config import load_settings

    parser = argparse.ArgumentParser(description="Train the joint model for one day.")
    parser.add_argument("--ds", required=True, help="run date YYYY-MM-DD (the validation day)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = train(load_settings(), args.ds)
    rank, world_size = distributed_world()
    if rank == 0:
        print(
            json.dumps({"version": result.version, "promoted": result.promoted, "mean_auc": result.mean_auc})
        )
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
