"""Anomalous users and items of a day (detector ``joint-model-z-v1``): behaviour features and the joint
model's surprise at the day's counts, combined into one score with human-readable reasons.

The specification (features, the model's count z, how the parts combine, the fallback without a
model) is ``docs/anomalies.md``. Reads ``exports/run_date=D/{user,item}_activity.parquet`` and
``samples.parquet``; writes ``outputs/ds=D/anomalies.parquet``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from mtl_model.config import Settings
from mtl_model.files import write_parquet_atomic
from mtl_model.learn.features import Encoders

log = logging.getLogger(__name__)

DETECTOR_VERSION = "joint-model-z-v1"
NO_MODEL = "no-model"
Z_THRESHOLD = 3.0
Z_CAP = 10.0  # one reason adds at most this much: several independent reasons outrank one huge one
# the model is not perfect: on thousands of exposures a 20% calibration error is "improbable"; a model
# reason also needs the count at least this many times above (or below) what the model expected
MODEL_RATIO = 2.0
NEW_ACCOUNT_DAYS = 30
_TINY = 1e-300  # tail probabilities are floored here, so |z| <= ~37 instead of inf

# feature name → polars expression over user_day_activity; large values are suspicious
USER_FEATURES: dict[str, pl.Expr] = {
    "clicks": pl.col("clicks").cast(pl.Float64),
    "click_rate": pl.col("clicks") / pl.max_horizontal(pl.col("impressions"), 1),
    "sessions": pl.col("sessions").cast(pl.Float64),
    "clicks_without_purchase": pl.when(pl.col("purchases") == 0)
    .then(pl.col("clicks"))
    .otherwise(0)
    .cast(pl.Float64),
    "click_timing_regularity": pl.when(pl.col("clicks") >= 5)
    .then(1.0 / (1.0 + pl.col("std_click_gap_s") / pl.max_horizontal(pl.col("mean_click_gap_s"), 1e-9)))
    .otherwise(None),
    "purchases": pl.col("purchases").cast(pl.Float64),
    "new_account_spend": pl.when(pl.col("account_age_days") <= NEW_ACCOUNT_DAYS)
    .then(pl.col("spend"))
    .otherwise(0.0)
    .cast(pl.Float64),
}
# behaviour feature → the model task whose count it measures (see _combine and _counts)
USER_TASK_COUNTS = {"clicks": "click", "clicks_without_purchase": "click", "purchases": "purchase"}
ITEM_TASK_COUNTS = {"ctr_jump": "click", "ctr_drop": "click"}

OUTPUT_SCHEMA = {
    "ds": pl.Date,
    "entity_type": pl.String,
    "entity_id": pl.String,
    "score": pl.Float64,
    "rank": pl.Int32,
    "reasons": pl.String,
    "model_version": pl.String,
}


def detector_version(model_version: str | None) -> str:
    """The ``model_version`` column: ``<detector>+<joint model version>``, or ``<detector>+no-model``."""
    return f"{DETECTOR_VERSION}+{model_version or NO_MODEL}"


# ---------------------------------------------------------------- the model's view


def count_z(observed: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Signed z of counts against their expectation under the model (vectorised, float64).

    ``observed[i] = Σ y``, ``expected[i] = λ = Σ p`` over an entity's exposures; the count is taken as
    Poisson(λ) and z is the probit of its mid-p tail (+ more than expected, − fewer; see
    docs/anomalies.md). Tails: ``P(N >= k) = gammainc(k, λ)``, ``P(N <= k) = gammaincc(k + 1, λ)``.
    """
    n = observed.to(torch.float64)
    lam = expected.to(torch.float64).clamp(min=1e-12)
    ge_n = torch.where(n > 0, torch.special.gammainc(n.clamp(min=1.0), lam), torch.ones_like(lam))
    gt_n = torch.special.gammainc(n + 1.0, lam)
    le_n = torch.special.gammaincc(n + 1.0, lam)
    lt_n = torch.where(n > 0, torch.special.gammaincc(n.clamp(min=1.0), lam), torch.zeros_like(lam))
    upper = 0.5 * (ge_n + gt_n)  # mid-p upper tail; the lower one is 1 - upper, computed without loss
    lower = 0.5 * (le_n + lt_n)
    return torch.where(
        upper < lower,
        -torch.special.ndtri(upper.clamp(min=_TINY)),
        torch.special.ndtri(lower.clamp(min=_TINY)),
    )


def exposure_probabilities(model: nn.Module, encoders: Encoders, exposures: pl.DataFrame) -> pl.DataFrame:
    """Per exposure: ``user_id``, ``item_id``, and per task of the model ``y_<task>`` (observed, 0/1) and
    ``p_<task>`` (the model's probability). Under ESMM a post-click task's label is click ∧ label, the
    event the model's (unconditional) probability is about, as in training."""
    from mtl_model.learn.networks import predict_proba
    from mtl_model.learn.samples import esmm_targets

    tasks = tuple(t for t in model.tasks if t in exposures.columns)
    cat, num = encoders.encode(exposures)
    probs = predict_proba(model, cat, num)
    labels = exposures.select(pl.col(t).fill_null(0).clip(0, 1).cast(pl.Float32) for t in tasks).to_numpy()
    labels = np.require(labels, dtype=np.float32, requirements=["C", "W"]).reshape(len(exposures), len(tasks))
    y = esmm_targets(torch.from_numpy(labels), tasks, getattr(model, "esmm", False))
    return exposures.select(
        pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)
    ).with_columns(
        *[pl.Series(f"y_{t}", y[:, i].numpy()).cast(pl.Int64) for i, t in enumerate(tasks)],
        *[pl.Series(f"p_{t}", probs[t].numpy()) for t in tasks],
    )


def entity_evidence(scored: pl.DataFrame, key: str, known: Collection[str] = ()) -> pl.DataFrame:
    """Per entity (``key``: user_id or item_id) of :func:`exposure_probabilities`' rows: ``exposures``,
    per task ``n_<task>`` (observed), ``expected_<task>`` (``Σ p``) and ``mz_<task>`` (:func:`count_z`),
    and ``known`` (the entity is in ``known``, i.e. the model has its own embedding for it).

    Sums run in row order per entity (``np.bincount``), so a rerun gives the same floats."""
    tasks = [c.removeprefix("p_") for c in scored.columns if c.startswith("p_")]
    scored = scored.filter(pl.col(key).is_not_null())
    codes = scored.select(pl.col(key).rank("dense").cast(pl.Int64) - 1).to_series().to_numpy()
    ids = scored.get_column(key).unique().sort()
    columns: dict[str, object] = {"entity_id": ids, "exposures": np.bincount(codes, minlength=len(ids))}
    for t in tasks:
        n = np.bincount(codes, weights=scored.get_column(f"y_{t}").to_numpy(), minlength=len(ids))
        lam = np.bincount(codes, weights=scored.get_column(f"p_{t}").to_numpy(), minlength=len(ids))
        columns[f"n_{t}"] = n.astype(np.int64)
        columns[f"expected_{t}"] = lam
        columns[f"mz_{t}"] = count_z(torch.from_numpy(n), torch.from_numpy(lam)).numpy()
    known_ids = pl.Series("known", list(known), dtype=pl.String)
    return pl.DataFrame(columns).with_columns(pl.col("entity_id").is_in(known_ids.implode()).alias("known"))


@dataclass(frozen=True)
class ModelEvidence:
    """The joint model's view of one day: per user and per item, what it expected and how surprising
    the day was (frames of :func:`entity_evidence`)."""

    version: str
    users: pl.DataFrame
    items: pl.DataFrame


def real_exposures(exposures: pl.DataFrame) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """(the rows of ``samples.parquet`` a user really saw, the tasks they say nothing about).

    Sampled negatives (``exposure = 'sampled'``, view-only sources) were never shown: counting them
    would turn "views" into a click-through rate over items nobody saw. Without impressions (a
    view-only day) every real exposure is a view, so the click task carries no surprise and is left
    out; cart, fav and purchase stay. Samples without the ``exposure`` column are taken as they are."""
    if "exposure" not in exposures.columns:
        return exposures, ()
    real = exposures.filter(pl.col("exposure").fill_null("sampled") != "sampled")
    shown = real.get_column("exposure").eq("impression").any()
    return real, () if shown else ("click",)


def model_evidence(
    model: nn.Module, encoders: Encoders, version: str, exposures: pl.DataFrame
) -> ModelEvidence:
    """Score the day's labelled ``exposures`` (rows of ``samples.parquet``) with ``model``; aggregate.
    Only real exposures count (:func:`real_exposures`)."""
    exposures, silent = real_exposures(exposures)
    scored = exposure_probabilities(model, encoders, exposures)
    scored = scored.drop([c for t in silent for c in (f"y_{t}", f"p_{t}") if c in scored.columns])
    return ModelEvidence(
        version=version,
        users=entity_evidence(scored, "user_id", encoders.vocabs.get("user_id", ())),
        items=entity_evidence(scored, "item_id", encoders.vocabs.get("item_id", ())),
    )


def load_model_evidence(settings: Settings, ds: date) -> ModelEvidence:
    """The evidence of the model that serves ``ds`` on its exposures; raises if there is none."""
    from mtl_model.learn.registry import load_as_of
    from mtl_model.learn.samples import read_samples

    model, encoders, version = load_as_of(settings, ds)
    exposures = read_samples(settings, ds, days=1)
    if exposures.is_empty():
        raise ValueError(f"no exposures of ds={ds} in the samples export")
    return model_evidence(model, encoders, version, exposures)


# ---------------------------------------------------------------- scoring


def _robust_z(name: str) -> pl.Expr:
    x = pl.col(name)
    med = x.median()
    mad = (x - med).abs().median() * 1.4826
    scale = pl.when(mad > 0).then(mad).otherwise(pl.when(x.std() > 0).then(x.std()).otherwise(1.0))
    return ((x - med) / scale).fill_null(0.0).fill_nan(0.0).alias(f"z_{name}")


def _join_evidence(feats: pl.DataFrame, evidence: pl.DataFrame | None) -> tuple[pl.DataFrame, list[str]]:
    """The behaviour features with the model's per-task columns (if any), and the model's tasks."""
    if evidence is None:
        return feats.with_columns(pl.lit(False).alias("known")), []
    tasks = [c.removeprefix("mz_") for c in evidence.columns if c.startswith("mz_")]
    joined = feats.join(evidence, on="entity_id", how="left").with_columns(
        pl.col("known").fill_null(False), *[pl.col(f"mz_{t}").fill_nan(0.0).fill_null(0.0) for t in tasks]
    )
    return joined, tasks


def _surprising(task: str) -> pl.Expr:
    """The model finds the entity's count of ``task`` improbable (``|z| > Z_THRESHOLD``) and off by at
    least a factor ``MODEL_RATIO`` (counts smoothed by ½, so that zero counts compare)."""
    ratio = (pl.col(f"n_{task}") + 0.5) / (pl.col(f"expected_{task}") + 0.5)
    far = (ratio >= MODEL_RATIO) | (ratio <= 1.0 / MODEL_RATIO)
    return (pl.col(f"mz_{task}").abs() > Z_THRESHOLD) & far.fill_null(False)


def _counts(name: str, task_counts: Mapping[str, str], tasks: list[str], trusted: pl.Expr) -> pl.Expr:
    """Whether behaviour z ``z_<name>`` counts: above the threshold and not explained by the model (the
    model knows the entity, is ``trusted`` for it, and did not find the outcome surprising)."""
    above = pl.col(f"z_{name}") > Z_THRESHOLD
    task = task_counts.get(name)
    if task not in tasks:
        return above
    return above & ~(pl.col("known") & trusted & ~_surprising(task))


def _combine(
    feats: pl.DataFrame,
    behaviour: Mapping[str, pl.Expr],
    task_counts: Mapping[str, str],
    trusted: pl.Expr,
    tasks: list[str],
) -> pl.DataFrame:
    """Add ``score`` and ``reasons`` to ``feats`` (behaviour ``z_<name>`` and the model's ``mz_<task>``).

    ``behaviour``: feature name → its reason text. The rules are in docs/anomalies.md ("One score")."""
    counts = {n: _counts(n, task_counts, tasks, trusted) for n in behaviour}
    parts = {
        n: pl.when(counts[n]).then(pl.col(f"z_{n}").clip(upper_bound=Z_CAP)).otherwise(0.0) for n in behaviour
    }
    reasons = [pl.when(counts[n]).then(text) for n, text in behaviour.items()]
    model_parts = []
    for t in tasks:
        z = pl.col(f"mz_{t}")
        beyond = _surprising(t)
        covered = pl.max_horizontal(pl.lit(0.0), *[parts[n] for n, task in task_counts.items() if task == t])
        model_parts.append(
            pl.when(beyond)
            .then((z.abs().clip(upper_bound=Z_CAP) - covered).clip(lower_bound=0.0))
            .otherwise(0.0)
        )
        reasons.append(
            pl.when(beyond).then(
                pl.format(
                    "{} {}s than the model expected: {} in {} exposures, {} expected (z={})",
                    pl.when(z > 0).then(pl.lit("more")).otherwise(pl.lit("fewer")),
                    pl.lit(t),
                    pl.col(f"n_{t}"),
                    pl.col("exposures"),
                    pl.col(f"expected_{t}").round(1),
                    z.round(1),
                )
            )
        )
    return feats.with_columns(
        score=pl.sum_horizontal([*parts.values(), *model_parts]),
        reasons=pl.concat_str(reasons, separator="; ", ignore_nulls=True),
    )


def _rank(scored: pl.DataFrame, entity_type: str, top_n: int, model_version: str | None) -> pl.DataFrame:
    """Keep entities with a reason, best first, ranked 1..n within the entity type."""
    return (
        scored.filter(pl.col("score") > 0)
        .sort(["score", "entity_id"], descending=[True, False])
        .head(top_n)
        .with_row_index("rank", offset=1)
        .select(
            "ds",
            pl.lit(entity_type).alias("entity_type"),
            "entity_id",
            "score",
            "rank",
            "reasons",
            pl.lit(detector_version(model_version)).alias("model_version"),
        )
        .cast(OUTPUT_SCHEMA)
    )


def score_users(
    activity: pl.DataFrame, top_n: int, evidence: pl.DataFrame | None = None, model_version: str | None = None
) -> pl.DataFrame:
    """Score the users of one day; return the top ``top_n`` with at least one reason.

    ``evidence``: :attr:`ModelEvidence.users` of the model ``model_version``; None = behaviour only."""
    if "account_age_days" not in activity.columns:
        activity = activity.with_columns(pl.lit(None, pl.Int32).alias("account_age_days"))
    feats = activity.select(
        "ds", pl.col("user_id").alias("entity_id"), *[e.alias(n) for n, e in USER_FEATURES.items()]
    )
    feats = feats.with_columns([_robust_z(n) for n in USER_FEATURES])
    medians = {n: feats[n].median() for n in USER_FEATURES}
    feats, tasks = _join_evidence(feats, evidence)
    behaviour = {
        n: pl.format(
            f"{n} {{}} vs typical {medians[n] or 0:.3g} (z={{}})",
            pl.col(n).round(3),
            pl.col(f"z_{n}").round(1),
        )
        for n in USER_FEATURES
    }
    # an extreme click rate that the model finds normal was learned from the user's own past (a bot
    # active all week): then the model explains nothing and the comparison with other users stands
    ordinary_rate = pl.col("z_click_rate") <= Z_THRESHOLD
    scored = _combine(feats, behaviour, USER_TASK_COUNTS, ordinary_rate, tasks)
    return _rank(scored, "user", top_n, model_version if evidence is not None else None)


def score_items(
    activity: pl.DataFrame, top_n: int, evidence: pl.DataFrame | None = None, model_version: str | None = None
) -> pl.DataFrame:
    """Score the items of one day against their own trailing CTR (and the model); return the top ``top_n``.

    ``evidence``: :attr:`ModelEvidence.items` of the model ``model_version``; None = behaviour only."""
    p0 = pl.col("ctr_trailing_7d").clip(1e-4, 1 - 1e-4)
    expected = pl.col("exposures") * p0
    binomial_z = (pl.col("clicks") - expected) / (expected * (1 - p0)).sqrt()
    top_user_clicks = (pl.col("top_user_click_share").fill_null(0) * pl.col("clicks")).alias(
        "top_user_clicks"
    )
    feats = activity.with_columns(
        pl.col("item_id").alias("entity_id"),
        binomial_z.alias("z_ctr_jump"),
        (-binomial_z).alias("z_ctr_drop"),
        expected.alias("expected_clicks"),
        top_user_clicks,
    ).with_columns(_robust_z("top_user_clicks"))
    feats, tasks = _join_evidence(feats, evidence)
    behaviour = {
        "ctr_jump": pl.format(
            "CTR {} vs {} over the last 7 days ({} clicks, {} expected; z={})",
            pl.col("ctr").round(3),
            pl.col("ctr_trailing_7d").round(3),
            pl.col("clicks"),
            pl.col("expected_clicks").round(1),
            pl.col("z_ctr_jump").round(1),
        ),
        "ctr_drop": pl.format(
            "{} clicks in {} exposures, {} expected: broken tracking? (z={})",
            pl.col("clicks"),
            pl.col("exposures"),
            pl.col("expected_clicks").round(1),
            pl.col("z_ctr_drop").round(1),
        ),
        "top_user_clicks": pl.format(
            "{} of its clicks from one user (z={})",
            pl.col("top_user_clicks"),
            pl.col("z_top_user_clicks").round(1),
        ),
    }
    scored = _combine(feats, behaviour, ITEM_TASK_COUNTS, pl.lit(True), tasks)
    return _rank(scored, "item", top_n, model_version if evidence is not None else None)


@dataclass(frozen=True)
class Detection:
    """Where the day's anomalies were written, and which joint model (if any) took part."""

    path: Path
    model_version: str | None  # None: behaviour only (see ``note``)
    note: str

    @property
    def detector(self) -> str:
        """The value of the ``model_version`` column."""
        return detector_version(self.model_version)


def detect_day(settings: Settings, ds: date, use_model: bool = True) -> Detection:
    """Write ``outputs/ds=D/anomalies.parquet`` for the day (users and items).

    With ``use_model`` the current promoted model's evidence is combined with the behaviour features;
    when it cannot be had (no model yet, unreadable model, no samples), behaviour only, never an error.
    """
    users = pl.read_parquet(settings.export_dir(ds) / "user_activity.parquet")
    items = pl.read_parquet(settings.export_dir(ds) / "item_activity.parquet")
    if users.is_empty():
        raise ValueError(f"no active users in the export of ds={ds}")
    evidence: ModelEvidence | None = None
    note = "behaviour only (model not asked for)"
    if use_model:
        try:
            evidence = load_model_evidence(settings, ds)
            note = f"behaviour + joint model {evidence.version}"
        except Exception as exc:  # noqa: BLE001 - the night never fails for the model's sake
            note = f"behaviour only: no usable current model ({type(exc).__name__}: {exc})"
            log.warning("ds=%s anomalies: %s", ds, note)
    version = evidence.version if evidence else None
    result = pl.concat(
        [
            score_users(
                users.with_columns(pl.col("ds").cast(pl.Date)),
                settings.anomaly_top_n,
                evidence.users if evidence else None,
                version,
            ),
            score_items(
                items.with_columns(pl.col("ds").cast(pl.Date)),
                settings.anomaly_top_n,
                evidence.items if evidence else None,
                version,
            ),
        ]
    )
    out = write_parquet_atomic(result, settings.output_dir(ds) / "anomalies.parquet")
    return Detection(path=out, model_version=version, note=note)


def evaluate(anomalies: pl.DataFrame, truth: pl.DataFrame, ds: date, k: int) -> pl.DataFrame:
    """Quality against planted truth (simulated data) for one day, per entity type and kind.

    ``truth``: rows (entity_type, entity_id, kind, ds) of the entities planted as anomalous.
    Returns rows (ds, entity_type, kind, metric, value): ``precision_at_k`` (share of the top ``k``
    flagged that are planted, any kind; kind = "all"), ``precision`` and ``flagged`` over every flagged
    entity, and per kind ``recall`` (share of the day's
    planted entities of that kind flagged at all) and ``recall_at_k`` (… flagged within the top k)."""
    day_truth = truth.filter(pl.col("ds") == ds).unique(["entity_type", "entity_id", "kind"])
    planted = (
        day_truth.select("entity_type", "entity_id").unique().with_columns(pl.lit(True).alias("planted"))
    )
    flagged = anomalies.filter(pl.col("ds") == ds).select("entity_type", "entity_id", "rank")
    rows: list[dict] = []
    for entity_type in sorted(set(flagged["entity_type"]) | set(day_truth["entity_type"])):
        top = flagged.filter((pl.col("entity_type") == entity_type) & (pl.col("rank") <= k))
        hits = top.join(planted, on=["entity_type", "entity_id"], how="left")["planted"].fill_null(False)
        if top.height:
            rows.append(
                {
                    "entity_type": entity_type,
                    "kind": "all",
                    "metric": "precision_at_k",
                    "value": float(hits.mean()),
                }
            )
        every = flagged.filter(pl.col("entity_type") == entity_type)
        if every.height:
            right = every.join(planted, on=["entity_type", "entity_id"], how="left")["planted"].fill_null(
                False
            )
            for metric, value in (("precision", float(right.mean())), ("flagged", float(every.height))):
                rows.append({"entity_type": entity_type, "kind": "all", "metric": metric, "value": value})
        found = day_truth.filter(pl.col("entity_type") == entity_type).join(
            flagged, on=["entity_type", "entity_id"], how="left"
        )
        for kind, group in found.group_by("kind", maintain_order=True):
            ranks = group["rank"]
            rows.append(
                {
                    "entity_type": entity_type,
                    "kind": kind[0],
                    "metric": "recall",
                    "value": float(ranks.is_not_null().mean()),
                }
            )
            rows.append(
                {
                    "entity_type": entity_type,
                    "kind": kind[0],
                    "metric": "recall_at_k",
                    "value": float((ranks.fill_null(k + 1) <= k).mean()),
                }
            )
    schema = {"entity_type": pl.String, "kind": pl.String, "metric": pl.String, "value": pl.Float64}
    return pl.DataFrame(rows, schema=schema).with_columns(pl.lit(ds).alias("ds")).select("ds", *schema)
