"""Metrics of the held-out day: per-task AUC (with its standard error and class counts) / GAUC / log
loss / positive rate, the score that early stopping follows, and the ``model_metrics`` rows that the
nightly train step publishes.

The day ``ds`` is cut by user hash (:func:`mtl_model.learn.samples.split_test`) into the
**validation** split (it picks the epoch and the promotion) and the **test** split (the night's
reported metrics: nothing was chosen on it). Each split is an :class:`EvalSet`. When the samples tell
real exposures from sampled negatives, every metric is also measured among the real exposures only,
named with the suffix ``_views``. When the rows carry a logged feed position, the models are also
measured with the position left out, as the nightly candidates are scored (they have none), named
with the suffix ``_no_position``: a model that leans on the logged position scores well on the logged
rows and not on the candidates, and this measure tells the two apart.

Metric names in ``model_metrics``: ``<base>[_<reference>][_views|_no_position]``, with ``base`` in
:data:`TASK_METRICS`, ``reference`` in :data:`BASELINE_SUFFIXES`; task ``all``: ``mean_auc``
(``mean_auc_<reference>``, ``mean_auc[_<reference>]_views``, the same with ``_no_position``) and the
night's counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl
import torch

from mtl_model.learn.metrics import NO_POSITION, SUFFIXES, VIEWS, auc, auc_standard_error, gauc, log_loss
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
SPLITS = ("validation", "test")  # validation: picks the epoch and the promotion; test: reported
# the per-task metrics; a reference writes all but the class counts and the positive rate (the rows')
TASK_METRICS = ("auc", "auc_se", "n_pos", "n_neg", "gauc", "logloss", "positive_rate")
_ROW_METRICS = ("n_pos", "n_neg", "positive_rate")

TaskMetrics = dict[str, dict[str, float]]  # task -> {"auc", "auc_se", "n_pos", …}, "_views" keys too
MetricRow = tuple[str, str, float]  # (task, metric, value)


@dataclass(frozen=True)
class EvalSet:
    """One split of the day ``ds``, encoded: what the metrics are measured on."""

    split: str  # one of SPLITS
    df: pl.DataFrame
    cat: torch.Tensor
    num: torch.Tensor
    y: torch.Tensor  # labels [N, T]
    groups: np.ndarray  # the user of each row (GAUC)
    real: np.ndarray | None = None  # real exposures (bool [N]); None: no sampled negatives to leave out
    unplaced: tuple[torch.Tensor, torch.Tensor] | None = None  # cat, num with the position left out

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.cat, self.num, self.y

    @property
    def height(self) -> int:
        return int(self.y.shape[0])


def set_metrics(
    es: EvalSet,
    tasks: Sequence[str],
    probs: dict[str, np.ndarray],
    unplaced: dict[str, np.ndarray] | None = None,
) -> TaskMetrics:
    """The metrics of the predictions ``probs`` (task -> [N]) on ``es``: on all rows, among the real
    exposures (keys with ``_views``) when ``es.real`` is given, and of the predictions ``unplaced``
    made with the position left out (keys with ``_no_position``, all rows, no class counts: they are
    the rows'). Tasks not in ``probs`` are left out."""
    labels = es.y.numpy()
    out: TaskMetrics = {}
    for i, task in enumerate(tasks):
        if task not in probs:
            continue
        p = np.asarray(probs[task])
        out[task] = task_metrics(labels[:, i], p, es.groups)
        if es.real is not None:
            views = task_metrics(labels[es.real, i], p[es.real], es.groups[es.real])
            out[task] |= {k + VIEWS: v for k, v in views.items()}
        if unplaced is not None and task in unplaced:
            plain = task_metrics(labels[:, i], np.asarray(unplaced[task]), es.groups)
            out[task] |= {k + NO_POSITION: v for k, v in plain.items() if k not in _ROW_METRICS}
    return out


def evaluate(model: torch.nn.Module, es: EvalSet, device: torch.device) -> TaskMetrics:
    """The model's metrics on ``es`` (see :func:`set_metrics`): as logged, and with the position left
    out when ``es.unplaced`` is given."""
    probs = predict_proba(model, es.cat, es.num, device=device)
    unplaced = None
    if es.unplaced is not None:
        unplaced = {t: v.numpy() for t, v in predict_proba(model, *es.unplaced, device=device).items()}
    return set_metrics(es, tuple(model.tasks), {t: v.numpy() for t, v in probs.items()}, unplaced)


def task_metrics(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray | None) -> dict[str, float]:
    """The metrics of one task's predictions ``probs`` against its 0/1 ``labels`` (see
    :data:`TASK_METRICS`; ``auc_se``: Hanley–McNeil)."""
    y = np.asarray(labels).astype(bool)
    n_pos = int(y.sum())
    out = {"auc": auc(labels, probs)}
    out["auc_se"] = float(auc_standard_error(out["auc"], n_pos, y.size - n_pos))
    out["n_pos"], out["n_neg"] = float(n_pos), float(y.size - n_pos)
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


def _suffix(name: str) -> str:
    """The name's last part among :data:`SUFFIXES` ("" when none)."""
    return next((sfx for sfx in SUFFIXES if name.endswith(sfx)), "")


def metric_name(base: str, reference: str = "") -> str:
    """``auc`` + ``single_task`` → ``auc_single_task``; ``auc_views`` + ``single_task`` →
    ``auc_single_task_views`` (the ``_views`` or ``_no_position`` suffix stays last)."""
    suffix = _suffix(base)
    return base.removesuffix(suffix) + (f"_{reference}" if reference else "") + suffix


def mean_aucs(metrics: TaskMetrics, reference: str = "") -> list[MetricRow]:
    """Task ``all``: ``mean_auc`` (with the reference's suffix) and, when measured, ``mean_auc_views``
    and ``mean_auc_no_position``."""
    rows = [("all", metric_name("mean_auc", reference), mean_finite([m["auc"] for m in metrics.values()]))]
    for suffix in SUFFIXES:
        values = [m["auc" + suffix] for m in metrics.values() if "auc" + suffix in m]
        if values:
            rows.append(("all", metric_name("mean_auc" + suffix, reference), mean_finite(values)))
    return rows


def metrics_rows(
    metrics: TaskMetrics, baselines: dict[str, TaskMetrics], summary: Sequence[MetricRow]
) -> list[MetricRow]:
    """The ``model_metrics`` rows of one split: the model's metrics per task, the references' with
    their suffix (no class counts or positive rate: those are the rows'), its mean AUCs, ``summary``
    (task "all") and each reference's mean AUCs."""
    rows = [(t, k, v) for t, m in metrics.items() for k, v in m.items()]
    for name, per_task in baselines.items():
        rows += [
            (t, metric_name(k, name), v)
            for t, m in per_task.items()
            for k, v in m.items()
            if k.removesuffix(_suffix(k)) not in _ROW_METRICS
        ]
    rows += mean_aucs(metrics)
    rows += list(summary)
    for name, per_task in baselines.items():
        rows += mean_aucs(per_task, name)
    return rows


def metrics_frame(
    ds: date, version: str, rows: Sequence[MetricRow], split: str = "validation"
) -> pl.DataFrame:
    """``model_metrics`` rows (task, metric, value) of one ``split`` as the published schema.

    Undefined values (e.g. AUC on a day without positives) are written as null, not NaN.
    """
    return pl.DataFrame(
        {
            "ds": [ds] * len(rows),
            "model_version": [version] * len(rows),
            "task": [r[0] for r in rows],
            "metric": [r[1] for r in rows],
            "value": [float(r[2]) if math.isfinite(float(r[2])) else None for r in rows],
            "split": [split] * len(rows),
        },
        schema=METRICS_SCHEMA,
    )
