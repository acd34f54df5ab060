"""Training, registry and scoring on a small synthetic training window with a learnable signal."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from mtl_model.config import Settings
from mtl_model.registry import CURRENT_FILE, METRICS_FILE, MODEL_FILE, load_current
from mtl_model.score import RECOMMENDATIONS_SCHEMA, score
from mtl_model.train import METRICS_SCHEMA, train

DS = date(2024, 3, 7)
TASKS = ("click", "cart", "purchase")


def make_samples(
    ds: date, n_days: int = 7, n_users: int = 150, n_items: int = 200, per_day: int = 24, seed: int = 0
):
    """Exposures where the click probability follows a user x category affinity plus item quality."""
    rng = np.random.default_rng(seed)
    n_cats = 6
    item_cat = rng.integers(0, n_cats, n_items)
    item_quality = rng.normal(0.0, 0.7, n_items)
    item_price = rng.lognormal(3.0, 1.0, n_items)
    affinity = rng.normal(0.0, 1.2, (n_users, n_cats))
    n = n_days * n_users * per_day
    day = np.repeat(np.arange(n_days), n_users * per_day)
    user = np.tile(np.repeat(np.arange(n_users), per_day), n_days)
    item = rng.integers(0, n_items, n)
    search = rng.random(n) < 0.4
    position = rng.integers(1, 21, n)
    logit = -1.0 + 1.5 * affinity[user, item_cat[item]] + item_quality[item] - 0.04 * position + 0.3 * search
    click = rng.random(n) < 1 / (1 + np.exp(-logit))
    cart = click & (rng.random(n) < 1 / (1 + np.exp(1.0 - affinity[user, item_cat[item]])))
    purchase = cart & (rng.random(n) < 0.5)
    category = np.array([f"c{c}" for c in range(n_cats)], dtype=object)[item_cat[item]]
    category[rng.random(n) < 0.02] = None
    price = item_price[item]
    return pl.DataFrame(
        {
            "ds": [ds - timedelta(days=int(n_days - 1 - d)) for d in day],
            "user_id": [f"u{u}" for u in user],
            "item_id": [f"i{i}" for i in item],
            "category_id": category,
            "scene": np.where(search, "search", "home"),
            "position": pl.Series(position, dtype=pl.Int32),
            "price": pl.Series(price).set(pl.Series(rng.random(n) < 0.05), None),
            "click": pl.Series(click.astype(np.int8)),
            "cart": pl.Series(cart.astype(np.int8)),
            "purchase": pl.Series(purchase.astype(np.int8)),
            "extra_column": np.zeros(n),
        },
        schema_overrides={"ds": pl.Date, "category_id": pl.String},
    )


def make_candidates(samples: pl.DataFrame) -> pl.DataFrame:
    items = samples.select("item_id", "category_id", "price").unique("item_id").sort("item_id").head(40)
    users = pl.DataFrame({"user_id": ["u0", "u1", "u2", "brand_new_user"]})
    cands = users.join(items, how="cross").join(pl.DataFrame({"scene": ["home", "search"]}), how="cross")
    new_item = pl.DataFrame(
        {"user_id": ["u0"], "item_id": ["brand_new_item"], "category_id": [None], "price": [5.0]}
    )
    new_item = new_item.with_columns(pl.lit("home").alias("scene"))
    return pl.concat([cands, new_item], how="diagonal_relaxed").with_columns(
        pl.lit(None, pl.Int32).alias("position")
    )


def write_inputs(settings: Settings, samples: pl.DataFrame) -> None:
    folder = settings.export_dir(DS)
    folder.mkdir(parents=True, exist_ok=True)
    samples.write_parquet(folder / "samples.parquet")
    make_candidates(samples).write_parquet(folder / "candidates.parquet")


@pytest.fixture(scope="module")
def samples() -> pl.DataFrame:
    return make_samples(DS)


def settings_for(home: Path, **kw) -> Settings:
    base = dict(home=home, epochs=2, batch_size=256, tasks=TASKS, seed=7, hidden_dims=(64, 32))
    return Settings(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(samples: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    settings = settings_for(tmp_path_factory.mktemp("home"))
    write_inputs(settings, samples)
    return settings, train(settings, DS)


def test_train_learns_signal_and_writes_metrics(trained) -> None:
    _, result = trained
    assert result.promoted and result.reason == "no current model"
    assert result.n_valid == samples_per_day() and result.n_train == 6 * samples_per_day()
    assert result.metrics["click"]["auc"] > 0.65
    assert result.metrics["cart"]["auc"] > 0.6
    for task in TASKS:
        assert 0 < result.metrics[task]["logloss"] < 1
    df = pl.read_parquet(result.metrics_path)
    assert df.schema == pl.Schema(METRICS_SCHEMA)
    assert set(df["split"]) == {"validation"} and set(df["model_version"]) == {result.version}
    assert set(df["task"]) == {*TASKS, "all"}
    got = {(r["task"], r["metric"]): r["value"] for r in df.iter_rows(named=True)}
    assert got[("click", "auc")] == result.metrics["click"]["auc"]
    assert got[("all", "n_train")] == result.n_train and got[("all", "n_valid")] == result.n_valid
    assert ("all", "samples_per_s") not in got and result.samples_per_s > 0  # speed is not a model metric
    assert {("purchase", "positive_rate"), ("cart", "logloss")} <= set(got)


def samples_per_day() -> int:
    return 150 * 24


def test_registry_layout_and_rerun_overwrites_same_version(trained) -> None:
    settings, first = trained
    folder = settings.models_dir / first.version
    assert {p.name for p in folder.iterdir()} == {"model.pt", "encoders.json", "config.json", "metrics.json"}
    config = json.loads((folder / "config.json").read_text())
    assert config["tasks"] == list(TASKS) and config["architecture"] == "shared_bottom"
    assert config["train_end"] == "2024-03-06" and config["validation_day"] == "2024-03-07"
    state = torch.load(folder / MODEL_FILE, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())

    again = train(settings, DS)
    assert again.version == first.version and again.promoted
    assert "re-run" in again.reason
    assert (settings.models_dir / CURRENT_FILE).read_text().strip() == first.version
    assert [p.name for p in settings.models_dir.iterdir() if p.name.startswith(".")] == []
    model, _, version = load_current(settings)
    assert version == first.version and model.tasks == TASKS


def test_same_seed_gives_identical_weights_and_metrics(samples: pl.DataFrame, tmp_path: Path) -> None:
    a, b = settings_for(tmp_path / "a", epochs=1), settings_for(tmp_path / "b", epochs=1)
    write_inputs(a, samples)
    write_inputs(b, samples)
    ra, rb = train(a, DS), train(b, DS)
    assert ra.version == rb.version
    assert ra.metrics == rb.metrics
    wa = torch.load(a.models_dir / ra.version / MODEL_FILE, weights_only=True)
    wb = torch.load(b.models_dir / rb.version / MODEL_FILE, weights_only=True)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    c = settings_for(tmp_path / "c", epochs=1, seed=8)
    write_inputs(c, samples)
    assert train(c, DS).version != ra.version


def test_worse_model_is_not_promoted(samples: pl.DataFrame, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, epochs=1)
    write_inputs(settings, samples)
    first = train(settings, DS)
    metrics_path = settings.models_dir / first.version / METRICS_FILE
    stored = json.loads(metrics_path.read_text())
    for task in stored["tasks"]:
        stored["tasks"][task]["auc"] = 0.99
    metrics_path.write_text(json.dumps(stored))

    other = settings_for(tmp_path, epochs=1, seed=123)  # different config -> different version
    second = train(other, DS)
    assert second.version != first.version
    assert not second.promoted
    assert "< current 0.9900" in second.reason and first.version in second.reason
    assert (settings.models_dir / CURRENT_FILE).read_text().strip() == first.version
    assert (settings.models_dir / second.version / MODEL_FILE).exists()
    promoted = pl.read_parquet(second.metrics_path).filter(metric="promoted")["value"].to_list()
    assert promoted == [0.0]


def test_missing_validation_day_is_a_clear_error(samples: pl.DataFrame, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    write_inputs(settings, samples.filter(pl.col("ds") < DS))
    with pytest.raises(ValueError, match=r"ds=2024-03-07.*n_train=21600, n_valid=0"):
        train(settings, DS)


def test_score_writes_top_k_per_user(trained) -> None:
    settings, result = trained
    path = score(settings, DS)
    recs = pl.read_parquet(path)
    assert recs.schema == pl.Schema(RECOMMENDATIONS_SCHEMA)
    assert set(recs["user_id"]) == {"u0", "u1", "u2", "brand_new_user"}
    assert set(recs["model_version"]) == {result.version} and set(recs["ds"]) == {DS}
    k = settings.top_k
    for _, group in recs.group_by("user_id"):
        assert group["rank"].sort().to_list() == list(range(1, k + 1))
        assert group["item_id"].n_unique() == k
        by_rank = group.sort("rank")
        assert by_rank["score"].to_list() == sorted(by_rank["score"].to_list(), reverse=True)
    expected = recs["p_click"] * recs["p_purchase"]
    assert (recs["score"] - expected).abs().max() < 1e-12
    assert recs.select(pl.col("p_click", "p_cart", "p_purchase").is_between(0, 1).all()).row(0) == (True,) * 3
    assert score(settings, DS) == path and pl.read_parquet(path).equals(recs)  # deterministic rerun


def test_score_covers_unseen_users_and_items(trained) -> None:
    settings, _ = trained
    everything = pl.read_parquet(score(replace(settings, top_k=1000), DS))
    u0 = everything.filter(user_id="u0")
    assert u0.height == 41 and "brand_new_item" in u0["item_id"].to_list()  # 40 items + the unseen one
    assert everything.filter(user_id="brand_new_user").height == 40  # home/search duplicates collapsed
    assert everything["score"].is_finite().all()


def test_score_with_click_only_model(samples: pl.DataFrame, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, epochs=1, tasks=("click",), top_k=3)
    write_inputs(settings, samples)
    train(settings, DS)
    recs = pl.read_parquet(score(settings, DS))
    assert recs.height == 4 * 3
    assert recs["p_cart"].is_null().all() and recs["p_purchase"].is_null().all()
    assert (recs["score"] == recs["p_click"]).all()
    assert not math.isnan(recs["score"].sum())
