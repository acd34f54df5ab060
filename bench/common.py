"""Helpers shared by the benchmarks: simulated training samples with the ``samples.parquet`` schema,
their tensors, a plain-text / Markdown table printer, and the parser of the benches' configuration
names (:func:`named_settings`).

``simulated_samples`` runs :func:`mtl_model.sources.simulate.simulate` into a scratch home and turns the
landing-zone events into one row per exposure exactly like ``dbt_project/models/marts/interactions.sql``
(group by session, user, item and scene; labels = any click / cart / purchase; ``exposure_id`` =
md5(session|user|item|scene)), so the benchmark trains on what the nightly export would hold, plus the
simulator's true probabilities of each exposure (the AUC ceiling).

``with_features`` adds point-in-time ``f_*`` features computed like the dbt feature models
(``user_features``, ``item_features``, ``user_category_features``: sums over the 1 / 7 / 30 days ending
the day before each exposure, smoothed rates as the ``smoothed_rate`` macro), a subset of their columns
with the same names, so the encoders treat them as the nightly export's.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import torch

from mtl_model.config import Settings
from mtl_model.learn.features import Encoders, FeatureSpec
from mtl_model.sources.simulate import SimConfig, simulate

TASKS = ("click", "cart", "purchase")


def _md5(values: Sequence[str]) -> list[str]:
    return [hashlib.md5(v.encode()).hexdigest() for v in values]


def simulated_samples(home: Path, last_day: date, days: int, config: SimConfig) -> pl.DataFrame:
    """Exposures of ``days`` simulated days ending at ``last_day``, with the true ``p_*`` of each."""
    start = last_day - timedelta(days=days - 1)
    settings = Settings(home=home)
    simulate(settings, start, days, config)
    events = pl.read_parquet(settings.landing_dir / "events" / "*" / "*.parquet", hive_partitioning=True)
    truth = pl.read_parquet(home / "truth" / "exposures" / "*" / "*.parquet", hive_partitioning=False)
    ds = pl.col("ds").str.to_date() if events.schema["ds"] == pl.String() else pl.col("ds").cast(pl.Date())
    events = events.with_columns(ds.alias("ds"), pl.col("scene").fill_null("unknown").alias("scene"))
    keys = ["ds", "session_id", "user_id", "item_id", "scene"]
    is_type = {t: pl.col("event_type") == t for t in ("impression", *TASKS)}
    exposures = (
        events.group_by(keys)
        .agg(
            pl.col("event_id")
            .sort_by("event_time")
            .filter(is_type["impression"].sort_by("event_time"))
            .first()
            .alias("event_id"),
            pl.col("position").min().alias("position"),
            pl.col("price").max().alias("price"),
            pl.col("category_id").min().alias("category_id"),
            *(is_type[t].any().cast(pl.Int8()).alias(t) for t in TASKS),
        )
        .filter(pl.col("event_id").is_not_null())
        .sort(["ds", "session_id", "position", "item_id"])
    )
    key_text = exposures.select(pl.concat_str(["session_id", "user_id", "item_id", "scene"], separator="|"))
    exposures = exposures.with_columns(pl.Series("exposure_id", _md5(key_text.to_series().to_list())))
    exposures = exposures.join(truth, on="event_id", how="left", maintain_order="left")
    return exposures.select(
        "ds",
        "exposure_id",
        "user_id",
        "item_id",
        "category_id",
        "scene",
        "position",
        "price",
        *TASKS,
        *(f"p_{t}" for t in TASKS),
    )


def _smoothed(hits: str, trials: str, prior: float, strength: float = 20.0) -> pl.Expr:
    return (pl.col(hits) + prior * strength) / (pl.col(trials) + strength)


def _window(stats: pl.DataFrame, keys: list[str], day: date, days: int, measures: list[str]) -> pl.DataFrame:
    """Sums of ``measures`` per ``keys`` over the ``days`` days ending the day before ``day``."""
    recent = stats.filter(pl.col("ds").is_between(day - timedelta(days=days), day - timedelta(days=1)))
    return recent.group_by(keys).agg(pl.col(m).sum().alias(f"{m}_{days}d") for m in measures)


def with_features(exposures: pl.DataFrame) -> pl.DataFrame:
    """``exposures`` plus ``f_*`` columns as of the end of the day before each exposure (see the module
    docstring); null where the user / item / user × category has no earlier exposure."""
    x = exposures.with_columns(pl.col(t).cast(pl.Float64) for t in TASKS).with_columns(
        (pl.col("price").fill_null(0.0) * pl.col("purchase")).alias("spend")
    )
    user_day = x.group_by("ds", "user_id").agg(
        pl.len().alias("impressions"), *(pl.col(t).sum().alias(f"{t}s") for t in TASKS), pl.col("spend").sum()
    )
    item_day = x.group_by("ds", "item_id").agg(
        pl.len().alias("exposures"),
        pl.col("click").sum().alias("clicks"),
        pl.col("purchase").sum().alias("purchases"),
    )
    uc_day = x.group_by("ds", "user_id", "category_id").agg(pl.col("click").sum().alias("clicks"))
    frames = []
    for day in x.get_column("ds").unique().sort().to_list():
        users = _window(
            user_day, ["user_id"], day, 30, ["impressions", "clicks", "carts", "purchases", "spend"]
        )
        for days in (1, 7):
            users = users.join(
                _window(user_day, ["user_id"], day, days, ["impressions", "clicks", "carts", "purchases"]),
                on="user_id",
                how="left",
            )
        last = user_day.filter(pl.col("ds") < day).group_by("user_id").agg(pl.col("ds").max().alias("last"))
        users = users.join(last, on="user_id", how="left").select(
            "user_id",
            *(
                pl.col(f"{m}_{d}d").fill_null(0.0).alias(f"f_u_{m}_{d}d")
                for d in (1, 7, 30)
                for m in ("impressions", "clicks", "carts", "purchases")
            ),
            _smoothed("clicks_30d", "impressions_30d", 0.1).alias("f_u_ctr_30d"),
            _smoothed("purchases_30d", "clicks_30d", 0.05).alias("f_u_cvr_30d"),
            pl.col("spend_30d").alias("f_u_spend_30d"),
            (pl.lit(day - timedelta(days=1)) - pl.col("last"))
            .dt.total_days()
            .cast(pl.Float64)
            .alias("f_u_days_since_last_active"),
        )
        items = _window(item_day, ["item_id"], day, 30, ["exposures", "clicks", "purchases"]).join(
            _window(item_day, ["item_id"], day, 7, ["exposures", "clicks"]), on="item_id", how="left"
        )
        items = items.select(
            "item_id",
            pl.col("exposures_7d").fill_null(0.0).alias("f_i_exposures_7d"),
            pl.col("exposures_30d").alias("f_i_exposures_30d"),
            pl.col("purchases_30d").alias("f_i_purchases_30d"),
            _smoothed("clicks_7d", "exposures_7d", 0.1).fill_null(0.1).alias("f_i_ctr_7d"),
            _smoothed("clicks_30d", "exposures_30d", 0.1).alias("f_i_ctr_30d"),
            _smoothed("purchases_30d", "clicks_30d", 0.05).alias("f_i_cvr_30d"),
        )
        uc = _window(uc_day, ["user_id", "category_id"], day, 30, ["clicks"]).rename(
            {"clicks_30d": "f_uc_clicks_30d"}
        )
        frames.append(
            exposures.filter(pl.col("ds") == day)
            .join(users, on="user_id", how="left", maintain_order="left")
            .join(items, on="item_id", how="left", maintain_order="left")
            .join(uc, on=["user_id", "category_id"], how="left", maintain_order="left")
        )
    return pl.concat(frames)  # the rows in their order (exposures are sorted by day first)


@dataclass
class Tensors:
    """One training set as tensors: the same for every model of a benchmark."""

    encoders: Encoders
    cat_tr: torch.Tensor
    num_tr: torch.Tensor
    y_tr: torch.Tensor
    cat_va: torch.Tensor
    num_va: torch.Tensor
    y_va: torch.Tensor
    users_va: object  # numpy array of the validation rows' user ids (for GAUC)
    train_df: pl.DataFrame
    valid_df: pl.DataFrame
    tasks: tuple[str, ...] = TASKS  # the label columns of y_tr / y_va, in order


def to_tensors(samples: pl.DataFrame, spec: FeatureSpec | None = None) -> Tensors:
    """Encoders fitted on the days before the last; the last day is the validation day."""
    last = samples.get_column("ds").max()
    train_df, valid_df = samples.filter(pl.col("ds") < last), samples.filter(pl.col("ds") == last)
    encoders = Encoders.fit(train_df, spec or FeatureSpec())
    cat_tr, num_tr = encoders.encode(train_df)
    cat_va, num_va = encoders.encode(valid_df)

    def labels(df: pl.DataFrame) -> torch.Tensor:
        return torch.from_numpy(df.select(pl.col(t).cast(pl.Float32()) for t in TASKS).to_numpy().copy())

    return Tensors(
        encoders,
        cat_tr,
        num_tr,
        labels(train_df),
        cat_va,
        num_va,
        labels(valid_df),
        valid_df.get_column("user_id").to_numpy(),
        train_df,
        valid_df,
    )


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def table(rows: list[dict], columns: Sequence[str], markdown: bool = False) -> str:
    """Rows of dicts as an aligned text table (or a Markdown table)."""

    def fmt(value) -> str:
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4f}"
        return "" if value is None else str(value)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def named_settings(
    name: str, named: Mapping[str, Mapping[str, object]], kind: str = "a name"
) -> dict[str, object]:
    """The settings of a configuration name: parts joined by ``+``, each one of ``named`` (its
    settings) or ``NAME=VALUE`` (a list with ``/`` for its commas, since the benches split their
    ``--configs`` on commas); later parts win. Settings validates the values."""
    options: dict[str, object] = {}
    for part in name.split("+"):
        setting, is_setting, value = part.partition("=")
        if is_setting:
            options[setting.strip()] = value.strip().replace("/", ",")
        elif part in named:
            options |= named[part]
        else:
            raise SystemExit(
                f"config {name!r}: {part!r} is neither {kind} ({', '.join(named)}) nor NAME=VALUE"
            )
    return options
