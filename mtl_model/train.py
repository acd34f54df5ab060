"""Nightly training of the joint model on the exported training window.

Rows of days before ``ds`` train the model; the rows of ``ds`` itself are the held-out validation
day. The result is registered as a model version (see :mod:`mtl_model.registry`) and its metrics
are written to ``<output_dir(ds)>/model_metrics.parquet``.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from mtl_model import __version__
from mtl_model.config import Settings
from mtl_model.features import Encoders, FeatureSpec
from mtl_model.metrics import auc, log_loss
from mtl_model.models import build_model, predict_proba
from mtl_model.registry import MODEL_FORMAT, file_sha256, register, version_name

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.parquet"
METRICS_FILE = "model_metrics.parquet"
TOWER_DIM = 32
METRICS_SCHEMA = {
    "ds": pl.Date(),
    "model_version": pl.String(),
    "task": pl.String(),
    "metric": pl.String(),
    "value": pl.Float64(),
    "split": pl.String(),
}


@dataclass(frozen=True)
class TrainResult:
    """What one training run produced and whether it became the current model."""

    ds: date
    version: str
    model_dir: Path
    metrics_path: Path
    metrics: dict[str, dict[str, float]]  # task -> {"auc", "logloss", "positive_rate"} on the validation day
    mean_auc: float
    n_train: int
    n_valid: int
    samples_per_s: float
    device: str
    promoted: bool
    reason: str


def as_date(ds: date | str) -> date:
    """Accept a ``date`` or an ISO ``YYYY-MM-DD`` string."""
    return ds if isinstance(ds, date) else date.fromisoformat(str(ds))


def resolve_device(setting: str) -> torch.device:
    """``cuda`` when available and allowed (``auto`` or ``cuda``), else CPU (with a warning for ``cuda``)."""
    if setting not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {setting!r}")
    if setting != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    if setting == "cuda":
        log.warning("device=cuda requested but CUDA is not available; training on CPU")
    return torch.device("cpu")


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch and numpy and force deterministic kernels; restores the previous mode afterwards."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by cuBLAS in deterministic mode
    previous = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def read_samples(settings: Settings, ds: date) -> pl.DataFrame:
    """Samples of the training window ``[ds - train_window_days + 1, ds]`` with ``ds`` as a Date column."""
    path = settings.export_dir(ds) / SAMPLES_FILE
    if not path.exists():
        raise FileNotFoundError(f"training samples for ds={ds} not found: {path}")
    df = pl.read_parquet(path)
    missing = [c for c in ("ds", *settings.tasks) if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing} (tasks configured: {list(settings.tasks)})")
    if df.schema["ds"] == pl.String():
        df = df.with_columns(pl.col("ds").str.to_date())
    elif df.schema["ds"] != pl.Date():
        df = df.with_columns(pl.col("ds").cast(pl.Date()))
    start = ds - timedelta(days=settings.train_window_days - 1)
    return df.filter(pl.col("ds").is_between(start, ds))


def _labels(df: pl.DataFrame, tasks: tuple[str, ...]) -> torch.Tensor:
    arr = df.select(pl.col(t).fill_null(0).clip(0, 1).cast(pl.Float32()) for t in tasks).to_numpy()
    arr = np.require(arr, dtype=np.float32, requirements=["C", "W"]).reshape(len(df), len(tasks))
    return torch.from_numpy(arr)


def _fit(
    settings: Settings,
    model: torch.nn.Module,
    cat: torch.Tensor,
    num: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
) -> tuple[float, float]:
    """Adam on the BCE-with-logits summed over tasks. Returns (last epoch mean loss, samples/s)."""
    tasks = tuple(settings.tasks)
    cat, num, y = cat.to(device), num.to(device), y.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    generator = torch.Generator().manual_seed(settings.seed)
    n, bs = cat.shape[0], settings.batch_size
    model.train()
    epoch_loss = float("nan")
    start = time.perf_counter()
    for epoch in range(settings.epochs):
        perm = torch.randperm(n, generator=generator).to(device)
        total = torch.zeros((), device=device)
        for lo in range(0, n, bs):
            idx = perm[lo : lo + bs]
            logits = model(cat[idx], num[idx])
            yb = y[idx]
            loss = sum(F.binary_cross_entropy_with_logits(logits[t], yb[:, i]) for i, t in enumerate(tasks))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * idx.shape[0]
        epoch_loss = float(total) / n
        log.info("epoch %d/%d: train loss %.5f", epoch + 1, settings.epochs, epoch_loss)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return epoch_loss, n * settings.epochs / max(elapsed, 1e-9)


def evaluate(
    model: torch.nn.Module, cat: torch.Tensor, num: torch.Tensor, y: torch.Tensor, device: torch.device
) -> dict[str, dict[str, float]]:
    """AUC, log loss and positive rate per task."""
    probs = predict_proba(model, cat, num, device=device)
    labels = y.numpy()
    out: dict[str, dict[str, float]] = {}
    for i, task in enumerate(model.tasks):
        p = probs[task].numpy()
        out[task] = {
            "auc": auc(labels[:, i], p),
            "logloss": log_loss(labels[:, i], p),
            "positive_rate": float(labels[:, i].mean()) if len(labels) else float("nan"),
        }
    return out


def write_parquet_atomic(df: pl.DataFrame, path: Path) -> None:
    """Write ``df`` to a temporary file next to ``path``, then ``os.replace`` it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    df.write_parquet(tmp)
    os.replace(tmp, path)


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


def train(settings: Settings, ds: date | str) -> TrainResult:
    """Train on the window ending at ``ds``, validate on ``ds``, register and maybe promote."""
    ds = as_date(ds)
    tasks = tuple(settings.tasks)
    samples_path = settings.export_dir(ds) / SAMPLES_FILE
    df = read_samples(settings, ds)
    train_df = df.filter(pl.col("ds") < ds)
    valid_df = df.filter(pl.col("ds") == ds)
    if train_df.height == 0 or valid_df.height == 0:
        raise ValueError(
            f"ds={ds}: need training rows (days before ds) and validation rows (day ds) in {samples_path}; "
            f"got n_train={train_df.height}, n_valid={valid_df.height}"
        )
    device = resolve_device(settings.device)
    samples_sha256 = file_sha256(samples_path)
    version = version_name(settings, ds, samples_sha256)
    log.info(
        "ds=%s version=%s n_train=%d n_valid=%d device=%s",
        ds,
        version,
        train_df.height,
        valid_df.height,
        device,
    )

    encoders = Encoders.fit(train_df, FeatureSpec())
    cat_tr, num_tr = encoders.encode(train_df)
    cat_va, num_va = encoders.encode(valid_df)
    y_tr, y_va = _labels(train_df, tasks), _labels(valid_df, tasks)

    with deterministic(settings.seed):
        model = build_model(
            settings.architecture,
            encoders.cardinalities,
            encoders.n_numeric,
            tasks,
            embedding_dim=settings.embedding_dim,
            hidden_dims=settings.hidden_dims,
            tower_dim=TOWER_DIM,
        ).to(device)
        train_loss, samples_per_s = _fit(settings, model, cat_tr, num_tr, y_tr, device)
        task_metrics = evaluate(model, cat_va, num_va, y_va, device)

    finite = [m["auc"] for m in task_metrics.values() if math.isfinite(m["auc"])]
    mean = float(np.mean(finite)) if finite else float("nan")
    metrics: dict[str, Any] = {
        "version": version,
        "ds": ds.isoformat(),
        "split": "validation",
        "tasks": task_metrics,
        "mean_auc": mean,
        "n_train": train_df.height,
        "n_valid": valid_df.height,
        "train_loss": train_loss,
        "samples_per_s": samples_per_s,
        "device": device.type,
    }
    config: dict[str, Any] = {
        "version": version,
        "ds": ds.isoformat(),
        "architecture": settings.architecture,
        "tasks": list(tasks),
        "embedding_dim": settings.embedding_dim,
        "hidden_dims": list(settings.hidden_dims),
        "tower_dim": TOWER_DIM,
        "cardinalities": encoders.cardinalities,
        "n_numeric": encoders.n_numeric,
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
        "package_version": __version__,
    }
    promotion = register(settings, version, model, encoders, config, metrics)
    log.info(
        "version %s promoted=%s: %s (%.0f samples/s on %s)",
        version,
        promotion.promoted,
        promotion.reason,
        samples_per_s,
        device.type,
    )

    # model_metrics holds what the data and seed determine; wall-clock speed (samples_per_s) stays in
    # metrics.json and the task log, so a rerun of a day publishes identical tables.
    rows = [(t, k, v) for t, m in task_metrics.items() for k, v in m.items()]
    rows += [
        ("all", "mean_auc", mean),
        ("all", "n_train", train_df.height),
        ("all", "n_valid", valid_df.height),
        ("all", "promoted", float(promotion.promoted)),
    ]
    metrics_path = settings.output_dir(ds) / METRICS_FILE
    write_parquet_atomic(metrics_frame(ds, version, rows), metrics_path)
    return TrainResult(
        ds=ds,
        version=version,
        model_dir=settings.models_dir / version,
        metrics_path=metrics_path,
        metrics=task_metrics,
        mean_auc=mean,
        n_train=train_df.height,
        n_valid=valid_df.height,
        samples_per_s=samples_per_s,
        device=device.type,
        promoted=promotion.promoted,
        reason=promotion.reason,
    )
