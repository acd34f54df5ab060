"""Scoring: candidates of day ``ds`` → current joint model → fused score → top-K items per user.

Fused score: ``p_click ** a * p_purchase ** b * price ** c`` (``fusion_click_weight``,
``fusion_purchase_weight``, ``fusion_price_weight``); a factor whose task the model lacks counts as 1,
and a model with neither click nor purchase ranks by the product of its task probabilities. Every
candidate is scored in the list's scene (``recommend_scene``, default ``home``; why: the section
"Recommendation lists against the simulator's truth" of docs/benchmarks.md). With ``recommend_scene``
empty each candidate keeps its own scene and a (user, item) pair keeps its best row. At most
``max_per_category`` items of one category per list (0: no cap); ties broken by ``item_id``, ``scene``.

With ``retrieval=two_tower`` the candidates of the learned source (written by night D's train step,
:mod:`mtl_model.learn.retrieval`) join the dbt ones: a pair the dbt sources offered too keeps its row
and gains the source bit ``RETRIEVAL_BIT`` in ``source_mask``; every other pair gets a row built
from the day's exports with the features ``scoring_candidates`` would have joined
(:func:`retrieval_rows`), so the model scores both alike, and one (user, item) pair is one row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import date
from itertools import chain
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from mtl_model.config import Settings
from mtl_model.dates import parse_date
from mtl_model.files import write_parquet_atomic
from mtl_model.hashing import bucket
from mtl_model.learn.device import resolve_device
from mtl_model.learn.networks import predict_proba
from mtl_model.learn.registry import RETRIEVAL_CANDIDATES_FILE, load_as_of, retrieval_dir

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
# source_mask bits: the dbt sources (scoring_candidates.sql) 1 popular, 2 affinity, 4 covisit, 8 recent
SOURCE_BITS = {"popular": 1, "affinity": 2, "covisit": 4, "recent": 8, "retrieval": 16}
RETRIEVAL_BIT = SOURCE_BITS["retrieval"]
ITEMS_EXPORT = "scoring_items.parquet"  # in-stock items of D with their item features
USER_CATEGORIES_EXPORT = "scoring_user_categories.parquet"  # active users' user × category features
USER_PREFIXES = ("f_u_", "hist_")  # candidate columns that depend on the user alone
PARTS_DIR = "score_parts"  # outputs/ds=D/score_parts/part-<k>-of-<K>.parquet, until merged
PART_SEED = 20261202  # the user hash that cuts the users into TANDEM_SCORE_PARTS slices
UC_CTR_PRIOR = 0.1  # f_uc_ctr_30d with no exposure: smoothed_rate's prior in user_category_features.sql


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


def retrieval_offered(settings: Settings, ds: date) -> pl.DataFrame:
    """The learned source's (user_id, item_id, retrieval_rank) of night ``ds`` (train writes them)."""
    path = retrieval_dir(settings, ds) / RETRIEVAL_CANDIDATES_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"retrieval={settings.retrieval} but night ds={ds} wrote no retrieval candidates ({path}): "
            "run the train step for the day with the setting on"
        )
    return pl.read_parquet(path, columns=["user_id", "item_id", "retrieval_rank"])


def uc_no_events() -> list[pl.Expr]:
    """The user × category features of a pair with no ``user_category_features`` row (no event in its
    30 days), as the ``uc_no_events`` fill of ``training_samples`` / ``scoring_candidates`` sets them:
    counts 0, click share 0 when the user clicked anything, CTR the smoothed prior (0.1), the
    related categories' taste (``f_uc_related_30d``) 0."""
    return [
        pl.col("f_uc_clicks_30d", "f_uc_purchases_30d").fill_null(0.0),
        pl.col("f_uc_click_share_30d").fill_null(pl.when(pl.col("f_u_clicks_30d") > 0).then(0.0)),
        pl.col("f_uc_ctr_30d").fill_null(UC_CTR_PRIOR),
        pl.col("f_uc_related_30d").fill_null(0.0),
    ]


def retrieval_rows(settings: Settings, ds: date, offered: pl.DataFrame) -> pl.DataFrame:
    """Candidate rows, with the columns and types of ``candidates.parquet``, for the ``offered`` pairs
    that the dbt sources did not offer. The features are those ``scoring_candidates`` joins as of D
    (``feature_joins``, ``feature_columns``): the user's columns (``f_u_*``, ``hist_*``) from the
    user's candidate rows, the item's from ``scoring_items``, the user × category ones from
    ``scoring_user_categories`` (where the user has none: :func:`uc_no_events`, as the SQL), no query (so no
    ``f_qc_*``), ``f_x_price_vs_user_level`` as the SQL computes it. Users without a candidate row
    (no user columns) get no retrieval rows; ``source_mask`` is ``RETRIEVAL_BIT`` and
    ``best_source_rank`` the retrieval rank."""
    folder = settings.export_dir(ds)
    candidates = pl.scan_parquet(folder / CANDIDATES_FILE)
    schema = candidates.collect_schema()
    key = [pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)]
    user_columns = [c for c in schema.names() if c.startswith(USER_PREFIXES)]
    users = candidates.select(key[0], *user_columns).unique("user_id", keep="any")
    items = pl.scan_parquet(folder / ITEMS_EXPORT).with_columns(key[1], pl.col("category_id").cast(pl.String))
    user_categories = pl.scan_parquet(folder / USER_CATEGORIES_EXPORT).with_columns(
        key[0], pl.col("category_id").cast(pl.String)
    )
    avg_price = pl.col("f_u_avg_clicked_price_30d")
    rows = (
        offered.lazy()
        .with_columns(*key)
        .join(candidates.select(*key), on=["user_id", "item_id"], how="anti")
        .join(users, on="user_id", how="inner")
        .join(items, on="item_id", how="inner")
        .join(user_categories, on=["user_id", "category_id"], how="left")
        .with_columns(
            pl.lit("home").alias("scene"),
            pl.lit(RETRIEVAL_BIT).alias("source_mask"),
            pl.col("retrieval_rank").alias("best_source_rank"),
            pl.when(avg_price != 0).then(pl.col("price") / avg_price).alias("f_x_price_vs_user_level"),
        )
        .with_columns(uc_no_events() if "f_uc_clicks_30d" in schema.names() else [])
        .sort("user_id", "item_id")
        .collect()
    )
    return rows.select(
        pl.col(c).cast(t) if c in rows.columns else pl.lit(None).cast(t).alias(c) for c, t in schema.items()
    )


def _slices(frame: pl.DataFrame, rows: int) -> Iterator[pl.DataFrame]:
    for start in range(0, frame.height, rows):
        yield frame.slice(start, rows)


def _score_chunks(
    settings: Settings, chunks: Iterable[pl.DataFrame], names: list[str], model, encoders, device
) -> pl.DataFrame:
    """Every candidate of ``chunks`` (frames with the columns ``names``) with its p_<task>, in chunks
    of SCORE_CHUNK rows: the wide candidate rows (every feature) are never all in memory, only the
    narrow scored ones; chunks are multiples of PREDICT_BATCH, so the model sees the same batches as
    in one pass."""
    tasks = tuple(model.tasks)
    list_scene = settings.recommend_scene if "scene" in names else ""  # one list per user, for one scene
    scene = pl.col("scene").cast(pl.String()) if "scene" in names else pl.lit(None, pl.String())
    extra = [pl.col(c) for c in ("category_id", "price", "source_mask") if c in names]
    parts: list[pl.DataFrame] = []
    for chunk in chunks:
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


def mark_offered(scored: pl.DataFrame, offered: pl.DataFrame) -> pl.DataFrame:
    """``scored`` with ``RETRIEVAL_BIT`` set in ``source_mask`` on the pairs of ``offered``."""
    flag = offered.select(
        pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String), pl.lit(True).alias("_offered")
    ).unique(["user_id", "item_id"])
    mask = scored.schema["source_mask"]
    return (
        scored.join(flag, on=["user_id", "item_id"], how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col("_offered"))
            .then(pl.col("source_mask").cast(pl.Int32) | RETRIEVAL_BIT)
            .otherwise(pl.col("source_mask").cast(pl.Int32))
            .cast(mask)
            .alias("source_mask")
        )
        .drop("_offered")
    )


def user_part(parts: int) -> pl.Expr:
    """The slice (0 .. parts-1) of each row's user: :func:`mtl_model.hashing.bucket` of ``user_id``
    (as text) with :data:`PART_SEED`, so that every candidate of one user lands in one slice, on every
    worker and with every library version."""

    def part(users: pl.Series) -> pl.Series:
        return pl.Series(bucket(users, parts, PART_SEED))

    user = pl.col("user_id").cast(pl.String())
    return user.map_batches(part, return_dtype=pl.Int64(), is_elementwise=True)


def part_path(settings: Settings, ds: date, part: int) -> Path:
    parts = settings.score_parts
    return settings.output_dir(ds) / PARTS_DIR / f"part-{part}-of-{parts}.parquet"


def score(settings: Settings, ds: date | str, part: int | None = None) -> Path:
    """Score ``candidates.parquet`` of ``ds`` with the model that serves ``ds``; write and return the
    recommendations. With ``part`` (0 .. ``score_parts`` - 1) only the users of that slice
    (:func:`user_part`), into :func:`part_path`; :func:`merge_parts` then writes the day's table,
    equal to the one an unsliced run writes."""
    ds = parse_date(ds)
    if part is not None and not 0 <= part < settings.score_parts:
        raise ValueError(f"part {part} is not one of the {settings.score_parts} TANDEM_SCORE_PARTS")
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
    names = reader.schema_arrow.names
    chunks: Iterable[pl.DataFrame] = _read_chunks(reader, SCORE_CHUNK)
    offered = None
    if settings.retrieval != "off":
        offered = retrieval_offered(settings, ds)
        chunks = chain(chunks, _slices(retrieval_rows(settings, ds, offered), SCORE_CHUNK))
    if part is not None:
        chunks = (c.filter(user_part(settings.score_parts) == part) for c in chunks)
    scored = _score_chunks(settings, chunks, names, model, encoders, device)
    if offered is not None and "source_mask" in scored.columns:
        scored = mark_offered(scored, offered)
    price_weight = settings.fusion_price_weight if "price" in scored.columns else 0.0
    fused = fused_score(
        tuple(model.tasks), settings.fusion_click_weight, settings.fusion_purchase_weight, price_weight
    )
    recs = top_k(scored.with_columns(fused.alias("score")), settings.top_k, settings.max_per_category)
    if offered is not None and "source_mask" in recs.columns:
        from_retrieval = recs.filter((pl.col("source_mask") & RETRIEVAL_BIT) > 0).height
        only = recs.filter(pl.col("source_mask") == RETRIEVAL_BIT).height
        log.info("ds=%s: %d recommendations offered by retrieval, %d by it alone", ds, from_retrieval, only)
    recs = recs.with_columns(
        pl.lit(ds, pl.Date()).alias("ds"), pl.lit(version, pl.String()).alias("model_version")
    )
    recs = recs.select([pl.col(c).cast(t) for c, t in RECOMMENDATIONS_SCHEMA.items()]).sort(
        ["user_id", "rank"]
    )
    target = settings.output_dir(ds) / RECOMMENDATIONS_FILE if part is None else part_path(settings, ds, part)
    out = write_parquet_atomic(recs, target)
    where = "" if part is None else f" (part {part} of {settings.score_parts})"
    log.info(
        "ds=%s model=%s: %d recommendations for %d users%s",
        ds,
        version,
        recs.height,
        recs["user_id"].n_unique(),
        where,
    )
    return out


def merge_parts(settings: Settings, ds: date | str) -> Path:
    """The day's recommendations from its ``score_parts`` slices (every one must be there), then the
    slices removed: one table, as an unsliced run writes it."""
    ds = parse_date(ds)
    paths = [part_path(settings, ds, k) for k in range(settings.score_parts)]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"ds={ds}: score parts missing: {', '.join(missing)}")
    recs = pl.concat([pl.read_parquet(p) for p in paths]).sort(["user_id", "rank"])
    out = write_parquet_atomic(recs, settings.output_dir(ds) / RECOMMENDATIONS_FILE)
    for path in paths:
        path.unlink()
    log.info("ds=%s: %d recommendations merged from %d parts", ds, recs.height, len(paths))
    return out
