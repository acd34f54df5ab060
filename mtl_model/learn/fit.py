"""The training loop of one model (:func:`fit_model`).

* tensors stay in memory (on the training device); each epoch walks a seeded permutation in batches
  (rows gathered with ``index_select``); no host sync per step (losses are summed on the device);
* embeddings can emit sparse gradients (``sparse_embeddings``): :class:`RowSparseAdam` (the update of
  ``torch.optim.SparseAdam``, in O(rows touched)) updates only the rows a batch touched, ``Adam``
  (the fused kernel: one pass per parameter) the dense rest. Dense Adam passes over every row of every
  table each step (see ``docs/benchmarks.md``);
* regularisation (docs/models.md): decoupled weight decay (AdamW) of the dense layers
  (``weight_decay``) and of the embedding rows (``embedding_weight_decay``: lazily, on the rows a batch
  touches, for sparse embeddings), and a learning rate that follows ``lr_schedule`` over the steps of
  ``epochs`` (a cosine down to :data:`LR_FLOOR` of it), so later epochs move the weights less; and
  ``embedding_epochs``: after that many epochs the embedding tables stop learning and only the layers
  go on (Zhang et al. 2022, "Towards Understanding the Overfitting Phenomenon of Deep Click-Through
  Rate Prediction Models", trace the drop after the first epoch to the embeddings); and ``plateau``
  (the default ``hold_embeddings``): each epoch that does not improve on the best brings the best
  epoch's weights back and multiplies the learning rate by ``plateau_lr_factor``, and from the first
  one on the tables are held (:func:`_on_plateau`), so that later epochs stay near the best;
* task losses are combined by :mod:`mtl_model.learn.weighting` (fixed, uncertainty, GradNorm, PCGrad), with
  optional class-imbalance handling; each is a weighted mean over the batch when the training rows
  carry importance weights (down-sampled negatives, ``negative_rate``);
* every task's output bias starts at the logit of its positive rate in the training rows
  (``output_bias=base_rate``, :meth:`~mtl_model.learn.networks.base.MultiTaskNet.start_at_base_rates`),
  not near p = 0.5: the first steps then learn from the inputs, not the rate (docs/models.md);
* after every epoch the validation split's mean AUC is measured; training stops after ``patience``
  epochs without improvement and the best epoch's weights are kept (``epochs`` is the maximum, raised
  on a small window to reach ``min_steps`` optimizer steps: :func:`planned_epochs`). The
  validation split therefore picks the epoch and its metrics are optimistic: the night reports the
  test split (see :mod:`mtl_model.learn.train`);
* a checkpoint is written after every epoch (model, optimizers, loss weighting, RNG, early-stopping
  state) into ``checkpoint_dir``; a run with the same fingerprint that finds one resumes after its
  last epoch and ends with the same weights as an uninterrupted run;
* on CUDA the forward pass runs under bf16 autocast (losses in float32); CPU stays float32.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mtl_model.config import Settings
from mtl_model.files import write_atomic
from mtl_model.learn.distributed import all_reduce_mean
from mtl_model.learn.evaluate import validation_score
from mtl_model.learn.networks import split_parameters
from mtl_model.learn.optim import RowSparseAdam
from mtl_model.learn.options import task_weights
from mtl_model.learn.weighting import (
    LossWeighting,
    make_weighting,
    model_optimizer_parameters,
    positive_weights,
    task_loss,
)

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
LR_FLOOR = 0.1  # the cosine schedule ends at this share of learning_rate
BASE_RATE_ROWS = 65_536  # training rows the output biases are started on (output_bias=base_rate)
Tensors3 = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (cat [N, C], num [N, F], y [N, T])
Tensors = tuple[torch.Tensor, ...]  # Tensors3, then optionally the rows' importance weights [N]


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


@dataclass
class _Progress:
    """Where a fit stands after its last epoch: what a checkpoint restores besides the weights."""

    epoch: int = 0  # epochs done
    best_epoch: int = 0
    bad: int = 0  # epochs since the best one
    stopped: bool = False
    best_score: float = -math.inf
    best_state: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Trainer:
    """The model (and its DDP wrapper), the loss weighting and the optimizers of one fit."""

    model: torch.nn.Module
    step_model: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    weighting: LossWeighting
    shared: list[torch.nn.Parameter]  # the shared parameters the weighting looks at
    opt_dense: torch.optim.Optimizer
    opt_sparse: RowSparseAdam | None
    generator: torch.Generator  # the order of the rows in each epoch
    autocast: AbstractContextManager[Any]
    class_balance: str
    pos_weight: list[float]
    focal_gamma: float
    world: tuple[int, int]
    lr: float = 1e-3  # the base learning rate
    schedule: str = "constant"  # lr_schedule
    total_steps: int = 1  # steps of all epochs (the schedule's length)
    embedding_epochs: int = 0  # the tables learn in the first this-many epochs (0: in all)
    plateaus: int = 0  # plateaus so far (_on_plateau): the tables are held after the first
    plateau_lr_factor: float = 1.0  # the learning rate is multiplied by it at each plateau
    embeddings_frozen: bool = False  # set by train_epoch from embedding_epochs and plateaus

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.model.tasks)

    def step(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        y: torch.Tensor,
        idx: torch.Tensor,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One optimizer step on the rows ``idx`` (``weight``: the rows' importance weights [N], or
        None); returns the task losses [T] (not detached)."""
        with self.autocast:
            logits = self.step_model(cat.index_select(0, idx), num.index_select(0, idx))
        yb = y.index_select(0, idx)
        wb = weight.index_select(0, idx) if weight is not None else None
        losses = torch.stack(
            [
                task_loss(
                    logits[t].float(), yb[:, i], self.class_balance, self.pos_weight[i], self.focal_gamma, wb
                )
                for i, t in enumerate(self.tasks)
            ]
        )
        loss = self.weighting(losses, self.shared)
        self.opt_dense.zero_grad(set_to_none=True)
        if self.opt_sparse is not None:
            self.opt_sparse.zero_grad(set_to_none=True)
        loss.backward()
        if self.world[1] > 1:  # DDP averages the model's gradients; the loss weights' are averaged here
            all_reduce_mean(model_optimizer_parameters(self.weighting))
        self.opt_dense.step()
        if self.opt_sparse is not None and not self.embeddings_frozen:
            self.opt_sparse.step()
        return losses

    def set_step(self, step: int) -> None:
        """The learning rate of step ``step`` (0-based, over all epochs) in every optimizer group."""
        lr = self.lr * lr_factor(self.schedule, step, self.total_steps)
        lr *= self.plateau_lr_factor**self.plateaus
        for opt in (self.opt_dense, self.opt_sparse):
            for group in opt.param_groups if opt is not None else ():
                frozen = self.embeddings_frozen and group.get("embeddings", opt is self.opt_sparse)
                group["lr"] = 0.0 if frozen else lr  # lr 0: AdamW moves (and decays) nothing

    def train_epoch(
        self, data: Tensors, batch_size: int, device: torch.device, epochs_done: int = 0
    ) -> tuple[torch.Tensor, float]:
        """One pass over ``data`` = (cat, num, y[, weight]) in a seeded order: the task losses summed
        over rows [T], and seconds. ``epochs_done``: the epochs before this one (where the
        learning-rate schedule stands)."""
        rank, world_size = self.world
        cat, num, y = data[:3]
        weight = data[3] if len(data) > 3 else None
        n = cat.shape[0]
        first_step = epochs_done * math.ceil(n / batch_size)
        self.embeddings_frozen = self.plateaus > 0 or 0 < self.embedding_epochs <= epochs_done
        self.model.train()
        self.weighting.train()
        perm = torch.randperm(n, generator=self.generator).to(device)
        totals = torch.zeros(len(self.tasks), device=device)
        t0 = time.perf_counter()
        for k, lo in enumerate(range(0, n, batch_size)):
            self.set_step(first_step + k)
            idx = perm[lo : lo + batch_size]
            if world_size > 1:  # this process's share of the global batch
                idx = idx[rank::world_size]
            totals += self.step(cat, num, y, idx, weight).detach() * idx.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        return totals, time.perf_counter() - t0

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds of the trainer (CPU copies)."""
        return {
            "model": cpu_state(self.model),
            "opt_dense": self.opt_dense.state_dict(),
            "opt_sparse": self.opt_sparse.state_dict() if self.opt_sparse is not None else {},
            "weighting": cpu_state(self.weighting),
            "generator": self.generator.get_state(),
            "plateaus": self.plateaus,
        }

    def load(self, ckpt: dict[str, Any]) -> None:
        """Restore :meth:`state` from a checkpoint."""
        self.model.load_state_dict(ckpt["model"])
        self.opt_dense.load_state_dict(ckpt["opt_dense"])
        if self.opt_sparse is not None:
            self.opt_sparse.load_state_dict(ckpt["opt_sparse"])
        self.weighting.load_state_dict(ckpt["weighting"])
        self.generator.set_state(ckpt["generator"])
        self.plateaus = ckpt.get("plateaus", 0)


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """The share of the base learning rate at ``step`` of ``total_steps``: 1 for ``constant``; for
    ``cosine``, from 1 at the first step down to :data:`LR_FLOOR` at the last."""
    if schedule == "constant" or total_steps <= 1:
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown lr_schedule {schedule!r}: constant or cosine")
    t = min(max(step / (total_steps - 1), 0.0), 1.0)
    return LR_FLOOR + (1.0 - LR_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * t))


def _optimizers(
    model: torch.nn.Module, weighting: LossWeighting, settings: Settings
) -> tuple[torch.optim.Optimizer, RowSparseAdam | None]:
    """AdamW (fused) over the dense parameters in three groups (layers: ``weight_decay``; dense
    embedding tables: ``embedding_weight_decay``; loss-weighting parameters: none), and a
    :class:`RowSparseAdam` over the sparse embedding tables (``embedding_weight_decay``)."""
    sparse_params, dense_params = split_parameters(model)
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    groups = [
        {
            "params": [p for p in dense_params if id(p) not in tables],
            "weight_decay": settings.weight_decay,
            "embeddings": False,
        },
        {
            "params": [p for p in dense_params if id(p) in tables],
            "weight_decay": settings.embedding_weight_decay,
            "embeddings": True,  # held fixed after embedding_epochs (_Trainer.set_step)
        },
        {"params": model_optimizer_parameters(weighting), "weight_decay": 0.0, "embeddings": False},
    ]
    lr = settings.learning_rate
    opt_dense = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=True)
    opt_sparse = (
        RowSparseAdam(sparse_params, lr=lr, weight_decay=settings.embedding_weight_decay)
        if sparse_params
        else None
    )
    return opt_dense, opt_sparse


def cpu_state(module: torch.nn.Module) -> dict[str, Any]:
    """A CPU copy of ``module``'s state dict."""
    return {
        k: (v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v)
        for k, v in module.state_dict().items()
    }


def weighting_from(settings: Settings, n_tasks: int) -> LossWeighting:
    """The loss weighting of ``settings`` (``loss_weighting``, ``task_weights``, …) for ``n_tasks``."""
    weights = task_weights(settings)
    weighting = make_weighting(
        settings.loss_weighting,
        n_tasks,
        fixed_weights=weights if len(weights) == n_tasks else None,
        gradnorm_alpha=settings.gradnorm_alpha,
        gradnorm_lr=settings.learning_rate,
        seed=settings.seed,
    )
    if weights and len(weights) != n_tasks:
        log.warning("task_weights %s do not match %d tasks; using 1 each", weights, n_tasks)
    return weighting


def _trainer(
    model: torch.nn.Module,
    targets: torch.Tensor,
    settings: Settings,
    weighting: LossWeighting,
    device: torch.device,
    world: tuple[int, int],
    epochs: int,
) -> _Trainer:
    """The optimizers, the row order and the precision of a fit of ``model`` over ``epochs`` (the
    schedule's length; see :func:`fit_model`)."""
    shared: list[torch.nn.Parameter] = []
    if weighting.method == "gradnorm":
        shared = model.shared_parameters()  # GradNorm's W: the last shared layer
    elif weighting.method == "pcgrad":
        shared = model.shared_backbone_parameters()  # PCGrad projects on the whole shared backbone
    pos_weight = positive_weights(targets, settings.class_balance).tolist()
    opt_dense, opt_sparse = _optimizers(model, weighting, settings)
    generator = torch.Generator().manual_seed(settings.seed)
    step_model: torch.nn.Module = model
    if world[1] > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    use_bf16 = settings.bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
    return _Trainer(
        model=model,
        step_model=step_model,
        weighting=weighting,
        shared=shared,
        opt_dense=opt_dense,
        opt_sparse=opt_sparse,
        generator=generator,
        autocast=autocast,
        class_balance=settings.class_balance,
        pos_weight=pos_weight,
        focal_gamma=settings.focal_gamma,
        world=world,
        lr=settings.learning_rate,
        schedule=settings.lr_schedule,
        total_steps=epochs * math.ceil(targets.shape[0] / settings.batch_size),
        embedding_epochs=settings.embedding_epochs,
        plateau_lr_factor=settings.plateau_lr_factor,
    )


def _start_at_base_rates(model: torch.nn.Module, data: Tensors, rows: int = BASE_RATE_ROWS) -> None:
    """``model.start_at_base_rates`` on at most ``rows`` training rows, evenly strided (the rows of
    every day of the window), with their weights when they carry some."""
    n = data[0].shape[0]
    if n == 0:
        return
    pick = torch.arange(0, n, max(1, math.ceil(n / rows)), device=data[0].device)
    weights = data[3].index_select(0, pick) if len(data) > 3 else None
    cat, num, targets = (t.index_select(0, pick) for t in data[:3])
    model.start_at_base_rates(cat, num, targets, weights)


def planned_epochs(settings: Settings, n_rows: int) -> int:
    """The most epochs to run: ``epochs``, or as many as ``min_steps`` optimizer steps need when the
    window is small (a new or small home: 21k rows at batch 2048 are 11 steps an epoch, and 3 epochs
    left the REES46 sample's model before its best; docs/benchmarks.md). Early stopping (``patience``)
    still ends the run and keeps the best epoch."""
    steps_per_epoch = max(1, math.ceil(n_rows / settings.batch_size))
    return max(settings.epochs, math.ceil(settings.min_steps / steps_per_epoch))


def _resume(trainer: _Trainer, path: Path | None, fingerprint: str, epochs: int) -> _Progress:
    """The progress restored from the checkpoint at ``path`` when it is one of this run, else a fresh one."""
    if path is None or not path.exists():
        return _Progress()
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    same_layout = set(ckpt.get("model", {})) == set(trainer.model.state_dict())  # not from older code
    if ckpt.get("fingerprint") != fingerprint or ckpt.get("epoch", 0) > epochs or not same_layout:
        log.warning("ignoring a checkpoint of another run: %s", path)
        return _Progress()
    trainer.load(ckpt)
    log.info("resuming from the checkpoint after epoch %d: %s", ckpt["epoch"], path)
    return _Progress(
        epoch=ckpt["epoch"],
        best_epoch=ckpt["best_epoch"],
        bad=ckpt["bad"],
        stopped=ckpt["stopped"],
        best_score=ckpt["best_score"],
        best_state=ckpt["best_state"],
        history=list(ckpt["history"]),
    )


def _save_checkpoint(path: Path, fingerprint: str, trainer: _Trainer, progress: _Progress) -> None:
    """Write the trainer's state and the progress after the last epoch, atomically."""
    ckpt = {
        "fingerprint": fingerprint,
        "epoch": progress.epoch,
        **trainer.state(),
        "best_epoch": progress.best_epoch,
        "best_score": progress.best_score,
        "best_state": progress.best_state,
        "bad": progress.bad,
        "stopped": progress.stopped,
        "history": progress.history,
    }
    write_atomic(path, lambda tmp: torch.save(ckpt, tmp))


def _record_epoch(
    progress: _Progress,
    trainer: _Trainer,
    losses: dict[str, float],
    score: float,
    seconds: float,
    patience: int,
) -> EpochInfo:
    """Count the epoch: keep the best weights, decide early stopping, append the history; log it."""
    progress.epoch += 1
    if progress.best_state is None or score > progress.best_score:
        progress.best_score, progress.best_epoch, progress.bad = score, progress.epoch, 0
        progress.best_state = cpu_state(trainer.model)
    else:
        progress.bad += 1
    progress.stopped = patience > 0 and progress.bad >= patience
    weights = [float(w) for w in trainer.weighting.weights()]
    progress.history.append(
        {
            "epoch": progress.epoch,
            "train_losses": losses,
            "valid_score": score,
            "weights": weights,
            "train_seconds": seconds,  # wall clock: metrics.json only, never model_metrics
        }
    )
    return EpochInfo(progress.epoch, losses, score, weights, progress.best_epoch, progress.stopped)


def _on_plateau(progress: _Progress, trainer: _Trainer, plateau: str) -> None:
    """``plateau=hold_embeddings``: after an epoch that did not improve on the best one (and did not
    end the fit), the best epoch's weights come back and the learning rate is multiplied by
    ``plateau_lr_factor``; from the first such epoch on, the embedding tables are held fixed and only
    the layers learn. So each later epoch starts from the best weights with smaller steps, and the
    last one stays near the best (restore-the-best with a reduce-on-plateau schedule). The optimizers'
    moments are kept."""
    if plateau != "hold_embeddings" or progress.bad == 0 or progress.stopped:
        return
    trainer.model.load_state_dict(progress.best_state)  # set: the first epoch counted is the best so far
    trainer.plateaus += 1
    progress.history[-1]["restored_epoch"] = progress.best_epoch
    log.info(
        "epoch %d did not improve: back to epoch %d, tables held, learning rate x%g",
        progress.epoch,
        progress.best_epoch,
        trainer.plateau_lr_factor**trainer.plateaus,
    )


def _log_epoch(info: EpochInfo, epochs: int, samples_per_s: float) -> None:
    log.info(
        "epoch %d/%d: train loss %s, %.0f samples/s, validation mean AUC %.5f, loss weights %s%s",
        info.epoch,
        epochs,
        {t: round(v, 5) for t, v in info.train_losses.items()},
        samples_per_s,
        info.valid_score,
        [round(w, 4) for w in info.loss_weights],
        "; early stop" if info.stop else "",
    )


def _result(
    trainer: _Trainer, progress: _Progress, settings: Settings, resumed_from: int, samples_per_s: float
) -> FitResult:
    history = progress.history
    last_losses = history[-1]["train_losses"] if history else {}
    focal = {"focal_gamma": settings.focal_gamma} if settings.class_balance == "focal" else {}
    return FitResult(
        epochs_trained=len(history),
        best_epoch=progress.best_epoch,
        best_score=progress.best_score,
        train_loss=float(sum(last_losses.values())) if last_losses else float("nan"),
        samples_per_s=samples_per_s,
        history=history,
        weighting={
            **trainer.weighting.describe(),
            "class_balance": settings.class_balance,
            "pos_weight": [round(float(w), 6) for w in trainer.pos_weight],
            **focal,
        },
        resumed_from_epoch=resumed_from,
    )


def fit_model(
    model: torch.nn.Module,
    train: Tensors,
    valid: Tensors3,
    settings: Settings,
    *,
    device: torch.device,
    weighting: LossWeighting | None = None,
    checkpoint_dir: Path | None = None,
    fingerprint: str = "",
    callbacks: Sequence[EpochCallback] = (),
    world: tuple[int, int] = (0, 1),
) -> FitResult:
    """Train ``model`` in place on ``train`` = (cat [N, C], num [N, F], targets [N, T][, weights [N]])
    and leave it with the weights of its best epoch on ``valid`` = (cat, num, labels); see the module
    docstring. ``weights``: each row's importance weight in the task losses (weighted means; the
    down-sampled negatives' 1/rate, :func:`mtl_model.learn.samples.negative_weights`).

    ``settings`` give the epochs, batch size, learning rate, seed, loss (``loss_weighting`` unless a
    ``weighting`` is given; ``class_balance``), ``patience`` and ``bf16``. ``world`` = (rank, world
    size) under ``torchrun``: every process holds the same tensors, walks the same permutation and
    trains on its share (rows ``rank::world``) of each global batch of ``batch_size`` rows;
    ``DistributedDataParallel`` averages the gradients, so a step equals one of a single process on the
    whole batch (up to the order of float sums). Only rank 0 writes checkpoints.
    """
    method = weighting.method if weighting is not None else settings.loss_weighting
    if world[1] > 1 and method in ("gradnorm", "pcgrad"):
        raise ValueError(f"{method} is not supported with DistributedDataParallel (use fixed or uncertainty)")
    data = tuple(t.to(device) for t in train)
    n, tasks = data[0].shape[0], tuple(model.tasks)
    weighting = (weighting if weighting is not None else weighting_from(settings, len(tasks))).to(device)
    epochs = planned_epochs(settings, n)
    if settings.output_bias == "base_rate" and hasattr(model, "start_at_base_rates"):
        _start_at_base_rates(model, data)  # a resumed run's checkpoint replaces it
    trainer = _trainer(model, train[2], settings, weighting, device, world, epochs)
    ckpt_path = checkpoint_dir / CHECKPOINT_FILE if checkpoint_dir is not None else None
    progress = _resume(trainer, ckpt_path, fingerprint, epochs)
    resumed_from, samples, seconds = progress.epoch, 0, 0.0

    while progress.epoch < epochs and not progress.stopped:
        totals, epoch_seconds = trainer.train_epoch(data, settings.batch_size, device, progress.epoch)
        samples, seconds = samples + n, seconds + epoch_seconds  # all ranks together: the job's throughput
        losses = {t: float(v) / max(n, 1) for t, v in zip(tasks, totals.cpu(), strict=True)}
        score = validation_score(model, valid, device)
        info = _record_epoch(progress, trainer, losses, score, epoch_seconds, settings.patience)
        _log_epoch(info, epochs, n / epoch_seconds if epoch_seconds > 0 else float("nan"))
        _on_plateau(progress, trainer, settings.plateau)
        if ckpt_path is not None and world[0] == 0:
            _save_checkpoint(ckpt_path, fingerprint, trainer, progress)
        for callback in callbacks:
            callback(info)

    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    return _result(
        trainer, progress, settings, resumed_from, samples / seconds if seconds > 0 else float("nan")
    )
