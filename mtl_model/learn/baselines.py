"""Reference points for the joint model's validation metrics (written to ``model_metrics``).

* **popularity**: each item's rate of each task over the training days, smoothed towards the global
  rate with ``prior_strength`` pseudo-exposures: ``(positives_i + m · rate) / (exposures_i + m)``;
  items not in the training days get the global rate. For purchase this is the unconditional
  (CTCVR-like) rate per exposure, which is what the joint model publishes as ``p_purchase``.
* **single_task**: the same architecture and capacity trained on one task alone (fixed loss weight,
  no ESMM), with the nightly loop and the settings of the joint model.
* **truth** (simulated data only): the simulator's true per-exposure probabilities, the best AUC any
  model can reach on that day (a ceiling, not a model). The samples carry ``exposure_id`` =
  md5(session_id|user_id|item_id|scene) (see ``dbt_project/models/marts/interactions.sql``) while the
  truth is keyed by the impression's ``event_id``; the join goes through the landing-zone events of
  the day, recomputing ``exposure_id`` with DuckDB's ``md5`` exactly as dbt does. When the truth,
  the events or ``exposure_id`` is missing, or fewer than ``TRUTH_MIN_COVERAGE`` of the validation
  rows match, the ceiling is skipped (logged), never guessed.

:func:`reference_metrics` measures all three on each split of the day (validation and test; the nightly
train step calls it), among real exposures too where the samples tell them apart, and the first two
with the logged position left out where the rows have one (``_no_position``; the truth is the logged
exposures' probability, position and all, so it has no such measure).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from mtl_model.config import Settings
from mtl_model.files import glob_literal
from mtl_model.learn.device import deterministic
from mtl_model.learn.evaluate import EvalSet, TaskMetrics, set_metrics
from mtl_model.learn.features import Encoders
from mtl_model.learn.fit import fit_model
from mtl_model.learn.networks import predict_proba
from mtl_model.learn.options import build_network
from mtl_model.learn.weighting import make_weighting

log = logging.getLogger(__name__)

POPULARITY_PRIOR_STRENGTH = 20.0
TRUTH_MIN_COVERAGE = 0.99
TRUTH_COLUMNS = {"click": "p_click", "cart": "p_cart", "purchase": "p_purchase"}


def popularity_scores(
    train_df: pl.DataFrame,
    valid_df: pl.DataFrame,
    tasks: tuple[str, ...],
    prior_strength: float = POPULARITY_PRIOR_STRENGTH,
) -> dict[str, pl.Series]:
    """Smoothed item rate of each task from ``train_df``, looked up for every row of ``valid_df``."""
    # rows count by their ``sample_weight`` when the training negatives were down-sampled (samples.py)
    weighted = "sample_weight" in train_df.columns
    w = pl.col("sample_weight") if weighted else pl.lit(1.0)
    n = w.sum() if weighted else pl.len()
    labels = [pl.col(t).fill_null(0).clip(0, 1).cast(pl.Float64()) * w for t in tasks]
    overall = train_df.select((lab.sum() / n).alias(t) for lab, t in zip(labels, tasks, strict=True))
    rate = {t: float(v) if v is not None else 0.0 for t, v in zip(tasks, overall.row(0), strict=True)}
    per_item = train_df.group_by("item_id").agg(
        n.alias("_n"), *(lab.sum().alias(f"_pos_{t}") for lab, t in zip(labels, tasks, strict=True))
    )
    smoothed = per_item.select(
        "item_id",
        *(
            ((pl.col(f"_pos_{t}") + prior_strength * rate[t]) / (pl.col("_n") + prior_strength)).alias(t)
            for t in tasks
        ),
    )
    joined = valid_df.select("item_id").join(smoothed, on="item_id", how="left", maintain_order="left")
    return {t: joined.get_column(t).fill_null(rate[t]) for t in tasks}


def truth_probabilities(
    landing_events: str, truth_file: str, valid_df: pl.DataFrame, tasks: tuple[str, ...]
) -> dict[str, pl.Series] | None:
    """True probabilities per validation row (in ``valid_df`` order), or None when they cannot be joined.

    ``landing_events``: a Parquet glob of the day's landing events; ``truth_file``: the simulator's
    ``truth/exposures/ds=D/part-0.parquet``.
    """
    wanted = {t: TRUTH_COLUMNS[t] for t in tasks if t in TRUTH_COLUMNS}
    if "exposure_id" not in valid_df.columns or not wanted:
        log.info("truth ceiling skipped: samples have no exposure_id or no task with a true probability")
        return None
    from mtl_model.duck import connect  # only here: the trainer never needs DuckDB otherwise

    landing_events, truth_file = (p.replace("'", "''") for p in (landing_events, truth_file))
    with connect() as con:
        truth_cols = con.sql(f"select * from read_parquet('{truth_file}') limit 0").columns
        present = {t: c for t, c in wanted.items() if c in truth_cols}
        if not present:
            return None
        select = ", ".join(f"arg_min(t.{c}, e.event_time) as {c}" for c in present.values())
        truth = con.sql(
            f"""
            select md5(concat_ws('|', e.session_id, e.user_id, e.item_id, coalesce(e.scene, 'unknown')))
                       as exposure_id,
                   {select}
            from read_parquet('{landing_events}') as e
            join read_parquet('{truth_file}') as t using (event_id)
            where e.event_type = 'impression'
            group by all
            """
        ).pl()
    joined = valid_df.select("exposure_id").join(truth, on="exposure_id", how="left", maintain_order="left")
    coverage = 1.0 - joined.get_column(next(iter(present.values()))).null_count() / max(joined.height, 1)
    if coverage < TRUTH_MIN_COVERAGE:
        log.info("truth ceiling skipped: only %.1f%% of the validation rows matched", 100 * coverage)
        return None
    return {t: joined.get_column(c).fill_null(joined.get_column(c).mean()) for t, c in present.items()}


def truth_paths(home: Path, landing_dir: Path, ds: date) -> tuple[str, str] | None:
    """(landing events glob, truth file) of day ``ds`` when both exist, else None."""
    truth_file = home / "truth" / "exposures" / f"ds={ds}" / "part-0.parquet"
    events_dir = landing_dir / "events" / f"ds={ds}"
    if not truth_file.exists() or not events_dir.is_dir() or not any(events_dir.glob("*.parquet")):
        return None
    return f"{glob_literal(events_dir)}/*.parquet", str(truth_file)


def reference_metrics(
    settings: Settings,
    ds: date,
    model_kwargs: dict[str, Any],
    encoders: Encoders,
    train: tuple[pl.DataFrame, tuple[torch.Tensor, ...]],
    sets: Sequence[EvalSet],
    device: torch.device,
    single_task: bool = True,
) -> dict[str, dict[str, TaskMetrics]]:
    """Metrics of the references on each split of the day: split -> name -> task -> metrics
    (``single_task=False``: no single-task models that night, see ``baselines_every``).

    ``train``: the training rows and their encoded (cat, num, labels); ``sets``: the splits of the day,
    the first one (validation) picking the single-task models' epochs, as it does the joint model's.
    """
    tasks = tuple(settings.tasks)
    train_df, train_tensors = train
    out: dict[str, dict[str, TaskMetrics]] = {es.split: {} for es in sets}
    for es in sets:
        pop = {t: s.to_numpy() for t, s in popularity_scores(train_df, es.df, tasks).items()}
        # the rates do not read the position: left out, it changes nothing of them
        out[es.split]["popularity"] = set_metrics(es, tasks, pop, pop if es.unplaced is not None else None)
    if single_task:
        single = _single_task_probs(settings, model_kwargs, encoders, train_tensors, sets, device)
        for es, (probs, unplaced) in zip(sets, single, strict=True):
            out[es.split]["single_task"] = set_metrics(es, tasks, probs, unplaced)
    for es in sets:
        truth = _truth_probs(settings, ds, es.df)
        if truth is not None:
            out[es.split]["truth"] = set_metrics(es, tasks, truth)
    return out


def _single_task_probs(
    settings: Settings,
    model_kwargs: dict[str, Any],
    encoders: Encoders,
    train_tensors: tuple[torch.Tensor, ...],
    sets: Sequence[EvalSet],
    device: torch.device,
) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]]:
    """One model per task: the joint model's architecture and settings, one fixed-weight loss, no
    ESMM, its epoch picked on ``sets[0]``; its predictions on every set: as logged, and with the
    position left out (None when the set has no ``unplaced`` encoding)."""
    cat_tr, num_tr, y_tr = train_tensors[:3]
    selection = sets[0]
    probs = [({}, None if es.unplaced is None else {}) for es in sets]
    for i, task in enumerate(settings.tasks):
        with deterministic(settings.seed):
            model = build_network(settings, encoders, (task,), {**model_kwargs, "esmm": False}).to(device)
            fit_model(
                model,
                (cat_tr, num_tr, y_tr[:, i : i + 1], *train_tensors[3:]),  # [3:]: the rows' weights
                (selection.cat, selection.num, selection.y[:, i : i + 1]),
                settings,
                device=device,
                weighting=make_weighting("fixed", 1),
            )
            for (logged, unplaced), es in zip(probs, sets, strict=True):
                logged[task] = predict_proba(model, es.cat, es.num, device=device)[task].numpy()
                if unplaced is not None:
                    unplaced[task] = predict_proba(model, *es.unplaced, device=device)[task].numpy()
    return probs


def _truth_probs(settings: Settings, ds: date, rows: pl.DataFrame) -> dict[str, np.ndarray] | None:
    """The simulator's true probabilities of ``rows`` (task -> [N]), or None when not available."""
    tasks = tuple(settings.tasks)
    paths = truth_paths(settings.home, settings.landing_dir, ds)
    if paths is None:
        log.info("truth ceiling skipped: no simulator truth or landing events for ds=%s", ds)
        return None
    try:
        truth = truth_probabilities(*paths, rows, tasks)
    except Exception as exc:  # noqa: BLE001 - the ceiling is optional, never fails a night
        log.warning("truth ceiling skipped: %s", exc)
        return None
    return None if truth is None else {t: v.to_numpy() for t, v in truth.items()}
