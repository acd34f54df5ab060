"""The learned retrieval source: a two-tower model fitted each night on the window's clicks, and each
active user's exact top-N in-stock items (``TANDEM_RETRIEVAL=two_tower``; docs/retrieval.md).

Night D, after the ranker's train step, reads the same exported samples as the ranker
(:mod:`mtl_model.learn.samples`):

* fit: the unique (user, item) click pairs of the window's training days (before D; D is held out, as
  for the ranker), in shuffled batches, by the in-batch softmax with the logQ correction
  (:mod:`mtl_model.learn.networks.two_tower`); q_j is item j's share of the pairs;
* held-out recall: for the users who clicked on D, the share of D's new clicks (items not clicked
  before in the window) found in their top N embedded from the days before D;
* serve: every user with a candidate row on D (``candidates.parquet``) embedded with the clicks of
  the whole window (D included), every in-stock item of D (``scoring_items.parquet``), and the exact
  top N per user by a blocked matrix product (:func:`exact_top_n`), without the items the user
  bought in the candidates' look-back (``exclude_bought``, as the dbt candidates).

Written to ``<models_dir>/retrieval/ds=D/`` (:func:`mtl_model.learn.registry.retrieval_dir`):
``candidates.parquet`` (what scoring D reads), ``towers.pt`` (state dict), ``retrieval.json``
(vocabularies, configuration, metrics). Runs on CPU: the model is small, and the top N of 20k users
over 10k items is a few GFLOP.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import torch

from mtl_model.config import Settings
from mtl_model.dates import parse_date
from mtl_model.files import replace_dir, temporary_path
from mtl_model.learn.device import deterministic, torch_threads
from mtl_model.learn.networks.two_tower import TEMPERATURE, TwoTower, in_batch_logq_loss
from mtl_model.learn.registry import RETRIEVAL_CANDIDATES_FILE, retrieval_dir
from mtl_model.learn.samples import read_samples

log = logging.getLogger(__name__)

TOWERS_FILE = "towers.pt"
META_FILE = "retrieval.json"
CANDIDATES_EXPORT = "candidates.parquet"
ITEMS_EXPORT = "scoring_items.parquet"


@dataclass(frozen=True)
class RetrievalConfig:
    """Sizes and optimisation of the two-tower fit (constants: measured in docs/retrieval.md)."""

    dim: int = 32
    hidden: int = 64
    epochs: int = 10
    batch_size: int = 512
    learning_rate: float = 0.01
    temperature: float = TEMPERATURE
    min_count: int = 2  # ids with fewer training pairs share code 0 (so that code is trained)
    block_users: int = 2048  # users per block of the exact top N


def vocabulary(values: pl.Series, min_count: int) -> dict[str, int]:
    """Value → code (1.., sorted values seen at least ``min_count`` times); every other value is 0."""
    counts = values.drop_nulls().value_counts()
    kept = counts.filter(pl.col("count") >= min_count).get_column(values.name).sort()
    return {v: k + 1 for k, v in enumerate(kept.to_list())}


def codes(values: pl.Series, vocab: dict[str, int]) -> torch.Tensor:
    """Codes of ``values`` (0: null or not in ``vocab``), as int64."""
    mapped = values.replace_strict(vocab, default=0, return_dtype=pl.Int64)
    return torch.from_numpy(mapped.to_numpy().copy())


def exact_top_n(
    users: torch.Tensor,
    items: torch.Tensor,
    n: int,
    exclude: tuple[torch.Tensor, torch.Tensor] | None = None,
    block: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each user's ``n`` best items by inner product: users [U, d], items [N, d] → (scores [U, n'],
    indices [U, n'], best first), n' = min(n, N). ``exclude`` = (user rows [E], item columns [E]) scored
    −inf (they come last, with score −inf, only when a user has fewer than n' other items). Blocks of
    ``block`` users bound the memory to block × N scores."""
    k = min(n, items.shape[0])
    out_scores, out_index = [], []
    for start in range(0, users.shape[0], block):
        scores = users[start : start + block] @ items.T  # [b, N]
        if exclude is not None:
            rows, cols = exclude
            inside = (rows >= start) & (rows < start + scores.shape[0])
            scores[rows[inside] - start, cols[inside]] = float("-inf")
        top = torch.topk(scores, k, dim=1)  # sorted, best first
        out_scores.append(top.values)
        out_index.append(top.indices)
    if not out_scores:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(out_scores), torch.cat(out_index)


@dataclass
class Vocabularies:
    users: dict[str, int]
    items: dict[str, int]
    categories: dict[str, int]


def click_pairs(samples: pl.DataFrame) -> pl.DataFrame:
    """The unique clicked (user_id, item_id) pairs, each with the item's latest category."""
    clicks = samples.filter(pl.col("click") == 1).select("user_id", "item_id", "category_id", "ds")
    return (
        clicks.sort("ds")
        .group_by("user_id", "item_id", maintain_order=True)
        .agg(pl.col("category_id").drop_nulls().last())
        .sort("user_id", "item_id")
    )


def _fit(
    pairs: pl.DataFrame, vocab: Vocabularies, config: RetrievalConfig, seed: int
) -> tuple[TwoTower, float]:
    """The towers fitted on ``pairs`` (module docstring); returns them and the last epoch's mean loss."""
    model = TwoTower(
        len(vocab.users) + 1, len(vocab.items) + 1, len(vocab.categories) + 1, config.dim, config.hidden
    )
    user_code = codes(pairs["user_id"], vocab.users)
    item_code = codes(pairs["item_id"], vocab.items)
    category_code = codes(pairs["category_id"], vocab.categories)
    user_row = torch.from_numpy(pairs["user_id"].rank("dense").to_numpy().astype(np.int64) - 1)  # bag owner
    item_key = torch.from_numpy(pairs["item_id"].rank("dense").to_numpy().astype(np.int64) - 1)  # raw item
    n_users = int(user_row.max()) + 1 if len(pairs) else 0
    bag_count = torch.bincount(user_row, minlength=n_users)
    item_count = torch.bincount(item_key).to(torch.float32)
    log_q = torch.log(item_count[item_key] / len(pairs))  # exact sampling probability of each row's item
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(seed)
    loss_mean = math.nan
    for _ in range(config.epochs):
        order = torch.randperm(len(pairs), generator=generator)
        total, batches = 0.0, 0
        for start in range(0, len(pairs) - 1, config.batch_size):
            rows = order[start : start + config.batch_size]
            if len(rows) < 2:
                continue
            sums = model.bag_sums(user_row, item_code, n_users)  # [users, d] over every pair
            own = model.item_embedding(item_code[rows])  # leave the pair's own item out of its bag
            u = model.users(user_code[rows], sums[user_row[rows]] - own, bag_count[user_row[rows]] - 1)
            v = model.items(item_code[rows], category_code[rows])
            loss = in_batch_logq_loss(u, v, log_q[rows], item_key[rows], config.temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches = total + float(loss.detach()), batches + 1
        loss_mean = total / max(batches, 1)
    model.eval()
    return model, loss_mean


@torch.no_grad()
def embed_users(model: TwoTower, users: pl.Series, bag: pl.DataFrame, vocab: Vocabularies) -> torch.Tensor:
    """Vectors [len(users), d] of ``users`` with the clicked-item bag ``bag`` (user_id, item_id)."""
    index = {u: k for k, u in enumerate(users.to_list())}
    bag = bag.filter(pl.col("user_id").is_in(users.implode()))
    owner = torch.from_numpy(bag["user_id"].replace_strict(index, return_dtype=pl.Int64).to_numpy().copy())
    sums = model.bag_sums(owner, codes(bag["item_id"], vocab.items), len(users))
    return model.users(codes(users, vocab.users), sums, torch.bincount(owner, minlength=len(users)))


@torch.no_grad()
def embed_items(model: TwoTower, items: pl.DataFrame, vocab: Vocabularies) -> torch.Tensor:
    """Vectors [len(items), d] of ``items`` (item_id, category_id)."""
    return model.items(codes(items["item_id"], vocab.items), codes(items["category_id"], vocab.categories))


def top_n_frame(
    model: TwoTower,
    users: pl.Series,
    bag: pl.DataFrame,
    items: pl.DataFrame,
    excluded: pl.DataFrame,
    n: int,
    vocab: Vocabularies,
    block: int,
) -> pl.DataFrame:
    """(user_id, item_id, retrieval_rank 1.., retrieval_score) of each user's top ``n`` of ``items``,
    without the (user_id, item_id) pairs of ``excluded``."""
    u = embed_users(model, users, bag, vocab)
    v = embed_items(model, items, vocab)
    user_index = {x: k for k, x in enumerate(users.to_list())}
    item_index = {x: k for k, x in enumerate(items["item_id"].to_list())}
    excluded = excluded.filter(
        pl.col("user_id").is_in(users.implode()) & pl.col("item_id").is_in(items["item_id"].implode())
    )
    rows = excluded["user_id"].replace_strict(user_index, return_dtype=pl.Int64).to_numpy().copy()
    cols = excluded["item_id"].replace_strict(item_index, return_dtype=pl.Int64).to_numpy().copy()
    scores, index = exact_top_n(u, v, n, (torch.from_numpy(rows), torch.from_numpy(cols)), block)
    k = index.shape[1]
    frame = pl.DataFrame(
        {
            "user_id": np.repeat(users.to_numpy(), k),
            "item_id": items["item_id"].to_numpy()[index.reshape(-1).numpy()],
            "retrieval_rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(users)),
            "retrieval_score": scores.reshape(-1).numpy().astype(np.float64),
        },
        schema={
            "user_id": pl.String,
            "item_id": pl.String,
            "retrieval_rank": pl.Int32,
            "retrieval_score": pl.Float64,
        },
    )
    return frame.filter(pl.col("retrieval_score").is_finite())


def holdout_recall(
    model: TwoTower,
    samples: pl.DataFrame,
    ds: date,
    items: pl.DataFrame,
    n: int,
    vocab: Vocabularies,
    block: int,
) -> dict[str, float]:
    """Recall@n of day ``ds``'s new clicks (pairs not clicked before ``ds`` in the window) by the top n
    embedded from the clicks before ``ds``, over the in-stock items; and the users it covers."""
    before = click_pairs(samples.filter(pl.col("ds") < ds))
    new = click_pairs(samples.filter(pl.col("ds") == ds)).join(before, on=["user_id", "item_id"], how="anti")
    new = new.filter(pl.col("item_id").is_in(items["item_id"].implode()))
    if new.is_empty():
        return {"holdout_recall": math.nan, "holdout_users": 0, "holdout_clicks": 0}
    users = new["user_id"].unique().sort()
    top = top_n_frame(model, users, before, items, before.select("user_id", "item_id"), n, vocab, block)
    found = new.join(top, on=["user_id", "item_id"], how="semi").height
    return {"holdout_recall": found / new.height, "holdout_users": len(users), "holdout_clicks": new.height}


def _bought(settings: Settings, samples: pl.DataFrame, ds: date) -> pl.DataFrame:
    """(user_id, item_id) bought in the candidates' look-back (``popularity_days``), when excluded."""
    if not settings.exclude_bought or "purchase" not in samples.columns:
        return pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String})
    start = ds - timedelta(days=settings.popularity_days - 1)
    return (
        samples.filter((pl.col("purchase") == 1) & (pl.col("ds") >= start))
        .select("user_id", "item_id")
        .unique()
    )


def _write(folder: Path, model: TwoTower, meta: dict, candidates: pl.DataFrame) -> None:
    tmp = temporary_path(folder)
    tmp.mkdir(parents=True)
    try:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp / TOWERS_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, sort_keys=True, default=str), encoding="utf-8")
        candidates.write_parquet(tmp / RETRIEVAL_CANDIDATES_FILE, compression="zstd")
        replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fit_retrieval(settings: Settings, ds: date | str, config: RetrievalConfig | None = None) -> dict:
    """Night ``ds``'s retrieval (module docstring): fit, measure, write; returns a small summary."""
    ds, config = parse_date(ds), config or RetrievalConfig()
    t0 = time.perf_counter()
    samples = read_samples(settings, ds).with_columns(
        pl.col("user_id", "item_id", "category_id").cast(pl.String)
    )
    pairs = click_pairs(samples.filter(pl.col("ds") < ds))
    if pairs.height < 2:
        raise ValueError(f"ds={ds}: {pairs.height} click pairs before the validation day: nothing to fit")
    vocab = Vocabularies(
        users=vocabulary(pairs["user_id"], config.min_count),
        items=vocabulary(pairs["item_id"], config.min_count),
        categories=vocabulary(pairs["category_id"], 1),
    )
    items = pl.read_parquet(settings.export_dir(ds) / ITEMS_EXPORT, columns=["item_id", "category_id"])
    items = items.with_columns(pl.col("item_id", "category_id").cast(pl.String)).sort("item_id")
    users = (
        pl.scan_parquet(settings.export_dir(ds) / CANDIDATES_EXPORT)
        .select(pl.col("user_id").cast(pl.String))
        .unique()
        .sort("user_id")
        .collect()["user_id"]
    )
    n = settings.retrieval_top_n
    with deterministic(settings.seed), torch_threads(settings.threads):
        model, loss = _fit(pairs, vocab, config, settings.seed)
        recall = holdout_recall(model, samples, ds, items, n, vocab, config.block_users)
        bag = click_pairs(samples)
        candidates = top_n_frame(
            model, users, bag, items, _bought(settings, samples, ds), n, vocab, config.block_users
        )
    meta = {
        "ds": ds,
        "model": "two_tower",
        "config": asdict(config),
        "top_n": n,
        "train_pairs": pairs.height,
        "loss": loss,
        **recall,
        "users": len(users),
        "items": items.height,
        "candidates": candidates.height,
        "vocabularies": asdict(vocab),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    _write(retrieval_dir(settings, ds), model, meta, candidates)
    log.info(
        "ds=%s retrieval: %d pairs, loss %.4f, holdout recall@%d %.4f, %d candidates",
        ds,
        pairs.height,
        loss,
        n,
        recall["holdout_recall"],
        candidates.height,
    )
    return {k: meta[k] for k in ("train_pairs", "loss", "holdout_recall", "candidates", "seconds")}
