"""Validation-day metrics: per-task AUC / GAUC / log loss / positive rate, the score that early
stopping follows, and the ``model_metrics`` rows that the nightly train step publishes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

import numpy as np
import polars as pl
import torch

from mtl_model.learn.metrics import auc, gauc, log_loss
from mtl_model.learn.networks import predict_proba

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

TaskMetrics = dict[str, dict[str, float]]  # task -> {"auc", "gauc", "logloss", "positive_rate"}
MetricRow = tuple[str, str, float]  # (task, metric, value)


def evaluate(
    model: torch.nn.Module,
    cat: torch.Tensor,
    num: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    groups: np.ndarray | None = None,
) -> TaskMetrics:
    """AUC, GAUC (when ``groups``, the user of each row, is given), log loss and positive rate per task."""
    probs = predict_proba(model, cat, num, device=device)
    labels = y.numpy()
    return {
        task: task_metrics(labels[:, i], probs[task].numpy(), groups) for i, task in enumerate(model.tasks)
    }


def task_metrics(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray | None) -> dict[str, float]:
    """The metrics of one task's predictions ``probs`` against its 0/1 ``labels``."""
    out = {"auc": auc(labels, probs)}
    if groups is not None:
        out["gauc"] = gauc(labels, probs, groups)
    out["logloss"] = log_loss(labels, probs)
    out["positive_rate"] = float(labels.mean()) if len(labels) else float("nan")
    return out


def mean_finite(values: Sequence[float]) -> float:
    """Mean of the finite values (nan when there is none)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def validation_score(
    model: torch.nn.Module, valid: tuple[torch.Tensor, torch.Tensor, torch.Tensor], device: torch.device
) -> float:
    """Mean AUC over tasks with a finite AUC; minus the mean log loss when no task has one."""
    cat, num, y = valid
    probs = predict_proba(model, cat, num, device=device)
    labels = y.numpy()
    aucs = [auc(labels[:, i], probs[t].numpy()) for i, t in enumerate(model.tasks)]
    score = mean_finite(aucs)
    if math.isfinite(score):
        return score
    return -float(np.mean([log_loss(labels[:, i], probs[t].numpy()) for i, t in enumerate(model.tasks)]))


def metrics_rows(
    metrics: TaskMetrics, baselines: dict[str, TaskMetrics], summary: Sequence[MetricRow]
) -> list[MetricRow]:
    """The ``model_metrics`` rows: the model's metrics per task, the references' with their suffix
    (no positive rate: it is the model's), ``summary`` (task "all") and each reference's mean AUC."""
    rows = [(t, k, v) for t, m in metrics.items() for k, v in m.items()]
    for name, per_task in baselines.items():
        rows += [
            (t, f"{k}_{name}", v) for t, m in per_task.items() for k, v in m.items() if k != "positive_rate"
        ]
    rows += list(summary)
    rows += [
        ("all", f"mean_auc_{name}", mean_finite([m["auc"] for m in per_task.values()]))
        for name, per_task in baselines.items()
    ]
    return rows


def metrics_frame(ds: date, version: str, rows: Sequence[MetricRow]) -> pl.DataFrame:
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
