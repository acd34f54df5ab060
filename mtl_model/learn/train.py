"""Nightly training of the joint model on the exported training window.

Rows of days before ``ds`` train the model; the rows of ``ds`` itself are held out and cut by user
hash (``test_fraction``, :func:`mtl_model.learn.samples.split_test`) into the **validation** split,
which picks the epoch and the promotion, and the **test** split, on which the night's metrics are
reported: nothing was chosen on it. The result is registered as a model version (see
:mod:`mtl_model.learn.registry`) and its metrics are written to
``<output_dir(ds)>/model_metrics.parquet``. :func:`train` is the step, in phases: read and encode the
window (:func:`_prepare`), build and fit the network (:mod:`mtl_model.learn.fit`, with a checkpoint
per epoch under ``<models_dir>/.checkpoints/<version>/``, removed when training succeeds), evaluate,
measure the references (:mod:`mtl_model.learn.baselines`), register and write the ``model_metrics``
rows (:func:`_publish`). Every option is a :class:`~mtl_model.config.Settings`
field; :mod:`mtl_model.learn.options` says what each means for the network and the version name.

With ``negative_rate`` < 1 the training days' rows with no positive label are down-sampled by a
seeded hash and weighted back by 1/rate in every loss (:mod:`mtl_model.learn.samples`; the day ``ds``
is never sampled); the single-task references train every ``baselines_every``-th night
(:func:`single_task_tonight`).

Determinism: the same inputs, settings and seed give the same weights and the same ``model_metrics``
(deterministic kernels, seeded permutation); wall-clock speed is logged and kept in ``metrics.json``
only.

Evaluation on each split, per task: AUC with its standard error and class counts, GAUC (per-user AUC
weighted by the user's exposures, users with both classes only), log loss, positive rate; among real
exposures only too (``*_views``) when the samples tell them from sampled negatives; the same for the
references of :mod:`mtl_model.learn.baselines`, as extra metric names (see
:mod:`mtl_model.learn.evaluate`). ``model_metrics`` has one set of rows per split (column ``split``).

``python -m mtl_model.learn.train --ds D`` trains one day; under ``torchrun`` the processes train one
model with DistributedDataParallel and rank 0 registers it (see :func:`main`; the nightly step
launches that with ``train_nproc`` > 1, :func:`mtl_model.learn.distributed.launch_train`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import torch

from mtl_model import __version__
from mtl_model.config import Settings
from mtl_model.dates import parse_date
from mtl_model.files import write_parquet_atomic, write_text_atomic
from mtl_model.learn.baselines import reference_metrics
from mtl_model.learn.device import deterministic, resolve_device, torch_threads
from mtl_model.learn.distributed import distributed_world, end_distributed, local_device
from mtl_model.learn.evaluate import (
    BASELINE_SUFFIXES,
    METRICS_SCHEMA,
    EvalSet,
    MetricRow,
    TaskMetrics,
    evaluate,
    mean_aucs,
    mean_finite,
    metrics_frame,
    metrics_rows,
)
from mtl_model.learn.features import Encoders
from mtl_model.learn.fit import EpochCallback, EpochInfo, FitResult, fit_model
from mtl_model.learn.networks import PARAMETER_LAYOUT
from mtl_model.learn.options import (
    TOWER_DIM,
    build_network,
    feature_spec,
    model_kwargs,
    options_fingerprint,
)
from mtl_model.learn.registry import MODEL_FORMAT, Promotion, file_sha256, register, version_name
from mtl_model.learn.samples import (
    POSITION,
    SAMPLE_WEIGHT,
    SAMPLES_FILE,
    esmm_targets,
    labels,
    negative_weights,
    read_split,
    real_exposures,
    split_test,
    without_position,
)

__all__ = [
    "BASELINE_SUFFIXES",
    "METRICS_FILE",
    "METRICS_SCHEMA",
    "TOWER_DIM",
    "EpochCallback",
    "EpochInfo",
    "TrainResult",
    "checkpoint_dir_for",
    "distributed_world",
    "main",
    "train",
]

log = logging.getLogger(__name__)

METRICS_FILE = "model_metrics.parquet"


@dataclass(frozen=True)
class TrainResult:
    """What one training run produced and whether it became the current model."""

    ds: date
    version: str
    model_dir: Path
    metrics_path: Path
    metrics: dict[str, dict[str, float]]  # task -> {"auc", "auc_se", "gauc", …} on the validation split
    mean_auc: float  # on the validation split
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
    test_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # the night's reported metrics
    test_mean_auc: float = float("nan")
    n_test: int = 0
    test_baselines: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Window:
    """The day's training window, read, versioned and encoded."""

    ds: date
    version: str
    fingerprint: dict[str, Any]  # options_fingerprint(settings)
    samples_sha256: str
    train_df: pl.DataFrame  # once encoded only ds, item_id, labels[, sample_weight] (popularity, config)
    encoders: Encoders
    train_tensors: tuple[torch.Tensor, ...]  # cat, num, labels of the training rows[, their weights]
    sets: tuple[EvalSet, ...]  # the validation split, then the test split when there is one
    model_kwargs: dict[str, Any]

    @property
    def valid(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.sets[0].tensors

    @property
    def valid_df(self) -> pl.DataFrame:
        return self.sets[0].df

    @property
    def n_test(self) -> int:
        return sum(es.height for es in self.sets[1:])


def checkpoint_dir_for(settings: Settings, version: str) -> Path:
    """Where the checkpoints of ``version`` live while it trains."""
    return Path(settings.checkpoint_dir or settings.models_dir / ".checkpoints") / version


def _prepare(settings: Settings, ds: date, device: torch.device) -> _Window:
    """Read the window ending at ``ds``, name its version, fit the encoders and encode both splits."""
    tasks = tuple(settings.tasks)
    samples_path = settings.export_dir(ds) / SAMPLES_FILE
    spec = feature_spec(settings)
    train_df, valid_df = read_split(settings, ds, spec)
    if train_df.height == 0 or valid_df.height == 0:
        raise ValueError(
            f"ds={ds}: need training rows (days before ds) and validation rows (day ds) in {samples_path}; "
            f"got n_train={train_df.height}, n_valid={valid_df.height}"
        )
    samples_sha256 = file_sha256(samples_path)
    fingerprint = options_fingerprint(settings)
    version = version_name(settings, ds, samples_sha256, fingerprint)
    log.info(
        "ds=%s version=%s architecture=%s n_train=%d (negative_rate %g) n_valid=%d device=%s",
        ds,
        version,
        settings.architecture,
        train_df.height,
        settings.negative_rate,
        valid_df.height,
        device,
    )
    encoders = Encoders.fit(train_df, spec)
    cat_tr, num_tr = encoders.encode(train_df)
    y_tr = labels(train_df, tasks)
    weights = negative_weights(y_tr, settings.negative_rate)  # None unless negatives were down-sampled
    train_df = train_df.select("ds", "item_id", *tasks)  # once encoded: only popularity and config read it
    if weights is not None:
        train_df = train_df.with_columns(pl.Series(SAMPLE_WEIGHT, weights.numpy()))
    splits = zip(("validation", "test"), split_test(valid_df, settings.test_fraction), strict=True)
    sets = tuple(_eval_set(name, df, encoders, tasks) for name, df in splits if df.height or name != "test")
    if sets[0].height == 0:
        raise ValueError(f"ds={ds}: every user of the day fell in the test split (test_fraction too high?)")
    return _Window(
        ds=ds,
        version=version,
        fingerprint=fingerprint,
        samples_sha256=samples_sha256,
        train_df=train_df,
        encoders=encoders,
        train_tensors=(cat_tr, num_tr, y_tr) if weights is None else (cat_tr, num_tr, y_tr, weights),
        sets=sets,
        model_kwargs=model_kwargs(settings, encoders.spec.categorical, encoders.history_kwargs()),
    )


def _eval_set(split: str, df: pl.DataFrame, encoders: Encoders, tasks: tuple[str, ...]) -> EvalSet:
    """One split of the day, encoded with the training window's encoders; encoded a second time with
    the position left out when the model reads a position and the rows have one (the ``_no_position``
    metrics: as the candidates are scored)."""
    cat, num = encoders.encode(df)
    groups = df.get_column("user_id").cast(pl.String()).fill_null("").to_numpy()
    reads_position = POSITION in (*encoders.spec.categorical, *encoders.spec.numeric)
    unplaced = without_position(df) if reads_position else None
    unplaced_tensors = None if unplaced is None else encoders.encode(unplaced)
    return EvalSet(split, df, cat, num, labels(df, tasks), groups, real_exposures(df), unplaced_tensors)


def train(settings: Settings, ds: date | str, callbacks: Sequence[EpochCallback] = ()) -> TrainResult:
    """Train on the window ending at ``ds``, validate on ``ds``, register and maybe promote.

    ``callbacks`` run after every epoch of the joint model (after its checkpoint), e.g. for progress
    reporting.
    """
    ds = parse_date(ds)
    world = distributed_world()
    device = local_device(resolve_device(settings.device), world[1])
    w = _prepare(settings, ds, device)
    ckpt_dir = checkpoint_dir_for(settings, w.version) if settings.checkpoints else None
    cat_tr, num_tr, y_tr = w.train_tensors[:3]
    tasks = tuple(settings.tasks)

    with deterministic(settings.seed), torch_threads(settings.threads):
        model = build_network(settings, w.encoders, tasks, w.model_kwargs).to(device)
        fit = fit_model(
            model,
            (cat_tr, num_tr, esmm_targets(y_tr, tasks, model.esmm), *w.train_tensors[3:]),
            w.valid,
            settings,
            device=device,
            checkpoint_dir=ckpt_dir,
            fingerprint=w.version,
            callbacks=callbacks,
            world=world,
        )
        if world[0] != 0:  # other ranks only help to train; rank 0 evaluates, registers and publishes
            return _follower_result(settings, w, fit, device)
        metrics = {es.split: evaluate(model, es, device) for es in w.sets}
    model = model.cpu()

    baselines: dict[str, dict[str, TaskMetrics]] = {es.split: {} for es in w.sets}
    if settings.baselines:
        single = single_task_tonight(settings, ds)
        if not single:
            log.info("ds=%s: %s", ds, _single_task_note(settings, ds))
        with torch_threads(settings.threads):
            train_part = (w.train_df, w.train_tensors)
            baselines = reference_metrics(
                settings, ds, w.model_kwargs, w.encoders, train_part, w.sets, device, single_task=single
            )
    return _publish(settings, w, model, fit, metrics, baselines, device, ckpt_dir)


def _publish(
    settings: Settings,
    w: _Window,
    model: torch.nn.Module,
    fit: FitResult,
    metrics: dict[str, TaskMetrics],
    baselines: dict[str, dict[str, TaskMetrics]],
    device: torch.device,
    ckpt_dir: Path | None,
) -> TrainResult:
    """Register the version (maybe promote it: judged on the validation split), drop its checkpoints
    and write ``model_metrics`` (one set of rows per split)."""
    summary = {**_metrics_json(w, fit, metrics, baselines, device), **_training_notes(settings, w.ds)}
    config = _config(settings, w, fit)
    promotion = register(
        settings, w.version, model, w.encoders, config, summary, validation=w.valid_df, ds=w.ds
    )
    if ckpt_dir is not None:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            ckpt_dir.parent.rmdir()  # only when no other version is training
    log.info(
        "version %s promoted=%s: %s (%.0f samples/s on %s)",
        w.version,
        promotion.promoted,
        promotion.reason,
        fit.samples_per_s,
        device.type,
    )
    # model_metrics holds what the data and seed determine; wall-clock speed (samples_per_s) stays in
    # metrics.json and the task log, so a rerun of a day publishes identical tables.
    frames = [
        metrics_frame(
            w.ds,
            w.version,
            metrics_rows(metrics[es.split], baselines[es.split], _summary_rows(w, fit, promotion, es.split)),
            es.split,
        )
        for es in w.sets
    ]
    metrics_path = settings.output_dir(w.ds) / METRICS_FILE
    write_parquet_atomic(pl.concat(frames), metrics_path)
    test = metrics.get("test", {})
    return TrainResult(
        ds=w.ds,
        version=w.version,
        model_dir=settings.models_dir / w.version,
        metrics_path=metrics_path,
        metrics=metrics["validation"],
        mean_auc=summary["mean_auc"],
        n_train=w.train_df.height,
        n_valid=w.valid_df.height,
        samples_per_s=fit.samples_per_s,
        device=device.type,
        promoted=promotion.promoted,
        reason=promotion.reason,
        baselines=baselines["validation"],
        epochs_trained=fit.epochs_trained,
        best_epoch=fit.best_epoch,
        resumed_from_epoch=fit.resumed_from_epoch,
        test_metrics=test,
        test_mean_auc=mean_finite([m["auc"] for m in test.values()]),
        n_test=w.n_test,
        test_baselines=baselines.get("test", {}),
    )


def single_task_tonight(settings: Settings, ds: date) -> bool:
    """Whether the single-task baselines train on ``ds``: ``baselines`` on, and the day's number
    (``date.toordinal``) a multiple of ``baselines_every`` (1: every night)."""
    return settings.baselines and ds.toordinal() % settings.baselines_every == 0


def _single_task_note(settings: Settings, ds: date) -> str:
    """What ``metrics.json`` and the log say of the night's single-task baselines."""
    if not settings.baselines:
        return "off (baselines=false)"
    if single_task_tonight(settings, ds):
        return "trained"
    every = settings.baselines_every
    wait = (every - ds.toordinal() % every) % every
    following = date.fromordinal(ds.toordinal() + wait)
    return f"skipped: single-task baselines train every {every} nights (baselines_every), next on {following}"


def _training_notes(settings: Settings, ds: date) -> dict[str, Any]:
    """The sampling and reference choices of the night, for ``metrics.json``."""
    return {"negative_rate": settings.negative_rate, "single_task_baselines": _single_task_note(settings, ds)}


def _last_epoch_gap(fit: FitResult) -> float:
    """Best epoch's validation score minus the last epoch's (0 when the last is the best)."""
    scores = [h["valid_score"] for h in fit.history]
    return max(scores) - scores[-1] if scores else float("nan")


def _summary_rows(w: _Window, fit: FitResult, promotion: Promotion, split: str) -> list[MetricRow]:
    """The ``model_metrics`` rows of task "all" of ``split`` besides the mean AUCs: the night's
    counts and choices go with the validation split that made them, the test split has its size."""
    if split != "validation":
        return [("all", "n_test", w.n_test)]
    return [
        ("all", "n_train", w.train_df.height),
        ("all", "n_valid", w.valid_df.height),
        ("all", "promoted", float(promotion.promoted)),
        ("all", "epochs_trained", fit.epochs_trained),
        ("all", "best_epoch", fit.best_epoch),
        ("all", "last_epoch_gap", _last_epoch_gap(fit)),
    ]


def _split_json(metrics: TaskMetrics, baselines: dict[str, TaskMetrics], n: int) -> dict[str, Any]:
    """One split in ``metrics.json``: per-task metrics, mean AUCs, references, rows."""
    means = {name: value for _, name, value in mean_aucs(metrics)}
    return {"tasks": metrics, **means, "baselines": baselines, "n": n}


def _metrics_json(
    w: _Window,
    fit: FitResult,
    metrics: dict[str, TaskMetrics],
    baselines: dict[str, dict[str, TaskMetrics]],
    device: torch.device,
) -> dict[str, Any]:
    """The version's ``metrics.json``: the validation split's metrics at the top (what promotion
    compares), the test split's under ``test``, training history and speed."""
    valid = _split_json(metrics["validation"], baselines["validation"], w.valid_df.height)
    test = {"test": _split_json(metrics["test"], baselines["test"], w.n_test)} if "test" in metrics else {}
    return {
        "version": w.version,
        "ds": w.ds.isoformat(),
        "split": "validation",
        **valid,
        **test,
        "n_train": w.train_df.height,
        "n_valid": w.valid_df.height,
        "n_test": w.n_test,
        "train_loss": fit.train_loss,
        "samples_per_s": fit.samples_per_s,
        "device": device.type,
        "epochs_trained": fit.epochs_trained,
        "best_epoch": fit.best_epoch,
        "last_epoch_gap": _last_epoch_gap(fit),
        "history": fit.history,
        "resumed_from_epoch": fit.resumed_from_epoch,
    }


def _config(settings: Settings, w: _Window, fit: FitResult) -> dict[str, Any]:
    """The version's ``config.json``: what rebuilds the network, and what trained it."""
    encoders = w.encoders
    return {
        "version": w.version,
        "ds": w.ds.isoformat(),
        "architecture": settings.architecture,
        "tasks": list(settings.tasks),
        "embedding_dim": settings.embedding_dim,
        "hidden_dims": list(settings.hidden_dims),
        "tower_dim": TOWER_DIM,
        "model": w.model_kwargs,
        "cardinalities": encoders.cardinalities,
        "n_numeric": encoders.n_numeric,
        "numeric_features": list(encoders.spec.numeric),
        "log_numeric_features": [*encoders.spec.log_numeric, *encoders.spec.signed_log_numeric],
        "hashed_features": dict(encoders.hashed),
        "loss_weighting": fit.weighting,
        "sparse_embeddings": settings.sparse_embeddings,
        "early_stopping": {"patience": settings.patience, "best_epoch": fit.best_epoch},
        "options": w.fingerprint,
        "train_window_days": settings.train_window_days,
        "train_start": w.train_df.get_column("ds").min().isoformat(),
        "train_end": w.train_df.get_column("ds").max().isoformat(),
        "validation_day": w.ds.isoformat(),
        "test_fraction": settings.test_fraction,  # users of ds held out from selection (samples.split_test)
        "negative_rate": settings.negative_rate,  # share of the all-zero training rows kept, weighted 1/rate
        "seed": settings.seed,
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "samples_sha256": w.samples_sha256,
        "model_format": MODEL_FORMAT,
        "parameter_layout": PARAMETER_LAYOUT,  # the networks' state-dict layout (older ones convert on load)
        "package_version": __version__,
    }


def _follower_result(settings: Settings, w: _Window, fit: FitResult, device: torch.device) -> TrainResult:
    """What a rank other than 0 reports: it trained, rank 0 evaluates and registers."""
    return TrainResult(
        ds=w.ds,
        version=w.version,
        model_dir=settings.models_dir / w.version,
        metrics_path=settings.output_dir(w.ds) / METRICS_FILE,
        metrics={},
        mean_auc=float("nan"),
        n_train=w.train_df.height,
        n_valid=w.valid_df.height,
        samples_per_s=fit.samples_per_s,
        device=device.type,
        n_test=w.n_test,
        promoted=False,
        reason="not rank 0: rank 0 registers the model",
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
    parser.add_argument("--summary", type=Path, help="rank 0 writes the result here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = train(load_settings(), args.ds)
    rank, world_size = distributed_world()
    if rank == 0:
        out = {
            "version": result.version,
            "promoted": result.promoted,
            "reason": result.reason,
            "mean_auc": result.mean_auc,
            "world_size": world_size,
        }
        print(json.dumps(out))
        if args.summary is not None:  # after register: what the launcher (distributed.launch_train) reads
            write_text_atomic(args.summary, json.dumps(out))
    end_distributed(world_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
