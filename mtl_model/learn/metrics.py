"""Evaluation metrics on numpy arrays, vectorised (no per-row Python)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

# the last part of a metric name in model_metrics, after the reference (read by the report too)
VIEWS = "_views"  # among real exposures (view-only sources)
NO_POSITION = "_no_position"  # with the logged position left out, as the candidates are scored
SUFFIXES = (VIEWS, NO_POSITION)


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve by ranks (Mann-Whitney U), tied scores get their average rank.

    Returns ``nan`` when the labels hold only one class (or nothing).
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} != {s.shape[0]}")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    # average 1-based rank of each distinct score: last rank of the group minus half its extra width
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = avg_rank[inverse.ravel()][y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels: ArrayLike, probs: ArrayLike, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities ``probs`` (clipped to [eps, 1-eps]); nan if empty."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1.0 - eps)
    if y.shape != p.shape:
        raise ValueError(f"labels and probs differ in length: {y.shape[0]} != {p.shape[0]}")
    if y.size == 0:
        return float("nan")
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def gauc(labels: ArrayLike, scores: ArrayLike, groups: ArrayLike) -> float:
    """Group AUC: the AUC within each group (user), averaged with the group's row count as weight.

    Only groups holding both classes count (Zhou et al. 2018, KDD, "Deep Interest Network"). Ties get
    their average rank within the group, as in :func:`auc`. ``groups`` may be any hashable labels
    (strings or integer codes). Returns ``nan`` when no group has both classes.
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} != {s.shape[0]}")
    _, g = np.unique(np.asarray(groups).ravel(), return_inverse=True)
    g = g.ravel()
    if g.shape != y.shape:
        raise ValueError(f"labels and groups differ in length: {y.shape[0]} != {g.shape[0]}")
    if y.size == 0:
        return float("nan")
    order = np.lexsort((s, g))  # by group, then score
    gs, ss, ys = g[order], s[order], y[order]
    n = y.size
    pos = np.arange(n)
    group_start = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]])
    start_of_row = group_start[np.searchsorted(group_start, pos, side="right") - 1]
    # runs of equal (group, score): average the 1-based in-group ranks of the run
    run_start = np.flatnonzero(np.r_[True, (gs[1:] != gs[:-1]) | (ss[1:] != ss[:-1])])
    run_end = np.r_[run_start[1:], n]
    run_of_row = np.repeat(np.arange(run_start.size), run_end - run_start)
    avg_rank = ((run_start + run_end - 1) / 2.0)[run_of_row] - start_of_row + 1.0
    n_groups = group_start.size
    gi = np.repeat(np.arange(n_groups), np.diff(np.r_[group_start, n]))
    n_pos = np.bincount(gi, weights=ys, minlength=n_groups)
    n_all = np.bincount(gi, minlength=n_groups).astype(np.float64)
    n_neg = n_all - n_pos
    rank_sum = np.bincount(gi, weights=avg_rank * ys, minlength=n_groups)
    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        return float("nan")
    aucs = (rank_sum[valid] - n_pos[valid] * (n_pos[valid] + 1) / 2.0) / (n_pos[valid] * n_neg[valid])
    return float(np.average(aucs, weights=n_all[valid]))


def auc_standard_error(auc_value: ArrayLike, n_pos: ArrayLike, n_neg: ArrayLike) -> np.ndarray:
    """Standard error of an AUC from its value and class counts (Hanley & McNeil 1982, Radiology 143,
    eq. 2): with Q1 = A / (2 − A) and Q2 = 2A² / (1 + A),

        SE² = (A(1 − A) + (n_pos − 1)(Q1 − A²) + (n_neg − 1)(Q2 − A²)) / (n_pos · n_neg).

    Closed form, elementwise over arrays (one AUC or many); ``nan`` where the AUC is not finite or a
    class is empty. It assumes exponential score distributions, which is close for most AUCs; an
    AUC of 1 or 0 gets 0.
    """
    a = np.asarray(auc_value, dtype=np.float64)
    p = np.asarray(n_pos, dtype=np.float64)
    n = np.asarray(n_neg, dtype=np.float64)
    q1 = a / (2.0 - a)
    q2 = 2.0 * a * a / (1.0 + a)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (a * (1.0 - a) + (p - 1.0) * (q1 - a * a) + (n - 1.0) * (q2 - a * a)) / (p * n)
    ok = np.isfinite(a) & (p > 0) & (n > 0)
    return np.where(ok, np.sqrt(np.clip(var, 0.0, None)), np.nan)
