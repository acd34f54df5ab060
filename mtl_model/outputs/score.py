"""Scoring: candidates of day ``ds`` → current joint model → fused score → top-K items per user.

Fused score: ``p_click ** a * p_purchase ** b * price ** c`` (``fusion_click_weight``,
``fusion_purchase_weight``, ``fusion_price_weight``); a factor whose task the model lacks counts as 1,
and a model with neither click nor purchase ranks by the product of its task probabilities. Every
candidate is scored in the list's scene (``recommend_scene``, default ``home``; why: the section
"Recommendation lists against the simulator's truth" of docs/benchmarks.md). With ``recommend_scene``
empty each candidate keeps its own scene and a (user, item) pair keeps its best row. At most
``max_per_category`` items of one category per list (0: no cap); ties broken by ``item_id``, ``scene``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from mtl_model.config import Settings
from mtl_model.dates import parse_date
from mtl_model.files import write_parquet_atomic
from mtl_model.learn.device import resolve_device
from mtl_model.learn.networks import predict_proba
from mtl_model.learn.registry import load_as_of

log = logging.getLogger(__name__)

CANDIDATES_FILE = "candidates.parquet"
RECOMMENDATIONS_FILE = "recommendations.parquet"
PREDICT_BATCH = 65536
SCORE_CHUNK = 8 * PREDICT_BATCH  # candidate rows read, encoded and scored at once (bounds the memory)
RECOMMENDATIONS_SCHEMA = {
    "ds": pl.Date(),
    "user_id": pl.String(),
    "rank": pl.Int32(),
    "item_id": pl.String(),
    "score": pl.Float64(),
    "p_click": pl.Float64(),
    "p_cart": pl.Float64(),
    "p_purchase": pl.Float64(),
    "scene": pl.String(),
    "model_version": pl.String(),
}
PROB_TASKS = ("click", "cart", "purchase")


def fused_score(
    tasks: tuple[str, ...], click_weight: float, purchase_weight: float, price_weight: float = 0.0
) -> pl.Expr:
    """Polars expression for the fused score over the ``p_<task>`` columns (and ``price``)."""
    factors = []
    if "click" in tasks:
        factors.append(pl.col("p_click").pow(click_weight))
    if "purchase" in tasks:
        factors.append(pl.col("p_purchase").pow(purchase_weight))
    if not factors:
        factors = [pl.col(f"p_{t}") for t in tasks if t in PROB_TASKS] or [pl.lit(1.0)]
    if price_weight:
        factors.append(pl.col("price").fill_null(0.0).clip(lower_bound=0.0).pow(price_weight))
    expr = factors[0]
    for factor in factors[1:]:
        expr = expr * factor
    return expr.cast(pl.Float64())


def top_k(scored: pl.DataFrame, k: int, max_per_category: int = 0) -> pl.DataFrame:
    """Best ``k`` distinct items per user by descending score (ties: item_id, scene), with ``rank`` 1..k,
    at most ``max_per_category`` of one ``category_id`` per user when that is > 0 (null categories
    are not capped)."""
    best = scored.sort(
        ["user_id", "score", "item_id", "scene"], descending=[False, True, False, False], nulls_last=True
    ).unique(subset=["user_id", "item_id"], keep="first", maintain_order=True)
    if max_per_category > 0 and "category_id" in best.columns:
        in_category = pl.int_range(pl.len()).over(["user_id", "category_id"]) + 1
        best = best.filter((in_category <= max_per_category) | pl.col("category_id").is_null())
    return best.with_columns(
        (pl.int_range(pl.len()).over("user_id") + 1).cast(pl.Int32()).alias("rank")
    ).filter(pl.col("rank") <= k)


def _read_chunks(reader: pq.ParquetFile, rows: int) -> Iterator[pl.DataFrame]:
    """The Parquet file's rows, ``rows`` at a time (one empty frame with its columns if it has none)."""
    empty = True
    for batch in reader.iter_batches(batch_size=rows):
        empty = False
        yield pl.from_arrow(batch)
    if empty:
        yield pl.from_arrow(reader.schema_arrow.empty_table())


def _score_chunks(settings: Settings, reader: pq.ParquetFile, model, encoders, device) -> pl.DataFrame:
    """Every candidate of ``reader`` with its p_<task>, in chunks of SCORE_CHUNK rows: the wide
    candidate rows (every feature) are never all in memory, only the narrow scored ones; chunks are
    multiples of PREDICT_BATCH, so the model sees the same batches as in one pass."""
    names = reader.schema_arrow.names
    tasks = tuple(model.tasks)
    list_scene = settings.recommend_scene if "scene" in names else ""  # one list per user, for one scene
    scene = pl.col("scene").cast(pl.String()) if "scene" in names else pl.lit(None, pl.String())
    extra = [pl.col(c) for c in ("category_id", "price") if c in names]
    parts: list[pl.DataFrame] = []
    for chunk in _read_chunks(reader, SCORE_CHUNK):
        candidates = chunk.drop_nulls(["user_id", "item_id"])
        if list_scene:
            candidates = candidates.with_columns(
                pl.lit(list_scene).cast(chunk.schema["scene"]).alias("scene")
            )
        cat, num = encoders.encode(candidates)
        probs = predict_proba(model, cat, num, batch_size=PREDICT_BATCH, device=device)
        parts.append(
            candidates.select(
                pl.col("user_id").cast(pl.String()),
                pl.col("item_id").cast(pl.String()),
                scene.alias("scene"),
                *extra,
            ).with_columns(
                pl.Series(f"p_{t}", probs[t].numpy(), dtype=pl.Float64())
                if t in tasks
                else pl.lit(None, pl.Float64()).alias(f"p_{t}")
                for t in PROB_TASKS
            )
        )
    return pl.concat(parts, rechunk=True)


def score(settings: Settings, ds: date | str) -> Path:
    """Score ``candidates.parquet`` of ``ds`` with the CURRENT model; write and return recommendations."""
    ds = parse_date(ds)
    path = settings.export_dir(ds) / CANDIDATES_FILE
    if not path.exists():
        raise FileNotFoundError(f"scoring candidates for ds={ds} not found: {path}")
    model, encoders, version = load_as_of(settings, ds)  # the model that serves ds, never a later one
    device = resolve_device(settings.device)
    model.to(device)
    reader = pq.ParquetFile(path)
    missing = [c for c in ("user_id", "item_id") if c not in reader.schema_arrow.names]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}")
    scored = _score_chunks(settings, reader, model, encoders, device)
    price_weight = settings.fusion_price_weight if "price" in scored.columns else 0.0
    fused = fused_score(
        tuple(model.tasks), settings.fusion_click_weight, settings.fusion_purchase_weight, price_weight
    )
    recs = top_k(scored.with_columns(fused.alias("score")), settings.top_k, settings.max_per_category)
    recs = recs.with_columns(
        pl.lit(ds, pl.Date()).alias("ds"), pl.lit(version, pl.String()).alias("model_version")
    )
    recs = recs.select([pl.col(c).cast(t) for c, t in RECOMMENDATIONS_SCHEMA.items()]).sort(
        ["user_id", "rank"]
    )
    out = write_parquet_atomic(recs, settings.output_dir(ds) / RECOMMENDATIONS_FILE)
    log.info(
        "ds=%s model=%s: %d recommendations for %d users",
        ds,
        version,
        recs.height,
        recs["user_id"].n_unique(),
    )
    return out
